"""Measurement core shared by `sw2c bench` and `python -m sw2c.benchmarks.run`.

`measure` times two zero-argument callables (sw2c and onnxruntime) interleaved in one process.
Calls are grouped in blocks of about `block_seconds`, one block per engine per round, and the
order is swapped every round: onnxruntime's intra-op worker threads keep spinning for a while
after a run and would steal the other engine's core if the engines alternated call by call,
while slow drifts of the shared machine (frequency, neighbours) hit both engines alike.
"""

from __future__ import annotations

import gc
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

ENGINES = ("sw2c", "ort")

_ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
}


# --------------------------------------------------------------------------- timing


def _call_ns(fn: Callable[[], Any]) -> int:
    """Duration of one call in nanoseconds."""
    t0 = time.perf_counter_ns()
    fn()
    return time.perf_counter_ns() - t0


def _warm_up(fn: Callable[[], Any], seconds: float, min_calls: int = 3) -> float:
    """Call fn for about `seconds` (at least min_calls times); return the median call in s."""
    times: list[int] = []
    deadline = time.perf_counter_ns() + seconds * 1e9
    while len(times) < min_calls or time.perf_counter_ns() < deadline:
        times.append(_call_ns(fn))
    return float(np.median(times)) / 1e9


def _block(fn: Callable[[], Any], calls: int, out: list[int]) -> None:
    """Run one block of `calls` timed calls, appending each duration (ns) to out."""
    for _ in range(calls):
        out.append(_call_ns(fn))


def summarize(times_ns: Sequence[int]) -> dict[str, float]:
    """Median, p90, mean and min (seconds) and the number of calls of a timing sample."""
    sec = np.asarray(times_ns, dtype=np.float64) / 1e9
    return {
        "median": float(np.median(sec)),
        "p90": float(np.percentile(sec, 90)),
        "mean": float(sec.mean()),
        "min": float(sec.min()),
        "calls": int(sec.size),
    }


def _plan_rounds(per_call: dict[str, float], calls: dict[str, int], min_seconds: float,
                 rounds: int) -> int:
    """Rounds needed so each engine gets min_seconds of timed calls (and at least `rounds`)."""
    per_round = min(per_call[e] * calls[e] for e in ENGINES)
    return max(rounds, math.ceil(min_seconds / max(per_round, 1e-9)))


def measure(
    sw2c_fn: Callable[[], Any],
    ort_fn: Callable[[], Any],
    *,
    min_seconds: float = 2.0,
    rounds: int = 10,
    progress: bool = False,
    block_seconds: float = 0.1,
    warmup_seconds: float = 0.3,
) -> dict[str, Any]:
    """Time two engines interleaved; return per-engine stats and the sw2c/ort median ratio.

    Each engine first warms up for `warmup_seconds`, which also sizes its blocks to about
    `block_seconds`. Then rounds run one block of each engine, the order swapped every round,
    until at least `rounds` rounds are done and each engine has `min_seconds` of timed calls.
    The garbage collector is off while timing.

    Returns {"sw2c": stats, "ort": stats, "ratio": float, "rounds": int, "block_calls": {...}}
    where stats = {"median", "p90", "mean", "min" (seconds), "calls"}.
    """
    fns = {"sw2c": sw2c_fn, "ort": ort_fn}
    per_call = {e: _warm_up(fns[e], warmup_seconds) for e in ENGINES}
    calls = {e: max(1, round(block_seconds / max(per_call[e], 1e-9))) for e in ENGINES}
    times: dict[str, list[int]] = {e: [] for e in ENGINES}
    planned = _plan_rounds(per_call, calls, min_seconds, rounds)
    bar = _progress_bar(planned, progress)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        done = 0
        while done < planned or min(sum(times[e]) for e in ENGINES) < min_seconds * 1e9:
            order = ENGINES if done % 2 == 0 else ENGINES[::-1]
            for e in order:
                _block(fns[e], calls[e], times[e])
            done += 1
            _advance(bar, done, planned, times)
    finally:
        if gc_was_enabled:
            gc.enable()
        if bar is not None:
            bar.close()
    result: dict[str, Any] = {e: summarize(times[e]) for e in ENGINES}
    result["ratio"] = result["sw2c"]["median"] / result["ort"]["median"]
    result["rounds"] = done
    result["block_calls"] = calls
    return result


def _progress_bar(total: int, enabled: bool) -> Any:
    """A tqdm bar over rounds, or None."""
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="round", leave=False, dynamic_ncols=True)


def _advance(bar: Any, done: int, planned: int, times: dict[str, list[int]]) -> None:
    """Move the bar one round and show the running medians."""
    if bar is None:
        return
    if done > bar.total:
        bar.total = done
    bar.update(1)
    bar.set_postfix({e: format_seconds(float(np.median(times[e])) / 1e9) for e in ENGINES},
                    refresh=False)


# --------------------------------------------------------------------------- onnxruntime


def ort_session(model: onnx.ModelProto | str | os.PathLike | bytes,
                threads: int) -> ort.InferenceSession:
    """A CPU onnxruntime session configured like a fair single-stream deployment.

    intra_op_num_threads=threads, inter_op_num_threads=1, sequential execution, all graph
    optimizations, warnings silenced.
    """
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    elif isinstance(model, os.PathLike):
        model = os.fspath(model)
    return ort.InferenceSession(model, sess_options=so, providers=["CPUExecutionProvider"])


def _input_specs(source: Any) -> list[tuple[str, tuple[int, ...], np.dtype]]:
    """(name, shape, dtype) of the inputs of a session, ModelProto or (name, shape, dtype) list.

    Symbolic or unknown dimensions become 1.
    """
    if isinstance(source, ort.InferenceSession):
        return [(i.name, _concrete(i.shape), np.dtype(_ORT_TYPES[i.type]))
                for i in source.get_inputs()]
    if isinstance(source, onnx.ModelProto):
        inits = {t.name for t in source.graph.initializer}
        return [(i.name, _concrete(d.dim_value for d in i.type.tensor_type.shape.dim),
                 np.dtype(onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type)))
                for i in source.graph.input if i.name not in inits]
    return [(name, _concrete(shape), np.dtype(dtype)) for name, shape, dtype in source]


def _concrete(shape: Iterable[Any]) -> tuple[int, ...]:
    """Replace symbolic/unknown (None, str, 0) dimensions by 1."""
    return tuple(d if isinstance(d, int) and d > 0 else 1 for d in shape)


def random_feeds(session_or_inputs: Any, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs: standard normal floats, small non-negative integers, random booleans.

    Accepts an onnxruntime session, an onnx.ModelProto, or a list of (name, shape, dtype) as in
    `sw2c.Module.inputs`.
    """
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, shape, dtype in _input_specs(session_or_inputs):
        if dtype.kind == "f":
            feeds[name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[name] = rng.random(shape) < 0.5
        else:
            feeds[name] = rng.integers(0, 10, shape).astype(dtype)
    return feeds


# --------------------------------------------------------------------------- throughput


@lru_cache(maxsize=1)
def peak_gflops_per_core() -> float:
    """This core's fp32 FMA peak in GFLOP/s, measured once per process (fma_peak.py): hosts of
    one kind differ (a Zen 4 core issues one 512-bit FMA per cycle, a Zen 5 core two: 126
    against 285 GFLOP/s measured here), so a fixed figure would misstate every % of peak."""
    from .fma_peak import measure

    return measure(0.3)


def peak_gflops(threads: int) -> float:
    """fp32 FMA peak of `threads` cores in GFLOP/s."""
    return peak_gflops_per_core() * threads


def throughput(flops: float, seconds: float, threads: int) -> tuple[float, float]:
    """(GFLOP/s, percent of the fp32 peak of `threads` cores) for `flops` done in `seconds`."""
    gflops = flops / seconds / 1e9
    return gflops, 100.0 * gflops / peak_gflops(threads)


# --------------------------------------------------------------------------- one comparison


def compare(
    module: Any,
    model: onnx.ModelProto | str | os.PathLike,
    *,
    threads: int,
    min_seconds: float = 2.0,
    rounds: int = 10,
    progress: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """Benchmark a compiled sw2c Module against onnxruntime on the same model and random feeds.

    sw2c is called positionally (`module(*arrays)`), onnxruntime with `session.run(None, feeds)`.

    Adds to the `measure` result: "threads", "max_abs_diff" (sw2c vs ort outputs on the feeds)
    and, when module.report has "flops", "gflops_per_s" and "percent_peak" of sw2c.
    """
    from ..runtime.verify import random_feeds as valid_feeds

    session = ort_session(model, threads)
    feeds = valid_feeds(module, seed)  # ids within their tables, 0/1 masks
    arrays = [feeds[name] for name, _, _ in module.inputs]
    result = measure(lambda: module(*arrays), lambda: session.run(None, feeds),
                     min_seconds=min_seconds, rounds=rounds, progress=progress)
    result["threads"] = threads
    result["max_abs_diff"] = max_abs_diff(module.run(feeds), session, feeds)
    flops = getattr(module, "report", {}).get("flops")
    if flops:
        gf, pct = throughput(flops, result["sw2c"]["median"], threads)
        result["gflops_per_s"], result["percent_peak"] = gf, pct
    return result


def max_abs_diff(outputs: dict[str, np.ndarray], session: ort.InferenceSession,
                 feeds: dict[str, np.ndarray]) -> float:
    """Largest |sw2c - onnxruntime| over all outputs."""
    names = [o.name for o in session.get_outputs()]
    reference = session.run(names, feeds)
    return max(float(np.max(np.abs(np.asarray(outputs[n], np.float64) - r)))
               for n, r in zip(names, reference, strict=True))


def format_seconds(seconds: float) -> str:
    """A duration with a readable unit (us, ms, s) and 3-4 significant digits."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.3g} us"
    if seconds < 1.0:
        return f"{seconds * 1e3:.4g} ms"
    return f"{seconds:.4g} s"


def format_result(result: dict[str, Any]) -> str:
    """One-line human summary of a `measure`/`compare` result."""
    s, o = result["sw2c"], result["ort"]
    line = (f"sw2c {format_seconds(s['median'])} (p90 {format_seconds(s['p90'])})  "
            f"ort {format_seconds(o['median'])} (p90 {format_seconds(o['p90'])})  "
            f"ratio {result['ratio']:.2f}x")
    if "gflops_per_s" in result:
        line += f"  {result['gflops_per_s']:.1f} GFLOP/s ({result['percent_peak']:.0f}% peak)"
    return line
