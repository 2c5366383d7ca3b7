"""The FMA peak of this core as measured today: a JIT-compiled loop of independent vector
FMAs (enough chains to hide the latency), timed like the kernels are.

    python -m sw2c.benchmarks.fma_peak [--seconds 2]

``sw2c bench --per-kernel`` and the zoo table divide by the nominal peak (2 x 512-bit FMA per
cycle at the nominal clock); on a shared machine that runs slower than nominal, this measured
figure is the one to compare a kernel's GFLOP/s with.
"""

from __future__ import annotations

import argparse
import ctypes
import time

from llvmlite import ir

from ..backends.cpu.blocking import blocking
from ..backends.cpu.llvm import F32, I64, intrinsic, jit, new_module
from ..backends.cpu.loops import for_range

CHAINS = 16  # independent accumulators: 2 pipes x 4-cycle latency, twice over


def _kernel() -> tuple[object, int]:
    """``void fma_loop(i64 n, float* out)``: n x CHAINS vector FMAs; (engine, lanes)."""
    lanes = blocking().lanes
    vec = ir.VectorType(F32, lanes)
    module = new_module("fma_peak")
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [I64, vec.as_pointer()]), "fma_loop")
    b = ir.IRBuilder(fn.append_basic_block())
    n, out = fn.args
    fma = intrinsic(module, "llvm.fma", [vec], vec, [vec] * 3)
    accs = [b.alloca(vec) for _ in range(CHAINS)]
    for i, a in enumerate(accs):
        b.store(ir.Constant(vec, [float(i)] * lanes), a)
    x = ir.Constant(vec, [0.999] * lanes)
    y = ir.Constant(vec, [1e-3] * lanes)
    with for_range(b, n):
        for a in accs:
            b.store(b.call(fma, [b.load(a), x, y]), a)
    total = b.load(accs[0])
    for a in accs[1:]:
        total = b.fadd(total, b.load(a))
    b.store(total, out, align=4)  # a ctypes array: float alignment only
    b.ret_void()
    return jit(module), lanes


def measure(seconds: float = 2.0) -> float:
    """GFLOP/s of one thread running vector FMAs (2 flops per lane), best of repeated runs."""
    engine, lanes = _kernel()
    fn = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_void_p)(
        engine.get_function_address("fma_loop"))
    out = (ctypes.c_float * lanes)()
    n = 1 << 20
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t = time.perf_counter()
        fn(n, ctypes.addressof(out))
        dt = time.perf_counter() - t
        best = max(best, n * CHAINS * lanes * 2 / dt / 1e9)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=2.0)
    args = p.parse_args()
    print(f"measured FMA peak: {measure(args.seconds):.1f} GFLOP/s on one thread "
          f"({blocking().lanes} fp32 lanes)")


if __name__ == "__main__":
    main()
