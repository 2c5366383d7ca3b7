"""Tiling plus spilling: when no patch-based tiling fits the SRAM, tile what is cheapest to
tile and spill what stays over to the target's external RAM.

Spilling a whole tensor is cheap when its readers read it once (an add, a slice, a concat)
and dear when a conv reads it: the array re-reads its input for every column of weight
tiles and every tap of its window, each time over the external port. Tiling turns the
large maps inside a run of layers into small patches, and leaves only the run's entry (read
one patch at a time by SLICEs) and its exit (written by CONCATs) large: exactly the tensors
spilling moves for the fewest bytes. The search here tiles one run at a time (up to
``MAX_RUNS``), each time the run and grid whose tiled program, spilled to fit, takes the
fewest cycles (``schedule`` prices the external traffic, the recomputed halos and the
weights streamed once per tile), and stops when no run lowers them; the untiled program
spilled to fit is the first candidate. Every tiling is the rewrite of ``tiling.py``, so the
program stays bit-exact with the untiled one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from math import prod

import numpy as np

from .plan import AsicPlan, live_bytes, plan_spilled, program_buffers, spill_roots
from .program import QProgram
from .schedule import Cost, external_shares, schedule
from .target import Target
from .tiling import MAX_TILES, Run, TileResult, Tiling, Untileable, analyze, rewrite

MAX_RUNS = 4  # runs tiled in one program
STARTS = 2  # tileable runs tried per last step (the shortest ones)
MAX_ENDS = 40  # last steps tried per run tiled (bounds the search on large models)
GRID_SIDES = (2, 3, 4)  # tiles per spatial axis tried (the same along every axis)
PREFIXES = ("t", "u", "v", "w")  # the tiles' tags, one letter per run (``rewrite``)
assert len(PREFIXES) >= MAX_RUNS


@dataclass(frozen=True)
class _Priced:
    """A program spilled to fit: its cycles, with which victim rule (``traffic``: by bytes
    moved per byte freed, else largest first) and the spilled tensors."""

    cycles: int
    traffic: dict[str, int] | None
    program: QProgram


def root_traffic(program: QProgram, target: Target, costs: list[Cost] | None = None
                 ) -> dict[str, int]:
    """Per storage root: the external bytes the schedule charges if it alone is spilled."""
    costs = costs or schedule(program, target)
    roots = program_buffers(program)[1]
    out: dict[str, int] = {}
    for step, cost in zip(program.steps, costs):
        for name, n in external_shares(cost, step, program, target):
            out[roots[name]] = out.get(roots[name], 0) + n
    return out


def price(program: QProgram, target: Target) -> _Priced | None:
    """The fewest cycles of ``program`` spilled to fit the SRAM (by the live bytes, both
    victim rules), or None if it cannot be."""
    costs = schedule(program, target)
    if live_bytes(program).max() <= target.sram_bytes:
        return _Priced(sum(costs, Cost()).cycles, None, program)
    roots = program_buffers(program)[1]
    best = None
    for traffic in (root_traffic(program, target, costs), None):
        spilled = spill_roots(program, target.sram_bytes, traffic)
        if spilled is None:
            continue
        far = frozenset(n for n, r in roots.items() if r in spilled)
        cycles = sum(schedule(program, target, far), Cost()).cycles
        if best is None or cycles < best.cycles:
            best = _Priced(cycles, traffic, program)
    return best


def _runs(program: QProgram, sram: int, tiled: list[tuple[int, int]]) -> Iterator[Run]:
    """Tileable runs that end between the first and the last step over the SRAM (the
    fullest steps first, at most ``MAX_ENDS`` of them), the ``STARTS`` shortest per end,
    clear of the steps already tiled."""
    live = live_bytes(program)
    over = np.flatnonzero(live > sram)
    if not over.size:
        return
    ends = [i for i in range(int(over.min()), int(over.max()) + 1)
            if not any(a <= i <= b for a, b in tiled)]
    for end in sorted(ends, key=lambda i: (-int(live[i]), i))[:MAX_ENDS]:
        found = 0
        for start in range(end, -1, -1):
            if any(a <= end and start <= b for a, b in tiled):
                break
            try:
                yield analyze(program, start, end)
            except Untileable:
                continue
            found += 1
            if found == STARTS:
                break


def _grids(program: QProgram, run: Run) -> Iterator[tuple[int, ...]]:
    y = program.tensors[run.exit]
    limits = [min(MAX_TILES, y.shape[a]) for a in run.axes[run.exit]]
    for g in GRID_SIDES:
        grid = tuple(min(g, lim) for lim in limits)
        if prod(grid) > 1 and (g == GRID_SIDES[0] or max(grid) == g):
            yield grid


@dataclass
class _State:
    program: QProgram
    priced: _Priced
    tilings: list[Tiling]
    blocks: list[tuple[int, int]]  # steps of each tiled run, in the current program
    spans: list[tuple[int, int]]  # every tile's [first, last] step


def _shift(ranges: list[tuple[int, int]], after: int, by: int) -> list[tuple[int, int]]:
    return [(a + by, b + by) if a > after else (a, b) for a, b in ranges]


def _step(state: _State, target: Target) -> _State | None:
    """The state with one more run tiled, if that lowers the cycles (its ``Tiling``'s
    figures: before and after this run)."""
    p, k = state.program, len(state.tilings)
    best = None
    for run in _runs(p, target.sram_bytes, state.blocks):
        for grid in _grids(p, run):
            try:
                tiled, spans = rewrite(p, run, grid, PREFIXES[k])
            except Untileable:
                continue
            priced = price(tiled, target)
            if priced is not None and (best is None or priced.cycles < best[0].cycles):
                best = (priced, run, grid, spans)
    if best is None or best[0].cycles >= state.priced.cycles:
        return None
    priced, run, grid, spans = best
    by = len(priced.program.steps) - len(p.steps)
    last = run.end + by
    before, after = (sum(schedule(q, target), Cost()) for q in (p, priced.program))
    tiling = Tiling(p.steps[run.start].origin, p.steps[run.end].origin,
                    run.end - run.start + 1, grid, tuple(spans), 0, 0, before.macs, after.macs,
                    before.cycles, after.cycles)
    return _State(priced.program, priced, [*state.tilings, tiling],
                  [*_shift(state.blocks, run.end, by), (run.start, last)],
                  sorted([*_shift(state.spans, run.end, by), *spans]))


def tile_and_spill(program: QProgram, plan: AsicPlan, target: Target) -> TileResult | None:
    """The program with up to ``MAX_RUNS`` runs tiled and the rest spilled to external RAM,
    whichever has the fewest cycles (no run tiled: spilling alone); None if nothing fits
    (the external RAM too small, or a step that alone overflows the SRAM)."""
    start = price(program, target)
    if start is None:
        return None
    state = _State(program, start, [], [], [])
    while len(state.tilings) < MAX_RUNS:
        more = _step(state, target)
        if more is None:
            break
        state = more
    p = state.program
    far = plan_spilled(p, target.sram_bytes, state.priced.traffic)
    if far is None:
        far = plan_spilled(p, target.sram_bytes)
    if far is None or far.external_bytes > target.external_bytes:
        return None
    far = replace(far, tiles=tuple(state.spans))
    if not state.tilings:
        return TileResult(p, far, None)
    arenas = {"arena_before": plan.arena_bytes, "arena_after": far.sram_bytes}
    first, *rest = (replace(t, **arenas) for t in state.tilings)
    tiled = sum(schedule(p, target), Cost())  # the figures of all the runs together
    tiling = replace(first, macs_after=tiled.macs, cycles_after=tiled.cycles, untiled=program,
                     more=tuple(rest))
    return TileResult(p, far, tiling)
