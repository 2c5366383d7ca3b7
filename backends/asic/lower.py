"""Lower the optimized float graph to the int8 program (post-training static quantization).

Regions from ``match`` become steps; calibration gives each fresh tensor its scale and zero
point; moves (transpose, slice, pad, max pool, reshape) keep their input's. Weights are
symmetric int8 per output channel; the accumulator scale is s_x * s_w[c]; the folded epilogue
(bias, BN scale, average divisor) becomes an int32 bias and the requantization multiplier; a
ReLU/Clip becomes the requantization clamp. A matmul of two activations requantizes
s_a s_b / s_y; a softmax takes an exp table sized to its input's scale, its mask in input
codes and an output scale from ``softmax_params``; a constant operand of add/sub/mul/concat is
an int8 tensor loaded by a CONST step (``_load_const``). No constant saturates silently: a
bias over 2^30 codes grows its channel's weight scale until it fits (``_fit_bias``); one no
scale can hold warns (``SaturationWarning``) naming the layer; a multiplier out of range is a
ModelError.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping

import numpy as np

from ...errors import ModelError, SaturationWarning, UnsupportedOpError, blame
from ...ir import Graph
from ...ir.interp import apply
from .calibrate import QParams, choose, params16
from .fixed_point import (
    ALL_CODES,
    I32_MAX,
    I32_MIN,
    code_range,
    dequantize,
    quantize,
    quantize_multiplier,
)
from .match import ACCUMULATING, Region, channel_constant, match
from .program import Kind, QProgram, QTensor, Requant, Step, Window
from .reference import ABSORBING, LUT16_ENTRIES, MASK_LIMIT, MASK_WEIGHT_MAX, lut16
from .sequence import fill_gather, fill_layer_norm, index_inputs, share_constants
from .sequence_match import recurrent_states

ADD_LEFT_SHIFT = 20  # TFLite's headroom for the rescaled addends
# the largest int32 bias: half the range, so that bias + the sum of products (< 2^30, checked
# below) cannot saturate the accumulator
BIAS_LIMIT = 1 << 30
SAME_SCALE = frozenset({Kind.MAX_POOL, Kind.TRANSPOSE, Kind.SLICE, Kind.PAD})  # exact moves
SOFTMAX_OUT = QParams(1 / 256, -128, 0.0, 255 / 256, "fixed")  # probabilities, as TFLite
# a softmax's exp table covers differences down to where exp rounds to 0 in Q15, at least the
# 256 an int8 input can hold, at most this many (beyond: 0; only a mask reaches that far)
EXP_TABLE_MAX = 4096
EXP16_ENTRIES = 257  # an int16 softmax's exp table (interpolated: within 2^-12 relative)
P_BITS = 30  # a softmax's probability e / total in Q30, before the requantization
SOFTMAX_HEADROOM = 2.0  # calibrated softmax scale: the top code at 2x the largest p seen
# 16-bit activations (TFLite's 16x8): the kinds with an int16 kernel, their constants
INT16_KINDS = frozenset({
    Kind.CONV, Kind.DEPTHWISE, Kind.SUM_POOL, Kind.MAX_POOL, Kind.ADD, Kind.SUB, Kind.MUL,
    Kind.LUT, Kind.SOFTMAX, Kind.BATCH_MATMUL, Kind.CONST, Kind.TRANSPOSE, Kind.SLICE, Kind.PAD,
    Kind.CONCAT, Kind.CONVERT, Kind.GATHER, Kind.LAYERNORM})  # (the last two: sequence.py)
ADD_LEFT_SHIFT_16 = 15  # TFLite's int16 ADD: |x| <= 2^15 shifted by 15 stays in int32
SOFTMAX_OUT_16 = QParams(1 / 32768, 0, 0.0, 32767 / 32768, "fixed")  # TFLite's int16 softmax
LUT16_MAX_ERROR = 64  # int16 codes an interpolated table may miss by (a quarter int8 code)
WIDE_BIAS_LIMIT = 1 << 46  # an int64 bias of a 16x8 layer (its accumulator is cut at 2^47)


def fresh_tensors(graph: Graph, regions: list[Region]) -> set[str]:
    """The tensors whose range calibration must measure (the others inherit theirs; a pad's
    is measured in case its value lies outside its input's range)."""
    return {v.name for v in graph.inputs} | {
        r.output for r in regions if (r.kind not in SAME_SCALE or r.kind is Kind.PAD)}


def _output_params(r: Region, x: QTensor, qparams: Mapping[str, QParams], width: int = 8
                   ) -> QTensor | QParams:
    """Moves keep their input's scale, unless a pad value falls outside its codes (a -1 pad
    on a ReLU output): that pad gets its calibrated scale and reads a rescaled input. A
    ``width`` of 16 gives int16 parameters (a softmax: TFLite's 1/32768)."""
    if r.kind is Kind.SOFTMAX:
        return SOFTMAX_OUT_16 if width == 16 else softmax_params(qparams[r.output])
    if r.kind not in SAME_SCALE:
        return params16(qparams[r.output]) if width == 16 else qparams[r.output]
    if r.kind is Kind.PAD:
        value = float(r.anchor.attrs["value"])
        lo, hi = code_range(x.bits)
        if not x.scale * (lo - x.zero_point) <= value <= x.scale * (hi - x.zero_point):
            return params16(qparams[r.output]) if width == 16 else qparams[r.output]
    return x


def softmax_params(q: QParams) -> QParams:
    """TFLite's fixed 1/256 (zero point -128), made finer when calibration never sees a
    probability above 1/SOFTMAX_HEADROOM (a 1000-class head): that many times the largest one
    seen maps to the top code, so a larger unseen probability is still coded and classes do
    not tie (benchmarks/asic_softmax_scale.py measures it)."""
    scale = min(1.0, SOFTMAX_HEADROOM * q.hi) / 256 if q.hi > 0 else SOFTMAX_OUT.scale
    if scale >= SOFTMAX_OUT.scale:
        return SOFTMAX_OUT
    return QParams(scale, -128, 0.0, 255 * scale, "calibrated")


def _code(value: float, q: QTensor | QParams) -> int:
    """The int8 (int16 for a 16-bit tensor) code of a real value (saturating; -inf -> the
    lowest code)."""
    lo, hi = code_range(getattr(q, "bits", 8))
    if value == -np.inf:
        return lo
    return int(np.clip(np.round(value / q.scale) + q.zero_point, lo, hi))


def _window(r: Region, x: QTensor) -> tuple[Window | None, int]:
    if r.window is None:
        return None, 0
    a = r.window.attrs
    return (Window(tuple(a["kernel"]), tuple(a["strides"]), tuple(a["dilations"]),
                   tuple(a["pads"])), _code(a["pad"], x))


def _compress(a: np.ndarray) -> np.ndarray:
    """A per-position array -> [C] when it varies along the channels only."""
    return a.reshape(-1, a.shape[-1])[0] if channel_constant(a) else a


def _requant(real: np.ndarray, y: QTensor, clamp: tuple[float, float] | None,
             wide: bool = False) -> Requant:
    mult, shift = quantize_multiplier(_compress(real))
    if wide and np.any(shift > 14):  # mbqm64's Q15 multiplier shifts right by 15 - shift
        raise ValueError(f"a 16x8 requantization multiplier over 2^14: {np.max(real)}")
    lo, hi = code_range(y.bits) if clamp is None else (_code(clamp[0], y), _code(clamp[1], y))
    return Requant(mult, shift, y.zero_point, lo, hi, wide)


def _taps(r: Region, x: QTensor) -> int:
    """How many products one accumulator sums."""
    if r.weights is not None:
        return r.weights.shape[0] if r.kind is Kind.CONV else int(np.prod(
            r.window.attrs["kernel"]))
    if r.window is not None:
        return int(np.prod(r.window.attrs["kernel"]))
    return x.size // max(1, int(np.prod(r.anchor.type.shape)))  # a global pool's reduced axes


def _accumulating(r: Region, x: QTensor, y: QTensor, s: Step) -> None:
    """Weights, bias and requantization of a conv, depthwise conv or sum pool."""
    taps = _taps(r, x)
    wide = x.bits == 16 and r.weights is not None  # 16x8: an int64 accumulator
    # the largest |sum of products|, against half the accumulator's range (the bias the rest)
    most = taps * (255 * 128 if x.bits == 8 else 65535 * (128 if wide else 1))
    if most >= ((WIDE_BIAS_LIMIT >> 1) if wide else I32_MAX // 2):
        raise ModelError(f"node '{r.anchor.origin}': {taps} taps could overflow the "
                         f"int{64 if wide else 32} accumulator; split the layer")
    gain, offset = r.gain.reshape(y.shape), r.offset.reshape(y.shape)
    s_acc = np.float64(x.scale)
    if r.weights is not None:  # a conv or depthwise conv: weights and an int32 bias
        w = r.weights if r.kind is Kind.CONV else np.broadcast_to(
            r.weights, (*r.window.attrs["kernel"], r.anchor.type.shape[-1]))
        with np.errstate(divide="ignore", invalid="ignore"):
            bias = _compress(offset / gain)  # in real units, per channel
        s_w = _fit_bias(bias, w, x.scale, WIDE_BIAS_LIMIT if wide else BIAS_LIMIT)
        s.consts["weights"] = _requantized_weights(w, s_w)
        s_acc = s_acc * s_w
        s.consts["bias"] = _int32_bias(bias, s_acc, s.origin, wide)
    s.requant = _requant(s_acc * gain / y.scale, y, r.clamp, wide)


def _fit_bias(bias: np.ndarray, w: np.ndarray, s_x: float, limit: int = BIAS_LIMIT
              ) -> np.ndarray:
    """The weight scales [C]: amax / 127 per channel, grown where the channel's bias would not
    fit in BIAS_LIMIT codes of s_x * s_w, as TFLite's converter does. Such a bias is at least
    2^30 accumulator codes, and the output's scale must cover it: its step is about bias / 128,
    so weight codes made coarser by the factor bias / 2^30 stay far below what the output can
    resolve. A channel of zero weights takes the finest scale that holds its bias."""
    amax = np.abs(w.reshape(-1, w.shape[-1])).max(axis=0).astype(np.float64)
    need = np.abs(np.where(np.isfinite(bias), bias, 0.0)).reshape(-1, bias.shape[-1]).max(axis=0)
    s_w = np.maximum(amax / 127.0, need / (np.float64(s_x) * limit))
    return np.where(s_w > 0, s_w, 1.0)


def _requantized_weights(w: np.ndarray, s_w: np.ndarray) -> np.ndarray:
    """float weights [..., C] -> int8 symmetric per channel (the last axis) on the scales
    ``s_w`` [C] (never below amax / 127: nothing clips)."""
    return np.clip(np.round(w / s_w), -127, 127).astype(np.int8)


def _int32_bias(bias: np.ndarray, s_acc: np.ndarray, origin: str, wide: bool = False
                ) -> np.ndarray:
    """The int32 bias codes (int64 ones, at most WIDE_BIAS_LIMIT, for a 16x8 layer); a
    non-finite bias (an infinite or NaN constant, or a folded scale that underflowed to 0)
    cannot be held by any scale: saturated, with a warning."""
    with np.errstate(invalid="ignore", over="ignore"):
        codes = np.round(bias / s_acc)
    top = WIDE_BIAS_LIMIT if wide else I32_MAX
    bad = ~np.isfinite(codes) | (np.abs(codes) > top)
    if np.any(bad):
        warnings.warn(SaturationWarning(
            f"layer '{origin}': the int{64 if wide else 32} bias of {int(np.sum(bad))} "
            "channel(s) saturates "
            f"(real bias {float(bias[bad].reshape(-1)[0])} on scale "
            f"{np.broadcast_to(s_acc, bias.shape)[bad].reshape(-1)[0]:.3g}); its outputs will "
            "be wrong"), stacklevel=2)
    if wide:
        return np.clip(np.nan_to_num(codes, nan=0.0), -top, top).astype(np.int64)
    return np.clip(np.nan_to_num(codes, nan=0.0), I32_MIN, I32_MAX).astype(np.int32)


def _two_tensor(r: Region, a: QTensor, b: QTensor, y: QTensor, s: Step) -> None:
    if r.kind is Kind.MUL:
        s.requant = _requant(np.array([a.scale * b.scale / y.scale]), y, r.clamp)
        return
    twice_max = 2 * max(a.scale, b.scale)
    left = ADD_LEFT_SHIFT if y.bits == 8 else ADD_LEFT_SHIFT_16
    s.attrs["left_shift"] = left
    s.attrs["a"] = tuple(int(v[0]) for v in quantize_multiplier(np.array([a.scale / twice_max])))
    s.attrs["b"] = tuple(int(v[0]) for v in quantize_multiplier(np.array([b.scale / twice_max])))
    real = twice_max / ((1 << left) * y.scale)
    s.requant = _requant(np.array([real]), y, r.clamp)


def lut_table(graph: Graph, r: Region, x: QTensor, y: QTensor) -> np.ndarray:
    """Evaluate the region's float tree on every int8 code: [256] or [C, 256] (C along
    ``r.axis``); for int16 codes, on the 513 segment ends -32768 + 128 i that
    ``reference.lut16`` interpolates between: [513] or [C, 513]."""
    channels = r.anchor.type.shape[r.axis] if r.axis is not None else 1
    if x.bits == 16:
        ends = (np.arange(LUT16_ENTRIES, dtype=np.float64) * 128 - 32768) * x.scale
        return _table(graph, r, x, y, ends.astype(np.float32), channels)
    return _table(graph, r, x, y, dequantize(ALL_CODES, x.scale, x.zero_point), channels)


def _table(graph: Graph, r: Region, x: QTensor, y: QTensor, reals: np.ndarray,
           channels: int) -> np.ndarray:
    """The region's float tree on the real inputs ``reals`` [n], quantized to y: [n] or
    [C, n]."""
    n = reals.size
    src = next(i for i in r.sources if graph.const(i) is None)  # (x may be its conversion)
    env = {src: reals[:, None]}  # [n, 1]
    for node in r.nodes:
        ins = [env[i] if i in env else graph.const(i).reshape(-1)[None, :] for i in node.inputs]
        with np.errstate(all="ignore"):
            env[node.name] = apply(node, ins).astype(np.float32)
    real = np.broadcast_to(env[r.output], (n, channels))
    table = quantize(np.nan_to_num(real, nan=0.0), y.scale, y.zero_point, y.bits).T  # [C, n]
    return table[0].copy() if np.all(table == table[:1]) else np.ascontiguousarray(table)


def lower(graph: Graph, qparams: Mapping[str, QParams], regions: list[Region],
          views: Mapping[str, str], bits: Mapping[str, int] | None = None) -> QProgram:
    """The int8 program of ``graph`` given every fresh tensor's calibrated parameters.

    ``bits`` maps a region's output to its precision: 8 (the default) or 16 (int16
    activations, TFLite's 16x8). A kernel's inputs and output share its precision: an input
    of the other one is first converted (a CONVERT step); moves keep their input's; a model
    input takes the widest of its readers'."""
    bits = bits or {}
    tensors: dict[str, QTensor] = {}

    def define(name: str, q: QParams | QTensor, view_of: str = "", width: int = 8) -> QTensor:
        if isinstance(q, QTensor):
            width = q.bits
        t = QTensor(name, graph.type_of(name).shape, q.scale, q.zero_point, view_of, width)
        tensors[name] = t
        return t

    def get(name: str) -> QTensor:
        if name not in tensors:  # a reshape view
            define(name, get(views[name]), views[name])
        return tensors[name]

    def root(name: str) -> str:
        while name in views:
            name = views[name]
        return name

    widest: dict[str, int] = {}
    for r in regions:
        for i in r.sources:
            widest[root(i)] = max(widest.get(root(i), 8), bits.get(r.output, 8))
    coded = index_inputs(graph, regions, root)  # token ids: scale 1 (sequence.py)
    for v in graph.inputs:
        if v.name in coded:
            define(v.name, QParams(1.0, coded[v.name][1], 0.0, 0.0, "index"),
                   width=coded[v.name][0])
            continue
        width = widest.get(v.name, 8)
        q = qparams[v.name]
        define(v.name, params16(q) if width == 16 else q, width=width)
    steps: list[Step] = []
    for r in regions:
        first = next((get(i) for i in r.sources if graph.const(i) is None), None)
        p = first.bits if r.kind in SAME_SCALE and first is not None else bits.get(r.output, 8)
        origin = r.anchor.origin or r.anchor.name
        if p == 16 and r.kind not in INT16_KINDS:
            raise UnsupportedOpError(r.kind.value, "asic int16", origin, (
                f"layer '{origin}' ({r.kind.value}) has no int16 kernel yet: compile it with "
                "precision='int8' (or 'auto', which keeps it int8)"))
        if p == 16 and r.kind is Kind.LUT and not _lut16_fits(graph, r, first, qparams):
            p = 8  # a function too curved for the interpolated table: int8's exact one
        y = define(r.output, _output_params(r, first, qparams, p), width=p)
        xs = [get(i) if graph.const(i) is None else
              _load_const(graph, i, y if r.kind is Kind.CONCAT else None, steps, tensors, p)
              for i in r.sources]
        if r.kind is Kind.PAD:
            xs = [_rescaled(xs[0], y, r.anchor.origin, steps, tensors)]
        elif r.kind not in (Kind.CONCAT, Kind.GATHER):  # (a concat rescales its inputs to
            # its output; a gather's indices are ids, in their own coding)
            xs = [_widened(x, p, qparams.get(root(x.name)), origin, steps, tensors)
                  for x in xs]
        s = Step(r.kind, tuple(t.name for t in xs), y.name, origin,
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
    share_constants(steps)  # an unrolled RNN's weights, once per time step: stored once
    return QProgram(graph.name, tensors, tuple(v.name for v in graph.inputs),
                    tuple(graph.outputs), tuple(steps))


def _lut16_fits(graph: Graph, r: Region, x: QTensor, qparams: Mapping[str, QParams]) -> bool:
    """Whether the interpolated int16 table of a LUT region stays within LUT16_MAX_ERROR
    int16 codes of its function (checked on every 8th code, off the segment ends); else
    (1/sqrt near 0, a step) the layer runs in int8, whose table is exact on every code."""
    if x.bits == 8:  # its int16 copy, as _widened makes it
        amax = x.scale * max(abs(-128 - x.zero_point), abs(127 - x.zero_point))
        x = QTensor(x.name, x.shape, amax / 32767 if amax > 0 else 1 / 32767, 0, bits=16)
    y16 = params16(qparams[r.output])
    y = QTensor(r.output, x.shape, y16.scale, 0, bits=16)
    codes = np.arange(-32768 + 3, 32768, 8, dtype=np.int16)
    channels = r.anchor.type.shape[r.axis] if r.axis is not None else 1
    exact = _table(graph, r, x, y, (codes * np.float64(x.scale)).astype(np.float32), channels)
    step = Step(Kind.LUT, (x.name,), y.name, "", attrs={"axis": 0},
                consts={"table": lut_table(graph, r, x, y)})
    table = step.consts["table"]
    if table.ndim == 1:
        got = lut16(step, codes)
    else:
        got = lut16(step, np.broadcast_to(codes, (table.shape[0], codes.size)))
    if exact.ndim == 1 and got.ndim == 2:
        exact = np.broadcast_to(exact, got.shape)
    elif exact.ndim == 2 and got.ndim == 1:
        got = np.broadcast_to(got, exact.shape)
    return int(np.abs(got.astype(np.int64) - exact).max(initial=0)) <= LUT16_MAX_ERROR


def _widened(x: QTensor, width: int, q: QParams | None, origin: str, steps: list[Step],
             tensors: dict[str, QTensor]) -> QTensor:
    """x in ``width``-bit codes: x itself, or a copy converted by a CONVERT step (one per
    tensor and width). int8 -> int16 covers x's int8 range symmetrically; int16 -> int8 takes
    x's calibrated int8 parameters ``q`` (or covers its range when it has none)."""
    if x.bits == width:
        return x
    name = f"{x.name}.int{width}"
    if name not in tensors:
        lo, hi = code_range(x.bits)
        real_lo, real_hi = x.scale * (lo - x.zero_point), x.scale * (hi - x.zero_point)
        if width == 16:
            amax = max(abs(real_lo), abs(real_hi))
            q16 = QParams(amax / 32767 if amax > 0 else 1 / 32767, 0, real_lo, real_hi, "")
            t = QTensor(name, x.shape, q16.scale, 0, bits=16)
        else:
            q8 = q if q is not None else choose(np.zeros(0), real_lo, real_hi)
            t = QTensor(name, x.shape, q8.scale, q8.zero_point)
        tensors[name] = t
        steps.append(_convert_step(x, t, origin))
    return tensors[name]


def _convert_step(x: QTensor, y: QTensor, origin: str) -> Step:
    """A CONVERT step x -> y: (x - zx) requantized by s_x / s_y to y's codes."""
    try:
        rq = _requant(np.array([x.scale / y.scale]), y, None)
    except ValueError as e:
        raise ModelError(f"node '{origin}': cannot convert '{x.name}' to {y.bits} bits ({e})"
                         ) from e
    return Step(Kind.CONVERT, (x.name,), y.name, origin, requant=rq)


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
        _softmax(r, xs[0], y, s)
        if len(xs) == 2:  # a mask tensor, rescaled to x's codes: |m| < 255 * 2^21 < 2^29
            ratio = xs[1].scale / xs[0].scale
            s.attrs["mask_absorbs"] = bool(ratio >= ABSORBING)
            s.attrs["mask_rescale"] = tuple(int(v[0]) for v in quantize_multiplier(
                np.array([min(ratio, ABSORBING)])))
    elif r.kind is Kind.BATCH_MATMUL:
        _batch_matmul(r, xs[0], xs[1], y, s)
    elif r.kind is Kind.GATHER:
        fill_gather(r.weights, xs[0], y, s)
    elif r.kind is Kind.LAYERNORM:
        fill_layer_norm(r.eps, r.gain, r.offset, xs[0], y, s)
    elif r.kind is Kind.CONCAT:
        s.attrs["axis"] = r.anchor.attrs["axis"]
    else:
        s.attrs.update({k: r.anchor.attrs[k] for k in ("perm", "starts", "steps", "pads")
                        if k in r.anchor.attrs})
        if r.kind is Kind.PAD:
            s.attrs["value"] = _code(float(r.anchor.attrs["value"]), y)


def _softmax(r: Region, x: QTensor, y: QTensor, s: Step) -> None:
    """The Q15 table of exp(d * s_x) for every difference d = x + mask - max in [-(L-1), 0],
    the mask in input codes (clipped to +-MASK_LIMIT), and the requantization of the Q30
    probability to the output's scale."""
    axes = tuple(r.anchor.attrs["axes"])
    count = int(np.prod([x.shape[a] for a in axes]))
    if count >= 1 << 16:
        raise ModelError(f"node '{r.anchor.origin}': a softmax over {count} elements could "
                         "overflow its int32 sum")
    # exp(d s) * 2^15 < 1/2 beyond d = -16 ln 2 / s; without a mask, |d| <= 255
    step = x.scale  # the table's step in real units
    if x.bits == 16:  # 65536 codes: an interpolated table down to exp(-16 ln 2)
        length = EXP16_ENTRIES
        step = 16 * np.log(2) / (length - 1)
        s.attrs["exp_interp"] = tuple(int(v[0]) for v in quantize_multiplier(
            np.array([x.scale / step * 128])))  # 7 fraction bits
    elif r.mask is None and len(r.sources) == 1:
        length = 256
    else:
        length = int(np.clip(np.ceil(16 * np.log(2) / step) + 1, 256, EXP_TABLE_MAX))
    d = np.arange(-(length - 1), 1, dtype=np.float64)
    s.consts["exp"] = np.round(np.exp(d * step) * (1 << 15)).astype(np.int32)
    s.attrs["axes"] = axes
    if r.mask is not None:
        s.consts["mask"], weight = _mask_codes(r.mask, x)
        if x.bits == 8 and np.any(weight != 1 << 15):
            _mask_weight(r, count, weight, s)
    s.requant = _requant(np.array([2.0 ** -P_BITS / y.scale]), y, None)


def _mask_codes(mask: np.ndarray, x: QTensor) -> tuple[np.ndarray, np.ndarray]:
    """An additive mask in x's codes (int32), in the shape of x's trailing axes it varies
    along (so that element i of x adds mask[i % mask.size]), and what rounding to whole codes
    left out as a Q15 factor of exp, round(2^15 exp(s_x (m / s_x - codes)))."""
    full = np.broadcast_to(mask.astype(np.float64), x.shape)
    lead = 0
    while lead < len(x.shape) - 1 and np.all((rest := full[(0,) * lead]) == rest[:1]):
        lead += 1
    with np.errstate(invalid="ignore", over="ignore"):
        exact = full[(0,) * lead] / x.scale
        codes = np.clip(np.nan_to_num(np.round(exact), nan=0.0), -MASK_LIMIT, MASK_LIMIT)
        fraction = np.where(np.abs(codes) < MASK_LIMIT, np.nan_to_num(exact - codes), 0.0)
    weight = np.round(np.exp(fraction * x.scale) * (1 << 15))
    return codes.astype(np.int32), np.clip(weight, 1, MASK_WEIGHT_MAX).astype(np.int32)


def _mask_weight(r: Region, count: int, weight: np.ndarray, s: Step) -> None:
    """An int8 softmax's mask to a fraction of a code: half an int8 code of a score is a
    factor exp(s_x / 2) on a probability, 2.3% at s_x = 0.046, 1-2 output codes. Each
    element's exp is scaled by its weight (Q15) after the table, e = (e w + 2^14) >> 15, so
    that e < 2^16 and e 2^15 stays in int32; the sum needs count e < 2^31. (Int16 scores
    need none: half a code is far under their interpolated table's 2^-12.)"""
    if count * ((1 << 15) * int(weight.max()) + (1 << 14) >> 15) >= 1 << 31:
        raise ModelError(f"node '{r.anchor.origin}': a softmax over {count} elements with a "
                         "constant mask could overflow its int32 sum")
    s.consts["mask_weight"] = weight


def _batch_matmul(r: Region, a: QTensor, b: QTensor, y: QTensor, s: Step) -> None:
    """(a - za) @ (b - zb) in int32, requantized by s_a s_b gain / s_y (per column or per
    element when the folded epilogue varies)."""
    k = a.shape[-1]
    wide = a.bits == 16  # 16x16 products: an int64 accumulator
    if k * (65536 * 65536 if wide else 255 * 255) >= (WIDE_BIAS_LIMIT if wide else I32_MAX):
        raise ModelError(f"node '{r.anchor.origin}': a product of two activations over {k} "
                         f"terms could overflow the int{64 if wide else 32} accumulator; split "
                         "the layer")
    s.requant = _requant(a.scale * b.scale * r.gain.reshape(y.shape) / y.scale, y, r.clamp,
                         wide)


def _load_const(graph: Graph, name: str, on: QTensor | None, steps: list[Step],
                tensors: dict[str, QTensor], width: int = 8) -> QTensor:
    """A constant operand as an int8 (``width`` 16: int16) tensor a CONST step loads into the
    arena: on ``on``'s scale and zero point (a concat's, which copies bytes), else on its
    own range."""
    value = np.asarray(graph.const(name), np.float64)
    flat = value.reshape(-1)
    if on is not None:
        q, width = on, on.bits
    else:
        q = choose(flat, flat.min(initial=0.0), flat.max(initial=0.0))
        if width == 16:
            q = params16(QParams(q.scale, q.zero_point, q.lo, q.hi, "constant",
                                 float(np.abs(flat).max(initial=0.0))))
    key, k, label = (q.scale, q.zero_point, width), 0, name
    while label in tensors and (tensors[label].scale, tensors[label].zero_point,
                                tensors[label].bits) != key:
        k += 1
        label = f"{name}.{k}"
    if label not in tensors:
        tensors[label] = QTensor(label, graph.type_of(name).shape, q.scale, q.zero_point,
                                 bits=width)
        codes = quantize(value.astype(np.float32), q.scale, q.zero_point, width)
        steps.append(Step(Kind.CONST, (), label, name, consts={"values": codes.reshape(
            tensors[label].shape)}))
    return tensors[label]


def _rescaled(x: QTensor, y: QTensor, origin: str, steps: list[Step],
              tensors: dict[str, QTensor]) -> QTensor:
    """x on y's scale, zero point and width: x itself, or a copy made by a table (a CONVERT
    step where either is 16 bits; one per target scale: another consumer of x may need
    another one)."""
    if (x.scale, x.zero_point, x.bits) == (y.scale, y.zero_point, y.bits):
        return x
    if 16 in (x.bits, y.bits):
        name = f"{x.name}.as.{y.name}"
        if name not in tensors:
            tensors[name] = QTensor(name, x.shape, y.scale, y.zero_point, bits=y.bits)
            steps.append(_convert_step(x, tensors[name], origin))
        return tensors[name]
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
                   calibrate_fn: Callable[[set[str]], Mapping[str, QParams]],
                   bits: Callable[[list[Region]], Mapping[str, int]] | None = None
                   ) -> QProgram:
    """match -> calibrate (``calibrate_fn(names) -> qparams``) -> lower; ``bits(regions)``
    gives the regions' precisions (default: int8, but int16 for the recurrent states of
    unrolled LSTM/GRU cells, as TFLite's int8 LSTM: ``sequence_match.recurrent_states``)."""
    regions, views = match(graph)
    widths = bits(regions) if bits is not None else dict.fromkeys(
        recurrent_states(regions), 16)
    qparams = dict(calibrate_fn(fresh_tensors(graph, regions)))
    extra = {r.output for r in regions} - set(qparams)
    if extra and any(w != 8 for w in widths.values()):  # converting back to int8 needs them
        qparams.update(calibrate_fn(extra))
    return lower(graph, qparams, regions, views, widths)
