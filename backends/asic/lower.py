"""Lower the optimized float graph to the int8 program (post-training static quantization).

Regions from ``match`` become steps; calibration gives each fresh tensor its scale and zero
point; moves (transpose, slice, pad, max pool, reshape) keep their input's. Weights are
symmetric int8 per output channel; the accumulator scale is s_x * s_w[c]; the folded epilogue
(bias, BN scale, average divisor) becomes an int32 bias and the requantization multiplier; a
ReLU/Clip becomes the requantization clamp.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from ...errors import ModelError, blame
from ...ir import Graph
from ...ir.interp import apply
from .calibrate import QParams
from .fixed_point import (
    ALL_CODES,
    I32_MAX,
    I32_MIN,
    Q_MAX,
    Q_MIN,
    dequantize,
    quantize,
    quantize_multiplier,
)
from .match import ACCUMULATING, Region, channel_constant, match
from .program import Kind, QProgram, QTensor, Requant, Step, Window

ADD_LEFT_SHIFT = 20  # TFLite's headroom for the rescaled addends
SAME_SCALE = frozenset({Kind.MAX_POOL, Kind.TRANSPOSE, Kind.SLICE, Kind.PAD})  # exact moves
SOFTMAX_OUT = QParams(1 / 256, -128, 0.0, 255 / 256, "fixed")  # probabilities, as TFLite


def fresh_tensors(graph: Graph, regions: list[Region]) -> set[str]:
    """The tensors whose range calibration must measure (the others inherit theirs; a pad's
    is measured in case its value lies outside its input's range)."""
    return {v.name for v in graph.inputs} | {
        r.output for r in regions if (r.kind not in SAME_SCALE or r.kind is Kind.PAD)
        and r.kind is not Kind.SOFTMAX}


def _output_params(r: Region, x: QTensor, qparams: Mapping[str, QParams]) -> QTensor | QParams:
    """Moves keep their input's scale, unless a pad value falls outside its codes (a -1 pad
    on a ReLU output): that pad gets its calibrated scale and reads a rescaled input."""
    if r.kind is Kind.SOFTMAX:
        return SOFTMAX_OUT
    if r.kind not in SAME_SCALE:
        return qparams[r.output]
    if r.kind is Kind.PAD:
        value = float(r.anchor.attrs["value"])
        if not x.scale * (Q_MIN - x.zero_point) <= value <= x.scale * (Q_MAX - x.zero_point):
            return qparams[r.output]
    return x


def _code(value: float, q: QTensor | QParams) -> int:
    """The int8 code of a real value (saturating; -inf -> -128)."""
    if value == -np.inf:
        return Q_MIN
    return int(np.clip(np.round(value / q.scale) + q.zero_point, Q_MIN, Q_MAX))


def _window(r: Region, x: QTensor) -> tuple[Window | None, int]:
    if r.window is None:
        return None, 0
    a = r.window.attrs
    return (Window(tuple(a["kernel"]), tuple(a["strides"]), tuple(a["dilations"]),
                   tuple(a["pads"])), _code(a["pad"], x))


def _weights(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float [..., C] -> int8 symmetric per channel (the last axis), and the scales [C]."""
    amax = np.abs(w.reshape(-1, w.shape[-1])).max(axis=0).astype(np.float64)
    scale = np.where(amax > 0, amax / 127.0, 1.0)
    return np.clip(np.round(w / scale), -127, 127).astype(np.int8), scale


def _compress(a: np.ndarray) -> np.ndarray:
    """A per-position array -> [C] when it varies along the channels only."""
    return a.reshape(-1, a.shape[-1])[0] if channel_constant(a) else a


def _requant(real: np.ndarray, y: QTensor, clamp: tuple[float, float] | None) -> Requant:
    mult, shift = quantize_multiplier(_compress(real))
    lo, hi = (Q_MIN, Q_MAX) if clamp is None else (_code(clamp[0], y), _code(clamp[1], y))
    return Requant(mult, shift, y.zero_point, lo, hi)


def _accumulating(r: Region, x: QTensor, y: QTensor, s: Step) -> None:
    """Weights, bias and requantization of a conv, depthwise conv or sum pool."""
    s_acc = np.float64(x.scale)
    taps = 1
    if r.weights is not None:
        w = r.weights if r.kind is Kind.CONV else np.broadcast_to(
            r.weights, (*r.window.attrs["kernel"], r.anchor.type.shape[-1]))
        s.consts["weights"], s_w = _weights(w)
        s_acc = s_acc * s_w
        taps = w.shape[0] if r.kind is Kind.CONV else int(np.prod(w.shape[:-1]))
    elif r.window is not None:
        taps = int(np.prod(r.window.attrs["kernel"]))
    else:  # a global pool: the reduced axes
        taps = x.size // max(1, int(np.prod(r.anchor.type.shape)))
    if taps * 255 * 128 >= I32_MAX // 2:
        raise ModelError(f"node '{r.anchor.origin}': {taps} taps could overflow the int32 "
                         "accumulator; split the layer")
    gain, offset = r.gain.reshape(y.shape), r.offset.reshape(y.shape)
    if r.kind in (Kind.CONV, Kind.DEPTHWISE):
        bias = _compress(offset / gain)  # in real units, per channel
        s.consts["bias"] = np.clip(np.round(bias / s_acc), I32_MIN, I32_MAX).astype(np.int32)
    s.requant = _requant(s_acc * gain / y.scale, y, r.clamp)


def _two_tensor(r: Region, a: QTensor, b: QTensor, y: QTensor, s: Step) -> None:
    if r.kind is Kind.MUL:
        s.requant = _requant(np.array([a.scale * b.scale / y.scale]), y, r.clamp)
        return
    twice_max = 2 * max(a.scale, b.scale)
    s.attrs["left_shift"] = ADD_LEFT_SHIFT
    s.attrs["a"] = tuple(int(v[0]) for v in quantize_multiplier(np.array([a.scale / twice_max])))
    s.attrs["b"] = tuple(int(v[0]) for v in quantize_multiplier(np.array([b.scale / twice_max])))
    real = twice_max / ((1 << ADD_LEFT_SHIFT) * y.scale)
    s.requant = _requant(np.array([real]), y, r.clamp)


def lut_table(graph: Graph, r: Region, x: QTensor, y: QTensor) -> np.ndarray:
    """Evaluate the region's float tree on every int8 code: [256] or [C, 256] (C along
    ``r.axis``)."""
    channels = r.anchor.type.shape[r.axis] if r.axis is not None else 1
    env = {x.name: dequantize(ALL_CODES, x.scale, x.zero_point)[:, None]}  # [256, 1]
    for node in r.nodes:
        ins = [env[i] if i in env else graph.const(i).reshape(-1)[None, :] for i in node.inputs]
        with np.errstate(all="ignore"):
            env[node.name] = apply(node, ins).astype(np.float32)
    real = np.broadcast_to(env[r.output], (256, channels))
    table = quantize(np.nan_to_num(real, nan=0.0), y.scale, y.zero_point).T  # [C, 256]
    return table[0].copy() if np.all(table == table[:1]) else np.ascontiguousarray(table)


def lower(graph: Graph, qparams: Mapping[str, QParams], regions: list[Region],
          views: Mapping[str, str]) -> QProgram:
    """The int8 program of ``graph`` given every fresh tensor's calibrated parameters."""
    tensors: dict[str, QTensor] = {}

    def define(name: str, q: QParams | QTensor, view_of: str = "") -> QTensor:
        t = QTensor(name, graph.type_of(name).shape, q.scale, q.zero_point, view_of)
        tensors[name] = t
        return t

    def get(name: str) -> QTensor:
        if name not in tensors:  # a reshape view
            define(name, get(views[name]), views[name])
        return tensors[name]

    for v in graph.inputs:
        define(v.name, qparams[v.name])
    steps: list[Step] = []
    for r in regions:
        xs = [get(i) for i in r.sources]
        y = define(r.output, _output_params(r, xs[0], qparams))
        if r.kind is Kind.PAD:
            xs = [_rescaled(xs[0], y, r.anchor.origin, steps, tensors)]
        s = Step(r.kind, tuple(t.name for t in xs), y.name, r.anchor.origin or r.anchor.name,
                 fused=tuple(n.name for n in r.nodes))
        try:
            with blame(f"node '{s.origin}'"):
                _fill(graph, r, xs, y, s)
        except ValueError as e:  # a requantization multiplier out of range
            raise ModelError(f"node '{s.origin}': cannot quantize ({e}); check the "
                             "calibration data") from e
        steps.append(s if r.kind is not Kind.CONCAT else _concat(s, xs, y, steps, tensors))
    for name in graph.outputs:
        get(name)
    return QProgram(graph.name, tensors, tuple(v.name for v in graph.inputs),
                    tuple(graph.outputs), tuple(steps))


def _fill(graph: Graph, r: Region, xs: list[QTensor], y: QTensor, s: Step) -> None:
    """The integer parameters of one step, by kind."""
    if r.window is not None:
        s.attrs["window"], s.attrs["pad"] = _window(r, xs[0])
    if r.kind in ACCUMULATING:
        _accumulating(r, xs[0], y, s)
        if r.window is None and r.kind is Kind.SUM_POOL:
            s.attrs["axes"] = tuple(r.anchor.attrs["axes"])
    elif r.kind is Kind.MAX_POOL and r.window is None:
        s.attrs["axes"] = tuple(r.anchor.attrs["axes"])
    elif r.kind in (Kind.ADD, Kind.SUB, Kind.MUL):
        _two_tensor(r, xs[0], xs[1], y, s)
    elif r.kind is Kind.LUT:
        s.consts["table"] = lut_table(graph, r, xs[0], y)
        if s.consts["table"].ndim == 2:
            s.attrs["axis"] = r.axis
    elif r.kind is Kind.SOFTMAX:
        _softmax(r, xs[0], s)
    elif r.kind is Kind.CONCAT:
        s.attrs["axis"] = r.anchor.attrs["axis"]
    else:
        s.attrs.update({k: r.anchor.attrs[k] for k in ("perm", "starts", "steps", "pads")
                        if k in r.anchor.attrs})
        if r.kind is Kind.PAD:
            s.attrs["value"] = _code(float(r.anchor.attrs["value"]), y)


def _softmax(r: Region, x: QTensor, s: Step) -> None:
    """The Q15 table of exp(d * s_x) for every difference d = x - max in [-255, 0]."""
    axes = tuple(r.anchor.attrs["axes"])
    count = int(np.prod([x.shape[a] for a in axes]))
    if count >= 1 << 16:
        raise ModelError(f"node '{r.anchor.origin}': a softmax over {count} elements could "
                         "overflow its int32 sum")
    d = np.arange(-255, 1, dtype=np.float64)
    s.consts["exp"] = np.round(np.exp(d * x.scale) * (1 << 15)).astype(np.int32)
    s.attrs["axes"] = axes


def _rescaled(x: QTensor, y: QTensor, origin: str, steps: list[Step],
              tensors: dict[str, QTensor]) -> QTensor:
    """x on y's scale and zero point: x itself, or a copy made by a table (one per target
    scale: another consumer of x may need another one)."""
    if (x.scale, x.zero_point) == (y.scale, y.zero_point):
        return x
    name, k = f"{x.name}.rescaled", 0
    while name in tensors and (tensors[name].scale, tensors[name].zero_point) != (
            y.scale, y.zero_point):
        k += 1
        name = f"{x.name}.rescaled{k}"
    if name not in tensors:
        tensors[name] = QTensor(name, x.shape, y.scale, y.zero_point)
        real = dequantize(ALL_CODES, x.scale, x.zero_point)
        steps.append(Step(Kind.LUT, (x.name,), name, origin,
                          consts={"table": quantize(real, y.scale, y.zero_point)}))
    return tensors[name]


def _concat(s: Step, xs: list[QTensor], y: QTensor, steps: list[Step],
            tensors: dict[str, QTensor]) -> Step:
    """Concat copies bytes, so inputs on another scale are first rescaled by a table."""
    inputs = tuple(_rescaled(x, y, s.origin, steps, tensors).name for x in xs)
    return Step(Kind.CONCAT, inputs, s.output, s.origin, s.attrs, fused=s.fused)


def quantize_graph(graph: Graph,
                   calibrate_fn: Callable[[set[str]], Mapping[str, QParams]]) -> QProgram:
    """match -> calibrate (``calibrate_fn(names) -> qparams``) -> lower."""
    regions, views = match(graph)
    return lower(graph, calibrate_fn(fresh_tensors(graph, regions)), regions, views)
