"""ONNX quantization: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, MatMulInteger,
ConvInteger, QLinearMatMul and QLinearConv, composed of exact IR ops.

Integer products accumulate in int32 (an int32 MATMUL, or the conv lowering of ops_nn on int32
patches padded with 0), never in float32, whose sums lose integers above 2^24. Quantizing
rounds half to even and saturates; requantizing (QLinear*) multiplies the int32 accumulator, as
float32, by the float32 ratio of the scales, rounds half to even, adds the output zero point and
saturates, as onnxruntime's kernels do. Scales and zero points may be run-time tensors.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from onnx import helper

from ..ir import Binary, Op, Reduce, Unary
from .convert import Ctx, Val, converter
from .ops_nn import _pads, _spatial, conv_nc, numpy_matmul, to_first

# the integer types numpy holds that these ops quantize to, with their ranges
QTYPES = {t: (int(np.iinfo(t).min), int(np.iinfo(t).max))
          for t in ("uint8", "int8", "uint16", "int16")}
DQ_INPUTS = (*QTYPES, "int32")
HALF_UP_TO = {"float16": "float32"}  # a float16 round becomes float32 before adding zero points


def _dtype(cx: Ctx, v: Val) -> str:
    """The element type of ``v`` as the model declares it (float8/int4 constants stay so)."""
    return str(v.dtype) if isinstance(v, np.ndarray) else cx.type(v).dtype




def _cast(cx: Ctx, v: Val, dtype: str) -> Val:
    return v if _dtype(cx, v) == dtype else cx.add(Op.CAST, [v], to=dtype)


def _onnx_dtype(cx: Ctx, code: int, what: str) -> str:
    try:
        return str(helper.tensor_dtype_to_np_dtype(code))
    except (KeyError, ValueError, TypeError):
        raise cx.unsupported(f"{what} {code} is not a numpy element type") from None


def _per_axis(cx: Ctx, v: Val, shape: Sequence[int], axis: int, block: int, what: str) -> Val:
    """A scale or zero point reshaped (per tensor, per axis) or repeated (blocked) so that it
    broadcasts against a tensor of ``shape``, as the ONNX reference's ``reshape_input``."""
    vs = cx.shape(v)
    size = int(np.prod(vs, dtype=np.int64))
    if size == 1 and (len(vs) <= 1 or not block):
        return cx.reshape(v, [])
    rank = len(shape)
    if not block:
        if len(vs) != 1 or not rank:
            raise cx.error(f"{what} of shape {list(vs)} must be a scalar or a 1-D tensor")
        ax = cx.axis(axis, rank)
        if vs[0] != shape[ax]:
            raise cx.error(f"{what} has {vs[0]} elements, the input's axis {ax} {shape[ax]}")
        return cx.reshape(v, [shape[ax] if i == ax else 1 for i in range(rank)])
    if block < 0:
        raise cx.error(f"block_size {block} must be positive")
    ax = cx.axis(axis, rank)
    want = [-(-d // block) if i == ax else d for i, d in enumerate(shape)]
    if list(vs) != want:
        raise cx.error(f"{what} of shape {list(vs)} does not block the input {list(shape)} "
                       f"by {block} along axis {ax} (expected {want})")
    index = (np.arange(shape[ax], dtype=np.int64) // block)
    return cx.add(Op.GATHER, [v, index], axis=ax)


def _out_type(cx: Ctx, zp: Val | None, default: str = "uint8") -> str:
    """The quantized type: the zero point's, else ``output_dtype``, else ``default``."""
    attr = cx.attr("output_dtype", 0)
    out = _onnx_dtype(cx, attr, "output_dtype") if attr else default
    if zp is not None:
        zt = _dtype(cx, zp)
        if attr and zt != out:
            raise cx.error(f"output_dtype {out} differs from the zero point's type {zt}")
        out = zt
    if out not in QTYPES:
        raise cx.unsupported(f"quantizing to {out} is not supported (sw2c computes on "
                             f"{', '.join(QTYPES)} codes)")
    return out


def saturate(cx: Ctx, r: Val, zp: Val | None, out: str) -> Val:
    """``r`` (integral floats) plus the zero point, clamped into ``out`` and cast to it. With
    |zp| < 2^16 the float sum is exact wherever it does not saturate anyway."""
    if zp is not None:
        r = cx.binary(Binary.ADD, r, _cast(cx, zp, _dtype(cx, r)))
    lo, hi = QTYPES[out]
    return cx.add(Op.CAST, [cx.unary(Unary.CLIP, r, lo=lo, hi=hi)], to=out)


def quantize(cx: Ctx, x: Val, scale: Val, zp: Val | None, out: str,
             precision: str | None = None) -> Val:
    """saturate(round_half_even(x / scale) + zp): scale and zp already broadcast to x."""
    calc = precision or str(np.result_type(_dtype(cx, x), _dtype(cx, scale)))
    if calc not in ("float16", "float32", "float64"):
        raise cx.unsupported(f"quantizing in {calc} is not supported")
    q = cx.binary(Binary.DIV, _cast(cx, x, calc), _cast(cx, scale, calc))
    q = _cast(cx, cx.unary(Unary.ROUND, q), HALF_UP_TO.get(calc, calc))
    return saturate(cx, q, zp, out)


@converter("QuantizeLinear", since=10)
def quantize_linear(cx: Ctx) -> Val:
    x, scale = cx.x(0), cx.x(1)
    zp = cx.x(2) if cx.has(2) else None
    xt = _dtype(cx, x)
    if xt not in ("float16", "float32", "float64", "int32"):
        raise cx.unsupported(f"quantizing a {xt} tensor is not supported")
    out = _out_type(cx, zp)
    shape = cx.shape(x)
    axis, block = int(cx.attr("axis", 1)), int(cx.attr("block_size", 0))
    prec = cx.attr("precision", 0)
    precision = _onnx_dtype(cx, prec, "precision") if prec else None
    scale = _per_axis(cx, scale, shape, axis, block, "y_scale")
    if zp is not None:
        zp = _per_axis(cx, zp, shape, axis, block, "y_zero_point")
    return quantize(cx, x, scale, zp, out, precision)


@converter("DequantizeLinear", since=10)
def dequantize_linear(cx: Ctx) -> Val:
    """(x - zp) * scale: the difference exact in int32, the product once in float32 (float64
    for a float64 scale), then the output type (``output_dtype``, else the scale's)."""
    x, scale = cx.x(0), cx.x(1)
    zp = cx.x(2) if cx.has(2) else None
    xt, st = _dtype(cx, x), _dtype(cx, scale)
    if xt not in DQ_INPUTS:
        raise cx.unsupported(f"dequantizing a {xt} tensor is not supported (sw2c takes "
                             f"{', '.join(DQ_INPUTS)})")
    if st not in ("float16", "float32", "float64"):
        raise cx.unsupported(f"a {st} scale is not supported")
    if zp is not None and _dtype(cx, zp) != xt:
        raise cx.error(f"the zero point's type {_dtype(cx, zp)} differs from the input's {xt}")
    attr = cx.attr("output_dtype", 0)
    out = _onnx_dtype(cx, attr, "output_dtype") if attr else st
    if out not in ("float16", "float32", "float64"):
        raise cx.unsupported(f"dequantizing to {out} is not supported")
    shape = cx.shape(x)
    axis, block = int(cx.attr("axis", 1)), int(cx.attr("block_size", 0))
    d = _cast(cx, x, "int32")
    if zp is not None:
        zp = _per_axis(cx, zp, shape, axis, block, "x_zero_point")
        d = cx.binary(Binary.SUB, d, _cast(cx, zp, "int32"))
    calc = "float64" if st == "float64" else "float32"
    scale = _cast(cx, _per_axis(cx, scale, shape, axis, block, "x_scale"), calc)
    return _cast(cx, cx.binary(Binary.MUL, _cast(cx, d, calc), scale), out)


@converter("DynamicQuantizeLinear", since=11)
def dynamic_quantize_linear(cx: Ctx) -> list[Val]:
    """uint8 codes of x with the scale and zero point of its range (widened to hold 0),
    computed at run time as the ONNX reference does."""
    x = cx.x(0)
    if _dtype(cx, x) != "float32":
        raise cx.unsupported(f"a {_dtype(cx, x)} input is not supported (float32 only)")
    shape = cx.shape(x)
    if not int(np.prod(shape, dtype=np.int64)):
        raise cx.unsupported("an empty input has no range to quantize")
    axes = range(len(shape))
    zero, f = np.float32(0), np.float32
    hi = cx.reshape(cx.reduce(Reduce.MAX, x, axes), [])
    lo = cx.reshape(cx.reduce(Reduce.MAX, cx.unary(Unary.NEG, x), axes), [])
    hi = cx.binary(Binary.MAX, hi, np.array(zero))
    lo = cx.binary(Binary.MIN, cx.unary(Unary.NEG, lo), np.array(zero))
    span = cx.binary(Binary.SUB, hi, lo)
    # an all-zero input: scale 1 as onnxruntime (the ONNX reference says 1/255; y is 0 both)
    span = cx.add(Op.WHERE, [cx.binary(Binary.EQ, hi, lo), np.array(f(255)), span])
    scale = cx.binary(Binary.DIV, span, np.array(f(255)))
    zp = cx.binary(Binary.SUB, np.array(zero), cx.binary(Binary.DIV, lo, scale))
    zp = cx.unary(Unary.ROUND, cx.unary(Unary.CLIP, zp, lo=0, hi=255))
    y = quantize(cx, x, scale, zp, "uint8")
    return [y, scale, cx.add(Op.CAST, [zp], to="uint8")]


# --- integer products ---------------------------------------------------------------------------
def _centered(cx: Ctx, v: Val, zp: Val | None) -> Val:
    """v - zp in int32 (exact for 8- and 16-bit codes)."""
    if _dtype(cx, v) not in QTYPES:
        raise cx.unsupported(f"a {_dtype(cx, v)} operand is not supported (8/16-bit codes)")
    d = _cast(cx, v, "int32")
    if zp is None:
        return d
    if _dtype(cx, zp) != _dtype(cx, v):
        raise cx.error(f"zero point type {_dtype(cx, zp)} differs from its operand's "
                       f"{_dtype(cx, v)}")
    return cx.binary(Binary.SUB, d, _cast(cx, zp, "int32"))


def _row_param(cx: Ctx, p: Val, a_shape: Sequence[int]) -> Val:
    """A per-tensor or per-row parameter of the left operand, broadcastable to its rows."""
    ps = cx.shape(p)
    if int(np.prod(ps, dtype=np.int64)) == 1:
        return cx.reshape(p, [])
    if len(ps) == 1 and len(a_shape) >= 2 and ps[0] == a_shape[-2]:
        return cx.reshape(p, [ps[0], 1])
    return p  # N-D: [..., M, 1], numpy broadcasting checks it


def _col_param(cx: Ctx, p: Val) -> Val:
    """A per-tensor or per-column parameter of the right operand ([N] broadcasts as is)."""
    return cx.reshape(p, []) if int(np.prod(cx.shape(p), dtype=np.int64)) == 1 else p




def _int_matmul(cx: Ctx, a: Val, azp: Val | None, b: Val, bzp: Val | None) -> Val:
    sa = cx.shape(a)
    if azp is not None:
        azp = _row_param(cx, azp, sa)
    if bzp is not None:
        bzp = _col_param(cx, bzp)
    return numpy_matmul(cx, _centered(cx, a, azp), _centered(cx, b, bzp))


def _opt(cx: Ctx, i: int) -> Val | None:
    return cx.x(i) if cx.has(i) else None


@converter("MatMulInteger", since=10)
def matmul_integer(cx: Ctx) -> Val:
    return _int_matmul(cx, cx.x(0), _opt(cx, 2), cx.x(1), _opt(cx, 3))


def _scale(cx: Ctx, s: Val) -> Val:
    if _dtype(cx, s) not in ("float16", "float32"):
        raise cx.unsupported(f"a {_dtype(cx, s)} scale is not supported")
    return s


def requantize(cx: Ctx, acc: Val, ratio: Val, zp: Val | None, out: str) -> Val:
    """saturate(round_half_even(float32(acc) * ratio) + zp)."""
    v = cx.binary(Binary.MUL, _cast(cx, acc, "float32"), _cast(cx, ratio, "float32"))
    return saturate(cx, cx.unary(Unary.ROUND, v), zp, out)


def _ratio(cx: Ctx, s1: Val, s2: Val, sy: Val) -> Val:
    """s1 * s2 / sy in the scales' type, as the reference computes it."""
    return cx.binary(Binary.DIV, cx.binary(Binary.MUL, s1, s2), sy)


@converter("QLinearMatMul", since=10)
def qlinear_matmul(cx: Ctx) -> Val:
    a, b = cx.x(0), cx.x(3)
    acc = _int_matmul(cx, a, _opt(cx, 2), b, _opt(cx, 5))
    sa = _row_param(cx, _scale(cx, cx.x(1)), cx.shape(a))
    sb, sy = _col_param(cx, _scale(cx, cx.x(4))), _scale(cx, cx.x(6))
    yzp = _opt(cx, 7)
    out = _dtype(cx, yzp) if yzp is not None else _dtype(cx, a)
    if out not in QTYPES:
        raise cx.unsupported(f"a {out} output is not supported")
    ratio = _ratio(cx, sa, sb, cx.reshape(sy, []))
    return requantize(cx, acc, ratio, None if yzp is None else cx.reshape(yzp, []), out)


# --- convolutions -------------------------------------------------------------------------------
def _int_conv(cx: Ctx, x: Val, xzp: Val | None, w: Val, wzp: Val | None,
              bias: Val | None) -> Val:
    """The int32 convolution of (x - xzp) by (w - wzp) (+ bias), channels-last [N, *O, M]:
    the padding is 0 after centering, i.e. the input's zero point, as onnxruntime pads."""
    xs, ws = cx.shape(x), cx.shape(w)
    if len(xs) < 3 or len(ws) != len(xs):
        raise cx.error(f"input {list(xs)} and weight {list(ws)} must be [N, C, *S] and "
                       "[M, C/group, *K] of the same rank >= 3")
    n, kernel = len(xs) - 2, list(ws[2:])
    group = int(cx.attr("group", 1))
    if cx.ints("kernel_shape") not in (None, kernel):
        raise cx.error(f"kernel_shape {cx.ints('kernel_shape')} differs from the weight's {kernel}")
    (c, (m, cg)) = xs[1], ws[:2]
    if group < 1 or c % group or m % group or cg * group != c:
        raise cx.error(f"group {group} does not fit {c} input channels, weight {list(ws)}")
    strides, dilations = _spatial(cx, "strides", n, 1), _spatial(cx, "dilations", n, 1)
    begin, end = _pads(cx, xs[2:], kernel, strides, dilations)
    if xzp is not None:
        if int(np.prod(cx.shape(xzp), dtype=np.int64)) != 1:
            raise cx.unsupported("a per-channel input zero point is not supported")
        xzp = cx.reshape(xzp, [])
    if wzp is not None:
        wzs = cx.shape(wzp)
        size = int(np.prod(wzs, dtype=np.int64))
        if size == 1:
            wzp = cx.reshape(wzp, [])
        elif len(wzs) == 1 and size == m:
            wzp = cx.reshape(wzp, [m] + [1] * (n + 1))
        else:
            raise cx.error(f"weight zero point of shape {list(wzs)} must be a scalar or [{m}]")
    if bias is not None:
        if _dtype(cx, bias) != "int32" or cx.shape(bias) != (m,):
            raise cx.error(f"bias must be int32 [{m}], got {_dtype(cx, bias)} "
                           f"{list(cx.shape(bias))}")
    return conv_nc(cx, _centered(cx, x, xzp), _centered(cx, w, wzp), bias, group, strides,
                   dilations, begin, end, last=True)


@converter("ConvInteger", since=10)
def conv_integer(cx: Ctx) -> Val:
    y = _int_conv(cx, cx.x(0), _opt(cx, 2), cx.x(1), _opt(cx, 3), None)
    return cx.transpose(y, to_first(len(cx.shape(y))))


@converter("QLinearConv", since=10)
def qlinear_conv(cx: Ctx) -> Val:
    x, w = cx.x(0), cx.x(3)
    acc = _int_conv(cx, x, _opt(cx, 2), w, _opt(cx, 5), _opt(cx, 8))  # [N, *O, M]
    m = cx.shape(w)[0]
    sw = _scale(cx, cx.x(4))
    sws = cx.shape(sw)
    if int(np.prod(sws, dtype=np.int64)) == 1:
        sw = cx.reshape(sw, [])
    elif sws != (m,):
        raise cx.error(f"w_scale of shape {list(sws)} must be a scalar or [{m}]")
    sx, sy = (cx.reshape(_scale(cx, cx.x(i)), []) for i in (1, 6))
    yzp = _opt(cx, 7)
    out = _dtype(cx, yzp) if yzp is not None else _dtype(cx, x)
    if out not in QTYPES:
        raise cx.unsupported(f"a {out} output is not supported")
    y = requantize(cx, acc, _ratio(cx, sx, sw, sy), None if yzp is None else
                   cx.reshape(yzp, []), out)
    return cx.transpose(y, to_first(len(cx.shape(y))))
