"""Build C (and LLVM object files) for a cross target with ``python -m ziglang cc``.

zig ships clang, lld and compiler-rt for every target as one pip package, so building for a
Cortex-M, an RV32 core, AArch64 or wasm32 needs nothing beyond the ``cross`` extra. For the
bare-metal families (Cortex-M, RV32, AArch64) sw2c writes the start-up code and the linker
script from the target's memory map:

* ``sw2c_reset``: the reset entry (the Cortex-M vector table points at it): stack pointer,
  ``sw2c_init``, then ``main`` if the program has one (a program that runs in qemu gets
  ``qemu.RUNNER``'s, which makes the emulator's call), then a spin loop;
* ``sw2c_init``: enables the FPU where there is one (Cortex-M: CPACR at 0xE000ED88;
  RV32F: mstatus.FS; AArch64: CPACR_EL1.FPEN), copies .data's initial values from flash and
  zeroes .bss. The emulator calls it once after loading, like a reset would.

Sections: .text (vectors first) and .rodata in flash, .data in RAM loaded from flash, .bss and
a reserved stack in RAM; the linker fails if the program does not fit the part. wasm32 builds a
reactor module (no entry) exporting the requested functions, its memory and ``__heap_base``.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CrossCompileError, require
from .targets import Target

OPT = "-O2"
CFLAGS = ("-std=c99", "-ffreestanding", "-ffunction-sections", "-fdata-sections",
          "-fno-sanitize=all", "-fno-stack-protector")
TIMEOUT = 600  # seconds: zig builds compiler-rt for a new target once (cached afterwards)


@dataclass
class Binary:
    """A linked program: ``path`` (ELF or .wasm) for ``target``, the functions it exports and
    its section sizes in bytes (.text, .rodata, .data, .bss; wasm: code, data); ``runtime``
    is the runtime library linked in (none, or zig's compiler-rt)."""

    target: Target
    path: Path
    exports: tuple[str, ...]
    sizes: dict[str, int] = field(default_factory=dict)
    runtime: str = "none"
    log: str = ""


def zig() -> list[str]:
    """The command that runs zig (``python -m ziglang``); ``MissingExtraError`` without it."""
    require("ziglang", "building for a cross target")
    return [sys.executable, "-m", "ziglang"]


# ------------------------------------------------------------------------------------------
# Start-up code and linker script
# ------------------------------------------------------------------------------------------

_START_COMMON = """\
/* sw2c start-up code for {name} ({description}). Generated: edit the target instead. */
#include <stdint.h>

extern uint32_t __data_load[], __data_start[], __data_end[], __bss_start[], __bss_end[];
extern uint32_t __stack_top[];
int main(void) __attribute__((weak));
void sw2c_init(void);
void sw2c_init_memory(void);
void sw2c_start_main(void);

/* .data's initial values from flash, .bss zeroed. volatile: the compiler must not turn the
 * loops into memcpy/memset calls (there is no libc). */
void sw2c_init_memory(void)
{{
    volatile uint32_t *dst = __data_start;
    const uint32_t *src = __data_load;
    while (dst < __data_end)
        *dst++ = *src++;
    for (dst = __bss_start; dst < __bss_end;)
        *dst++ = 0;
}}

void sw2c_start_main(void)
{{
    if (main)
        main();
}}
"""

_START_CORTEX_M = """
/* sw2c_init runs before any C: enable the FPU (CPACR.CP10/CP11 full access) first. */
__asm__(
    "  .section .text.sw2c_init,\\"ax\\",%progbits\\n"
    "  .global sw2c_init\\n"
    "  .type sw2c_init, %function\\n"
    "  .thumb_func\\n"
    "sw2c_init:\\n"
#if defined(__ARM_FP) || defined(__ARM_FEATURE_MVE)
    "  movw r0, #0xED88\\n"
    "  movt r0, #0xE000\\n"
    "  ldr r1, [r0]\\n"
    "  orr r1, r1, #0xF00000\\n"
    "  str r1, [r0]\\n"
    "  dsb\\n"
    "  isb\\n"
#endif
    "  b sw2c_init_memory\\n");

void sw2c_reset(void)
{
    sw2c_init();
    sw2c_start_main();
    for (;;) {
    }
}

/* The vector table: initial stack pointer, reset handler. */
__attribute__((section(".vectors"), used))
void (*const sw2c_vectors[2])(void) = {(void (*)(void))__stack_top, sw2c_reset};
"""

_START_RISCV32 = """
__asm__(
    "  .section .text.sw2c_reset,\\"ax\\",@progbits\\n"
    "  .global sw2c_reset\\n"
    "sw2c_reset:\\n"
    "  la sp, __stack_top\\n"
    "  call sw2c_init\\n"
    "  call sw2c_start_main\\n"
    "1: j 1b\\n"
    "  .section .text.sw2c_init,\\"ax\\",@progbits\\n"
    "  .global sw2c_init\\n"
    "sw2c_init:\\n"
#ifdef __riscv_flen
    "  li t0, 0x2000\\n" /* mstatus.FS = initial: the FPU is on */
    "  csrs mstatus, t0\\n"
#endif
    "  tail sw2c_init_memory\\n");
"""

_START_AARCH64 = """
__asm__(
    "  .section .text.sw2c_reset,\\"ax\\",%progbits\\n"
    "  .global sw2c_reset\\n"
    "sw2c_reset:\\n"
    "  adrp x0, __stack_top\\n"
    "  add x0, x0, :lo12:__stack_top\\n"
    "  mov sp, x0\\n"
    "  bl sw2c_init\\n"
    "  bl sw2c_start_main\\n"
    "1: b 1b\\n"
    "  .section .text.sw2c_init,\\"ax\\",%progbits\\n"
    "  .global sw2c_init\\n"
    "sw2c_init:\\n" /* CPACR_EL1.FPEN = 0b11: FP and NEON do not trap */
    "  mrs x9, cpacr_el1\\n"
    "  orr x9, x9, #0x300000\\n"
    "  msr cpacr_el1, x9\\n"
    "  isb\\n"
    "  b sw2c_init_memory\\n");
"""

_STARTS = {"cortex-m": _START_CORTEX_M, "riscv32": _START_RISCV32, "aarch64": _START_AARCH64}

_LINKER = """\
/* sw2c linker script for {name}: flash {flash_base:#x} + {flash_size:#x}, RAM {ram_base:#x} +
 * {ram_size:#x}. Generated: edit the target instead. */
ENTRY(sw2c_reset)

MEMORY
{{
    FLASH (rx) : ORIGIN = {flash_base:#x}, LENGTH = {flash_size:#x}
    RAM (rwx) : ORIGIN = {ram_base:#x}, LENGTH = {ram_size:#x}
}}

SECTIONS
{{
    .text : ALIGN(8) {{ KEEP(*(.vectors)) KEEP(*(.vectors.*)) *(.text .text.*) }} > FLASH
    .ARM.exidx : {{ *(.ARM.exidx .ARM.exidx.*) }} > FLASH
    .rodata : ALIGN(8) {{ *(.rodata .rodata.*) *(.srodata .srodata.*) }} > FLASH
    .data : ALIGN(8)
    {{
        __data_start = .;
        *(.data .data.*) *(.sdata .sdata.*)
        . = ALIGN(8);
        __data_end = .;
    }} > RAM AT > FLASH
    __data_load = LOADADDR(.data);
    .bss (NOLOAD) : ALIGN(8)
    {{
        __bss_start = .;
        *(.bss .bss.*) *(.sbss .sbss.*) *(COMMON)
        . = ALIGN(8);
        __bss_end = .;
    }} > RAM
    .stack (NOLOAD) : ALIGN(16) {{ . = . + {stack:#x}; }} > RAM
    __stack_top = ORIGIN(RAM) + LENGTH(RAM);
}}
"""


def startup_source(target: Target) -> str:
    """The start-up C (``sw2c_reset``, ``sw2c_init``) of a bare-metal target."""
    return _START_COMMON.format(name=target.name, description=target.description) + \
        _STARTS[target.family]


def linker_script(target: Target) -> str:
    """The linker script of a bare-metal target, from its memory map."""
    flash, ram = target.region("flash"), target.region("ram")
    return _LINKER.format(name=target.name, flash_base=flash.base, flash_size=flash.size,
                          ram_base=ram.base, ram_size=ram.size, stack=target.stack_bytes)


# ------------------------------------------------------------------------------------------
# Building
# ------------------------------------------------------------------------------------------

def _target_flags(target: Target) -> list[str]:
    return ["-target", target.zig_target, f"-mcpu={target.zig_cpu}"]


def _link_flags(target: Target, directory: Path, exports: Sequence[str]) -> list[str]:
    if target.family == "wasm32":
        return ["-Wl,--no-entry", "-Wl,--export=__heap_base",
                f"-Wl,-z,stack-size={target.stack_bytes}",
                *(f"-Wl,--export={e}" for e in exports)]
    script = directory / "sw2c_link.ld"
    script.write_text(linker_script(target))
    # -u keeps the exported functions through --gc-sections (lld roots them)
    return ["-Wl,--gc-sections", f"-Wl,-T,{script}", "-Wl,--entry=sw2c_reset",
            *(f"-Wl,-u,{e}" for e in exports)]


def build(target: Target, sources: Sequence[str | os.PathLike], exports: Sequence[str],
          objects: Sequence[str | os.PathLike] = (), directory: str | os.PathLike | None = None,
          name: str = "program", flags: Sequence[str] = ()) -> Binary:
    """Compile C ``sources`` and link them with ``objects`` (object files for the same target,
    e.g. from LLVM) into one program for ``target`` in ``directory`` (a new temporary one if
    None). ``exports`` are the functions the caller will call; bare-metal builds add the
    generated start-up code. Raises ``CrossCompileError`` with zig's message on failure."""
    if not target.bare_metal and target.family != "wasm32":
        raise CrossCompileError(f"target {target.name}: builds for the host use the system "
                                "compiler, not the cross toolchain")
    out_dir = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="sw2c_cross_"))
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [str(Path(s)) for s in sources]
    if target.bare_metal:
        start = out_dir / "sw2c_start.c"
        start.write_text(startup_source(target))
        files.append(str(start))
    if target.emulator == "qemu":  # qemu boots the program: its main makes the call
        from .qemu import runner_source

        runner = out_dir / "sw2c_qemu_runner.c"
        runner.write_text(runner_source(target))
        files.append(str(runner))
    out = out_dir / (f"{name}.wasm" if target.family == "wasm32" else f"{name}.elf")
    cmd = [*zig(), "cc", *_target_flags(target), OPT, *CFLAGS, *flags, *files,
           *(str(o) for o in objects), *_link_flags(target, out_dir, exports), "-o", str(out)]
    # No runtime library first: it keeps .text honest and the build fast (zig compiles
    # compiler-rt for a new target in ~15 s). Link compiler-rt only when the program calls
    # into it (soft float on rv32imac, memcpy, 64-bit division, zig's fminf / sqrtf / fmodf).
    res = _run([*cmd, "-nostdlib"], target, name)
    runtime = "none"
    if res.returncode != 0 and "undefined symbol" in res.stderr and (
            target.bare_metal or target.family == "wasm32"):
        res, runtime = _run(cmd, target, name), "compiler-rt"
    if res.returncode != 0:
        raise CrossCompileError(f"zig cc failed to build {name} for {target.name} (exit "
                                f"{res.returncode}): {res.stderr.strip()[:1500]}")
    sizes = wasm_sizes(out) if target.family == "wasm32" else elf_sizes(out)
    return Binary(target, out, tuple(exports), sizes, runtime, res.stderr.strip())


def _run(cmd: list[str], target: Target, name: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CrossCompileError(f"cannot run zig cc to build {name} for {target.name}: "
                                f"{e}") from e


def compile_object(target: Target, source: str | os.PathLike, out: str | os.PathLike,
                   flags: Sequence[str] = ()) -> Path:
    """Compile one C file to an object file for ``target`` (to link later with ``build``)."""
    cmd = [*zig(), "cc", *_target_flags(target), OPT, *CFLAGS, *flags, "-c", str(source),
           "-o", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
    if res.returncode != 0:
        raise CrossCompileError(f"zig cc failed to compile {source} for {target.name}: "
                                f"{res.stderr.strip()[:1500]}")
    return Path(out)


# ------------------------------------------------------------------------------------------
# Sizes
# ------------------------------------------------------------------------------------------

def elf_sizes(path: str | os.PathLike) -> dict[str, int]:
    """Bytes of .text (with the vector table), .rodata, .data and .bss of a linked ELF."""
    require("elftools", "reading an ELF")
    from elftools.elf.elffile import ELFFile

    sizes = {".text": 0, ".rodata": 0, ".data": 0, ".bss": 0}
    with open(path, "rb") as f:
        for sec in ELFFile(f).iter_sections():
            key = ".text" if sec.name == ".ARM.exidx" else sec.name
            if key in sizes:
                sizes[key] += sec["sh_size"]
    return sizes


def _leb(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def wasm_sizes(path: str | os.PathLike) -> dict[str, int]:
    """Bytes of the code and data sections of a wasm module."""
    data = Path(path).read_bytes()
    if data[:4] != b"\0asm" or struct.unpack("<I", data[4:8])[0] != 1:
        raise CrossCompileError(f"{path} is not a wasm module")
    sizes, pos = {"code": 0, "data": 0}, 8
    while pos < len(data):
        kind = data[pos]
        size, pos = _leb(data, pos + 1)
        if kind in (10, 11):
            sizes["code" if kind == 10 else "data"] += size
        pos += size
    return sizes
