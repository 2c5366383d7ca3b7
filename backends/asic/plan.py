"""The constant memory plan of an int8 program: every tensor at a fixed SRAM offset.

Steps run in order; a tensor's bytes live from the step that writes it (step 0 for inputs,
which the host quantizes into the arena) to its last reader (the end for outputs, which the
host reads back). Reshapes are views of their source; a table, add or multiply may write over
a same-shaped operand that dies at that step. Buffers are placed by the same first-fit and
hill climb as the CPU plan.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ...passes.memory_plan import Buffer, lower_bound, peak, place_buffers, plan_json
from .program import Kind, QProgram

ALIGN = 4  # one SRAM word
IN_PLACE = frozenset({Kind.LUT, Kind.ADD, Kind.SUB, Kind.MUL})


@dataclass(frozen=True)
class AsicPlan:
    offsets: dict[str, int]  # tensor (views included) -> arena offset
    buffers: tuple[Buffer, ...]  # one per storage root
    roots: dict[str, str]  # tensor -> the root whose buffer holds it
    arena_bytes: int
    lower_bound_bytes: int
    naive_bytes: int
    # patch-based tiling (tiling.py): the [first, last] step of each tile, for the picture
    tiles: tuple[tuple[int, int], ...] = ()
    # storage roots spilled to the target's external RAM (``plan_spilled``): their buffers sit
    # past ``external_base``, the start of the external RAM's window in the address map
    spilled: frozenset[str] = frozenset()
    external_base: int = 0

    @property
    def sram_bytes(self) -> int:
        """Bytes of on-chip SRAM used (the arena less the external window, if any)."""
        if not self.spilled:
            return self.arena_bytes
        return max((b.offset + b.size for b in self.buffers if b.name not in self.spilled),
                   default=0)

    @property
    def external_bytes(self) -> int:
        return self.arena_bytes - self.external_base if self.spilled else 0

    def external_tensors(self) -> frozenset[str]:
        """Every tensor (views included) whose bytes live in the external RAM."""
        return frozenset(n for n, r in self.roots.items() if r in self.spilled)

    def as_json(self) -> dict:
        tiles = {"tiles": [list(t) for t in self.tiles]} if self.tiles else {}
        return {**plan_json(self), **tiles}


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def plan_program(program: QProgram) -> AsicPlan:
    """Every tensor of ``program`` at a fixed arena offset."""
    buffers, roots = program_buffers(program)
    bound = lower_bound(buffers, len(program.steps) or 1)
    placed = place_buffers(buffers, bound)
    offset = {b.name: b.offset for b in placed}
    return AsicPlan({n: offset[r] for n, r in roots.items()}, tuple(placed), roots,
                    peak(placed), bound, sum(b.size for b in buffers))


def live_bytes(program: QProgram) -> np.ndarray:
    """Bytes live at each step (at least one step); their maximum is the arena's lower
    bound, which no placement beats. Cheap: no placement."""
    delta = np.zeros(max(len(program.steps), 1) + 1, np.int64)
    for b in program_buffers(program)[0]:
        delta[b.first] += b.size
        delta[b.last + 1] -= b.size
    return np.cumsum(delta[:-1])


def _live(buffers: list[Buffer], n: int) -> np.ndarray:
    live = np.zeros(n + 1, np.int64)
    for b in buffers:
        live[b.first] += b.size
        live[b.last + 1] -= b.size
    return np.cumsum(live[:-1])


def _victim(at: list[Buffer], traffic: dict[str, int] | None) -> Buffer:
    """The buffer to spill among those live at the fullest step: the largest (few, large
    spills), or with ``traffic`` (external bytes per root if spilled) the fewest bytes moved
    per byte freed (a tensor a conv re-reads for every column of weight tiles stays)."""
    if traffic is None:
        return max(at, key=lambda b: (b.size, b.last - b.first, b.name))
    return min(at, key=lambda b: (traffic.get(b.name, 0) / b.size, -b.size, b.name))


def _spill(buffers: list[Buffer], n: int, sram: int, traffic: dict[str, int] | None,
           placed: bool) -> tuple[set[str], list[Buffer]] | None:
    """The buffers moved out, one live at the fullest step at a time (``_victim``), until the
    rest fits ``sram`` by live bytes (and, ``placed``, once laid out); with the on-chip
    placement (``placed``) or []. None if nothing is left to spill."""
    spilled: set[str] = set()
    while True:
        onchip = [b for b in buffers if b.name not in spilled]
        live = _live(onchip, n)
        if live.max(initial=0) <= sram:
            if not placed:
                return spilled, []
            laid = place_buffers(onchip, int(live.max(initial=0)))
            if peak(laid) <= sram:
                return spilled, laid
        i = int(live.argmax())
        at = [b for b in onchip if b.first <= i <= b.last]
        if not at:
            return None
        spilled.add(_victim(at, traffic).name)


def spill_roots(program: QProgram, sram: int, traffic: dict[str, int] | None = None
                ) -> frozenset[str] | None:
    """The storage roots ``plan_spilled`` would move out, by the live bytes alone (no
    placement: cheap, for a search); None if nothing is left to spill."""
    buffers, _ = program_buffers(program)
    out = _spill(buffers, len(program.steps) or 1, sram, traffic, placed=False)
    return None if out is None else frozenset(out[0])


def plan_spilled(program: QProgram, sram: int, traffic: dict[str, int] | None = None
                 ) -> AsicPlan | None:
    """A plan whose on-chip part fits ``sram`` bytes, the rest in external RAM: while the
    SRAM does not hold the live buffers, one live at the fullest step moves out (``_victim``;
    the schedule prices their traffic at the external port). The external buffers sit past
    ``sram`` in the address map (one arena for the simulator and the C export). None if
    nothing is left to spill (an empty step over the SRAM)."""
    buffers, roots = program_buffers(program)
    n = len(program.steps) or 1
    out = _spill(buffers, n, sram, traffic, placed=True)
    if out is None:
        return None
    spilled, placed = out
    outside = [b for b in buffers if b.name in spilled]
    base = _aligned(sram)
    far = [replace(b, offset=b.offset + base)
           for b in place_buffers(outside, lower_bound(outside, n))]
    everything = placed + far
    offset = {b.name: b.offset for b in everything}
    return AsicPlan({t: offset[r] for t, r in roots.items()}, tuple(everything), roots,
                    peak(everything), int(_live(placed, n).max(initial=0)),
                    sum(b.size for b in buffers),
                    spilled=frozenset(spilled), external_base=base)


def arena_lower_bound(program: QProgram) -> int:
    """The most bytes live at any step (``lower_bound`` of the plan, without placing)."""
    return int(live_bytes(program).max())


def program_buffers(program: QProgram) -> tuple[list[Buffer], dict[str, str]]:
    """The buffers to place (one per storage root, with its live steps) and, per tensor, the
    root whose buffer holds it."""
    tensors, steps = program.tensors, program.steps
    end = max(len(steps) - 1, 0)

    def view_root(name: str) -> str:
        return view_root(tensors[name].view_of) if tensors[name].view_of else name

    vlast: dict[str, int] = {}  # view root -> the last step reading it or a view of it
    for i, s in enumerate(steps):
        for x in s.inputs:
            vlast[view_root(x)] = i
    returned = {view_root(name) for name in program.outputs}
    for name in returned:
        vlast[name] = end
    storage: dict[str, str] = {}  # view root -> the root of the buffer holding it
    span: dict[str, list[int]] = {}  # storage root -> [first, last] step
    for name in program.inputs:
        storage[name] = name
        span[name] = [0, vlast.get(name, 0)]
    for i, s in enumerate(steps):
        out = view_root(s.output)
        storage[out] = out
        for x in s.inputs if s.kind in IN_PLACE else ():
            r = storage[view_root(x)]
            # an output (or an output's source) lives until the host reads it back, after
            # the last step: "dies at step end" does not free it for that step to overwrite
            if tensors[x].shape == tensors[s.output].shape and span[r][1] <= i \
                    and tensors[x].bits == tensors[s.output].bits \
                    and view_root(x) not in returned:
                storage[out] = r  # overwrite the dying operand element by element
                break
        r = storage[out]
        first, last = span.get(r, [i, i])
        span[r] = [first, max(last, vlast.get(out, i))]
    buffers = [Buffer(r, _aligned(tensors[r].nbytes), a, b) for r, (a, b) in span.items()]
    return buffers, {n: storage[view_root(n)] for n in tensors}
