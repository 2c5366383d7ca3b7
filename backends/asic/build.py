"""The asic target end to end: float passes -> calibrate -> int8 program -> plan -> schedule."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from ...errors import TargetError
from ...ir import Graph
from ...passes.layout import choose_layout
from ...passes.pipeline import CPU_PIPELINE, Pass, run_pipeline
from .calibrate import QParams, calibrate, calibration_feeds, run_float
from .fixed_point import dequantize
from .lower import quantize_graph
from .plan import AsicPlan, plan_program, plan_spilled
from .program import QProgram
from .reference import quantize_inputs, run_reference
from .schedule import Cost, schedule
from .spill import tile_and_spill
from .target import Target
from .tiling import Tiling, tile_to_fit

# the cpu passes up to fusion, with the layout rules the asic's matcher knows, and without the
# cpu's own rewrites of what the matcher recognizes (grouped convs, softmax, 3x3 convs)
CPU_ONLY = ("split-groups", "row-reciprocal", "winograd", "fuse", "materialize-outputs")
ASIC_PIPELINE = tuple(
    Pass(p.name, partial(choose_layout, through_matmuls=False)) if p.name == "choose-layout" else p
    for p in CPU_PIPELINE if p.name not in CPU_ONLY)
SQNR_SAMPLES = 16  # calibration feeds used for the per-layer accuracy report


@dataclass(frozen=True)
class AsicBuild:
    target: Target
    graph: Graph  # the float graph after the passes
    program: QProgram
    plan: AsicPlan
    costs: list[Cost]
    qparams: dict[str, QParams]
    feeds: list[dict[str, np.ndarray]]  # the calibration feeds
    tiling: Tiling | None = None  # the patch-based tiling that made the arena fit, if any


def _fits(name: str, plan: AsicPlan, program: QProgram, t: Target, why: str = "") -> None:
    if plan.sram_bytes > t.sram_bytes:
        raise TargetError(
            f"{name} needs {plan.arena_bytes:,} bytes of SRAM for activations (lower bound "
            f"{plan.lower_bound_bytes:,}); target '{t.name}' has {t.sram_bytes:,}"
            f"{'; ' + why if why else ''}: pick a larger target (--target asic:edge, or "
            "your own .toml) or a smaller input")
    if program.weights_bytes > t.weight_bytes:
        raise TargetError(
            f"{name} needs {program.weights_bytes:,} bytes of weight memory; target "
            f"'{t.name}' has {t.weight_bytes:,}: pick a larger target or a smaller model")


def build(graph: Graph, target: Target, calibration: Any,
          dump_ir: str | os.PathLike | None = None, precision: str = "int8",
          min_sqnr_db: float | None = None) -> AsicBuild:
    """``precision``: int8, int16 (16x8) or auto (per layer, to ``min_sqnr_db``)."""
    optimized = run_pipeline(graph, ASIC_PIPELINE, dump_dir=dump_ir)
    feeds = calibration_feeds(calibration, optimized)
    qparams: dict[str, QParams] = {}

    def measure(names: set[str]) -> dict[str, QParams]:
        qparams.update(calibrate(optimized, names, feeds))
        return qparams

    if precision == "int8":
        program = quantize_graph(optimized, measure)
    else:
        from .precision import choose_bits

        program = choose_bits(optimized, measure, precision, target, feeds, min_sqnr_db)
    plan = plan_program(program)
    tiling, why = None, ""
    if plan.arena_bytes > target.sram_bytes:  # compute the early layers patch by patch
        fit = tile_to_fit(program, plan, target)
        program, plan, tiling, why = fit.program, fit.plan, fit.tiling, fit.why
    if plan.sram_bytes > target.sram_bytes and target.external_bytes:  # spill what stays over
        both = tile_and_spill(program, plan, target)  # (tiling what is cheapest to tile)
        far = plan_spilled(program, target.sram_bytes) if both is None else None
        if both is not None:
            program, plan, tiling = both.program, both.plan, both.tiling
        elif far is not None and far.external_bytes <= target.external_bytes:
            plan = far
        elif far is not None:
            why += (f"; spilling to external RAM needs {far.external_bytes:,} bytes of it, "
                    f"the target has {target.external_bytes:,}")
    _fits(graph.name, plan, program, target, why)
    return AsicBuild(target, optimized, program, plan,
                     schedule(program, target, plan.external_tensors()), qparams, feeds, tiling)


def sqnr_db(signal: float, noise: float) -> float:
    """10 log10(signal / noise), +inf when exact; rounded for reports."""
    if noise <= 0:
        return float("inf")
    return round(float(10 * np.log10(max(signal, 1e-30) / noise)), 2)


class Sqnr:
    """Signal and error energy per tensor, summed over samples: ``db()`` per name."""

    def __init__(self) -> None:
        self.sums: dict[str, list[float]] = {}

    def add(self, name: str, ref: np.ndarray, got: np.ndarray) -> None:
        ref = np.asarray(ref, np.float64)
        err = np.asarray(got, np.float64).reshape(ref.shape) - ref
        s = self.sums.setdefault(name, [0.0, 0.0])
        s[0] += float(np.sum(ref * ref))
        s[1] += float(np.sum(err * err))

    def db(self) -> dict[str, float]:
        return {n: sqnr_db(s, e) for n, (s, e) in self.sums.items()}


def layer_accuracy(b: AsicBuild) -> dict[str, float]:
    """SQNR (dB) of every int8 tensor against the float graph, on the calibration feeds."""
    names = [n for n in b.program.tensors if n in b.graph.values]
    acc = Sqnr()
    for feed in b.feeds[:SQNR_SAMPLES]:
        ref = run_float(b.graph, feed, set(names))
        ins = [feed[n] for n in b.program.inputs]
        got = run_reference(b.program, quantize_inputs(b.program, ins), keep=True)
        for n in names:
            t = b.program.tensors[n]
            acc.add(n, ref[n], dequantize(got[n], t.scale, t.zero_point))
    return acc.db()
