"""The matmul kernel: optional im2col prologue into scratch, run-time packing of a non-constant
right-hand side, then the register-blocked GEMM (gemm.py) with the elementwise epilogue fused
into its stores."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from ...ir import Graph, Node, Op
from .expr import BodyEmitter, store, strides
from .gemm import emit_gemm, emit_pack_b, packed_b_floats
from .gemv import emit_gemv, emit_narrow, gemv_fits
from .im2col import emit_im2col, fast_im2col
from .llvm import F32P, I64, intrinsic
from .loops import const, for_range, loop_nest
from .math import emit_binary, emit_unary, splat
from .team import Team


@dataclass(frozen=True)
class Matmul:
    """What a matmul kernel body computes, read off its nodes."""

    mm: Node
    window: Node | None  # im2col prologue, materialized into scratch
    chain: tuple[Node, ...]  # epilogue, in order
    b_transpose: Node | None = None  # B is this transpose (of its last two axes) of a tensor

    @property
    def b_source(self) -> str:
        """The body value the right-hand side is packed from."""
        return self.mm.inputs[1] if self.b_transpose is None else self.b_transpose.inputs[0]

    @staticmethod
    def of(body: Graph) -> Matmul:
        mm = next(n for n in body.nodes if n.op is Op.MATMUL)
        reshape = body.producer.get(mm.inputs[0])
        window = body.producer.get(reshape.inputs[0]) if reshape is not None else None
        if window is not None and window.op is not Op.WINDOW:
            window = None
        chain = tuple(n for n in body.nodes[body.nodes.index(mm) + 1:])
        bt = body.producer.get(mm.inputs[1])
        return Matmul(mm, window, chain, bt if bt is not None and bt.op is Op.TRANSPOSE else None)

    def dims(self, body: Graph) -> tuple[int, int, int, int]:
        """(batch, m, k, n): a rank-2 right-hand side folds every leading dim of A into m."""
        a, bt = body.type_of(self.mm.inputs[0]).shape, body.type_of(self.mm.inputs[1]).shape
        k, n = bt[-2], bt[-1]
        if len(bt) == 2:
            return 1, int(np.prod(a[:-1])), k, n
        return int(np.prod(self.mm.type.shape[:-2])), a[-2], k, n


def scratch_bytes(node: Node, is_const: Callable[[str], bool]) -> int:
    body: Graph = node.attrs["body"]
    mt = Matmul.of(body)
    batch, m, k, n = mt.dims(body)
    size = 0
    if mt.window is not None:
        size += body.type_of(mt.window.name).nbytes
    if not is_const(node.inputs[body.inputs.index(body.values[mt.b_source])]):
        size += 4 * packed_b_floats(k, n) * int(np.prod(body.type_of(mt.mm.inputs[1]).shape[:-2]))
    return size


class ChainEpilogue:
    """The epilogue chain as vector code on a GEMM tile: per-column constants (bias, scale),
    per-row values, full tensors (residuals) and scalars, in the chain's order."""

    def __init__(self, body: Graph, mt: Matmul) -> None:
        self.body = body
        self.mt = mt
        out = mt.mm.type.shape
        self.operands: list[str] = []
        self.layout: dict[str, tuple[int, int]] = {}  # operand -> (row stride, column stride)
        for node in mt.chain:
            for i in node.inputs:
                if i in self.layout or self._scalar(i) is not None or body.producer.get(i) in \
                        (mt.mm, *mt.chain):
                    continue
                shape = body.type_of(i).shape
                shape = (1,) * (len(out) - len(shape)) + shape
                col = 1 if shape[-1] != 1 else 0
                row = 0 if all(d == 1 for d in shape[:-1]) else shape[-1]
                self.layout[i] = (row, col)
                self.operands.append(i)

    def swapped(self) -> ChainEpilogue:
        """This epilogue for the transposed C (a one-column C is a one-row C^T): each operand's
        row and column strides exchanged."""
        other = copy.copy(self)
        other.layout = {k: (col, row) for k, (row, col) in self.layout.items()}
        return other

    def _scalar(self, name: str) -> float | None:
        node = self.body.producer.get(name)
        if node is not None and node.op is Op.CONST:
            return float(np.asarray(node.attrs["value"]).reshape(-1)[0])
        return None

    def arg_types(self) -> list[ir.Type]:
        return [F32P] * len(self.operands)

    def emit(self, b: ir.IRBuilder, args: list[ir.Value], acc: ir.Value, row: ir.Value,
             col: ir.Value, lanes: int, mask: ir.Value | None) -> ir.Value:
        values = {self.mt.mm.name: acc}
        ptrs = dict(zip(self.operands, args))
        for node in self.mt.chain:
            xs = []
            for i in node.inputs:
                if i in values:
                    xs.append(values[i])
                elif (s := self._scalar(i)) is not None:
                    xs.append(splat(b, acc, s))
                else:
                    xs.append(self._load(b, ptrs[i], self.layout[i], acc, row, col, mask))
            if node.op is Op.UNARY:
                values[node.name] = emit_unary(b, node.attrs["fn"], node.attrs, xs[0])
            else:
                values[node.name] = emit_binary(b, node.attrs["fn"], *xs)
        return values[self.mt.chain[-1].name] if self.mt.chain else acc

    @staticmethod
    def _load(b: ir.IRBuilder, ptr: ir.Value, layout: tuple[int, int], like: ir.Value,
              row: ir.Value, col: ir.Value, mask: ir.Value | None) -> ir.Value:
        row_stride, col_stride = layout
        base = b.mul(row, const(row_stride))
        if col_stride == 0:
            return splat(b, like, b.load(b.gep(ptr, [base])))
        vptr = b.bitcast(b.gep(ptr, [b.add(base, col)]), like.type.as_pointer())
        if mask is None:
            return b.load(vptr, align=4)
        fn = intrinsic(b.module, "llvm.masked.load", [like.type, vptr.type], like.type,
                       [vptr.type, ir.IntType(32), mask.type, like.type])
        return b.call(fn, [vptr, ir.Constant(ir.IntType(32), 4), mask,
                           ir.Constant(like.type, None)])


def emit_matmul(b: ir.IRBuilder, node: Node, ptrs: dict[str, ir.Value], out: ir.Value,
                scratch: ir.Value, team: Team, packed: set[str], ldc: int | None = None) -> None:
    """``ldc``: the output's row stride when it is a column block of a wider (concat) buffer."""
    body: Graph = node.attrs["body"]
    mt = Matmul.of(body)
    batch, m, k, n = mt.dims(body)
    ldc = ldc or n
    cursor = b.bitcast(scratch, F32P)
    a_name, b_name = mt.mm.inputs
    if mt.window is not None:  # im2col: the patches of this chunk's rows, materialized once
        wshape = mt.window.type.shape  # [N, *O, *K, C]: rows are [N, *O], m of them
        spatial = 1 + len(mt.window.attrs["kernel"])
        emitter = BodyEmitter(b, body, ptrs)
        lo, hi = team.bounds(b, m)
        if fast_im2col(body, mt.window):  # whole channel rows at a time
            emit_im2col(b, body, mt.window, ptrs, cursor, lo, hi)
        else:
            with for_range(b, hi, start=lo) as row, loop_nest(b, wshape[spatial:]) as rest:
                idx = _unravel(b, row, wshape[:spatial]) + rest
                store(b, cursor, idx, wshape, emitter.value(mt.window.name, idx))
        a_ptr = cursor
        cursor = b.gep(cursor, [const(int(np.prod(wshape)))])
    else:
        a_ptr = ptrs[a_name]
    b_batches = int(np.prod(body.type_of(b_name).shape[:-2]))
    panel = packed_b_floats(k, n)
    if b_name in packed:
        b_ptr = ptrs[b_name]
    else:  # both operands are activations: pack the right-hand side now (never split)
        transposed = mt.b_transpose is not None  # read through the transpose
        pack = emit_pack_b(b.module, f"{b.function.name}.pack", k=k, n=n,
                           ldb=k if transposed else n, transposed=transposed)
        with for_range(b, b_batches) as g:
            b.call(pack, [b.gep(ptrs[mt.b_source], [b.mul(g, const(k * n))]),
                          b.gep(cursor, [b.mul(g, const(panel))])])
        b_ptr = cursor
    epilogue = ChainEpilogue(body, mt)
    extra = [ptrs[i] for i in epilogue.operands]
    if batch > 1:
        gemm = emit_gemm(b.module, f"{b.function.name}.gemm", m=m, k=k, n=n, lda=k, ldc=n,
                         epilogue=epilogue)
        a_off, b_off = _batch_offsets(body, mt)
        with team.share(b, (batch,)) as split, loop_nest(b, (batch,), split) as (g,):
            a_at = b.gep(a_ptr, [b.mul(a_off(b, g), const(m * k))])
            b_at = b.gep(b_ptr, [b.mul(b_off(b, g), const(panel))])
            b.call(gemm, [a_at, b_at, b.gep(out, [b.mul(g, const(m * n))]), *extra])
        return
    variants: dict[int, ir.Function] = {}
    for t in range(team.size):  # chunk t takes rows [lo, hi); one GEMM per distinct height
        lo, hi = m * t // team.size, m * (t + 1) // team.size
        if hi == lo:
            continue
        if hi - lo not in variants and n == 1 and ldc == 1 and gemv_fits(k):
            variants[hi - lo] = emit_gemv(b.module, f"{b.function.name}.gemv{hi - lo}",
                                          m=hi - lo, k=k, lda=k, epilogue=epilogue.swapped())
        elif hi - lo not in variants and n > 1 and gemv_fits(k, n):
            variants[hi - lo] = emit_narrow(b.module, f"{b.function.name}.narrow{hi - lo}",
                                            m=hi - lo, k=k, n=n, lda=k, ldc=ldc,
                                            epilogue=epilogue)
        if hi - lo not in variants:
            variants[hi - lo] = emit_gemm(b.module, f"{b.function.name}.gemm{hi - lo}", m=hi - lo,
                                          k=k, n=n, lda=k, ldc=ldc, epilogue=epilogue)
        rows = [b.gep(p, [const(lo * epilogue.layout[i][0])]) for i, p in
                zip(epilogue.operands, extra)]
        call = [b.gep(a_ptr, [const(lo * k)]), b_ptr, b.gep(out, [const(lo * ldc)]), *rows]
        if team.size == 1:
            b.call(variants[hi - lo], call)
        else:
            with b.if_then(b.icmp_unsigned("==", team.tid, const(t))):
                b.call(variants[hi - lo], call)


def _unravel(b: ir.IRBuilder, flat: ir.Value, shape: Sequence[int]) -> list[ir.Value]:
    """Row-major coordinates of element ``flat`` of ``shape``."""
    coords = []
    for stride in strides(shape):
        coords.append(b.udiv(flat, const(stride)))
        flat = b.urem(flat, const(stride))
    return coords


def _batch_offsets(body: Graph, mt: Matmul):
    """Functions from the output batch index to the operands' (broadcast) batch indices."""
    out_batch = mt.mm.type.shape[:-2]

    def index_fn(name: str):
        shape = body.type_of(name).shape[:-2]
        shape = (1,) * (len(out_batch) - len(shape)) + shape

        def at(b: ir.IRBuilder, g: ir.Value) -> ir.Value:
            flat, stride, rest = const(0), 1, g
            for d_out, d in zip(reversed(out_batch), reversed(shape)):
                i = b.urem(rest, const(d_out))
                rest = b.udiv(rest, const(d_out))
                if d != 1:
                    flat = b.add(flat, b.mul(i, const(stride)))
                stride *= d
            return flat

        return at

    return index_fn(mt.mm.inputs[0]), index_fn(mt.mm.inputs[1])


__all__ = ["ChainEpilogue", "I64", "Matmul", "emit_matmul", "scratch_bytes"]
