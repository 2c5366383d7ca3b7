"""One LLVM function per fused kernel, by kind. Each is `void k(float* out, float* in..., i8*
scratch, i64 chunk)`; the entry function passes pointers into the arena, the weights and the
caller's arrays. Kernels translate the body the fusion pass built; they decide no grouping
themselves. A kernel split into chunks computes one chunk (a range of one axis) per call."""

from __future__ import annotations

import numpy as np
from llvmlite import ir

from ...ir import Binary, Graph, Node, Op, Reduce
from ...ir.interp import lowest
from . import dtypes
from .blocking import blocking_of
from .expr import BodyEmitter, Coords, keeps_last_axis, linear, store, typed_binary
from .llvm import F32P, I8P, I64
from .loops import Split, const, for_range, loop_nest
from .math import REASSOC
from .team import Team


def kernel_function(module: ir.Module, name: str, node: Node, noalias: bool) -> ir.Function:
    """Declare the kernel's function: output pointer, one pointer per input, scratch and the
    chunk to compute."""
    n_in = len(node.inputs)
    args = [F32P] * (1 + n_in) + [I8P, I64]
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), args), name)
    fn.linkage = "internal"
    fn.attributes.add("nounwind")
    # never inlined into the entry: an entry holding every kernel's loops is one function of
    # hundreds of loops, and LLVM's loop passes grow faster than linearly with them
    # (DenseNet-121: 4.5 -> 3.5 s of LLVM); a call per kernel costs nothing
    fn.attributes.add("noinline")
    if noalias:
        for arg in fn.args[: 1 + n_in]:
            arg.add_attribute("noalias")
    return fn


def emit_elementwise(b: ir.IRBuilder, node: Node, ptrs: dict[str, ir.Value], out: ir.Value,
                     scratch: ir.Value, team: Team) -> None:
    body: Graph = node.attrs["body"]
    root = body.outputs[0]
    shape = node.type.shape
    if _vectors_along_rows(body, shape):
        _elementwise_vectors(b, body, ptrs, out, shape, team)
        return
    emitter = BodyEmitter(b, body, ptrs)
    with team.share(b, shape) as split, loop_nest(b, shape, split) as idx:
        store(b, out, idx, shape, emitter.value(root, idx))


def _vectors_along_rows(body: Graph, shape: tuple[int, ...]) -> bool:
    """Float32 math along a contiguous last axis: written as vector code here rather than left
    to LLVM's loop vectorizer, which gives up (runs the scalar loop) when the output is
    written in place over an input it cannot prove equal or disjoint."""
    return (len(shape) >= 1 and shape[-1] >= 4 and keeps_last_axis(body)
            and all(v.type.dtype == "float32" for v in body.inputs)
            and all(n.type.dtype == "float32" for n in body.nodes))


def _elementwise_vectors(b: ir.IRBuilder, body: Graph, ptrs: dict[str, ir.Value],
                         out: ir.Value, shape: tuple[int, ...], team: Team) -> None:
    """Each row of the last axis as full vectors in a loop, then one shorter vector."""
    lanes = blocking_of(b.module).lanes
    full, rest = divmod(shape[-1], lanes)
    root = body.outputs[0]
    with team.share(b, shape, range(len(shape) - 1)) as split, \
            loop_nest(b, shape[:-1], split) as idx:
        if full:
            with for_range(b, full) as v:
                at = [*idx, b.mul(v, const(lanes))]
                store(b, out, at, shape, BodyEmitter(b, body, ptrs, lanes=lanes).value(root, at))
        if rest:
            at = [*idx, const(full * lanes)]
            store(b, out, at, shape, BodyEmitter(b, body, ptrs, lanes=rest).value(root, at))


REDUCE_OP = {Reduce.SUM: Binary.ADD, Reduce.MEAN: Binary.ADD, Reduce.MAX: Binary.MAX,
             Reduce.PROD: Binary.MUL}


def identity(fn: Reduce, dtype: str) -> float | int:
    """The identity ``fn`` starts from in ``dtype``."""
    return lowest(np.dtype(dtype)) if fn is Reduce.MAX else 1 if fn is Reduce.PROD else 0


def accumulate(b: ir.IRBuilder, fn: Reduce, acc: ir.Value, x: ir.Value,
                dtype: str) -> ir.Value:
    new = typed_binary(b, REDUCE_OP[fn], acc, x, dtype)
    if fn is not Reduce.MAX and dtype in dtypes.FLOATS:
        new.flags.extend(REASSOC)  # let the vectorizer reassociate the sum
    return new


def emit_reduce(b: ir.IRBuilder, node: Node, ptrs: dict[str, ir.Value], out: ir.Value,
                scratch: ir.Value, team: Team) -> None:
    """Initialise the output, accumulate the prologue's values into it in input order (the
    innermost axis stays innermost, so pooling vectorises over channels), then apply the mean
    scale and the epilogue in place."""
    body: Graph = node.attrs["body"]
    red = next(n for n in body.nodes if n.op is Op.REDUCE)
    oshape = red.type.shape
    kept = [a for a in range(len(oshape)) if a not in red.attrs["axes"]]
    rank = len(oshape)
    if rank and rank - 1 in kept and oshape[-1] >= 4 and keeps_last_axis(body):
        with team.share(b, oshape, kept[:-1]) as split:
            _reduce_vectors(b, body, red, ptrs, out, split)
        return
    with team.share(b, oshape, kept) as split:  # threads own disjoint output elements
        _reduce_loops(b, body, red, ptrs, out, split)


def _reduce_vectors(b: ir.IRBuilder, body: Graph, red: Node, ptrs: dict[str, ir.Value],
                    out: ir.Value, split: Split | None) -> None:
    """Channels innermost and kept (pooling, depthwise conv): per output position, a group of
    up to GROUP channel vectors accumulates in registers over the window (the window's bounds
    are checked once per tap for the whole group), then the epilogue runs on each vector and
    one store writes it. Full groups take turns in a run-time loop, so the code is one group
    and the tail whatever the channel count (832-channel pools were 2k instructions each)."""
    oshape = red.type.shape
    lanes = blocking_of(b.module).lanes
    span = GROUP * lanes
    full, tail = divmod(oshape[-1], span)
    with loop_nest(b, oshape[:-1], split) as idx:
        if full:
            with for_range(b, full) as g:
                _reduce_group(b, body, red, ptrs, out, idx, b.mul(g, const(span)),
                              [(k * lanes, lanes) for k in range(GROUP)])
        if tail:
            _reduce_group(b, body, red, ptrs, out, idx, const(full * span),
                          [(c, min(lanes, tail - c)) for c in range(0, tail, lanes)])


def _reduce_group(b: ir.IRBuilder, body: Graph, red: Node, ptrs: dict[str, ir.Value],
                  out: ir.Value, idx: Coords, base: ir.Value,
                  group: list[tuple[int, int]]) -> None:
    """One group of channel vectors (offset from ``base``, lanes) at output position ``idx``."""
    fn, axes = red.attrs["fn"], tuple(red.attrs["axes"])
    oshape, ishape = red.type.shape, body.type_of(red.inputs[0]).shape
    count = int(np.prod([ishape[a] for a in axes]))
    dtype = red.type.dtype
    element = dtypes.register(dtype)
    starts = [b.add(base, const(offset)) if offset else base for offset, _ in group]
    accs = []
    for _, lanes in group:
        with b.goto_entry_block():
            accs.append(b.alloca(ir.VectorType(element, lanes) if lanes > 1 else element))
        start = BodyEmitter(b, body, ptrs, lanes=lanes).constant(identity(fn, dtype), dtype)
        b.store(start, accs[-1])
    with loop_nest(b, [ishape[a] for a in axes]) as r:
        for (_, lanes), first, acc in zip(group, starts, accs):
            coords = list(idx) + [first]
            for a, i in zip(axes, r):
                coords[a] = i
            x = BodyEmitter(b, body, ptrs, lanes=lanes).value(red.inputs[0], coords)
            b.store(accumulate(b, fn, b.load(acc), x, dtype), acc)
    for (_, lanes), first, acc in zip(group, starts, accs):
        total = b.load(acc)
        if fn is Reduce.MEAN:
            total = b.fmul(total, BodyEmitter(b, body, ptrs, lanes=lanes).constant(
                1.0 / count, dtype))
        at = list(idx) + [first]
        result = BodyEmitter(b, body, ptrs, {red.name: lambda _, t=total: t}, lanes)
        store(b, out, at, oshape, result.value(body.outputs[0], at))


GROUP = 8  # channel vectors accumulated together (registers: GROUP + operands < 32)


def _reduce_loops(b: ir.IRBuilder, body: Graph, red: Node, ptrs: dict[str, ir.Value],
                  out: ir.Value, split: Split | None) -> None:
    fn, axes = red.attrs["fn"], set(red.attrs["axes"])
    oshape, dtype = red.type.shape, red.type.dtype
    acc_out = b.bitcast(out, dtypes.storage(dtype).as_pointer())  # the sums, in their type
    with loop_nest(b, oshape, split) as idx:
        store(b, out, idx, oshape, dtypes.constant(dtype, identity(fn, dtype)))
    emitter = BodyEmitter(b, body, ptrs)
    with loop_nest(b, body.type_of(red.inputs[0]).shape, split) as idx:
        at = [const(0) if i in axes else c for i, c in enumerate(idx)]
        ptr = b.gep(acc_out, [linear(b, at, oshape)])
        x = emitter.value(red.inputs[0], idx)
        b.store(accumulate(b, fn, b.load(ptr), x, dtype), ptr)
    root = body.outputs[0]
    if root == red.name and fn is not Reduce.MEAN:
        return
    count = int(np.prod([body.type_of(red.inputs[0]).shape[a] for a in axes]))

    def reduced(coords: Coords) -> ir.Value:
        v = b.load(b.gep(acc_out, [linear(b, coords, oshape)]))
        return b.fmul(v, dtypes.constant(dtype, 1.0 / count)) if fn is Reduce.MEAN else v

    emitter = BodyEmitter(b, body, ptrs, {red.name: reduced})
    with loop_nest(b, oshape, split) as idx:
        store(b, out, idx, oshape, emitter.value(root, idx))



def emit_concat(b: ir.IRBuilder, node: Node, ptrs: dict[str, ir.Value], out: ir.Value,
                scratch: ir.Value, team: Team) -> None:
    """Row copies: each input is a run of rows of the output's trailing block."""
    body: Graph = node.attrs["body"]
    cat = body.nodes[-1]
    axis = cat.attrs["axis"]
    shape = node.type.shape
    outer = int(np.prod(shape[:axis]))
    total = int(np.prod(shape[axis:]))
    memcpy = b.module.declare_intrinsic("llvm.memcpy", [I8P, I8P, ir.IntType(64)])
    itemsize = np.dtype(node.type.dtype).itemsize
    element = dtypes.storage(node.type.dtype).as_pointer()
    out = b.bitcast(out, element)  # the offsets below count elements of the concat's type
    ptrs = {name: b.bitcast(p, element) for name, p in ptrs.items()}
    offset = 0
    for name in cat.inputs:
        inner = int(np.prod(body.type_of(name).shape[axis:]))
        with team.share(b, (outer,)) as split, loop_nest(b, (outer,), split) as (o,):
            dst = b.gep(out, [b.add(b.mul(o, const(total)), const(offset))])
            src = b.gep(ptrs[name], [b.mul(o, const(inner))])
            b.call(memcpy, [b.bitcast(dst, I8P), b.bitcast(src, I8P), const(inner * itemsize),
                            ir.Constant(ir.IntType(1), 0)])
        offset += inner
