"""Single-thread GFLOP/s of the generated GEMM (backends/cpu/gemm.py) on ResNet-50-like shapes,
next to onnxruntime's MatMul (MLAS, B an initializer) and numpy (OpenBLAS), interleaved in one
process. A script, not a test: ``python benchmarks/gemm_bench.py [--seconds S]``.

The sw2c kernel is timed through a generated loop that calls it ``reps`` times, so the figures
are the kernel's own (ctypes costs ~1 us a call, more than a whole GEMV); onnxruntime's and
numpy's include their per-call overheads, which matter only for the tiny shapes. Times are the
CPU time of the calling thread (all three engines compute on it when single-threaded), so that
time slices taken by other processes on a shared machine do not count; medians of interleaved
blocks, so that slow drifts hit all engines alike.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy is imported: single-threaded BLAS

import argparse  # noqa: E402
import ctypes  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from llvmlite import ir  # noqa: E402
from sw2c.backends.cpu import gemm  # noqa: E402
from sw2c.backends.cpu.blocking import KC, NC, blocking  # noqa: E402
from sw2c.backends.cpu.llvm import F32P, I64, jit, new_module  # noqa: E402
from sw2c.backends.cpu.loops import for_range  # noqa: E402
from sw2c.benchmarks.harness import peak_gflops_per_core  # noqa: E402

SHAPES = [  # (M, K, N): ResNet-50 convolutions as im2col GEMMs, its classifier, MLP layers
    (12544, 147, 64), (3136, 576, 64), (3136, 64, 256), (784, 1152, 128), (196, 2304, 256),
    (49, 4608, 512), (49, 2048, 512), (49, 512, 2048), (1, 2048, 1000), (1, 64, 128),
    (1, 128, 64),
]


def sw2c_kernel(m: int, k: int, n: int) -> tuple[Callable[[np.ndarray, np.ndarray, np.ndarray,
                                                            int], None], float, object]:
    """(run(A, Bpacked, C, reps), CPU seconds to emit and compile, engine to keep alive)."""
    t0 = time.process_time()
    module = new_module("gemm_bench")
    fn = gemm.emit_gemm(module, "gemm", m=m, k=k, n=n, lda=k, ldc=n)
    loop = ir.Function(module, ir.FunctionType(ir.VoidType(), [F32P, F32P, F32P, I64]), "reps")
    b = ir.IRBuilder(loop.append_basic_block("entry"))
    with for_range(b, loop.args[3]):
        b.call(fn, loop.args[:3])
    b.ret_void()
    engine = jit(module)
    seconds = time.process_time() - t0
    cfn = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                           ctypes.c_int64)(engine.get_function_address("reps"))

    def run(a: np.ndarray, bp: np.ndarray, c: np.ndarray, reps: int) -> None:
        cfn(a.ctypes.data, bp.ctypes.data, c.ctypes.data, reps)

    return run, seconds, engine


def ort_matmul(b: np.ndarray) -> ort.InferenceSession:
    """A single-thread session computing A @ B with B an initializer."""
    k, n = b.shape
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["A", "B"], ["C"])], "mm",
        [onnx.helper.make_tensor_value_info("A", onnx.TensorProto.FLOAT, ["m", k])],
        [onnx.helper.make_tensor_value_info("C", onnx.TensorProto.FLOAT, ["m", n])],
        [onnx.numpy_helper.from_array(b, "B")])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])


def aligned(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Random float32 array on a 64-byte boundary, as the runtime's arena and weights are."""
    size = int(np.prod(shape))
    raw = np.empty(size + 16, np.float32)
    start = (-raw.ctypes.data % 64) // 4
    out = raw[start:start + size].reshape(shape)
    out[...] = rng.standard_normal(shape, dtype=np.float32)
    return out


def interleaved(engines: dict[str, Callable[[], float]], seconds: float) -> dict[str, float]:
    """Median seconds per call of each engine; each call returns its own per-call time, and
    the engines take turns in short blocks so slow drifts of the machine hit all alike."""
    times: dict[str, list[float]] = {name: [] for name in engines}
    deadline = time.perf_counter() + seconds
    order = list(engines)
    while time.perf_counter() < deadline or min(len(t) for t in times.values()) < 5:
        for name in order:
            times[name].append(engines[name]())
        order.reverse()
    return {name: float(np.median(t)) for name, t in times.items()}


def bench_shape(m: int, k: int, n: int, seconds: float) -> dict[str, float]:
    rng = np.random.default_rng(0)
    a, b = aligned((m, k), rng), aligned((k, n), rng)
    packed = gemm.pack_b(b, blocking().nr)
    bp = aligned(packed.shape, rng)
    bp[...] = packed
    c, c_np = aligned((m, n), rng), np.empty((m, n), np.float32)
    run, compile_s, engine = sw2c_kernel(m, k, n)
    run(a, bp, c, 1)
    ref = a.astype(np.float64) @ b
    err = float(np.abs(c - ref).max() / (np.abs(a) @ np.abs(b)).max())
    session = ort_matmul(b)
    flop = 2.0 * m * k * n
    reps = max(1, int(2e-3 / (flop / 150e9)))  # ~2 ms of GEMMs per timed block

    def timed(fn: Callable[[], None], calls: int) -> float:
        t0 = time.thread_time()
        for _ in range(calls):
            fn()
        return (time.thread_time() - t0) / calls

    def sw2c_block() -> float:
        t0 = time.thread_time()
        run(a, bp, c, reps)
        return (time.thread_time() - t0) / reps

    ort_calls = max(1, reps // 20)
    engines = {
        "sw2c": sw2c_block,
        "ort": lambda: timed(lambda: session.run(None, {"A": a}), ort_calls),
        "numpy": lambda: timed(lambda: np.matmul(a, b, out=c_np), ort_calls),
    }
    medians = interleaved(engines, seconds)
    del engine  # the JIT code is no longer called
    return {"compile": compile_s, "err": err,
            **{name: flop / t / 1e9 for name, t in medians.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=1.5, help="timing per shape")
    args = parser.parse_args()
    peak = peak_gflops_per_core()
    bl = blocking()
    print(f"MR={bl.mr} NR={bl.nr} KC={KC} NC={NC}; GFLOP/s, single thread, "
          f"% of {peak:.0f} GFLOP/s peak")
    print(f"{'M':>6} {'K':>5} {'N':>5} | {'sw2c':>6} {'%peak':>5} | {'ort':>6} {'%peak':>5} | "
          f"{'numpy':>6} | {'sw2c/ort':>8} | {'compile':>7} | rel.err")
    for m, k, n in SHAPES:
        r = bench_shape(m, k, n, args.seconds)
        pct = {e: 100 * r[e] / peak for e in ("sw2c", "ort")}
        print(f"{m:>6} {k:>5} {n:>5} | {r['sw2c']:6.1f} {pct['sw2c']:4.0f}% | "
              f"{r['ort']:6.1f} {pct['ort']:4.0f}% | {r['numpy']:6.1f} | "
              f"{r['sw2c'] / r['ort']:7.2f}x | {r['compile']:6.3f}s | {r['err']:.1e}", flush=True)


if __name__ == "__main__":
    main()
