"""The static schedule: each step mapped onto the target's units, with its cycles and traffic.

The MAC array is weight-stationary: a [rows x cols] tile of the weights is loaded once, the M
activation rows stream through it (re-read once per column tile), and filling and draining
the array costs rows + cols cycles per tile; tiles whose weights are all zero are skipped.
Depthwise convs, pools, adds, tables, requantize and data movement run on the vector unit,
``vector_lanes`` int32 operations per cycle. Every step pays ``step_overhead_cycles``.
Nothing depends on the data, so the figures are known at compile time; the simulator adds
them up as it executes.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil, prod

import numpy as np

from .program import Kind, QProgram, Step
from .target import Target

# vector operations per element (softmax: max, subtract, table, sum, a divide of ~4 ops)
VECTOR_PASSES = {Kind.ADD: 3, Kind.SUB: 3, Kind.MUL: 2, Kind.LUT: 1, Kind.SOFTMAX: 8}


@dataclass(frozen=True)
class Cost:
    cycles: int = 0
    macs: int = 0
    vector_ops: int = 0
    sram_read: int = 0  # bytes
    sram_write: int = 0
    weight_read: int = 0

    def __add__(self, o: Cost) -> Cost:
        return Cost(*(a + b for a, b in zip(self.astuple(), o.astuple())))

    def astuple(self) -> tuple[int, ...]:
        return (self.cycles, self.macs, self.vector_ops, self.sram_read, self.sram_write,
                self.weight_read)

    def energy_pj(self, t: Target) -> float:
        return (self.macs * t.e_mac + self.vector_ops * t.e_vector_op
                + (self.sram_read + self.sram_write) * t.e_sram_byte
                + self.weight_read * t.e_weight_byte)


def _live_tiles(w: np.ndarray, rows: int, cols: int) -> tuple[int, int]:
    """(tiles holding a nonzero weight, the weights those tiles hold): the array skips
    all-zero tiles, such as the off-diagonal blocks of a grouped conv."""
    k, n = w.shape
    padded = np.zeros((-(-k // rows) * rows, -(-n // cols) * cols), bool)
    padded[:k, :n] = w != 0
    live = padded.reshape(padded.shape[0] // rows, rows, -1, cols).any(axis=(1, 3))
    inside = np.zeros_like(padded)
    inside[:k, :n] = True
    area = inside.reshape(live.shape[0], rows, -1, cols).sum(axis=(1, 3))
    return int(live.sum()), int(area[live].sum())


def _taps(step: Step, in_size: int, out_size: int) -> int:
    """Input elements combined into each output element by a reduction."""
    return prod(step.window.kernel) if step.window is not None else in_size // out_size


def step_cost(step: Step, program: QProgram, t: Target) -> Cost:
    ts = program.tensors
    out = ts[step.output].size
    ins = [ts[i].size for i in step.inputs]
    lanes = t.vector_lanes
    params = sum(c.nbytes for c in step.consts.values()) + (
        step.requant.multiplier.nbytes + step.requant.shift.nbytes if step.requant else 0)
    requant = out if step.requant is not None else 0
    if step.kind is Kind.CONV:
        w = step.consts["weights"]
        k, n = w.shape
        m = out // n
        tiles, area = _live_tiles(w, t.mac_rows, t.mac_cols)
        cycles = tiles * (m + t.mac_rows + t.mac_cols) + ceil(requant / lanes)
        return Cost(cycles + t.step_overhead_cycles, m * area, requant,
                    m * k * ceil(n / t.mac_cols), out, params)
    if step.kind in (Kind.DEPTHWISE, Kind.SUM_POOL, Kind.MAX_POOL):
        ops = out * _taps(step, ins[0], out)
        macs = ops if step.kind is Kind.DEPTHWISE else 0
        vector = ops - macs + requant
        return Cost(ceil((ops + requant) / lanes) + t.step_overhead_cycles, macs, vector, ops,
                    out, params)
    if step.kind in VECTOR_PASSES:
        ops = out * VECTOR_PASSES[step.kind] + requant
        return Cost(ceil(ops / lanes) + t.step_overhead_cycles, 0, ops, out * len(ins), out,
                    params)
    moved = out if step.kind is not Kind.PAD else out + ins[0]
    return Cost(ceil(moved / lanes) + t.step_overhead_cycles, 0, 0, sum(ins) if step.kind in (
        Kind.TRANSPOSE, Kind.CONCAT, Kind.PAD) else out, out, 0)


def schedule(program: QProgram, target: Target) -> list[Cost]:
    """The cost of every step, in execution order."""
    return [step_cost(s, program, target) for s in program.steps]
