"""The register-blocked GEMM generator (backends/cpu/gemm.py) against numpy in float64: every
remainder of rows, columns and K blocks, strided and batched operands, run-time packing,
epilogues with masked loads, and the 8- and 4-lane code paths of AVX2 and SSE hosts."""

from __future__ import annotations

import ctypes
import dataclasses
from dataclasses import dataclass, field

import numpy as np
import pytest
from llvmlite import ir
from sw2c.backends.cpu import gemm
from sw2c.backends.cpu.blocking import blocking, blocking_of
from sw2c.backends.cpu.llvm import F32P, I32, I64, intrinsic, jit, new_module
from sw2c.runtime.cross.targets import Target, host, lookup

SENTINEL = np.float32(12345.0)
RTOL = 1e-4  # relative to sum_p |A[i, p]| |B[p, j]|


def _vector_load(b: ir.IRBuilder, ptr: ir.Value, like: ir.Value,
                 mask: ir.Value | None) -> ir.Value:
    vptr = b.bitcast(ptr, like.type.as_pointer())
    if mask is None:
        return b.load(vptr, align=4)
    fn = intrinsic(b.module, "llvm.masked.load", [like.type, vptr.type], like.type,
                   [vptr.type, I32, mask.type, like.type])
    return b.call(fn, [vptr, ir.Constant(I32, 4), mask, ir.Constant(like.type, None)])


class BiasRelu:
    """max(acc + bias[col], 0): one per-column operand."""

    def arg_types(self) -> list[ir.Type]:
        return [F32P]

    def emit(self, b, args, acc, row, col, lanes, mask):
        bias = _vector_load(b, b.gep(args[0], [col]), acc, mask)
        x = b.fadd(acc, bias)
        zero = ir.Constant(acc.type, None)
        return b.select(b.fcmp_ordered(">", x, zero), x, zero)

    def reference(self, acc: np.ndarray, operands: list[np.ndarray], g: int) -> np.ndarray:
        return np.maximum(acc + operands[0][: acc.shape[1]], 0)


class Residual:
    """acc + scale * residual[row, col] (row stride ``ld``): one full-tensor operand, read with
    masked loads on the last panel."""

    def __init__(self, ld: int) -> None:
        self.ld = ld

    def arg_types(self) -> list[ir.Type]:
        return [F32P]

    def emit(self, b, args, acc, row, col, lanes, mask):
        at = b.add(b.mul(row, ir.Constant(I64, self.ld)), col)
        res = _vector_load(b, b.gep(args[0], [at]), acc, mask)
        half = ir.Constant(acc.type, [ir.Constant(ir.FloatType(), 0.5)] * lanes)
        return b.fadd(acc, b.fmul(res, half))

    def reference(self, acc: np.ndarray, operands: list[np.ndarray], g: int) -> np.ndarray:
        m, n = acc.shape
        return acc + 0.5 * operands[0][: m * self.ld].reshape(m, self.ld)[:, :n]


@dataclass
class Case:
    m: int
    k: int
    n: int
    lda: int = 0  # 0: dense (k)
    ldc: int = 0  # 0: dense (n)
    batch: int = 1
    a_batch_stride: int = 0
    c_batch_stride: int = 0
    b_per_batch: bool = False
    epilogue: object = None
    name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        self.lda = self.lda or self.k
        self.ldc = self.ldc or self.n

    def __str__(self) -> str:
        strided = (self.lda, self.ldc) != (self.k, self.n)
        extra = f" lda={self.lda} ldc={self.ldc}" if strided else ""
        if self.batch > 1:
            extra += (f" batch={self.batch} sa={self.a_batch_stride} sc={self.c_batch_stride}"
                      f" bpb={self.b_per_batch}")
        if self.epilogue is not None:
            extra += f" {type(self.epilogue).__name__}"
        return f"{self.m}x{self.k}x{self.n}{extra}"


MS = [1, 2, 3, 7, 8, 13, 14, 15, 16, 17, 28, 31, 32, 33, 65, 100]
KS = [1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 31, 32, 33, 65, 100, 257, 600]
NS = [1, 2, 3, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 129, 200]

CASES = (
    # every listed m, k and n, each paired with a spread of the others
    [Case(MS[i % len(MS)], KS[5 * i % len(KS)], NS[(11 * i + 3) % len(NS)]) for i in range(17)]
    + [Case(m, k, n) for m in (1, 3, 14, 17) for k in (5, 300) for n in (7, 32, 65)]
    + [Case(1, 64, 128), Case(1, 128, 64), Case(1, 2048, 40), Case(14, 256, 32),
       Case(15, 513, 65), Case(29, 600, 1100), Case(42, 33, 97)]
    # strided rows: NaN in A's padding, sentinels in C's
    + [Case(7, 5, 3, lda=9, ldc=4), Case(20, 30, 40, lda=35, ldc=50),
       Case(15, 300, 33, lda=301, ldc=64), Case(1, 64, 17, lda=70, ldc=20)]
    # batches: shared or per-batch B, shared A (stride 0), gaps between batches
    + [Case(5, 7, 9, batch=3, a_batch_stride=35, c_batch_stride=45),
       Case(5, 7, 9, batch=3, a_batch_stride=40, c_batch_stride=50, b_per_batch=True),
       Case(17, 40, 33, lda=41, ldc=35, batch=2, a_batch_stride=0, c_batch_stride=17 * 35 + 3,
            b_per_batch=True),
       Case(1, 300, 64, batch=4, a_batch_stride=300, c_batch_stride=64, b_per_batch=True)]
    # epilogues, applied once after the last K block
    + [Case(m, k, n, epilogue=BiasRelu()) for m, k, n in ((1, 8, 5), (15, 33, 65), (30, 600, 47))]
    + [Case(m, k, n, ldc=ldc, epilogue=Residual(ld))
       for m, k, n, ldc, ld in ((1, 64, 20, 0, 20), (16, 300, 33, 40, 37), (3, 7, 129, 0, 130))]
    + [Case(4, 20, 18, batch=2, a_batch_stride=80, c_batch_stride=72, b_per_batch=True,
            epilogue=BiasRelu())]
)

LANE_CASES = [Case(m, k, n) for m, k, n in ((1, 64, 24), (7, 300, 9), (9, 17, 33), (25, 33, 100))] \
    + [Case(6, 40, 21, epilogue=BiasRelu()), Case(13, 300, 11, ldc=12, epilogue=Residual(11)),
       Case(3, 9, 17, lda=10, ldc=19, batch=2, a_batch_stride=40, c_batch_stride=60,
            b_per_batch=True)]

PACK_SHAPES = [(1, 1, 1), (3, 17, 17), (5, 32, 40), (9, 33, 33), (64, 100, 100), (7, 65, 80)]


def narrow_target(lanes: int) -> Target:
    """This machine described with ``lanes``-wide vectors (16 registers), as an AVX2 (8) or
    SSE (4) host is: the generated code still runs here."""
    return dataclasses.replace(host(), name=f"host{lanes}", family="x86-test",
                               vector_lanes=lanes, vector_registers=16)


class Compiled:
    """All cases' GEMMs in one module, compiled once (compile time dominates this test)."""

    def __init__(self, cases: list[Case], target: Target | None = None) -> None:
        self.cases = cases
        module = new_module("test_gemm", target)
        self.nr = blocking_of(module).nr
        g = gemm
        for i, c in enumerate(cases):
            g.emit_gemm(module, f"gemm{i}", m=c.m, k=c.k, n=c.n, lda=c.lda, ldc=c.ldc,
                        batch=c.batch, a_batch_stride=c.a_batch_stride,
                        c_batch_stride=c.c_batch_stride, b_per_batch=c.b_per_batch,
                        epilogue=c.epilogue)
        for k, n, ldb in PACK_SHAPES:
            g.emit_pack_b(module, f"pack_{k}_{n}_{ldb}", k=k, n=n, ldb=ldb)
        self.engine = jit(module)

    def function(self, name: str, n_args: int):
        proto = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * n_args)
        return proto(self.engine.get_function_address(name))

    def check(self, i: int) -> None:
        c, g, nr = self.cases[i], gemm, self.nr
        rng = np.random.default_rng(i)
        a_groups = 1 if c.a_batch_stride == 0 else c.batch
        a_buf = np.full((a_groups - 1) * c.a_batch_stride + c.m * c.lda, np.nan, np.float32)
        a = [np.lib.stride_tricks.as_strided(a_buf[t * c.a_batch_stride:], (c.m, c.k),
                                             (4 * c.lda, 4), writeable=True)
             for t in range(a_groups)]
        for x in a:
            x[...] = rng.standard_normal(x.shape)
        bs = rng.standard_normal((c.batch if c.b_per_batch else 1, c.k, c.n)).astype(np.float32)
        packed = g.pack_b(bs, nr)
        assert packed.size == bs.shape[0] * g.packed_b_floats(c.k, c.n, nr)
        c_buf = np.full((c.batch - 1) * c.c_batch_stride + (c.m + 1) * c.ldc, SENTINEL,
                        np.float32)
        operands = [rng.standard_normal(4096).astype(np.float32) for _ in
                    (c.epilogue.arg_types() if c.epilogue else [])]
        fn = self.function(f"gemm{i}", 3 + len(operands))
        fn(a_buf.ctypes.data, packed.ctypes.data, c_buf.ctypes.data,
           *[o.ctypes.data for o in operands])
        written = np.zeros(c_buf.shape, bool)
        for t in range(c.batch):
            at = t * c.c_batch_stride + np.arange(c.m)[:, None] * c.ldc + np.arange(c.n)
            written[at] = True
            x, y = a[t % a_groups].astype(np.float64), bs[t % bs.shape[0]].astype(np.float64)
            expect, scale = x @ y, np.abs(x) @ np.abs(y)
            if c.epilogue is not None:
                expect = c.epilogue.reference(expect, operands, t)
                scale += np.abs(expect) + 1
            err = np.abs(c_buf[at] - expect) / np.maximum(scale, 1e-30)
            assert err.max() <= RTOL, f"{c} batch {t}: max relative error {err.max():.2e}"
        assert (c_buf[~written] == SENTINEL).all(), f"{c}: wrote outside C[:m, :n]"


@pytest.fixture(scope="module")
def native() -> Compiled:
    return Compiled(CASES)


@pytest.fixture(scope="module", params=[8, 4], ids=["8lanes", "4lanes"])
def narrow(request) -> Compiled:
    return Compiled(LANE_CASES, narrow_target(request.param))


@pytest.mark.parametrize("i", range(len(CASES)), ids=[str(c) for c in CASES])
def test_gemm(native: Compiled, i: int) -> None:
    native.check(i)


@pytest.mark.parametrize("i", range(len(LANE_CASES)), ids=[str(c) for c in LANE_CASES])
def test_gemm_narrow_vectors(narrow: Compiled, i: int) -> None:
    narrow.check(i)


def _check_pack(compiled: Compiled) -> None:
    g, nr = gemm, compiled.nr
    rng = np.random.default_rng(1)
    for k, n, ldb in PACK_SHAPES:
        src = np.full((k + 1) * ldb, np.nan, np.float32)  # NaN past each row's n columns
        view = src[: k * ldb].reshape(k, ldb)[:, :n]
        view[...] = rng.standard_normal((k, n))
        out = np.full(g.packed_b_floats(k, n, nr) + 8, SENTINEL, np.float32)
        compiled.function(f"pack_{k}_{n}_{ldb}", 2)(src.ctypes.data, out.ctypes.data)
        expect = g.pack_b(np.ascontiguousarray(view), nr)
        assert np.array_equal(out[: expect.size].view(np.uint32), expect.view(np.uint32)), \
            f"pack k={k} n={n} ldb={ldb}"
        assert (out[expect.size:] == SENTINEL).all()


def test_emit_pack_b_matches_pack_b(native: Compiled) -> None:
    _check_pack(native)


def test_emit_pack_b_narrow_vectors(narrow: Compiled) -> None:
    _check_pack(narrow)


def test_pack_b_layout() -> None:
    """[panels][k][NR], zero padded; a batch is consecutive packed matrices."""
    nr = blocking().nr
    b = np.arange(3 * (nr + 5), dtype=np.float32).reshape(3, nr + 5)
    p = gemm.pack_b(b, nr).reshape(2, 3, nr)
    assert np.array_equal(p[0], b[:, :nr])
    assert np.array_equal(p[1, :, :5], b[:, nr:]) and not p[1, :, 5:].any()
    both = gemm.pack_b(np.stack([b, 2 * b]), nr)
    assert both.size == 2 * gemm.packed_b_floats(3, nr + 5, nr)
    assert np.array_equal(both[both.size // 2:], 2 * gemm.pack_b(b, nr))
    assert nr % blocking().lanes == 0


def test_blocking_follows_the_target() -> None:
    """Panels are as wide as the target's vectors allow, whatever the host: a Cortex-M4's
    scalar FPU packs 4 columns, wasm32's 128-bit SIMD 8, an AVX2 host 16."""
    assert blocking(lookup("cortex-m4")).nr == 4
    assert blocking(lookup("wasm32")).nr == 8
    assert blocking(narrow_target(8)).nr == 16
    assert blocking().nr == blocking(host()).nr


def test_b_prefetch_only_where_caches_are() -> None:
    """The micro-kernel prefetches B's rows ahead on a host or application core, a line at a
    time (one per vector on AVX-512, one per two on AVX2); microcontrollers and wasm get none."""
    def prefetches(target: Target | None) -> int:
        module = new_module("pf", target)
        gemm.emit_gemm(module, "g", m=6, k=8, n=blocking(target).nr, lda=8, ldc=64)
        return str(module).count("call void @\"llvm.prefetch")

    # a 6 x 64 tile's row is 4 lines on AVX-512; a 6 x 16 tile's (two AVX2 vectors) is one
    assert prefetches(None) == 4 * prefetches(narrow_target(8)) > 0
    assert prefetches(lookup("cortex-m4")) == prefetches(lookup("wasm32")) == 0


def test_empty_shape_rejected() -> None:
    with pytest.raises(ValueError):
        gemm.emit_gemm(new_module("e"), "g", m=0, k=4, n=4, lda=4, ldc=4)
