"""Export the digits CNN for a Cortex-M4 (int8, or fp32 with ``--fp32``), link it into a
bare-metal firmware with our own start-up code, run the firmware in unicorn and check its
outputs against sw2c bit for bit.

    pip install 'sw2c[cross]'   # ziglang, unicorn, pyelftools
    python examples/firmware/run.py [--fp32] [BUILD_DIR]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import sw2c

HERE = Path(__file__).resolve().parent
NAME = "digits_cnn"
FLASH, RAM, SCS = (0x0000_0000, 1 << 20), (0x2000_0000, 256 << 10), (0xE000_E000, 4 << 10)
CC = [sys.executable, "-m", "ziglang", "cc", "-target", "thumb-freestanding-eabihf",
      "-mcpu=cortex_m4+vfp4d16sp", "-O2", "-std=c99", "-ffreestanding", "-nostdlib"]


def export(build: Path, precision: str = "int8") -> sw2c.Module:
    """Compile the digits CNN for cpu:cortex-m4 (int8 calibrated on the example's images, or
    fp32) and export lib<name>.a, .h, .json."""
    calib = np.load(HERE.parent / "digits_calibration.npz")["input"][:64]
    module = sw2c.compile(str(HERE.parent / "digits_cnn.onnx"), target="cpu:cortex-m4",
                          precision=precision, name=NAME, input_shapes={"input": (1, 1, 8, 8)},
                          **({"calibration": calib} if precision == "int8" else {}))
    module.export(build)
    return module


def bake_inputs(codes: list[np.ndarray], build: Path) -> None:
    """input.h: the int8 input codes as a const array (flash)."""
    rows = ",\n".join("    {" + ", ".join(str(int(v)) for v in q.ravel()) + "}" for q in codes)
    (build / "input.h").write_text(
        f"#define FW_INPUTS {len(codes)}\nstatic const int8_t fw_input[FW_INPUTS]"
        f"[{codes[0].size}] = {{\n{rows}\n}};\n")


def bake_float_inputs(images: list[np.ndarray], out_size: int, build: Path) -> None:
    """input.h for main_fp32.c: the float images as a const array (flash), written as C99
    hexadecimal float literals (exact: the firmware reads the very bits sw2c gets)."""
    flat = [np.asarray(x, np.float32).ravel() for x in images]
    rows = ",\n".join("    {" + ", ".join(float(v).hex() + "f" for v in x) + "}" for x in flat)
    (build / "input.h").write_text(
        f"#define FW_INPUTS {len(flat)}\n#define FW_IN_SIZE {flat[0].size}\n"
        f"#define FW_OUT_SIZE {out_size}\nstatic const float fw_input[FW_INPUTS][FW_IN_SIZE]"
        f" = {{\n{rows}\n}};\n")


def build_firmware(build: Path, main: str = "main.c") -> Path:
    """startup.c + ``main`` (main.c: int8, main_fp32.c: fp32) + lib<name>.a -> firmware.elf,
    with our linker script."""
    elf = build / "firmware.elf"
    subprocess.run([*CC, "-Wl,--gc-sections", "-T", str(HERE / "cortex_m4.ld"),
                    str(HERE / "startup.c"), str(HERE / main), f"-I{build}", f"-L{build}",
                    f"-l{NAME}", "-o", str(elf)], check=True, capture_output=True, text=True)
    return elf


def run_firmware(elf: Path, n: int, size: int, dtype: type = np.int8) -> np.ndarray:
    """Boot the ELF in unicorn like a reset (SP and PC from the vector table), run until
    fw_done, return fw_output as [n, size] of ``dtype`` (int8 codes, or float32 logits)."""
    from elftools.elf.elffile import ELFFile
    from unicorn import UC_ARCH_ARM, UC_MODE_MCLASS, UC_MODE_THUMB, Uc
    from unicorn.arm_const import UC_ARM_REG_SP, UC_CPU_ARM_CORTEX_M4

    uc = Uc(UC_ARCH_ARM, UC_MODE_THUMB | UC_MODE_MCLASS)
    uc.ctl_set_cpu_model(UC_CPU_ARM_CORTEX_M4)
    for base, length in (FLASH, RAM, SCS):
        uc.mem_map(base, length)
    with open(elf, "rb") as f:
        image = ELFFile(f)
        for seg in image.iter_segments():
            if seg["p_type"] == "PT_LOAD" and seg["p_filesz"]:
                uc.mem_write(seg["p_paddr"], seg.data())  # .data's initial values in flash
        sym = {s.name: s["st_value"] for s in image.get_section_by_name(".symtab")
               .iter_symbols()}
    sp, reset = np.frombuffer(bytes(uc.mem_read(FLASH[0], 8)), "<u4")
    uc.reg_write(UC_ARM_REG_SP, int(sp))
    uc.emu_start(int(reset), sym["fw_done"] & ~1, count=100_000_000)
    status = int.from_bytes(uc.mem_read(sym["fw_status"], 4), "little", signed=True)
    if status != 0:
        raise RuntimeError(f"the firmware stopped with fw_status={status}")
    data = bytes(uc.mem_read(sym["fw_output"], n * size * np.dtype(dtype).itemsize))
    return np.frombuffer(data, dtype).reshape(n, size)


def main_fp32(build: Path) -> int:
    """The fp32 firmware: the float library, main_fp32.c, float images in, float logits out,
    checked bit for bit against the module (the same objects run by sw2c's emulator) and
    against onnxruntime within verify's tolerance."""
    from sw2c.runtime.verify import RTOL, reference_session

    module = export(build, "fp32")
    test = np.load(HERE.parent / "digits_data.npz")
    images = [x[None] for x in test["test_images"][:4].astype(np.float32) * test["scale"]]
    images.append(np.random.default_rng(0).standard_normal((1, 1, 8, 8)).astype(np.float32))
    bake_float_inputs(images, 10, build)
    elf = build_firmware(build, "main_fp32.c")
    got = run_firmware(elf, len(images), 10, np.float32)
    same = all(np.array_equal(g, module(x).ravel()) for g, x in zip(got, images))
    ort = reference_session(str(HERE.parent / "digits_cnn.onnx"))
    want = np.concatenate([ort.run(None, {"input": x})[0] for x in images])
    err = float(np.abs(got - want).max() / np.abs(want).max())
    ok = same and err <= RTOL
    print(f"firmware {elf} (fp32): {len(images)} inputs, outputs "
          f"{'equal' if same else 'DIFFER from'} the module's bit for bit, within {err:.1e} of "
          f"onnxruntime (tolerance {RTOL:g}); predicted digits {got.argmax(1)[:4].tolist()}, "
          f"labels {test['test_labels'][:4].tolist()}")
    return 0 if ok else 1


def main(build: Path, precision: str = "int8") -> int:
    build.mkdir(parents=True, exist_ok=True)
    if precision == "fp32":
        return main_fp32(build)
    module = export(build)
    test = np.load(HERE.parent / "digits_data.npz")
    images = test["test_images"][:4].astype(np.float32) * test["scale"]
    codes = [module.quantize(x[None]) for x in images]
    codes += [np.full((1, 1, 8, 8), v, np.int8) for v in (-128, 127)]  # saturating inputs
    bake_inputs(codes, build)
    elf = build_firmware(build)
    got = run_firmware(elf, len(codes), module.outputs[0][1][-1])
    want = np.stack([module.run_int8(q)[0].ravel() for q in codes])
    ok = np.array_equal(got, want)
    print(f"firmware {elf}: {len(codes)} inputs, outputs {'equal' if ok else 'DIFFER from'} "
          f"module.run_int8 bit for bit; predicted digits {got.argmax(1)[:4].tolist()}, labels "
          f"{test['test_labels'][:4].tolist()}")
    return 0 if ok else 1


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--fp32"]
    sys.exit(main(Path(args[0]) if args else Path(tempfile.mkdtemp()),
                  "fp32" if "--fp32" in sys.argv[1:] else "int8"))
