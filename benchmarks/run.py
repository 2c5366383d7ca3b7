"""Benchmark the zoo: sw2c vs onnxruntime latency, throughput and memory plan, per thread count.

    python -m sw2c.benchmarks.run [--models a,b] [--threads 1,2] [--out DIR]

For each model and thread count: compile with `sw2c.compile(threads=t)`, time sw2c and
onnxruntime interleaved in this process (`harness.measure`), then write `results.md` (a
markdown table), `results.json` (everything measured), `latency.png` and `arena.png`.
A model that sw2c fails to compile is listed with its error and no numbers.
Without --out, a run of the whole zoo at threads 1,2 writes benchmarks/results/ (the committed
results); any smaller run writes benchmarks/results/partial/, so it never overwrites them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from . import harness, zoo

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
PARTIAL_OUT = DEFAULT_OUT / "partial"
DEFAULT_THREADS = (1, 2)


def results_dir(out: Path | None, complete: bool) -> Path:
    """Where a run writes: ``out`` if given; else the committed results for a complete run and
    ``results/partial/`` for a subset, so a quick run never clobbers the full tables."""
    if out is not None:
        return out
    return DEFAULT_OUT if complete else PARTIAL_OUT


# --------------------------------------------------------------------------- measuring


def _compiler() -> Any:
    """`sw2c.compile`, or exit with a clear message if the compiler is not importable."""
    try:
        import sw2c

        return sw2c.compile
    except (ImportError, AttributeError) as e:
        raise SystemExit(f"sw2c.compile is not available ({e}); nothing to benchmark") from e


def bench_one(name: str, model: onnx.ModelProto, threads: int, args: argparse.Namespace
              ) -> dict[str, Any]:
    """Compile one model for `threads` threads and compare it with onnxruntime."""
    row: dict[str, Any] = {"model": name, "threads": threads}
    started = time.perf_counter()
    try:
        module = _compiler()(model, threads=threads)
    except ImportError as e:  # the compiler itself is broken: no table of identical failures
        raise SystemExit(f"sw2c.compile cannot run ({e}); nothing to benchmark") from e
    except Exception as e:  # recorded in the table; never replaced by made-up numbers
        traceback.print_exc(file=sys.stderr)
        row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        return row
    report = dict(module.report)
    report.setdefault("compile_seconds", time.perf_counter() - started)
    result = harness.compare(module, model, threads=threads, min_seconds=args.min_seconds,
                             rounds=args.rounds, progress=not args.no_progress,
                             seed=args.seed)
    row.update(result)
    row["report"] = {k: v for k, v in report.items() if _jsonable(v)}
    return row


def _jsonable(value: Any) -> bool:
    """True for values json.dumps can write as they are."""
    return isinstance(value, (int, float, str, bool, type(None), list, dict))


def run(names: Sequence[str], thread_counts: Sequence[int], args: argparse.Namespace
        ) -> list[dict[str, Any]]:
    """Benchmark every model at every thread count; print one line per measurement."""
    rows = []
    for name in names:
        model = zoo.get(name)
        for t in thread_counts:
            row = bench_one(name, model, t, args)
            rows.append(row)
            print(f"{name:>14s} t={t}  " + (row["error"] if "error" in row
                                              else harness.format_result(row)), flush=True)
        del model
    return rows


# --------------------------------------------------------------------------- results.md

COLUMNS = ("model", "GFLOP", "threads", "sw2c median", "ORT median", "ratio", "GFLOP/s",
           "% peak", "arena KiB", "lower bound KiB", "naive KiB", "arena/lower-bound",
           "kernels", "compile s", "max abs diff")


def _kib(n: float | None) -> str:
    """Bytes as KiB with one decimal."""
    return "—" if n is None else f"{n / 1024:,.1f}"


def _count(value: Any) -> str:
    """A kernel count from an int or a collection of kernels."""
    return str(len(value)) if isinstance(value, (list, tuple, dict, set)) else str(value)


def table_row(row: dict[str, Any]) -> list[str]:
    """The cells of one results.md row."""
    if "error" in row:
        return [row["model"], "—", str(row["threads"]), f"failed: {row['error']}",
                *["—"] * (len(COLUMNS) - 4)]
    r = row["report"]
    lower, arena = r.get("arena_lower_bound_bytes"), r.get("arena_bytes")
    fmt = harness.format_seconds
    return [
        row["model"], f"{r.get('flops', 0) / 1e9:.4g}", str(row["threads"]),
        fmt(row["sw2c"]["median"]), fmt(row["ort"]["median"]), f"{row['ratio']:.2f}",
        f"{row.get('gflops_per_s', float('nan')):.1f}", f"{row.get('percent_peak', 0):.1f}",
        _kib(arena), _kib(lower), _kib(r.get("arena_naive_bytes")),
        f"{arena / lower:.3f}" if arena is not None and lower else "—",
        _count(r.get("kernels", "—")), f"{r['compile_seconds']:.2f}",
        f"{row['max_abs_diff']:.1e}",
    ]


def environment(args: argparse.Namespace, load_before: str) -> dict[str, str]:
    """Versions and machine facts to print above the table (load: 1-min load averages)."""
    import sw2c

    return {
        "cpu": _cpu_name(), "cores": str(os.cpu_count()), "python": platform.python_version(),
        "sw2c": getattr(sw2c, "__version__", "?"), "onnxruntime": ort.__version__,
        "onnx": onnx.__version__, "numpy": np.__version__,
        "timing": f"interleaved blocks, >= {args.min_seconds} s and >= {args.rounds} rounds "
                  "per engine, medians",
        "peak": f"{harness.peak_gflops_per_core():.1f} GFLOP/s per core (fp32 FMA, measured "
                "by benchmarks/fma_peak.py)",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "load average": f"{load_before} before, {_load()} after (other processes skew timings)",
    }


def _load() -> str:
    """The 1-minute load average of the machine."""
    return f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "?"


def _cpu_name() -> str:
    """CPU model name from /proc/cpuinfo (or platform.processor())."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def write_markdown(rows: list[dict[str, Any]], env: dict[str, str], path: Path) -> None:
    """results.md: environment list, then one table row per (model, threads)."""
    lines = ["# sw2c vs onnxruntime", ""]
    lines += [f"- **{k}**: {v}" for k, v in env.items()]
    lines += ["", "| " + " | ".join(COLUMNS) + " |",
              "|" + "|".join("---" if c == "model" else "---:" for c in COLUMNS) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in table_row(r)) + " |"
              for r in rows]
    lines += ["", "ratio = sw2c median / onnxruntime median (below 1: sw2c is faster). "
              "GFLOP/s and % peak are sw2c's. lower bound = largest sum of simultaneously "
              "live tensors; naive = one buffer per tensor.", ""]
    path.write_text("\n".join(lines))


# --------------------------------------------------------------------------- charts


def _ok(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows that have measurements."""
    return [r for r in rows if "error" not in r]


def plot_latency(rows: list[dict[str, Any]], thread_counts: Sequence[int], path: Path) -> None:
    """Grouped bars of median latency, sw2c vs onnxruntime per thread count, log scale."""
    import matplotlib.pyplot as plt

    ok = _ok(rows)
    models = list(dict.fromkeys(r["model"] for r in ok))
    series = [(e, t) for t in thread_counts for e in ("sw2c", "ort")]
    width = 0.8 / max(len(series), 1)
    colors = {"sw2c": ("#1f77b4", "#9ecae1"), "ort": ("#d62728", "#fc9272")}
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(models)), 4.5))
    for k, (engine, t) in enumerate(series):
        values = [_median_ms(ok, m, t, engine) for m in models]
        xs = np.arange(len(models)) + (k - (len(series) - 1) / 2) * width
        color = colors[engine][thread_counts.index(t) % 2]
        label = f"{'sw2c' if engine == 'sw2c' else 'onnxruntime'}, {t} thread{'s' * (t > 1)}"
        ax.bar(xs, values, width, label=label, color=color, edgecolor="black", linewidth=0.4)
    _label_ratios(ax, ok, models, thread_counts)
    _finish_axes(ax, models, "median latency (ms, log scale)",
                 "Median latency, batch 1 (labels: sw2c/ORT ratio per thread count)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _label_ratios(ax: Any, rows: list[dict[str, Any]], models: list[str],
                  thread_counts: Sequence[int]) -> None:
    """Write the sw2c/ORT ratios of each model above its group of bars."""
    for x, model in enumerate(models):
        mine = [r for r in rows if r["model"] == model]
        top = max(max(r["sw2c"]["median"], r["ort"]["median"]) for r in mine) * 1e3
        text = " | ".join(f"{r['ratio']:.3g}x" for t in thread_counts
                          for r in mine if r["threads"] == t)
        ax.annotate(text, (x, top), xytext=(0, 3), textcoords="offset points", ha="center",
                    fontsize=7)


def _median_ms(rows: list[dict[str, Any]], model: str, threads: int, engine: str) -> float:
    """Median latency in ms of one engine for (model, threads); NaN if not measured."""
    for r in rows:
        if r["model"] == model and r["threads"] == threads:
            return r[engine]["median"] * 1e3
    return float("nan")


def plot_arena(rows: list[dict[str, Any]], path: Path) -> None:
    """Grouped bars per model: planned arena vs lower bound vs naive allocation (KiB, log)."""
    import matplotlib.pyplot as plt

    first = {}
    for r in _ok(rows):
        first.setdefault(r["model"], r["report"])
    models = list(first)
    keys = (("arena_bytes", "sw2c arena", "#1f77b4"),
            ("arena_lower_bound_bytes", "lower bound (max live)", "#2ca02c"),
            ("arena_naive_bytes", "naive (one buffer per tensor)", "#7f7f7f"))
    width = 0.8 / len(keys)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(models)), 4.5))
    for k, (key, label, color) in enumerate(keys):
        values = [first[m].get(key, np.nan) / 1024 for m in models]
        xs = np.arange(len(models)) + (k - 1) * width
        ax.bar(xs, values, width, label=label, color=color, edgecolor="black", linewidth=0.4)
    _finish_axes(ax, models, "activation memory (KiB, log scale)", "Activation memory plan")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _finish_axes(ax: Any, models: list[str], ylabel: str, title: str) -> None:
    """Log y axis, model tick labels, grid, legend."""
    ax.set_yscale("log")
    ax.set_xticks(np.arange(len(models)))
    ax.set_xticklabels(models, rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    low, high = ax.get_ylim()
    ax.set_ylim(low, high * 1.6)  # room for the labels above the bars
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=8)


# --------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m sw2c.benchmarks.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(zoo.ZOO),
                   help=f"comma-separated, from: {', '.join(zoo.available())}")
    p.add_argument("--threads", default=",".join(map(str, DEFAULT_THREADS)),
                   help="comma-separated thread counts")
    p.add_argument("--out", type=Path, default=None,
                   help="output directory (default: benchmarks/results for the whole zoo at "
                   "threads 1,2, else benchmarks/results/partial)")
    p.add_argument("--min-seconds", type=float, default=2.0,
                   help="timed seconds per engine and measurement (default 2)")
    p.add_argument("--rounds", type=int, default=10, help="minimum interleaved rounds")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and write results.md, results.json, latency.png, arena.png."""
    import matplotlib

    matplotlib.use("Agg")
    args = parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    thread_counts = [int(t) for t in args.threads.split(",")]
    unknown = [n for n in names if n not in zoo.available()]
    if unknown:
        raise SystemExit(f"unknown models {unknown}; available: {', '.join(zoo.available())}")
    _compiler()
    load_before = _load()
    rows = run(names, thread_counts, args)
    complete = set(names) >= set(zoo.ZOO) and set(thread_counts) >= set(DEFAULT_THREADS)
    args.out = results_dir(args.out, complete)
    args.out.mkdir(parents=True, exist_ok=True)
    env = environment(args, load_before)
    (args.out / "results.json").write_text(json.dumps({"environment": env, "rows": rows},
                                                      indent=1))
    write_markdown(rows, env, args.out / "results.md")
    plot_latency(rows, thread_counts, args.out / "latency.png")
    plot_arena(rows, args.out / "arena.png")
    print(f"wrote {args.out}/results.md, results.json, latency.png, arena.png")
    return 0 if _ok(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
