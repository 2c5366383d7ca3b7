"""Profile mode: per-kernel cycle counters in the generated code.

With ``sw2c.compile(model, profile=True)`` the entry reads the cycle counter
(``llvm.readcyclecounter``: the TSC on x86) before and after each kernel call and adds the
difference, on thread 0 only, to the kernel's counters in the module global
``<name>_profile``: per kernel i, three i64 words

    [3i]     thread 0's wall cycles around the call (for a split kernel: its chunks, then
             waiting for the workers' chunks)
    [3i + 1] cycles thread 0 spent inside the kernel's chunks
    [3i + 2] cycles all threads spent inside the kernel's chunks

A split kernel's chunks run through a wrapper that times each chunk (words 1 and 2); for a
kernel thread 0 runs alone they stay 0 here and `KernelProfile` reads them as word 0.
``<name>_cycles`` returns the counter, for calibrating cycles against ``time.perf_counter``.
The normal (non-profile) build emits none of this.
"""

from __future__ import annotations

import ctypes
import time
from functools import lru_cache
from typing import Any

import numpy as np
from llvmlite import ir

from .llvm import I64
from .loops import const

WORDS = 3  # counters per kernel, see the module docstring


def _cycle_counter(module: ir.Module) -> ir.Function:
    fn = module.globals.get("llvm.readcyclecounter")
    return fn or ir.Function(module, ir.FunctionType(I64, []), "llvm.readcyclecounter")


class Profiler:
    """Emits the counters of one module: `start`/`stop` around each kernel call in the entry,
    `wrap` for the chunks of a split kernel."""

    def __init__(self, module: ir.Module, name: str, kernels: int) -> None:
        self.module = module
        array = ir.ArrayType(I64, WORDS * max(kernels, 1))
        self.counters = ir.GlobalVariable(module, array, f"{name}_profile")
        self.counters.initializer = ir.Constant(array, None)
        self.counters.align = 64
        self._emit_cycles(f"{name}_cycles")

    def _emit_cycles(self, symbol: str) -> None:
        """`i64 <symbol>()`: the cycle counter, for calibration from Python."""
        fn = ir.Function(self.module, ir.FunctionType(I64, []), symbol)
        b = ir.IRBuilder(fn.append_basic_block())
        b.ret(b.call(_cycle_counter(self.module), []))

    def _word(self, b: ir.IRBuilder, index: int, word: int) -> ir.Value:
        return b.gep(self.counters, [ir.Constant(I64, 0), const(WORDS * index + word)])

    def _add(self, b: ir.IRBuilder, index: int, word: int, cycles: ir.Value,
             tid: ir.Value) -> None:
        """Add ``cycles`` to the word when ``tid`` is 0 (atomic: workers add 0 to it too)."""
        mine = b.select(b.icmp_unsigned("==", tid, const(0)), cycles, const(0))
        b.atomic_rmw("add", self._word(b, index, word), mine, "monotonic")

    def start(self, b: ir.IRBuilder) -> ir.Value:
        """Read the counter before a kernel call."""
        return b.call(_cycle_counter(self.module), [])

    def stop(self, b: ir.IRBuilder, started: ir.Value, tid: ir.Value, index: int) -> None:
        """After kernel ``index``'s call: add the cycles since ``started`` to word 0."""
        cycles = b.sub(b.call(_cycle_counter(self.module), []), started)
        self._add(b, index, 0, cycles, tid)

    def wrap(self, kernel: ir.Function, args: list[ir.Value], tid: ir.Value,
             index: int) -> tuple[ir.Function, list[ir.Value]]:
        """A function taking ``(*args, tid, chunk)`` that times one chunk of ``kernel`` into
        words 1 (thread 0) and 2 (every thread); returns it with its arguments but the
        chunk, for `emit_split_call`."""
        types = [*kernel.function_type.args[:-1], I64, I64]
        fn = ir.Function(self.module, ir.FunctionType(ir.VoidType(), types),
                         f"{kernel.name}.profiled{index}")
        fn.linkage = "internal"
        b = ir.IRBuilder(fn.append_basic_block())
        *passed, who, chunk = fn.args
        started = self.start(b)
        b.call(kernel, [*passed, chunk])
        cycles = b.sub(b.call(_cycle_counter(self.module), []), started)
        b.atomic_rmw("add", self._word(b, index, 2), cycles, "monotonic")
        self._add(b, index, 1, cycles, who)
        b.ret_void()
        return fn, [*args, tid]


# --------------------------------------------------------------------------- run time


@lru_cache(maxsize=1)
def _calibrate(cycles_address: int, seconds: float = 0.05) -> float:
    """Counter ticks per second, measured once per process against time.perf_counter (the
    TSC runs at a constant rate whatever the core's clock)."""
    cycles = ctypes.CFUNCTYPE(ctypes.c_int64)(cycles_address)
    c0, t0 = cycles(), time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        pass
    c1, t1 = cycles(), time.perf_counter()
    return (c1 - c0) / (t1 - t0)


class KernelProfile:
    """The counters of a compiled module (``module.profile``): `reset`, then run the module,
    then `seconds` gives per-kernel times."""

    def __init__(self, engine: Any, name: str, kernels: int) -> None:
        self.kernels = kernels
        address = engine.get_global_value_address(f"{name}_profile")
        self._words = (ctypes.c_int64 * (WORDS * max(kernels, 1))).from_address(address)
        self.ticks_per_second = _calibrate(engine.get_function_address(f"{name}_cycles"))

    def reset(self) -> None:
        """Zero every counter."""
        ctypes.memset(self._words, 0, ctypes.sizeof(self._words))

    def cycles(self) -> np.ndarray:
        """[kernels, 3] int64: thread 0 wall, thread 0 busy, all threads busy (see the module
        docstring); the busy words of a kernel thread 0 runs alone are its wall cycles."""
        words = np.ctypeslib.as_array(self._words).reshape(-1, WORDS)[:self.kernels].copy()
        solo = words[:, 2] == 0  # a split kernel's chunks always count some cycles
        words[solo, 1] = words[solo, 0]
        words[solo, 2] = words[solo, 0]
        return words

    def seconds(self) -> np.ndarray:
        """Thread 0's wall time per kernel since the last `reset`, in seconds."""
        return self.cycles()[:, 0] / self.ticks_per_second
