"""Export: the shared library, its C header and sw2c.load give the JIT module's results exactly."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import sw2c
from sw2c.driver import compile_graph
from sw2c.tests.ir_models import residual_cnn


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    module = compile_graph(residual_cnn(), "resnetish")
    out = tmp_path_factory.mktemp("export")
    lib = module.export(out)
    return module, out, lib


def test_load_matches_jit_bit_for_bit(exported):
    module, out, _ = exported
    loaded = sw2c.load(out)
    x = np.random.default_rng(0).standard_normal((1, 3, 10, 10)).astype(np.float32)
    assert loaded.inputs == module.inputs and loaded.outputs == module.outputs
    assert loaded.report["arena_bytes"] == module.report["arena_bytes"]
    np.testing.assert_array_equal(loaded(x), module(x))


def test_header_declares_run_and_arena(exported):
    _, out, _ = exported
    header = (out / "resnetish.h").read_text()
    assert "int resnetish_run(const float *x, float *logits);" in header
    assert "RESNETISH_ARENA_BYTES" in header


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")
def test_c_program_gets_the_same_bits(exported, tmp_path):
    module, out, _ = exported
    x = np.random.default_rng(1).standard_normal((1, 3, 10, 10)).astype(np.float32)
    x.tofile(tmp_path / "x.bin")
    (tmp_path / "main.c").write_text("""
#include <stdio.h>
#include "resnetish.h"
int main(int argc, char **argv) {
    static float x[300], y[5];
    FILE *f = fopen(argv[1], "rb");
    if (!f || fread(x, sizeof x, 1, f) != 1) return 2;
    fclose(f);
    if (resnetish_run(x, y) != 0) return 3;
    fwrite(y, sizeof y, 1, stdout);
    return 0;
}
""")
    exe = tmp_path / "main"
    subprocess.run(["cc", "-std=c99", "-O2", "-I", str(out), str(tmp_path / "main.c"), "-L",
                    str(out), "-lresnetish", f"-Wl,-rpath,{out}", "-o", str(exe)], check=True)
    run = subprocess.run([str(exe), str(tmp_path / "x.bin")], capture_output=True, check=True)
    got = np.frombuffer(run.stdout, np.float32).reshape(1, 5)
    np.testing.assert_array_equal(got, module(x))


def test_load_rejects_a_directory_without_an_export(tmp_path):
    with pytest.raises(sw2c.ModelError, match="Module.export"):
        sw2c.load(tmp_path)
