"""A single-column GEMM (C = epilogue(A @ b), b one packed column): vectorized along the
reduction instead of along the columns.

The register-blocked GEMM (gemm.py) spends a vector lane per column, so with one column it
uses 1 of LANES lanes (a conv to one channel, e.g. an image decoder's last layer). Here each
row is a dot product of LANES-wide chunks of A's row with the column, kept in registers for
the whole call; LANES rows' dot products are summed into one vector of LANES row results by a
shuffle tree (each level halves the partial sums of two vectors and interleaves them), which
the epilogue sees as LANES consecutive columns of a one-row C: C[m, 1] has the memory of
C[1, m], so the caller hands in an epilogue with rows and columns swapped.

A few columns (n = 2, 4, 8 with LANES = 16: a conv to 8 channels) go the same way: LANES / n
rows x n columns of dot products fold into one vector that is C's rows in row-major order;
the column, copied once per call into a stack buffer column by column, is read from L1.
"""

from __future__ import annotations

from llvmlite import ir

from .blocking import blocking_of
from .gemm import (
    Epilogue,
    _carried_loop,
    _load,
    _mask,
    _store,
    _vector_at,
    gemm_function,
)
from .llvm import F32, F32P, I32, intrinsic
from .loops import const, for_range

MAX_CHUNKS = 8  # LANES-wide chunks of a row kept in registers (k <= 128 on AVX-512)


def gemv_fits(k: int, n: int, lanes: int) -> bool:
    """Whether emit_gemv (n == 1) or emit_narrow takes a [k, n] right-hand side, on vectors
    of ``lanes``."""
    if n == 1:
        return k <= MAX_CHUNKS * lanes
    return 2 <= n <= lanes // 2 and lanes % n == 0 and k >= lanes


def _fold(b: ir.IRBuilder, x: ir.Value, y: ir.Value, width: int) -> ir.Value:
    """x and y hold LANES / width groups of ``width`` partial sums each; the result holds
    x's groups then y's, each summed down to width / 2 lanes."""
    lanes = x.type.count
    groups, half = lanes // width, width // 2
    lo = [g * width + t for g in range(groups) for t in range(half)]
    lo += [lanes + i for i in lo]
    hi = [i + half for i in lo]
    lo_v = b.shuffle_vector(x, y, ir.Constant(ir.VectorType(I32, lanes), lo))
    hi_v = b.shuffle_vector(x, y, ir.Constant(ir.VectorType(I32, lanes), hi))
    return b.fadd(lo_v, hi_v)


def emit_gemv(module: ir.Module, name: str, *, m: int, k: int, lda: int,
              epilogue: Epilogue | None) -> ir.Function:
    """Define ``void name(float* A, float* Bpacked, float* C, <epilogue args>)`` with the
    signature of gemm.emit_gemm for n = 1 and ldc = 1: C[i] = epilogue(sum_p A[i * lda + p] *
    B[p]) for i < m, B packed as gemm.pack_b lays out one column. The epilogue is called with
    row 0 and column i for LANES consecutive rows i (see the module docstring)."""
    bl = blocking_of(module)
    lanes, nr, vec = bl.lanes, bl.nr, bl.vec
    if not gemv_fits(k, 1, lanes) or m < 1:
        raise ValueError(f"GEMV m={m} k={k} out of range")
    fn, b = gemm_function(module, name, epilogue)
    a, bp, c, *eargs = fn.args
    chunks = -(-k // lanes)
    tails = [_mask(b, min(lanes, k - j * lanes)) for j in range(chunks)]
    w = []  # the column, gathered once from its packed panel (stride NR)
    for j in range(chunks):
        v = ir.Constant(vec, None)
        for t in range(min(lanes, k - j * lanes)):
            x = b.load(b.gep(bp, [const((j * lanes + t) * nr)]), align=4)
            v = b.insert_element(v, x, ir.Constant(I32, t))
        w.append(v)
    fma = intrinsic(module, "llvm.fma", [vec], vec, [vec] * 3)

    def row_sums(first: ir.Value, rows: int) -> ir.Value:
        """LANES lanes: the dot products of rows first .. first + rows (zeros beyond)."""
        parts = []
        for r in range(lanes):
            if r >= rows:
                parts.append(ir.Constant(vec, None))
                continue
            base = b.mul(b.add(first, const(r)), const(lda))
            acc = ir.Constant(vec, None)
            for j in range(chunks):
                x = _load(b, _vector_at(b, a, b.add(base, const(j * lanes))), tails[j])
                acc = b.call(fma, [x, w[j], acc])
            parts.append(acc)
        width = lanes
        while len(parts) > 1:
            parts = [_fold(b, parts[i], parts[i + 1], width) for i in range(0, len(parts), 2)]
            width //= 2
        return parts[0]

    def block(first: ir.Value, rows: int) -> None:
        value, mask = row_sums(first, rows), _mask(b, rows)
        if epilogue is not None:
            value = epilogue.emit(b, eargs, value, const(0), first, lanes, mask)
        _store(b, value, _vector_at(b, c, first), mask)

    _in_blocks(b, m, lanes, block)
    b.ret_void()
    return fn


def emit_narrow(module: ir.Module, name: str, *, m: int, k: int, n: int, lda: int, ldc: int,
                epilogue: Epilogue | None) -> ir.Function:
    """Define ``void name(float* A, float* Bpacked, float* C, <epilogue args>)`` with the
    signature of gemm.emit_gemm for 2 <= n <= LANES / 2, n dividing LANES: C[i, j] =
    epilogue(sum_p A[i * lda + p] * B[p, j]), B packed as gemm.pack_b lays it out. Every
    column of a row is summed in the same order (equal columns give equal results)."""
    bl = blocking_of(module)
    lanes, nr, vec = bl.lanes, bl.nr, bl.vec
    if not gemv_fits(k, n, lanes) or m < 1:
        raise ValueError(f"narrow GEMM m={m} k={k} n={n} out of range")
    fn, b = gemm_function(module, name, epilogue)
    a, bp, c, *eargs = fn.args
    chunks, full = -(-k // lanes), k // lanes
    per = lanes // n  # rows per block
    wbuf = b.alloca(ir.ArrayType(F32, n * chunks * lanes))
    wbuf.align = 64
    w = b.bitcast(wbuf, F32P)
    for col in range(n):  # zero the padded last chunk, then copy the column in
        b.store(ir.Constant(vec, None), _vector_at(b, w, (col * chunks + chunks - 1) * lanes),
                align=4)
    with for_range(b, n) as col, for_range(b, k) as p:
        x = b.load(b.gep(bp, [b.add(b.mul(p, const(nr)), col)]), align=4)
        b.store(x, b.gep(w, [b.add(b.mul(col, const(chunks * lanes)), p)]), align=4)
    fma = intrinsic(module, "llvm.fma", [vec], vec, [vec] * 3)
    tail = _mask(b, k - full * lanes) if k % lanes else None

    def step(first: ir.Value, rows: int, p: ir.Value, acc: list[ir.Value],
             mask: ir.Value | None) -> list[ir.Value]:
        """acc[r * n + j] += A[first + r, p:p + LANES] * B[p:p + LANES, j]."""
        ws = [b.load(_vector_at(b, w, b.add(p, const(j * chunks * lanes))), align=4)
              for j in range(n)]
        out = list(acc)
        for r in range(rows):
            at = b.add(b.mul(b.add(first, const(r)), const(lda)), p)
            x = _load(b, _vector_at(b, a, at), mask)
            for j in range(n):
                out[r * n + j] = b.call(fma, [x, ws[j], acc[r * n + j]])
        return out

    def block(first: ir.Value, rows: int) -> None:
        acc = [ir.Constant(vec, None)] * lanes
        if full:
            acc = _carried_loop(b, const(0), const(full * lanes), lanes, acc,
                                lambda p, cur: step(first, rows, p, cur, None))
        if tail is not None:
            acc = step(first, rows, const(full * lanes), acc, tail)
        width = lanes
        while len(acc) > 1:
            acc = [_fold(b, acc[i], acc[i + 1], width) for i in range(0, len(acc), 2)]
            width //= 2
        vec_n = ir.VectorType(F32, n)
        for r in range(rows):
            row = b.add(first, const(r))
            value = b.shuffle_vector(acc[0], acc[0], ir.Constant(
                ir.VectorType(I32, n), [r * n + j for j in range(n)]))
            if epilogue is not None:
                value = epilogue.emit(b, eargs, value, row, const(0), n, None)
            ptr = b.bitcast(b.gep(c, [b.mul(row, const(ldc))]), vec_n.as_pointer())
            b.store(value, ptr, align=4)

    _in_blocks(b, m, per, block)
    b.ret_void()
    return fn


def _in_blocks(b: ir.IRBuilder, m: int, per: int, block) -> None:
    """``block(first, rows)`` over rows [0, m): a loop of whole blocks of ``per``, then the
    remainder once."""
    if m >= per:
        with for_range(b, m // per * per, step=per) as i:
            block(i, per)
    if m % per:
        block(const(m // per * per), m % per)
