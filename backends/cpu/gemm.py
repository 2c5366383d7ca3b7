"""The register-blocked single-precision GEMM: C = epilogue(A @ B) with B pre-packed.

B is packed into panels of NR columns, ``[n / NR][k][NR]`` (zero padded), so the micro-kernel
reads one contiguous NR-float row of a panel per step of the reduction. A is read in place
(row-major, any row stride): each step broadcasts A[i, p] for the MR rows of a strip and issues
MR x (NR / lanes) FMAs into accumulators that live in vector registers for the whole K block.

Loop nest, outermost first: batch, K blocks of KC (B block in L2, A strip in L1), chunks of NC
columns, strips of MR rows, tiles of panels. The first K block initialises the tile, later ones
reload C and keep accumulating, and the last one applies the epilogue once before the store.
Remainder rows get their own (smaller) micro-kernel; when few rows leave registers free it
covers several panels at once and splits the reduction over independent accumulator sets, so
that a GEMV (m == 1) still keeps both FMA pipes busy. Remainder columns use masked stores.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Protocol
from weakref import WeakKeyDictionary

import numpy as np
from llvmlite import ir

from .blocking import (
    CHAINS,
    I1,
    KC,
    LINE_BYTES,
    NC,
    PREFETCH_STEPS,
    UNROLL,
    Blocking,
    blocking_of,
)
from .llvm import F32P, I32, I64, intrinsic, new_module, prefetch, target_of
from .loops import const, for_range
from .math import splat


class Epilogue(Protocol):
    """Elementwise code applied to each finished vector of C before it is stored."""

    def arg_types(self) -> list[ir.Type]:
        """Extra arguments (usually float pointers) appended to the GEMM's signature."""

    def emit(self, b: ir.IRBuilder, args: list[ir.Value], acc: ir.Value, row: ir.Value,
             col: ir.Value, lanes: int, mask: ir.Value | None) -> ir.Value:
        """The vector to store for C[row, col:col + lanes] (row within the batch, i64). ``mask``
        is None for a full vector, else the <lanes x i1> valid columns."""


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def packed_b_floats(k: int, n: int, nr: int) -> int:
    """float32 elements that pack_b produces for one [k, n] matrix (n padded to ``nr``)."""
    return _ceil_div(n, nr) * nr * k


PACK_BLOCK_BYTES = 1 << 18  # rows of B packed at once: 256 KiB, in L2 with their panels


def pack_b(b: np.ndarray, nr: int, out: np.ndarray | None = None) -> np.ndarray:
    """Compile-time packing of a constant [k, n] or [batch..., k, n] right-hand side into
    ``[batch][n / nr][k][nr]`` (zero padded; ``nr`` the target's panel width),
    flattened; into ``out`` (float32, that many elements) when given, so the weights blob is
    written once."""
    b = np.asarray(b, np.float32)
    k, n = b.shape[-2:]
    g = int(np.prod(b.shape[:-2]))
    b = b.reshape(g, k, n)
    full, rest = divmod(n, nr)
    shape = (g, full + (rest > 0), k, nr)
    out = np.empty(shape, np.float32) if out is None else out.reshape(shape)
    # one pass over the weights (hundreds of MB in VGG), a block of rows at a time: a block's
    # panel rows are contiguous runs on both sides, where whole panels at a time read one
    # strip of every row of B (2.6 s for VGG-19's weights, page misses on every row)
    step = max(1, PACK_BLOCK_BYTES // (4 * n))
    for k0 in range(0, k, step):
        rows = b[:, k0:k0 + step]
        out[:, :full, k0:k0 + step] = rows[:, :, :full * nr].reshape(
            g, rows.shape[1], full, nr).transpose(0, 2, 1, 3)
        if rest:
            out[:, full, k0:k0 + step, :rest] = rows[:, :, full * nr:]
    if rest:
        out[:, full, :, rest:] = 0
    return out.reshape(-1)


def _mask(b: ir.IRBuilder, valid: int) -> ir.Constant | None:
    """The mask of the first ``valid`` lanes of the module's vectors; None when full."""
    return blocking_of(b.module).mask(valid)


def _vector_at(b: ir.IRBuilder, base: ir.Value, offset: ir.Value | int) -> ir.Value:
    offset = const(offset) if isinstance(offset, int) else offset
    return b.bitcast(b.gep(base, [offset]), blocking_of(b.module).vec.as_pointer())


def _load(b: ir.IRBuilder, ptr: ir.Value, mask: ir.Value | None) -> ir.Value:
    if mask is None:
        return b.load(ptr, align=4)
    vec = ptr.type.pointee
    fn = intrinsic(b.module, "llvm.masked.load", [vec, ptr.type], vec,
                   [ptr.type, I32, mask.type, vec])
    return b.call(fn, [ptr, ir.Constant(I32, 4), mask, ir.Constant(vec, None)])


def _store(b: ir.IRBuilder, value: ir.Value, ptr: ir.Value, mask: ir.Value | None) -> None:
    if mask is None:
        b.store(value, ptr, align=4)
        return
    vec = value.type
    fn = intrinsic(b.module, "llvm.masked.store", [vec, ptr.type], ir.VoidType(),
                   [vec, ptr.type, I32, mask.type])
    b.call(fn, [value, ptr, ir.Constant(I32, 4), mask])


def _no_alias(args: list[ir.Argument]) -> None:
    """The operand is reached through this pointer only, which does not escape."""
    for arg in args:
        arg.add_attribute("noalias")
        arg.add_attribute("captures(none)")


def gemm_function(module: ir.Module, name: str, epilogue: Epilogue | None
                  ) -> tuple[ir.Function, ir.IRBuilder]:
    """Declare ``void name(float* A, float* Bpacked, float* C, <epilogue args>)``, the three
    operands not aliased, and open its entry block."""
    extra = epilogue.arg_types() if epilogue else []
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [F32P, F32P, F32P, *extra]), name)
    fn.attributes.add("nounwind")
    _no_alias(fn.args[:3])
    return fn, ir.IRBuilder(fn.append_basic_block("entry"))


def _carried_loop(b: ir.IRBuilder, start: ir.Value, stop: ir.Value, step: int,
                  init: list[ir.Value],
                  body: Callable[[ir.Value, list[ir.Value]], list[ir.Value]]) -> list[ir.Value]:
    """A counted loop whose body maps the loop-carried vectors to their next values (phi
    nodes keep them in registers); returns their values after the loop."""
    pre = b.block
    head, loop, end = (b.append_basic_block(s) for s in ("k.head", "k.body", "k.end"))
    b.branch(head)
    b.position_at_end(head)
    i = b.phi(I64, "p")
    carried = [b.phi(v.type) for v in init]
    for phi, v in zip([i, *carried], [start, *init]):
        phi.add_incoming(v, pre)
    b.cbranch(b.icmp_signed("<", i, stop), loop, end)
    b.position_at_end(loop)
    nxt = body(i, carried)
    i.add_incoming(b.add(i, const(step), flags=("nsw",)), b.block)
    for phi, v in zip(carried, nxt):
        phi.add_incoming(v, b.block)
    b.branch(head)
    b.position_at_end(end)
    return carried


class _Tile:
    """One micro-kernel: ``rows`` x ``panels`` panels (the last with ``tail`` valid columns) as
    ``void tile(A, Bpanel, C, kc, row, col, first, last, lda, ldc, bstride, <epilogue args>)``
    (row strides of A and C, and the floats from one packed panel to the next). The strides
    are arguments, not constants, so that every GEMM of a module with the same tile shape and
    epilogue calls one function: LLVM optimizes and emits each tile once (most of the compile
    time of a CNN), and the strides cost nothing in the loop (one base pointer per row)."""

    def __init__(self, module: ir.Module, name: str, *, rows: int, panels: int, tail: int,
                 sets: int, epilogue: Epilogue | None) -> None:
        self.rows, self.epilogue = rows, epilogue
        self.bl = bl = blocking_of(module)
        lanes, nr = bl.lanes, bl.nr
        # (panel, offset in a packed B row, offset in a C row, valid lanes) of each
        # accumulator column
        self.cols = [(q, v * lanes, q * nr + v * lanes, valid)
                     for q in range(panels) for v in range(bl.v)
                     if (valid := min(lanes, (tail if q == panels - 1 else nr) - v * lanes)) > 0]
        self.sets = sets
        extra = epilogue.arg_types() if epilogue else []
        fnty = ir.FunctionType(ir.VoidType(),
                               [F32P, F32P, F32P, I64, I64, I64, I1, I1, I64, I64, I64, *extra])
        self.fn = ir.Function(module, fnty, name)
        self.fn.linkage = "internal"
        # called from many GEMMs: inlining would optimize the same code once per caller
        self.fn.attributes.add("noinline")
        self.fn.attributes.add("nounwind")
        _no_alias(self.fn.args[:3])
        self._define()

    def _define(self) -> None:
        b = ir.IRBuilder(self.fn.append_basic_block("entry"))
        a, bp, c, kc, row, col, first, last, lda, ldc, bstride, *eargs = self.fn.args
        self.a_rows = [b.gep(a, [b.mul(lda, const(r))]) for r in range(self.rows)]
        self.c_rows = [b.gep(c, [b.mul(ldc, const(r))]) for r in range(self.rows)]
        panels = self.cols[-1][0] + 1
        self.b_panels = [b.gep(bp, [b.mul(bstride, const(q))]) for q in range(panels)]
        zero = ir.Constant(self.bl.vec, None)
        # first K block: start from zero; later ones: from the partial sums stored in C
        entry = b.block
        reload, start = b.append_basic_block("reload"), b.append_basic_block("start")
        b.cbranch(first, start, reload)
        b.position_at_end(reload)
        loaded = [_load(b, self._c_at(b, r, j), _mask(b, self.cols[j][3]))
                  for r in range(self.rows) for j in range(len(self.cols))]
        b.branch(start)
        b.position_at_end(start)
        acc = []
        for value in loaded:
            phi = b.phi(self.bl.vec)
            phi.add_incoming(zero, entry)
            phi.add_incoming(value, reload)
            acc.append(phi)
        # main loop, UNROLL steps at a time, step u feeding accumulator set u % sets
        n_acc = len(acc)
        init = acc + [zero] * (n_acc * (self.sets - 1))

        def unrolled(p: ir.Value, carried: list[ir.Value]) -> list[ir.Value]:
            carried = list(carried)
            for u in range(UNROLL):
                s = (u % self.sets) * n_acc
                carried[s:s + n_acc] = self._step(b, b.add(p, const(u)), carried[s:s + n_acc])
            return carried

        body_end = b.and_(kc, const(-UNROLL))
        sums = _carried_loop(b, const(0), body_end, UNROLL, init, unrolled)
        acc = sums[:n_acc]
        for s in range(1, self.sets):
            acc = [b.fadd(x, y) for x, y in zip(acc, sums[s * n_acc:(s + 1) * n_acc])]
        acc = _carried_loop(b, body_end, kc, 1, acc, lambda p, cur: self._step(b, p, cur))
        if self.epilogue is None:
            self._store_all(b, acc, None)
            return
        finish, plain = b.append_basic_block("finish"), b.append_basic_block("plain")
        b.cbranch(last, finish, plain)
        b.position_at_end(plain)
        self._store_all(b, acc, None)
        b.position_at_end(finish)
        self._store_all(b, acc, (eargs, row, col))

    def _c_at(self, b: ir.IRBuilder, r: int, j: int) -> ir.Value:
        return _vector_at(b, self.c_rows[r], self.cols[j][2])

    def _step(self, b: ir.IRBuilder, p: ir.Value, acc: list[ir.Value]) -> list[ir.Value]:
        """One reduction step: acc[r, j] += A[r, p] * B[p, j] for the whole register tile."""
        vec = self.bl.vec
        fma = intrinsic(b.module, "llvm.fma", [vec], vec, [vec] * 3)
        row = b.mul(p, const(self.bl.nr))
        bv = [b.load(_vector_at(b, self.b_panels[q], b.add(row, const(off))), align=4)
              for q, off, _, _ in self.cols]
        if self.bl.prefetch:
            self._prefetch(b, p)
        out = []
        for r in range(self.rows):
            x = splat(b, acc[0], b.load(b.gep(self.a_rows[r], [p])))
            out += [b.call(fma, [x, v, acc[r * len(bv) + j]]) for j, v in enumerate(bv)]
        return out

    def _prefetch(self, b: ir.IRBuilder, p: ir.Value) -> None:
        """Prefetch each cache line of the packed B row PREFETCH_STEPS steps after ``p`` (past
        the panel's end it touches the next panel or nothing: a prefetch never faults)."""
        ahead = b.mul(b.add(p, const(PREFETCH_STEPS)), const(self.bl.nr))
        for q, off, _, _ in self.cols:
            if off * 4 % LINE_BYTES == 0:
                prefetch(b, b.gep(self.b_panels[q], [b.add(ahead, const(off))]))

    def _store_all(self, b: ir.IRBuilder, acc: list[ir.Value],
                   epi: tuple[list[ir.Value], ir.Value, ir.Value] | None) -> None:
        for r in range(self.rows):
            for j, (_, _, off, valid) in enumerate(self.cols):
                value, mask = acc[r * len(self.cols) + j], _mask(b, valid)
                if epi is not None:
                    eargs, row, col = epi
                    value = self.epilogue.emit(b, eargs, value, b.add(row, const(r)),
                                               b.add(col, const(off)), self.bl.lanes, mask)
                _store(b, value, self._c_at(b, r, j), mask)
        b.ret_void()


# the tiles of each module, by (rows, panels, tail, epilogue code): shared by its GEMMs
_TILES: WeakKeyDictionary[ir.Module, dict[Hashable, ir.Function]] = WeakKeyDictionary()


def _epilogue_key(epilogue: Epilogue | None, target: object) -> str | None:
    """The code ``epilogue`` emits for ``target``, as text: equal texts make equal tiles.
    Emitted once with a full vector and once with a mask (an argument, standing for any
    constant mask)."""
    if epilogue is None:
        return None
    module = new_module("epilogue", target)
    bl = blocking_of(module)
    extra = epilogue.arg_types()
    mask_t = ir.VectorType(I1, bl.lanes)
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [*extra, bl.vec, I64, I64, mask_t]),
                     "e")
    b = ir.IRBuilder(fn.append_basic_block())
    *eargs, acc, row, col, mask = fn.args
    for m in (None, mask):
        epilogue.emit(b, eargs, acc, row, col, bl.lanes, m)
    b.ret_void()
    return str(module)


def _reduction_sets(rows: int, n: int, bl: Blocking) -> int:
    """Independent accumulator sets the reduction of a ``rows``-row tile of an ``n``-column
    GEMM is split over, so that CHAINS FMAs are in flight: one set where the widest tile's
    row holds enough vectors, up to UNROLL for a narrow one (a GEMV; a conv to 6 channels,
    whose 6 x 1-vector tiles were bound by the FMA latency). It depends on the rows and the
    GEMM's width only, never on how many columns one tile covers: every column of a row is
    summed in the same order, so equal columns of B give bit-equal results (ties in a
    softmax stay ties, as in onnxruntime)."""
    vectors = min(_ceil_div(n, bl.lanes), _panels_per_tile(rows, bl) * bl.v)
    return min(UNROLL, 1 << (_ceil_div(CHAINS, rows * vectors) - 1).bit_length())


def _panels_per_tile(rows: int, bl: Blocking) -> int:
    """Panels one micro-kernel covers: as many as the registers hold (accumulators, the B
    vectors of a step and a broadcast), up to 4."""
    p = 4
    while p > 1 and rows * p * bl.v + p * bl.v + 1 > bl.regs:
        p //= 2
    return p


def emit_gemm(module: ir.Module, name: str, *, m: int, k: int, n: int, lda: int, ldc: int,
              batch: int = 1, a_batch_stride: int = 0, c_batch_stride: int = 0,
              b_per_batch: bool = False, epilogue: Epilogue | None = None,
              width: int | None = None) -> ir.Function:
    """Define ``void name(float* A, float* Bpacked, float* C, <epilogue args>)``: for every
    batch g, C_g[i, j] = epilogue(sum_p A_g[i, p] * B_g[p, j]) for i < m, j < n, with
    A_g = A + g * a_batch_stride (row stride lda), C_g = C + g * c_batch_stride (row stride
    ldc) and B_g the g-th packed matrix if b_per_batch, else the only one. The epilogue is
    given the row within the batch (no batch index) and the column; its operands must not
    overlap C, which holds partial sums between K blocks. Writes nothing outside C_g[:m, :n].
    Pointers need only float alignment (misaligned B or C measured no slower). ``width``: the
    whole product's column count when this GEMM computes a block of its columns (a thread's
    chunk), so that every block sums a row in the same order (default n)."""
    if min(m, k, n, batch) < 1:
        raise ValueError(f"empty GEMM m={m} k={k} n={n} batch={batch}")
    fn, b = gemm_function(module, name, epilogue)
    a, bp, c, *eargs = fn.args
    tiles = _TILES.setdefault(module, {})
    epilogue_key = _epilogue_key(epilogue, target_of(module))

    def tile(rows: int, panels: int, tail: int) -> ir.Function:
        sets = _reduction_sets(rows, width or n, blocking_of(module))
        key = (rows, panels, tail, sets, epilogue_key)
        if key not in tiles:
            tiles[key] = _Tile(module, f"gemm.tile{rows}x{panels}x{tail}.{len(tiles)}",
                               rows=rows, panels=panels, tail=tail, sets=sets,
                               epilogue=epilogue).fn
        return tiles[key]

    def one_batch(g: ir.Value) -> None:
        a_g = b.gep(a, [b.mul(g, const(a_batch_stride))])
        b_g = (b.gep(bp, [b.mul(g, const(packed_b_floats(k, n, blocking_of(module).nr)))])
               if b_per_batch else bp)
        c_g = b.gep(c, [b.mul(g, const(c_batch_stride))])
        _emit_blocks(b, tile, a_g, b_g, c_g, eargs, m=m, k=k, n=n, lda=lda, ldc=ldc)

    if batch == 1:
        one_batch(const(0))
    else:
        with for_range(b, batch) as g:
            one_batch(g)
    b.ret_void()
    return fn


def _emit_blocks(b: ir.IRBuilder, tile: Callable[[int, int, int], ir.Function], a: ir.Value,
                 bp: ir.Value, c: ir.Value, eargs: list[ir.Value], *, m: int, k: int, n: int,
                 lda: int, ldc: int) -> None:
    """K blocks x column chunks x row strips x panel tiles of one batch."""
    bl = blocking_of(b.module)
    nr, mr = bl.nr, bl.mr
    blocks = _ceil_div(k, KC)
    kc_step = k if blocks == 1 else _ceil_div(_ceil_div(k, blocks), UNROLL) * UNROLL  # balanced
    panels, tail = _ceil_div(n, nr), n % nr or nr
    chunk = max(1, NC // nr)

    def k_block(pc: ir.Value) -> None:
        kc = b.select(b.icmp_signed("<", b.sub(const(k), pc), const(kc_step)),
                      b.sub(const(k), pc), const(kc_step))
        first = b.icmp_signed("==", pc, const(0))
        last = b.icmp_signed(">=", b.add(pc, const(kc_step)), const(k))

        def call(rows: int, i: ir.Value, panel: ir.Value | int, count: int, tail: int) -> None:
            panel = const(panel) if isinstance(panel, int) else panel
            col = b.mul(panel, const(nr))
            args = [b.gep(a, [b.add(b.mul(i, const(lda)), pc)]),
                    b.gep(bp, [b.add(b.mul(panel, const(k * nr)), b.mul(pc, const(nr)))]),
                    b.gep(c, [b.add(b.mul(i, const(ldc)), col)]), kc, i, col, first, last,
                    const(lda), const(ldc), const(k * nr)]
            b.call(tile(rows, count, tail), [*args, *eargs])

        def strip(rows: int, i: ir.Value, lo: ir.Value, count: int, at_end: bool) -> None:
            """``count`` panels from panel ``lo`` of rows [i, i + rows): groups of full
            panels, then the rest (``at_end``: the chunk ends at the tail panel)."""
            per = _panels_per_tile(rows, bl)
            full = count - (at_end and tail < nr)
            groups = full // per
            if groups == 1:
                call(rows, i, lo, per, nr)
            elif groups > 1:
                with for_range(b, groups) as t:
                    call(rows, i, b.add(lo, b.mul(t, const(per))), per, nr)
            if groups * per < count:
                call(rows, i, b.add(lo, const(groups * per)), count - groups * per,
                     tail if at_end else nr)

        def column_chunk(lo: ir.Value, count: int, at_end: bool) -> None:
            if m >= mr:
                with for_range(b, m // mr * mr, step=mr) as i:
                    strip(mr, i, lo, count, at_end)
            if m % mr:
                strip(m % mr, const(m // mr * mr), lo, count, at_end)

        # every chunk but the last is the same code: a run-time loop, so a GEMM of very many
        # columns (a Winograd transform's) stays small
        before = _ceil_div(panels, chunk) - 1
        if before == 1:
            column_chunk(const(0), chunk, False)
        elif before > 1:
            with for_range(b, before) as j:
                column_chunk(b.mul(j, const(chunk)), chunk, False)
        column_chunk(const(before * chunk), panels - before * chunk, True)

    if blocks == 1:
        k_block(const(0))
    else:
        with for_range(b, k, step=kc_step) as pc:
            k_block(pc)


def emit_pack_b(module: ir.Module, name: str, *, k: int, n: int, ldb: int,
                transposed: bool = False) -> ir.Function:
    """Run-time packing of a non-constant right-hand side: ``void name(float* B, float*
    Bpacked)`` writes the layout of pack_b for the [k, n] matrix B (row stride ldb). With
    ``transposed``, B is stored as its [n, k] transpose (row stride ldb): the packing reads
    it column by column, so a matmul by a transposed operand (attention's Q @ K^T) needs no
    transpose kernel."""
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [F32P, F32P]), name)
    fn.attributes.add("nounwind")
    _no_alias(fn.args)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    src, dst = fn.args
    bl = blocking_of(module)
    lanes, nr, vec = bl.lanes, bl.nr, bl.vec

    def gather(p: ir.Value, first: ir.Value, valid: int) -> ir.Value:
        """B[p, first:first + valid] of the transposed source, zero padded to a vector."""
        value = ir.Constant(vec, None)
        for lane in range(valid):
            at = b.add(b.mul(b.add(first, const(lane)), const(ldb)), p)
            value = b.insert_element(value, b.load(b.gep(src, [at]), align=4),
                                     ir.Constant(I32, lane))
        return value

    def copy_panel(j: ir.Value, width: int) -> None:
        with for_range(b, k) as p:
            for v in range(bl.v):
                valid = min(lanes, width - v * lanes)
                first = b.add(b.mul(j, const(nr)), const(v * lanes))
                at = b.add(b.mul(p, const(ldb)), first)
                if valid <= 0:
                    value = ir.Constant(vec, None)
                elif transposed:
                    value = gather(p, first, valid)
                else:
                    value = _load(b, _vector_at(b, src, at), _mask(b, valid))
                out = b.add(b.mul(b.add(b.mul(j, const(k)), p), const(nr)), const(v * lanes))
                b.store(value, _vector_at(b, dst, out), align=4)

    if n // nr:
        with for_range(b, n // nr) as j:
            copy_panel(j, nr)
    if n % nr:
        copy_panel(const(n // nr), n % nr)
    b.ret_void()
    return fn
