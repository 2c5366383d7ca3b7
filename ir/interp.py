"""The numpy reference interpreter: the one definition of what every IR op computes.

Every pass is tested by running this before and after it; the CPU backend is tested against it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .graph import Graph, Node
from .ops import UNARY_PARAMS, Binary, Op, Reduce, Unary

F32 = np.float32


# erf in float64, then rounded: the reference the generated float32 polynomial is measured by
_ERF64 = np.frompyfunc(math.erf, 1, 1)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return (1 / (1 + np.exp(-x))).astype(x.dtype)


def _f64(f: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """``f`` computed in float64 and rounded once: the definition of the libm functions,
    whose float versions in the generated code are within an ulp or so of it."""
    return lambda x: f(x.astype(np.float64)).astype(x.dtype)


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
    Unary.ERF: lambda x: np.asarray(_ERF64(x.astype(np.float64)), np.float64).astype(x.dtype),
    Unary.ELU: lambda x, alpha: np.where(x > 0, x, x.dtype.type(alpha) * np.expm1(x)),
    Unary.SOFTPLUS: lambda x: np.logaddexp(x, x.dtype.type(0)),
    Unary.THRESHOLDED_RELU: lambda x, alpha: np.where(x > x.dtype.type(alpha), x,
                                                      x.dtype.type(0)),
    Unary.SHRINK: lambda x, lambd, bias: np.where(
        x > x.dtype.type(lambd), x - x.dtype.type(bias),
        np.where(x < -x.dtype.type(lambd), x + x.dtype.type(bias), x.dtype.type(0))),
    Unary.NOT: np.invert,  # on bools: logical
    Unary.SIN: _f64(np.sin),
    Unary.COS: _f64(np.cos),
    Unary.TAN: _f64(np.tan),
    Unary.ASIN: _f64(np.arcsin),
    Unary.ACOS: _f64(np.arccos),
    Unary.ATAN: _f64(np.arctan),
    Unary.SINH: _f64(np.sinh),
    Unary.COSH: _f64(np.cosh),
    Unary.ASINH: _f64(np.arcsinh),
    Unary.ACOSH: _f64(np.arccosh),
    Unary.ATANH: _f64(np.arctanh),
    Unary.FLOOR: np.floor,
    Unary.CEIL: np.ceil,
    Unary.ROUND: np.round,  # half to even
}

BINARY: dict[Binary, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    Binary.ADD: np.add,
    Binary.SUB: np.subtract,
    Binary.MUL: np.multiply,
    Binary.DIV: np.divide,
    Binary.MAX: np.maximum,
    Binary.MIN: np.minimum,
    Binary.POW: np.power,
    Binary.MOD: np.fmod,
    Binary.EQ: np.equal,
    Binary.LT: np.less,
    Binary.LE: np.less_equal,
    Binary.GT: np.greater,
    Binary.GE: np.greater_equal,
    Binary.AND: np.bitwise_and,  # on bools: logical
    Binary.OR: np.bitwise_or,
    Binary.XOR: np.bitwise_xor,
    Binary.SHL: lambda a, b: _shift(np.left_shift, a, b),
    Binary.SHR: lambda a, b: _shift(np.right_shift, a, b),
}


def _shift(f: Callable[..., np.ndarray], a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``f(a, b)``; where b is negative or at least a's bit width, every bit shifted out:
    0, or -1 for a right shift of a negative signed value (the sign fills it)."""
    bits = 8 * a.dtype.itemsize
    inside = (b >= 0) & (b < bits)
    out = f(a, np.where(inside, b, 0).astype(a.dtype))
    spilled = np.where(a < 0, -1, 0) if f is np.right_shift and a.dtype.kind == "i" else 0
    return np.where(inside, out, spilled).astype(a.dtype)


def _int_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Integer division as C: truncated toward zero, wrapping on overflow; x / 0 is 0 (ONNX
    leaves it undefined; generated code must not trap)."""
    safe = np.where(b == 0, 1, b)
    with np.errstate(all="ignore"):  # floor, then toward zero (np.abs(INT_MIN) is negative)
        q = np.where(safe == -1, 0 - a, a // safe)  # INT_MIN / -1 wraps to INT_MIN, as C
        q = np.where((q * safe != a) & ((a < 0) != (safe < 0)), q + 1, q)
    return np.where(b == 0, 0, q).astype(a.dtype)


def cast(x: np.ndarray, to: str) -> np.ndarray:
    """``x`` as ``to``: float -> int truncates toward zero and saturates, NaN -> 0 (LLVM's
    fptosi.sat, so never undefined); -> bool is x != 0 (NaN is true); int -> int wraps."""
    dt = np.dtype(to)
    if x.dtype.kind == "f" and dt.kind in "iu":
        info = np.iinfo(dt)
        t = np.trunc(np.nan_to_num(x.astype(np.float64), nan=0.0, posinf=np.inf,
                                   neginf=-np.inf))
        inside = np.where((t > info.min) & (t < info.max), t, 0).astype(dt)  # no UB casts
        return np.where(t >= info.max, info.max, np.where(t <= info.min, info.min, inside))
    if dt == np.bool_:
        return x != 0
    return x.astype(dt)


def gather(data: np.ndarray, idx: np.ndarray, axis: int) -> np.ndarray:
    """np.take along ``axis``, a negative index counting from the end once, then clamped."""
    n = data.shape[axis]
    i = idx.astype(np.int64)
    return np.take(data, np.clip(np.where(i < 0, i + n, i), 0, n - 1), axis=axis)

def lowest(dtype: np.dtype) -> float | int:
    """The identity of max: -inf, or the smallest integer of ``dtype``."""
    return -np.inf if dtype.kind == "f" else np.iinfo(dtype).min


def _reduce_max(x: np.ndarray, axis: tuple[int, ...], keepdims: bool) -> np.ndarray:
    """np.max, and its identity over an empty set (-inf for floats, as ONNX says)."""
    if x.size == 0:
        return np.full(np.sum(x, axis, keepdims=keepdims).shape, lowest(x.dtype), x.dtype)
    return np.max(x, axis, keepdims=keepdims)


def _sum(x: np.ndarray, axis: tuple[int, ...], keepdims: bool) -> np.ndarray:
    """np.sum in the type of ``x`` (an int8 sum wraps in int8, as the kernels' does)."""
    return np.sum(x, axis, dtype=x.dtype, keepdims=keepdims)


REDUCE: dict[Reduce, Callable[..., np.ndarray]] = {
    Reduce.SUM: _sum,
    Reduce.MAX: _reduce_max,
    Reduce.MEAN: np.mean,
    Reduce.PROD: lambda x, axis, keepdims: np.prod(x, axis, dtype=x.dtype, keepdims=keepdims),
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
    if op in (Op.MATMUL, Op.REDUCE) and xs[0].dtype == np.float16:
        # float16 sums accumulate in float32 and round once (as the kernels do)
        return _eval(node, [x.astype(F32) for x in xs]).astype(np.float16)
    if op is Op.MATMUL:
        return np.matmul(xs[0], xs[1])
    if op is Op.UNARY:
        fn = at["fn"]
        with np.errstate(all="ignore"):
            return UNARY[fn](xs[0], *(at[p] for p in UNARY_PARAMS.get(fn, ())))
    if op is Op.BINARY:
        if at["fn"] is Binary.DIV and xs[0].dtype.kind in "iu":
            return _int_div(xs[0], xs[1])
        with np.errstate(all="ignore"):
            return BINARY[at["fn"]](xs[0], xs[1])
    if op is Op.CAST:
        return cast(xs[0], at["to"])
    if op is Op.WHERE:
        return np.where(xs[0], xs[1], xs[2])
    if op is Op.GATHER:
        return gather(xs[0], xs[1], at["axis"])
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
