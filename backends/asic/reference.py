"""The integer reference: what every step of a ``QProgram`` computes, in numpy integers.

This is the definition the simulator and the C export must match bit for bit. Accumulators
are exact: a matmul of int8 operands is computed in float64, whose 53-bit mantissa holds any
int32 sum exactly (lowering checks that no accumulator can leave int32).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from ...ir.interp import window as window_patches
from .fixed_point import (
    code_dtype,
    multiply_by_quantized_multiplier,
    multiply_by_quantized_multiplier_wide,
    quantize,
    requantize,
    shift_left_saturating,
)
from .program import Kind, QProgram, QTensor, Step
from .sequence import gather, layer_norm

I32 = np.int32


def _centered(x: np.ndarray, t: QTensor) -> np.ndarray:
    return x.astype(I32) - I32(t.zero_point)


def _patches(step: Step, x: np.ndarray) -> np.ndarray:
    """[N, *S, C] int8 -> [N, *O, *K, C] patches, padded with the step's int8 pad value."""
    w = step.window
    return window_patches(x, w.kernel, w.strides, w.dilations, w.pads, step.attrs["pad"])


def conv(step: Step, x: np.ndarray, tx: QTensor) -> np.ndarray:
    """[.., K] (or window patches flattened to K) @ [K, N] + bias [N] -> requantized."""
    xc = _centered(_patches(step, x) if step.window is not None else x, tx)
    w = step.consts["weights"]  # [K, N]
    a = xc.reshape(-1, w.shape[0]).astype(np.float64)  # [M, K]
    return (a @ w.astype(np.float64)).astype(np.int64) + step.consts["bias"]


def depthwise(step: Step, x: np.ndarray, tx: QTensor) -> np.ndarray:
    """Patches [N, *O, *K, C] * weights [*K, C], summed over the kernel axes, + bias [C]."""
    p = _centered(_patches(step, x), tx)
    n = len(step.window.kernel)
    acc = (p * step.consts["weights"].astype(np.int64)).sum(axis=tuple(range(-1 - n, -1)))
    return acc.astype(np.int64) + step.consts["bias"]


def _pool_axes(step: Step, x: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    if step.window is not None:
        n = len(step.window.kernel)
        return _patches(step, x), tuple(range(-1 - n, -1))
    return x, tuple(step.attrs["axes"])


def sum_pool(step: Step, x: np.ndarray, tx: QTensor) -> np.ndarray:
    p, axes = _pool_axes(step, x)
    p = _centered(p, tx)
    return p.sum(axis=axes, dtype=np.int64, keepdims=True)


def max_pool(step: Step, x: np.ndarray, tx: QTensor) -> np.ndarray:
    p, axes = _pool_axes(step, x)
    return p.max(axis=axes, keepdims=True)


def add_sub(step: Step, a: np.ndarray, b: np.ndarray, ta: QTensor, tb: QTensor) -> np.ndarray:
    """TFLite int8 ADD: both sides shifted left, rescaled to a common scale, summed
    (numpy broadcasting)."""
    at = step.attrs
    left = at["left_shift"]
    sa = multiply_by_quantized_multiplier(shift_left_saturating(_centered(a, ta), left), *at["a"])
    sb = multiply_by_quantized_multiplier(shift_left_saturating(_centered(b, tb), left), *at["b"])
    return sa - sb if step.kind is Kind.SUB else sa + sb


def mul(step: Step, a: np.ndarray, b: np.ndarray, ta: QTensor, tb: QTensor) -> np.ndarray:
    return _centered(a, ta).astype(np.int64) * _centered(b, tb)


def lut(step: Step, x: np.ndarray, tx: QTensor) -> np.ndarray:
    table = step.consts["table"]
    if tx.bits == 16:
        return lut16(step, x)
    idx = x.astype(np.intp) + 128
    if table.ndim == 1:
        return table[idx]
    shape = [1] * x.ndim  # [C, 256]: one row per index along attrs["axis"]
    shape[step.attrs["axis"]] = table.shape[0]
    return table[np.arange(table.shape[0]).reshape(shape), idx]


LUT16_ENTRIES = 513  # an int16 table: 512 segments of 128 codes, and the last end point


def lut16(step: Step, x: np.ndarray) -> np.ndarray:
    """TFLite's int16 table (``lut_lookup``): the segment i = 256 + (x >> 7) of ``table``
    [513] (or [C, 513]), linearly interpolated by the low 7 bits: t[i] + ((t[i+1] - t[i]) *
    (x & 127) + 64 >> 7); never outside [t[i], t[i+1]], so no clamp is needed."""
    table = step.consts["table"].astype(np.int32)
    v = x.astype(np.int32)
    i, frac = 256 + (v >> 7), v & 127
    if table.ndim == 2:  # one row per index along attrs["axis"]
        shape = [1] * x.ndim
        shape[step.attrs["axis"]] = table.shape[0]
        rows = np.arange(table.shape[0]).reshape(shape)
        base, nxt = table[rows, i], table[rows, i + 1]
    else:
        base, nxt = table[i], table[i + 1]
    return base + (((nxt - base) * frac + 64) >> 7)


# a constant mask's codes are clipped to +-MASK_LIMIT (-inf masks out; z - max stays in
# int32); a mask tensor whose step is over ABSORBING input codes takes its place in z
MASK_LIMIT = 1 << 29
# an int8 softmax's constant-mask weight (Q15): e w < 2^31 for e <= 2^15; a factor up to 2,
# half a code's fraction at input scale 1.39 (coarser scores lose the rest)
MASK_WEIGHT_MAX = (1 << 16) - 1
ABSORBING = 1 << 21


def softmax(step: Step, x: np.ndarray, tx: QTensor, mask: np.ndarray | None = None,
            tmask: QTensor | None = None) -> np.ndarray:
    """Integer softmax: z = x + m, m the mask in int32 codes of the input's scale (a constant
    mask ``consts["mask"]`` clipped to +-MASK_LIMIT, or an int8 ``mask`` tensor rescaled by
    attrs["mask_rescale"]; either repeats over the leading axes). A mask tensor so coarse that
    one code is over ABSORBING input codes (float32's lowest as the fill) replaces x where it
    is nonzero, as float32 addition absorbs the score there. e = exp_table[z - max(z) + L -
    1] (Q15, computed at compile time for the input scale; 0 below the table), times a
    constant mask's ``consts["mask_weight"]`` (Q15, rounded) if it has one, then the
    probability e / sum(e) in Q30 (``q30_ratio``), which the step's requantization takes to
    the output's scale."""
    axes = tuple(step.attrs["axes"])
    table = step.consts["exp"]
    z = x.astype(I32)
    if "mask" in step.consts:
        z = z + step.consts["mask"]
    if mask is not None:
        c = _centered(mask, tmask)
        m = multiply_by_quantized_multiplier(c, *step.attrs["mask_rescale"])
        z = np.where(c != 0, m, z) if step.attrs.get("mask_absorbs") else z + m
    d = z - z.max(axis=axes, keepdims=True)
    if "exp_interp" in step.attrs:  # int16 codes: an interpolated table
        e = exp_interpolated(d, table, step.attrs["exp_interp"])
        return q30_ratio(e, e.sum(axis=axes, keepdims=True))
    d = d + (table.size - 1)
    e = np.where(d >= 0, table[np.maximum(d, 0)], 0).astype(np.int64)
    if "mask_weight" in step.consts:  # the mask's fractions of a code, as factors of exp
        e = (e * step.consts["mask_weight"] + (1 << 14)) >> 15
    return q30_ratio(e, e.sum(axis=axes, keepdims=True))


def exp_interpolated(d: np.ndarray, table: np.ndarray, rescale: tuple[int, int]
                     ) -> np.ndarray:
    """An int16 softmax's exp: the difference d <= 0 (input codes) on the table's grid with 7
    fraction bits, u = MBQM(d, *rescale); entry p = (u >> 7) + L - 1 of the Q15 table,
    linearly interpolated by u & 127 toward entry p + 1; 0 below the table."""
    u = multiply_by_quantized_multiplier(d, *rescale)
    p, f = (u >> 7) + (table.size - 1), u & 127
    t = table.astype(np.int64)
    base = t[np.clip(p, 0, t.size - 1)]
    nxt = t[np.clip(p + 1, 0, t.size - 1)]
    return np.where(p >= 0, base + (((nxt - base) * f + 64) >> 7), 0).astype(np.int64)


def q30_ratio(e: np.ndarray, total: np.ndarray) -> np.ndarray:
    """e / total in Q30 with 32-bit integers only (0 <= e < 2^16, e <= total < 2^31): total
    keeps its top 16 bits (shifted right by s), then (e * 2^15 / (total >> s)) * 2^(15 - s),
    the quotient truncated; within 2^-14 of the probability."""
    s = np.zeros_like(total)
    while np.any(big := (total >> s) >= 1 << 16):
        s += big
    return ((e << 15) // (total >> s)) << (15 - s)


def batch_matmul(step: Step, a: np.ndarray, b: np.ndarray, ta: QTensor, tb: QTensor
                 ) -> np.ndarray:
    """(a - za) @ (b - zb), batch axes broadcast (exact in float64: |acc| < 2^31)."""
    acc = np.matmul(_centered(a, ta).astype(np.float64), _centered(b, tb).astype(np.float64))
    return acc.astype(np.int64)


def convert(step: Step, x: np.ndarray, tx: QTensor) -> np.ndarray:
    """A change of precision (or scale): x - zx, requantized to the output's."""
    return _centered(x, tx)


def transpose(step: Step, x: np.ndarray, tx: QTensor) -> np.ndarray:
    return np.transpose(x, step.attrs["perm"])


def slice_(step: Step, x: np.ndarray, tx: QTensor, shape: tuple[int, ...]) -> np.ndarray:
    idx = tuple(np.arange(n) * st + s for s, st, n in
                zip(step.attrs["starts"], step.attrs["steps"], shape))
    return x[np.ix_(*idx)]


def pad(step: Step, x: np.ndarray, tx: QTensor) -> np.ndarray:
    p, r = step.attrs["pads"], x.ndim
    return np.pad(x, [(p[i], p[r + i]) for i in range(r)], constant_values=step.attrs["value"])


def concat(step: Step, *xs: np.ndarray) -> np.ndarray:
    return np.concatenate(xs, axis=step.attrs["axis"])


UNARY_STEPS: dict[Kind, Callable[..., np.ndarray]] = {
    Kind.CONV: conv, Kind.DEPTHWISE: depthwise, Kind.SUM_POOL: sum_pool,
    Kind.MAX_POOL: max_pool, Kind.LUT: lut, Kind.SOFTMAX: softmax, Kind.TRANSPOSE: transpose,
    Kind.PAD: pad, Kind.CONVERT: convert,
    Kind.GATHER: gather, Kind.LAYERNORM: layer_norm,  # sequence.py
}
BINARY_STEPS: dict[Kind, Callable[..., np.ndarray]] = {
    Kind.ADD: add_sub, Kind.SUB: add_sub, Kind.MUL: mul, Kind.BATCH_MATMUL: batch_matmul,
}


def run_step(step: Step, xs: list[np.ndarray], tensors: Mapping[str, QTensor]) -> np.ndarray:
    """One step on int8/int16 inputs; returns its output codes, shaped as its output tensor."""
    ts = [tensors[i] for i in step.inputs]
    out = tensors[step.output]
    if step.kind in UNARY_STEPS:  # (a softmax's mask tensor follows: xs[1], ts[1])
        y = UNARY_STEPS[step.kind](step, xs[0], ts[0], *xs[1:], *ts[1:])
    elif step.kind in BINARY_STEPS:
        y = BINARY_STEPS[step.kind](step, xs[0], xs[1], ts[0], ts[1])
    elif step.kind is Kind.SLICE:
        y = slice_(step, xs[0], ts[0], out.shape)
    elif step.kind is Kind.CONCAT:
        y = concat(step, *xs)
    elif step.kind is Kind.CONST:
        y = step.consts["values"]
    else:
        raise NotImplementedError(step.kind)
    if step.requant is not None:  # the accumulating kinds: int32 (int64) -> int8 (int16)
        r = step.requant
        if r.wide:
            y = multiply_by_quantized_multiplier_wide(y.reshape(out.shape), r.multiplier,
                                                      r.shift) + r.zero_point
            y = np.clip(y, r.lo, r.hi)
        elif out.bits == 16:
            y = requantize(y.reshape(out.shape), r.multiplier, r.shift, r.zero_point, r.lo,
                           r.hi, np.int16)
        else:
            y = requantize(y.reshape(out.shape), r.multiplier, r.shift, r.zero_point, r.lo,
                           r.hi)
    return np.ascontiguousarray(y, dtype=code_dtype(out.bits)).reshape(out.shape)


def quantize_inputs(program: QProgram, feeds: list[np.ndarray]) -> list[np.ndarray]:
    ts = [program.tensors[n] for n in program.inputs]
    return [quantize(x, t.scale, t.zero_point, t.bits).reshape(t.shape)
            for x, t in zip(feeds, ts)]


def views_of(program: QProgram) -> dict[str, list[QTensor]]:
    """The tensors that are views of each tensor (reshapes sharing its storage), by name."""
    views: dict[str, list[QTensor]] = {}
    for t in program.tensors.values():
        if t.view_of:
            views.setdefault(t.view_of, []).append(t)
    return views


def run_reference(program: QProgram, qfeeds: list[np.ndarray],
                  keep: bool = False) -> dict[str, np.ndarray]:
    """Execute ``program`` on int8 inputs, one fresh array per tensor; returns the int8
    outputs by tensor name (every tensor with ``keep``)."""
    views = views_of(program)
    env: dict[str, np.ndarray] = {}

    def define(name: str, x: np.ndarray) -> None:
        env[name] = x
        for v in views.get(name, ()):
            define(v.name, x.reshape(v.shape))

    for name, x in zip(program.inputs, qfeeds):
        define(name, x)
    for step in program.steps:
        define(step.output, run_step(step, [env[i] for i in step.inputs], program.tensors))
    return dict(env) if keep else {n: env[n] for n in program.outputs}
