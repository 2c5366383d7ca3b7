"""The static memory plan: every intermediate tensor at a fixed offset in one arena.

Steps are the kernels in execution order. Reshapes alias their input; an elementwise kernel
may write in place over an operand that dies at that step; kernel scratch (im2col patches,
run-time packed operands) lives for its kernel's step only. Buffers are then placed by greedy
first-fit under a few orders, improved by hill climbing over the order; the lower bound is the
largest sum of bytes live at one step, the naive figure the sum of all buffers. Concat inputs
are written in place by their producers when they can be (see ``_concat_views``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..ir import Graph, Node, Op
from ..ir.ops import ELEMENTWISE
from .outputs import storage_root

ALIGN = 64


@dataclass(frozen=True)
class Buffer:
    """One arena allocation: ``size`` bytes live from step ``first`` to ``last`` inclusive."""

    name: str
    size: int
    first: int
    last: int
    offset: int = -1

    def overlaps(self, other: Buffer) -> bool:
        return self.first <= other.last and other.first <= self.last


@dataclass(frozen=True)
class MemoryPlan:
    """Where every value lives: ``region`` is arena, input, output or const."""

    regions: dict[str, tuple[str, int]]  # value -> (region, offset or index)
    buffers: tuple[Buffer, ...]
    scratch: dict[str, int]  # kernel name -> arena offset of its scratch
    in_place: frozenset[str]  # kernels whose output overwrites one of their operands
    elided: frozenset[str]  # concat kernels whose producers already wrote in place
    row_stride: dict[str, int]  # kernel -> row stride (elements) of its output, if not dense
    arena_bytes: int
    lower_bound_bytes: int
    naive_bytes: int

    def as_json(self) -> dict:
        return plan_json(self)


def plan_json(plan: MemoryPlan | Any) -> dict:
    """A plan (cpu or asic) in a stable, diffable form: totals, then buffers by first step."""
    return {
        "arena_bytes": plan.arena_bytes,
        "arena_lower_bound_bytes": plan.lower_bound_bytes,
        "arena_naive_bytes": plan.naive_bytes,
        "buffers": [{"name": b.name, "offset": b.offset, "bytes": b.size, "first": b.first,
                     "last": b.last} for b in sorted(plan.buffers, key=lambda b: b.first)],
    }


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def in_place_operand(kernel: Node) -> str | None:
    """A kernel input that the kernel may overwrite with its output: the body is elementwise
    ops only, so every element is read at the very index it is written (a slice or transpose
    anywhere downstream would read elements already overwritten: fuzz seed 104485)."""
    body: Graph = kernel.attrs["body"]
    if kernel.attrs["kind"] != "elementwise":  # a blocked matmul re-reads C between K blocks
        return None
    if any(n.op not in ELEMENTWISE and n.op is not Op.CONST for n in body.nodes):
        return None
    for v in body.inputs:
        if v.type == kernel.type and body.users[v.name]:
            return v.name
    return None


def _conflicts(buffers: list[Buffer]) -> list[list[int]]:
    """For each buffer, the indices of the others live at one of its steps."""
    first = np.array([b.first for b in buffers])
    last = np.array([b.last for b in buffers])
    live = (first[:, None] <= last[None, :]) & (first[None, :] <= last[:, None])
    np.fill_diagonal(live, False)
    return [np.flatnonzero(row).tolist() for row in live]


def _first_fit(buffers: list[Buffer], conflicts: list[list[int]],
               order: Sequence[int]) -> list[int]:
    """Offsets (by buffer index) when the buffers are placed first fit in ``order``."""
    offsets = [-1] * len(buffers)
    for i in order:
        size, offset = buffers[i].size, 0
        taken = sorted((offsets[j], offsets[j] + buffers[j].size)
                       for j in conflicts[i] if offsets[j] >= 0)
        for start, end in taken:
            if offset + size <= start:
                break
            offset = max(offset, end)
        offsets[i] = offset
    return offsets


ORDERS: tuple[Callable[[Buffer], tuple], ...] = (
    lambda b: (-b.size, b.first),
    lambda b: (-(b.last - b.first), -b.size),
    lambda b: (-b.size * (b.last - b.first + 1), b.first),
    lambda b: (b.first, -b.size),
)


def peak(placed: list[Buffer]) -> int:
    return max((b.offset + b.size for b in placed), default=0)


def place_buffers(buffers: list[Buffer], bound: int, rounds: int = 200) -> list[Buffer]:
    """Greedy first fit under a few orders, then swaps of two buffers in the best order, kept
    when the arena does not grow (as TVM's USMP hill climb); stops at the lower bound.
    Deterministic: the swaps come from a fixed seed."""
    conflicts = _conflicts(buffers)

    def arena(order: list[int]) -> tuple[int, list[int]]:
        offsets = _first_fit(buffers, conflicts, order)
        return max((o + buffers[i].size for i, o in enumerate(offsets)), default=0), offsets

    orders = [sorted(range(len(buffers)), key=lambda i, k=key: k(buffers[i])) for key in ORDERS]
    tried = [(*arena(o), o) for o in orders]
    best, offsets, order = min(tried, key=lambda t: t[0])
    rng = random.Random(0)
    for _ in range(rounds if len(order) > 1 else 0):
        if best <= bound:
            break
        i, j = rng.randrange(len(order)), rng.randrange(len(order))
        order[i], order[j] = order[j], order[i]
        size, trial = arena(order)
        if size <= best:
            best, offsets = size, trial
        else:
            order[i], order[j] = order[j], order[i]
    return [Buffer(b.name, b.size, b.first, b.last, o) for b, o in zip(buffers, offsets)]


def lower_bound(buffers: list[Buffer], steps: int) -> int:
    return max((sum(b.size for b in buffers if b.first <= s <= b.last) for s in range(steps)),
               default=0)


def _in_place(graph: Graph, kernels: list[Node], step: dict[str, int], root: dict[str, str],
              outputs: dict[str, int]) -> set[str]:
    """Let elementwise kernels overwrite an operand that dies with them (updates ``root``)."""
    last_use: dict[str, int] = {}
    for k in kernels:
        for i in k.inputs:
            last_use[root[i]] = step[k.name]
    in_place: set[str] = set()
    for k in kernels:
        src = in_place_operand(k)
        if src is None:
            continue
        r = root[src]
        if (last_use.get(r) == step[k.name] and r in step and r not in outputs
                and graph.type_of(r).nbytes == k.type.nbytes and k.name not in outputs):
            for name, rr in root.items():
                if rr == k.name:
                    root[name] = r
            last_use[r] = last_use.get(k.name, step[k.name])
            in_place.add(k.name)
    return in_place


def _concat_views(graph: Graph, kernels: list[Node], step: dict[str, int],
                  root: dict[str, str], outputs: dict[str, int],
                  ldc: dict[str, int]) -> tuple[dict[str, int], set[str]]:
    """Concats written in place by their producers: each input becomes a view into the
    concat's buffer (a contiguous chunk, or for a channels-last concat a column block that a
    matmul producer writes with a wider row stride). Returns byte offsets within the concat's
    buffer and the concat kernels left with nothing to do."""
    offsets: dict[str, int] = {}
    elided: set[str] = set()
    for k in kernels:
        if k.attrs["kind"] != "concat" or k.name in outputs:
            continue
        cat = k.attrs["body"].nodes[-1]
        axis, shape = cat.attrs["axis"], k.type.shape
        contiguous = int(np.prod(shape[:axis])) == 1
        if not contiguous and axis != len(shape) - 1:
            continue
        ok = len(set(cat.inputs)) == len(cat.inputs)
        for x in cat.inputs:
            producer = graph.producer.get(x)
            ok = ok and (x in step and root[x] == x and x not in outputs
                         and len(graph.users[x]) == 1 and producer.attrs["kind"] != "concat"
                         and (contiguous or _writes_rows(producer)))
        if not ok:
            continue
        done = 0
        for x in cat.inputs:
            xshape = graph.type_of(x).shape
            offsets[x] = done * np.dtype(k.type.dtype).itemsize
            done += int(np.prod(xshape)) if contiguous else xshape[-1]
            root[x] = k.name
            if not contiguous:
                ldc[x] = shape[-1]
        elided.add(k.name)
    return offsets, elided


def _writes_rows(kernel: Node) -> bool:
    """A matmul kernel of one batch can store its rows with any row stride."""
    if kernel.attrs["kind"] != "matmul":
        return False
    body: Graph = kernel.attrs["body"]
    mm = next(n for n in body.nodes if n.op is Op.MATMUL)
    return body.type_of(mm.inputs[1]).rank == 2


def plan_memory(graph: Graph, scratch_bytes: Callable[[Node], int]) -> MemoryPlan:
    """Plan ``graph`` (after fusion): inputs and outputs stay in the caller's arrays, constants
    in the weights, everything else in the arena."""
    kernels = [n for n in graph.nodes if n.op is Op.KERNEL]
    step = {k.name: i for i, k in enumerate(kernels)}
    inputs = {v.name: i for i, v in enumerate(graph.inputs)}
    root = {name: storage_root(graph, name) for name in graph.values}
    # after materialize_outputs each output owns its storage root
    outputs = {root[name]: i for i, name in enumerate(graph.outputs)}
    in_place = _in_place(graph, kernels, step, root, outputs)
    ldc: dict[str, int] = {}
    view_offsets, elided = _concat_views(graph, kernels, step, root, outputs, ldc)
    regions: dict[str, tuple[str, int]] = {}
    spans: dict[str, list[int]] = {}
    for name, r in root.items():
        if r in inputs:
            regions[name] = ("input", inputs[r])
        elif r in outputs:
            regions[name] = ("output", outputs[r])
        elif graph.producer[r].op is Op.CONST:
            regions[name] = ("const", 0)
        else:
            spans.setdefault(r, [step[r], step[r]])
    for k in kernels:
        for i in k.inputs:
            if root[i] in spans:
                spans[root[i]][1] = max(spans[root[i]][1], step[k.name])
        if root[k.name] in spans:
            spans[root[k.name]][0] = min(spans[root[k.name]][0], step[k.name])
    buffers = [Buffer(r, _aligned(graph.type_of(r).nbytes), a, b) for r, (a, b) in spans.items()]
    buffers += [Buffer(f"{k.name}#scratch", _aligned(s), step[k.name], step[k.name])
                for k in kernels if (s := scratch_bytes(k)) > 0]
    bound = lower_bound(buffers, len(kernels))
    best = place_buffers(buffers, bound)
    offset = {b.name: b.offset for b in best}
    for name, r in root.items():
        if r in offset:
            regions[name] = ("arena", offset[r] + view_offsets.get(name, 0))
    return MemoryPlan(
        regions=regions,
        buffers=tuple(best),
        scratch={k.name: offset[f"{k.name}#scratch"] for k in kernels
                 if f"{k.name}#scratch" in offset},
        in_place=frozenset(in_place),
        elided=frozenset(elided),
        row_stride=ldc,
        arena_bytes=peak(best),
        lower_bound_bytes=bound,
        naive_bytes=sum(b.size for b in buffers),
    )
