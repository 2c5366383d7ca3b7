"""The row kernel (passes/fuse_rows.py): per row of the output, each reduction over the last
axis in turn, then the row's elements; a reduction's result is a scalar the later steps read.

Each step is a vector loop over the row (``lanes`` elements at a time, keeps_last_axis) and a
scalar loop over the remainder. Values between the steps are recomputed from the kernel's
inputs rather than stored (exp(x - max) is computed for the sum and again for the output):
the row is in cache and the arithmetic is cheaper than a round trip through memory.
"""

from __future__ import annotations

from llvmlite import ir

from ...ir import Graph, Node, Op, Reduce
from . import dtypes
from .expr import BodyEmitter, Coords, keeps_last_axis, store, typed_binary
from .kernels import REDUCE_OP, accumulate, identity
from .llvm import vector_lanes
from .loops import for_range, loop_nest
from .math import splat
from .team import Team


def emit_rows(b: ir.IRBuilder, node: Node, ptrs: dict[str, ir.Value], out: ir.Value,
              scratch: ir.Value, team: Team) -> None:
    body: Graph = node.attrs["body"]
    shape = node.type.shape
    width = shape[-1]
    lanes = min(vector_lanes(), width) if keeps_last_axis(body) else 1
    whole = width - width % lanes if lanes > 1 else 0  # the vector loop's end
    reds = [n for n in body.nodes if n.op is Op.REDUCE]
    totals: dict[str, ir.Value] = {}  # this row's reductions, as scalars

    def emitter(n: int) -> BodyEmitter:
        """A BodyEmitter of ``n`` lanes that reads the reductions done so far."""
        def total(name: str):
            return lambda _coords: totals[name] if n == 1 else _splat(b, totals[name], n)
        return BodyEmitter(b, body, ptrs, {r.name: total(r.name) for r in reds}, lanes=n)

    with team.share(b, shape[:-1]) as split, loop_nest(b, shape[:-1], split) as row:
        for red in reds:
            totals[red.name] = _reduce_row(b, red, row, width, lanes, whole, emitter)
        root = body.outputs[0]
        for n, start, stop, step in ((lanes, 0, whole, lanes), (1, whole, width, 1)):
            if start < stop:
                e = emitter(n)
                with for_range(b, stop, start=start, step=step) as j:
                    at = [*row, j]
                    store(b, out, at, shape, e.value(root, at))


def _reduce_row(b: ir.IRBuilder, red: Node, row: Coords, width: int, lanes: int, whole: int,
                emitter) -> ir.Value:
    """The reduction ``red`` of one row as a scalar: a vector accumulator over the whole
    vectors, folded lane by lane, then the scalar remainder."""
    fn, dtype = red.attrs["fn"], red.type.dtype
    element = dtypes.register(dtype)
    with b.goto_entry_block():
        acc = b.alloca(element)
        vacc = b.alloca(ir.VectorType(element, lanes)) if lanes > 1 and whole else None
    b.store(dtypes.constant(dtype, identity(fn, dtype)), acc)
    if vacc is not None:
        e = emitter(lanes)
        b.store(e.constant(identity(fn, dtype), dtype), vacc)
        with for_range(b, whole, step=lanes) as j:
            b.store(accumulate(b, fn, b.load(vacc), e.value(red.inputs[0], [*row, j]), dtype),
                    vacc)
        v = b.load(vacc)
        total = b.extract_element(v, ir.Constant(ir.IntType(32), 0))
        for i in range(1, lanes):
            lane = b.extract_element(v, ir.Constant(ir.IntType(32), i))
            total = typed_binary(b, REDUCE_OP[fn], total, lane, dtype)
        b.store(total, acc)
    if whole < width:
        e = emitter(1)
        with for_range(b, width, start=whole) as j:
            b.store(accumulate(b, fn, b.load(acc), e.value(red.inputs[0], [*row, j]), dtype),
                    acc)
    total = b.load(acc)
    if fn is Reduce.MEAN:
        total = b.fmul(total, dtypes.constant(dtype, 1.0 / width))
    return total


def _splat(b: ir.IRBuilder, scalar: ir.Value, lanes: int) -> ir.Value:
    return splat(b, ir.Constant(ir.VectorType(scalar.type, lanes), None), scalar)
