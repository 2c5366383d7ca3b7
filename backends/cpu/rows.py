"""The row kernel (passes/fuse_rows.py): per row of the output, each reduction over the last
axis in turn, then the row's elements; a reduction's result is a scalar the later steps read.

Each step is a vector loop over the row (``lanes`` elements at a time, keeps_last_axis) and a
scalar loop over the remainder. Values between the steps are recomputed from the kernel's
inputs rather than stored, except the last reduction's input when the output is computed from
it (softmax's exp(x - max)): that is stored into the output row by the reduction's pass and
read back by the last pass, since the row is in cache and an exp costs more than a store and
a load (see _kept).
"""

from __future__ import annotations

from llvmlite import ir

from ...ir import Graph, Node, Op, Reduce
from . import dtypes
from .blocking import blocking_of
from .expr import BodyEmitter, Coords, keeps_last_axis, store, typed_binary
from .kernels import REDUCE_OP, accumulate, identity
from .loops import const, for_range, loop_nest
from .math import splat
from .team import Team

ACCUMULATORS = 4


def emit_rows(b: ir.IRBuilder, node: Node, ptrs: dict[str, ir.Value], out: ir.Value,
              scratch: ir.Value, team: Team) -> None:
    body: Graph = node.attrs["body"]
    shape = node.type.shape
    width = shape[-1]
    lanes = min(blocking_of(b.module).lanes, width) if keeps_last_axis(body) else 1
    whole = width - width % lanes if lanes > 1 else 0  # the vector loop's end
    reds = [n for n in body.nodes if n.op is Op.REDUCE]
    totals: dict[str, ir.Value] = {}  # this row's reductions, as scalars

    def emitter(n: int) -> BodyEmitter:
        """A BodyEmitter of ``n`` lanes that reads the reductions done so far."""
        def total(name: str):
            return lambda _coords: totals[name] if n == 1 else _splat(b, totals[name], n)
        return BodyEmitter(b, body, ptrs, {r.name: total(r.name) for r in reds}, lanes=n)

    root = body.outputs[0]
    kept = _kept(body, reds, root, node.type, ptrs)

    def keep(at: Coords, value: ir.Value) -> None:
        store(b, out, at, shape, value)

    with team.share(b, shape[:-1]) as split, loop_nest(b, shape[:-1], split) as row:
        for red in reds:
            totals[red.name] = _reduce_row(b, red, row, width, lanes, whole, emitter,
                                           keep if red.inputs[0] == kept else None)
        if kept is not None:  # the last pass reads the kept value back from the output
            ptrs = {**ptrs, kept: out}
        for n, start, stop, step in ((lanes, 0, whole, lanes), (1, whole, width, 1)):
            if start < stop:
                e = emitter(n)
                with for_range(b, stop, start=start, step=step) as j:
                    at = [*row, j]
                    store(b, out, at, shape, e.value(root, at))


def _kept(body: Graph, reds: list[Node], root: str, out_type, ptrs: dict[str, ir.Value]
          ) -> str | None:
    """The last reduction's input when the output is computed from it (softmax: exp(x - max)
    is summed, then scaled): its pass stores it into the output row and the last pass reads
    it back, instead of computing it again (an exp costs far more than a store and a load).
    Only when nothing else the last pass reads comes from the kernel's inputs, which the
    output may overwrite (an in-place kernel)."""
    if not reds:
        return None
    v = reds[-1].inputs[0]
    t = body.type_of(v)
    if (v == root or v in ptrs or t.shape != out_type.shape or t.dtype != out_type.dtype
            or t.dtype != "float32"):
        return None
    stops = {v, *(r.name for r in reds)}
    seen, todo, reaches = set(), [root], False
    while todo:
        name = todo.pop()
        if name in seen or name in stops:
            reaches |= name == v
            continue
        seen.add(name)
        if name in ptrs:
            return None
        todo.extend(body.producer[name].inputs)
    return v if reaches else None


def _reduce_row(b: ir.IRBuilder, red: Node, row: Coords, width: int, lanes: int, whole: int,
                emitter, keep=None) -> ir.Value:
    """The reduction ``red`` of one row as a scalar: a vector accumulator over the whole
    vectors, folded, then the scalar remainder; ``keep(coords, value)``, when given, stores
    each reduced value."""
    fn, dtype = red.attrs["fn"], red.type.dtype
    element = dtypes.register(dtype)
    # up to ACCUMULATORS vector accumulators, one per consecutive vector: independent
    # dependency chains (a NaN-propagating max is six instructions deep per vector)
    count = min(ACCUMULATORS, whole // lanes) if lanes > 1 else 0
    with b.goto_entry_block():
        acc = b.alloca(element)
        vaccs = [b.alloca(ir.VectorType(element, lanes)) for _ in range(count)]
    b.store(dtypes.constant(dtype, identity(fn, dtype)), acc)
    if vaccs:
        e = emitter(lanes)
        for vacc in vaccs:
            b.store(e.constant(identity(fn, dtype), dtype), vacc)
        chunk = lanes * count
        unrolled = whole - whole % chunk
        with for_range(b, unrolled, step=chunk) as j:
            for k, vacc in enumerate(vaccs):
                at = [*row, b.add(j, const(k * lanes)) if k else j]
                b.store(_accumulate(b, fn, b.load(vacc), _value(e, red, at, keep), dtype), vacc)
        if unrolled < whole:
            with for_range(b, whole, start=unrolled, step=lanes) as j:
                b.store(_accumulate(b, fn, b.load(vaccs[0]), _value(e, red, [*row, j], keep),
                                   dtype), vaccs[0])
        v = [b.load(vacc) for vacc in vaccs]
        while len(v) > 1:  # pairwise, as the fold
            v = [_combine(b, fn, *v[i:i + 2], dtype) if i + 1 < len(v) else v[i]
                 for i in range(0, len(v), 2)]
        b.store(_fold(b, v[0], fn, dtype), acc)
    if whole < width:
        e = emitter(1)
        with for_range(b, width, start=whole) as j:
            b.store(_accumulate(b, fn, b.load(acc), _value(e, red, [*row, j], keep), dtype),
                    acc)
    total = b.load(acc)
    if fn is Reduce.MEAN:
        total = b.fmul(total, dtypes.constant(dtype, 1.0 / width))
    return total


def _value(e: BodyEmitter, red: Node, at: Coords, keep) -> ir.Value:
    """The reduction's input at ``at``, stored by ``keep`` too when given."""
    value = e.value(red.inputs[0], at)
    if keep is not None:
        keep(at, value)
    return value


def _fold(b: ir.IRBuilder, v: ir.Value, fn: Reduce, dtype: str) -> ir.Value:
    """The lanes of ``v`` reduced to a scalar: halves combined pairwise while the count is
    even (log2(lanes) dependent steps, not lanes - 1: a row of 48 is short and the fold is on
    its critical path), then the odd rest lane by lane."""
    n = v.type.count
    while n % 2 == 0:
        n //= 2
        lo, hi = (b.shuffle_vector(v, v, ir.Constant(ir.VectorType(ir.IntType(32), n),
                                                     list(range(k, k + n)))) for k in (0, n))
        v = _combine(b, fn, lo, hi, dtype) if n > 1 else _combine(
            b, fn, b.extract_element(lo, _I0), b.extract_element(hi, _I0), dtype)
    total = b.extract_element(v, _I0) if n > 1 else v
    for i in range(1, n):
        total = _combine(b, fn, total, b.extract_element(v, ir.Constant(ir.IntType(32), i)),
                         dtype)
    return total


def _combine(b: ir.IRBuilder, fn: Reduce, x: ir.Value, y: ir.Value, dtype: str) -> ir.Value:
    """Two partial results of the reduction ``fn`` combined."""
    if fn is Reduce.MAX and dtype in dtypes.FLOATS:
        return _nan_max(b, x, y)
    return typed_binary(b, REDUCE_OP[fn], x, y, dtype)


def _accumulate(b: ir.IRBuilder, fn: Reduce, acc: ir.Value, x: ir.Value,
                dtype: str) -> ir.Value:
    if fn is Reduce.MAX and dtype in dtypes.FLOATS:
        return _nan_max(b, x, acc)
    return accumulate(b, fn, acc, x, dtype)


def _nan_max(b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
    """max(x, y), a NaN in either propagating, in three instructions (vmaxps, vcmpunordps, a
    blend) where llvm.maximum takes six: the sign of a zero maximum is not ordered (-0 and +0
    compare equal, and a row's max only feeds arithmetic on the row)."""
    m = b.select(b.fcmp_ordered(">", x, y), x, y)  # y where either is NaN
    return b.select(b.fcmp_unordered("!=", x, x), x, m)


_I0 = ir.Constant(ir.IntType(32), 0)


def _splat(b: ir.IRBuilder, scalar: ir.Value, lanes: int) -> ir.Value:
    return splat(b, ir.Constant(ir.VectorType(scalar.type, lanes), None), scalar)
