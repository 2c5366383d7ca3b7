"""`sw2c bench --per-kernel`: where the time goes, kernel by kernel.

The model is compiled in profile mode (backends/cpu/profile.py: cycle counters around every
kernel call), run repeatedly for a time budget, and each kernel's median time over the runs is
reported with its MACs, GFLOP/s and % of the measured fp32 FMA peak of the cores that ran.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .harness import peak_gflops


def _kernel_rows(module: Any) -> list[dict[str, Any]]:
    """Static facts of each kernel, in execution order (the counters' order)."""
    from ..ir import Graph, Op
    from ..passes.cost import count_flops, count_macs

    rows = []
    kernels = [n for n in module.graph.nodes
               if n.op is Op.KERNEL and n.name not in module.plan.elided]
    for index, node in enumerate(kernels):
        body: Graph = node.attrs["body"]
        rows.append({"index": index, "kernel": node.name, "kind": node.attrs["kind"],
                     "origin": node.origin, "shape": list(node.type.shape),
                     "macs": count_macs(body), "flops": count_flops(body)})
    return rows


def _sample(module: Any, arrays: list[np.ndarray], seconds: float, min_runs: int = 5
            ) -> tuple[np.ndarray, np.ndarray]:
    """Run the module for about ``seconds`` (after one warm-up run): thread 0's seconds per
    run and kernel [runs, kernels], and the [kernels, 3] cycle counters summed over runs."""
    profile = module.profile
    module(*arrays)  # warm-up: first-touch page faults, caches
    runs, total = [], np.zeros((profile.kernels, 3), np.int64)
    deadline = time.perf_counter() + seconds
    while len(runs) < min_runs or time.perf_counter() < deadline:
        profile.reset()
        module(*arrays)
        runs.append(profile.seconds())
        total += profile.cycles()
    return np.array(runs), total


def _resolve(model: Any) -> Any:
    """A path as it is; a name that is no file but a zoo model (``resnet50``): its model."""
    import os

    from . import zoo

    if isinstance(model, str) and not os.path.exists(model) and model in zoo.available():
        return zoo.get(model)
    return model


def bench_per_kernel(models: Sequence[str], *, threads: int = 1,
                     input_shapes: Mapping[str, Sequence[int]] | None = None,
                     seconds: float = 3.0, winograd: str = "auto") -> dict[str, Any]:
    """Per-kernel median time (thread 0's, which for a split kernel includes waiting for the
    workers), GFLOP/s, % of peak and thread 0's share of the chunk time; sorted by time.
    A model is a path, or the name of a zoo model (benchmarks/zoo.py)."""
    import sw2c
    from sw2c.runtime.verify import random_feeds

    module = sw2c.compile([_resolve(m) for m in models], threads=threads, input_shapes=input_shapes,
                          verify=False, profile=True, winograd=winograd)
    feeds = random_feeds(module, seed=0)
    runs, cycles = _sample(module, [feeds[n] for n, _, _ in module.inputs], seconds)
    ran = module.report["threads"]
    peak = peak_gflops(ran)
    rows = _kernel_rows(module)
    medians, best = np.median(runs, axis=0), runs.min(axis=0)
    for row, median, fastest, (_, busy0, busy) in zip(rows, medians, best, cycles, strict=True):
        gflops = row["flops"] / median / 1e9 if median > 0 else 0.0
        row.update(seconds=float(median), min_seconds=float(fastest), gflops=gflops,
                   best_gflops=row["flops"] / fastest / 1e9 if fastest > 0 else 0.0,
                   percent_of_peak=100 * gflops / peak,
                   thread0_share=float(busy0 / busy) if busy else 1.0)
    rows.sort(key=lambda r: -r["seconds"])
    return {"model": " ".join(str(m) for m in models), "threads": ran,
            "threads_requested": threads, "runs": len(runs),
            "total_seconds": float(np.median(runs.sum(axis=1))),
            "fastest_run_seconds": float(runs.sum(axis=1).min()),
            "flops": module.report["flops"], "peak_gflops": peak, "kernels": rows}


def _shape(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape)) or "scalar"


def format_per_kernel(r: dict[str, Any], top: int | None = None) -> str:
    """The table: one row per kernel (the ``top`` slowest when given), then the total: the
    median run, whose time exceeds the sum of the kernels' medians when the run was preempted
    (a busy machine)."""
    total = r["total_seconds"]  # median over runs of the run's kernel time
    share = sum(k["seconds"] for k in r["kernels"])  # %time: of the sum of kernel medians
    gflops = r["flops"] / total / 1e9 if total else 0.0
    lines = [f"{r['model']}: per-kernel times, median of {r['runs']} runs, {r['threads']} "
             f"thread(s), peak {r['peak_gflops']:.0f} GFLOP/s",
             "  time is thread 0's: with threads > 1 a split kernel's time includes waiting "
             "for the workers' chunks; t0 share = thread 0's part of the chunk time; "
             "min/best: the fastest run",
             f"  {'#':>4} {'kind':<11} {'output':<16} {'MMACs':>8} {'med us':>9} "
             f"{'min us':>9} {'%time':>6} {'GFLOP/s':>8} {'%peak':>6} {'best':>6} {'t0':>5}"
             "  origin"]
    for k in r["kernels"][:top]:
        lines.append(
            f"  {k['index']:>4} {k['kind']:<11} {_shape(k['shape']):<16} "
            f"{k['macs'] / 1e6:>8.2f} {k['seconds'] * 1e6:>9.1f} {k['min_seconds'] * 1e6:>9.1f} "
            f"{100 * k['seconds'] / share if share else 0:>5.1f}% {k['gflops']:>8.1f} "
            f"{k['percent_of_peak']:>5.1f}% {k['best_gflops']:>6.1f} "
            f"{100 * k['thread0_share']:>4.0f}%  {k['origin']}")
    if top is not None and len(r["kernels"]) > top:
        lines.append(f"  ... {len(r['kernels']) - top} more kernels")
    lines.append(f"  total: {len(r['kernels'])} kernels, {total * 1e3:.3f} ms (sum of kernel "
                 f"medians {share * 1e3:.3f} ms, fastest run "
                 f"{r['fastest_run_seconds'] * 1e3:.3f} ms), "
                 f"{gflops:.1f} GFLOP/s = {100 * gflops / r['peak_gflops']:.1f}% of peak")
    return "\n".join(lines)
