"""Training losses evaluated at inference: NegativeLogLikelihoodLoss and
SoftmaxCrossEntropyLoss, composed from comparisons, WHERE, REDUCE and GATHER (as their ONNX
function bodies are). The class a target names is picked by a one-hot mask and a sum over the
class axis, so the pick is exact (one term is non-zero) and never reads outside the input."""

from __future__ import annotations

import numpy as np

from ..ir import Binary, Op, Reduce, Unary
from .convert import Ctx, Val, converter
from .ops_logic import cast_to

REDUCTIONS = ("none", "sum", "mean")


def _zero(cx: Ctx, like: Val) -> np.ndarray:
    return np.zeros((), cx.type(like).dtype)


def _check(cx: Ctx, scores: Val, target: Val) -> tuple[tuple[int, ...], tuple[int, ...]]:
    shape, tshape = cx.shape(scores), cx.shape(target)
    if len(shape) < 2 or tuple(tshape) != (shape[0], *shape[2:]):
        raise cx.error(f"input {list(shape)} must be [N, C, d1, ...] and target [N, d1, ...], "
                       f"got target {list(tshape)}")
    if cx.type(target).dtype not in ("int64", "int32"):
        raise cx.error(f"target must be int64 or int32, got {cx.type(target).dtype}")
    return shape, tshape


def nll(cx: Ctx, logp: Val, target: Val, weight: Val | None) -> Val:
    """The NegativeLogLikelihoodLoss of log-probabilities ``logp`` [N, C, *D] at int
    ``target`` [N, *D], with the node's ignore_index and reduction attributes."""
    shape, tshape = _check(cx, logp, target)
    reduction = cx.attr("reduction", "mean")
    if reduction not in REDUCTIONS:
        raise cx.error(f"reduction '{reduction}' is not one of {', '.join(REDUCTIONS)}")
    ii = cx.attr("ignore_index")
    c, rest = shape[1], list(shape[2:])
    t = cast_to(cx, target, "int64")
    classes = np.arange(c, dtype=np.int64).reshape([1, c] + [1] * len(rest))
    hit = cx.binary(Binary.EQ, cx.reshape(t, [shape[0], 1, *rest]), classes)
    zero = _zero(cx, logp)
    picked = cx.reduce(Reduce.SUM, cx.add(Op.WHERE, [hit, logp, zero]), (1,))
    loss = cx.unary(Unary.NEG, cx.reshape(picked, tshape))
    keep = None if ii is None else cx.unary(  # target != ignore_index
        Unary.NOT, cx.binary(Binary.EQ, t, np.array(int(ii), np.int64)))
    w: Val | None = None
    if weight is not None:
        if cx.shape(weight) != (c,):
            raise cx.error(f"weight has shape {list(cx.shape(weight))}, expected [{c}]")
        w = cx.add(Op.GATHER, [weight, t], axis=0)  # clamped: an ignored target may be any id
    if keep is not None:  # an ignored position's loss is 0, whatever the input holds there
        loss = cx.add(Op.WHERE, [keep, loss, zero])
        w = cx.add(Op.WHERE, [keep, np.ones((), cx.type(logp).dtype) if w is None else w, zero])
    if weight is not None:
        loss = cx.binary(Binary.MUL, loss, w)
    if reduction == "none":
        return loss
    axes = tuple(range(len(tshape)))
    total = cx.reshape(cx.reduce(Reduce.SUM, loss, axes), [])
    if reduction == "sum":
        return total
    if w is None:
        return cx.binary(Binary.DIV, total, np.array(np.prod(tshape), cx.type(logp).dtype))
    return cx.binary(Binary.DIV, total, cx.reshape(cx.reduce(Reduce.SUM, w, axes), []))


def _weight(cx: Ctx) -> Val | None:
    return cx.x(2) if cx.has(2) else None


@converter("NegativeLogLikelihoodLoss", since=12)
def negative_log_likelihood_loss(cx: Ctx) -> Val:
    return nll(cx, cx.x(0), cx.x(1), _weight(cx))


@converter("SoftmaxCrossEntropyLoss", since=12)
def softmax_cross_entropy_loss(cx: Ctx) -> list[Val]:
    """log_softmax over the class axis (max-shifted, as LogSoftmax), then the NLL loss; the
    optional second output is the log-probabilities."""
    x = cx.x(0)
    _check(cx, x, cx.x(1))
    shifted = cx.binary(Binary.SUB, x, cx.reduce(Reduce.MAX, x, (1,)))
    total = cx.reduce(Reduce.SUM, cx.unary(Unary.EXP, shifted), (1,))
    logp = cx.binary(Binary.SUB, shifted, cx.unary(Unary.LOG, total))
    return [nll(cx, logp, cx.x(1), _weight(cx)), logp]
