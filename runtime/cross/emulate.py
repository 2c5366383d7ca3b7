"""Run a cross-built program in an instruction-set emulator and count what it executes.

``open_emulator(binary)`` loads what ``toolchain.build`` made: an ELF into ``unicorn`` (Cortex-M,
RV32, AArch64; the PT_LOAD segments at their load addresses, then ``sw2c_init`` as a reset
would), a wasm module into ``wasmtime``, a Cortex-M55 ELF into ``qemu-system-arm``
(``runtime.cross.qemu``: one boot per batch of calls; ``unavailable`` says when it is not
installed). ``call(symbol, inputs, outputs)`` writes the input
arrays to the target's ``io`` region (wasm: past ``__heap_base``), calls ``int symbol(p0, p1,
...)`` with one pointer per array (inputs then outputs) following the target's C calling
convention, and reads the outputs back.

Counting: unicorn has no cycle model, so the count is of instructions executed (not cycles:
a Cortex-M4 multiply-accumulate, a load or a taken branch take different times). With
``count=True`` a per-block hook adds each translation block's instruction count (decoded once
per block: Thumb-2 and RISC-V C mix 16- and 32-bit encodings). Thumb instructions whose IT
condition fails count, as Arm's architectural count does; unicorn's per-instruction hook skips
them (about 0.8% fewer on the digits CNN). Every call has an instruction cap, so a runaway
loop stops with an ``EmulationError`` instead of hanging. wasm counts wasmtime fuel (about one
unit per wasm operator), always.
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import EmulationError, require
from .targets import Target
from .toolchain import Binary

CAP = 200_000_000  # instructions (or fuel) per call before it counts as a hang
ALIGN = 16


@dataclass
class Call:
    """What one call returned: the output arrays, the function's int result and the
    instructions (wasm: fuel) it executed, or None when not counted."""

    outputs: list[np.ndarray]
    returned: int
    instructions: int | None


class EmulatedBuild:
    """What a cross build owns: its directory (a new temporary one unless given, removed when
    the build is closed or collected, also when building fails: a fuzz soak makes
    thousands) and the emulator of its ``binary``, started on first use, so that a target
    without one (Cortex-M55) still builds and reports its size."""

    binary: Binary

    def _open_directory(self, target: str, directory: str | os.PathLike | None) -> None:
        self._owned = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix=f"sw2c_{target}_"))
        self.directory.mkdir(parents=True, exist_ok=True)
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(self.directory), True) \
            if self._owned else None
        self._emulator = None

    @property
    def emulator(self) -> Any:
        """The emulator holding the program (started on first use)."""
        if self._emulator is None:
            self._emulator = open_emulator(self.binary)
        return self._emulator

    def close(self) -> None:
        """Drop the emulator and remove the build directory if this object made it."""
        self._emulator = None
        if self._cleanup is not None:
            self._cleanup()


def unavailable(target: Target) -> str:
    """Why programs built for ``target`` cannot run here, or "" when they can (a missing pip
    package of the cross extra is not checked here: running says which to install)."""
    if target.emulator == "qemu":
        from .qemu import unavailable as qemu_unavailable

        return qemu_unavailable(target)
    if target.emulator in ("unicorn", "wasmtime"):
        return ""
    return target.no_emulator or f"target {target.name} runs natively, not in an emulator"


def open_emulator(binary: Binary) -> Any:
    """The emulator for ``binary``'s target (unicorn, wasmtime or qemu); ``EmulationError``
    if the target has none here."""
    t = binary.target
    if t.emulator == "unicorn":
        return UnicornEmulator(binary)
    if t.emulator == "wasmtime":
        return WasmEmulator(binary)
    if t.emulator == "qemu":
        from .qemu import QemuEmulator

        return QemuEmulator(binary)
    reason = t.no_emulator or f"target {t.name} runs natively, not in an emulator"
    raise EmulationError(f"cannot run code built for {t.name}: {reason}")


def _layout(base: int, arrays: Sequence[int]) -> list[int]:
    """Addresses of consecutive buffers of the given byte sizes from ``base``, each aligned."""
    out, at = [], base
    for size in arrays:
        at = -(-at // ALIGN) * ALIGN
        out.append(at)
        at += max(size, 1)
    return out


def _out_arrays(outputs: Sequence[tuple[Sequence[int], Any]]) -> list[np.ndarray]:
    return [np.empty(tuple(shape), dtype) for shape, dtype in outputs]


# ------------------------------------------------------------------------------------------
# unicorn
# ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Abi:
    """Registers of a C call: argument registers, stack pointer, return address, pc, the
    result, the bytes per stack word; ``thumb`` sets bit 0 of code addresses."""

    args: tuple[str, ...]
    sp: str
    ra: str
    pc: str
    result: str
    word: int
    thumb: bool = False


_ABIS = {
    "cortex-m": _Abi(tuple(f"UC_ARM_REG_R{i}" for i in range(4)), "UC_ARM_REG_SP",
                     "UC_ARM_REG_LR", "UC_ARM_REG_PC", "UC_ARM_REG_R0", 4, thumb=True),
    "riscv32": _Abi(tuple(f"UC_RISCV_REG_A{i}" for i in range(8)), "UC_RISCV_REG_SP",
                    "UC_RISCV_REG_RA", "UC_RISCV_REG_PC", "UC_RISCV_REG_A0", 4),
    "aarch64": _Abi(tuple(f"UC_ARM64_REG_X{i}" for i in range(8)), "UC_ARM64_REG_SP",
                    "UC_ARM64_REG_LR", "UC_ARM64_REG_PC", "UC_ARM64_REG_X0", 8),
}
_CONSTS = {"cortex-m": "arm_const", "riscv32": "riscv_const", "aarch64": "arm64_const"}


def _thumb_length(code: bytes) -> int:
    """Instructions in a block of Thumb-2 code: a halfword whose top five bits are 11101,
    11110 or 11111 starts a 32-bit instruction, any other is a 16-bit one."""
    n = pos = 0
    while pos + 1 < len(code):
        pos += 4 if (code[pos + 1] >> 3) in (0b11101, 0b11110, 0b11111) else 2
        n += 1
    return n


def _riscv_length(code: bytes) -> int:
    """Instructions in a block of RISC-V code: low bits 11 mark a 32-bit instruction, any
    other a 16-bit compressed one."""
    n = pos = 0
    while pos < len(code):
        pos += 4 if (code[pos] & 3) == 3 else 2
        n += 1
    return n


class UnicornEmulator:
    """One ELF loaded into a fresh unicorn CPU of the target's model."""

    def __init__(self, binary: Binary) -> None:
        require("unicorn", f"running code built for {binary.target.name}")
        require("elftools", "loading an ELF")
        import importlib

        import unicorn

        t = binary.target
        self.target, self.binary = t, binary
        self._uc_mod = unicorn
        self._regs = importlib.import_module(f"unicorn.{_CONSTS[t.family]}")
        self.abi = _ABIS[t.family]
        mode = 0
        for m in t.unicorn.modes:
            mode |= getattr(unicorn, m)
        self.uc = unicorn.Uc(getattr(unicorn, t.unicorn.arch), mode)
        self.uc.ctl_set_cpu_model(getattr(self._regs, t.unicorn.cpu))
        for r in t.memory:
            self.uc.mem_map(r.base, r.size)
        self.symbols = self._load(binary.path)
        self.io = t.region("io")
        self.trap = t.region("trap").base  # the return address: emulation stops there
        self._lengths: dict[tuple[int, int], int] = {}
        self._count = 0
        self._stack_top = self.symbols.get("__stack_top", t.region("ram").end)
        if "sw2c_init" in self.symbols:
            self._call_address(self.symbols["sw2c_init"], [], CAP)

    def _reg(self, name: str) -> int:
        return getattr(self._regs, name)

    def _load(self, path: Any) -> dict[str, int]:
        """Write every PT_LOAD segment at its physical (load) address; the symbol table."""
        from elftools.elf.elffile import ELFFile

        with open(path, "rb") as f:
            elf = ELFFile(f)
            for seg in elf.iter_segments():
                if seg["p_type"] != "PT_LOAD" or seg["p_filesz"] == 0:
                    continue
                addr, data = seg["p_paddr"], seg.data()
                if not any(r.base <= addr and addr + len(data) <= r.end
                           for r in self.target.memory):
                    raise EmulationError(f"{path}: a segment at {addr:#x} ({len(data)} bytes) "
                                         f"is outside {self.target.name}'s memory map")
                self.uc.mem_write(addr, data)
            symtab = elf.get_section_by_name(".symtab")
            return {s.name: s["st_value"] for s in symtab.iter_symbols() if s.name} \
                if symtab else {}

    def _hook_block(self, uc: Any, address: int, size: int, _: Any) -> None:
        key = (address, size)
        n = self._lengths.get(key)
        if n is None:
            code = bytes(uc.mem_read(address, size))
            fam = self.target.family
            n = (_thumb_length(code) if fam == "cortex-m" else
                 _riscv_length(code) if fam == "riscv32" else size // 4)
            self._lengths[key] = n
        self._count += n

    def _call_address(self, address: int, args: Sequence[int], cap: int,
                      count: bool = False) -> tuple[int, int | None]:
        """Call the function at ``address`` with integer ``args``; (result, instructions)."""
        uc, abi, UcError = self.uc, self.abi, self._uc_mod.UcError
        trap = self.trap
        sp = self._stack_top
        stacked = list(args[len(abi.args):])
        if stacked:  # arguments past the registers go on the stack, 16-byte aligned
            sp -= -(-len(stacked) * abi.word // 16) * 16
            fmt = "<I" if abi.word == 4 else "<Q"
            uc.mem_write(sp, b"".join(struct.pack(fmt, a) for a in stacked))
        for reg, a in zip(abi.args, args):
            uc.reg_write(self._reg(reg), a)
        uc.reg_write(self._reg(abi.sp), sp)
        uc.reg_write(self._reg(abi.ra), trap | 1 if abi.thumb else trap)
        start = address | 1 if abi.thumb else address
        hook = None
        if count:  # hooks are compiled into translated code: retranslate with the hook
            hook = uc.hook_add(self._uc_mod.UC_HOOK_BLOCK, self._hook_block)
            uc.ctl_flush_tb()
        self._count = 0
        try:
            uc.emu_start(start, trap, count=cap)
        except UcError as e:
            pc = uc.reg_read(self._reg(abi.pc))
            raise EmulationError(f"{self.target.name}: the program faulted at pc={pc:#x} "
                                 f"({self._where(pc)}): {e}") from e
        finally:
            if hook is not None:
                uc.hook_del(hook)
                uc.ctl_flush_tb()
        pc = uc.reg_read(self._reg(abi.pc)) & ~1
        if pc != trap:
            raise EmulationError(f"{self.target.name}: no return within {cap:,} instructions "
                                 f"(stopped at pc={pc:#x}, {self._where(pc)})")
        result = uc.reg_read(self._reg(abi.result)) & 0xFFFFFFFF
        return result - (1 << 32) if result >= 1 << 31 else result, \
            (self._count if count else None)

    def _where(self, pc: int) -> str:
        """The nearest function symbol at or below ``pc``."""
        best = max(((a & ~1, n) for n, a in self.symbols.items() if (a & ~1) <= pc),
                   default=(0, "?"))
        return f"{best[1]}+{pc - best[0]:#x}"

    def call(self, symbol: str, inputs: Sequence[np.ndarray],
             outputs: Sequence[tuple[Sequence[int], Any]], count: bool = False,
             cap: int = CAP) -> Call:
        """``int symbol(in0, ..., out0, ...)`` on C-contiguous copies of ``inputs``; outputs
        are arrays of the given (shape, dtype)."""
        if symbol not in self.symbols:
            raise EmulationError(f"{self.binary.path.name} has no function {symbol!r}")
        ins = [np.ascontiguousarray(a) for a in inputs]
        outs = _out_arrays(outputs)
        addrs = _layout(self.io.base + ALIGN, [a.nbytes for a in (*ins, *outs)])
        end = max((at + a.nbytes for at, a in zip(addrs, (*ins, *outs))), default=0)
        if end > self.io.end:
            raise EmulationError(f"the buffers do not fit {self.target.name}'s io region")
        for a, at in zip(ins, addrs):
            self.uc.mem_write(at, a.tobytes())
        result, n = self._call_address(self.symbols[symbol], addrs, cap, count)
        for o, at in zip(outs, addrs[len(ins):]):
            o[...] = np.frombuffer(bytes(self.uc.mem_read(at, o.nbytes)), o.dtype).reshape(
                o.shape)
        return Call(outs, result, n)


# ------------------------------------------------------------------------------------------
# wasmtime
# ------------------------------------------------------------------------------------------

class WasmEmulator:
    """One wasm module instantiated in wasmtime with fuel metering (no imports)."""

    def __init__(self, binary: Binary) -> None:
        require("wasmtime", "running code built for wasm32")
        import wasmtime

        self.target, self.binary, self._wt = binary.target, binary, wasmtime
        config = wasmtime.Config()
        config.consume_fuel = True
        self.store = wasmtime.Store(wasmtime.Engine(config))
        self.store.set_fuel(CAP)
        module = wasmtime.Module.from_file(self.store.engine, str(binary.path))
        try:
            instance = wasmtime.Instance(self.store, module, [])
        except wasmtime.WasmtimeError as e:
            raise EmulationError(f"{binary.path.name}: wasmtime cannot instantiate it: {e}") \
                from e
        self.exports = instance.exports(self.store)
        self.memory = self.exports["memory"]
        self.heap = self.exports["__heap_base"].value(self.store)

    def call(self, symbol: str, inputs: Sequence[np.ndarray],
             outputs: Sequence[tuple[Sequence[int], Any]], count: bool = True,
             cap: int = CAP) -> Call:
        """Like ``UnicornEmulator.call``; the count is wasmtime fuel, always measured."""
        wt, store = self._wt, self.store
        try:
            fn = self.exports[symbol]
        except KeyError:
            raise EmulationError(f"{self.binary.path.name} exports no function {symbol!r}") \
                from None
        ins = [np.ascontiguousarray(a) for a in inputs]
        outs = _out_arrays(outputs)
        addrs = _layout(self.heap, [a.nbytes for a in (*ins, *outs)])
        end = max((at + a.nbytes for at, a in zip(addrs, (*ins, *outs))), default=0)
        page = 65536
        if end > self.memory.data_len(store):
            self.memory.grow(store, -(-(end - self.memory.data_len(store)) // page))
        for a, at in zip(ins, addrs):
            self.memory.write(store, a.tobytes(), at)
        store.set_fuel(cap)
        try:
            result = fn(store, *addrs)
        except wt.Trap as e:
            why = "no return within the fuel cap" if store.get_fuel() == 0 else "a trap"
            raise EmulationError(f"wasm32: {symbol} stopped with {why}: {e}") from e
        used = cap - store.get_fuel()
        for o, at in zip(outs, addrs[len(ins):]):
            data = bytes(self.memory.read(store, at, at + o.nbytes))
            o[...] = np.frombuffer(data, o.dtype).reshape(o.shape)
        return Call(outs, int(result), used)
