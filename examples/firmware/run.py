"""Export the int8 digits CNN for a Cortex-M4, link it into a bare-metal firmware with our own
start-up code, run the firmware in unicorn and check its outputs against sw2c bit for bit.

    pip install 'sw2c[cross]'   # ziglang, unicorn, pyelftools
    python examples/firmware/run.py [BUILD_DIR]
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


def export(build: Path) -> sw2c.Module:
    """Compile the digits CNN to int8 for cpu:cortex-m4 and export lib<name>.a, .h, .json."""
    calib = np.load(HERE.parent / "digits_calibration.npz")["input"][:64]
    module = sw2c.compile(str(HERE.parent / "digits_cnn.onnx"), target="cpu:cortex-m4",
                          precision="int8", calibration=calib, name=NAME,
                          input_shapes={"input": (1, 1, 8, 8)})
    module.export(build)
    return module


def bake_inputs(codes: list[np.ndarray], build: Path) -> None:
    """input.h: the int8 input codes as a const array (flash)."""
    rows = ",\n".join("    {" + ", ".join(str(int(v)) for v in q.ravel()) + "}" for q in codes)
    (build / "input.h").write_text(
        f"#define FW_INPUTS {len(codes)}\nstatic const int8_t fw_input[FW_INPUTS]"
        f"[{codes[0].size}] = {{\n{rows}\n}};\n")


def build_firmware(build: Path) -> Path:
    """startup.c + main.c + lib<name>.a -> firmware.elf, with our linker script."""
    elf = build / "firmware.elf"
    subprocess.run([*CC, "-Wl,--gc-sections", "-T", str(HERE / "cortex_m4.ld"),
                    str(HERE / "startup.c"), str(HERE / "main.c"), f"-I{build}", f"-L{build}",
                    f"-l{NAME}", "-o", str(elf)], check=True, capture_output=True, text=True)
    return elf


def run_firmware(elf: Path, n: int, size: int) -> np.ndarray:
    """Boot the ELF in unicorn like a reset (SP and PC from the vector table), run until
    fw_done, return fw_output as [n, size] int8."""
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
    data = bytes(uc.mem_read(sym["fw_output"], n * size))
    return np.frombuffer(data, np.int8).reshape(n, size)


def main(build: Path) -> int:
    build.mkdir(parents=True, exist_ok=True)
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
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())))
