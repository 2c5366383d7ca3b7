"""``Module.export(DIR)`` for an int8 cross target: ``lib<name>.a`` + ``<name>.h`` +
``<name>.json`` link into the example Cortex-M4 firmware (examples/firmware: our own start-up
code and linker script), whose outputs, read from RAM after a reset-to-halt run in unicorn,
equal the emulated module's and the simulator's bit for bit. The whole int8 digits CNN program
stays under 8 KB of ``.text`` and the JSON says so. Skips without the ``cross`` extra."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import sw2c

EXTRAS = ("ziglang", "unicorn", "elftools")
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "firmware" / "run.py"
TEXT_BUDGET = 8 * 1024


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sw2c_firmware_example", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[ModuleType, sw2c.Module, Path]:
    for name in EXTRAS:
        pytest.importorskip(name)
    run = _example()
    build = tmp_path_factory.mktemp("firmware")
    return run, run.export(build), build


def _codes(module: sw2c.Module) -> list[np.ndarray]:
    """Digits, random codes and the saturating extremes."""
    data = np.load(EXAMPLE.parent.parent / "digits_data.npz")
    images = data["test_images"][:3].astype(np.float32) * data["scale"]
    rng = np.random.default_rng(5)
    shape = (1, 1, 8, 8)
    return ([module.quantize(x[None]) for x in images]
            + [rng.integers(-128, 128, shape, dtype=np.int8) for _ in range(3)]
            + [np.full(shape, v, np.int8) for v in (-128, 127)])


def test_library_header_and_json(built):
    _, module, build = built
    name = module.name
    lib = build / f"lib{name}.a"
    data = lib.read_bytes()
    assert data.startswith(b"!<arch>\n")
    for path in (str(build), str(Path.cwd()), str(Path.home())):  # no absolute path inside
        assert path.encode() not in data, path
    header = (build / f"{name}.h").read_text()
    assert re.search(rf"int {name}_run\(const float \*in0, float \*out0\);", header)
    assert re.search(rf"int {name}_run_int8\(const int8_t \*in0, int8_t \*out0\);", header)
    meta = json.loads((build / f"{name}.json").read_text())
    libsizes = meta["library"]
    assert libsizes["file"] == lib.name and libsizes["undefined_symbols"] == []
    # the weights are const data in .rodata; .data holds one pointer, .bss the arena
    assert libsizes["rodata_bytes"] >= meta["weights_bytes"] > 0
    assert libsizes["data_bytes"] <= 8 and libsizes["bss_bytes"] >= meta["arena_bytes"] > 0
    assert 0 < libsizes["text_bytes"] < TEXT_BUDGET and 0 < meta["text_bytes"] < TEXT_BUDGET
    assert meta["text_budget_bytes"] == TEXT_BUDGET and meta["text_within_budget"] is True
    assert meta["instructions"] > 0 and "not cycles" in meta["instructions_note"]


def test_firmware_links_the_library_and_matches_the_simulator(built):
    run, module, build = built
    from sw2c.runtime.cross.toolchain import elf_sizes

    codes = _codes(module)
    run.bake_inputs(codes, build)
    elf = run.build_firmware(build)
    got = run.run_firmware(elf, len(codes), 10)
    for q, g in zip(codes, got):
        want = module.reference.run([q])[0][0].ravel()  # the simulator
        np.testing.assert_array_equal(g, want)
        np.testing.assert_array_equal(g, module.run_int8(q)[0].ravel())  # the emulated build
    assert len({g.tobytes() for g in got}) > 1  # not a constant output
    sizes = elf_sizes(elf)  # the whole firmware: start-up, main, kernels (no weights)
    assert 0 < sizes[".text"] < TEXT_BUDGET, sizes
    assert sizes[".rodata"] >= module.report["weights_bytes"]


def test_cli_writes_the_library(built, tmp_path, capsys):
    from sw2c.cli import main

    args = [str(EXAMPLE.parent.parent / "digits_cnn.onnx"), "--target", "cpu:cortex-m4",
            "--precision", "int8", "--input-shape", "input=1,1,8,8", "--calibration",
            str(EXAMPLE.parent.parent / "digits_calibration.npz"), "--no-verify",
            "-o", str(tmp_path)]
    assert main(args) == 0
    assert "libdigits_cnn.a" in capsys.readouterr().out
    for f in ("libdigits_cnn.a", "digits_cnn.h", "digits_cnn.json", "digits_cnn.c"):
        assert (tmp_path / f).exists(), f


def test_soft_float_target_lists_what_the_runtime_supplies(built, tmp_path):
    from sw2c.tests.asic_models import digits_data

    module = sw2c.compile(str(EXAMPLE.parent.parent / "digits_cnn.onnx"),
                          target="cpu:rv32imac", precision="int8", verify=False,
                          input_shapes={"input": (1, 1, 8, 8)},
                          calibration=digits_data()["calib"][:32])
    module.export(tmp_path)
    meta = json.loads((tmp_path / "digits_cnn.json").read_text())
    # no FPU: the float boundary calls compiler-rt (libgcc) soft-float routines, nothing else
    undefined = meta["library"]["undefined_symbols"]
    assert "__divsf3" in undefined and all(s.startswith("__") for s in undefined)
    assert "text_within_budget" not in meta  # the 8 KB budget is a Cortex-M figure


def test_fp32_firmware_links_the_library_and_matches_the_module(tmp_path):
    """The fp32 library (code, const float weights, arena) links into the same start-up code
    and linker script with main_fp32.c; the firmware's float logits equal the emulated
    module's bit for bit and onnxruntime's within verify's tolerance."""
    for name in EXTRAS:
        pytest.importorskip(name)
    from sw2c.runtime.cross.toolchain import elf_sizes
    from sw2c.runtime.verify import RTOL, reference_session

    run = _example()
    module = run.export(tmp_path, "fp32")
    meta = json.loads((tmp_path / f"{module.name}.json").read_text())
    assert meta["precision"] == "fp32" and meta["library"]["undefined_symbols"] == []
    data = np.load(EXAMPLE.parent.parent / "digits_data.npz")
    rng = np.random.default_rng(11)
    images = [x[None] for x in data["test_images"][:3].astype(np.float32) * data["scale"]]
    images += [rng.standard_normal((1, 1, 8, 8)).astype(np.float32) * 4 for _ in range(2)]
    run.bake_float_inputs(images, 10, tmp_path)
    elf = run.build_firmware(tmp_path, "main_fp32.c")
    got = run.run_firmware(elf, len(images), 10, np.float32)
    ort = reference_session(str(EXAMPLE.parent.parent / "digits_cnn.onnx"))
    for x, g in zip(images, got):
        np.testing.assert_array_equal(g, module(x).ravel())  # the very objects sw2c ran
        want = ort.run(None, {"input": x})[0].ravel()
        np.testing.assert_allclose(g, want, rtol=RTOL, atol=RTOL * np.abs(want).max())
    assert len({g.tobytes() for g in got}) == len(images)  # not a constant output
    assert got[:3].argmax(1).tolist() == data["test_labels"][:3].tolist()
    sizes = elf_sizes(elf)
    assert sizes[".rodata"] >= module.report["weights_bytes"]
    assert sizes[".bss"] >= module.report["arena_bytes"]
