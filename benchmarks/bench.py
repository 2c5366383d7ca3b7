"""`sw2c bench`: compile a model, then time sw2c and onnxruntime on the same inputs, interleaved
in one process, with the same number of threads."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .harness import measure, ort_session, throughput


def bench_model(models: Sequence[str], *, target: str = "cpu", threads: int = 1,
                input_shapes: Mapping[str, Sequence[int]] | None = None, seconds: float = 3.0,
                progress: bool = False, winograd: str = "auto") -> dict[str, Any]:
    """Median/p90 latency of sw2c and onnxruntime, their ratio, GFLOP/s and % of peak.
    ``threads`` in the result is the team that ran (``module.report["threads"]``: a model
    with no kernel worth splitting runs on one), the peak that of as many cores;
    ``threads_requested`` is the argument, which onnxruntime gets."""
    import sw2c
    from sw2c.frontend import load_model
    from sw2c.frontend.join import join_models
    from sw2c.runtime.verify import random_feeds

    module = sw2c.compile(list(models), target=target, threads=threads,
                          input_shapes=input_shapes, winograd=winograd)
    feeds = random_feeds(module, seed=0)
    protos = [load_model(m) for m in models]  # several models: onnxruntime runs them composed
    session = ort_session(protos[0] if len(protos) == 1 else join_models(protos), threads)
    names = [n for n, _, _ in module.outputs]
    arrays = [feeds[n] for n, _, _ in module.inputs]
    timing = measure(lambda: module(*arrays), lambda: session.run(names, feeds),
                     min_seconds=seconds, rounds=10, progress=progress)
    report = module.report
    into = None
    if report["flops"] < 1e6:  # a tiny model: the zero-allocation call is worth its own line
        outs = [np.empty(s, d) for _, s, d in module.outputs]
        into = measure(lambda: module.run_into(arrays, outs),
                       lambda: session.run(names, feeds), min_seconds=seconds, rounds=10)
    sw2c_s = timing["sw2c"]["median"]
    gflops, percent = (throughput(report["flops"], sw2c_s, report["threads"]) if sw2c_s
                       else (0.0, 0.0))
    return {
        "model": " ".join(str(m) for m in models),
        "target": target,
        "threads": report["threads"],
        "threads_requested": threads,
        "gflop": report["flops"] / 1e9,
        "sw2c": timing["sw2c"],
        "onnxruntime": timing["ort"],
        "ratio": timing["ratio"],
        "gflops": gflops,
        "percent_of_peak": percent,
        "arena_bytes": report["arena_bytes"],
        "arena_lower_bound_bytes": report["arena_lower_bound_bytes"],
        "kernels": report["kernels"],
        "compile_seconds": report["compile_seconds"],
        "verification_error": report.get("verification_error"),
        "run_into": into and {"sw2c": into["sw2c"], "onnxruntime": into["ort"],
                              "ratio": into["ratio"]},
    }


def bench_asic(models: Sequence[str], *, target: str = "asic",
               input_shapes: Mapping[str, Sequence[int]] | None = None,
               calibration: Any = None, precision: str = "int8") -> dict[str, Any]:
    """The asic target's figures per inference (static, from the schedule) and the int8 (or
    int16: ``precision``) vs fp32 output SQNR measured against onnxruntime on the calibration
    inputs."""
    import sw2c

    if precision == "auto":  # its budget is a floor, which bench does not hold SQNR to
        raise sw2c.Sw2cError("precision 'auto' needs a budget: use sw2c compile --precision "
                             "auto --min-sqnr-db DB (its report has the figures)")
    # the SQNR is measured and shown here, not held to a floor
    module = sw2c.compile(list(models), target=target, input_shapes=input_shapes,
                          calibration=calibration, min_sqnr_db=None, precision=precision)
    r = module.report
    keys = ("target", "target_description", "cycles", "latency_us", "energy_uj", "macs",
            "arena_bytes", "arena_lower_bound_bytes", "arena_naive_bytes", "sram_bytes",
            "weights_bytes", "weight_memory_bytes", "kernels", "output_sqnr_db",
            "calibration_samples", "compile_seconds")
    return {"model": " ".join(str(m) for m in models), **{k: r[k] for k in keys}}


def format_asic_result(r: dict[str, Any]) -> str:
    from ..backends.asic.report import format_totals

    return "\n".join([f"{r['model']}: target {r['target']} ({r['target_description']})",
                      *format_totals(r)])


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.1f} us"


def _threads(r: dict[str, Any]) -> str:
    ran, asked = r["threads"], r.get("threads_requested", r["threads"])
    if ran == asked:
        return f"{ran} thread(s)"
    return (f"{ran} thread(s) ({asked} requested: no kernel is big enough to split; "
            f"onnxruntime ran with {asked})")


def format_result(r: dict[str, Any]) -> str:
    s, o, into = r["sw2c"], r["onnxruntime"], r.get("run_into")
    lines = [] if not into else [
        f"  run_into     median {_ms(into['sw2c']['median'])}  p90 {_ms(into['sw2c']['p90'])}  "
        f"= {into['ratio']:.2f}x onnxruntime's (median {_ms(into['onnxruntime']['median'])}; "
        "no allocation)"]
    return "\n".join([
        f"{r['model']}: {r['gflop']:.4f} GFLOP, {_threads(r)}, target {r['target']}",
        f"  sw2c         median {_ms(s['median'])}  p90 {_ms(s['p90'])}",
        f"  onnxruntime  median {_ms(o['median'])}  p90 {_ms(o['p90'])}",
        f"  ratio        {r['ratio']:.2f}x onnxruntime's latency "
        f"({'faster' if r['ratio'] < 1 else 'slower'})",
        *lines,
        f"  throughput   {r['gflops']:.1f} GFLOP/s = {r['percent_of_peak']:.0f}% of the "
        f"measured fp32 FMA peak",
        f"  arena        {r['arena_bytes']} bytes (lower bound {r['arena_lower_bound_bytes']})",
    ])
