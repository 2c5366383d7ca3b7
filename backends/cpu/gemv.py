"""A single-column GEMM (C = epilogue(A @ b), b one packed column): vectorized along the
reduction instead of along the columns.

The register-blocked GEMM (gemm.py) spends a vector lane per column, so with one column it
uses 1 of LANES lanes (a conv to one channel, e.g. an image decoder's last layer). Here each
row is a dot product of LANES-wide chunks of A's row with the column, kept in registers for
the whole call; LANES rows' dot products are summed into one vector of LANES row results by a
shuffle tree (each level halves the partial sums of two vectors and interleaves them), which
the epilogue sees as LANES consecutive columns of a one-row C: C[m, 1] has the memory of
C[1, m], so the caller hands in an epilogue with rows and columns swapped.
"""

from __future__ import annotations

from llvmlite import ir

from .gemm import LANES, NR, VEC, Epilogue, _load, _mask, _no_alias, _store, _vector_at
from .llvm import F32P, I32, intrinsic
from .loops import const, for_range

MAX_CHUNKS = 8  # LANES-wide chunks of a row kept in registers (k <= 128 on AVX-512)


def gemv_fits(k: int) -> bool:
    """Whether emit_gemv takes a reduction of length ``k``."""
    return k <= MAX_CHUNKS * LANES


def _fold(b: ir.IRBuilder, x: ir.Value, y: ir.Value, width: int) -> ir.Value:
    """x and y hold LANES / width groups of ``width`` partial sums each; the result holds
    x's groups then y's, each summed down to width / 2 lanes."""
    groups, half = LANES // width, width // 2
    lo = [g * width + t for g in range(groups) for t in range(half)]
    lo += [LANES + i for i in lo]
    hi = [i + half for i in lo]
    lo_v = b.shuffle_vector(x, y, ir.Constant(ir.VectorType(I32, LANES), lo))
    hi_v = b.shuffle_vector(x, y, ir.Constant(ir.VectorType(I32, LANES), hi))
    return b.fadd(lo_v, hi_v)


def emit_gemv(module: ir.Module, name: str, *, m: int, k: int, lda: int,
              epilogue: Epilogue | None) -> ir.Function:
    """Define ``void name(float* A, float* Bpacked, float* C, <epilogue args>)`` with the
    signature of gemm.emit_gemm for n = 1 and ldc = 1: C[i] = epilogue(sum_p A[i * lda + p] *
    B[p]) for i < m, B packed as gemm.pack_b lays out one column. The epilogue is called with
    row 0 and column i for LANES consecutive rows i (see the module docstring)."""
    if not gemv_fits(k) or m < 1:
        raise ValueError(f"GEMV m={m} k={k} out of range")
    extra = epilogue.arg_types() if epilogue else []
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [F32P, F32P, F32P, *extra]), name)
    fn.attributes.add("nounwind")
    _no_alias(fn.args[:3])
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    a, bp, c, *eargs = fn.args
    chunks = -(-k // LANES)
    tails = [_mask(min(LANES, k - j * LANES)) for j in range(chunks)]
    w = []  # the column, gathered once from its packed panel (stride NR)
    for j in range(chunks):
        v = ir.Constant(VEC, None)
        for t in range(min(LANES, k - j * LANES)):
            x = b.load(b.gep(bp, [const((j * LANES + t) * NR)]), align=4)
            v = b.insert_element(v, x, ir.Constant(I32, t))
        w.append(v)
    fma = intrinsic(module, "llvm.fma", [VEC], VEC, [VEC] * 3)

    def row_sums(first: ir.Value, rows: int) -> ir.Value:
        """LANES lanes: the dot products of rows first .. first + rows (zeros beyond)."""
        parts = []
        for r in range(LANES):
            if r >= rows:
                parts.append(ir.Constant(VEC, None))
                continue
            base = b.mul(b.add(first, const(r)), const(lda))
            acc = ir.Constant(VEC, None)
            for j in range(chunks):
                x = _load(b, _vector_at(b, a, b.add(base, const(j * LANES))), tails[j])
                acc = b.call(fma, [x, w[j], acc])
            parts.append(acc)
        width = LANES
        while len(parts) > 1:
            parts = [_fold(b, parts[i], parts[i + 1], width) for i in range(0, len(parts), 2)]
            width //= 2
        return parts[0]

    def block(first: ir.Value, rows: int) -> None:
        value, mask = row_sums(first, rows), _mask(rows)
        if epilogue is not None:
            value = epilogue.emit(b, eargs, value, const(0), first, LANES, mask)
        _store(b, value, _vector_at(b, c, first), mask)

    if m >= LANES:
        with for_range(b, m // LANES * LANES, step=LANES) as i:
            block(i, LANES)
    if m % LANES:
        block(const(m // LANES * LANES), m % LANES)
    b.ret_void()
    return fn
