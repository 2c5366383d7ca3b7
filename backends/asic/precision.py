"""Per-layer precision of the asic target: ``int8``, ``int16`` (TFLite's 16x8: int16
activations, int8 weights) or ``auto``, the cheapest mix that meets an accuracy budget.

A layer is a region that computes a fresh tensor (moves keep their input's precision). The
``auto`` search is deterministic and greedy on the calibration data: starting from all int8,
it promotes to int16, one at a time, the layer that buys the most output SQNR per pJ of
energy added (energy from the target file through the schedule; conversions between int8
and int16 layers included), until the output SQNR meets ``min_sqnr_db``; then each promoted
layer is demoted again if the budget still holds without it; of every mix it scored that
meets the budget (all int16 among them), the cheapest wins. Over GREEDY_LAYERS layers (an
unrolled LSTM has ~100) the layers are ranked once, not every round, and the shortest
prefix of that ranking that meets the budget is found by bisection, and only the last
GREEDY_LAYERS promotions are tried for demotion. (Ranking, in every greedy round too, is on
RANK_SAMPLES feeds; whether a mix meets the budget, on all SEARCH_SAMPLES.)

The SQNR is scored on SEARCH_SAMPLES calibration feeds spread over the whole set (scored on
the first 8 only, the search fit those 8: a trained digits transformer's mix read 35.5 dB on
them, 32.9 dB on all 256 calibration images and 32.8 dB held out). A mix meets the budget
when that estimate less CONFIDENCE_Z standard errors does (the margin capped at all int16's
own excess over the budget, so it never makes a reachable budget unreachable), and so does
the SQNR on the first REPORT_SAMPLES feeds, which verify=True reports. The feeds run
stacked (batched.py).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from ...errors import ModelError, Sw2cError, Sw2cWarning, check_choice
from ...ir import Graph
from .batched import run_batched
from .calibrate import QParams, run_float
from .fixed_point import dequantize
from .lower import INT16_KINDS, SAME_SCALE, fresh_tensors, lower
from .match import Region, match
from .program import QProgram
from .reference import quantize_inputs, run_reference
from .schedule import schedule
from .sequence_match import recurrent_states
from .target import Target

PRECISIONS = ("int8", "int16", "auto")
SEARCH_SAMPLES = 48  # calibration feeds the auto search scores each candidate on
RANK_SAMPLES = 8  # of those, the feeds that rank the layers of a model over GREEDY_LAYERS
GREEDY_LAYERS = 24  # up to this many layers, every greedy round re-scores each candidate
CONFIDENCE_Z = 2.0  # standard errors of margin the search keeps over the budget (Measure)
REPORT_SAMPLES = 8  # the first calibration feeds, on which verify=True reports the SQNR


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


def spread(feeds: list[dict[str, np.ndarray]], count: int) -> list[dict[str, np.ndarray]]:
    """``count`` feeds evenly spaced over ``feeds`` (all of them when there are fewer), in an
    order whose every prefix is spread too (the first RANK_SAMPLES rank the layers)."""
    if len(feeds) <= count:
        return list(feeds)
    picks = np.linspace(0, len(feeds), count, endpoint=False).astype(int)
    order = sorted(range(count), key=lambda k: (_bit_reverse(k, count), k))
    return [feeds[picks[k]] for k in order]


def _bit_reverse(k: int, count: int) -> int:
    bits = max(count - 1, 1).bit_length()
    return int(format(k, f"0{bits}b")[::-1], 2)


@dataclass(frozen=True)
class Measure:
    """A program's output SQNR (dB, the worst output's) on the search feeds, that estimate's
    standard error (dB), the SQNR on the report's feeds, and the energy (pJ)."""

    db: float
    se: float
    report_db: float
    energy: float

    def margin_db(self, allowance: float) -> float:
        """The SQNR the search holds against the budget: the estimate less CONFIDENCE_Z
        standard errors (no more than ``allowance``), and never over the report's."""
        return min(self.db - min(CONFIDENCE_Z * self.se, allowance), self.report_db)


FAILED = Measure(-np.inf, 0.0, -np.inf, np.inf)


@dataclass
class Search:
    """Scores mixes of precisions: ``feeds`` are all the calibration feeds; the search runs
    SEARCH_SAMPLES of them spread over the set, and the first REPORT_SAMPLES (those
    verify=True reports the output SQNR on)."""

    graph: Graph
    regions: list[Region]
    views: Mapping[str, str]
    qparams: Mapping[str, QParams]
    feeds: list[dict[str, np.ndarray]]
    target: Target
    floor: Mapping[str, int] = field(default_factory=dict)  # layers never below these bits
    evaluations: int = 0
    batched: bool = True  # run the feeds stacked (batched.py) while that agrees

    def __post_init__(self) -> None:
        spreads = spread(self.feeds, SEARCH_SAMPLES)
        pool = {id(f): f for f in [*spreads, *self.feeds[:REPORT_SAMPLES]]}
        self.pool = list(pool.values())
        where = {k: i for i, k in enumerate(pool)}
        self.spread_at = [where[id(f)] for f in spreads]
        self.report_at = [where[id(f)] for f in self.feeds[:REPORT_SAMPLES]]
        outs = set(self.graph.outputs)
        self.refs = [run_float(self.graph, f, outs) for f in self.pool]

    def program(self, bits: Mapping[str, int]) -> QProgram:
        return lower(self.graph, self.qparams, self.regions, self.views,
                     {**bits, **self.floor})

    def measure(self, bits: Mapping[str, int], samples: int | None = None) -> Measure:
        """The program with precisions ``bits`` measured on every feed, or (ranking) its
        estimate alone on the first ``samples`` spread feeds."""
        self.evaluations += 1
        try:
            p = self.program(bits)
        except ModelError:  # (a multiplier out of an int16 kernel's range): not a candidate
            return FAILED
        at = self.spread_at[:samples] if samples else list(range(len(self.pool)))
        codes = self.run(p, [self.pool[i] for i in at])
        signal = {n: np.zeros(len(self.pool)) for n in p.outputs}  # per output, per feed
        noise = {n: np.zeros(len(self.pool)) for n in p.outputs}
        for i, got in zip(at, codes):
            for n in p.outputs:
                t = p.tensors[n]
                r = np.asarray(self.refs[i][n], np.float64).reshape(-1)
                e = dequantize(got[n], t.scale, t.zero_point).reshape(-1) - r
                signal[n][i] = float(r @ r)
                noise[n][i] = float(e @ e)
        # energy is linear in a cost's counts: summing energies skips Cost.__add__
        pj = float(sum(c.energy_pj(self.target) for c in schedule(p, self.target)))
        if samples:
            return Measure(min(sqnr(signal[n][at], noise[n][at])[0] for n in p.outputs), 0.0,
                           np.inf, pj)
        worst = min(p.outputs, key=lambda n: sqnr(signal[n][self.spread_at],
                                                 noise[n][self.spread_at])[0])
        db, se = sqnr(signal[worst][self.spread_at], noise[worst][self.spread_at])
        report = min(sqnr(signal[n][self.report_at], noise[n][self.report_at])[0]
                     for n in p.outputs)
        return Measure(db, se, report, pj)

    def run(self, p: QProgram, feeds: list[dict[str, np.ndarray]]
            ) -> list[dict[str, np.ndarray]]:
        """The reference's output codes of ``p`` per feed: all feeds at once (batched.py)
        when that gives the reference's codes on the first feed, else one by one."""
        qs = [quantize_inputs(p, [f[n] for n in p.inputs]) for f in feeds]
        first = run_reference(p, qs[0])
        if self.batched and len(qs) > 1:
            try:
                stacked = run_batched(p, [np.stack(x) for x in zip(*qs)])
            except Exception:  # a step that does not stack: the exact path below is the same
                stacked = None
            if stacked is not None and all(np.array_equal(stacked[n][0], first[n])
                                           for n in p.outputs):
                return [{n: stacked[n][k] for n in p.outputs} for k in range(len(qs))]
            self.batched = False  # (never seen: a kind batched.py stacks wrongly)
        return [first, *(run_reference(p, q) for q in qs[1:])]


def sqnr(signal: np.ndarray, noise: np.ndarray) -> tuple[float, float]:
    """10 log10(sum signal / sum noise) over the feeds, and the standard error of that
    estimate (dB; the delta method on the per-feed energies: a mix the search picks sits
    just over the budget on the feeds it was scored on, and unseen inputs scatter around
    the estimate by about that much)."""
    s, n = float(signal.sum()), float(noise.sum())
    if n <= 0:
        return np.inf, 0.0
    db = 10 * np.log10(max(s, 1e-30) / n)
    if len(signal) < 2 or s <= 0:
        return db, 0.0
    # d log(S/N) = dS/S - dN/N; the per-feed terms' spread estimates its standard error
    terms = signal / signal.mean() - noise / noise.mean()
    return db, float(10 / np.log(10) * np.std(terms, ddof=1) / np.sqrt(len(terms)))


Score = Callable[[dict[str, int]], tuple[float, float]]


def auto_bits(search: Search, budget: float) -> dict[str, int]:
    """The cheapest precisions found that meet ``budget`` dB (see the module doc); all int16
    with a warning when even that misses it."""
    layers = candidates(search.regions)
    tried: dict[tuple[int, ...], tuple[float, float]] = {}
    quick: dict[tuple[int, ...], tuple[float, float]] = {}
    top = {n: 16 for n in layers}
    best = search.measure(top)
    # the margin never makes a budget that all int16 meets on the estimate unreachable
    allowance = max(best.db - budget, 0.0)

    def score(bits: dict[str, int]) -> tuple[float, float]:
        key = tuple(bits[n] for n in layers)
        if key not in tried:
            m = best if key == tuple(top.values()) else search.measure(bits)
            tried[key] = (m.margin_db(allowance), m.energy)
        return tried[key]

    def rank_score(bits: dict[str, int]) -> tuple[float, float]:
        key = tuple(bits[n] for n in layers)
        if key not in quick:
            m = search.measure(bits, RANK_SAMPLES)
            quick[key] = (m.db, m.energy)
        return quick[key]

    base = {n: 8 for n in layers}
    if score(base)[0] >= budget:
        return base
    if score(top)[0] < budget:
        warnings.warn(Sw2cWarning(
            f"precision='auto': even all int16 reaches {score(top)[0]:.1f} dB, under "
            f"min_sqnr_db={budget:g}; every layer is int16"), stacklevel=3)
        return top
    if len(layers) > GREEDY_LAYERS:
        bits = _bisect(score, _rank(rank_score, layers, dict(base)), dict(base), budget)
    else:
        bits = _promote(score, rank_score, layers, dict(base), budget)
    promoted = [n for n in layers if bits[n] == 16]
    for n in reversed(promoted[-GREEDY_LAYERS:]):  # drop promotions later ones made unneeded
        if score(trial := {**bits, n: 8})[0] >= budget:
            bits = trial
    # the cheapest of everything tried that meets the budget (all int16 included)
    cheapest = min((e, key) for key, (db, e) in tried.items() if db >= budget)[1]
    return dict(zip(layers, cheapest))


def _rank(score: Score, layers: list[str], bits: dict[str, int]) -> list[str]:
    """The int8 layers of ``bits``, best promotion first: one that saves energy, then the
    most dB per pJ; one that cannot be lowered in int16 last."""
    db, energy = score(bits)
    ranked = []
    for k, n in enumerate(layers):
        if bits[n] == 8:
            d, e = score({**bits, n: 16})
            cost = e - energy
            if not np.isfinite(d):
                key = (2, 0.0)
            else:
                key = (0, -(d - db)) if cost <= 0 else (1, -(d - db) / cost)
            ranked.append((key, k, n))
    return [n for _, _, n in sorted(ranked)]


def _promote(score: Score, rank_score: Score, layers: list[str], bits: dict[str, int],
             budget: float) -> dict[str, int]:
    """Greedy: promote the best-ranked layer (ranked by ``rank_score``), re-ranking every
    round, until ``bits`` meets ``budget`` by ``score``."""
    while score(bits)[0] < budget and any(bits[n] == 8 for n in layers):
        bits[_rank(rank_score, layers, bits)[0]] = 16
    return bits


def _bisect(score: Score, order: list[str], bits: dict[str, int],
            budget: float) -> dict[str, int]:
    """``bits`` with the shortest prefix of ``order`` promoted that meets ``budget`` (the
    whole order, all int16, meets it), by bisection on the prefix length."""
    def promoted(k: int) -> dict[str, int]:
        return {**bits, **dict.fromkeys(order[:k], 16)}

    lo, hi = 0, len(order)  # prefix lo misses the budget, prefix hi meets it
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if score(promoted(mid))[0] >= budget:
            hi = mid
        else:
            lo = mid
    return promoted(hi)


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
    search = Search(graph, regions, views, qparams, feeds, target, floor)
    bits = auto_bits(search, float(budget))
    return search.program({n: bits.get(n, 8) for n in layers})
