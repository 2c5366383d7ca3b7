"""Float math and rounding: the trigonometric and hyperbolic functions, Floor, Ceil, Round
(IR unaries: libm calls and LLVM rounding intrinsics); Sign, IsNaN, IsInf and Swish, composed
from comparisons, Where and Sigmoid as ONNX's definitions spell them."""

from __future__ import annotations

import numpy as np

from ..ir import Binary, Op, Unary
from .convert import Ctx, Val, converter

MATH = {
    "Sin": Unary.SIN, "Cos": Unary.COS, "Tan": Unary.TAN, "Asin": Unary.ASIN,
    "Acos": Unary.ACOS, "Atan": Unary.ATAN, "Sinh": Unary.SINH, "Cosh": Unary.COSH,
    "Asinh": Unary.ASINH, "Acosh": Unary.ACOSH, "Atanh": Unary.ATANH, "Floor": Unary.FLOOR,
    "Ceil": Unary.CEIL, "Round": Unary.ROUND,
}


@converter(*MATH)
def math_unary(cx: Ctx) -> Val:
    return cx.unary(MATH[cx.op_type], cx.x(0))


def _like(cx: Ctx, x: Val, value: float) -> np.ndarray:
    """``value`` as a scalar of ``x``'s element type."""
    return np.array(value, cx.type(x).dtype)


@converter("Sign", since=9)
def sign(cx: Ctx) -> Val:
    """1 where x > 0, -1 where x < 0, else x itself (0 stays 0, NaN stays NaN, as np.sign)."""
    x = cx.x(0)
    if cx.type(x).dtype == "bool":
        raise cx.error("Sign of a bool tensor")
    neg = cx.add(Op.WHERE, [cx.binary(Binary.LT, x, _like(cx, x, 0)), _like(cx, x, -1), x])
    return cx.add(Op.WHERE, [cx.binary(Binary.GT, x, _like(cx, x, 0)), _like(cx, x, 1), neg])


def _float_input(cx: Ctx) -> Val:
    x = cx.x(0)
    if cx.type(x).dtype not in ("float32", "float16", "float64", "bfloat16"):
        raise cx.error(f"takes a float tensor, got {cx.type(x).dtype}")
    return x


@converter("IsNaN", since=9)
def isnan(cx: Ctx) -> Val:
    """not (x == x): only NaN differs from itself."""
    x = _float_input(cx)
    return cx.unary(Unary.NOT, cx.binary(Binary.EQ, x, x))


@converter("IsInf", since=10)
def isinf(cx: Ctx) -> Val:
    x = _float_input(cx)
    tests = []
    if cx.attr("detect_positive", 1):
        tests.append(cx.binary(Binary.EQ, x, _like(cx, x, np.inf)))
    if cx.attr("detect_negative", 1):
        tests.append(cx.binary(Binary.EQ, x, _like(cx, x, -np.inf)))
    if not tests:
        return np.zeros(cx.shape(x), bool)
    return tests[0] if len(tests) == 1 else cx.binary(Binary.OR, *tests)


@converter("Swish", since=24)
def swish(cx: Ctx) -> Val:
    """x * sigmoid(alpha * x)."""
    x = cx.x(0)
    alpha = float(cx.attr("alpha", 1.0))
    arg = x if alpha == 1 else cx.binary(Binary.MUL, x, cx.scalar(alpha))
    return cx.binary(Binary.MUL, x, cx.unary(Unary.SIGMOID, arg))
