"""Smooth and thresholded activations: Erf, Gelu, Elu, Selu, Celu, Softplus, Softsign, Mish,
ThresholdedRelu, Shrink.

Erf, Elu, Softplus, ThresholdedRelu and Shrink are IR unaries (the backend needs a polynomial,
expm1 or log1p, or a comparison, none of which the other ops spell accurately); the rest are
compositions of those with arithmetic, as ONNX's function bodies define them.
"""

from __future__ import annotations

import math

from ..ir import Binary, Unary
from .convert import Ctx, Val, converter

SELU_ALPHA = 1.67326319217681884765625
SELU_GAMMA = 1.05070102214813232421875


@converter("Erf", since=9)
def erf(cx: Ctx) -> Val:
    return cx.unary(Unary.ERF, cx.x(0))


@converter("Softplus")
def softplus(cx: Ctx) -> Val:
    return cx.unary(Unary.SOFTPLUS, cx.x(0))


@converter("Elu")
def elu(cx: Ctx) -> Val:
    return cx.unary(Unary.ELU, cx.x(0), alpha=cx.attr("alpha", 1.0))


@converter("Selu")
def selu(cx: Ctx) -> Val:
    """gamma * elu(x, alpha): exactly Selu's two branches, with an accurate exp(x) - 1."""
    y = cx.unary(Unary.ELU, cx.x(0), alpha=cx.attr("alpha", SELU_ALPHA))
    return cx.binary(Binary.MUL, y, cx.scalar(cx.attr("gamma", SELU_GAMMA)))


@converter("Celu", since=12)
def celu(cx: Ctx) -> Val:
    """alpha * elu(x / alpha, 1), Celu's function body in ONNX."""
    alpha = cx.scalar(cx.attr("alpha", 1.0))
    if alpha == 0:
        raise cx.error("alpha must not be 0")
    y = cx.unary(Unary.ELU, cx.binary(Binary.DIV, cx.x(0), alpha), alpha=1.0)
    return cx.binary(Binary.MUL, y, alpha)


@converter("Softsign")
def softsign(cx: Ctx) -> Val:
    x = cx.x(0)
    return cx.binary(Binary.DIV, x, cx.binary(Binary.ADD, cx.unary(Unary.ABS, x), cx.scalar(1)))


@converter("Mish", since=18)
def mish(cx: Ctx) -> Val:
    x = cx.x(0)
    return cx.binary(Binary.MUL, x, cx.unary(Unary.TANH, cx.unary(Unary.SOFTPLUS, x)))


@converter("ThresholdedRelu", since=10)
def thresholded_relu(cx: Ctx) -> Val:
    return cx.unary(Unary.THRESHOLDED_RELU, cx.x(0), alpha=cx.attr("alpha", 1.0))


@converter("Shrink", since=9)
def shrink(cx: Ctx) -> Val:
    return cx.unary(Unary.SHRINK, cx.x(0), lambd=cx.attr("lambd", 0.5),
                    bias=cx.attr("bias", 0.0))


@converter("Gelu", since=20)
def gelu(cx: Ctx) -> Val:
    """0.5 x (1 + erf(x / sqrt 2)), or with approximate="tanh"
    0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))), as ONNX's function body."""
    x = cx.x(0)
    mode = cx.attr("approximate", "none")
    if mode == "none":
        inner = cx.unary(Unary.ERF, cx.binary(Binary.MUL, x, cx.scalar(1 / math.sqrt(2))))
    elif mode == "tanh":
        cube = cx.binary(Binary.MUL, cx.binary(Binary.MUL, x, x), x)
        arg = cx.binary(Binary.ADD, x, cx.binary(Binary.MUL, cube, cx.scalar(0.044715)))
        inner = cx.unary(Unary.TANH, cx.binary(Binary.MUL, arg,
                                               cx.scalar(math.sqrt(2 / math.pi))))
    else:
        raise cx.unsupported(f"approximate={mode!r} (only 'none' and 'tanh' exist)")
    half = cx.binary(Binary.MUL, x, cx.scalar(0.5))
    return cx.binary(Binary.MUL, half, cx.binary(Binary.ADD, inner, cx.scalar(1)))
