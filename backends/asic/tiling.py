"""Patch-based tiling: a run of early layers computed one spatial patch at a time, so the
activations fit the target's SRAM (MCUNetV2: Lin et al., "Memory-efficient patch-based
inference for tiny deep learning", NeurIPS 2021).

When the layer-by-layer arena of a program exceeds the SRAM, the high-resolution part of the
network is what overflows: the first layers' maps are large, the later ones small. This pass
rewrites a contiguous run of steps (convs, depthwise convs, pools, adds, tables, transposes,
pads) that reads one tensor from outside (the *entry*) and leaves one (the *exit*): the exit
is cut into a grid of spatial tiles, and each tile is computed from its own input patch,
walking the run backwards to find the patch every layer needs (the halo: a 3x3 window needs
one more row and column each side, which the neighbouring tile computes too). The rewrite uses
the existing step kinds only:

- a SLICE of the entry per tile (its receptive field, clipped to the map);
- per tile, a copy of every step of the run on the tile's shapes, with the window's pads kept
  where the tile touches the map's border and dropped inside it (the halo is real data there);
  per-position constants (an average pool's divisors) cropped to the tile; a SLICE where a
  consumer needs less of a tensor than its tile holds (a residual add after a 3x3 conv);
- CONCATs that assemble the tiles into the exit, one row of tiles at a time.

Each tile computes exactly what the untiled step computes at those positions, so the integer
reference, the simulator and the C export stay bit-exact with the untiled program; the memory
planner reuses the patch buffers from tile to tile. The cost is the recomputed halo (extra
MACs) and, on a weight-stationary array, the weights streamed once per tile: the search picks
the run and the grid with the fewest cycles whose arena fits.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from math import prod
from typing import Any

import numpy as np

from .plan import AsicPlan, arena_lower_bound, live_bytes, plan_program
from .program import Kind, QProgram, QTensor, Step
from .schedule import Cost, schedule
from .target import Target

Region = tuple[tuple[int, int], ...]  # (lo, hi) per spatial dimension of the run
WINDOWED = frozenset({Kind.CONV, Kind.DEPTHWISE, Kind.SUM_POOL, Kind.MAX_POOL})
ELEMENTWISE = frozenset({Kind.ADD, Kind.SUB, Kind.MUL, Kind.LUT})
MAX_TILES = 8  # per spatial axis
MAX_PLACEMENTS = 12  # full memory plans tried (best candidates first) before giving up
MORE_RUNS = 2  # runs tried after the first that fits


class Untileable(Exception):
    """A run or tile the rewrite cannot express (the search skips it; never reaches a user)."""



@dataclass(frozen=True)
class Run:
    """Steps ``start..end`` of a program, reading ``entry`` from outside and leaving ``exit``;
    ``axes`` gives every tensor's spatial axes (``ns`` of them)."""

    start: int
    end: int
    entry: str
    exit: str
    axes: dict[str, tuple[int, ...]]
    ns: int


@dataclass(frozen=True)
class Tiling:
    """What the tiling did and what it costs: the run (first and last layer), the grid of
    tiles over the run's output, where each tile's steps sit in the tiled program, and the
    arena, MACs and cycles before and after."""

    first: str
    last: str
    layers: int
    grid: tuple[int, ...]
    tile_steps: tuple[tuple[int, int], ...]  # [first, last] step of each tile
    arena_before: int
    arena_after: int
    macs_before: int
    macs_after: int
    cycles_before: int
    cycles_after: int
    untiled: QProgram | None = field(default=None, repr=False, compare=False)  # for checks
    # further runs tiled in the same program (tiling plus spilling: spill.py), each with its
    # own figures; this one's before/after figures then cover the whole program
    more: tuple[Tiling, ...] = ()

    @property
    def extra_macs(self) -> int:
        return self.macs_after - self.macs_before

    @property
    def extra_cycles(self) -> int:
        return self.cycles_after - self.cycles_before

    def as_json(self) -> dict[str, Any]:
        return {
            "run": [self.first, self.last], "layers": self.layers, "grid": list(self.grid),
            "tiles": prod(self.grid), "tile_steps": [list(s) for s in self.tile_steps],
            "arena_before_bytes": self.arena_before, "arena_after_bytes": self.arena_after,
            "extra_macs": self.extra_macs,
            "extra_macs_pct": round(100 * self.extra_macs / max(self.macs_before, 1), 2),
            "extra_cycles": self.extra_cycles,
            "extra_cycles_pct": round(100 * self.extra_cycles / max(self.cycles_before, 1), 2),
            **({"more_runs": [m.as_json() for m in self.more]} if self.more else {}),
        }

    def describe(self) -> str:
        j = self.as_json()
        return (f"patch-based tiling: {self.layers} steps ({self.first} .. {self.last}) in "
                f"{'x'.join(map(str, self.grid))} tiles; arena {self.arena_before:,} -> "
                f"{self.arena_after:,} bytes; recompute +{self.extra_macs:,} MACs "
                f"(+{j['extra_macs_pct']}%), +{self.extra_cycles:,} cycles "
                f"(+{j['extra_cycles_pct']}%)")


@dataclass(frozen=True)
class TileResult:
    """The tiled program and plan when one fits (``tiling`` set), else ``why`` not."""

    program: QProgram
    plan: AsicPlan
    tiling: Tiling | None
    why: str = ""


# ------------------------------------------------------------------------------------------
# Analysis: which runs can be tiled, and each tensor's spatial axes
# ------------------------------------------------------------------------------------------

def _root(tensors: dict[str, QTensor], name: str) -> str:
    while tensors[name].view_of:
        name = tensors[name].view_of
    return name


def _per_channel(a: np.ndarray | None, channels: int) -> bool:
    return a is None or np.asarray(a).size in (1, channels)


def _window_out(size: tuple[int, ...], w: Any) -> tuple[int, ...]:
    """The output positions of window ``w`` over a map of ``size`` positions."""
    n = len(size)
    return tuple((size[d] + w.pads[d] + w.pads[n + d] - (w.kernel[d] - 1) * w.dilations[d] - 1)
                 // w.strides[d] + 1 for d in range(n))


def _input_axes(s: Step, out_axes: tuple[int, ...], ts: dict[str, QTensor], ns: int
                ) -> list[tuple[int, ...]]:
    """The spatial axes of each input of ``s``, given its output's; Untileable when the step is
    not local in space (or not a kind the rewrite knows)."""
    if not s.inputs:
        raise Untileable  # a constant: nothing to tile
    x, y = ts[s.inputs[0]], ts[s.output]
    k = s.kind
    if k in WINDOWED and s.window is not None:
        if out_axes != tuple(range(1, ns + 1)) or len(x.shape) != ns + 2 \
                or len(s.window.kernel) != ns or len(s.inputs) != 1:
            raise Untileable
        if k is not Kind.CONV and not _per_channel(s.consts.get("bias"), x.shape[-1]):
            raise Untileable
        # the output must be [N, *O, (1s,) C]: a lowering may lay a conv's out otherwise
        # (a ConvTranspose interleaves its phases)
        tail = y.shape[ns + 1:]
        c = s.consts["weights"].shape[1] if k is Kind.CONV else x.shape[-1]
        if y.shape[0] != x.shape[0] or not tail or tail[-1] != c or prod(tail) != c:
            raise Untileable
        # and its axes 1..ns the window's positions: a 1-channel map written straight into
        # an NCHW output has the same bytes as [N, *O, C] but a C-sized axis 1
        if y.shape[1:ns + 1] != _window_out(x.shape[1:ns + 1], s.window):
            raise Untileable
        return [out_axes]
    if k is Kind.CONV:  # rows of K: a 1x1 conv over [N, H, W, C]
        if len(s.inputs) != 1 or x.shape[:-1] != y.shape[:-1] or len(y.shape) - 1 in out_axes:
            raise Untileable  # (a tiled axis must not be the one the weights contract)
        return [out_axes]
    if k in ELEMENTWISE:
        if any(ts[i].shape != y.shape for i in s.inputs):
            raise Untileable  # broadcasting along a tiled axis
        table = s.consts.get("table")
        if k is Kind.LUT and table is not None and np.ndim(table) == 2 \
                and int(s.attrs["axis"]) % len(y.shape) in out_axes:
            raise Untileable
        return [out_axes] * len(s.inputs)
    if k is Kind.TRANSPOSE:
        perm = s.attrs["perm"]
        return [tuple(int(perm[a]) for a in out_axes)]
    if k is Kind.PAD:
        if min(s.attrs["pads"]) < 0:
            raise Untileable
        return [out_axes]
    if k is Kind.CONCAT:
        axis = int(s.attrs["axis"]) % len(y.shape)
        if axis in out_axes:
            raise Untileable
        return [out_axes] * len(s.inputs)
    raise Untileable


def _note_axes(axes: dict[str, tuple[int, ...]], ts: dict[str, QTensor], name: str,
               ax: tuple[int, ...]) -> None:
    """Record ``name``'s spatial axes (and its view source's, which must agree)."""
    t = ts[name]
    if max(ax) >= len(t.shape) or axes.setdefault(name, ax) != ax:
        raise Untileable
    if t.view_of:
        src = ts[t.view_of]
        top = max(ax) + 1
        if src.shape[:top] != t.shape[:top]:
            raise Untileable  # the reshape mixes a spatial axis with others
        _note_axes(axes, ts, t.view_of, ax)


def analyze(program: QProgram, start: int, end: int) -> Run:
    """The run of steps ``start..end`` if the rewrite can tile it, else Untileable."""
    ts = program.tensors
    steps = program.steps[start:end + 1]
    produced = {_root(ts, s.output) for s in steps}
    outside = {x for s in steps for x in s.inputs if _root(ts, x) not in produced}
    exit_ = steps[-1].output
    later = {_root(ts, x) for s in program.steps[end + 1:] for x in s.inputs}
    later |= {_root(ts, o) for o in program.outputs}
    if len(outside) != 1 or _root(ts, exit_) != exit_ or produced & later != {exit_}:
        raise Untileable
    windows = [s.window for s in steps if s.window is not None]
    if not windows:
        raise Untileable
    ns = len(windows[0].kernel)
    axes: dict[str, tuple[int, ...]] = {}
    _note_axes(axes, ts, exit_, tuple(range(1, ns + 1)))
    for s in reversed(steps):
        if s.output not in axes:
            raise Untileable  # a step whose result the run's exit does not need
        for x, ax in zip(s.inputs, _input_axes(s, axes[s.output], ts, ns)):
            _note_axes(axes, ts, x, ax)
    return Run(start, end, outside.pop(), exit_, axes, ns)


def tileable(program: QProgram, start: int, end: int) -> Run | None:
    """The run of steps ``start..end`` if the rewrite can tile it, else None."""
    try:
        return analyze(program, start, end)
    except Untileable:
        return None


# ------------------------------------------------------------------------------------------
# The rewrite
# ------------------------------------------------------------------------------------------

def _union(a: Region | None, b: Region) -> Region:
    return b if a is None else tuple((min(p[0], q[0]), max(p[1], q[1])) for p, q in zip(a, b))


def _back(s: Step, out: Region, ts: dict[str, QTensor], axes: dict[str, tuple[int, ...]]
          ) -> tuple[list[Region], Any]:
    """The region of each input that ``out`` of step ``s`` needs, and the step's new pads
    (window or PAD) for that tile."""
    x = ts[s.inputs[0]]
    if s.window is not None:
        w, n = s.window, len(out)
        region, begin, end = [], [], []
        for d, (o0, o1) in enumerate(out):
            lo_raw = o0 * w.strides[d] - w.pads[d]
            hi_raw = (o1 - 1) * w.strides[d] - w.pads[d] + (w.kernel[d] - 1) * w.dilations[d] + 1
            lo, hi = max(lo_raw, 0), min(hi_raw, x.shape[1 + d])
            if lo >= hi:
                raise Untileable  # a tile inside the padding
            region.append((lo, hi))
            begin.append(lo - lo_raw)
            end.append(hi_raw - hi)
        assert len(begin) == n
        return [tuple(region)], (*begin, *end)
    if s.kind is Kind.PAD:
        pads = list(s.attrs["pads"])
        r = len(x.shape)
        region = []
        for d, (o0, o1) in enumerate(out):
            ax = axes[s.inputs[0]][d]
            lo_raw, hi_raw = o0 - pads[ax], o1 - pads[ax]
            lo, hi = min(max(lo_raw, 0), x.shape[ax]), min(max(hi_raw, 0), x.shape[ax])
            if lo >= hi:
                raise Untileable
            region.append((lo, hi))
            pads[ax], pads[r + ax] = lo - lo_raw, hi_raw - hi
        return [tuple(region)], tuple(pads)
    return [out] * len(s.inputs), None


def _crop(a: np.ndarray, y_shape: tuple[int, ...], ax: tuple[int, ...], region: Region
          ) -> np.ndarray:
    """A per-position constant (broadcast right-aligned against the output) cut to a tile."""
    a = np.asarray(a)
    lead = len(y_shape) - a.ndim
    idx = [slice(None)] * a.ndim
    for (lo, hi), axis in zip(region, ax):
        j = axis - lead
        if j >= 0 and a.shape[j] > 1:
            idx[j] = slice(lo, hi)
    if all(i == slice(None) for i in idx):
        return a  # the same array: the weight memory holds it once
    return np.ascontiguousarray(a[tuple(idx)])


def _positional(s: Step, y_shape: tuple[int, ...], ax: tuple[int, ...]) -> bool:
    """Whether a bias or requantization parameter of ``s`` varies along a tiled axis."""
    arrays = [s.consts["bias"]] if "bias" in s.consts and s.kind is not Kind.CONV else []
    if s.requant is not None:
        arrays += [s.requant.multiplier, s.requant.shift]
    for a in arrays:
        shape = np.shape(a)
        lead = len(y_shape) - len(shape)
        if any(axis >= lead and shape[axis - lead] > 1 for axis in ax):
            return True
    return False


def _shaped(t: QTensor, ax: tuple[int, ...], region: Region) -> tuple[int, ...]:
    shape = list(t.shape)
    for (lo, hi), axis in zip(region, ax):
        shape[axis] = hi - lo
    return tuple(shape)


class _Rewriter:
    """Builds the tiled steps and tensors of one run and grid."""

    def __init__(self, program: QProgram, run: Run, prefix: str = "t") -> None:
        self.p, self.run, self.prefix = program, run, prefix
        self.ts = program.tensors
        self.tensors: dict[str, QTensor] = {}
        self.steps: list[Step] = []

    def tensor(self, like: str, name: str, shape: tuple[int, ...], view_of: str = "") -> str:
        self.tensors[name] = replace(self.ts[like], name=name, shape=shape, view_of=view_of)
        return name

    def needs(self, tile: Region) -> tuple[dict[str, Region], dict[int, tuple[list[Region], Any]]]:
        run, ts = self.run, self.ts
        need: dict[str, Region] = {run.exit: tile}
        per_step: dict[int, tuple[list[Region], Any]] = {}
        for i in range(run.end, run.start - 1, -1):
            s = self.p.steps[i]
            if s.output not in need:
                continue  # nothing of this tile depends on it
            ins, pads = _back(s, need[s.output], ts, run.axes)
            per_step[i] = (ins, pads)
            for x, r in zip(s.inputs, ins):
                key = _root(ts, x)
                need[key] = _union(need.get(key), r)
        return need, per_step

    def emit_tile(self, tag: str, tile: Region) -> str:
        """The steps of one tile; returns the name of its piece of the exit."""
        run, ts = self.run, self.ts
        need, per_step = self.needs(tile)
        made: dict[str, str] = {}  # original name -> this tile's tensor (views included)
        cuts: dict[tuple[str, Region], str] = {}

        def local(x: str) -> str:
            """This tile's version of x (a view of this tile's source when x is a view)."""
            if x not in made:
                t = ts[x]
                src = local(t.view_of)
                made[x] = self.tensor(x, f"{x}@{tag}", _shaped(t, run.axes[x], need[_root(ts, x)]),
                                      view_of=src)
            return made[x]

        def operand(x: str, r: Region) -> str:
            have = need[_root(ts, x)]
            if r == have:
                return local(x)
            if (x, r) not in cuts:
                ax = run.axes[x]
                starts = [0] * len(ts[x].shape)
                for (lo, _), (h0, _), axis in zip(r, have, ax):
                    starts[axis] = lo - h0
                name = self.tensor(x, f"{x}@{tag}:{len(cuts)}", _shaped(ts[x], ax, r))
                self.steps.append(Step(Kind.SLICE, (local(x),), name, f"tile {tag} halo cut",
                                       attrs={"starts": tuple(starts),
                                              "steps": (1,) * len(starts)}))
                cuts[x, r] = name
            return cuts[x, r]

        entry, region = run.entry, need[_root(ts, run.entry)]
        starts = [0] * len(ts[entry].shape)
        for (lo, _), axis in zip(region, run.axes[entry]):
            starts[axis] = lo
        made[entry] = self.tensor(entry, f"{entry}@{tag}",
                                  _shaped(ts[entry], run.axes[entry], region))
        self.steps.append(Step(Kind.SLICE, (entry,), made[entry], f"tile {tag} input patch",
                               attrs={"starts": tuple(starts), "steps": (1,) * len(starts)}))
        for i in range(run.start, run.end + 1):
            if i in per_step:
                self.steps.append(self.tile_step(self.p.steps[i], tag, need, per_step[i],
                                                 operand, made))
        return made[run.exit]

    def tile_step(self, s: Step, tag: str, need: dict[str, Region],
                  back: tuple[list[Region], Any], operand: Any, made: dict[str, str]) -> Step:
        ins, pads = back
        inputs = tuple(operand(x, r) for x, r in zip(s.inputs, ins))
        ax, region = self.run.axes[s.output], need[s.output]
        y = self.ts[s.output]
        made[s.output] = self.tensor(s.output, f"{s.output}@{tag}", _shaped(y, ax, region))
        attrs = dict(s.attrs)
        if s.window is not None:
            attrs["window"] = replace(s.window, pads=tuple(pads))
        elif s.kind is Kind.PAD:
            attrs["pads"] = pads
        consts, requant = s.consts, s.requant
        if _positional(s, y.shape, ax):  # constants that vary along a tiled axis
            consts = dict(consts)
            if "bias" in consts and s.kind is not Kind.CONV:
                consts["bias"] = _crop(consts["bias"], y.shape, ax, region)
            if requant is not None:
                requant = replace(requant,
                                  multiplier=_crop(requant.multiplier, y.shape, ax, region),
                                  shift=_crop(requant.shift, y.shape, ax, region))
        return replace(s, inputs=inputs, output=made[s.output], origin=f"{s.origin} [{tag}]",
                       attrs=attrs, consts=consts, requant=requant)

    def assemble(self, grid: tuple[int, ...]) -> list[tuple[int, int]]:
        """Every tile, then the concats that put them together (a row as soon as its tiles
        are done); returns each tile's [first, last] step (relative to the run's start)."""
        run = self.run
        y = self.ts[run.exit]
        ax = run.axes[run.exit]
        cuts = [_bounds(y.shape[a], g) for a, g in zip(ax, grid)]
        spans: list[tuple[int, int]] = []

        def build(prefix: tuple[int, ...], name: str) -> str:
            d = len(prefix)
            if d == run.ns:
                first = len(self.steps)
                tile = tuple(cuts[k][i] for k, i in enumerate(prefix))
                piece = self.emit_tile(self.prefix + "_".join(map(str, prefix)), tile)
                spans.append((first, len(self.steps) - 1))
                return piece
            parts = [build((*prefix, i), name if grid[d] == 1 else
                           f"{run.exit}@r{'_'.join(map(str, (*prefix, i)))}")
                     for i in range(grid[d])]
            if len(parts) == 1:
                return parts[0]
            # the pieces span the whole map along dims d.. (and their tile along dims ..d)
            region = tuple(cuts[k][prefix[k]] if k < d else (0, y.shape[ax[k]])
                           for k in range(run.ns))
            if name != run.exit:
                self.tensor(run.exit, name, _shaped(y, ax, region))
            self.steps.append(Step(Kind.CONCAT, tuple(parts), name,
                                   f"tiles {name.rpartition('@')[2] or 'all'} assembled",
                                   attrs={"axis": ax[d]}))
            return name

        out = build((), run.exit)
        if out != run.exit:  # a one-tile grid: nothing to assemble
            raise Untileable
        return spans


def _bounds(n: int, g: int) -> list[tuple[int, int]]:
    """``n`` positions cut into ``g`` near-equal pieces."""
    edges = [round(i * n / g) for i in range(g + 1)]
    return list(zip(edges, edges[1:]))


def rewrite(program: QProgram, run: Run, grid: tuple[int, ...], prefix: str = "t"
            ) -> tuple[QProgram, list[tuple[int, int]]]:
    """``program`` with ``run`` computed in ``grid`` tiles; also each tile's [first, last]
    step in the new program. ``prefix`` starts the tiles' tags (tensor names ``x@<tag>``):
    a second run tiled in the same program needs its own."""
    rw = _Rewriter(program, run, prefix)
    spans = rw.assemble(grid)
    ts = program.tensors
    inside = {_root(ts, s.output) for s in program.steps[run.start:run.end + 1]} - {run.exit}
    tensors = {n: t for n, t in ts.items() if _root(ts, n) not in inside}
    tensors.update(rw.tensors)
    steps = (*program.steps[:run.start], *rw.steps, *program.steps[run.end + 1:])
    shifted = [(a + run.start, b + run.start) for a, b in spans]
    return replace(program, tensors=tensors, steps=steps), shifted


# ------------------------------------------------------------------------------------------
# The search
# ------------------------------------------------------------------------------------------

def runs(program: QProgram, sram: int) -> Iterator[Run]:
    """Tileable runs covering the steps whose live bytes exceed ``sram`` (all the steps at
    the peak if none does: then only the placement overflows), latest start and earliest end
    first (the shortest runs, whose halos are smallest)."""
    live = live_bytes(program)
    over = np.flatnonzero(live > sram)
    if not over.size:
        over = np.flatnonzero(live == live.max())
    lo, hi = int(over.min()), int(over.max())
    for start in range(lo, -1, -1):
        for end in range(hi, len(program.steps)):
            try:
                yield analyze(program, start, end)
            except Untileable:
                continue


@dataclass(frozen=True)
class _Candidate:
    cycles: int
    macs: int
    program: QProgram
    run: Run
    grid: tuple[int, ...]
    spans: list[tuple[int, int]]


class _Search:
    """The grids of one run on the frontier of fitting: for each count of tiles along the
    leading axes, the fewest along the last whose live bytes fit (more tiles, smaller
    patches; a staircase walk over the last two axes, a bisection over one). Past the
    frontier a grid only adds recompute."""

    def __init__(self, program: QProgram, run: Run, target: Target) -> None:
        self.p, self.run, self.t = program, run, target
        y = program.tensors[run.exit]
        self.limits = [min(MAX_TILES, y.shape[a]) for a in run.axes[run.exit]]
        self.tried: dict[tuple[int, ...], tuple[int, Any]] = {}
        self.best_bound: int | None = None

    def bound(self, grid: tuple[int, ...]) -> int:
        if grid not in self.tried:
            try:
                tiled = rewrite(self.p, self.run, grid) if prod(grid) > 1 else None
            except Untileable:
                tiled = None
            b = arena_lower_bound(tiled[0]) if tiled else 1 << 62
            self.tried[grid] = (b, tiled)
            if tiled:
                self.best_bound = b if self.best_bound is None else min(self.best_bound, b)
        return self.tried[grid][0]

    def fits(self, grid: tuple[int, ...]) -> bool:
        return self.bound(grid) <= self.t.sram_bytes

    def frontier(self, prefix: tuple[int, ...] = ()) -> Iterator[tuple[int, ...]]:
        d = len(prefix)
        left = len(self.limits) - d
        if left > 2:
            for g in range(1, self.limits[d] + 1):
                yield from self.frontier((*prefix, g))
        elif left == 2:  # a staircase walk: more tiles along one axis, fewer along the other
            last = self.limits[d + 1]
            for g in range(1, self.limits[d] + 1):
                if not self.fits((*prefix, g, last)):
                    continue
                while last > 1 and self.fits((*prefix, g, last - 1)):
                    last -= 1
                yield (*prefix, g, last)
        else:  # one axis: bisection
            lo, hi = 1, self.limits[d]
            if not self.fits((*prefix, hi)):
                return
            while lo < hi:
                mid = (lo + hi) // 2
                if self.fits((*prefix, mid)):
                    hi = mid
                else:
                    lo = mid + 1
            yield (*prefix, lo)

    def candidates(self) -> list[_Candidate]:
        out = []
        for grid in dict.fromkeys(self.frontier()):
            tiled, spans = self.tried[grid][1]
            cost = sum(schedule(tiled, self.t), Cost())
            out.append(_Candidate(cost.cycles, cost.macs, tiled, self.run, grid, spans))
        return out


def tile_to_fit(program: QProgram, plan: AsicPlan, target: Target) -> TileResult:
    """The cheapest tiling (fewest cycles) of one run whose arena fits ``target``'s SRAM.

    Runs are tried shortest first; once one fits, MORE_RUNS longer ones are tried too (a
    longer run can need fewer tiles), then the search stops."""
    before = sum(schedule(program, target), Cost())
    fitting: list[_Candidate] = []
    best_bound = None
    left = None
    for run in runs(program, target.sram_bytes):
        search = _Search(program, run, target)
        fitting += search.candidates()
        if search.best_bound is not None:
            best_bound = min(best_bound or search.best_bound, search.best_bound)
        if fitting:
            left = MORE_RUNS if left is None else left - 1
            if left == 0:
                break
    fitting.sort(key=lambda f: (f.cycles, f.macs))
    best_arena = None
    for f in fitting[:MAX_PLACEMENTS]:
        tplan = plan_program(f.program)
        best_arena = min(best_arena or tplan.arena_bytes, tplan.arena_bytes)
        if tplan.arena_bytes <= target.sram_bytes:
            steps = program.steps
            tiling = Tiling(steps[f.run.start].origin, steps[f.run.end].origin,
                            f.run.end - f.run.start + 1, f.grid, tuple(f.spans),
                            plan.arena_bytes, tplan.arena_bytes, before.macs, f.macs,
                            before.cycles, f.cycles, program)
            return TileResult(f.program, replace(tplan, tiles=tuple(f.spans)), tiling)
    if best_arena is not None:
        why = f"the best patch-based tiling needs {best_arena:,} bytes"
    elif best_bound is not None:
        why = f"the best patch-based tiling needs at least {best_bound:,} bytes"
    else:
        why = "no run of layers can be tiled (patch-based tiling needs convs, pools and " \
              "elementwise layers local in space)"
    return TileResult(program, plan, None, why)
