"""The asic target over the zoo: cycles, latency, energy, arena and int8 accuracy per target.

    python -m sw2c.benchmarks.asic_run [--models a,b] [--targets tiny,edge] [--out DIR]

Writes ``asic.md`` (a markdown table) and ``asic.json``. The figures come from the static
schedule of each target file (data-independent); the SQNR compares the simulator's int8
outputs with onnxruntime's fp32 on the calibration inputs (the digits example uses its shipped
calibration set, the zoo random inputs). A model that does not fit a target is listed with
the compiler's error.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import Sw2cError
from . import zoo
from .bench import bench_asic
from .run import results_dir

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DEFAULT_MODELS = "digits,mlp,lenet,mobilenet_v2,resnet18,resnet50"
DEFAULT_TARGETS = "tiny,edge"


def _case(name: str) -> tuple[Any, Any, dict]:
    if name == "digits":
        calib = np.load(EXAMPLES / "digits_calibration.npz")["input"]
        return str(EXAMPLES / "digits_cnn.onnx"), calib, {"input": (1, 1, 8, 8)}
    return zoo.get(name), None, {}


def run(models: list[str], targets: list[str]) -> list[dict[str, Any]]:
    rows = []
    for name in models:
        model, calib, shapes = _case(name)
        for t in targets:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # zoo models calibrate on random inputs
                try:
                    r = bench_asic([model], target=f"asic:{t}", calibration=calib,
                                   input_shapes=shapes)
                except Sw2cError as e:
                    r = {"error": str(e).splitlines()[0]}
            rows.append({**r, "model": name, "target": t})
            print(json.dumps(rows[-1], default=str))
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    head = ("| model | target | MACs | cycles | latency | energy | arena / lower bound / SRAM "
            "| weights | output SQNR |\n|---|---|---:|---:|---:|---:|---|---:|---:|")
    lines = [head]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['target']} | | | | | {r['error']} | | |")
            continue
        sq = ", ".join(f"{v:.1f} dB" for v in r["output_sqnr_db"].values())
        lines.append(
            f"| {r['model']} | {r['target']} | {r['macs'] / 1e6:,.2f} M | {r['cycles']:,} | "
            f"{r['latency_us']:,.1f} us | {r['energy_uj']:,.2f} uJ | {r['arena_bytes']:,} / "
            f"{r['arena_lower_bound_bytes']:,} / {r['sram_bytes']:,} | "
            f"{r['weights_bytes']:,} | {sq} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=DEFAULT_MODELS)
    p.add_argument("--targets", default=DEFAULT_TARGETS)
    p.add_argument("--out", type=Path, default=None,
                   help="default: benchmarks/results for every model and target, else "
                   "benchmarks/results/partial (a subset never overwrites the full table)")
    args = p.parse_args()
    models, targets = args.models.split(","), args.targets.split(",")
    rows = run(models, targets)
    complete = (set(models) >= set(DEFAULT_MODELS.split(","))
                and set(targets) >= set(DEFAULT_TARGETS.split(",")))
    out = results_dir(args.out, complete)
    out.mkdir(parents=True, exist_ok=True)
    (out / "asic.json").write_text(json.dumps(rows, indent=1, default=str) + "\n")
    (out / "asic.md").write_text(markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
