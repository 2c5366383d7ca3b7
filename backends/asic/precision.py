"""Per-layer precision of the asic target: ``int8``, ``int16`` (TFLite's 16x8: int16
activations, int8 weights) or ``auto``, the cheapest mix that meets an accuracy budget.

A layer is a region that computes a fresh tensor (moves keep their input's precision). The
``auto`` search is deterministic and greedy on the calibration data: starting from all int8,
it promotes to int16, one at a time, the layer that buys the most output SQNR per pJ of
energy added (energy from the target file through the schedule; conversions between int8
and int16 layers included), until the output SQNR meets ``min_sqnr_db``; then each promoted
layer is demoted again if the budget still holds without it; of every mix it scored that
meets the budget (all int16 among them), the cheapest wins.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from ...errors import ModelError, Sw2cError, Sw2cWarning, check_choice
from ...ir import Graph
from .calibrate import QParams, run_float
from .fixed_point import dequantize
from .lower import INT16_KINDS, SAME_SCALE, fresh_tensors, lower
from .match import Region, match
from .program import QProgram
from .reference import quantize_inputs, run_reference
from .schedule import Cost, schedule
from .sequence_match import recurrent_states
from .target import Target

PRECISIONS = ("int8", "int16", "auto")
SEARCH_SAMPLES = 8  # calibration feeds the auto search scores each candidate on
GREEDY_LAYERS = 24  # up to this many layers, every greedy round re-scores each candidate


def check_precision(precision: str, min_sqnr_db: float | None) -> str:
    """The asic precision word (``"fp32"``, the compile default, means int8); Sw2cError for
    anything else, or for ``auto`` without a budget."""
    word = "int8" if precision == "fp32" else precision
    check_choice("precision", word, PRECISIONS)
    if word == "auto" and min_sqnr_db is None:
        raise Sw2cError("precision='auto' picks each layer's precision to meet min_sqnr_db: "
                        "give min_sqnr_db= (--min-sqnr-db), e.g. 35")
    return word


def candidates(regions: list[Region]) -> list[str]:
    """The layers whose precision can be chosen: fresh outputs of kinds with an int16 kernel."""
    return [r.output for r in regions if r.kind in INT16_KINDS and r.kind not in SAME_SCALE]


@dataclass
class Search:
    """What the auto search tried: SQNR (dB, the worst output's) and energy (pJ) per bit map."""

    graph: Graph
    regions: list[Region]
    views: Mapping[str, str]
    qparams: Mapping[str, QParams]
    feeds: list[dict[str, np.ndarray]]
    target: Target
    floor: Mapping[str, int] = field(default_factory=dict)  # layers never below these bits
    evaluations: int = 0

    def __post_init__(self) -> None:
        outs = set(self.graph.outputs)
        self.refs = [run_float(self.graph, f, outs) for f in self.feeds]

    def program(self, bits: Mapping[str, int]) -> QProgram:
        return lower(self.graph, self.qparams, self.regions, self.views,
                     {**bits, **self.floor})

    def score(self, bits: Mapping[str, int]) -> tuple[float, float]:
        """(output SQNR in dB, energy in pJ) of the program with precisions ``bits``."""
        self.evaluations += 1
        try:
            p = self.program(bits)
        except ModelError:  # (a multiplier out of an int16 kernel's range): not a candidate
            return -np.inf, np.inf
        signal = {n: 0.0 for n in p.outputs}
        noise = dict(signal)
        for feed, ref in zip(self.feeds, self.refs):
            got = run_reference(p, quantize_inputs(p, [feed[n] for n in p.inputs]))
            for n in p.outputs:
                t = p.tensors[n]
                r = np.asarray(ref[n], np.float64).reshape(-1)
                e = dequantize(got[n], t.scale, t.zero_point).reshape(-1) - r
                signal[n] += float(r @ r)
                noise[n] += float(e @ e)
        db = min((10 * np.log10(max(signal[n], 1e-30) / noise[n]) if noise[n] > 0
                  else np.inf) for n in p.outputs)
        energy = sum(schedule(p, self.target), Cost()).energy_pj(self.target)
        return float(db), float(energy)


def auto_bits(search: Search, budget: float) -> dict[str, int]:
    """The cheapest precisions found that meet ``budget`` dB (see the module doc); all int16
    with a warning when even that misses it."""
    layers = candidates(search.regions)
    tried: dict[tuple[int, ...], tuple[float, float]] = {}

    def score(bits: dict[str, int]) -> tuple[float, float]:
        key = tuple(bits[n] for n in layers)
        if key not in tried:
            tried[key] = search.score(bits)
        return tried[key]

    base = {n: 8 for n in layers}
    if score(base)[0] >= budget:
        return base
    top = {n: 16 for n in layers}
    if score(top)[0] < budget:
        warnings.warn(Sw2cWarning(
            f"precision='auto': even all int16 reaches {score(top)[0]:.1f} dB, under "
            f"min_sqnr_db={budget:g}; every layer is int16"), stacklevel=3)
        return top
    bits = _promote(score, layers, dict(base), budget)
    for n in reversed(layers):  # drop promotions the later ones made unnecessary
        if bits[n] == 16 and score(trial := {**bits, n: 8})[0] >= budget:
            bits = trial
    # the cheapest of everything tried that meets the budget (all int16 included)
    best = min((e, key) for key, (db, e) in tried.items() if db >= budget)[1]
    return dict(zip(layers, best))


def _promote(score: Callable[[dict[str, int]], tuple[float, float]], layers: list[str],
             bits: dict[str, int], budget: float) -> dict[str, int]:
    """Greedy: promote the layer that buys the most dB per pJ (a promotion that saves energy
    first), until ``bits`` meets ``budget``. Each round re-scores every remaining layer, or,
    over GREEDY_LAYERS layers, only the first round is scored and its order kept."""
    db, energy = score(bits)
    order: list[str] | None = None
    while db < budget and any(bits[n] == 8 for n in layers):
        if order is None:
            ranked = []
            for k, n in enumerate(layers):
                if bits[n] == 8:
                    d, e = score({**bits, n: 16})
                    cost = e - energy
                    if not np.isfinite(d):  # cannot be lowered in int16: last
                        key = (2, 0.0)
                    else:
                        key = (0, -(d - db)) if cost <= 0 else (1, -(d - db) / cost)
                    ranked.append((key, k, n))
            ranked.sort()
            if len(layers) > GREEDY_LAYERS:
                order = [n for _, _, n in ranked]
            pick = ranked[0][2]
        else:
            pick = next(n for n in order if bits[n] == 8)
        bits[pick] = 16
        db, energy = score(bits)
    return bits


def choose_bits(graph: Graph, calibrate_fn: Callable[[set[str]], Mapping[str, QParams]],
                precision: str, target: Target, feeds: list[dict[str, np.ndarray]],
                budget: float | None) -> QProgram:
    """The program of ``graph`` at ``precision`` (int8, int16, or auto to ``budget`` dB)."""
    regions, views = match(graph)
    layers = candidates(regions)
    names = fresh_tensors(graph, regions)
    qparams = dict(calibrate_fn(names))
    extra = {r.output for r in regions} - names
    if precision != "int8" and extra:  # a conversion back to int8 needs every layer's range
        qparams.update(calibrate_fn(extra))  # (apart: the int8 ranges stay int8's own)
    if precision == "int8":
        return lower(graph, qparams, regions, views)
    if precision == "int16":
        return lower(graph, qparams, regions, views, {r.output: 16 for r in regions})
    # the recurrent state of an unrolled LSTM/GRU cell stays int16, as in int8 mode
    floor = dict.fromkeys(recurrent_states(regions), 16)
    search = Search(graph, regions, views, qparams, feeds[:SEARCH_SAMPLES], target, floor)
    bits = auto_bits(search, float(budget))
    return search.program({n: bits.get(n, 8) for n in layers})
