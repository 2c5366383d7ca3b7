"""The im2col prologue of a conv's matmul kernel as row copies.

The WINDOW of a channels-last tensor [N, *S, C] has the patch of output position o and kernel
tap t as C contiguous floats of the input (or C pad values): one memcpy per (row, tap) instead
of C scalar elements with a bounds check each. On the host, a kernel row of at most 64 values
that lies in few runs of the input is copied at once, as masked vector loads whose masks are
the pads: one run of kw x C floats for a channels-last input (LeNet's 5 x 1 taps, a 3x3 conv
of 16 channels), a run per channel plane for an NCHW model input of up to 4 channels (the RGB
stem: 7 taps of 3 planes, shuffled into patch order). The general element-by-element emission
(matmul.py) stays for windows read through other ops and non-zero pad values.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable
from dataclasses import dataclass
from weakref import WeakKeyDictionary

import numpy as np
from llvmlite import ir

from ...ir import Graph, Node, Op
from .blocking import blocking_of
from .gemm import _load
from .llvm import F32, F32P, I8P, I64, is_host, prefetch, target_of
from .loops import const, for_range
from .math import splat

I1 = ir.IntType(1)
MAX_TAPS = 64  # taps unrolled per row (a 7x7 kernel is 49)


def _source(body: Graph, window: Node) -> tuple[str, tuple[int, ...]] | None:
    """The kernel input the window reads and the element strides of the window's input
    [N, *S, C] in it: the input itself, or a transpose of it (an NCHW model input)."""
    inputs = {v.name for v in body.inputs}
    name = window.inputs[0]
    shape = body.type_of(name).shape
    perm = tuple(range(len(shape)))
    node = body.producer.get(name)
    if name not in inputs and node is not None and node.op is Op.TRANSPOSE \
            and node.inputs[0] in inputs:
        name, perm = node.inputs[0], tuple(node.attrs["perm"])
    if name not in inputs or body.type_of(name).dtype != "float32":
        return None
    dense = [int(np.prod(body.type_of(name).shape[i + 1:])) for i in range(len(shape))]
    return name, tuple(dense[p] for p in perm)


def fast_im2col(body: Graph, window: Node) -> bool:
    """Whether emit_im2col handles ``window``: read from a float kernel input (or a transpose
    of one), with zero padding and a kernel of at most MAX_TAPS taps."""
    return (_source(body, window) is not None and window.attrs["pad"] == 0
            and int(np.prod(window.attrs["kernel"])) <= MAX_TAPS)


# the im2col functions of each module, by what their code depends on
_FUNCTIONS: WeakKeyDictionary[ir.Module, dict[Hashable, ir.Function]] = WeakKeyDictionary()


def emit_im2col(b: ir.IRBuilder, body: Graph, window: Node, ptrs: dict[str, ir.Value],
                dst: ir.Value, lo: ir.Value, hi: ir.Value) -> None:
    """Rows [lo, hi) of the patch matrix [N * prod(O), prod(K) * C] at ``dst`` (rows before
    ``lo`` are left alone). A tap's C channels are one memcpy when contiguous, else C
    strided loads (few channels: a model input's RGB). The rows are copied by a function of
    their own, one per module and window geometry: a split kernel calls it for every chunk
    (the taps are unrolled, thousands of instructions that LLVM would otherwise optimize
    once per chunk)."""
    name, strides_in = _source(body, window)
    at = window.attrs
    key = (strides_in, body.type_of(window.inputs[0]).shape, window.type.shape,
           *(tuple(int(v) for v in at[a]) for a in ("kernel", "strides", "dilations", "pads")))
    functions = _FUNCTIONS.setdefault(b.module, {})
    fn = functions.get(key)
    if fn is None:
        fn = ir.Function(b.module, ir.FunctionType(ir.VoidType(), [F32P, F32P, I64, I64]),
                         f"im2col.{len(functions)}")
        fn.linkage = "internal"
        fn.attributes.add("noinline")
        fn.attributes.add("nounwind")
        for arg in fn.args[:2]:  # the input and the kernel's own scratch never overlap
            arg.add_attribute("noalias")
        fb = ir.IRBuilder(fn.append_basic_block("entry"))
        _emit_rows(fb, body, window, strides_in, *fn.args)
        fb.ret_void()
        functions[key] = fn
    b.call(fn, [ptrs[name], dst, lo, hi])


@dataclass(frozen=True)
class RowRuns:
    """How one kernel row's kw x C values lie in the input: ``starts`` runs of consecutive
    elements (a run per channel of an NCHW input, one run for a channels-last one), each read
    as ``chunks`` masked vectors of ``width`` lanes (no wider than the run needs); lane l of
    a run is element ``group`` * x + l of the input row, x the row's first tap; ``picks`` are
    the lanes of the runs' concatenated vectors in patch order (kx, c)."""

    starts: tuple[int, ...]
    span: int
    group: int
    width: int
    chunks: int
    picks: tuple[int, ...]


MAX_ROW_FLOATS = 64  # a kernel row of at most this many values (kw * C) is vector copies
MAX_PLANES = 4  # channel planes of an NCHW input read as one vector each (RGB)
# Each run's input row is prefetched this far ahead: the masked loads do not train the
# hardware prefetcher, and an RGB stem whose input came from DRAM took 1.7x the time of the
# scalar copies without it (EfficientNet's: 430 us against 258), 0.67x with it (174 us)
PREFETCH_FLOATS = 64


def _row_runs(kw: int, dilation: int, c: int, strides_in: tuple[int, ...],
              lanes: int) -> RowRuns | None:
    """The vector copy of a kernel row, where its values are few runs of the input's rows."""
    if kw * c > MAX_ROW_FLOATS:
        return None
    if strides_in[-1] == 1 and strides_in[-2] == c and dilation == 1:  # channels last
        width = min(lanes, _pow2(kw * c))
        return RowRuns((0,), kw * c, c, width, -(-kw * c // width), tuple(range(kw * c)))
    span = (kw - 1) * dilation + 1
    if strides_in[-2] == 1 and c <= MAX_PLANES and span <= lanes:  # a plane per channel
        width = min(lanes, _pow2(span))
        return RowRuns(tuple(ch * strides_in[-1] for ch in range(c)), span, 1, width, 1,
                       tuple(ch * width + k * dilation for k in range(kw) for ch in range(c)))
    return None


def _pow2(n: int) -> int:
    """The least power of two >= n, at least 4 (a 128-bit vector)."""
    return max(4, 1 << (n - 1).bit_length())


def _lane_masks(b: ir.IRBuilder, runs: RowRuns, x: ir.Value, size: int) -> list[ir.Value]:
    """Per chunk, the lanes of a run that are inside the input row of ``size`` positions:
    lane l reads element group * x + l, inside where that is in [0, group * size) and
    l < span (the others read nothing and give the pad's zeros)."""
    lanes = runs.width
    i32 = ir.IntType(32)
    vec = ir.VectorType(i32, lanes)
    start = splat(b, ir.Constant(vec, None), b.trunc(b.mul(x, const(runs.group)), i32))
    masks = []
    for j in range(runs.chunks):
        lane = [j * lanes + i for i in range(lanes)]
        e = b.add(start, ir.Constant(vec, lane))
        inside = b.and_(b.icmp_signed(">=", e, ir.Constant(vec, None)),
                        b.icmp_signed("<", e, ir.Constant(vec, [runs.group * size] * lanes)))
        masks.append(b.and_(inside, ir.Constant(ir.VectorType(I1, lanes),
                                                [int(i < runs.span) for i in lane])))
    return masks


def _copy_row(b: ir.IRBuilder, runs: RowRuns, masks: list[ir.Value], row: ir.Value,
              to: ir.Value) -> None:
    """Masked loads of the runs at ``row`` (masked-off lanes read nothing and give the pad
    zeros), their lanes picked into patch order, one store of kw x C values at ``to``."""
    lanes = runs.width
    vec = ir.VectorType(F32, lanes)
    for s in runs.starts:  # masked loads leave the hardware prefetcher idle
        prefetch(b, b.gep(row, [const(s + PREFETCH_FLOATS)]))
    parts = [_load(b, b.bitcast(b.gep(row, [const(s + j * lanes)]), vec.as_pointer()), mask)
             for s in runs.starts for j, mask in enumerate(masks)]
    while len(parts) & (len(parts) - 1):  # a power of two, for the pairwise concatenation
        parts.append(ir.Constant(vec, None))
    while len(parts) > 1:
        width = 2 * parts[0].type.count
        parts = [b.shuffle_vector(x, y, ir.Constant(ir.VectorType(ir.IntType(32), width),
                                                    list(range(width))))
                 for x, y in zip(parts[::2], parts[1::2])]
    out = b.shuffle_vector(parts[0], parts[0],
                           ir.Constant(ir.VectorType(ir.IntType(32), len(runs.picks)),
                                       list(runs.picks)))
    b.store(out, b.bitcast(to, out.type.as_pointer()), align=4)


def _emit_rows(b: ir.IRBuilder, body: Graph, window: Node, strides_in: tuple[int, ...],
               src: ir.Value, dst: ir.Value, lo: ir.Value, hi: ir.Value) -> None:
    """The loop of emit_im2col over rows [lo, hi)."""
    at = window.attrs
    kernel, strides, dilations, pads = at["kernel"], at["strides"], at["dilations"], at["pads"]
    n = len(kernel)
    out = window.type.shape[1:1 + n]
    in_shape = body.type_of(window.inputs[0]).shape
    sizes, c = in_shape[1:1 + n], in_shape[-1]
    width = int(np.prod(kernel)) * c
    memcpy = b.module.declare_intrinsic("llvm.memcpy", [I8P, I8P, ir.IntType(64)])
    memset = b.module.declare_intrinsic("llvm.memset", [I8P, ir.IntType(64)])
    volatile = ir.Constant(I1, 0)
    with for_range(b, hi, start=lo) as row:
        coords, rest = [], row
        for d in reversed(out):  # row -> (batch, o_1 .. o_n)
            coords.append(b.urem(rest, const(d)))
            rest = b.udiv(rest, const(d))
        batch, coords = rest, coords[::-1]
        # the first input position of each axis: o * stride - pad
        first = [b.sub(b.mul(o, const(s)), const(p)) for o, s, p in zip(coords, strides, pads)]
        row_dst = b.gep(dst, [b.mul(row, const(width))])

        def offset_of(pos: list[ir.Value]) -> ir.Value:
            offset = b.mul(batch, const(strides_in[0]))
            for p, stride in zip(pos, strides_in[1:]):
                offset = b.add(offset, b.mul(p, const(stride)))
            return offset

        def inside_all(pos: list[ir.Value], spans: list[int]) -> ir.Value:
            """Whether positions pos .. pos + span - 1 of every axis are in the input."""
            if any(span > size for size, span in zip(sizes, spans)):
                return ir.Constant(I1, 0)
            inside = ir.Constant(I1, 1)
            for p, size, span in zip(pos, sizes, spans):  # unsigned: a negative is huge
                inside = b.and_(inside, b.icmp_unsigned("<", p, const(size - span + 1)))
            return inside

        def at(taps: tuple[int, ...]) -> tuple[list[ir.Value], ir.Value]:
            """(the input position a tap reads, where its C values go in the row)."""
            pos = [b.add(f, const(k * d)) for f, k, d in zip(first, taps, dilations)]
            return pos, b.gep(row_dst, [const(int(np.ravel_multi_index(taps, kernel)) * c)])

        def tap(taps: tuple[int, ...]) -> None:
            """One tap's C values (or C pad zeros)."""
            pos, to = at(taps)
            with b.if_else(inside_all(pos, [1] * n)) as (then, otherwise):
                with then:
                    frm = b.gep(src, [offset_of(pos)])
                    if strides_in[-1] == 1:
                        b.call(memcpy, [b.bitcast(to, I8P), b.bitcast(frm, I8P),
                                        const(4 * c), volatile])
                    elif c <= MAX_TAPS:
                        for ch in range(c):
                            x = b.load(b.gep(frm, [const(ch * strides_in[-1])]), align=4)
                            b.store(x, b.gep(to, [const(ch)]), align=4)
                    else:
                        with for_range(b, c) as ch:
                            x = b.load(b.gep(frm, [b.mul(ch, const(strides_in[-1]))]), align=4)
                            b.store(x, b.gep(to, [ch]), align=4)
                with otherwise:
                    b.call(memset, [b.bitcast(to, I8P), ir.Constant(ir.IntType(8), 0),
                                    const(4 * c), volatile])

        # a kernel row at a time where its values are a few runs of the input, on the host
        # only: masked-off lanes are never read (x86 suppresses their faults), where a
        # microcontroller's LLVM would emit a branch per lane
        runs = _row_runs(kernel[-1], dilations[-1], c, strides_in, blocking_of(b.module).lanes)
        if runs is None or not is_host(target_of(b.module)):
            for taps in itertools.product(*(range(k) for k in kernel)):
                tap(taps)
        else:
            masks = _lane_masks(b, runs, first[-1], sizes[-1])
            for prefix in itertools.product(*(range(k) for k in kernel[:-1])):
                pos, to = at((*prefix, 0))
                inside = inside_all(pos[:-1], [1] * (n - 1))  # leading axes: all or nothing
                rows = [b.select(inside, m, ir.Constant(m.type, None)) for m in masks]
                # an outside row reads nothing, from an address inside the input all the same
                pos = [b.select(inside, p, const(0)) for p in pos[:-1]] + pos[-1:]
                _copy_row(b, runs, rows, b.gep(src, [offset_of(pos)]), to)
