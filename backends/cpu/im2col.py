"""The im2col prologue of a conv's matmul kernel as row copies.

The WINDOW of a channels-last tensor [N, *S, C] has the patch of output position o and kernel
tap t as C contiguous floats of the input (or C pad values): one memcpy per (row, tap) instead
of C scalar elements with a bounds check each. The general element-by-element emission
(matmul.py) stays for windows read through other ops (a transposed model input) and non-zero
pad values.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable
from weakref import WeakKeyDictionary

import numpy as np
from llvmlite import ir

from ...ir import Graph, Node, Op
from .llvm import F32P, I8P, I64, is_host, target_of
from .loops import const, for_range

I1 = ir.IntType(1)
MAX_TAPS = 64  # taps unrolled per row (a 7x7 kernel is 49)
MAX_RUN_BYTES = 256  # the longest copy of a kernel row's taps at once


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

        # the taps along the last kernel axis read one run of the input's rows when its
        # pixels are dense (channels-last, dilation 1): where they are all inside, one copy
        # of kw * C values for all of them, if that copy is small (LeNet's 5 x 1 channel taps:
        # 0.85x the model's time); longer copies become library calls that measured slower
        # than one copy per tap (ResNet-18's layer4, 3 x 512 channels: 1.03-1.08x). On the
        # host only: a bare-metal library has no memcpy for LLVM to call instead of the copy
        kw = kernel[-1]
        dense = (kw > 1 and dilations[-1] == 1 and strides_in[-1] == 1
                 and strides_in[-2] == c and 4 * kw * c <= MAX_RUN_BYTES
                 and is_host(target_of(b.module)))
        for prefix in itertools.product(*(range(k) for k in kernel[:-1])):
            if not dense:
                for k in range(kw):
                    tap((*prefix, k))
                continue
            pos, to = at((*prefix, 0))
            with b.if_else(inside_all(pos, [1] * (n - 1) + [kw])) as (then, otherwise):
                with then:
                    frm = b.gep(src, [offset_of(pos)])
                    b.call(memcpy, [b.bitcast(to, I8P), b.bitcast(frm, I8P),
                                    const(4 * kw * c), volatile])
                with otherwise:
                    for k in range(kw):
                        tap((*prefix, k))
