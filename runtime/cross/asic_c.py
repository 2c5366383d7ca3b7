"""The asic target's C export (``emit_c``) built for a cross target and run in its emulator.

The same C that ``backends/asic/c_runner.CExport`` compiles for the host, compiled with
``zig cc`` for a microcontroller, AArch64 or wasm32 and called through the emulator: its int8
outputs must equal the simulator's bit for bit on every target (the integer semantics are
defined exactly, and the float boundary is IEEE float32 whether the target has an FPU or not).
Each call can also count the instructions it executed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from ...backends.asic.emit_c import emit_c
from ...backends.asic.plan import AsicPlan
from ...backends.asic.program import QProgram
from .emulate import CAP, Call, EmulatedBuild
from .errors import EmulationError
from .targets import Target, lookup
from .toolchain import Binary, build


class CrossCExport(EmulatedBuild):
    """``emit_c(program, plan, name)`` linked for ``target`` (a ``Target`` or a name) into
    ``directory`` (a new temporary one if None). ``binary`` is the linked program (its
    ``sizes``); the emulator starts on the first call, so a target without one (Cortex-M55)
    still builds and reports its size."""

    def __init__(self, program: QProgram, plan: AsicPlan, name: str, target: Target | str,
                 directory: str | os.PathLike | None = None) -> None:
        self.program, self.name = program, name
        self.target = lookup(target) if isinstance(target, str) else target
        self._open_directory(self.target.name, directory)
        source, header = emit_c(program, plan, name)
        (self.directory / f"{name}.c").write_text(source)
        (self.directory / f"{name}.h").write_text(header)
        self.binary: Binary = build(self.target, [self.directory / f"{name}.c"],
                                    [f"{name}_run_int8", f"{name}_run"], directory=self.directory,
                                    name=name)

    def _shapes(self, dtype: type) -> list[tuple[tuple[int, ...], type]]:
        return [(self.program.tensors[n].shape, dtype) for n in self.program.outputs]

    def call_int8(self, qfeeds: Sequence[np.ndarray], count: bool = False,
                  cap: int = CAP) -> Call:
        """``<name>_run_int8`` in the emulator: outputs, result and (``count``) instructions."""
        ins = [np.ascontiguousarray(q, np.int8) for q in qfeeds]
        return self._checked(self.emulator.call(f"{self.name}_run_int8", ins,
                                                self._shapes(np.int8), count=count, cap=cap))

    def call(self, feeds: Sequence[np.ndarray], count: bool = False, cap: int = CAP) -> Call:
        """``<name>_run`` (float32 in and out) in the emulator."""
        ins = [np.ascontiguousarray(x, np.float32) for x in feeds]
        return self._checked(self.emulator.call(f"{self.name}_run", ins,
                                                self._shapes(np.float32), count=count, cap=cap))

    def run_int8(self, qfeeds: Sequence[np.ndarray]) -> list[np.ndarray]:
        """int8 codes in, int8 codes out (like ``CExport.run_int8``)."""
        return self.call_int8(qfeeds).outputs

    def run(self, feeds: Sequence[np.ndarray]) -> list[np.ndarray]:
        """float32 in, float32 out (like ``CExport.run``)."""
        return self.call(feeds).outputs

    def run_int8_many(self, cases: Sequence[Sequence[np.ndarray]]) -> list[list[np.ndarray]]:
        """``run_int8`` on each list of codes in ``cases``: in one boot where the emulator
        boots per run (qemu), else one call after another."""
        return self._many(f"{self.name}_run_int8", cases, np.int8)

    def run_many(self, cases: Sequence[Sequence[np.ndarray]]) -> list[list[np.ndarray]]:
        """``run`` on each list of float32 inputs in ``cases`` (see ``run_int8_many``)."""
        return self._many(f"{self.name}_run", cases, np.float32)

    def _many(self, symbol: str, cases: Sequence[Sequence[np.ndarray]],
              dtype: type) -> list[list[np.ndarray]]:
        arrays = [[np.ascontiguousarray(a, dtype) for a in case] for case in cases]
        emu = self.emulator
        if hasattr(emu, "call_many"):
            calls = emu.call_many(symbol, arrays, self._shapes(dtype))
        else:
            calls = [emu.call(symbol, case, self._shapes(dtype)) for case in arrays]
        return [self._checked(c).outputs for c in calls]

    def __enter__(self) -> CrossCExport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _checked(self, result: Call) -> Call:
        if result.returned != 0:
            raise EmulationError(f"{self.name} on {self.target.name} returned {result.returned}")
        return result
