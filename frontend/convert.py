"""The converter table (ONNX op type [+ opset] -> function) and the context a converter gets.

A converter turns one ONNX node into IR through its ``Ctx``. Values it handles are ``Val``: the
name of an IR value, or a numpy array known at import. ``Ctx.add`` evaluates an op whose inputs
are all arrays with the IR interpreter (so weight transposes fold at import, with exactly the
IR's semantics) and emits an IR node otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import ModelError, UnsupportedOpError
from ..ir import Binary, Node, Op, Reduce, ShapeError, TensorType, Unary, Value, infer
from ..ir.interp import evaluate
from ..ir.types import DTYPES
from .limits import check_bytes

if TYPE_CHECKING:
    from .importer import Importer

Val = str | np.ndarray
# the element types of run-time tensors (graph inputs, intermediates, outputs) by ONNX type
RUNTIME_DTYPES = {getattr(onnx.TensorProto, name.upper()): dtype for name, dtype in (
    ("float", "float32"), ("double", "float64"), ("float16", "float16"), ("int64", "int64"),
    ("int32", "int32"), ("int16", "int16"), ("int8", "int8"), ("uint64", "uint64"),
    ("uint32", "uint32"), ("uint16", "uint16"), ("uint8", "uint8"), ("bool", "bool"))}
Result = Val | Sequence[Val | None]
Converter = Callable[["Ctx"], Result]

_TABLE: dict[str, list[tuple[int, Converter]]] = {}


def converter(*op_types: str, since: int = 1) -> Callable[[Converter], Converter]:
    """Register ``fn`` for ``op_types`` at default-domain opsets >= ``since``."""

    def register(fn: Converter) -> Converter:
        for op in op_types:
            _TABLE.setdefault(op, []).append((since, fn))
            _TABLE[op].sort(key=lambda e: e[0])
        return fn

    return register


def lookup(op_type: str, opset: int) -> Converter | None:
    """The converter for ``op_type`` registered with the largest ``since`` <= ``opset``."""
    best = None
    for since, fn in _TABLE.get(op_type, ()):
        if since <= opset:
            best = fn
    return best


def as_array(value: np.ndarray) -> np.ndarray:
    """An array whose dtype the IR knows (odd floats become float32, odd ints int64)."""
    a = np.asarray(value)
    if str(a.dtype) in DTYPES:
        return a
    if a.dtype.kind == "f" or str(a.dtype).startswith(("bfloat16", "float8", "float4")):
        return a.astype(np.float32)
    if a.dtype.kind in "iu":
        return a.astype(np.int64)
    return a


def sparse_to_dense(t: onnx.SparseTensorProto) -> np.ndarray:
    """A SparseTensorProto (sparse initializer or Constant sparse_value) as a dense array."""
    values = numpy_helper.to_array(t.values)
    idx = numpy_helper.to_array(t.indices).astype(np.int64)
    dims = tuple(int(d) for d in t.dims)
    out = np.zeros(prod(dims), values.dtype)
    flat = np.ravel_multi_index(tuple(idx.T), dims) if idx.ndim == 2 else idx
    out[flat] = values.reshape(-1)
    return out.reshape(dims)


def prod(xs: Sequence[int]) -> int:
    return int(np.prod(xs, dtype=np.int64))


class Ctx:
    """One ONNX node being converted: its inputs, attributes, and IR emission helpers."""

    def __init__(self, imp: Importer, node: onnx.NodeProto, label: str,
                 inputs: Sequence[Val | None]) -> None:
        self.imp = imp
        self.node = node
        self.label = label
        self.op_type = node.op_type
        self.opset = imp.opset
        self.inputs = list(inputs)

    # --- errors -------------------------------------------------------------------------
    def error(self, msg: str) -> ModelError:
        return ModelError(f"node '{self.label}' ({self.op_type}): {msg}")

    def unsupported(self, detail: str) -> UnsupportedOpError:
        return UnsupportedOpError(self.op_type, self.node.domain, self.label, detail)

    # --- attributes -----------------------------------------------------------------------
    @cached_property
    def attrs(self) -> dict[str, Any]:
        out = {}
        for a in self.node.attribute:
            v = helper.get_attribute_value(a)
            out[a.name] = v.decode() if isinstance(v, bytes) else v
        return out

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)

    def ints(self, name: str, default: Sequence[int] | None = None) -> list[int] | None:
        v = self.attrs.get(name)
        if v is None:
            return None if default is None else list(default)
        try:
            return [int(i) for i in v]
        except TypeError:
            raise self.error(f"attribute '{name}' must be a list of ints, got {v!r}") from None

    # --- inputs -----------------------------------------------------------------------------
    def has(self, i: int) -> bool:
        return i < len(self.inputs) and self.inputs[i] is not None

    def x(self, i: int = 0) -> Val:
        """Input ``i`` (an IR name or an array); a ModelError if the node lacks it."""
        if not self.has(i):
            raise self.error(f"required input {i} is missing")
        return self.inputs[i]

    def const(self, i: int, what: str) -> np.ndarray | None:
        """Input ``i`` as an array, None if absent; UnsupportedOpError if computed at run time."""
        if not self.has(i):
            return None
        v = self.inputs[i]
        if not isinstance(v, np.ndarray):
            raise self.unsupported(f"{what} (input '{self.node.input[i]}') must be a constant "
                                   "known at compile time")
        return v

    def const_ints(self, i: int, what: str) -> list[int] | None:
        """Constant input ``i`` (axes, pads, starts, ...) as a list of ints, None if absent."""
        v = self.const(i, what)
        return None if v is None else [int(a) for a in v.reshape(-1)]

    def present(self) -> list[Val]:
        return [v for v in self.inputs if v is not None]

    def used(self, i: int) -> bool:
        """Whether output ``i`` exists and something (a node or the graph) reads it."""
        return i < len(self.node.output) and self.imp.is_used(self.node.output[i])

    # --- types --------------------------------------------------------------------------------
    def type(self, v: Val) -> TensorType:
        if isinstance(v, np.ndarray):
            return TensorType(tuple(int(d) for d in v.shape), str(as_array(v).dtype))
        return self.imp.builder.types[v]

    def shape(self, v: Val) -> tuple[int, ...]:
        return tuple(int(d) for d in v.shape) if isinstance(v, np.ndarray) else self.type(v).shape

    def axis(self, axis: int, rank: int, what: str = "axis") -> int:
        """``axis`` normalized into [0, rank); ModelError if out of range."""
        if not -rank <= axis < rank:
            raise self.error(f"{what} {axis} is out of range for rank {rank}")
        return axis % rank

    # --- emission -----------------------------------------------------------------------------
    def ir(self, v: Val) -> str:
        """``v`` as an IR value name (an array becomes a CONST node, once per array)."""
        if isinstance(v, str):
            return v
        a = as_array(v)
        if str(a.dtype) not in DTYPES:
            raise self.error(f"a {a.dtype} tensor is used as data; sw2c computes on "
                             f"{', '.join(DTYPES)} tensors")
        return self.imp.materialize(v)

    def add(self, op: Op, inputs: Sequence[Val], **attrs: Any) -> Val:
        """Emit ``op`` (or evaluate it now, if every input is an array)."""
        if op in (Op.BINARY, Op.WHERE):
            inputs = self._like_data(inputs, skip=1 if op is Op.WHERE else 0)
        if all(isinstance(v, np.ndarray) for v in inputs):
            arrays = [as_array(v) for v in inputs]
            try:
                t = infer(op, [self.type(a) for a in arrays], attrs)
            except ShapeError as e:
                raise self.error(str(e)) from e
            check_bytes(t.nbytes, f"node '{self.label}' ({self.op_type}), folded,")
            return evaluate(Node(op, (), Value("folded", t), attrs, self.label), arrays)
        names = [self.ir(v) for v in inputs]
        try:
            t = infer(op, [self.imp.builder.types[n] for n in names], attrs)
        except ShapeError as e:
            raise self.error(str(e)) from e
        check_bytes(t.nbytes, f"node '{self.label}' ({self.op_type})")
        return self.imp.builder.add(op, names, origin=self.label, name=self.imp.hint(self.node),
                                    **attrs)

    def _like_data(self, inputs: Sequence[Val], skip: int) -> list[Val]:
        """Constants (a converter's scalars: 0.5, 1e-9) in the element type of the run-time
        operands they meet, so one converter serves float16, float32 and float64 models."""
        data = [self.type(v).dtype for v in inputs[skip:] if isinstance(v, str)]
        if not data or len(set(data)) > 1:
            return list(inputs)
        dtype = np.dtype(data[0])
        return [v.astype(dtype) if i >= skip and isinstance(v, np.ndarray) and v.dtype != dtype
                and v.dtype.kind == dtype.kind else v for i, v in enumerate(inputs)]

    def unary(self, fn: Unary, x: Val, **params: float) -> Val:
        return self.add(Op.UNARY, [x], fn=fn, **{k: float(v) for k, v in params.items()})

    def binary(self, fn: Binary, a: Val, b: Val) -> Val:
        return self.add(Op.BINARY, [a, b], fn=fn)

    def scalar(self, value: float) -> np.ndarray:
        return np.array(value, np.float32)

    def matmul(self, a: Val, b: Val) -> Val:
        return self.add(Op.MATMUL, [a, b])

    def reduce(self, fn: Reduce, x: Val, axes: Sequence[int]) -> Val:
        return self.add(Op.REDUCE, [x], fn=fn, axes=tuple(int(a) for a in axes))

    def reshape(self, x: Val, shape: Sequence[int]) -> Val:
        shape = tuple(int(d) for d in shape)
        return x if self.shape(x) == shape else self.add(Op.RESHAPE, [x], shape=shape)

    def transpose(self, x: Val, perm: Sequence[int]) -> Val:
        perm = tuple(int(p) for p in perm)
        return x if perm == tuple(range(len(perm))) else self.add(Op.TRANSPOSE, [x], perm=perm)

    def slice(self, x: Val, starts: Sequence[int], steps: Sequence[int],
              counts: Sequence[int]) -> Val:
        shape = self.shape(x)
        if tuple(counts) == shape and not any(starts) and all(s == 1 for s in steps):
            return x
        return self.add(Op.SLICE, [x], starts=tuple(int(s) for s in starts),
                        steps=tuple(int(s) for s in steps), counts=tuple(int(c) for c in counts))

    def concat(self, xs: Sequence[Val], axis: int) -> Val:
        return xs[0] if len(xs) == 1 else self.add(Op.CONCAT, list(xs), axis=int(axis))
