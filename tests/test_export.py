"""Export: the shared library, its C header and sw2c.load give the JIT module's results exactly;
the library is the code the JIT ran, with its thread team."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
import sw2c
from sw2c.driver import compile_graph
from sw2c.tests.ir_models import residual_cnn, split_residual_cnn


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


@pytest.fixture(scope="module")
def team_module():
    return split_residual_cnn("teamnet")


@pytest.fixture(scope="module")
def exported_team(team_module, tmp_path_factory):
    out = tmp_path_factory.mktemp("export_team")
    return team_module, out, team_module.export(out)


def x24(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 3, 24, 24)).astype(np.float32)


def test_export_links_the_code_the_jit_ran(team_module, monkeypatch, tmp_path):
    """No second code generation or optimization: only the small `<name>_run` wrapper is
    compiled at export."""
    def no_generate(*args, **kwargs):
        raise AssertionError("export generated the program again")

    emitted = []
    emit = sw2c.runtime.export.emit_object
    monkeypatch.setattr("sw2c.driver.generate", no_generate)
    monkeypatch.setattr("sw2c.runtime.export.emit_object",
                        lambda m: emitted.append(m.name) or emit(m))
    team_module.export(tmp_path)
    assert emitted == ["teamnet_wrapper"]


def test_threaded_export_loads_with_its_team(exported_team):
    module, out, _ = exported_team
    loaded = sw2c.load(out)
    assert loaded.report["threads"] == 2 and loaded._team is not None
    for seed in range(20):
        np.testing.assert_array_equal(loaded(x24(seed)), module(x24(seed)))
    header = (out / "teamnet.h").read_text()
    assert "Runs on 2 threads" in header and "void teamnet_close(void);" in header


@pytest.mark.skipif(shutil.which("cc") is None or not sys.platform.startswith("linux"),
                    reason="needs a C compiler and /proc")
def test_c_program_runs_the_library_on_its_team(exported_team, tmp_path):
    """teamnet_run starts a worker thread on its first call and gives the JIT's bits on every
    call, also after idle spells longer than the workers' spin budget (they sleep, then wake);
    teamnet_close() ends the worker, and a later call starts it again."""
    module, out, _ = exported_team
    x = x24(3)
    x.tofile(tmp_path / "x.bin")
    (tmp_path / "main.c").write_text("""
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "teamnet.h"
static int threads(void) {  /* this process's thread count */
    char line[256];
    int n = -1;
    FILE *f = fopen("/proc/self/status", "r");
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "Threads:", 8) == 0) sscanf(line + 8, "%d", &n);
    if (f) fclose(f);
    return n;
}
int main(int argc, char **argv) {
    static float x[3 * 24 * 24], y[5], first[5];
    struct timespec idle = {0, 200000000};  /* past the spin budget: the worker sleeps */
    int i, before = threads();
    FILE *f = fopen(argv[1], "rb");
    if (!f || fread(x, sizeof x, 1, f) != 1) return 2;
    fclose(f);
    if (teamnet_run(x, first) != 0) return 3;
    if (threads() != before + 1) return 4;
    for (i = 0; i < 2000; i++) {
        if (i % 500 == 499) nanosleep(&idle, 0);
        if (teamnet_run(x, y) != 0 || memcmp(y, first, sizeof y) != 0) return 5;
    }
    nanosleep(&idle, 0);
    teamnet_close();
    if (threads() != before) return 6;
    if (teamnet_run(x, y) != 0 || memcmp(y, first, sizeof y) != 0) return 7;
    if (threads() != before + 1) return 8;
    fwrite(first, sizeof first, 1, stdout);
    return 0;
}
""")
    exe = tmp_path / "main"
    subprocess.run(["cc", "-std=c99", "-O2", "-I", str(out), str(tmp_path / "main.c"), "-L",
                    str(out), "-lteamnet", f"-Wl,-rpath,{out}", "-o", str(exe)], check=True)
    run = subprocess.run([str(exe), str(tmp_path / "x.bin")], capture_output=True, timeout=120)
    assert run.returncode == 0, f"the C program failed at check {run.returncode}"
    np.testing.assert_array_equal(np.frombuffer(run.stdout, np.float32).reshape(1, 5), module(x))


def test_export_checks_the_library_against_the_module(team_module, monkeypatch, tmp_path):
    """Export runs the library's own teamnet_run on the verification inputs: a library that
    disagrees with the module it came from is a VerificationError, not a silent deployable."""
    honest = team_module.run
    monkeypatch.setattr(team_module, "run",
                        lambda feeds: {n: v + 1 for n, v in honest(feeds).items()})
    with pytest.raises(sw2c.VerificationError, match="teamnet_run"):
        team_module.export(tmp_path)
