"""The numpy reference interpreter: the one definition of what every IR op computes.

Every pass is tested by running this before and after it; the CPU backend is tested against it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .graph import Graph, Node
from .ops import UNARY_PARAMS, Binary, Op, Reduce, Unary

F32 = np.float32


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return (1 / (1 + np.exp(-x))).astype(x.dtype)


UNARY: dict[Unary, Callable[..., np.ndarray]] = {
    Unary.RELU: lambda x: np.maximum(x, 0),
    Unary.LEAKY_RELU: lambda x, alpha: np.where(x >= 0, x, x * x.dtype.type(alpha)),
    Unary.CLIP: lambda x, lo, hi: np.minimum(np.maximum(x, x.dtype.type(lo)), x.dtype.type(hi)),
    Unary.SIGMOID: _sigmoid,
    Unary.HARD_SIGMOID: lambda x, alpha, beta: np.clip(
        x * x.dtype.type(alpha) + x.dtype.type(beta), 0, 1).astype(x.dtype),
    Unary.HARD_SWISH: lambda x: x * np.clip(x / x.dtype.type(6) + x.dtype.type(0.5), 0, 1),
    Unary.TANH: np.tanh,
    Unary.EXP: np.exp,
    Unary.LOG: np.log,
    Unary.SQRT: np.sqrt,
    Unary.NEG: np.negative,
    Unary.ABS: np.abs,
}

BINARY: dict[Binary, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    Binary.ADD: np.add,
    Binary.SUB: np.subtract,
    Binary.MUL: np.multiply,
    Binary.DIV: np.divide,
    Binary.MAX: np.maximum,
    Binary.MIN: np.minimum,
    Binary.POW: np.power,
}

def _reduce_max(x: np.ndarray, axis: tuple[int, ...], keepdims: bool) -> np.ndarray:
    """np.max, and -inf over an empty set (as ONNX says) where numpy would raise."""
    if x.size == 0:
        return np.full(np.sum(x, axis, keepdims=keepdims).shape, -np.inf, x.dtype)
    return np.max(x, axis, keepdims=keepdims)


REDUCE: dict[Reduce, Callable[..., np.ndarray]] = {
    Reduce.SUM: np.sum,
    Reduce.MAX: _reduce_max,
    Reduce.MEAN: np.mean,
}


def window(x: np.ndarray, kernel, strides, dilations, pads, pad) -> np.ndarray:
    """[N, *S, C] -> [N, *O, *K, C]: every (strided, dilated) patch of the padded input."""
    n = len(kernel)
    width = [(0, 0)] + [(pads[i], pads[n + i]) for i in range(n)] + [(0, 0)]
    xp = np.pad(x, width, constant_values=pad)
    span = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    v = sliding_window_view(xp, span, axis=tuple(range(1, 1 + n)))  # [N, *P, C, *span]
    v = v[(slice(None), *(slice(None, None, s) for s in strides), slice(None),
           *(slice(None, None, d) for d in dilations))]
    return np.ascontiguousarray(np.moveaxis(v, 1 + n, -1))


def _slice(x: np.ndarray, starts, steps, counts) -> np.ndarray:
    idx = tuple(np.arange(n) * st + s for s, st, n in zip(starts, steps, counts))
    return x[np.ix_(*idx)] if x.ndim else x


def _kernel(node: Node, *xs: np.ndarray) -> np.ndarray:
    body: Graph = node.attrs["body"]
    feeds = {v.name: x for v, x in zip(body.inputs, xs)}
    return run(body, feeds)[body.outputs[0]]


def _eval(node: Node, xs: list[np.ndarray]) -> np.ndarray:
    at = node.attrs
    op = node.op
    if op is Op.CONST:
        return at["value"]
    if op is Op.MATMUL:
        return np.matmul(xs[0], xs[1])
    if op is Op.UNARY:
        fn = at["fn"]
        with np.errstate(all="ignore"):
            return UNARY[fn](xs[0], *(at[p] for p in UNARY_PARAMS.get(fn, ())))
    if op is Op.BINARY:
        with np.errstate(all="ignore"):
            return BINARY[at["fn"]](xs[0], xs[1])
    if op is Op.REDUCE:
        return REDUCE[at["fn"]](xs[0], axis=tuple(at["axes"]), keepdims=True)
    if op is Op.WINDOW:
        return window(xs[0], at["kernel"], at["strides"], at["dilations"], at["pads"], at["pad"])
    if op is Op.RESHAPE:
        return xs[0].reshape(at["shape"])
    if op is Op.TRANSPOSE:
        return np.transpose(xs[0], at["perm"])
    if op is Op.CONCAT:
        return np.concatenate(xs, axis=at["axis"])
    if op is Op.SLICE:
        return _slice(xs[0], at["starts"], at["steps"], at["counts"])
    if op is Op.PAD:
        r = xs[0].ndim
        width = [(at["pads"][i], at["pads"][r + i]) for i in range(r)]
        return np.pad(xs[0], width, constant_values=at["value"])
    if op is Op.KERNEL:
        return _kernel(node, *xs)
    raise NotImplementedError(op)


def apply(node: Node, xs: list[np.ndarray]) -> np.ndarray:
    """One node on inputs of any (broadcast-compatible) shape, without the cast to its type."""
    return np.asarray(_eval(node, xs))


def evaluate(node: Node, xs: list[np.ndarray]) -> np.ndarray:
    """One node on concrete inputs, cast to the node's declared type."""
    y = np.asarray(_eval(node, xs))
    t = node.type
    return y.astype(t.dtype, copy=False).reshape(t.shape)


def run(graph: Graph, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Execute ``graph`` on ``feeds`` (input name -> array); returns every output by name."""
    env: dict[str, np.ndarray] = {}
    for v in graph.inputs:
        env[v.name] = np.asarray(feeds[v.name], dtype=v.type.dtype).reshape(v.type.shape)
    for node in graph.nodes:
        env[node.name] = evaluate(node, [env[i] for i in node.inputs])
    return {name: env[name] for name in graph.outputs}
