"""A bit-exact simulator of the fixed-point accelerator.

It executes the int8 program step by step on one SRAM arena laid out by the memory plan,
using the integer reference for each kernel. Every access is checked against the plan: a step
may only read a tensor whose buffer is live and still holds that tensor's bytes (nothing else
wrote over them), and only write inside its output's buffer. Cycles and energy come from the
static schedule, summed as the steps execute.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..backends.asic.fixed_point import dequantize, quantize
from ..backends.asic.plan import AsicPlan
from ..backends.asic.program import QProgram, QTensor
from ..backends.asic.reference import quantize_inputs, run_step
from ..backends.asic.schedule import Cost
from ..errors import InputError, SimulationError
from .module import Module


class Simulator:
    def __init__(self, program: QProgram, plan: AsicPlan, costs: Sequence[Cost]) -> None:
        self.program, self.plan, self.costs = program, plan, list(costs)
        self.buffers = {b.name: b for b in plan.buffers}
        ids = {name: i for i, name in enumerate(program.tensors)}
        # a tensor's bytes are owned by the step output it views (a reshape is no write)
        self.owner = {name: ids[self._view_root(name)] for name in program.tensors}

    def _where(self, step: int, name: str, verb: str) -> slice:
        t = self.program.tensors[name]
        b = self.buffers[self.plan.roots[name]]
        lo = self.plan.offsets[name]
        hi = lo + t.nbytes
        who = self.program.steps[step].origin if self.program.steps else "entry"
        if not b.first <= step <= b.last:
            raise SimulationError(f"step {step} ({who}) {verb} tensor '{name}' outside its "
                                  f"lifetime (steps {b.first}..{b.last})")
        if not (b.offset <= lo and hi <= b.offset + b.size <= self.plan.arena_bytes):
            raise SimulationError(f"step {step} ({who}) {verb} tensor '{name}' at bytes "
                                  f"{lo}..{hi}, outside its buffer")
        return slice(lo, hi)

    def _view_root(self, name: str) -> str:
        t = self.program.tensors[name]
        while t.view_of:
            t = self.program.tensors[t.view_of]
        return t.name

    def run(self, qfeeds: Sequence[np.ndarray]) -> tuple[list[np.ndarray], Cost]:
        """int8 inputs -> int8 outputs and the summed cost of the executed steps."""
        p = self.program
        arena = np.zeros(self.plan.arena_bytes, np.int8)
        owner = np.full(self.plan.arena_bytes, -1, np.int32)

        def write(step: int, name: str, y: np.ndarray) -> None:
            where = self._where(step, name, "writes")
            t = p.tensors[name]  # int16 codes are stored as their bytes (native order)
            arena[where] = np.ascontiguousarray(y, t.dtype).reshape(-1).view(np.int8)
            owner[where] = self.owner[name]

        def read(step: int, name: str) -> np.ndarray:
            where = self._where(step, name, "reads")
            if np.any(owner[where] != self.owner[name]):
                raise SimulationError(f"step {step} reads tensor '{name}' but its bytes were "
                                      "overwritten: the memory plan overlaps live tensors")
            t = p.tensors[name]
            return arena[where].view(t.dtype).reshape(t.shape).copy()

        for name, x in zip(p.inputs, qfeeds):
            write(0, name, x)
        total = Cost()
        for i, step in enumerate(p.steps):
            y = run_step(step, [read(i, x) for x in step.inputs], p.tensors)
            write(i, step.output, y)
            total = total + self.costs[i]
        end = max(len(p.steps) - 1, 0)
        return [read(end, name) for name in p.outputs], total


class SimulatedModule(Module):
    """A model compiled for the asic target: ``run`` quantizes the float inputs, executes the
    simulator and dequantizes the outputs (float in, float out, like the cpu target);
    ``run_int8`` takes and returns the int8 codes, whose scales and zero points
    ``quantization`` gives (``quantize``/``dequantize`` convert). ``export(dir)`` writes
    portable C99."""

    def __init__(self, name: str, program: QProgram, simulator: Simulator,
                 report: dict[str, Any], exporter: Any = None,
                 dtypes: Mapping[str, str] | None = None) -> None:
        # ``dtypes``: integer inputs (token ids, masks) keep theirs; their codes are the ids
        sig = [(n, program.tensors[n].shape, (dtypes or {}).get(n, "float32"))
               for n in program.inputs]
        out = [(n, program.tensors[n].shape, "float32") for n in program.outputs]
        self._describe(name, sig, out, report, exporter)
        self.program, self.simulator = program, simulator

    @property
    def quantization(self) -> dict[str, tuple[float, int]]:
        """The int8 coding of every input and output, ``{name: (scale, zero_point)}`` with
        real = scale * (code - zero_point): what ``run_int8``'s codes mean (the exported
        header's ``<NAME>_IN0_SCALE`` / ``_ZERO_POINT`` macros hold the same numbers)."""
        p = self.program
        return {n: (float(p.tensors[n].scale), int(p.tensors[n].zero_point))
                for n in (*p.inputs, *p.outputs)}

    def _coded(self, name: str | None, names: Sequence[str], what: str) -> QTensor:
        """The program tensor of input or output ``name`` (default: the only one)."""
        if name is None:
            if len(names) != 1:
                raise InputError(f"{self.name} has {len(names)} {what}s ({', '.join(names)}): "
                                 f"name the {what}")
            name = names[0]
        if name not in names:
            raise InputError(f"{self.name} has no {what} {name!r}; its {what}s are: "
                             f"{', '.join(names)}")
        return self.program.tensors[name]

    def quantize(self, x: Any, name: str | None = None) -> np.ndarray:
        """Float values of input ``name`` (default: the only input) -> its int8 codes,
        rounded and saturated exactly as ``module(x)`` and the exported ``_run`` do."""
        t = self._coded(name, self.program.inputs, "input")
        return quantize(np.asarray(x, np.float32), t.scale, t.zero_point, t.bits)

    def dequantize(self, q: Any, name: str | None = None) -> np.ndarray:
        """int8 codes of output ``name`` (default: the only output) -> float32 values."""
        t = self._coded(name, self.program.outputs, "output")
        q = np.asarray(q)
        info = np.iinfo(t.dtype)
        codes = np.issubdtype(q.dtype, np.integer) and (
            q.size == 0 or info.min <= q.min() <= q.max() <= info.max)
        if not codes:
            raise InputError(f"dequantize takes the int{t.bits} codes ({info.min}..{info.max}) "
                             f"of output '{t.name}', got {q.dtype} values")
        return dequantize(q.astype(t.dtype), t.scale, t.zero_point)

    def run_int8(self, qfeeds: Sequence[np.ndarray] | Mapping[str, np.ndarray] | np.ndarray
                 ) -> list[np.ndarray]:
        """int8 codes in, int8 codes out (one array per output, in order); no float at all.
        The codes are one array per input in order (a list), a dict by input name, or, for a
        one-input model, the array itself; ``quantization`` says what they mean and
        ``quantize``/``dequantize`` convert."""
        names = [n for n, _, _ in self.inputs]
        if isinstance(qfeeds, np.ndarray) and len(names) == 1:
            qfeeds = [qfeeds]
        elif isinstance(qfeeds, Mapping):
            unknown = [k for k in qfeeds if k not in names]
            if unknown:
                raise InputError(f"unknown input {unknown[0]!r}; the model's inputs are: "
                                 f"{', '.join(names)}")
            qfeeds = [qfeeds.get(n) for n in names]
        if not isinstance(qfeeds, (list, tuple)):
            raise InputError(f"run_int8 takes a list of int8 arrays, one per input in order "
                             f"({', '.join(names)}), or a dict by input name; got "
                             f"{type(qfeeds).__name__}")
        if len(qfeeds) != len(names):
            raise InputError(f"{self.name} takes {len(names)} input(s) ({', '.join(names)}), "
                             f"got {len(qfeeds)}")
        qfeeds = [np.asarray(q) if isinstance(q, np.generic) else q for q in qfeeds]  # 0-d
        for (name, shape, _), q in zip(self.inputs, qfeeds):
            t = self.program.tensors[name]
            if not isinstance(q, np.ndarray) or q.dtype != t.dtype or q.shape != shape:
                got = (f"{q.dtype} {q.shape}" if isinstance(q, np.ndarray) else
                       "nothing" if q is None else type(q).__name__)
                raise InputError(f"input '{name}' must be an int{t.bits} array of shape "
                                 f"{shape}, got {got} (module.quantize(x, '{name}') gives "
                                 "the codes of float values)")
        with self._lock:
            outs, _ = self.simulator.run(qfeeds)
        return outs

    def _call(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        outs = self.run_int8(quantize_inputs(self.program, arrays))
        return [self.dequantize(q, n) for n, q in zip(self.program.outputs, outs)]

    def __repr__(self) -> str:
        return super().__repr__().replace("<sw2c.Module", f"<sw2c.Module[{self.report['target']}]")
