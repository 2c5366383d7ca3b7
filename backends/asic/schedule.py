"""The static schedule: each step mapped onto the target's units, with its cycles and traffic.

The MAC array is weight stationary, counted as SCALE-Sim v3 counts it (Samajdar et al., ISPASS
2020): each [rows x cols] tile of the weights is shifted in (``tile_load_cycles``, one row per
cycle), then the M activation rows stream through it with the array's fill and drain, so a
GEMM takes ``tiles x (M + load + rows + cols - 2) - 1`` cycles; tiles whose weights are all
zero (the off-diagonal blocks of a grouped conv) are skipped. Depthwise convs, pools, adds,
tables, requantize and data movement run on the vector unit, ``vector_lanes`` int32
operations per cycle; requantization overlaps the MAC array when the target says the vector
unit runs alongside it.

Memories with a stated bandwidth turn traffic into cycles: a step lasts as long as its slowest
unit or memory port. Weights stream through a double-buffered weight buffer: before the array
starts, the first half of the buffer is filled (as SCALE-Sim's initial prefetch), unless the
previous step left the weight port idle long enough to prefetch it. int32 partial sums between
K tiles live in the accumulator. When a column of them does not fit, the schedule takes the
faster of two loop orders (then the one spending less energy): spill the sums to the SRAM and
back, or cut M into chunks whose sums fit and stream the weights once per chunk (the order
ZigZag's search finds; it costs a tile load and the array's fill per extra pass).
Every step pays ``step_overhead_cycles``. Nothing depends on the data, so the figures are
known at compile time; the simulator adds them up as it executes.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, replace
from math import ceil, prod

import numpy as np

from .program import Kind, QProgram, Step
from .target import Target

# vector operations per element (softmax: max, subtract, table, sum, a divide of ~4 ops)
VECTOR_PASSES = {Kind.ADD: 3, Kind.SUB: 3, Kind.MUL: 2, Kind.LUT: 1, Kind.SOFTMAX: 8}
# LayerNorm per element: the sum, d and its square, d again, the Q30 product, mbqm, beta
VECTOR_PASSES[Kind.LAYERNORM] = 8
ISQRT_OPS = 2 * 31 + 4  # per LayerNorm row: the bitwise isqrt, the reciprocal's divide
PSUM_BYTES = 4  # int32 partial sums
# a 16x8 MAC (int16 activation, int8 weight, int64 accumulator) against an 8x8 one: twice the
# multiplier's partial products and twice the accumulator's width (Horowitz, ISSCC 2014:
# multiplier energy grows with the product of the operand widths)
WIDE_MAC_ENERGY = 2.0
VECTOR_PASSES[Kind.CONVERT] = 1  # a change of precision: center, then the requantization


@dataclass(frozen=True)
class Cost:
    cycles: int = 0
    macs: int = 0
    vector_ops: int = 0
    sram_read: int = 0  # bytes
    sram_write: int = 0
    weight_read: int = 0
    acc_bytes: int = 0  # accumulator traffic: partial sums read and written, outputs staged
    wide_macs: int = 0  # of ``macs``, those on int16 activations (16x8)
    ext_bytes: int = 0  # external RAM traffic (activations spilled there: plan_spilled)
    psum_spill: int = 0  # of the SRAM traffic, int32 partial sums spilled (bytes each way)

    def __add__(self, o: Cost) -> Cost:
        return Cost(*(a + b for a, b in zip(self.astuple(), o.astuple())))

    def astuple(self) -> tuple[int, ...]:
        return tuple(self.__dict__.values())  # the fields in order (dataclasses.astuple is slow)

    def energy_pj(self, t: Target) -> float:
        return (self.macs * t.e_mac + self.vector_ops * t.e_vector_op
                + (self.sram_read + self.sram_write) * t.e_sram_byte
                + self.weight_read * t.e_weight_byte
                + self.acc_bytes * t.e_accumulator_access / PSUM_BYTES
                + self.wide_macs * t.e_mac * (WIDE_MAC_ENERGY - 1)
                + self.ext_bytes * t.e_external_byte)


@dataclass(frozen=True)
class Tiles:
    """The weight tiles of a [K, N] matrix the array runs: how many, the weights they hold;
    and over the output columns that take more than one tile (whose sums need int32 partial
    sums between tiles), the sum of those tiles' widths and the number of such columns."""

    count: int
    area: int
    stacked: int
    stacked_columns: int

    @classmethod
    def dense(cls, k: int, n: int, t: Target) -> Tiles:
        kt = ceil(k / t.mac_rows)
        return cls(kt * ceil(n / t.mac_cols), k * n, kt * n if kt > 1 else 0,
                   n if kt > 1 else 0)


# live_tiles of the weights a schedule has seen: the tiled programs a search prices share
# their layers' weight arrays (never changed after lowering), by identity
_TILES: dict[tuple[int, int, int], tuple[weakref.ref, Tiles]] = {}
TILES_CACHED = 4096


def live_tiles(w: np.ndarray, t: Target) -> Tiles:
    """The tiles holding a nonzero weight: the array skips all-zero ones."""
    key = (id(w), t.mac_rows, t.mac_cols)
    hit = _TILES.get(key)
    if hit is not None and hit[0]() is w:
        return hit[1]
    if len(_TILES) >= TILES_CACHED:
        _TILES.clear()
    tiles = _live_tiles(w, t)
    _TILES[key] = (weakref.ref(w), tiles)
    return tiles


def _live_tiles(w: np.ndarray, t: Target) -> Tiles:
    rows, cols = t.mac_rows, t.mac_cols
    k, n = w.shape
    padded = np.zeros((-(-k // rows) * rows, -(-n // cols) * cols), bool)
    padded[:k, :n] = w != 0
    live = padded.reshape(padded.shape[0] // rows, rows, -1, cols).any(axis=(1, 3))
    inside = np.zeros_like(padded)
    inside[:k, :n] = True
    area = inside.reshape(live.shape[0], rows, -1, cols).sum(axis=(1, 3))
    width = np.minimum(cols, n - np.arange(live.shape[1]) * cols)  # the last tile is narrower
    per_column = live.sum(axis=0)
    multi = per_column > 1
    return Tiles(int(live.sum()), int(area[live].sum()), int((per_column * width)[multi].sum()),
                 int(width[multi].sum()))


def mac_cycles(m: int, tiles: int, t: Target) -> int:
    """SCALE-Sim's weight-stationary compute cycles for ``tiles`` tiles of M rows."""
    return max(tiles * (m + t.tile_load_cycles + t.mac_rows + t.mac_cols - 2) - 1, 0)


def weight_fill(weight_bytes: int, t: Target) -> int:
    """Bytes loaded before the array starts: the first half of the double-buffered weight
    buffer (or all the weights, if fewer)."""
    return min(weight_bytes, max(t.weight_buffer // 2, t.tile_bytes))


def _port(nbytes: int, per_cycle: float | None) -> int:
    """Cycles a memory port is busy moving ``nbytes`` (0 when the bandwidth is unlimited)."""
    return ceil(nbytes / per_cycle) if per_cycle else 0


def gemm_cycles(compute: int, t: Target, *, weight_bytes: int, sram_bytes: int = 0,
                vector_ops: int = 0, hidden: int = 0) -> int:
    """Cycles of a GEMM whose array takes ``compute`` cycles, without the step overhead: the
    slowest of the array, the weight stream, the SRAM port and (if it overlaps) the vector
    unit, after the weight buffer's first fill less the ``hidden`` cycles of it prefetched in
    the previous step."""
    vector = ceil(vector_ops / t.vector_lanes)
    fill = _port(weight_fill(weight_bytes, t), t.weight_bytes_per_cycle)
    stream = _port(weight_bytes, t.weight_bytes_per_cycle) - fill
    body = max(compute, stream, _port(sram_bytes, t.sram_bytes_per_cycle))
    if t.vector_overlaps_mac:
        body = max(body, vector)
    else:
        body += vector
    return max(fill - hidden, 0) + body


def psum_traffic(m: int, n: int, tiles: Tiles, t: Target) -> tuple[int, int]:
    """(accumulator bytes, bytes spilled to SRAM each way) in the one-pass order. Outputs are
    staged in the accumulator on their way to the SRAM: every int8 result is written and read
    once, and where a column takes several K tiles, each tile's M x width int32 partial sums
    are written once and read once (by the next tile's add, or by the requantization), as
    ZigZag counts them. A column of tiles needs M x cols partial sums at once; if the
    accumulator holds fewer, all but the last tile's go through the SRAM instead."""
    if t.accumulator_bytes is None:
        return 0, 0
    staged = 2 * m * n + 2 * PSUM_BYTES * m * tiles.stacked
    if m <= chunk_rows(t):
        return staged, 0
    return staged, PSUM_BYTES * m * (tiles.stacked - tiles.stacked_columns)


def chunk_rows(t: Target) -> int:
    """The most rows whose partial sums for a column of tiles fit the accumulator."""
    if t.accumulator_bytes is None:
        return 1 << 62
    return t.accumulator_bytes // (t.mac_cols * PSUM_BYTES)


def gemm_cost(m: int, k: int, n: int, t: Target, *, tiles: Tiles | None = None,
              params: int | None = None, requant: bool = True, hidden: int = 0) -> Cost:
    """The cost of a GEMM [M, K] @ [K, N] on the array (without the step overhead): the
    activation rows are re-read for every column of tiles, the int8 outputs written once,
    the weights (``params`` bytes with biases and requantization parameters) read once per
    pass over M. Partial sums that overflow the accumulator in one pass are priced both
    ways, spilled or in chunks of M (``psum_traffic``), and the faster order is taken."""
    tiles = tiles or Tiles.dense(k, n, t)
    params = k * n if params is None else params
    extra = params - k * n  # biases, requantization: read once (all-zero tiles never are)
    acc, spill = psum_traffic(m, n, tiles, t)
    out = m * n
    vector = out if requant else 0
    read = m * k * ceil(n / t.mac_cols)

    def order(rows: int, spill: int) -> Cost:  # passes over M of ``rows`` (the last fewer)
        chunks = ceil(m / rows)
        compute = (chunks - 1) * mac_cycles(rows, tiles.count, t) + mac_cycles(
            m - (chunks - 1) * rows, tiles.count, t)
        weights = extra + chunks * tiles.area
        cycles = gemm_cycles(compute, t, weight_bytes=weights,
                             sram_bytes=read + out + 2 * spill, vector_ops=vector, hidden=hidden)
        return Cost(cycles, m * tiles.area, vector, read + spill, out + spill, weights, acc,
                    psum_spill=spill)

    one_pass = order(m, spill)
    if not spill or chunk_rows(t) == 0:
        return one_pass
    chunked = order(chunk_rows(t), 0)
    return min(one_pass, chunked, key=lambda c: (c.cycles, c.energy_pj(t)))


def _taps(step: Step, in_size: int, out_size: int) -> int:
    """Input elements combined into each output element by a reduction."""
    return prod(step.window.kernel) if step.window is not None else in_size // out_size


def _params(step: Step) -> int:
    return sum(c.nbytes for c in step.consts.values()) + (
        step.requant.multiplier.nbytes + step.requant.shift.nbytes if step.requant else 0)


def _vector_step(ops: int, read: int, write: int, params: int, t: Target) -> int:
    """Cycles of a vector-unit step: its lanes, or a memory port if that is slower."""
    return max(ceil(ops / t.vector_lanes), _port(read + write, t.sram_bytes_per_cycle),
               _port(params, t.weight_bytes_per_cycle)) + t.step_overhead_cycles


def step_cost(step: Step, program: QProgram, t: Target, hidden: int = 0) -> Cost:
    """The cost of one step; ``hidden`` cycles of its weight fill were prefetched earlier."""
    ts = program.tensors
    out = ts[step.output].size
    ins = [ts[i].size for i in step.inputs]
    params = _params(step)
    requant = out if step.requant is not None else 0
    if step.kind is Kind.CONV:
        w = step.consts["weights"]
        k, n = w.shape
        c = gemm_cost(out // n, k, n, t, tiles=live_tiles(w, t), params=params,
                      requant=step.requant is not None, hidden=hidden)
        return Cost(c.cycles + t.step_overhead_cycles, *c.astuple()[1:])
    if step.kind in (Kind.DEPTHWISE, Kind.SUM_POOL, Kind.MAX_POOL):
        ops = out * _taps(step, ins[0], out)
        macs = ops if step.kind is Kind.DEPTHWISE else 0
        return Cost(_vector_step(ops + requant, ops, out, params, t), macs,
                    ops - macs + requant, ops, out, params)
    if step.kind is Kind.BATCH_MATMUL:
        return batch_matmul_cost(step, program, t)
    if step.kind is Kind.CONST:  # a constant operand: weight memory -> SRAM
        return Cost(_vector_step(out, 0, out, params, t), 0, 0, 0, out, params)
    if step.kind is Kind.GATHER:  # embedding rows: weight memory -> SRAM, one per index
        return Cost(_vector_step(out, ins[0], out, out, t), 0, 0, ins[0], out, out)
    if step.kind is Kind.LAYERNORM:  # + a 31-step isqrt and a divide per row
        rows = out // max(ts[step.output].shape[-1], 1)
        ops = out * VECTOR_PASSES[step.kind] + rows * ISQRT_OPS
        return Cost(_vector_step(ops, 2 * out, out, params, t), 0, ops, 2 * out, out, params)
    if step.kind in VECTOR_PASSES:
        ops = out * (VECTOR_PASSES[step.kind] + ("mask_weight" in step.consts)) + requant
        read = out * len(ins)
        return Cost(_vector_step(ops, read, out, params, t), 0, ops, read, out, params)
    moved = out if step.kind is not Kind.PAD else out + ins[0]
    read = sum(ins) if step.kind in (Kind.TRANSPOSE, Kind.CONCAT, Kind.PAD) else out
    return Cost(_vector_step(moved, read, out, 0, t), 0, 0, read, out, 0)


def batch_matmul_cost(step: Step, program: QProgram, t: Target) -> Cost:
    """A matmul of two activations (attention): one GEMM per batch index, the right operand
    shifted into the array as its weights, but read from the SRAM (it is an activation)."""
    a, b, y = (program.tensors[n] for n in (*step.inputs, step.output))
    m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
    batch = y.size // max(m * n, 1)
    c = gemm_cost(m, k, n, t, params=k * n)
    return Cost(batch * c.cycles + t.step_overhead_cycles, batch * c.macs, batch * c.vector_ops,
                batch * (c.sram_read + c.weight_read), batch * c.sram_write, 0,
                batch * c.acc_bytes)


def _hideable(step: Step, t: Target) -> int:
    """Cycles of a step's first weight fill (what a prefetch could hide)."""
    if step.kind is not Kind.CONV:
        return 0
    return _port(weight_fill(_params(step), t), t.weight_bytes_per_cycle)


def widened(cost: Cost, step: Step, program: QProgram, t: Target) -> Cost:
    """The cost of a step on int16 activations: its SRAM traffic in bytes (the counts above
    are elements) and its MACs as 16x8 ones; its cycles at least what the SRAM port needs
    for that traffic (the units' cycles are the int8 step's)."""
    ts = program.tensors
    out = ts[step.output].bits // 8
    ins = max((ts[i].bits // 8 for i in step.inputs), default=1)
    if out == 1 and ins == 1:
        return cost
    read, write = cost.sram_read * ins, cost.sram_write * out
    cycles = max(cost.cycles, _port(read + write, t.sram_bytes_per_cycle)
                 + t.step_overhead_cycles)
    return replace(cost, cycles=cycles, sram_read=read, sram_write=write,
                   wide_macs=cost.macs if ins == 2 else 0)


def external_shares(cost: Cost, step: Step, program: QProgram, t: Target
                    ) -> list[tuple[str, int]]:
    """The bytes of ``cost``'s SRAM traffic each operand (then the result) of ``step`` would
    move over the external port if it lived in external RAM: an input's share of the reads,
    the result's writes. A conv's partial sums that overflow the accumulator stay in the
    SRAM wherever its operands live."""
    ts = program.tensors
    sizes = [ts[i].nbytes for i in step.inputs]
    psums = cost.psum_spill
    width = max((ts[i].bits // 8 for i in step.inputs), default=1)  # as ``widened`` counts
    reads = cost.sram_read - psums * width
    shares = [(i, reads * n // max(sum(sizes), 1)) for i, n in zip(step.inputs, sizes)]
    return [*shares, (step.output, cost.sram_write - psums * ts[step.output].bits // 8)]


def spilled(cost: Cost, step: Step, program: QProgram, t: Target, external: frozenset[str]
            ) -> Cost:
    """A step whose operands or result live in external RAM (``plan.plan_spilled``): that
    share of its SRAM traffic goes over the external port instead (``external_shares``), and
    the step lasts at least as long as that port is busy."""
    shares = external_shares(cost, step, program, t)
    read = sum(n for i, n in shares[:-1] if i in external)
    write = shares[-1][1] if step.output in external else 0
    if not read and not write:
        return cost
    busy = _port(read + write, t.external_bytes_per_cycle) + t.step_overhead_cycles
    return replace(cost, cycles=max(cost.cycles, busy), sram_read=cost.sram_read - read,
                   sram_write=cost.sram_write - write, ext_bytes=read + write)


def schedule(program: QProgram, target: Target, external: frozenset[str] = frozenset()
             ) -> list[Cost]:
    """The cost of every step, in execution order. A step's first weight fill is prefetched
    into the weight buffer's free half while the previous step runs, as far as that step
    leaves the weight port idle. ``external``: the tensors the plan spilled to external RAM."""
    costs: list[Cost] = []
    idle = 0
    for step in program.steps:
        hidden = min(idle, _hideable(step, target))
        cost = widened(step_cost(step, program, target, hidden), step, program, target)
        if external:
            cost = spilled(cost, step, program, target, external)
        costs.append(cost)
        idle = max(cost.cycles - _port(cost.weight_read, target.weight_bytes_per_cycle), 0)
    return costs
