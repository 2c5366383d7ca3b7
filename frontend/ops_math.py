"""Elementwise ops, Softmax/LogSoftmax and the Reduce* family."""

from __future__ import annotations

from functools import reduce as fold

import numpy as np

from ..ir import Binary, Reduce, Unary
from .convert import Ctx, Val, converter

F32_MAX = float(np.finfo(np.float32).max)

UNARY = {
    "Relu": Unary.RELU, "Sigmoid": Unary.SIGMOID, "Tanh": Unary.TANH, "Exp": Unary.EXP,
    "Log": Unary.LOG, "Sqrt": Unary.SQRT, "Neg": Unary.NEG, "Abs": Unary.ABS,
    "HardSwish": Unary.HARD_SWISH,
}
BINARY = {"Add": Binary.ADD, "Sub": Binary.SUB, "Mul": Binary.MUL, "Div": Binary.DIV}
VARIADIC = {"Sum": Binary.ADD, "Max": Binary.MAX, "Min": Binary.MIN, "Mean": Binary.ADD}


@converter(*UNARY)
def unary(cx: Ctx) -> Val:
    return cx.unary(UNARY[cx.op_type], cx.x(0))


@converter("LeakyRelu")
def leaky_relu(cx: Ctx) -> Val:
    return cx.unary(Unary.LEAKY_RELU, cx.x(0), alpha=cx.attr("alpha", 0.01))


@converter("HardSigmoid")
def hard_sigmoid(cx: Ctx) -> Val:
    return cx.unary(Unary.HARD_SIGMOID, cx.x(0), alpha=cx.attr("alpha", 0.2),
                    beta=cx.attr("beta", 0.5))


@converter("Reciprocal")
def reciprocal(cx: Ctx) -> Val:
    return cx.binary(Binary.DIV, cx.scalar(1.0), cx.x(0))


@converter("PRelu")
def prelu(cx: Ctx) -> Val:
    """max(x, 0) + slope * min(x, 0): exact for every x, including infinities."""
    x, slope = cx.x(0), cx.x(1)
    neg = cx.binary(Binary.MUL, slope, cx.binary(Binary.MIN, x, cx.scalar(0.0)))
    return cx.binary(Binary.ADD, cx.unary(Unary.RELU, x), neg)


@converter(*BINARY)
def binary(cx: Ctx) -> Val:
    return cx.binary(BINARY[cx.op_type], cx.x(0), cx.x(1))


@converter("Pow")
def power(cx: Ctx) -> Val:
    y = cx.x(1)
    if isinstance(y, np.ndarray):  # from opset 12 the exponent may be an integer tensor
        y = y.astype(np.float32)
    return cx.binary(Binary.POW, cx.x(0), y)


@converter(*VARIADIC)
def variadic(cx: Ctx) -> Val:
    xs = cx.present()
    if not xs:
        raise cx.error("needs at least one input")
    y = fold(lambda a, b: cx.binary(VARIADIC[cx.op_type], a, b), xs)
    if cx.op_type == "Mean" and len(xs) > 1:
        y = cx.binary(Binary.DIV, y, cx.scalar(len(xs)))
    return y


@converter("Clip")
def clip_attrs(cx: Ctx) -> Val:
    """Opset < 11: bounds are attributes (absent = the float32 range, as onnxruntime clamps)."""
    return cx.unary(Unary.CLIP, cx.x(0), lo=cx.attr("min", -F32_MAX), hi=cx.attr("max", F32_MAX))


@converter("Clip", since=11)
def clip_inputs(cx: Ctx) -> Val:
    """Opset >= 11: optional min/max inputs; run-time bounds become elementwise max/min."""
    x = cx.x(0)
    lo = cx.inputs[1] if cx.has(1) else np.array(-F32_MAX, np.float32)
    hi = cx.inputs[2] if cx.has(2) else np.array(F32_MAX, np.float32)
    if isinstance(lo, np.ndarray) and isinstance(hi, np.ndarray):
        if lo.size != 1 or hi.size != 1:
            raise cx.error("min and max must be scalars")
        return cx.unary(Unary.CLIP, x, lo=float(lo.reshape(())), hi=float(hi.reshape(())))
    return cx.binary(Binary.MIN, cx.binary(Binary.MAX, x, lo), hi)


# --- softmax ----------------------------------------------------------------------------------
def _softmax(cx: Ctx, axes: tuple[int, ...]) -> Val:
    """exp(x - max) / sum over ``axes`` (LogSoftmax: (x - max) - log(sum))."""
    x = cx.x(0)
    shifted = cx.binary(Binary.SUB, x, cx.reduce(Reduce.MAX, x, axes))
    e = cx.unary(Unary.EXP, shifted)
    total = cx.reduce(Reduce.SUM, e, axes)
    if cx.op_type == "LogSoftmax":
        return cx.binary(Binary.SUB, shifted, cx.unary(Unary.LOG, total))
    return cx.binary(Binary.DIV, e, total)


@converter("Softmax", "LogSoftmax")
def softmax_2d(cx: Ctx) -> Val:
    """Opset < 13: the input is coerced to 2-D at ``axis`` (default 1), i.e. normalized over
    all of axes axis..rank-1 together; a multi-axis reduce does that without reshapes."""
    rank = len(cx.shape(cx.x(0)))
    return _softmax(cx, tuple(range(cx.axis(cx.attr("axis", 1), rank), rank)))


@converter("Softmax", "LogSoftmax", since=13)
def softmax(cx: Ctx) -> Val:
    rank = len(cx.shape(cx.x(0)))
    return _softmax(cx, (cx.axis(cx.attr("axis", -1), rank),))


# --- reductions ------------------------------------------------------------------------------
EMPTY_REDUCE = {"ReduceMax": -np.inf, "ReduceMin": np.inf, "ReduceLogSumExp": -np.inf,
                "ReduceMean": np.nan}
REDUCES = ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceL1", "ReduceL2",
           "ReduceSumSquare", "ReduceLogSumExp")


def _reduce(cx: Ctx, axes: list[int] | None) -> Val:
    x = cx.x(0)
    shape = cx.shape(x)
    rank = len(shape)
    if not axes:
        if cx.attr("noop_with_empty_axes", 0):
            return x
        axes = list(range(rank))
    axes = sorted({cx.axis(a, rank, "reduce axis") for a in axes})
    op = cx.op_type
    if 0 in shape:  # an empty reduction is the op's identity (or nan for a mean)
        out = [1 if i in axes else d for i, d in enumerate(shape)]
        y = np.full(out, EMPTY_REDUCE.get(op, 0.0), np.float32)
    elif op == "ReduceMin":  # min = -max(-x): the IR reduces by sum, max and mean only
        y = cx.unary(Unary.NEG, cx.reduce(Reduce.MAX, cx.unary(Unary.NEG, x), axes))
    elif op in ("ReduceSum", "ReduceMean", "ReduceMax"):
        fn = {"ReduceSum": Reduce.SUM, "ReduceMean": Reduce.MEAN, "ReduceMax": Reduce.MAX}[op]
        y = cx.reduce(fn, x, axes)
    elif op == "ReduceL1":
        y = cx.reduce(Reduce.SUM, cx.unary(Unary.ABS, x), axes)
    elif op == "ReduceLogSumExp":  # max-shifted, so large inputs do not overflow
        m = cx.reduce(Reduce.MAX, x, axes)
        s = cx.reduce(Reduce.SUM, cx.unary(Unary.EXP, cx.binary(Binary.SUB, x, m)), axes)
        y = cx.binary(Binary.ADD, cx.unary(Unary.LOG, s), m)
    else:
        y = cx.reduce(Reduce.SUM, cx.binary(Binary.MUL, x, x), axes)
        if op == "ReduceL2":
            y = cx.unary(Unary.SQRT, y)
    if cx.attr("keepdims", 1):
        return y
    return cx.reshape(y, [d for i, d in enumerate(shape) if i not in axes])


@converter(*REDUCES)
def reduce_attr_axes(cx: Ctx) -> Val:
    return _reduce(cx, cx.ints("axes"))


@converter("ReduceSum", since=13)
@converter(*(op for op in REDUCES if op != "ReduceSum"), since=18)
def reduce_input_axes(cx: Ctx) -> Val:
    """ReduceSum from opset 13 and the others from 18 take ``axes`` as an optional input."""
    return _reduce(cx, cx.const_ints(1, "axes"))
