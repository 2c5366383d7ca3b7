"""Cross targets as data: what a CPU is, how to build for it and how to run what was built.

One frozen ``Target`` per chip says everything that code generation, weight packing, export,
the toolchain and the emulator need to know about it: LLVM triple, CPU and features, the float
vector width and register count, the float ABI, whether threads exist, the ``zig cc`` target and
``-mcpu``, the emulator (unicorn arch/mode/CPU model by name, so this module imports nothing
optional) and the memory map the linker script and the emulator share. ``lookup(name)`` is the
one entry point; the host is a description too, built on first use (never at import).

The Cortex-M and RV32 memory maps are those of typical parts (flash at 0, SRAM at 0x2000_0000
on Cortex-M; XIP flash at 0x2000_0000, RAM at 0x8000_0000 on the SiFive FE310 family; the
Cortex-M55 has the MPS3 AN547 board's, where qemu runs it); the
``io`` region at 0x6000_0000 (Cortex-M "external RAM") is where the emulator puts the input
and output buffers and its return trap, so it never collides with what the program links.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from .errors import UnknownTargetError

KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True)
class Region:
    """A block of the address space: ``name`` is flash (code, read-only data, the initial
    values of .data), ram (.data, .bss, stack), io (the emulator's buffers) or scs (the Cortex-M
    system control space, mapped so the start-up code's CPACR write lands) or trap (where the
    emulator's return address points: unicorn will not fetch from the io region of an
    M-profile core, whose default map makes 0x6000_0000 up non-executable to it)."""

    name: str
    base: int
    size: int

    @property
    def end(self) -> int:
        return self.base + self.size


@dataclass(frozen=True)
class Unicorn:
    """A unicorn CPU model by constant name (``UC_ARCH_ARM``, ``UC_MODE_THUMB`` ...): resolved
    by the emulator, so that describing a target needs no optional package."""

    arch: str
    modes: tuple[str, ...]
    cpu: str


@dataclass(frozen=True)
class Target:
    """One chip. ``family`` picks the start-up code and calling convention: cortex-m, riscv32,
    aarch64, wasm32 or host. ``vector_lanes`` is float32 lanes per vector register (1 on a
    scalar FPU or soft float); ``vector_registers`` is how many registers hold such a vector
    (0: no float registers, floats live in integer registers). ``emulator`` is unicorn,
    wasmtime, qemu (``qemu-system-arm``, a system package: Cortex-M55), native (the host runs
    it) or none (``no_emulator`` says why)."""

    name: str
    family: str
    description: str
    triple: str
    cpu: str
    features: tuple[str, ...]
    vector_lanes: int
    vector_registers: int
    float_abi: str  # hard | soft | wasm
    has_fpu: bool
    threads: bool
    zig_target: str
    zig_cpu: str
    emulator: str
    unicorn: Unicorn | None = None
    memory: tuple[Region, ...] = ()
    no_emulator: str = ""
    stack_bytes: int = 16 * KIB

    def region(self, name: str) -> Region:
        """The memory region called ``name`` (flash, ram, io, scs)."""
        for r in self.memory:
            if r.name == name:
                return r
        raise KeyError(f"target {self.name} has no {name!r} region")

    @property
    def feature_string(self) -> str:
        """The LLVM feature string (``+dsp,+vfp4d16sp``)."""
        return ",".join(self.features)

    @property
    def has_fma(self) -> bool:
        """A fused multiply-add instruction for float32 (VFPv4 / FPv5 VFMA, RV32F fmadd.s,
        AArch64 fmla; not soft float, not wasm32's simd128): without one LLVM turns llvm.fma
        into a call of fmaf, so code generation uses a multiply and an add instead."""
        return self.has_fpu and self.family != "wasm32"

    @property
    def bare_metal(self) -> bool:
        """True when sw2c writes the start-up code and linker script (Cortex-M, RV32,
        AArch64)."""
        return self.family in ("cortex-m", "riscv32", "aarch64")


def _mcu_map(flash: int, ram: int) -> tuple[Region, ...]:
    return (Region("flash", 0x0000_0000, flash), Region("ram", 0x2000_0000, ram),
            Region("io", 0x6000_0000, 1 * MIB), Region("scs", 0xE000_E000, 4 * KIB),
            Region("trap", 0x1FFF_0000, 4 * KIB))


def _cortex_m(name: str, triple: str, cpu: str, features: tuple[str, ...], zig_cpu: str,
              description: str, memory: tuple[Region, ...], uc_cpu: str | None,
              lanes: int = 1, registers: int = 32, emulator: str = "unicorn") -> Target:
    return Target(
        name=name, family="cortex-m", description=description, triple=triple, cpu=cpu,
        features=features, vector_lanes=lanes, vector_registers=registers, float_abi="hard",
        has_fpu=True, threads=False, zig_target="thumb-freestanding-eabihf", zig_cpu=zig_cpu,
        emulator=emulator,
        unicorn=Unicorn("UC_ARCH_ARM", ("UC_MODE_THUMB", "UC_MODE_MCLASS"), uc_cpu)
        if uc_cpu else None,
        memory=memory)


def _riscv32(name: str, features: tuple[str, ...], fpu: bool, uc_cpu: str,
             description: str) -> Target:
    zig_cpu = "generic_rv32" + "".join("+" + f.lstrip("+") for f in features)
    return Target(
        name=name, family="riscv32", description=description, triple="riscv32-unknown-none-elf",
        cpu="generic-rv32", features=features, vector_lanes=1,
        vector_registers=32 if fpu else 0, float_abi="hard" if fpu else "soft", has_fpu=fpu,
        threads=False, zig_target="riscv32-freestanding-none", zig_cpu=zig_cpu,
        emulator="unicorn",
        unicorn=Unicorn("UC_ARCH_RISCV", ("UC_MODE_RISCV32",), uc_cpu),
        memory=(Region("flash", 0x2000_0000, 4 * MIB), Region("ram", 0x8000_0000, 512 * KIB),
                Region("io", 0x6000_0000, 1 * MIB), Region("trap", 0x1000_0000, 4 * KIB)))


# Cortex-M55 runs in qemu-system-arm's mps3-an547 board (unicorn 2.1 models no Armv8.1-M core),
# so it takes that board's memory map (Arm AN547, Corstone-300): code and constants in the 512 KB
# ITCM at 0, data in the 512 KB DTCM at 0x2000_0000, the emulator's buffers in the DDR at
# 0x6000_0000. At reset the SAU is off: every address is Secure, as the program runs.
_AN547_MAP = (Region("flash", 0x0000_0000, 512 * KIB), Region("ram", 0x2000_0000, 512 * KIB),
              Region("io", 0x6000_0000, 1 * MIB), Region("scs", 0xE000_E000, 4 * KIB),
              Region("trap", 0x1FFF_0000, 4 * KIB))

# Arm triples have all four parts: LLVM picks the hard-float calling convention (floats in
# s0-s15, as zig's C and compiler-rt for eabihf expect) from "<arch>-unknown-none-eabihf", but
# not from the three-part "<arch>-none-eabihf", where it silently passes floats in r0-r3.
TARGETS: dict[str, Target] = {t.name: t for t in (
    _cortex_m("cortex-m4", "thumbv7em-unknown-none-eabihf", "cortex-m4", ("+vfp4d16sp", "+dsp"),
              "cortex_m4+vfp4d16sp", "Cortex-M4F: Armv7E-M, single-precision FPU, DSP (SMLAD)",
              _mcu_map(1 * MIB, 256 * KIB), "UC_CPU_ARM_CORTEX_M4"),
    _cortex_m("cortex-m7", "thumbv7em-unknown-none-eabihf", "cortex-m7", ("+fp-armv8d16", "+dsp"),
              "cortex_m7+fp_armv8d16", "Cortex-M7: Armv7E-M, double-precision FPv5, DSP",
              _mcu_map(2 * MIB, 1 * MIB), "UC_CPU_ARM_CORTEX_M7"),
    _cortex_m("cortex-m33", "thumbv8m.main-unknown-none-eabihf", "cortex-m33",
              ("+fp-armv8d16sp", "+dsp"), "cortex_m33+fp_armv8d16sp+dsp",
              "Cortex-M33: Armv8-M Mainline, single-precision FPv5, DSP",
              _mcu_map(1 * MIB, 256 * KIB), "UC_CPU_ARM_CORTEX_M33"),
    _cortex_m("cortex-m55", "thumbv8.1m.main-unknown-none-eabihf", "cortex-m55",
              ("+mve.fp", "+fp-armv8d16", "+dsp"), "cortex_m55+mve_fp+fp_armv8d16",
              "Cortex-M55: Armv8.1-M, Helium (MVE) 128-bit integer and float vectors "
              "(MPS3 AN547 memory map: 512 KB ITCM, 512 KB DTCM)",
              _AN547_MAP, None, lanes=4, registers=8, emulator="qemu"),
    _riscv32("rv32imac", ("+m", "+a", "+c"), False, "UC_CPU_RISCV32_SIFIVE_E31",
             "RV32IMAC (SiFive E31 class): no FPU, float in software"),
    _riscv32("rv32imafc", ("+m", "+a", "+f", "+c"), True, "UC_CPU_RISCV32_SIFIVE_U34",
             "RV32IMAFC: single-precision FPU"),
    Target(
        name="aarch64", family="aarch64", description="AArch64 (Cortex-A72 class), NEON",
        triple="aarch64-unknown-none-elf", cpu="cortex-a72", features=("+neon", "+fp-armv8"),
        vector_lanes=4, vector_registers=32, float_abi="hard", has_fpu=True,
        # a Linux board has threads; the bare-metal build that the emulator runs has one core
        threads=False, zig_target="aarch64-freestanding-none", zig_cpu="cortex_a72",
        emulator="unicorn", unicorn=Unicorn("UC_ARCH_ARM64", ("UC_MODE_ARM",), "UC_CPU_ARM64_A72"),
        memory=(Region("flash", 0x0000_0000, 64 * MIB), Region("ram", 0x4000_0000, 64 * MIB),
                Region("io", 0x6000_0000, 16 * MIB), Region("trap", 0x5000_0000, 4 * KIB))),
    Target(
        name="wasm32", family="wasm32", description="WebAssembly with 128-bit SIMD",
        triple="wasm32-unknown-unknown", cpu="generic", features=("+simd128",), vector_lanes=4,
        # wasm has no register file; 16 is what the x86-64 / AArch64 JITs map v128 values to
        vector_registers=16, float_abi="wasm", has_fpu=True, threads=False,
        zig_target="wasm32-freestanding-none", zig_cpu="generic+simd128", emulator="wasmtime"),
)}


@lru_cache(maxsize=1)
def host() -> Target:
    """The machine sw2c runs on, described like any other target (asked of LLVM on first
    call)."""
    import llvmlite.binding as llvm

    from ...backends.cpu.llvm import host_cpu

    cpu, features = host_cpu()
    feats = tuple(f for f in features.split(",") if f)
    lanes = 16 if "+avx512f" in feats else 8 if ("+avx2" in feats or "+avx" in feats) else 4
    registers = 32 if ("+avx512f" in feats or "+neon" in feats) else 16
    return Target(
        name="host", family="host", description=f"this machine ({cpu})",
        triple=llvm.get_process_triple(), cpu=cpu, features=feats, vector_lanes=lanes,
        vector_registers=registers, float_abi="hard", has_fpu=True, threads=True,
        zig_target="native", zig_cpu="native", emulator="native")


def names() -> list[str]:
    """Every known target name (``host`` first)."""
    return ["host", *TARGETS]


def lookup(name: str) -> Target:
    """The target called ``name`` (``cpu:`` prefix allowed); ``UnknownTargetError`` lists the
    known names for any other."""
    if not isinstance(name, str):
        raise UnknownTargetError(f"a cross target is a name, got {type(name).__name__}; the "
                                 f"known targets are: {', '.join(names())}")
    key = name.removeprefix("cpu:").strip().lower()
    if key in ("host", "cpu", ""):
        return host()
    if key in TARGETS:
        return TARGETS[key]
    raise UnknownTargetError(f"unknown cross target {name!r}; the known targets are: "
                             f"{', '.join(names())}")
