"""The constant memory plan of an int8 program: every tensor at a fixed SRAM offset.

Steps run in order; a tensor's bytes live from the step that writes it (step 0 for inputs,
which the host quantizes into the arena) to its last reader (the end for outputs, which the
host reads back). Reshapes are views of their source; a table, add or multiply may write over
a same-shaped operand that dies at that step. Buffers are placed by the same first-fit and
hill climb as the CPU plan.
"""

from __future__ import annotations

from dataclasses import dataclass

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

    def as_json(self) -> dict:
        return plan_json(self)


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def plan_program(program: QProgram) -> AsicPlan:
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
                    and view_root(x) not in returned:
                storage[out] = r  # overwrite the dying operand element by element
                break
        r = storage[out]
        first, last = span.get(r, [i, i])
        span[r] = [first, max(last, vlast.get(out, i))]
    buffers = [Buffer(r, _aligned(tensors[r].size), a, b) for r, (a, b) in span.items()]
    bound = lower_bound(buffers, len(steps) or 1)
    placed = place_buffers(buffers, bound)
    offset = {b.name: b.offset for b in placed}
    roots = {n: storage[view_root(n)] for n in tensors}
    return AsicPlan({n: offset[r] for n, r in roots.items()}, tuple(placed), roots,
                    peak(placed), bound, sum(b.size for b in buffers))
