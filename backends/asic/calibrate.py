"""Post-training calibration: run the float graph on sample inputs, pick each tensor's int8 range.

Every tensor gets an asymmetric per-tensor range chosen among three candidates by the mean
squared quantization error on a sample of its values: min/max (never clips), the
0.01/99.99th percentiles (ignores rare outliers), and the best of a grid search over clipping
ratios of the min/max range (MSE search, as in TensorRT/ORT's entropy-free calibrators).
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError
from ...ir import Graph
from ...ir.interp import evaluate

SAMPLE = 1 << 16  # values kept per tensor to score the candidate ranges
RANDOM_SAMPLES = 8


@dataclass(frozen=True)
class QParams:
    scale: float
    zero_point: int
    lo: float  # the real range the int8 codes cover
    hi: float
    method: str  # which calibration candidate won
    amax: float = 0.0  # the largest |value| seen (0: unknown): an int16 range covers it all


def qparams(lo: float, hi: float, method: str = "minmax") -> QParams:
    """Asymmetric int8 parameters covering [lo, hi] widened to contain 0 (so 0 is exact)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = (hi - lo) / 255.0 if hi > lo else 1.0 / 255.0
    zp = int(np.clip(np.round(-128.0 - lo / scale), -128, 127))
    return QParams(scale, zp, scale * (-128 - zp), scale * (127 - zp), method)


def _mse(sample: np.ndarray, q: QParams) -> float:
    codes = np.clip(np.round(sample / q.scale) + q.zero_point, -128, 127)
    return float(np.mean(((codes - q.zero_point) * q.scale - sample) ** 2))


def choose(sample: np.ndarray, lo: float, hi: float) -> QParams:
    """The candidate range with the least quantization MSE on ``sample``."""
    cands = [qparams(lo, hi, "minmax")]
    if sample.size:
        p_lo, p_hi = np.percentile(sample, [0.01, 99.99])
        cands.append(qparams(p_lo, p_hi, "percentile"))
        cands += [qparams(lo * r, hi * r, "mse") for r in (0.9, 0.8, 0.7, 0.6, 0.5)]
    return min(cands, key=lambda q: _mse(sample, q))


class Stats:
    """Running min/max and a bounded random sample of one tensor's values."""

    def __init__(self, seed: int) -> None:
        self.lo, self.hi = np.inf, -np.inf
        self.parts: list[np.ndarray] = []
        self.rng = np.random.default_rng(seed)

    def add(self, x: np.ndarray, batches: int) -> None:
        flat = x.reshape(-1).astype(np.float64)
        flat = flat[np.isfinite(flat)]
        if flat.size == 0:
            return
        self.lo, self.hi = min(self.lo, flat.min()), max(self.hi, flat.max())
        keep = max(1, SAMPLE // max(batches, 1))
        self.parts.append(flat if flat.size <= keep else self.rng.choice(flat, keep, False))

    def result(self) -> QParams:
        if not self.parts:
            return qparams(0.0, 0.0)
        q = choose(np.concatenate(self.parts), self.lo, self.hi)
        return replace(q, amax=float(max(abs(self.lo), abs(self.hi))))


def _samples_of(x: Any, shape: tuple[int, ...], name: str, dtype: str) -> np.ndarray:
    """One array of calibration data for input ``name`` -> its samples stacked along the batch
    axis, ``[n, *shape[1:]]`` (``[n]`` of scalars for a rank-0 input). It may hold the input's
    exact shape, samples stacked along the batch axis (any number), or a list of batches
    stacked along a new first axis."""
    try:
        x = np.asarray(x)
    except (ValueError, TypeError) as e:  # ragged nested lists
        raise InputError(f"calibration data for input '{name}' is not an array: {e}") from e
    if np.issubdtype(np.dtype(dtype), np.floating) and not np.issubdtype(x.dtype, np.floating):
        # uint8 images taken as 0..255 would silently calibrate a model that expects, say,
        # [0, 1] or standardized inputs: the scaling is the user's preprocessing, say so
        raise InputError(f"calibration data for input '{name}' is {x.dtype}, the model takes "
                         f"{dtype}: convert it as the model's preprocessing does (e.g. "
                         f"x.astype(np.float32) / 255 for 8-bit images, or x.astype(np.float32) "
                         "if the model takes raw values)")
    # integer inputs (token ids, masks: asic/sequence.py) keep their dtype for onnxruntime
    x = x.astype(np.float32 if np.issubdtype(np.dtype(dtype), np.floating) else dtype)
    if not shape:
        if x.ndim <= 1:
            return x.reshape(-1)
    elif x.ndim == len(shape) and x.shape[1:] == shape[1:] and (
            len(shape) > 1 or x.shape[0] % shape[0] == 0):  # a vector input has no batch axis
        return x
    elif x.ndim == len(shape) + 1 and x.shape[1:] == shape:
        return x.reshape(-1, *shape[1:])
    raise InputError(f"calibration data for input '{name}' has shape {list(x.shape)}; expected "
                     f"{list(shape)} or samples stacked along the batch axis")


def _batch(shape: tuple[int, ...]) -> int:
    """The compiled batch size: the first axis (1 for a scalar or an empty input)."""
    return shape[0] if shape and shape[0] > 0 else 1


def _batches(rows: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]]
             ) -> list[dict[str, np.ndarray]]:
    """Samples stacked per input -> feeds of the compiled shapes. When the samples do not fill
    the last batch (10 samples for batch 4, or 256 for batch 360) it is completed by repeating
    the first samples, as a representative-dataset loop would go round: every sample is seen,
    and repeats do not move a range."""
    cut = {}
    for n, shape in shapes.items():
        batch, count = _batch(shape), len(rows[n])
        if count == 0:
            raise InputError(f"the calibration data for input '{n}' is empty")
        k = -(-count // batch)  # batches, the last one wrapping around
        cut[n] = rows[n][np.arange(k * batch) % count].reshape(k, *shape)
    k = len(next(iter(cut.values())))
    return [{n: c[i, ...] for n, c in cut.items()} for i in range(k)]


def calibration_feeds(calibration: Any, graph: Graph) -> list[dict[str, np.ndarray]]:
    """Normalize ``calibration`` (array, list of arrays or dicts, dict, or .npz path) into a
    list of feeds of the compiled shapes; None gives a few random normal inputs, with a
    warning. Samples are stacked along each input's batch axis and cut into batches of its
    compiled size (the last one completed with the first samples); integer data for a float
    input is refused (its scaling is the model's preprocessing, which sw2c cannot guess)."""
    shapes = {v.name: v.type.shape for v in graph.inputs}
    dtypes = {v.name: v.type.dtype for v in graph.inputs}
    if calibration is None:
        warnings.warn("no calibration data given: calibrating on random normal inputs; pass "
                      "calibration= (or --calibration FILE.npz) for int8 accuracy", stacklevel=3)
        rng = np.random.default_rng(0)
        return [{n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
                for _ in range(RANDOM_SAMPLES)]
    if isinstance(calibration, (str, os.PathLike)):
        calibration = _load_npz(Path(calibration), list(shapes))
    if isinstance(calibration, (np.ndarray, Mapping)):
        calibration = [calibration]
    elif isinstance(calibration, Iterable):  # a list, or a generator as TFLite's datasets
        calibration = list(calibration)
    else:
        raise InputError("calibration data must be an array, a list of arrays, a dict of arrays "
                         "keyed by input name, a list of such dicts or an .npz path; got "
                         f"{type(calibration).__name__}")
    parts: dict[str, list[np.ndarray]] = {n: [] for n in shapes}
    for item in calibration:
        if not isinstance(item, Mapping):  # samples of the one input
            if len(shapes) != 1:
                raise InputError(f"the model has inputs {list(shapes)}: give calibration data "
                                 "as a dict (or .npz) keyed by input name")
            item = {next(iter(shapes)): item}
        missing = set(shapes) - set(item)
        if missing:
            raise InputError(f"calibration data lacks input(s) {sorted(missing)}")
        rows = {n: _samples_of(item[n], s, n, dtypes[n]) for n, s in shapes.items()}
        # as many batches' worth of samples per input (inputs may differ in batch size)
        if len({len(r) / _batch(shapes[n]) for n, r in rows.items()}) > 1:
            raise InputError("calibration inputs hold different numbers of samples: "
                             + ", ".join(f"'{n}' {len(r)}" for n, r in rows.items()))
        for n, r in rows.items():
            parts[n].append(r)
    if not shapes:
        return [{}]
    if not any(parts.values()):
        raise InputError("the calibration data is empty")
    return _batches({n: np.concatenate(p) for n, p in parts.items()}, shapes)


def _load_npz(path: Path, names: list[str]) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read calibration file {path}: {e}") from e
    if len(names) == 1 and len(data) == 1:  # one array for the one input, whatever its key
        return {names[0]: next(iter(data.values()))}
    return data


def _progress(items: list, desc: str) -> Iterable:
    if not sys.stderr.isatty():
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="sample", leave=False)


def run_float(graph: Graph, feeds: Mapping[str, np.ndarray], keep: set[str]) -> dict[str, Any]:
    """The float reference on one feed, returning the values named in ``keep`` only."""
    last = {}
    for i, n in enumerate(graph.nodes):
        for x in n.inputs:
            last[x] = i
    env = {v.name: np.asarray(feeds[v.name], np.float32).reshape(v.type.shape)
           for v in graph.inputs}
    out = {k: env[k] for k in keep if k in env}
    for i, node in enumerate(graph.nodes):
        env[node.name] = evaluate(node, [env[x] for x in node.inputs])
        if node.name in keep:
            out[node.name] = env[node.name]
        for x in set(node.inputs):
            if last.get(x) == i and x not in keep:
                env.pop(x, None)
    return out


def calibrate(graph: Graph, names: set[str], feeds: list[dict[str, np.ndarray]]
              ) -> dict[str, QParams]:
    """The int8 parameters of every tensor in ``names``, from the float graph on ``feeds``."""
    stats = {n: Stats(i) for i, n in enumerate(sorted(names))}
    for feed in _progress(feeds, "calibrating"):
        for n, x in run_float(graph, feed, names).items():
            stats[n].add(x, len(feeds))
    return {n: s.result() for n, s in stats.items()}


def params16(q: QParams) -> QParams:
    """The int16 parameters of a tensor calibrated as ``q`` (TFLite's 16x8): symmetric, zero
    point 0, the whole range seen (no clipping: 16 bits resolve it 256 times finer)."""
    amax = q.amax if q.amax > 0 else max(abs(q.lo), abs(q.hi))
    scale = amax / 32767.0 if amax > 0 else 1.0 / 32767.0
    return QParams(scale, 0, -32768 * scale, 32767 * scale, q.method, amax)
