"""NNSmith-style differential fuzzing of sw2c against onnxruntime.

``random_model(seed)`` grows a random valid ONNX graph (opset 17, static shapes) over the ops
sw2c supports: float32 tensors, and int64/int32/bool ones (ids, masks: casts, comparisons,
logic, Where, gathers on run-time ids, the attention-mask idiom), whose inputs are drawn as
sw2c's verify draws them (ids within their tables) and whose outputs must match exactly.
``check(model, seed)`` runs it through onnxruntime (the oracle) and sw2c and returns a
``Failure`` when they disagree or sw2c breaks; ``shrink`` minimizes a failing graph
while it keeps failing the same way. The command line runs a soak::

    python -m sw2c.benchmarks.fuzz --count 2000 [--seed 0] [--minutes 30] [--jobs 1]
    python -m sw2c.benchmarks.fuzz --replay benchmarks/fuzz_failures/123.onnx

Every case runs in a child process, so a segfault or a hang in sw2c is a recorded failure, not
the end of the soak. Failing cases are minimized and saved to ``benchmarks/fuzz_failures/``.
"""

from __future__ import annotations

import argparse
import ctypes
import itertools
import math
import multiprocessing
import re
import signal
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8
MAX_ELEMENTS = 50_000
MAX_RANK = 5
CONSTANT_NODE_RATE = 0.12  # constants written as Constant nodes rather than initializers
FAILURE_DIR = Path(__file__).resolve().parent / "fuzz_failures"
HANG_SHRINK_TIMEOUT = 15.0  # seconds: a candidate this slow still hangs (cases take < 1 s)

Shape = tuple[int, ...]

# mismatch: outputs differ; raw-exception: an exception that is not a Sw2cError (or sw2c's
# "internal error" CompileError wrapping one); crash: the process died; unsupported:
# UnsupportedOpError on an op sw2c claims; error: another Sw2cError on a valid model; hang: no
# answer in time; generator: ONNX or onnxruntime reject the model (a fuzzer bug)
RAW = "raw-exception"
KINDS = ("mismatch", RAW, "crash", "unsupported", "error", "hang", "generator")


class GeneratorError(Exception):
    """``random_model`` made a graph that ONNX or onnxruntime rejects: a bug of the generator."""


# --------------------------------------------------------------------------- graph building


@dataclass
class Builder:
    """A graph under construction: nodes, constants, inputs and the shape of every tensor."""

    rng: np.random.Generator
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    inits: list[TensorProto] = field(default_factory=list)
    inputs: list[onnx.ValueInfoProto] = field(default_factory=list)
    shapes: dict[str, Shape] = field(default_factory=dict)  # graph inputs and node outputs
    pool: list[str] = field(default_factory=list)  # float tensors an op may consume, oldest first
    types: dict[str, int] = field(default_factory=dict)  # element types other than float
    typed: list[str] = field(default_factory=list)  # int and bool tensors (ids, masks), in order
    exact: set[str] = field(default_factory=set)  # computed bit-identically by any backend
    typed_ok: bool = True  # int/bool graph inputs (ids, masks) may be made
    uses: Counter = field(default_factory=Counter)
    count: int = 0

    # ---- randomness

    def randint(self, lo: int, hi: int) -> int:
        """A uniform integer in [lo, hi]."""
        return int(self.rng.integers(lo, hi + 1))

    def coin(self, p: float = 0.5) -> bool:
        return bool(self.rng.random() < p)

    def choice(self, seq: Sequence):
        return seq[int(self.rng.integers(len(seq)))]

    def uniform(self, lo: float, hi: float) -> float:
        return float(self.rng.uniform(lo, hi))

    def floats(self, shape: Shape, scale: float = 1.0) -> np.ndarray:
        return (self.rng.standard_normal(shape) * scale).astype(np.float32)

    # ---- tensors

    def fresh(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def add_input(self, shape: Shape, elem: int = TensorProto.FLOAT) -> str:
        """A graph input; an int or bool one (ids, a mask) joins ``typed``, not the pool."""
        name = f"in{len(self.inputs)}"
        self.inputs.append(helper.make_tensor_value_info(name, elem, list(shape)))
        self.shapes[name] = tuple(shape)
        self._track(name, elem)
        self.exact.add(name)
        return name

    def _track(self, name: str, elem: int) -> None:
        if elem == TensorProto.FLOAT:
            self.pool.append(name)
        else:
            self.types[name] = elem
            self.typed.append(name)

    def elem(self, name: str) -> int:
        """The ONNX element type of a tensor."""
        return self.types.get(name, TensorProto.FLOAT)

    def const(self, value: np.ndarray, prefix: str = "w") -> str:
        """A constant holding ``value`` (float32 or int64): an initializer, or sometimes a
        Constant node (as exporters write shapes and scalars)."""
        name = self.fresh(prefix)
        tensor = numpy_helper.from_array(np.asarray(value), name)
        if self.coin(CONSTANT_NODE_RATE):
            self.nodes.append(helper.make_node("Constant", [], [name], value=tensor,
                                               name=f"n{len(self.nodes)}_Constant"))
        else:
            self.inits.append(tensor)
        self.shapes[name] = tuple(np.shape(value))
        if tensor.data_type != TensorProto.FLOAT:
            self.types[name] = tensor.data_type
        self.exact.add(name)
        return name

    def inits_names(self) -> set[str]:
        """The constants (initializers and Constant nodes)."""
        return {t.name for t in self.inits} | {n.output[0] for n in self.nodes
                                                 if n.op_type == "Constant"}

    def ints(self, values: Sequence[int]) -> str:
        return self.const(np.asarray(values, np.int64), "i")

    def scalar(self, value: float) -> str:
        return self.const(np.asarray(value, np.float32), "s")

    def op(self, op_type: str, inputs: Sequence[str], shapes: Sequence[Shape],
           out_type: int = TensorProto.FLOAT, **attrs) -> list[str]:
        """Append a node whose outputs have element type ``out_type``; attributes given as
        None are left out (their default applies)."""
        outs = [self.fresh("t") for _ in shapes]
        node = helper.make_node(op_type, list(inputs), outs, name=f"n{len(self.nodes)}_{op_type}",
                                **{k: v for k, v in attrs.items() if v is not None})
        self.nodes.append(node)
        self.uses.update(i for i in inputs if i)
        exact = op_type in EXACT_OPS and all(i in self.exact for i in inputs if i)
        for out, shape in zip(outs, shapes):
            self.shapes[out] = tuple(int(d) for d in shape)
            self._track(out, out_type)
            if exact:
                self.exact.add(out)
        return outs

    def op1(self, op_type: str, inputs: Sequence[str], shape: Shape,
            out_type: int = TensorProto.FLOAT, **attrs) -> str:
        return self.op(op_type, inputs, [shape], out_type, **attrs)[0]

    def pick(self, accept: Callable[[Shape], bool]) -> str | None:
        """A pool tensor whose shape ``accept``s, most often the newest (long chains), else any
        (branches)."""
        fits = [t for t in self.pool if accept(self.shapes[t])]
        if not fits:
            return None
        return fits[-1] if self.coin(0.5) else self.choice(fits)


# ops whose outputs are bit-identical in every correct implementation when their inputs are:
# data movement, selection, sign games, comparisons and casts. Only such tensors feed a
# comparison or a float-to-int cast (a rounding difference upstream would flip the result).
EXACT_OPS = frozenset({
    "Reshape", "Transpose", "Slice", "Concat", "Split", "Squeeze", "Unsqueeze", "Flatten",
    "Identity", "Dropout", "Expand", "Pad", "Relu", "Neg", "Abs", "MaxPool", "GlobalMaxPool",
    "ReduceMax", "Max", "Min", "DepthToSpace", "SpaceToDepth", "Gather", "GatherElements",
    "GatherND", "Where", "Cast", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual",
    "And", "Or", "Xor", "Not"})


def numel(shape: Shape) -> int:
    return math.prod(shape)


def small(shape: Shape) -> bool:
    return 0 < numel(shape) <= MAX_ELEMENTS and len(shape) <= MAX_RANK and min(shape, default=1) > 0


def broadcast(a: Shape, b: Shape) -> Shape | None:
    """The numpy broadcast of two shapes, or None when they do not broadcast."""
    out = []
    for x, y in zip_longest(reversed(a), reversed(b), fillvalue=1):
        if x != y and 1 not in (x, y):
            return None
        out.append(max(x, y))
    return tuple(reversed(out))


def broadcastable_shape(b: Builder, shape: Shape) -> Shape:
    """A random shape that broadcasts against ``shape`` (lower rank, 1s, or one extra dim)."""
    rank = b.randint(0, min(len(shape) + 1, MAX_RANK))
    dims = []
    for i in range(rank):
        j = len(shape) - rank + i
        if j < 0:
            dims.append(b.choice((1, 2)))
        else:
            dims.append(shape[j] if b.coin(0.6) else 1)
    return tuple(dims)


def wide(b: Builder, usual: int, most: int) -> int:
    """A channel count: mostly 1..usual, sometimes up to ``most`` (past a vector register or a
    GEMM tile, to reach the blocked and masked-tail code)."""
    return b.randint(1, usual) if b.coin(0.7) else b.randint(usual + 1, most)


def rand_axis(b: Builder, rank: int) -> int:
    """An axis in [-rank, rank-1]."""
    return b.randint(-rank, rank - 1)


def rand_axes(b: Builder, rank: int, allow: Callable[[int], bool] = lambda a: True) -> list[int]:
    """A non-empty random subset of allowed axes, each possibly written negative."""
    axes = [a for a in range(rank) if allow(a)]
    if not axes:
        return []
    chosen = [int(a) for a in b.rng.permutation(axes)[: b.randint(1, len(axes))]]
    return [a - rank if b.coin(0.3) else a for a in chosen]


# --------------------------------------------------------------------------- safe operands


def positive(b: Builder, x: str, low: float = 0.1) -> str:
    """A tensor >= low derived from x: Abs(x) + c, or Exp(bounded x) + c."""
    shape = b.shapes[x]
    if b.coin(0.7):
        t = b.op1("Abs", [x], shape)
    else:
        t = b.op1("Exp", [bounded(b, x)], shape)
    return b.op1("Add", [t, b.scalar(b.uniform(low, 2 * low + 0.5))], shape)


def bounded(b: Builder, x: str) -> str:
    """x squashed into [-3, 3] (Tanh, Sigmoid or Clip), safe to exponentiate."""
    shape = b.shapes[x]
    kind = b.choice(("Tanh", "Sigmoid", "Clip"))
    if kind == "Clip":
        return b.op1("Clip", [x, b.scalar(-3.0), b.scalar(3.0)], shape)
    return b.op1(kind, [x], shape)


def denominator_const(b: Builder, shape: Shape) -> np.ndarray:
    """Constants in +-[0.5, 2]: safe divisors."""
    sign = np.where(b.rng.random(shape) < 0.5, -1.0, 1.0)
    return (b.rng.uniform(0.5, 2.0, shape) * sign).astype(np.float32)


def other_operand(b: Builder, shape: Shape, denominator: bool = False) -> str | None:
    """An operand broadcasting with ``shape``: a pool tensor or a constant."""
    if b.coin(0.45):
        y = b.pick(lambda s: (r := broadcast(shape, s)) is not None and small(r))
        if y is not None:
            return positive(b, y, 0.5) if denominator else y
    cshape = broadcastable_shape(b, shape)
    if not small(broadcast(shape, cshape) or (0,)):
        return None
    value = denominator_const(b, cshape) if denominator else b.floats(cshape)
    return b.const(value, "c")


# --------------------------------------------------------------------------- op generators
# Each takes the builder and a candidate input x; it returns False (having added nothing) when
# the op does not fit x, else appends the node(s) and returns True.


def unary(op_type: str, **attr_makers: Callable[[Builder], object]) -> Callable:
    def gen(b: Builder, x: str) -> bool:
        attrs = {k: make(b) for k, make in attr_makers.items()}
        b.op1(op_type, [x], b.shapes[x], **attrs)
        return True

    gen.__name__ = f"gen_{op_type}"
    return gen


def maybe(make: Callable[[Builder], object], p: float = 0.7) -> Callable[[Builder], object]:
    """An attribute maker that sometimes leaves the attribute out."""
    return lambda b: make(b) if b.coin(p) else None


def gen_clip(b: Builder, x: str) -> bool:
    lo, hi = sorted((b.uniform(-2, 1), b.uniform(-1, 2)))
    mode = b.choice(("both", "min", "max", "none"))
    inputs = [x, b.scalar(lo) if mode in ("both", "min") else ""]
    if mode in ("both", "max"):
        inputs.append(b.scalar(hi + 0.1))
    while inputs and inputs[-1] == "":
        inputs.pop()
    b.op1("Clip", inputs, b.shapes[x])
    return True


def gen_dropout(b: Builder, x: str) -> bool:
    inputs = [x] + ([b.scalar(b.uniform(0.0, 0.9))] if b.coin(0.5) else [])
    b.op1("Dropout", inputs, b.shapes[x], seed=b.randint(0, 9) if b.coin(0.2) else None)
    return True


def gen_exp(b: Builder, x: str) -> bool:
    b.op1("Exp", [bounded(b, x)], b.shapes[x])
    return True


def gen_log_sqrt(op_type: str) -> Callable:
    def gen(b: Builder, x: str) -> bool:
        b.op1(op_type, [positive(b, x, 0.1)], b.shapes[x])
        return True

    gen.__name__ = f"gen_{op_type}"
    return gen


def gen_reciprocal(b: Builder, x: str) -> bool:
    b.op1("Reciprocal", [positive(b, x, 0.5)], b.shapes[x])
    return True


def gen_pow(b: Builder, x: str) -> bool:
    shape = b.shapes[x]
    mode = b.choice(("scalar", "tensor", "same"))
    if mode == "scalar":
        exponent = b.scalar(b.choice((2.0, 3.0, 0.5, -1.0, 1.5, -0.5, 1.0)))
    elif mode == "tensor":
        eshape = broadcastable_shape(b, shape)
        if broadcast(shape, eshape) != shape:
            return False
        exponent = b.const(b.rng.uniform(-1.5, 2.5, eshape).astype(np.float32), "c")
    else:
        exponent = b.op1("Tanh", [x], shape)
    b.op1("Pow", [positive(b, x, 0.5), exponent], shape)
    return True


def binary(op_type: str) -> Callable:
    def gen(b: Builder, x: str) -> bool:
        y = other_operand(b, b.shapes[x], denominator=op_type == "Div")
        if y is None:
            return False
        out = broadcast(b.shapes[x], b.shapes[y])
        inputs = [x, y] if op_type == "Div" or b.coin(0.6) else [y, x]
        b.op1(op_type, inputs, out)
        return True

    gen.__name__ = f"gen_{op_type}"
    return gen


def gen_sum(b: Builder, x: str) -> bool:
    operands, shape = [x], b.shapes[x]
    for _ in range(b.randint(0, 2)):
        y = other_operand(b, shape)
        if y is None:
            break
        operands.append(y)
        shape = broadcast(shape, b.shapes[y])
    b.op1("Sum", list(b.rng.permutation(operands)), shape)
    return True


def _conv_groups(b: Builder, c: int) -> tuple[int, int]:
    """(group, output channels): plain, depthwise, depthwise x multiplier, or grouped."""
    mode = b.choice(("plain", "plain", "depthwise", "multiplier", "grouped"))
    divisors = [g for g in range(2, c) if c % g == 0]
    if mode == "depthwise":
        return c, c
    if mode == "multiplier":
        return c, c * b.randint(2, 3)
    if mode == "grouped" and divisors:
        g = b.choice(divisors)
        return g, g * b.randint(1, 3)
    return 1, wide(b, 12, 72)


def conv_dim(size: int, k: int, s: int, d: int, p0: int, p1: int, auto_pad: str) -> int:
    """Conv output size along one spatial axis."""
    eff = (k - 1) * d + 1
    if auto_pad.startswith("SAME"):
        return -(-size // s)
    if auto_pad == "VALID":
        p0 = p1 = 0
    span = size + p0 + p1 - eff
    return span // s + 1 if span >= 0 else 0


def gen_conv(b: Builder, x: str) -> bool:
    n, c, h, w = b.shapes[x]
    group, m = _conv_groups(b, c)
    k = (b.randint(1, 5), b.randint(1, 5))
    s = (b.choice((1, 1, 2, 3)), b.choice((1, 1, 2, 3)))
    d = (b.choice((1, 1, 1, 2, 3)), b.choice((1, 1, 1, 2, 3)))
    auto_pad = b.choice(("NOTSET",) * 5 + ("SAME_UPPER", "SAME_LOWER", "VALID"))
    if auto_pad.startswith("SAME"):  # onnxruntime: "Dilation not supported for SAME_*"
        d = (1, 1)
    pads = [b.randint(0, 3) if b.coin() else 0 for _ in range(4)]
    out = tuple(conv_dim(size, k[i], s[i], d[i], pads[i], pads[i + 2], auto_pad)
                for i, size in enumerate((h, w)))
    if not small((n, m, *out)):
        return False
    fan_in = c // group * k[0] * k[1]
    inputs = [x, b.const(b.floats((m, c // group, *k), 1 / math.sqrt(fan_in)))]
    if b.coin(0.6):
        inputs.append(b.const(b.floats((m,), 0.5)))
    explicit = auto_pad == "NOTSET"
    b.op1("Conv", inputs, (n, m, *out),
          kernel_shape=list(k) if b.coin(0.7) else None,
          strides=list(s) if s != (1, 1) or b.coin(0.3) else None,
          dilations=list(d) if d != (1, 1) or b.coin(0.3) else None,
          pads=pads if explicit and (any(pads) or b.coin(0.3)) else None,
          auto_pad=None if explicit and b.coin(0.8) else auto_pad,
          group=group if group > 1 or b.coin(0.3) else None)
    return True


def pool_dim(size: int, k: int, s: int, d: int, p0: int, p1: int, ceil_mode: bool) -> int:
    """Pool output size along one axis, or 0 when there is none. In ceil mode a last window
    that would start past the input and left padding is dropped by onnxruntime but kept by
    ONNX's shape inference (onnx 1.23): those cases are 0 too, so the generator avoids them."""
    span = size + p0 + p1 - ((k - 1) * d + 1)
    if span < 0:
        return 0
    if not ceil_mode:
        return span // s + 1
    out = -(-span // s) + 1
    return 0 if (out - 1) * s >= size + p0 else out


def windows_see_input(size: int, k: int, s: int, d: int, p0: int, out: int) -> bool:
    """Every pooling window holds at least one input element (a dilated window can fall in the
    padding only: its max is -inf)."""
    return all(any(0 <= o * s - p0 + j * d < size for j in range(k)) for o in range(out))


def pool(op_type: str) -> Callable:
    def gen(b: Builder, x: str) -> bool:
        n, c, h, w = b.shapes[x]
        k = (b.randint(1, 4), b.randint(1, 4))
        s = (b.choice((1, 1, 2, 3)), b.choice((1, 1, 2, 3)))
        d = (b.choice((1, 1, 2, 3)), b.choice((1, 1, 2))) if op_type == "MaxPool" else (1, 1)
        pads = [b.randint(0, k[i % 2] - 1) if b.coin() else 0 for i in range(4)]
        ceil_mode = b.coin(0.3)
        out = tuple(pool_dim(size, k[i], s[i], d[i], pads[i], pads[i + 2], ceil_mode)
                    for i, size in enumerate((h, w)))
        if not small((n, c, *out)) or not all(
                windows_see_input(size, k[i], s[i], d[i], pads[i], out[i])
                for i, size in enumerate((h, w))):
            return False
        attrs = {"kernel_shape": list(k),
                 "strides": list(s) if s != (1, 1) or b.coin(0.3) else None,
                 "pads": pads if any(pads) or b.coin(0.3) else None,
                 "ceil_mode": int(ceil_mode) if ceil_mode or b.coin(0.3) else None}
        if op_type == "MaxPool":
            attrs["dilations"] = list(d) if d != (1, 1) or b.coin(0.2) else None
        else:
            attrs["count_include_pad"] = b.randint(0, 1) if b.coin(0.7) else None
        b.op1(op_type, [x], (n, c, *out), **attrs)
        return True

    gen.__name__ = f"gen_{op_type}"
    return gen


def global_pool(op_type: str) -> Callable:
    def gen(b: Builder, x: str) -> bool:
        shape = b.shapes[x]
        b.op1(op_type, [x], shape[:2] + (1,) * (len(shape) - 2))
        return True

    gen.__name__ = f"gen_{op_type}"
    return gen


def gen_batchnorm(b: Builder, x: str) -> bool:
    c = b.shapes[x][1]
    params = [b.const((1 + b.floats((c,), 0.3)), "bn_scale"), b.const(b.floats((c,), 0.3), "bn_b"),
              b.const(b.floats((c,), 0.5), "bn_mean"),
              b.const(b.rng.uniform(0.5, 2.0, c).astype(np.float32), "bn_var")]
    b.op1("BatchNormalization", [x, *params], b.shapes[x],
          epsilon=b.choice((1e-5, 1e-3, 0.1)) if b.coin(0.6) else None,
          momentum=0.9 if b.coin(0.2) else None)
    return True


def gen_gemm(b: Builder, x: str) -> bool:
    trans_a, trans_b = b.randint(0, 1), b.randint(0, 1)
    rows, cols = b.shapes[x]
    m, k = (cols, rows) if trans_a else (rows, cols)
    y = b.pick(lambda s: len(s) == 2 and s[trans_b] == k and small((m, s[1 - trans_b])))
    n = wide(b, 32, 130) if y is None or b.coin(0.6) else b.shapes[y][1 - trans_b]
    if not small((m, n)) or not small((k, n)):
        return False
    if y is None or b.shapes[y][1 - trans_b] != n:
        y = b.const(b.floats((n, k) if trans_b else (k, n), 1 / math.sqrt(k)))
    inputs = [x, y]
    if b.coin(0.7):
        cshape = b.choice(((n,), (1, n), (m, n), (m, 1), (), (1, 1)))
        inputs.append(b.const(b.floats(cshape), "c"))
    b.op1("Gemm", inputs, (m, n),
          alpha=b.uniform(0.5, 1.5) if b.coin(0.4) else None,
          beta=b.uniform(0.5, 1.5) if b.coin(0.4) and len(inputs) == 3 else None,
          transA=trans_a if trans_a or b.coin(0.2) else None,
          transB=trans_b if trans_b or b.coin(0.2) else None)
    return True


def matmul_shape(a: Shape, c: Shape) -> Shape | None:
    """numpy.matmul's result shape, or None when the operands do not fit."""
    a2 = (1,) + a if len(a) == 1 else a
    c2 = c + (1,) if len(c) == 1 else c
    if a2[-1] != c2[-2]:
        return None
    batch = broadcast(a2[:-2], c2[:-2])
    if batch is None:
        return None
    out = batch + (a2[-2],) * (len(a) > 1) + (c2[-1],) * (len(c) > 1)
    return out


def _matmul_right(b: Builder, x: str) -> str | None:
    """A right operand for x: a constant (1-D, 2-D or batched) or a transposed pool tensor."""
    shape = b.shapes[x]
    k = shape[-1]
    mode = b.choice(("2d", "2d", "1d", "batched", "pool"))
    if mode == "pool":
        z = b.pick(lambda s: len(s) >= 2 and s[-1] == k and matmul_shape(
            shape, s[:-2] + (s[-1], s[-2])) is not None and small(
            matmul_shape(shape, s[:-2] + (s[-1], s[-2]))))
        if z is not None:
            zs = b.shapes[z]
            perm = list(range(len(zs) - 2)) + [len(zs) - 1, len(zs) - 2]
            return b.op1("Transpose", [z], zs[:-2] + (zs[-1], zs[-2]), perm=perm)
        mode = "2d"
    if mode == "1d":
        cshape: Shape = (k,)
    elif mode == "batched" and len(shape) >= 2:
        cshape = broadcastable_shape(b, shape[:-2]) + (k, wide(b, 16, 80))
    else:
        cshape = (k, wide(b, 16, 80))
    out = matmul_shape(shape, cshape)
    if out is None or not small(out) or len(cshape) > MAX_RANK:
        return None
    return b.const(b.floats(cshape, 1 / math.sqrt(k)))


def gen_matmul(b: Builder, x: str) -> bool:
    shape = b.shapes[x]
    if b.coin(0.2):  # constant on the left: (P, M) @ x
        m = shape[-2] if len(shape) >= 2 else shape[0]
        ashape = (wide(b, 12, 40), m)
        out = matmul_shape(ashape, shape)
        if out is None or not small(out):
            return False
        b.op1("MatMul", [b.const(b.floats(ashape, 1 / math.sqrt(m))), x], out)
        return True
    y = _matmul_right(b, x)
    if y is None:
        return False
    b.op1("MatMul", [x, y], matmul_shape(shape, b.shapes[y]))
    return True


def softmax(op_type: str) -> Callable:
    def gen(b: Builder, x: str) -> bool:
        axis = rand_axis(b, len(b.shapes[x]))
        b.op1(op_type, [x], b.shapes[x], axis=axis if axis != -1 or b.coin(0.3) else None)
        return True

    gen.__name__ = f"gen_{op_type}"
    return gen


def gen_lrn(b: Builder, x: str) -> bool:
    b.op1("LRN", [x], b.shapes[x], size=b.choice((1, 3, 5)),  # onnxruntime: odd sizes only
          alpha=b.uniform(1e-4, 0.3) if b.coin(0.7) else None,
          beta=b.uniform(0.5, 1.0) if b.coin(0.7) else None,
          bias=b.uniform(1.0, 2.0) if b.coin(0.7) else None)
    return True


def gen_flatten(b: Builder, x: str) -> bool:
    shape = b.shapes[x]
    axis = b.randint(-len(shape), len(shape))
    a = axis + len(shape) if axis < 0 else axis
    out = (numel(shape[:a]), numel(shape[a:]))
    b.op1("Flatten", [x], out, axis=axis if axis != 1 or b.coin(0.3) else None)
    return True


def _factorize(b: Builder, total: int, rank: int) -> list[int]:
    """``rank`` random dims whose product is ``total``."""
    dims = []
    for _ in range(rank - 1):
        d = b.choice([f for f in range(1, total + 1) if total % f == 0])
        dims.append(d)
        total //= d
    dims.append(total)
    return [int(d) for d in b.rng.permutation(dims)]


def gen_reshape(b: Builder, x: str) -> bool:
    shape = b.shapes[x]
    dims = _factorize(b, numel(shape), b.randint(1, 4))
    target = list(dims)
    for i, d in enumerate(dims):
        if i < len(shape) and shape[i] == d and b.coin(0.3):
            target[i] = 0
    free = [i for i, t in enumerate(target) if t != 0]
    if free and b.coin(0.5):
        target[b.choice(free)] = -1
    b.op1("Reshape", [x, b.ints(target)], tuple(dims))
    return True


def gen_transpose(b: Builder, x: str) -> bool:
    shape = b.shapes[x]
    if b.coin(0.15):
        b.op1("Transpose", [x], shape[::-1])
        return True
    perm = [int(p) for p in b.rng.permutation(len(shape))]
    b.op1("Transpose", [x], tuple(shape[p] for p in perm), perm=perm)
    return True


def gen_concat(b: Builder, x: str) -> bool:
    shape = b.shapes[x]
    axis = rand_axis(b, len(shape))
    a = axis % len(shape)

    def fits(s: Shape) -> bool:
        return len(s) == len(shape) and all(s[i] == shape[i] for i in range(len(s)) if i != a)

    parts: list[str | Shape] = [x]  # a shape stands for a constant, made once the op fits
    for _ in range(b.randint(1, 3)):
        if b.coin(0.25):
            parts.append(shape[:a] + (b.randint(1, 3),) + shape[a + 1:])
        else:
            parts.append(b.pick(fits) or x)
    out = shape[:a] + (sum(p[a] if isinstance(p, tuple) else b.shapes[p][a] for p in parts),)
    out += shape[a + 1:]
    if not small(out):
        return False
    parts = [b.const(b.floats(p), "c") if isinstance(p, tuple) else p for p in parts]
    order = [int(i) for i in b.rng.permutation(len(parts))]
    b.op1("Concat", [parts[i] for i in order], out, axis=axis)
    return True


def gen_split(b: Builder, x: str) -> bool:
    shape = b.shapes[x]
    axes = [a for a in range(len(shape)) if shape[a] >= 2]
    if not axes:
        return False
    a = b.choice(axes)
    n = b.randint(2, min(4, shape[a]))
    if shape[a] % n == 0 and b.coin(0.4):
        sizes, inputs = [shape[a] // n] * n, [x]
    else:
        cuts = sorted(int(c) for c in b.rng.choice(np.arange(1, shape[a]), n - 1, replace=False))
        sizes = [hi - lo for lo, hi in zip([0] + cuts, cuts + [shape[a]])]
        inputs = [x, b.ints(sizes)]
    shapes = [shape[:a] + (s,) + shape[a + 1:] for s in sizes]
    axis = a - len(shape) if b.coin(0.3) else a
    b.op("Split", inputs, shapes, axis=axis if axis != 0 or b.coin(0.3) else None)
    return True


def _slice_axis(b: Builder, dim: int) -> tuple[int, int, int, int]:
    """(start, end, step, length) of a random non-empty slice of a dim."""
    big = 2**62
    for _ in range(20):
        step = b.choice((1, 1, 1, 2, 3, -1, -1, -2))
        start = b.choice((b.randint(-dim - 2, dim + 2), 0, -1, big, -big))
        end = b.choice((b.randint(-dim - 2, dim + 2), big, -big, -1))
        length = len(range(*slice(start, end, step).indices(dim)))
        if length > 0:
            return start, end, step, length
    return 0, dim, 1, dim


def gen_slice(b: Builder, x: str) -> bool:
    shape = b.shapes[x]
    axes = rand_axes(b, len(shape))
    out = list(shape)
    starts, ends, steps = [], [], []
    for axis in axes:
        start, end, step, length = _slice_axis(b, shape[axis])
        starts.append(start)
        ends.append(end)
        steps.append(step)
        out[axis] = length
    inputs = [x, b.ints(starts), b.ints(ends)]
    default_axes = axes == list(range(len(axes)))
    if not default_axes or b.coin(0.5) or any(s != 1 for s in steps):
        inputs.append(b.ints(axes))
        if any(s != 1 for s in steps) or b.coin(0.5):
            inputs.append(b.ints(steps))
    b.op1("Slice", inputs, tuple(out))
    return True


def gen_pad(b: Builder, x: str) -> bool:
    shape = b.shapes[x]
    pads = [b.randint(0, 3) if b.coin(0.5) else 0 for _ in range(2 * len(shape))]
    out = tuple(d + pads[i] + pads[i + len(shape)] for i, d in enumerate(shape))
    if not small(out):
        return False
    inputs = [x, b.ints(pads)]
    if b.coin(0.5):
        inputs.append(b.scalar(b.uniform(-2, 2)))
    b.op1("Pad", inputs, out, mode="constant" if b.coin(0.3) else None)
    return True


def gen_squeeze(b: Builder, x: str) -> bool:
    shape = b.shapes[x]
    ones = [a for a, d in enumerate(shape) if d == 1]
    if not ones or len(ones) == len(shape):
        return False
    if b.coin(0.3):
        b.op1("Squeeze", [x], tuple(d for d in shape if d != 1))
        return True
    axes = rand_axes(b, len(shape), lambda a: shape[a] == 1)
    keep = {a % len(shape) for a in axes}
    b.op1("Squeeze", [x, b.ints(axes)], tuple(d for a, d in enumerate(shape) if a not in keep))
    return True


def gen_unsqueeze(b: Builder, x: str) -> bool:
    shape = b.shapes[x]
    rank = len(shape) + b.randint(1, 2)
    if rank > MAX_RANK:
        return False
    new = sorted(int(a) for a in b.rng.choice(rank, rank - len(shape), replace=False))
    dims = iter(shape)
    out = tuple(1 if a in new else next(dims) for a in range(rank))
    axes = [a - rank if b.coin(0.3) else a for a in b.rng.permutation(new)]
    b.op1("Unsqueeze", [x, b.ints([int(a) for a in axes])], out)
    return True


def reduce(op_type: str) -> Callable:
    def gen(b: Builder, x: str) -> bool:
        shape = b.shapes[x]
        axes = rand_axes(b, len(shape)) if b.coin(0.85) else None
        keep = b.randint(0, 1)
        reduced = {a % len(shape) for a in axes} if axes else set(range(len(shape)))
        if keep:
            out = tuple(1 if a in reduced else d for a, d in enumerate(shape))
        else:
            out = tuple(d for a, d in enumerate(shape) if a not in reduced)
        if not out:
            return False
        keepdims = keep if keep == 0 or b.coin(0.3) else None
        if op_type == "ReduceSum":  # axes became an input at opset 13
            b.op1(op_type, [x] + ([b.ints(axes)] if axes else []), out, keepdims=keepdims)
        else:  # ... and at opset 18 for the others
            b.op1(op_type, [x], out, keepdims=keepdims, axes=axes)
        return True

    gen.__name__ = f"gen_{op_type}"
    return gen


def gen_expand(b: Builder, x: str) -> bool:
    shape = b.shapes[x]
    target = [b.choice((1, 2, 3)) if d == 1 else b.choice((d, d, 1)) for d in shape]
    if b.coin(0.3) and len(shape) < MAX_RANK:
        target.insert(0, b.randint(1, 3))
    out = broadcast(shape, tuple(target))
    if out is None or not small(out):
        return False
    b.op1("Expand", [x, b.ints(target)], out)
    return True


def varied(b: Builder, x: str) -> str:
    """x plus fixed noise of its shape, so no group a normalization averages over is (nearly)
    constant: there 1/sqrt(var + eps) amplifies the rounding noise of the variance, which
    onnxruntime computes one-pass (E[x^2] - E[x]^2) and sw2c two-pass, into a mismatch."""
    return b.op1("Add", [x, b.const(b.floats(b.shapes[x], 0.5), "noise")], b.shapes[x])


def gen_layernorm(b: Builder, x: str) -> bool:
    """Over axis..rank-1 (at least 2 elements); scale (and bias) of a trailing part of those
    dims; sometimes the Mean and InvStdDev outputs too."""
    shape = b.shapes[x]
    axis = rand_axis(b, len(shape))
    normalized = shape[axis:]
    if numel(normalized) < 2:
        return False
    x = varied(b, x)
    pshape = normalized[b.randint(0, len(normalized) - 1):]
    inputs = [x, b.const(1 + b.floats(pshape, 0.3), "ln_scale")]
    if b.coin(0.7):
        inputs.append(b.const(b.floats(pshape, 0.3), "ln_b"))
    stats = shape[:axis % len(shape)] + (1,) * len(normalized)
    b.op("LayerNormalization", inputs, [shape] + [stats] * (2 if b.coin(0.2) else 0),
         axis=axis if axis != -1 or b.coin(0.3) else None,
         epsilon=b.choice((1e-5, 1e-3, 0.1)) if b.coin(0.5) else None)
    return True


def gen_instancenorm(b: Builder, x: str) -> bool:
    c = b.shapes[x][1]
    if numel(b.shapes[x][2:]) < 2:
        return False
    x = varied(b, x)
    b.op1("InstanceNormalization", [x, b.const(1 + b.floats((c,), 0.3), "in_scale"),
                                    b.const(b.floats((c,), 0.3), "in_b")], b.shapes[x],
          epsilon=b.choice((1e-5, 1e-3, 0.1)) if b.coin(0.5) else None)
    return True


def gen_depth_to_space(b: Builder, x: str) -> bool:
    n, c, h, w = b.shapes[x]
    sizes = [s for s in (2, 3) if c % (s * s) == 0]
    if not sizes:
        return False
    s = b.choice(sizes)
    b.op1("DepthToSpace", [x], (n, c // (s * s), h * s, w * s), blocksize=s,
          mode=b.choice(("DCR", "CRD", None)))
    return True


def gen_space_to_depth(b: Builder, x: str) -> bool:
    n, c, h, w = b.shapes[x]
    sizes = [s for s in (2, 3) if h % s == 0 and w % s == 0]
    if not sizes:
        return False
    s = b.choice(sizes)
    b.op1("SpaceToDepth", [x], (n, c * s * s, h // s, w // s), blocksize=s)
    return True


def gen_einsum(b: Builder, x: str) -> bool:
    """As exporters write it: a linear layer against a constant ('bsd,ed->bse'), attention
    scores of two run-time tensors ('bhqd,bhkd->bhqk'), or a transpose with a sum."""
    shape = b.shapes[x]
    rank = len(shape)
    xs = "bhqd"[4 - rank:] if rank <= 4 else "abhqd"
    kind = b.choice(("linear", "scores", "permute"))
    if kind == "linear":
        n = wide(b, 16, 80)
        w = b.const(b.floats((n, shape[-1]), 1 / math.sqrt(shape[-1])))
        b.op1("Einsum", [x, w], shape[:-1] + (n,), equation=f"{xs},e{xs[-1]}->{xs[:-1]}e")
        return True
    if kind == "scores" and rank >= 2:
        if b.coin(0.5):
            return gen_attention(b, x)
        y = b.pick(lambda s: len(s) == rank and s[:-2] == shape[:-2] and s[-1] == shape[-1])
        if y is None or not small(shape[:-1] + (b.shapes[y][-2],)):
            return False
        ys = xs[:-2] + "k" + xs[-1]
        b.op1("Einsum", [x, y], shape[:-1] + (b.shapes[y][-2],),
              equation=f"{xs},{ys}->{xs[:-1]}k")
        return True
    keep = [int(a) for a in b.rng.permutation(rank)[: b.randint(1, rank)]]
    b.op1("Einsum", [x], tuple(shape[a] for a in keep),
          equation=f"{xs}->{''.join(xs[a] for a in keep)}")
    return True


def gen_attention(b: Builder, x: str) -> bool:
    """Scaled dot-product attention as exporters write it with Einsum: queries x (..., T, D),
    keys and values projected from x, scores scaled, masked (sometimes) and soft-maxed, then
    weighted values."""
    shape = b.shapes[x]
    rank = len(shape)
    if rank < 2 or rank > 4 or not small(shape[:-1] + (shape[-2],)):
        return False
    d, dv = shape[-1], wide(b, 16, 40)
    xs = "bhqd"[4 - rank:]
    ks, vs = xs[:-2] + "kd", xs[:-2] + "ke"
    key = b.op1("MatMul", [x, b.const(b.floats((d, d), 1 / math.sqrt(d)))], shape)
    value = b.op1("MatMul", [x, b.const(b.floats((d, dv), 1 / math.sqrt(d)))],
                  shape[:-1] + (dv,))
    sshape = shape[:-1] + (shape[-2],)
    scores = b.op1("Einsum", [x, key], sshape, equation=f"{xs},{ks}->{xs[:-1]}k")
    scores = b.op1("Mul", [scores, b.scalar(1 / math.sqrt(d))], sshape)
    if b.typed_ok and b.coin(0.6):
        scores = hidden(b, masked_scores(b, scores))
    probs = b.op1("Softmax", [scores], b.shapes[scores], axis=-1)
    b.op1("Einsum", [probs, value], b.shapes[probs][:-1] + (dv,),
          equation=f"{xs[:-1]}k,{vs}->{xs[:-1]}e")
    return True


def gen_conv_transpose(b: Builder, x: str) -> bool:
    """ConvTranspose as decoders use it: strides 1-3, output_padding < stride, pads, auto_pad
    or output_shape (SAME only where the kernel spans the stride: onnxruntime and the spec
    disagree on the output size otherwise, and sw2c refuses)."""
    n, c, h, w = b.shapes[x]
    divisors = [g for g in range(1, c + 1) if c % g == 0]
    group = b.choice(divisors) if b.coin(0.3) else 1
    mg = b.randint(1, 8)
    k = (b.randint(1, 4), b.randint(1, 4))
    s = (b.choice((1, 2, 2, 3)), b.choice((1, 2, 2, 3)))
    d = (b.choice((1, 1, 1, 2)), b.choice((1, 1, 1, 2)))
    extra = [b.randint(0, s[i] - 1) if b.coin(0.3) else 0 for i in range(2)]
    span = [(k[i] - 1) * d[i] + 1 for i in range(2)]
    full = [s[i] * (size - 1) + extra[i] + span[i] for i, size in enumerate((h, w))]
    mode = b.choice(("pads", "pads", "pads", "SAME_UPPER", "SAME_LOWER", "VALID", "shape"))
    attrs: dict = {}
    if mode.startswith("SAME"):  # no output_padding: ONNX shape inference adds it, wrongly
        d, extra = (1, 1), [0, 0]
        span = list(k)
        full = [s[i] * (size - 1) + extra[i] + k[i] for i, size in enumerate((h, w))]
        if any(full[i] < size * s[i] for i, size in enumerate((h, w))):
            return False
        out = [h * s[0], w * s[1]]
        attrs["auto_pad"] = mode
    elif mode == "VALID":
        out = full
        attrs["auto_pad"] = mode
    elif mode == "shape":
        out = [f - b.randint(0, sp - 1) for f, sp in zip(full, span)]
        attrs["output_shape"] = out
    else:
        pads = [b.randint(0, sp - 1) if b.coin() else 0 for sp in span * 2]
        out = [full[i] - pads[i] - pads[i + 2] for i in range(2)]
        attrs["pads"] = pads if any(pads) or b.coin(0.3) else None
    if min(out) < 1 or not small((n, mg * group, *out)):
        return False
    fan_in = c // group * k[0] * k[1]
    inputs = [x, b.const(b.floats((c, mg, *k), 1 / math.sqrt(fan_in)))]
    if b.coin(0.6):
        inputs.append(b.const(b.floats((mg * group,), 0.5)))
    b.op1("ConvTranspose", inputs, (n, mg * group, *out),
          kernel_shape=list(k) if b.coin(0.5) else None,
          strides=list(s) if s != (1, 1) or b.coin(0.3) else None,
          dilations=list(d) if d != (1, 1) or b.coin(0.3) else None,
          output_padding=extra if any(extra) else None,
          group=group if group > 1 or b.coin(0.3) else None, **attrs)
    return True


def gen_resize(b: Builder, x: str) -> bool:
    """Resize-13 of H and W by constant scales or sizes, every mode. Left out where
    onnxruntime departs from the spec (align_corners with a fractional scale * size, the crop
    of an axis whose size stays) or rounds the crop box differently (tf_crop_and_resize with
    nearest)."""
    n, c, h, w = b.shapes[x]
    mode = b.choice(("nearest", "nearest", "linear", "linear", "cubic"))
    coord = b.choice(("half_pixel", "half_pixel", "pytorch_half_pixel", "align_corners",
                      "asymmetric", "tf_crop_and_resize"))
    if coord == "tf_crop_and_resize" and mode == "nearest":
        coord = "half_pixel"
    by_sizes = b.coin(0.4) or coord in ("align_corners", "tf_crop_and_resize")
    if by_sizes:
        out = (b.randint(1, 2 * h + 2), b.randint(1, 2 * w + 2))
    else:
        scales = (b.choice((0.5, 0.75, 1.0, 1.5, 2.0, 3.0)), b.choice((0.5, 0.6, 1.0, 2.0, 2.5)))
        out = (int(h * scales[0]), int(w * scales[1]))
    if min(out) < 1 or not small((n, c, *out)):
        return False
    empty = b.const(np.zeros(0, np.float32), "e")
    roi = empty
    attrs: dict = {}
    if coord == "tf_crop_and_resize":  # onnxruntime ignores the crop of an axis kept in size
        same = [o == i for o, i in zip(out, (h, w))]
        lo = [0.0 if k else round(b.uniform(-0.2, 0.4), 2) for k in same]
        hi = [1.0 if k else round(b.uniform(0.6, 1.2), 2) for k in same]
        # a box ending at exactly 1 puts the last sample on the input's edge, where rounding
        # decides between the edge value and the extrapolation value (fuzz seed 59843)
        hi = [h if k or h != 1.0 else 1.05 for h, k in zip(hi, same)]
        roi = b.const(np.array([0, 0, *lo, 1, 1, *hi], np.float32), "roi")
        attrs["extrapolation_value"] = b.uniform(-1, 1) if b.coin() else None
    if mode == "nearest":
        attrs["nearest_mode"] = b.choice(("round_prefer_floor", "round_prefer_ceil", "floor",
                                          "ceil", None))
    if mode == "cubic":
        attrs["cubic_coeff_a"] = b.choice((-0.5, -0.75, None))
        attrs["exclude_outside"] = b.choice((0, 1, None))
    if by_sizes:
        inputs = [x, roi, empty, b.ints([n, c, *out])]
    else:
        inputs = [x, roi, b.const(np.array([1, 1, *scales], np.float32), "sc")]
    b.op1("Resize", inputs, (n, c, *out), mode=mode, coordinate_transformation_mode=coord,
          **attrs)
    return True


# ---- typed ops: int64/int32/bool tensors (ids, masks), casts, comparisons, logic, gathers

INT_TYPES = (TensorProto.INT64, TensorProto.INT64, TensorProto.INT32)
# the generators that make int/bool tensors; weights of 0 for all (benchmarks/fuzz_asic.py: the
# int8 target takes float inputs only) also keep masks out of Einsum attention
TYPED_OPS = ("Cast", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or",
             "Xor", "Not", "Where", "Gather", "GatherElements", "GatherND")
NP_OF = {TensorProto.INT64: np.int64, TensorProto.INT32: np.int32, TensorProto.BOOL: np.bool_,
         TensorProto.FLOAT: np.float32}


def pick_exact(b: Builder, accept: Callable[[Shape], bool] = lambda s: True) -> str | None:
    """A float pool tensor computed exactly (see EXACT_OPS) whose shape ``accept``s."""
    fits = [t for t in b.pool if t in b.exact and accept(b.shapes[t])]
    if not fits:
        return None
    return fits[-1] if b.coin(0.5) else b.choice(fits)


def to_int(b: Builder, x: str) -> str:
    """x (exact) times a power of two, truncated to int64 or int32: small ints, exactly."""
    shape = b.shapes[x]
    scale = b.choice((1.0, 2.0, 4.0))
    if scale != 1.0:
        x = b.op1("Mul", [x, b.scalar(scale)], shape)  # exact: a power of two
        b.exact.add(x)
    elem = b.choice(INT_TYPES)
    return b.op1("Cast", [x], shape, elem, to=elem)


def bool_mask(b: Builder, shape: Shape) -> str:
    """A bool tensor broadcasting to ``shape``: a bool graph input, an int64 0/1 input cast or
    compared (an attention mask), a comparison of an exact tensor, or a cast of one."""
    kind = b.choice(("input", "input", "int", "compare", "cast"))
    if kind in ("compare", "cast"):
        x = pick_exact(b, lambda s: (r := broadcast(shape, s)) is not None and r == shape)
        if x is not None:
            if kind == "cast":
                return b.op1("Cast", [x if b.coin(0.3) else to_int(b, x)], b.shapes[x],
                             TensorProto.BOOL, to=TensorProto.BOOL)
            op_type = b.choice(("Less", "Greater", "LessOrEqual", "GreaterOrEqual"))
            return b.op1(op_type, [x, b.scalar(round(b.uniform(-1, 1), 1))], b.shapes[x],
                         TensorProto.BOOL)
    mshape = tuple(d if b.coin(0.6) else 1 for d in shape)
    mshape = mshape[b.randint(0, min(1, len(mshape) - 1)):] if b.coin(0.3) else mshape
    if kind == "int":
        m = b.add_input(mshape, TensorProto.INT64)
        if b.coin(0.5):
            return b.op1("Cast", [m], mshape, TensorProto.BOOL, to=TensorProto.BOOL)
        op_type = b.choice(("Equal", "Greater"))
        return b.op1(op_type, [m, b.const(np.array(int(op_type == "Equal"), np.int64), "i")],
                     mshape, TensorProto.BOOL)
    return b.add_input(mshape, TensorProto.BOOL)


def bool_to_float(b: Builder, c: str, x: str | None = None) -> str:
    """A float tensor from the bool ``c``: Where(c, x, other) or a cast (through int)."""
    cshape = b.shapes[c]
    if x is not None and b.coin(0.6):
        shape = broadcast(cshape, b.shapes[x])
        y = other_operand(b, shape) if b.coin(0.6) else b.scalar(b.uniform(-2, 2))
        if y is not None and small(out := broadcast(shape, b.shapes[y])):
            pair = [x, y] if b.coin() else [y, x]
            return b.op1("Where", [c, *pair], out)
    if b.coin(0.3):
        elem = b.choice(INT_TYPES)
        c = b.op1("Cast", [c], cshape, elem, to=elem)
    return b.op1("Cast", [c], cshape, to=TensorProto.FLOAT)


def gen_cast(b: Builder, x: str) -> bool:
    """float -> int64/int32 -> (bool) -> float, float -> bool -> int -> float, int32 <-> int64,
    on an exact tensor (truncation of a computed value could round either way)."""
    x = pick_exact(b)
    if x is None:
        return False
    shape = b.shapes[x]
    if b.coin(0.7):
        t = to_int(b, x)
        if b.coin(0.3):
            other = TensorProto.INT32 if b.elem(t) == TensorProto.INT64 else TensorProto.INT64
            t = b.op1("Cast", [t], shape, other, to=other)
        if b.coin(0.3):
            t = b.op1("Cast", [t], shape, TensorProto.BOOL, to=TensorProto.BOOL)
    else:
        t = b.op1("Cast", [x], shape, TensorProto.BOOL, to=TensorProto.BOOL)
        if b.coin(0.5):
            elem = b.choice(INT_TYPES)
            t = b.op1("Cast", [t], shape, elem, to=elem)
    b.op1("Cast", [t], shape, to=TensorProto.FLOAT)
    return True


def gen_compare(op_type: str) -> Callable:
    """op_type of an exact tensor and an exact operand (a constant, another exact tensor),
    as floats or truncated to ints (Equal: always ints, or a tensor with itself shifted)."""

    def gen(b: Builder, x: str) -> bool:
        x = pick_exact(b)
        if x is None:
            return False
        shape = b.shapes[x]
        as_int = op_type == "Equal" or b.coin(0.4)
        a = to_int(b, x) if as_int else x
        y = pick_exact(b, lambda s: (r := broadcast(shape, s)) is not None and small(r))
        if y is not None and b.coin(0.4):
            other = to_int(b, y) if as_int else y
            if as_int and b.elem(other) != b.elem(a):
                other = b.op1("Cast", [other], b.shapes[y], b.elem(a), to=b.elem(a))
        else:
            cshape = broadcastable_shape(b, shape)
            if as_int:
                other = b.const(b.rng.integers(-2, 3, cshape).astype(NP_OF[b.elem(a)]), "i")
            else:
                other = b.const(np.round(b.floats(cshape), 1), "c")
        out = broadcast(b.shapes[a], b.shapes[other])
        if not small(out):
            return False
        pair = [a, other] if b.coin(0.7) else [other, a]
        c = b.op1(op_type, pair, out, TensorProto.BOOL)
        bool_to_float(b, c, x if broadcast(out, shape) == out else None)
        return True

    gen.__name__ = f"gen_{op_type}"
    return gen


def gen_logic(op_type: str) -> Callable:
    """op_type of masks (bool inputs, attention masks, comparisons), then Where or a cast."""

    def gen(b: Builder, x: str) -> bool:
        shape = b.shapes[x]
        c = bool_mask(b, shape)
        if op_type != "Not":
            d = bool_mask(b, shape)
            out = broadcast(b.shapes[c], b.shapes[d])
            c = b.op1(op_type, [c, d] if b.coin() else [d, c], out, TensorProto.BOOL)
        else:
            c = b.op1("Not", [c], b.shapes[c], TensorProto.BOOL)
        bool_to_float(b, c, x if broadcast(b.shapes[c], shape) == shape else None)
        return True

    gen.__name__ = f"gen_{op_type}"
    return gen


def masked_scores(b: Builder, x: str) -> str:
    """The attention-mask idiom on scores x (..., K): Where(mask, x, -inf / -1e9 / ...), or
    Where(Not(mask), fill, x), or x plus Where(mask, 0, -1e4). The mask is a bool or int64
    padding input, a causal constant, or both; a -inf fill keeps key 0 of every row (a fully
    masked row is NaN in onnxruntime)."""
    shape = b.shapes[x]
    k = shape[-1]
    if b.coin(0.2):  # as BERT exports it: x + (1 - float(attention_mask)) * -10000
        m = b.add_input(tuple(d if b.coin(0.5) else 1 for d in shape[:-1]) + (k,),
                        TensorProto.INT64)
        ones = b.op1("Cast", [m], b.shapes[m], to=TensorProto.FLOAT)
        keep = b.op1("Sub", [b.scalar(1.0), ones], b.shapes[m])
        bias = b.op1("Mul", [keep, b.scalar(b.choice((-1e4, -1e9)))], b.shapes[m])
        return b.op1("Add", [x, bias], shape)
    kind = b.choice(("padding", "padding", "causal", "both")) if len(shape) >= 2 else "padding"
    every_row = kind == "causal"  # the diagonal: no row is fully masked
    if kind == "padding":
        mask = bool_mask(b, shape)
    else:
        mask = b.const(np.tril(np.ones((shape[-2], k), bool), b.randint(0, 2)), "causal")
        if kind == "both":
            pad = bool_mask(b, shape)
            mask = b.op1("And", [pad, mask], broadcast(b.shapes[pad], b.shapes[mask]),
                         TensorProto.BOOL)
    fill = b.choice((-np.inf, -1e9, -1e4, float(np.finfo(np.float32).min)))
    if fill == -np.inf and not every_row:
        first = b.const(np.arange(k) == 0, "first")
        out = broadcast(b.shapes[mask], (k,))
        mask = b.op1("Or", [mask, first] if b.coin() else [first, mask], out, TensorProto.BOOL)
    out = broadcast(b.shapes[mask], shape)
    style = b.choice(("where", "where", "not", "add"))
    if style == "add":
        bias = b.op1("Where", [mask, b.scalar(0.0), b.scalar(-1e4)], b.shapes[mask])
        return b.op1("Add", [x, bias], out)
    if style == "not":
        inverse = b.op1("Not", [mask], b.shapes[mask], TensorProto.BOOL)
        return b.op1("Where", [inverse, b.scalar(fill), x], out)
    return b.op1("Where", [mask, x, b.scalar(fill)], out)


def hidden(b: Builder, x: str) -> str:
    """x, out of the pool: masked scores (-inf, -1e9) feed only their Softmax (an output, or
    another op, would see infinities or overflow)."""
    b.pool.remove(x)
    return x


def gen_masked_softmax(b: Builder, x: str) -> bool:
    """Attention masking: the masked scores, then Softmax over the keys."""
    y = hidden(b, masked_scores(b, x))
    b.op1("Softmax", [y], b.shapes[y], axis=-1 if b.coin(0.5) else None)
    return True


def ids_input(b: Builder, shape: Shape) -> str:
    """An int64/int32 ids graph input (sometimes passed through a reshape or a cast on the way
    to the gather: the feeds' ranges must follow them); a known one, sometimes."""
    known = [t for t in b.typed if t.startswith("in") and b.shapes[t] == shape
             and b.elem(t) != TensorProto.BOOL and b.uses[t]]
    ids = b.choice(known) if known and b.coin(0.3) else b.add_input(shape, b.choice(INT_TYPES))
    if b.coin(0.2):
        ids = b.op1("Cast", [ids], shape, TensorProto.INT64, to=TensorProto.INT64)
    if b.coin(0.2) and len(shape) >= 1:
        flat = (numel(shape),)
        ids = b.op1("Reshape", [b.op1("Reshape", [ids, b.ints([-1])], flat, b.elem(ids)),
                                b.ints(list(shape))], shape, b.elem(ids))
    return ids


def gen_gather(b: Builder, x: str) -> bool:
    """Gather with run-time ids (in range, drawn by the feeds) from a constant table (an
    embedding) or a run-time tensor; negative ids as ids - n (a second lookup); or constant
    ids, negative ones too."""
    kind = b.choice(("embedding", "embedding", "runtime", "constant"))
    if kind == "embedding":
        v, d = b.randint(2, 40), wide(b, 16, 48)
        data = b.const(b.floats((v, d)), "emb")
        axis, dshape = 0, (v, d)
    else:
        data, dshape = x, b.shapes[x]
        axis = rand_axis(b, len(dshape))
    n = dshape[axis]
    ishape = tuple(b.randint(1, 6) for _ in range(b.randint(0 if kind == "constant" else 1, 2)))
    a = axis % len(dshape)
    out = dshape[:a] + ishape + dshape[a + 1:]
    if not small(out) or len(out) > MAX_RANK or not out:
        return False
    at = axis if axis != 0 or b.coin(0.3) else None
    if kind == "constant":
        ids = b.const(b.rng.integers(-n, n, ishape).astype(np.int64), "i")
        b.op1("Gather", [data, ids], out, axis=at)
        return True
    ids = ids_input(b, ishape)
    y = b.op1("Gather", [data, ids], out, axis=at)
    if b.coin(0.35):  # ids - n: every id negative, counting back from the end
        neg = b.op1("Sub", [ids, b.const(np.array(n, NP_OF[b.elem(ids)]), "i")], ishape,
                    b.elem(ids))
        z = b.op1("Gather", [data, neg], out, axis=at)
        b.op1("Add", [y, z], out)
    return True


def index_values(b: Builder, dims: Sequence[int], shape: Shape,
                 elem: int | None = None) -> tuple[str, int]:
    """Indices of ``shape`` valid for axes of ``dims`` (one per last-axis column when
    ``dims`` has several): a constant with negatives, or an int graph input (its feeds are
    0/1: every axis must have 2) of ``elem``, else int64 or int32."""
    elem = elem or b.choice(INT_TYPES)
    if min(dims) >= 2 and b.coin(0.4):
        return b.add_input(shape, elem), elem
    hi = np.broadcast_to(np.asarray(dims, np.int64), shape)
    values = np.floor(b.rng.uniform(-hi, hi, shape)).astype(NP_OF[elem])
    return b.const(values, "i"), elem


def gen_gather_elements(b: Builder, x: str) -> bool:
    shape = b.shapes[x]
    axis = rand_axis(b, len(shape))
    a = axis % len(shape)
    ishape = tuple(b.randint(1, d) if i != a else b.randint(1, d + 2)
                   for i, d in enumerate(shape))
    if not small(ishape):
        return False
    idx, _ = index_values(b, [shape[a]], ishape)
    b.op1("GatherElements", [x, idx], ishape, axis=axis if axis != 0 or b.coin(0.3) else None)
    return True


def gen_gather_nd(b: Builder, x: str) -> bool:
    shape = b.shapes[x]
    batch = b.randint(0, 1) if len(shape) >= 2 else 0
    k = b.randint(1, len(shape) - batch)
    lead = shape[:batch] + tuple(b.randint(1, 4) for _ in range(b.randint(0, 2)))
    ishape = lead + (k,)
    out = lead + shape[batch + k:]
    if len(ishape) > MAX_RANK or len(out) > MAX_RANK or not out or not small(out):
        return False
    idx, _ = index_values(b, list(shape[batch:batch + k]), ishape, TensorProto.INT64)
    b.op1("GatherND", [x, idx], out, batch_dims=batch if batch or b.coin(0.3) else None)
    return True


def gen_erf(b: Builder, x: str) -> bool:
    """Erf, or GELU as opset-17 exporters write it: x * 0.5 * (1 + Erf(x / sqrt 2))."""
    shape = b.shapes[x]
    if b.coin(0.4):
        b.op1("Erf", [x], shape)
        return True
    if b.coin():
        t = b.op1("Div", [x, b.scalar(math.sqrt(2.0))], shape)
    else:
        t = b.op1("Mul", [x, b.scalar(1 / math.sqrt(2.0))], shape)
    one = b.op1("Add", [b.op1("Erf", [t], shape), b.scalar(1.0)], shape)
    half = b.op1("Mul", [x, b.scalar(0.5)], shape)
    b.op1("Mul", [half, one] if b.coin() else [one, half], shape)
    return True


def _rank(*ranks: int) -> Callable[[Shape], bool]:
    return lambda s: len(s) in ranks


ANY = _rank(1, 2, 3, 4, 5)

# op name -> (weight, accepted input shapes, generator)
GENERATORS: dict[str, tuple[float, Callable[[Shape], bool], Callable[[Builder, str], bool]]] = {
    "Conv": (10, _rank(4), gen_conv),
    "MaxPool": (3, _rank(4), pool("MaxPool")),
    "AveragePool": (3, _rank(4), pool("AveragePool")),
    "GlobalAveragePool": (1.5, _rank(3, 4), global_pool("GlobalAveragePool")),
    "GlobalMaxPool": (1, _rank(3, 4), global_pool("GlobalMaxPool")),
    "BatchNormalization": (2.5, _rank(2, 3, 4), gen_batchnorm),
    "Gemm": (3, _rank(2), gen_gemm),
    "MatMul": (4, ANY, gen_matmul),
    "Add": (3, ANY, binary("Add")),
    "Sub": (2, ANY, binary("Sub")),
    "Mul": (3, ANY, binary("Mul")),
    "Div": (2, ANY, binary("Div")),
    "Max": (1.5, ANY, binary("Max")),
    "Min": (1.5, ANY, binary("Min")),
    "Sum": (1.5, ANY, gen_sum),
    "Pow": (1.5, ANY, gen_pow),
    "Relu": (2.5, ANY, unary("Relu")),
    "LeakyRelu": (1, ANY, unary("LeakyRelu", alpha=maybe(lambda b: b.uniform(0.01, 0.3)))),
    "Clip": (1.5, ANY, gen_clip),
    "Sigmoid": (1, ANY, unary("Sigmoid")),
    "Tanh": (1, ANY, unary("Tanh")),
    "HardSigmoid": (1, ANY, unary("HardSigmoid", alpha=maybe(lambda b: b.uniform(0.1, 0.5)),
                                  beta=maybe(lambda b: b.uniform(0.2, 0.8)))),
    "HardSwish": (1, ANY, unary("HardSwish")),
    "Exp": (1, ANY, gen_exp),
    "Log": (1, ANY, gen_log_sqrt("Log")),
    "Sqrt": (1, ANY, gen_log_sqrt("Sqrt")),
    "Neg": (0.7, ANY, unary("Neg")),
    "Abs": (0.7, ANY, unary("Abs")),
    "Erf": (1, ANY, gen_erf),
    "Softplus": (0.6, ANY, unary("Softplus")),
    "Softsign": (0.5, ANY, unary("Softsign")),
    "Elu": (0.6, ANY, unary("Elu", alpha=maybe(lambda b: b.uniform(0.1, 2.0)))),
    "Selu": (0.5, ANY, unary("Selu", alpha=maybe(lambda b: b.uniform(0.5, 2.0)),
                            gamma=maybe(lambda b: b.uniform(0.5, 2.0)))),
    "Celu": (0.5, ANY, unary("Celu", alpha=maybe(lambda b: b.uniform(0.2, 3.0)))),
    "ThresholdedRelu": (0.5, ANY, unary("ThresholdedRelu",
                                        alpha=maybe(lambda b: b.uniform(-0.5, 1.5)))),
    "Shrink": (0.5, ANY, unary("Shrink", lambd=maybe(lambda b: b.uniform(0.0, 1.5)),
                                bias=maybe(lambda b: b.uniform(-0.5, 0.5)))),
    "Reciprocal": (0.7, ANY, gen_reciprocal),
    "Softmax": (1.5, ANY, softmax("Softmax")),
    "LogSoftmax": (1, ANY, softmax("LogSoftmax")),
    "LRN": (1, _rank(4), gen_lrn),
    "Flatten": (1.5, ANY, gen_flatten),
    "Reshape": (2.5, ANY, gen_reshape),
    "Transpose": (2.5, _rank(2, 3, 4, 5), gen_transpose),
    "Concat": (3, ANY, gen_concat),
    "Split": (1.5, ANY, gen_split),
    "Slice": (2.5, ANY, gen_slice),
    "Pad": (1.5, ANY, gen_pad),
    "Squeeze": (1, ANY, gen_squeeze),
    "Unsqueeze": (1, _rank(1, 2, 3, 4), gen_unsqueeze),
    "Identity": (0.5, ANY, unary("Identity")),
    "Dropout": (0.5, ANY, gen_dropout),
    "ReduceMean": (1.2, ANY, reduce("ReduceMean")),
    "ReduceSum": (1.2, ANY, reduce("ReduceSum")),
    "ReduceMax": (1.2, ANY, reduce("ReduceMax")),
    "Expand": (1.2, ANY, gen_expand),
    "LayerNormalization": (1.5, ANY, gen_layernorm),
    "InstanceNormalization": (0.7, _rank(3, 4), gen_instancenorm),
    "DepthToSpace": (1.5, _rank(4), gen_depth_to_space),
    "SpaceToDepth": (0.6, _rank(4), gen_space_to_depth),
    "Einsum": (1.5, ANY, gen_einsum),
    "ConvTranspose": (2, _rank(4), gen_conv_transpose),
    "Resize": (2, _rank(4), gen_resize),
    "Cast": (1.5, ANY, gen_cast),
    "Equal": (0.6, ANY, gen_compare("Equal")),
    "Less": (0.6, ANY, gen_compare("Less")),
    "Greater": (0.6, ANY, gen_compare("Greater")),
    "LessOrEqual": (0.5, ANY, gen_compare("LessOrEqual")),
    "GreaterOrEqual": (0.5, ANY, gen_compare("GreaterOrEqual")),
    "And": (0.6, ANY, gen_logic("And")),
    "Or": (0.6, ANY, gen_logic("Or")),
    "Xor": (0.5, ANY, gen_logic("Xor")),
    "Not": (0.5, ANY, gen_logic("Not")),
    "Where": (2, ANY, gen_masked_softmax),
    "Gather": (2.5, ANY, gen_gather),
    "GatherElements": (1, ANY, gen_gather_elements),
    "GatherND": (1, ANY, gen_gather_nd),
}


# --------------------------------------------------------------------------- whole graphs


def random_input_shape(b: Builder, batch: int) -> Shape:
    """4-D NCHW (C 1-8, H, W 1-14), or 2-D (N, F) or 3-D (N, T, F)."""
    kind = b.choice(("4d", "4d", "4d", "2d", "3d"))
    if kind == "4d":
        return (batch, b.randint(1, 8), b.randint(1, 14), b.randint(1, 14))
    if kind == "2d":
        return (batch, b.randint(1, 64))
    return (batch, b.randint(1, 16), b.randint(1, 32))


def add_inputs(b: Builder) -> None:
    """1-3 graph inputs; later ones often share the first one's shape (so they can join)."""
    batch = b.randint(1, 2)
    first = random_input_shape(b, batch)
    b.add_input(first)
    for _ in range(b.randint(0, 2)):
        b.add_input(first if b.coin(0.5) else random_input_shape(b, batch))


def grow(b: Builder, target_nodes: int, weights: Mapping[str, float] | None = None) -> None:
    """Add random ops until the graph has ``target_nodes`` nodes; ``weights`` overrides the
    ops' weights in GENERATORS (0 leaves an op out)."""
    names = list(GENERATORS)
    weights = np.array([(weights or {}).get(n, GENERATORS[n][0]) for n in names], float)
    weights /= weights.sum()
    for _ in range(50 * target_nodes):
        if sum(n.op_type != "Constant" for n in b.nodes) >= target_nodes:
            return
        _, accept, gen = GENERATORS[names[int(b.rng.choice(len(names), p=weights))]]
        x = b.pick(lambda s, accept=accept: accept(s))
        if x is not None:
            gen(b, x)


def choose_outputs(b: Builder) -> list[str]:
    """The newest tensor plus 0-2 others, preferring dangling ones."""
    inputs = {vi.name for vi in b.inputs}
    newest = b.pool[-1]
    dangling = [t for t in b.pool if t not in inputs and not b.uses[t] and t != newest]
    others = [t for t in b.pool if t not in inputs and t != newest and t not in dangling]
    outputs = [newest]
    for _ in range(b.randint(0, 2)):
        source = dangling if dangling and b.coin(0.7) else others
        if source:
            t = b.choice(source)
            source.remove(t)
            outputs.append(t)
    computed = [t for t in b.typed if t not in inputs and t not in b.inits_names()]
    if computed and b.coin(0.5):  # an int or bool tensor out too: compared exactly
        outputs.append(b.choice(computed))
    return outputs


def assemble(b: Builder, outputs: Sequence[str], name: str) -> onnx.ModelProto:
    graph = helper.make_graph(
        b.nodes, name, b.inputs,
        [helper.make_tensor_value_info(o, b.elem(o), list(b.shapes[o])) for o in outputs],
        initializer=b.inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                             ir_version=IR_VERSION, producer_name="sw2c-fuzz")


def validate(model: onnx.ModelProto, shapes: dict[str, Shape]) -> None:
    """The ONNX checker accepts the model and ONNX infers the shapes the generator expects."""
    try:
        onnx.checker.check_model(model, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise GeneratorError(f"{model.graph.name}: invalid model: {e}") from e
    read = {i for n in model.graph.node for i in n.input}
    consts = [t.name for t in model.graph.initializer]
    consts += [n.output[0] for n in model.graph.node if n.op_type == "Constant"]
    unused = [c for c in consts if c not in read]
    if unused:
        raise GeneratorError(f"{model.graph.name}: constants no node reads: {unused}")
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        got = tuple(d.dim_value for d in vi.type.tensor_type.shape.dim)
        if vi.name in shapes and got != shapes[vi.name]:
            raise GeneratorError(f"{model.graph.name}: shape of {vi.name}: generator "
                                 f"{shapes[vi.name]}, onnx {got}")


def random_model(seed: int, weights: Mapping[str, float] | None = None) -> onnx.ModelProto:
    """A random valid ONNX graph (opset 17, static shapes) of 3-15 sw2c ops (some int/bool);
    ``weights`` biases the choice of ops (see ``grow``)."""
    b = Builder(np.random.default_rng(seed))
    b.typed_ok = any((weights or {}).get(op, 1) > 0 for op in TYPED_OPS)
    add_inputs(b)
    grow(b, b.randint(3, 15), weights)
    model = assemble(b, choose_outputs(b), f"fuzz_{seed}")
    validate(model, b.shapes)
    return model


# --------------------------------------------------------------------------- differential check


@dataclass
class Failure:
    """How sw2c failed on a case: kind (see KINDS), the error's type name and its message."""

    kind: str
    message: str
    error: str = ""

    def same_as(self, other: Failure) -> bool:
        """Same kind and, for exceptions, the same exception type."""
        return self.kind == other.kind and self.error == other.error

    def signature(self) -> str:
        """The message with numbers and quoted names blanked: failures of one bug group."""
        text = re.sub(r"'[^']*'|\"[^\"]*\"", "'_'", self.message.splitlines()[0] if
                      self.message else "")
        text = re.sub(r"\d+(\.\d+)?(e-?\d+)?", "N", text)
        return f"{self.kind}:{self.error}:{text[:160]}"


def random_feeds(model: onnx.ModelProto, seed: int) -> dict[str, np.ndarray]:
    """Seeded inputs valid for the model, drawn as sw2c's verify draws them
    (``runtime.verify.random_feeds``): floats standard normal, ids below the smallest table
    they index (sw2c's ``index_ranges`` of the imported graph), other ints and bools 0/1."""
    from types import SimpleNamespace

    from sw2c.runtime.verify import random_feeds as verify_feeds

    inits = {t.name for t in model.graph.initializer}
    inputs = [(vi.name, tuple(d.dim_value for d in vi.type.tensor_type.shape.dim),
               np.dtype(helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)).name)
              for vi in model.graph.input if vi.name not in inits]
    ranges = id_ranges(model) if any(t != "float32" for _, _, t in inputs) else {}
    return verify_feeds(SimpleNamespace(inputs=inputs, input_ranges=ranges), seed)


def id_ranges(model: onnx.ModelProto) -> dict[str, int]:
    """sw2c's valid id ranges of the int inputs (``runtime.verify.index_ranges``); none (ids
    0/1) when sw2c cannot import the model (check then reports why)."""
    from sw2c.frontend.importer import import_model
    from sw2c.runtime.verify import index_ranges

    try:
        return index_ranges(import_model(model))
    except Exception:  # noqa: BLE001 (the check that follows meets the same failure)
        return {}


def run_onnxruntime(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The oracle: onnxruntime on one thread, without graph rewrites."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 4  # candidates the shrinker breaks are expected
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def reference(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """onnxruntime's outputs, which must have the declared shapes and be finite."""
    try:
        outs = run_onnxruntime(model, feeds)
    except Exception as e:  # noqa: BLE001 (any onnxruntime failure means a bad model)
        raise GeneratorError(f"onnxruntime rejects {model.graph.name}: {e}") from e
    for vi in model.graph.output:
        declared = tuple(d.dim_value for d in vi.type.tensor_type.shape.dim)
        if vi.type.tensor_type.shape.dim and outs[vi.name].shape != declared:
            raise GeneratorError(f"onnxruntime gives {vi.name} shape {outs[vi.name].shape}, "
                                 f"declared {declared}")
        if not np.isfinite(outs[vi.name]).all():
            raise GeneratorError(f"onnxruntime gives non-finite values in {vi.name}")
    return outs


def compare(name: str, got: np.ndarray, ref: np.ndarray) -> str | None:
    """Why ``got`` differs from ``ref`` (floats: rtol 1e-3, atol 1e-3 * max(1, max|ref|);
    ints and bools: exactly, of the same dtype), or None."""
    got = np.asarray(got)
    if got.shape != ref.shape:
        return f"output '{name}': shape {got.shape}, onnxruntime {ref.shape}"
    if ref.size == 0:
        return None
    if not np.issubdtype(ref.dtype, np.floating):
        if got.dtype != ref.dtype:
            return f"output '{name}': dtype {got.dtype}, onnxruntime {ref.dtype}"
        bad = got != ref
        if not bad.any():
            return None
        i = tuple(int(j) for j in np.argwhere(bad)[0])
        return (f"output '{name}' {ref.shape} {ref.dtype}: {int(bad.sum())}/{ref.size} "
                f"elements differ; first at {i}: sw2c {got[i]}, onnxruntime {ref[i]}")
    atol = 1e-3 * max(1.0, float(np.abs(ref).max()))
    err = np.abs(got.astype(np.float64) - ref)
    bad = ~(err <= atol + 1e-3 * np.abs(ref))
    if not bad.any():
        return None
    i = np.unravel_index(int(np.argmax(np.where(bad, err, -1))), ref.shape)
    return (f"output '{name}' {ref.shape}: {int(bad.sum())}/{ref.size} elements differ; worst "
            f"at {tuple(int(j) for j in i)}: sw2c {got[i]:.6g}, onnxruntime {ref[i]:.6g} "
            f"(atol {atol:.3g})")


def run_sw2c(model: onnx.ModelProto, feeds: dict[str, np.ndarray],
             threads: int) -> dict[str, np.ndarray]:
    import sw2c

    module = sw2c.compile(model, verify=False, threads=threads)
    return module.run(feeds)


def where(error: BaseException) -> str:
    """The innermost frame of an exception: ``passes/outputs.py:23 _copy_kernel``."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return "?"
    frame = frames[-1]
    path = Path(frame.filename)
    root = Path(__file__).resolve().parent.parent
    name = path.relative_to(root) if path.is_relative_to(root) else path.name
    return f"{name}:{frame.lineno} {frame.name}"


def raw_exception(error: BaseException) -> BaseException | None:
    """The unexpected Python exception behind ``error``: itself when it is not a Sw2cError,
    the cause of sw2c's "internal error" CompileError (``errors.internal_errors`` wraps
    one), else None."""
    from sw2c.errors import CompileError, Sw2cError

    if not isinstance(error, Sw2cError):
        return error
    cause = error.__cause__
    if isinstance(error, CompileError) and cause is not None and not isinstance(cause,
                                                                                Sw2cError):
        return cause
    return None


def raw_failure(error: BaseException, stage: str = "") -> Failure:
    """The "raw-exception" Failure of an exception that is not a Sw2cError: a bug of sw2c
    (or of the fuzzer's own checks) whatever the model."""
    at = f" ({stage})" if stage else ""
    return Failure(RAW, f"{type(error).__name__}{at}: {error} (at {where(error)})",
                   type(error).__name__)


def check(model: onnx.ModelProto, seed: int, *, threads: int = 1) -> Failure | None:
    """Run ``model`` on seeded random inputs through onnxruntime and sw2c; the Failure, if any.

    Raises GeneratorError when onnxruntime itself cannot run the model.
    """
    import sw2c

    feeds = random_feeds(model, seed)
    ref = reference(model, feeds)
    try:
        got = run_sw2c(model, feeds, threads)
    except Exception as e:  # noqa: BLE001 (anything but a Sw2cError is a compiler bug)
        if (raw := raw_exception(e)) is not None:
            return raw_failure(raw)
        kind = "unsupported" if isinstance(e, sw2c.UnsupportedOpError) else "error"
        return Failure(kind, str(e), type(e).__name__)
    problems = [compare(name, got[name], r) if name in got else f"output '{name}' missing"
                for name, r in ref.items()]
    problems = [p for p in problems if p]
    return Failure("mismatch", "; ".join(problems)) if problems else None


def case_threads(seed: int) -> int:
    """Every fourth case compiles for a team of two threads."""
    return 2 if seed % 4 == 3 else 1


def check_seed(seed: int) -> Failure | None:
    """``check`` of the case ``seed`` (its model, inputs and thread count)."""
    return check(random_model(seed), seed, threads=case_threads(seed))


# --------------------------------------------------------------------------- shrinking

CheckFn = Callable[[onnx.ModelProto, int], "Failure | None"]


@dataclass
class Parts:
    """A graph taken apart for editing."""

    nodes: list[onnx.NodeProto]
    inits: dict[str, TensorProto]
    inputs: list[onnx.ValueInfoProto]
    outputs: list[str]
    name: str
    types: dict[str, int] = field(default_factory=dict)  # element types other than float

    @classmethod
    def of(cls, model: onnx.ModelProto) -> Parts:
        g = model.graph
        inits = {t.name: t for t in g.initializer}
        return cls(list(g.node), inits, [vi for vi in g.input if vi.name not in inits],
                   [o.name for o in g.output], g.name, value_types(model))

    def replace(self, **changes) -> Parts:
        fields = {"nodes": list(self.nodes), "inits": dict(self.inits),
                  "inputs": list(self.inputs), "outputs": list(self.outputs), "name": self.name,
                  "types": self.types}
        return Parts(**{**fields, **changes})

    def elem(self, name: str) -> int:
        """The ONNX element type of a tensor."""
        return self.types.get(name, TensorProto.FLOAT)


def value_types(model: onnx.ModelProto) -> dict[str, int]:
    """The element type of every tensor that is not float (ONNX type inference)."""
    try:
        g = onnx.shape_inference.infer_shapes(model).graph
    except Exception:  # noqa: BLE001 (a model ONNX cannot infer: all float, as before)
        g = model.graph
    types = {vi.name: vi.type.tensor_type.elem_type
             for vi in list(g.input) + list(g.value_info) + list(g.output)}
    types.update({t.name: t.data_type for t in g.initializer})
    return {k: v for k, v in types.items() if v not in (TensorProto.FLOAT, 0)}


def prune(p: Parts) -> Parts:
    """Only the ancestors of the outputs, and the inputs and constants they read."""
    needed = set(p.outputs)
    kept = []
    for node in reversed(p.nodes):
        if needed & set(node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    return p.replace(nodes=kept[::-1], inits={k: v for k, v in p.inits.items() if k in needed},
                     inputs=[vi for vi in p.inputs if vi.name in needed])


def unchanged(p: Parts) -> Parts:
    return p


def prune_unused(p: Parts) -> Parts:
    """Without the inputs and constants no node reads (the nodes stay)."""
    read = {i for n in p.nodes for i in n.input} | set(p.outputs)
    return p.replace(inits={k: v for k, v in p.inits.items() if k in read},
                     inputs=[vi for vi in p.inputs if vi.name in read])


def to_model(p: Parts) -> onnx.ModelProto | None:
    """The model of ``p`` with inferred output shapes, or None when it is not valid ONNX or
    not a graph the generator could make (no nodes, an input passed straight out)."""
    if not p.nodes or {vi.name for vi in p.inputs} & set(p.outputs):
        return None
    graph = helper.make_graph(p.nodes, p.name, p.inputs,
                              [helper.make_tensor_value_info(o, p.elem(o), None)
                               for o in p.outputs], initializer=list(p.inits.values()))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              ir_version=IR_VERSION, producer_name="sw2c-fuzz")
    try:
        shapes = value_shapes(model)
        for vi in model.graph.output:
            vi.CopyFrom(helper.make_tensor_value_info(vi.name, p.elem(vi.name),
                                                      list(shapes[vi.name])))
        onnx.checker.check_model(model, full_check=True)
    except Exception:  # noqa: BLE001 (an edit that broke the graph: not a candidate)
        return None
    return model


def value_shapes(model: onnx.ModelProto) -> dict[str, Shape]:
    """The static shape of every tensor of the model (strict ONNX shape inference)."""
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    g = inferred.graph
    out = {vi.name: tuple(d.dim_value for d in vi.type.tensor_type.shape.dim)
           for vi in list(g.input) + list(g.value_info) + list(g.output)
           if vi.type.tensor_type.HasField("shape")}
    out.update({t.name: tuple(t.dims) for t in g.initializer})
    return out


def rename_uses(p: Parts, old: str, new: str, drop: onnx.NodeProto) -> Parts:
    """``p`` without node ``drop``, reading ``new`` wherever it read ``old``."""
    nodes = []
    for node in p.nodes:
        if node is drop:
            continue
        if old in node.input:
            node = _copy(node)
            node.input[:] = [new if i == old else i for i in node.input]
        nodes.append(node)
    outputs = [new if o == old else o for o in p.outputs]
    outputs = list(dict.fromkeys(outputs))
    return p.replace(nodes=nodes, outputs=outputs)


def _copy(node: onnx.NodeProto) -> onnx.NodeProto:
    out = onnx.NodeProto()
    out.CopyFrom(node)
    return out


def fewer_outputs(p: Parts, shapes: dict[str, Shape]) -> Iterator[Parts]:
    """Each output alone, then all outputs but one."""
    if len(p.outputs) > 1:
        for o in reversed(p.outputs):
            yield p.replace(outputs=[o])
        for o in p.outputs:
            yield p.replace(outputs=[x for x in p.outputs if x != o])


def earlier_outputs(p: Parts, shapes: dict[str, Shape]) -> Iterator[Parts]:
    """An output replaced by an input of the node that makes it (drops shape-changing tails)."""
    producer = {o: n for n in p.nodes for o in n.output}
    for k, o in enumerate(p.outputs):
        node = producer.get(o)
        for i in dict.fromkeys(node.input if node is not None else ()):
            if i and i not in p.inits:
                yield p.replace(outputs=list(dict.fromkeys(p.outputs[:k] + [i] +
                                                           p.outputs[k + 1:])))


def bypasses(p: Parts, shapes: dict[str, Shape]) -> Iterator[Parts]:
    """A node replaced by one of its inputs of the same shape (latest nodes first)."""
    for node in reversed(p.nodes):
        outs = [o for o in node.output if o]
        if len(outs) != 1 or outs[0] not in shapes:
            continue
        for i in dict.fromkeys(node.input):
            if i and i not in p.inits and shapes.get(i) == shapes[outs[0]]:
                yield rename_uses(p, outs[0], i, node)


def cuts(p: Parts, shapes: dict[str, Shape]) -> Iterator[Parts]:
    """A node replaced by new graph inputs for its outputs (latest nodes first)."""
    for node in reversed(p.nodes):
        outs = [o for o in node.output if o]
        if not all(o in shapes for o in outs):
            continue
        inputs = p.inputs + [helper.make_tensor_value_info(o, p.elem(o), list(shapes[o]))
                             for o in outs]
        yield p.replace(nodes=[n for n in p.nodes if n is not node], inputs=inputs)


def removals(p: Parts, shapes: dict[str, Shape]) -> Iterator[Parts]:
    """A node deleted outright (a dead side branch, or outputs that were not needed)."""
    for node in reversed(p.nodes):
        if not set(node.output) & set(p.outputs):
            yield p.replace(nodes=[n for n in p.nodes if n is not node])


def smaller_inputs(p: Parts, shapes: dict[str, Shape]) -> Iterator[Parts]:
    """One input dim set to 1 or halved (the rest of the graph re-infers its shapes)."""
    for k, vi in enumerate(p.inputs):
        dims = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        for j, d in enumerate(dims):
            for new in dict.fromkeys((1, d // 2)):
                if 1 <= new < d:
                    shape = dims[:j] + [new] + dims[j + 1:]
                    inputs = list(p.inputs)
                    inputs[k] = helper.make_tensor_value_info(vi.name, p.elem(vi.name), shape)
                    yield p.replace(inputs=inputs)


STRATEGIES = (fewer_outputs, cuts, earlier_outputs, bypasses, removals, smaller_inputs)


def _matches(want: Failure | str, got: Failure | None) -> bool:
    if got is None:
        return False
    return got.kind == want if isinstance(want, str) else got.same_as(want)


def _safe(check_fn: CheckFn, model: onnx.ModelProto, seed: int) -> Failure | None:
    try:
        return check_fn(model, seed)
    except GeneratorError:
        return None


def shrink(model: onnx.ModelProto, failure_kind: Failure | str, *, seed: int = 0,
           check_fn: CheckFn | None = None, max_checks: int = 400,
           max_seconds: float = 900.0) -> onnx.ModelProto:
    """A smaller model that still fails like ``failure_kind`` (a kind from KINDS, or a Failure:
    then the exception type must match too), by greedy delta debugging: fewer outputs, nodes
    cut into inputs or bypassed, dead nodes removed, smaller inputs. ``check_fn(model, seed)``
    defaults to ``check`` with one thread. It stops after ``max_checks`` checks or
    ``max_seconds``, with the smallest failing model found so far."""
    check_fn = check_fn or (lambda m, s: check(m, s))
    budget = [max_checks]
    deadline = time.monotonic() + max_seconds

    def keeps(candidate: Parts) -> onnx.ModelProto | None:
        if budget[0] <= 0 or time.monotonic() > deadline:
            budget[0] = 0  # out of budget: every further candidate is declined
            return None
        m = to_model(candidate)
        if m is None:
            return None
        budget[0] -= 1
        return m if _matches(failure_kind, _safe(check_fn, m, seed)) else None

    best, best_model = Parts.of(model), model
    tidy = unchanged
    for pruner in (prune, prune_unused):  # the strongest clean-up that keeps the failure
        found = keeps(pruner(best))
        if found is not None:
            best, best_model, tidy = pruner(best), found, pruner
            break
    while budget[0] > 0:
        step = _first_smaller(best, value_shapes(best_model), tidy, keeps)
        if step is None:
            break
        best, best_model = step
    return best_model


def _first_smaller(best: Parts, shapes: dict[str, Shape], tidy: Callable[[Parts], Parts],
                   keeps: Callable[[Parts], onnx.ModelProto | None]
                   ) -> tuple[Parts, onnx.ModelProto] | None:
    """The first candidate of the strategies, in order, that still fails; None if none does."""
    for strategy in STRATEGIES:
        for candidate in strategy(best, shapes):
            candidate = tidy(candidate)
            found = keeps(candidate)
            if found is not None:
                return candidate, found
    return None


# --------------------------------------------------------------------------- isolation


@dataclass(frozen=True)
class Mode:
    """What a soak fuzzes: how a seed becomes a model, how a model is checked, and which
    outcomes are not failures. ``CPU`` is this module's; benchmarks/fuzz_asic.py has another.
    Its functions must be module-level (a mode is pickled into the spawned child)."""

    module: str  # ``python -m <module> --replay FILE`` re-checks a saved case
    model: Callable[[int], onnx.ModelProto]  # seed -> model
    check: Callable[..., Failure | None]  # (model, seed, threads=) -> a Failure or None
    threads: Callable[[int], int]  # seed -> threads
    kinds: tuple[str, ...] = KINDS  # the failure kinds, in the summary's order
    benign: tuple[str, ...] = ("ok",)  # outcomes that are not failures


CPU = Mode("sw2c.benchmarks.fuzz", random_model, check, case_threads)


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent dies (a child stuck in a hang would live on)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _serve(conn, mode: Mode = CPU) -> None:
    """Child process loop: answer ("seed", s) and ("model", bytes, seed, threads) requests."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        conn.send(_answer(request, mode))


def _answer(request: tuple, mode: Mode = CPU) -> tuple:
    """(kind or "ok", message, error type, op types of the model)."""
    ops: list[str] = []
    try:
        if request[0] == "seed":
            model = mode.model(request[1])
            ops = [n.op_type for n in model.graph.node]
            failure = mode.check(model, request[1], threads=mode.threads(request[1]))
        else:
            failure = mode.check(onnx.load_from_string(request[1]), request[2],
                                 threads=request[3])
    except GeneratorError as e:
        return "generator", str(e), "GeneratorError", ops
    except Exception as e:  # noqa: BLE001 (counted and saved, rather than killing the child)
        failure = raw_failure(e, "outside the check")
    if failure is None:
        return "ok", "", "", ops
    return failure.kind, failure.message, failure.error, ops


class Isolated:
    """``check`` in a child process, so that a segfault or hang of sw2c becomes a Failure."""

    def __init__(self, timeout: float = 60.0, mode: Mode = CPU) -> None:
        self.timeout, self.mode = timeout, mode
        self._ctx = multiprocessing.get_context("spawn")
        self._start()

    def _start(self) -> None:
        self.conn, child = self._ctx.Pipe()
        self.proc = self._ctx.Process(target=_serve, args=(child, self.mode), daemon=True)
        self.proc.start()
        child.close()

    def close(self) -> None:
        self.conn.close()
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()

    def _restart(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join()
        self.conn.close()
        self._start()

    def ask(self, request: tuple, timeout: float | None = None) -> tuple:
        """The child's answer, or a crash/hang answer when it dies or takes too long."""
        timeout = timeout or self.timeout
        try:
            self.conn.send(request)
            if not self.conn.poll(timeout):
                self._restart()
                return "hang", f"no answer within {timeout:g} s", "Timeout", []
            return self.conn.recv()
        except (EOFError, OSError):
            return self._died()

    def _died(self) -> tuple:
        """The crash answer for a child that died (by the signal that killed it)."""
        self.proc.join()
        code = self.proc.exitcode or 0
        how = signal.Signals(-code).name if code < 0 else f"exit code {code}"
        self._restart()
        return "crash", f"the process died ({how})", how, []

    def check_model(self, model: onnx.ModelProto, seed: int, threads: int = 1,
                    timeout: float | None = None) -> Failure | None:
        """The mode's check, isolated; raises GeneratorError when onnxruntime rejects the
        model. A benign outcome other than "ok" (a skip) is a Failure of that kind too."""
        kind, message, error, _ = self.ask(("model", model.SerializeToString(), seed, threads),
                                           timeout)
        if kind == "generator":
            raise GeneratorError(message)
        return None if kind == "ok" else Failure(kind, message, error)


# --------------------------------------------------------------------------- soak


def elide_constants(text: str, keep: int = 6) -> str:
    """Printed graph text with long constant lists cut to their first ``keep`` values."""

    def cut(m: re.Match) -> str:
        values = m.group(1).split(",")
        if len(values) <= keep:
            return m.group(0)
        return "{" + ",".join(values[:keep]) + f",... ({len(values)} values)}}"

    return re.sub(r"\{([-+0-9.eEinfa, ]*)\}", cut, text)


def save_failure(out_dir: Path, seed: int, failure: Failure, model: onnx.ModelProto,
                 minimized: Failure | None, mode: Mode = CPU) -> Path:
    """``<seed>.onnx`` (the minimized model) and ``<seed>.txt`` (what failed, the graph)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{seed}.onnx"
    onnx.save(model, path)
    lines = [f"seed: {seed}", f"threads: {mode.threads(seed)}", f"kind: {failure.kind}",
             f"error: {failure.error or '-'}", f"message: {failure.message}"]
    if minimized is not None:
        lines.append(f"message after shrinking: {minimized.message}")
    lines += [f"ops: {len(model.graph.node)} ({', '.join(n.op_type for n in model.graph.node)})",
              f"replay: python -m {mode.module} --replay {path}", "",
              elide_constants(onnx.printer.to_text(model.graph))]
    path.with_suffix(".txt").write_text("\n".join(lines) + "\n")
    return path


def group_key(failure: Failure, minimized: onnx.ModelProto | None) -> str:
    """What failures of one bug share: the message pattern, or for a minimized mismatch the ops
    left in its reproducer."""
    if failure.kind == "mismatch" and minimized is not None:
        return "mismatch: " + " -> ".join(n.op_type for n in minimized.graph.node)
    return failure.signature()


@dataclass
class Soak:
    """Counters and failures of a running soak (shared by the job threads)."""

    out_dir: Path
    shrink_limit: int
    mode: Mode = CPU
    counts: Counter = field(default_factory=Counter)
    ops: Counter = field(default_factory=Counter)
    shrunk: Counter = field(default_factory=Counter)
    groups: dict[str, list[tuple[int, Path, int]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, seed: int, answer: tuple, worker: Isolated) -> None:
        kind, message, error, ops = answer
        with self.lock:
            self.counts[kind] += 1
            self.ops.update(ops)
        if kind in self.mode.benign or kind == "generator":
            if kind == "generator":
                tqdm_write(f"GENERATOR BUG seed {seed}: {message}")
            return
        failure = Failure(kind, message, error)
        sig = failure.signature()
        with self.lock:  # mismatches are rare and their messages say little: minimize them all
            minimize = kind == "mismatch" or self.shrunk[sig] < self.shrink_limit
            self.shrunk[sig] += minimize
        model, after = self.mode.model(seed), None
        if minimize:
            model, after = self._minimize(model, failure, seed, worker)
        path = save_failure(self.out_dir, seed, failure, model, after, self.mode)
        group = group_key(failure, model if minimize else None)
        with self.lock:
            self.groups.setdefault(group, []).append((seed, path, len(model.graph.node)))

    def _minimize(self, model: onnx.ModelProto, failure: Failure, seed: int,
                  worker: Isolated) -> tuple[onnx.ModelProto, Failure | None]:
        """The shrunk model and how it fails (the original model if shrinking broke)."""
        threads = self.mode.threads(seed)
        timeout = HANG_SHRINK_TIMEOUT if failure.kind == "hang" else None
        try:
            small_model = shrink(model, failure, seed=seed,
                                 check_fn=lambda m, s: worker.check_model(m, s, threads, timeout))
            return small_model, worker.check_model(small_model, seed, threads, timeout)
        except Exception as e:  # noqa: BLE001 (a shrinker bug must not stop the soak)
            tqdm_write(f"shrinking seed {seed} failed: {type(e).__name__}: {e}")
            return model, None


def tqdm_write(text: str) -> None:
    from tqdm import tqdm

    tqdm.write(text)


def run_soak(seeds: Iterator[int], total: int | None, *, jobs: int, deadline: float,
             soak: Soak, timeout: float) -> int:
    """Check seeds on ``jobs`` child processes until they run out or the deadline passes."""
    from tqdm import tqdm

    lock = threading.Lock()
    bar = tqdm(total=total, unit="graph", dynamic_ncols=True,
               mininterval=0.1 if sys.stderr.isatty() else 30)

    def next_seed() -> int | None:
        with lock:
            if time.monotonic() > deadline:
                return None
            return next(seeds, None)

    def job() -> None:
        worker = Isolated(timeout, soak.mode)
        try:
            while (seed := next_seed()) is not None:
                soak.record(seed, worker.ask(("seed", seed)), worker)
                with lock:
                    bar.update()
                    bar.set_postfix(fail=sum(v for k, v in soak.counts.items()
                                             if k not in soak.mode.benign), refresh=False)
        finally:
            worker.close()

    threads = [threading.Thread(target=job, daemon=True) for _ in range(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bar.close()
    return sum(soak.counts.values())


def print_summary(soak: Soak, done: int, seconds: float) -> None:
    print(f"\n{done} graphs in {seconds:.0f} s: {done / max(seconds, 1e-9) * 3600:.0f} "
          f"graphs/hour")
    print("outcomes: " + ", ".join(f"{k} {soak.counts[k]}" for k in (*soak.mode.benign,
                                                                    *soak.mode.kinds)
                                    if soak.counts[k]))
    covered = sorted(soak.ops, key=lambda op: -soak.ops[op])
    print(f"ops generated ({len(covered)}): " + ", ".join(f"{op} {soak.ops[op]}"
                                                          for op in covered))
    if not soak.groups:
        print("no failures")
        return
    print(f"\n{len(soak.groups)} distinct failures (saved in {soak.out_dir}):")
    for sig, cases in sorted(soak.groups.items(), key=lambda kv: -len(kv[1])):
        seed, path, nodes = min(cases, key=lambda c: c[2])
        print(f"  [{len(cases)}x] {sig}\n      smallest: {path} ({nodes} nodes)")


def replay(path: Path, seed: int, threads: int) -> int:
    """Re-check a saved case; 1 when it still fails."""
    model = onnx.load(path)
    failure = check(model, seed, threads=threads)
    print(onnx.printer.to_text(model.graph))
    print(f"seed {seed}, threads {threads}: " + (f"{failure.kind}: {failure.message}"
                                                 if failure else "ok"))
    return 1 if failure else 0


def parse_args(argv: Sequence[str] | None, mode: Mode = CPU, description: str = __doc__,
               out: Path = FAILURE_DIR) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=f"python -m {mode.module}", description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=None, help="graphs to check (default 1000, or "
                   "unlimited with --minutes)")
    p.add_argument("--seed", type=int, default=0, help="first seed (cases are seed, seed+1, ...)")
    p.add_argument("--minutes", type=float, default=None, help="stop after this long")
    p.add_argument("--jobs", type=int, default=1, help="child processes checking in parallel")
    p.add_argument("--out", type=Path, default=out, help="where failures are saved")
    p.add_argument("--shrink-limit", type=int, default=3,
                   help="minimize at most this many failures of one signature")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds before a case hangs")
    p.add_argument("--replay", type=Path, default=None, help="re-check a saved .onnx case")
    p.add_argument("--threads", type=int, default=None, help="with --replay: sw2c threads")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.replay is not None:
        seed = int(args.replay.stem) if args.replay.stem.isdigit() else args.seed
        return replay(args.replay, seed, args.threads or case_threads(seed))
    return soak_main(args, Soak(args.out, args.shrink_limit))


def soak_main(args: argparse.Namespace, soak: Soak,
              summary: Callable[[Soak, int, float], None] = print_summary) -> int:
    """The soak ``args`` ask for (--count, --seed, --minutes, --jobs, --timeout), then its
    summary; 1 when any case failed."""
    count = args.count if args.count is not None else (None if args.minutes else 1000)
    seeds = iter(range(args.seed, args.seed + count)) if count is not None else \
        itertools.count(args.seed)
    deadline = time.monotonic() + (args.minutes * 60 if args.minutes else math.inf)
    start = time.monotonic()
    done = run_soak(seeds, count, jobs=args.jobs, deadline=deadline, soak=soak,
                    timeout=args.timeout)
    summary(soak, done, time.monotonic() - start)
    return 1 if set(soak.counts) - set(soak.mode.benign) else 0


if __name__ == "__main__":
    sys.exit(main())
