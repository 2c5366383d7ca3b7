"""Elementwise ops, Softmax/LogSoftmax and the Reduce* family."""

from __future__ import annotations

from functools import reduce as fold

import numpy as np

from ..ir import Binary, Reduce, Unary
from ..ir.types import FLOATS
from .convert import Ctx, Val, converter
from .ops_logic import cast_to

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
    """From opset 12 base and exponent may differ in type; the result has the base's. A float
    base takes the exponent in its own type; an integer power is computed in float64 and
    truncated, exact wherever the result fits in 53 bits (ONNX leaves the rest undefined)."""
    x, y = cx.x(0), cx.x(1)
    base = cx.type(x).dtype
    power = float(y.reshape(-1)[0]) if isinstance(y, np.ndarray) and y.size == 1 else None
    if (base in FLOATS and power in (2.0, 3.0)
            and np.broadcast_shapes(cx.shape(x), y.shape) == cx.shape(x)):
        # x**2, x**3 (GELU's tanh form, variances) as products: a vector multiply instead
        # of a libm pow per element, within an ulp of it
        square = cx.binary(Binary.MUL, x, x)
        return square if power == 2.0 else cx.binary(Binary.MUL, square, x)
    wide = base if base in FLOATS else "float64"
    z = cx.binary(Binary.POW, cast_to(cx, x, wide), cast_to(cx, y, wide))
    return cast_to(cx, z, base)


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
    if cx.type(x).dtype not in FLOATS:
        return _clip_int(cx, x)
    lo = cx.inputs[1] if cx.has(1) else np.array(-F32_MAX, np.float32)
    hi = cx.inputs[2] if cx.has(2) else np.array(F32_MAX, np.float32)
    if isinstance(lo, np.ndarray) and isinstance(hi, np.ndarray):
        if lo.size != 1 or hi.size != 1:
            raise cx.error("min and max must be scalars")
        return cx.unary(Unary.CLIP, x, lo=float(lo.reshape(())), hi=float(hi.reshape(())))
    return cx.binary(Binary.MIN, cx.binary(Binary.MAX, x, lo), hi)


def _clip_int(cx: Ctx, x: Val) -> Val:
    """Clip of an integer tensor: elementwise max/min, an absent bound being no bound (the
    float CLIP unary would round 64-bit values). Constant bounds must fit the data type."""
    dtype = np.dtype(cx.type(x).dtype)
    y = x
    for i, fn in ((1, Binary.MAX), (2, Binary.MIN)):
        if not cx.has(i):
            continue
        b = cx.inputs[i]
        if cx.type(b).dtype != dtype.name:
            raise cx.error(f"bound {i} is {cx.type(b).dtype}, the input {dtype.name}")
        if cx.shape(b) not in ((), (1,)):
            raise cx.error("min and max must be scalars")
        y = cx.binary(fn, y, cx.reshape(b, ()))
    return y


# --- softmax ----------------------------------------------------------------------------------
def _softmax(cx: Ctx, axes: tuple[int, ...], x: Val | None = None,
             bias: Val | None = None) -> Val:
    """exp(x - max) / sum over ``axes`` (LogSoftmax: (x - max) - log(sum)); ``x`` defaults to
    the node's input 0 (other converters, e.g. Attention, pass their own). With ``bias``, the
    softmax of x + bias, the add emitted once for the max and once for the shift: each is then
    single-use and fuses into its kernel, so x + bias is never written to memory."""
    x = cx.x(0) if x is None else x

    def scores() -> Val:
        return x if bias is None else cx.binary(Binary.ADD, x, bias)

    shifted = cx.binary(Binary.SUB, scores(), cx.reduce(Reduce.MAX, scores(), axes))
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
                "ReduceMean": np.nan, "ReduceProd": 1.0, "ReduceLogSum": -np.inf}
REDUCES = ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceL1", "ReduceL2",
           "ReduceSumSquare", "ReduceLogSumExp", "ReduceProd", "ReduceLogSum")


def _reduce_nothing(cx: Ctx, x: Val) -> Val:
    """The op reducing over an empty set of axes, as onnxruntime and the ONNX reference
    compute it: ReduceSumSquare is x * x, ReduceL1/L2 |x|, ReduceLogSum log(x), the rest x."""
    op = cx.op_type
    if op == "ReduceSumSquare":
        return cx.binary(Binary.MUL, x, x)
    if op in ("ReduceL1", "ReduceL2"):
        return cx.unary(Unary.ABS, x)
    if op == "ReduceLogSum":
        return cx.unary(Unary.LOG, x)
    return x


def _reduce(cx: Ctx, axes: list[int] | None) -> Val:
    x = cx.x(0)
    shape = cx.shape(x)
    rank = len(shape)
    if not axes:
        if cx.attr("noop_with_empty_axes", 0):  # a reduction over no axis: only the
            return _reduce_nothing(cx, x)  # elementwise parts of the op remain
        axes = list(range(rank))
    axes = sorted({cx.axis(a, rank, "reduce axis") for a in axes})
    op = cx.op_type
    if 0 in shape:  # an empty reduction is the op's identity (or nan for a mean)
        out = [1 if i in axes else d for i, d in enumerate(shape)]
        y = np.full(out, EMPTY_REDUCE.get(op, 0.0), np.float32)
    elif op == "ReduceMin":  # max of an order-reversing key (-x; ~x for ints: no overflow)
        from .ops_index import order_key

        y = order_key(cx, cx.reduce(Reduce.MAX, order_key(cx, x, False), axes), False)
    elif op in ("ReduceSum", "ReduceMean", "ReduceMax"):
        fn = {"ReduceSum": Reduce.SUM, "ReduceMean": Reduce.MEAN, "ReduceMax": Reduce.MAX}[op]
        y = cx.reduce(fn, x, axes)
    elif op == "ReduceProd":
        y = cx.reduce(Reduce.PROD, x, axes)
    elif op == "ReduceLogSum":
        y = cx.unary(Unary.LOG, cx.reduce(Reduce.SUM, x, axes))
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
