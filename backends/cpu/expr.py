"""Scalar code for one element of a kernel body value, given its coordinates.

Movement ops only remap coordinates (a transpose permutes them, a slice scales and shifts, a
window adds kernel offsets, a pad shifts and guards), so a kernel reads its inputs where they
are and never materializes a transposed or padded copy. Out-of-bounds coordinates are clamped
for the load and the pad value selected instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from llvmlite import ir

from ...ir import Graph, Op
from ...ir import keeps_last_axis as layout_keeps_last_axis
from ...ir.ops import COMPARISONS
from ...ir.types import UNSIGNED
from . import dtypes
from .llvm import F32, I64
from .loops import const
from .math import emit_binary, emit_unary, splat

Coords = list[ir.Value]
# index arithmetic on constants, and the operand that leaves the other unchanged
LAYOUT = frozenset({Op.TRANSPOSE, Op.SLICE, Op.PAD, Op.RESHAPE})  # may move the last axis
_FOLD = {"add": int.__add__, "sub": int.__sub__, "mul": int.__mul__, "udiv": int.__floordiv__,
         "urem": int.__mod__}
_IDENTITY = {"add": 0, "sub": 0, "mul": 1, "udiv": 1}


def strides(shape: Sequence[int]) -> list[int]:
    """Row-major element strides of ``shape``."""
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return out[::-1]


def linear(b: ir.IRBuilder, coords: Coords, shape: Sequence[int]) -> ir.Value:
    """The row-major element offset of ``coords`` in a tensor of ``shape``."""
    off = const(0)
    for c, s, d in zip(coords, strides(shape), shape):
        if d != 1:
            off = b.add(off, b.mul(c, const(s), flags=("nsw",)), flags=("nsw",))
    return off


def unravel(b: ir.IRBuilder, flat: ir.Value, shape: Sequence[int]) -> list[ir.Value]:
    """Row-major coordinates of element ``flat`` of ``shape``."""
    coords = []
    for stride in strides(shape):
        coords.append(b.udiv(flat, const(stride)))
        flat = b.urem(flat, const(stride))
    return coords


def keeps_last_axis(body: Graph, root: str | None = None) -> bool:
    """True when every value ``root`` (default: the body's output) is computed from has its
    last axis as ``root``'s last axis, read with stride 1 (or broadcast from size 1): then
    ``lanes`` consecutive elements along it can be computed as one vector (see BodyEmitter)."""
    root = body.outputs[0] if root is None else root
    width = body.type_of(root).shape[-1:]
    seen, stack, nodes, inputs = set(), [root], [], []
    while stack:  # the nodes and body inputs ``root`` is computed from
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        node = body.producer.get(name)
        if node is None:
            inputs.append(body.type_of(name))
        else:
            nodes.append(node)
            stack.extend(node.inputs)
    for node in nodes:
        shape = node.type.shape
        if node.op is Op.GATHER or (shape[-1:] != width and shape[-1:] not in ((1,), ())):
            return False
        src = body.type_of(node.inputs[0]).shape if node.inputs else ()
        if node.op in LAYOUT and not layout_keeps_last_axis(node.op, node.attrs, src, shape):
            return False
    return all(t.shape[-1:] in (width, (1,), ()) for t in inputs)


def _key(v: ir.Value) -> object:
    """What identifies an index value: a constant by its number, anything else by itself."""
    return ("const", v.constant) if isinstance(v, ir.Constant) else id(v)


class BodyEmitter:
    """Emits ``value(name, coords)`` for the nodes of a kernel body.

    ``pointers`` maps body inputs to float pointers; ``overrides`` supplies values the kernel
    computes itself (a reduction's accumulator). With ``lanes`` > 1 every value is a vector of
    that many consecutive elements along the last axis, whose coordinate is the first of them
    (valid only where ``keeps_last_axis(body)``).

    Within one top-level ``value`` call every (value, coordinates) pair and every index
    computation is emitted once and reused: a body value read twice (``x * x``) would otherwise
    be emitted again at each use, and code size would double with each level of such reuse.
    The memo lives for one top-level call only, because that call's code is straight-line and
    so each emitted value dominates every later use; separate calls may sit in other loops."""

    def __init__(self, b: ir.IRBuilder, body: Graph, pointers: dict[str, ir.Value],
                 overrides: dict[str, Callable[[Coords], ir.Value]] | None = None,
                 lanes: int = 1) -> None:
        self.b = b
        self.body = body
        self.pointers = pointers
        self.overrides = overrides or {}
        self.lanes = lanes
        self._memo: dict[tuple, ir.Value] = {}
        self._depth = 0

    def load(self, name: str, coords: Coords) -> ir.Value:
        t = self.body.type_of(name)
        shape, element = t.shape, dtypes.storage(t.dtype)
        base = self.b.bitcast(self.pointers[name], element.as_pointer())
        ptr = self.b.gep(base, [linear(self.b, coords, shape)])
        if self.lanes == 1:
            x = self.b.load(ptr)
        elif shape[-1:] in ((1,), ()):
            x = splat(self.b, ir.Constant(ir.VectorType(element, self.lanes), None),
                      self.b.load(ptr))
        else:
            vec = ir.VectorType(element, self.lanes)
            x = self.b.load(self.b.bitcast(ptr, vec.as_pointer()), align=dtypes.itemsize(element))
        return dtypes.to_register(self.b, x, t.dtype)

    def constant(self, value: float, dtype: str = "float32") -> ir.Value:
        like = ir.VectorType(F32, self.lanes) if self.lanes > 1 else None
        return dtypes.constant(dtype, value, like)

    def value(self, name: str, coords: Coords) -> ir.Value:
        """Body value ``name`` at ``coords`` (a scalar, or ``lanes`` elements)."""
        if self._depth == 0:
            self._memo = {}
        key = ("value", name, *map(_key, coords))
        hit = self._memo.get(key)
        if hit is None:
            self._depth += 1
            try:
                hit = self._memo[key] = self._emit(name, coords)
            finally:
                self._depth -= 1
        return hit

    def values(self, requests: Sequence[tuple[str, Coords]]) -> list[ir.Value]:
        """``value`` of each (name, coords) as one straight-line sequence that emits their
        common index math and loads once (a lincomb's 36 taps of one tile share its bounds)."""
        self._memo = {}
        self._depth += 1
        try:
            return [self.value(name, coords) for name, coords in requests]
        finally:
            self._depth -= 1

    def _index(self, op: str, x: ir.Value, y: int | ir.Value) -> ir.Value:
        """``x op y`` on i64 indices: folded when both are constants, emitted once per call."""
        y = const(y) if isinstance(y, int) else y
        if isinstance(x, ir.Constant) and isinstance(y, ir.Constant):
            return const(_FOLD[op](int(x.constant), int(y.constant)))
        if isinstance(y, ir.Constant) and int(y.constant) == _IDENTITY.get(op):
            return x
        key = (op, _key(x), _key(y))
        hit = self._memo.get(key)
        if hit is None:
            hit = self._memo[key] = getattr(self.b, op)(x, y)
        return hit

    def _emit(self, name: str, coords: Coords) -> ir.Value:
        if name in self.overrides:
            return self.overrides[name](coords)
        if name in self.pointers:
            return self.load(name, coords)
        node = self.body.producer[name]
        b, at = self.b, node.attrs
        if node.op is Op.CONST:
            return self.constant(np.asarray(at["value"]).reshape(-1)[0].item(), node.type.dtype)
        if node.op is Op.UNARY:
            x = self.value(node.inputs[0], coords)
            if node.type.dtype in dtypes.FLOATS:
                return emit_unary(b, at["fn"], at, x)
            return dtypes.emit_int_unary(b, at["fn"], x)
        if node.op is Op.BINARY:
            x, y = (self.value(i, self._broadcast(i, coords)) for i in node.inputs)
            return typed_binary(b, at["fn"], x, y, self.body.type_of(node.inputs[0]).dtype)
        if node.op is Op.CAST:
            src = self.body.type_of(node.inputs[0]).dtype
            return dtypes.emit_cast(b, self.value(node.inputs[0], coords), src, at["to"])
        if node.op is Op.WHERE:
            c, x, y = (self.value(i, self._broadcast(i, coords)) for i in node.inputs)
            return b.select(c, x, y)
        if node.op is Op.GATHER:
            return self._gather(node, coords)
        if node.op is Op.TRANSPOSE:
            src: Coords = [const(0)] * len(coords)
            for k, p in enumerate(at["perm"]):
                src[p] = coords[k]
            return self.value(node.inputs[0], src)
        if node.op is Op.SLICE:
            src = [self._index("add", self._index("mul", c, st), s) for c, s, st in
                   zip(coords, at["starts"], at["steps"])]
            return self.value(node.inputs[0], src)
        if node.op is Op.PAD:
            r = len(coords)
            shifted = [self._index("sub", c, p) for c, p in zip(coords, at["pads"][:r])]
            return self._guarded(node.inputs[0], shifted, at["value"])
        if node.op is Op.WINDOW:
            return self._window(node.inputs[0], coords, at)
        if node.op is Op.RESHAPE:
            return self.value(node.inputs[0], self._reshape(node.inputs[0], node.name, coords))
        raise NotImplementedError(f"{node.op} inside an elementwise kernel")

    def _gather(self, node, coords: Coords) -> ir.Value:
        """data[..., clamp(index), ...]: the index is read at the output's coordinates along
        the indices' axes, wrapped once if negative and clamped into the axis, so the load
        stays inside the data whatever the run-time index is."""
        data, indices = node.inputs
        axis, rank = node.attrs["axis"], self.body.type_of(indices).rank
        n = self.body.type_of(data).shape[axis]
        b = self.b
        i = self.value(indices, coords[axis:axis + rank])
        i = b.sext(i, I64) if i.type.width < 64 else i
        i = b.select(b.icmp_signed("<", i, const(0)), b.add(i, const(n)), i)
        i = b.select(b.icmp_signed("<", i, const(0)), const(0), i)
        i = b.select(b.icmp_signed(">", i, const(n - 1)), const(n - 1), i)
        return self.value(data, [*coords[:axis], i, *coords[axis + rank:]])

    def _broadcast(self, name: str, coords: Coords) -> Coords:
        shape = self.body.type_of(name).shape
        tail = coords[len(coords) - len(shape):]
        return [const(0) if d == 1 else c for c, d in zip(tail, shape)]

    def _guarded(self, name: str, coords: Coords, pad: float) -> ir.Value:
        """The element at ``coords`` of ``name``, or ``pad`` where a coordinate is outside."""
        b = self.b
        shape = self.body.type_of(name).shape
        ok = ir.Constant(ir.IntType(1), 1)
        clamped = []
        for c, d in zip(coords, shape):
            key = ("inside", _key(c), d)
            if key not in self._memo:
                inside = b.icmp_unsigned("<", c, const(d))  # unsigned: negatives are huge
                self._memo[key] = inside, b.select(inside, c, const(0))
            inside, c = self._memo[key]
            ok = b.and_(ok, inside)
            clamped.append(c)
        dtype = self.body.type_of(name).dtype
        return b.select(ok, self.value(name, clamped), self.constant(pad, dtype))

    def _window(self, name: str, coords: Coords, at) -> ir.Value:
        n = len(at["kernel"])
        ix = self._index
        src = [coords[0]]
        for i in range(n):
            o, k = coords[1 + i], coords[1 + n + i]
            pos = ix("add", ix("mul", o, at["strides"][i]), ix("mul", k, at["dilations"][i]))
            src.append(ix("sub", pos, at["pads"][i]))
        src.append(coords[-1])
        if any(at["pads"]):
            return self._guarded(name, src, at["pad"])
        return self.value(name, src)

    def _reshape(self, src: str, dst: str, coords: Coords) -> Coords:
        """``src``'s coordinates of element ``coords`` of its reshape ``dst``. Where both keep
        the same last axis, that coordinate passes through and only the others are
        re-derived: index math that a loop along the last axis does not change."""
        shape, into = self.body.type_of(dst).shape, self.body.type_of(src).shape
        last = []
        if shape[-1:] == into[-1:] and len(shape) > 1 and len(into) > 1:
            shape, into, coords, last = shape[:-1], into[:-1], coords[:-1], coords[-1:]
        flat = linear(self.b, coords, shape)
        out = []
        for s in strides(into):
            out.append(self._index("udiv", flat, s))
            flat = self._index("urem", flat, s)
        return out + list(last)


def store(b: ir.IRBuilder, ptr: ir.Value, coords: Coords, shape: Sequence[int],
          value: ir.Value) -> None:
    """Store a scalar, or a vector of consecutive elements along the last axis, into ``ptr``
    (of any pointer type: it is read as a pointer to the value's element type)."""
    vector = isinstance(value.type, ir.VectorType)
    if (value.type.element if vector else value.type) == dtypes.I1:  # bool: one byte each
        value = dtypes.to_storage(b, value, "bool")
    element = value.type.element if vector else value.type
    at = b.gep(b.bitcast(ptr, element.as_pointer()), [linear(b, coords, shape)])
    if vector:
        b.store(value, b.bitcast(at, value.type.as_pointer()), align=dtypes.itemsize(element))
    else:
        b.store(value, at)


def typed_binary(b: ir.IRBuilder, fn, x: ir.Value, y: ir.Value, dtype: str) -> ir.Value:
    """``fn`` on operands of ``dtype``: float math, float comparisons, or integer ops."""
    if dtype not in dtypes.FLOATS:
        return dtypes.emit_int_binary(b, fn, x, y, unsigned=dtype in UNSIGNED)
    if fn in COMPARISONS:
        return dtypes.emit_float_compare(b, fn, x, y)
    return emit_binary(b, fn, x, y)


__all__ = ["BodyEmitter", "Coords", "I64", "linear", "store", "strides", "typed_binary",
           "unravel"]
