"""A small constant matrix times a run-time one, C = epilogue(K @ X), as unrolled vector code.

Row r of C is the sum of K[r, i] * X[i] over the nonzero coefficients of K's row r: vectors
along X's columns, each row of X loaded once per column vector, the coefficients immediates
(+1 and -1 an add or a subtract, 0 nothing). Winograd's transforms are such products:
kron(B^T, B^T) of F(4,3) is 36 x 36 with 484 of its 1296 entries nonzero, most of them small
integers, and the register-blocked GEMM would pack X at run time, then multiply by every
zero. The fuse pass picks these kernels (kind "lincomb") and puts K into the body as a CONST.

A K that is a Kronecker product P (x) Q (Winograd's kron(B^T, B^T) and kron(A^T, A^T)) runs
as two stages, (I (x) Q)(P (x) I): 264 terms instead of 484 for F(4,3)'s input transform,
180 instead of 324 for its output, and about half the code for LLVM to compile.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir

from ...ir import Graph, Node, Op
from .blocking import blocking_of
from .expr import BodyEmitter, keeps_last_axis, store, unravel
from .loops import const, for_range
from .math import _fma, splat
from .matmul import ChainEpilogue, Matmul
from .team import Team


def emit_lincomb(b: ir.IRBuilder, node: Node, ptrs: dict[str, ir.Value], out: ir.Value,
                 scratch: ir.Value, team: Team) -> None:
    """This chunk's share of C's column runs (``_source``), a vector of columns at a time."""
    body: Graph = node.attrs["body"]
    mt = Matmul.of(body)
    coeffs = np.asarray(body.producer[mt.mm.inputs[0]].attrs["value"], np.float32)  # [m, k]
    stages = factor(coeffs)
    used = sorted({int(i) for i in np.flatnonzero(stages[0].any(axis=0))})  # X's rows read
    m, n = coeffs.shape[0], mt.mm.type.shape[-1]
    source, run, lanes = _source(body, mt.mm.inputs[1], blocking_of(b.module).lanes)
    shape = body.type_of(source).shape
    epilogue = ChainEpilogue(body, mt)
    extra = [ptrs[i] for i in epilogue.operands]

    def columns(first: ir.Value, starts: dict[int, list[ir.Value]], c0: ir.Value,
                width: int) -> None:
        """C[:, first + c0:first + c0 + width], X's rows there computed once each. X[i, first]
        is ``source`` at ``starts[i]``; the run's later columns move its last coordinate."""
        x = BodyEmitter(b, body, ptrs, lanes=width)
        loaded = x.values([(source, [*at[:-1], b.add(at[-1], c0)]) for at in starts.values()])
        rows = dict(zip(starts, loaded))
        for stage in stages:
            rows = {r: _combine(b, row, rows, x) for r, row in enumerate(stage)}
        col = b.add(first, c0)
        for r in range(m):
            store(b, out, [const(r), col], (m, n),
                  epilogue.emit(b, extra, rows[r], const(r), col, width, None))

    full, rest = divmod(run, lanes)
    lo, hi = team.bounds(b, n // run)
    with for_range(b, hi, start=lo) as j:
        first = b.mul(j, const(run))
        starts = _starts(b, first, used, shape, n)
        if full:
            with for_range(b, full) as v:
                columns(first, starts, b.mul(v, const(lanes)), lanes)
        if rest:
            columns(first, starts, const(full * lanes), rest)


def _starts(b: ir.IRBuilder, first: ir.Value, rows: list[int], shape: tuple[int, ...],
            n: int) -> dict[int, list[ir.Value]]:
    """Where X[i, first] is in ``source`` (of ``shape``) for each row i: index math once per
    run, not per vector. Where X's rows are leading axes of ``source`` and its columns the
    others (Winograd's taps and tiles), a row's coordinates are constants."""
    sizes = np.cumprod((1, *shape))
    if n in sizes[-1] // sizes:  # source's axes from some p on hold exactly the columns
        p = int(np.flatnonzero(sizes[-1] // sizes == n)[0])
        cols = unravel(b, first, shape[p:])
        return {i: [*(const(int(c)) for c in np.unravel_index(i, shape[:p])), *cols]
                for i in rows}
    return {i: unravel(b, b.add(first, const(i * n)), shape) for i in rows}


def _source(body: Graph, x: str, lanes: int) -> tuple[str, int, int]:
    """(what X is read from, columns per run, lanes): X itself, or the tensor a reshape makes
    X of; X's columns come in runs whose elements are consecutive along that tensor's last
    axis, each read as vectors of up to ``lanes``, or one column at a time where the values
    it is computed from move that axis (a transpose of it)."""
    n = body.type_of(x).shape[-1]
    node = body.producer.get(x)
    if node is None or node.op is not Op.RESHAPE:
        return x, n, lanes if keeps_last_axis(body, x) else 1
    source = node.inputs[0]
    run = math.gcd(n, body.type_of(source).shape[-1])
    return source, run, lanes if keeps_last_axis(body, source) else 1


def _combine(b: ir.IRBuilder, row: np.ndarray, xs: dict[int, ir.Value],
             emitter: BodyEmitter) -> ir.Value:
    """sum(row[i] * xs[i]) over the nonzero coefficients of ``row`` (0 if there are none)."""
    acc = None
    for i in map(int, np.flatnonzero(row)):
        acc = _term(b, acc, float(row[i]), xs[i])
    return emitter.constant(0.0) if acc is None else acc


def factor(k: np.ndarray) -> list[np.ndarray]:
    """Stages whose product is exactly K, first applied first: [(P (x) I), (I (x) Q)] where K
    is a Kronecker product P (x) Q and that costs fewer nonzero terms, else [K]."""
    m, n = k.shape
    best, terms = [k], np.count_nonzero(k)
    for m1 in (d for d in range(1, m + 1) if m % d == 0):
        for k1 in (d for d in range(1, n + 1) if n % d == 0):
            pq = None if (m1, k1) in ((1, 1), (m, n)) else _kron_factors(k, m1, k1)
            if pq is None:
                continue
            p, q = pq
            stages = [np.kron(p, np.eye(n // k1, dtype=np.float32)),
                      np.kron(np.eye(m1, dtype=np.float32), q)]
            if sum(map(np.count_nonzero, stages)) < terms:
                best, terms = stages, sum(map(np.count_nonzero, stages))
    return best


def _kron_factors(k: np.ndarray, m1: int, k1: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(P [m1, k1], Q) with P (x) Q == K exactly in float32, if there are such."""
    m2, k2 = k.shape[0] // m1, k.shape[1] // k1
    blocks = k.reshape(m1, m2, k1, k2).transpose(0, 2, 1, 3)  # [m1, k1, m2, k2]: K's blocks
    a, c = np.unravel_index(np.abs(blocks).sum(axis=(2, 3)).argmax(), (m1, k1))
    block = blocks[a, c]
    nonzero = np.abs(block)[block != 0]
    if nonzero.size == 0:
        return None
    # Q is the block scaled to a smallest entry of +-1, so P is read off exactly at that entry
    r, s = np.argwhere(np.abs(block) == nonzero.min())[0]
    q = (block / np.abs(block[r, s])).astype(np.float32)
    p = (blocks[:, :, r, s] / q[r, s]).astype(np.float32)
    exact = np.kron(p.astype(np.float64), q.astype(np.float64)) == k.astype(np.float64)
    return (p, q) if exact.all() else None


def _term(b: ir.IRBuilder, acc: ir.Value | None, c: float, x: ir.Value) -> ir.Value:
    """acc + c * x (c * x when acc is None), an add or a subtract when c is +-1."""
    if acc is None:
        return x if c == 1 else b.fneg(x) if c == -1 else b.fmul(splat(b, x, c), x)
    if c == 1:
        return b.fadd(acc, x)
    if c == -1:
        return b.fsub(acc, x)
    return _fma(b, splat(b, x, c), x, acc)
