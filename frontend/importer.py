"""The ONNX -> IR driver: inputs and their static shapes, then every node in order (folded to a
constant when its inputs are known, else converted), outputs named as in the ONNX graph."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import onnx.inliner
from onnx import TensorProto, numpy_helper
from onnx.reference import ReferenceEvaluator

from ..errors import ModelError, Sw2cError, UnsupportedOpError, blame
from ..ir import Builder, Graph, Node, Op, ShapeError, TensorType, Value, verify
from ..ir.buffers import empty
from . import (  # noqa: F401  (they register the converters)
    ops_activation,
    ops_arith,
    ops_attention,
    ops_convtranspose,
    ops_einsum,
    ops_index,
    ops_layout,
    ops_linalg,
    ops_logic,
    ops_loss,
    ops_math,
    ops_misc,
    ops_nn,
    ops_norm,
    ops_quant,
    ops_refused,
    ops_resize,
    ops_rnn,
    ops_roialign,
    ops_sample,
    ops_scatter,
    ops_space,
    ops_stateful,
    ops_unary,
)
from .convert import RUNTIME_DTYPES, Ctx, Val, as_array, lookup, sparse_to_dense
from .limits import check_bytes, predicted_bytes
from .load import load_model

MIN_OPSET = 7
DEFAULT_DOMAINS = ("", "ai.onnx")
# never folded: their value changes from run to run
RANDOM = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                    "Multinomial", "Bernoulli"})
# converted even when their inputs are constants (they fold themselves); GlobalMaxPool because
# the ONNX reference evaluator drops a dimension of its output when there are not exactly two
# spatial axes (onnx 1.23: [2, 1, 29] -> [2, 1]; fuzz seed 842465)
SELF_FOLDING = frozenset({"Constant", "Shape", "Size", "GlobalMaxPool"})


def import_model(model: onnx.ModelProto | str | os.PathLike,
                 input_shapes: Mapping[str, Sequence[int]] | None = None) -> Graph:
    """Convert an ONNX model into a verified, statically shaped IR Graph.

    A path is read and checked with ``load_model``; a proto is taken as ``load_model`` returns
    it (the ONNX checker costs seconds on large models, so it is not run twice), and the
    importer still raises ModelError on anything malformed it meets. Dynamic input dims take
    their size from ``input_shapes[name]``, else 1 (with a warning).
    """
    proto = model if isinstance(model, onnx.ModelProto) else load_model(model)
    if not proto.HasField("graph"):
        raise ModelError("the model has no graph")
    if proto.functions:  # model-local functions: expand them into plain nodes
        proto = onnx.inliner.inline_local_functions(proto)
    graph = verify(Importer(proto, input_shapes or {}).run())
    _check_not_empty(graph)
    return graph


def _check_not_empty(graph: Graph) -> None:
    """Refuse an empty input when every output is empty too: that program computes nothing and
    verifying it compares nothing. (A reduction over an empty axis, whose output is the op's
    identity, has a real result and stays legal, as in ONNX's own tests.)"""
    empty = [v for v in graph.inputs if 0 in v.type.shape]
    if empty and all(0 in graph.type_of(o).shape for o in graph.outputs):
        name, shape = empty[0].name, empty[0].type.shape
        raise ModelError(f"input '{name}' has shape {shape}: dim {shape.index(0)} is zero, and "
                         "so every output is empty and there is nothing to compute; compile "
                         f"'{name}' with every dim 1 or more")


def _default_opset(model: onnx.ModelProto) -> int:
    versions = [o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS]
    if not versions:
        raise ModelError("the model imports no default-domain (ai.onnx) opset")
    if versions[0] < MIN_OPSET:
        raise ModelError(f"the model uses ai.onnx opset {versions[0]}; sw2c supports opset "
                         f"{MIN_OPSET} and newer (convert it with onnx.version_converter)")
    return versions[0]


def _tensor_array(t: TensorProto | onnx.SparseTensorProto, what: str) -> np.ndarray:
    try:
        if isinstance(t, onnx.SparseTensorProto):
            return sparse_to_dense(t)
        return numpy_helper.to_array(t)
    except Exception as e:  # missing external data, bad raw_data length, unknown dtype
        raise ModelError(f"cannot read {what}: {e}") from e


def _static_dim(d: onnx.TensorShapeProto.Dimension) -> int | None:
    """The size the model fixes for dim ``d``, or None if it is dynamic."""
    return d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else None


def dynamic_dims(model: onnx.ModelProto) -> dict[str, list[int] | None]:
    """Per graph input, the dims the model leaves dynamic: those ``input_shapes`` may set
    (None: the input declares no shape, so its rank and every dim are free)."""
    inits = {t.name for t in model.graph.initializer}
    out: dict[str, list[int] | None] = {}
    for vi in model.graph.input:
        if vi.name not in inits and vi.type.HasField("tensor_type"):
            tt = vi.type.tensor_type
            dims = list(tt.shape.dim) if tt.HasField("shape") else None
            out[vi.name] = (None if dims is None else
                            [i for i, d in enumerate(dims) if _static_dim(d) is None])
    return out


def _dtype_name(elem_type: int) -> str:
    return TensorProto.DataType.Name(elem_type).lower() if elem_type else "undefined"



TRANSPOSE_BLOCK = 512  # rows and columns a blocked transpose copies at once (1 MiB: in L2)


def c_ordered(a: np.ndarray) -> np.ndarray:
    """``a`` in C order, copied only when it is not. A transposed matrix (Gemm's transB, a
    classifier's [N, K] weight) is copied block by block: numpy's element-order copy of a
    transposed 411 MB matrix (VGG-19's fc6) misses the cache and TLB on every read and took
    2.3 s here, the blocks 0.6-0.9 s."""
    if a.flags.c_contiguous or a.ndim != 2 or not a.flags.f_contiguous or a.size < 1 << 20:
        return np.asarray(a, order="C")
    base = a.T  # C-ordered: read in bands of its rows, each written as columns of out
    out = empty(a.shape, a.dtype)  # pages in place (ir/buffers.py)
    for i in range(0, base.shape[0], TRANSPOSE_BLOCK):
        for j in range(0, base.shape[1], TRANSPOSE_BLOCK):
            out[j:j + TRANSPOSE_BLOCK, i:i + TRANSPOSE_BLOCK] = base[i:i + TRANSPOSE_BLOCK,
                                                                     j:j + TRANSPOSE_BLOCK].T
    return out


class Importer:
    """One model being imported: ``env`` maps every ONNX tensor name to its ``Val``."""

    def __init__(self, model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]]) -> None:
        self.model = model
        self.graph = model.graph
        self.opset = _default_opset(model)
        self.env: dict[str, Val] = {}
        self._names: dict[int, str] = {}  # id(array) -> its ONNX name (CONST node names)
        self._materialized: dict[int, tuple[np.ndarray, str]] = {}
        self._used = {i for n in self.graph.node for i in n.input} | {
            o.name for o in self.graph.output}
        for t in self.graph.initializer:
            self._set_const(t.name, _tensor_array(t, f"initializer '{t.name}'"))
        for t in self.graph.sparse_initializer:
            self._set_const(t.values.name, _tensor_array(t, f"initializer '{t.values.name}'"))
        inputs = self._inputs(input_shapes)
        self.builder = Builder(self.graph.name or "model", inputs,
                               taken=[o.name for o in self.graph.output])
        for v in inputs:
            self.env[v.name] = v.name

    # --- inputs ---------------------------------------------------------------------------
    def _inputs(self, input_shapes: Mapping[str, Sequence[int]]) -> list[Value]:
        real = [vi for vi in self.graph.input if vi.name not in self.env]
        names = [vi.name for vi in real]
        if not isinstance(input_shapes, Mapping):
            raise ModelError("input_shapes must map input names to shapes, got "
                             f"{type(input_shapes).__name__}")
        for name in input_shapes:
            if name not in names:
                raise ModelError(f"input_shapes names '{name}', which is not an input of the "
                                 f"model (its inputs: {', '.join(names) or 'none'})")
        values = []
        for vi in real:
            t = self._input_type(vi, input_shapes.get(vi.name))
            check_bytes(t.nbytes, f"input '{vi.name}' of shape {t.shape}")
            values.append(Value(vi.name, t))
        return values

    def _input_type(self, vi: onnx.ValueInfoProto, given: Sequence[int] | None) -> TensorType:
        if not vi.type.HasField("tensor_type"):
            raise ModelError(f"input '{vi.name}' is not a tensor; sw2c compiles tensor inputs only")
        tt = vi.type.tensor_type
        dtype = RUNTIME_DTYPES.get(tt.elem_type)
        if dtype is None:
            raise ModelError(f"input '{vi.name}' has dtype {_dtype_name(tt.elem_type)}; sw2c "
                             f"compiles {', '.join(RUNTIME_DTYPES.values())} inputs")
        if given is not None:
            try:
                given = [int(d) for d in given]
            except (TypeError, ValueError):
                raise ModelError(f"input_shapes['{vi.name}'] must be a sequence of ints, got "
                                 f"{given!r}") from None
            if any(d < 0 for d in given):
                raise ModelError(f"input_shapes['{vi.name}'] = {given} has a negative dim")
        if not tt.HasField("shape"):
            if given is None:
                raise ModelError(f"input '{vi.name}' has no declared shape; pass it in "
                                 "input_shapes")
            return TensorType(tuple(given), dtype)
        dims = list(tt.shape.dim)
        if given is not None and len(given) != len(dims):
            raise ModelError(f"input_shapes['{vi.name}'] = {given} has rank {len(given)}, but the "
                             f"model declares rank {len(dims)}")
        shape, dynamic = [], []
        for i, d in enumerate(dims):
            static = _static_dim(d)
            if given is not None:
                if static is not None and given[i] != static:
                    raise ModelError(f"input_shapes['{vi.name}'] = {given} sets dim {i} to "
                                     f"{given[i]}, but the model fixes it at {static}")
                shape.append(given[i])
            elif static is not None:
                shape.append(static)
            else:
                dynamic.append(f"{i} ('{d.dim_param}')" if d.dim_param else str(i))
                shape.append(1)
        if dynamic:  # one line per input, with the shape to pass to silence it
            plural = "s" if len(dynamic) > 1 else ""
            warnings.warn(f"input '{vi.name}' has dynamic dimension{plural} {', '.join(dynamic)}: "
                          f"compiling for shape {tuple(shape)}, with 1 there; fix it with "
                          f"input_shapes={{'{vi.name}': {tuple(shape)}}}",
                          stacklevel=5)  # import_model's caller
        return TensorType(tuple(shape), dtype)

    # --- constants --------------------------------------------------------------------------
    def _set_const(self, name: str, value: np.ndarray) -> None:
        self.env[name] = value
        self._names.setdefault(id(value), name)

    def materialize(self, value: np.ndarray) -> str:
        """A CONST node for ``value`` (in the IR's dtype for it, see as_array), made once per
        array."""
        hit = self._materialized.get(id(value))
        if hit is None:
            # not Builder.const: np.ascontiguousarray would make a 0-d scalar 1-d; no copy of
            # an array that already is C-ordered (IR values are never written)
            name = self.builder.add(Op.CONST, (), name=self._names.get(id(value), "const"),
                                    value=c_ordered(as_array(value)))
            hit = self._materialized[id(value)] = (value, name)  # keeps id(value) alive
        return hit[1]

    def is_used(self, name: str) -> bool:
        return bool(name) and name in self._used

    @staticmethod
    def hint(node: onnx.NodeProto) -> str:
        """The name IR nodes of ``node`` get (made unique by the builder)."""
        return next((o for o in node.output if o), node.op_type.lower())

    # --- nodes ------------------------------------------------------------------------------
    def run(self) -> Graph:
        for index, node in enumerate(self.graph.node):  # the checker ensured topological order
            label = node.name or f"#{index} -> {self.hint(node)}"
            try:
                with blame(f"node '{label}' ({node.op_type})"):
                    self._node(node, label)
            except Sw2cError:
                raise
            except ShapeError as e:
                raise ModelError(f"node '{label}' ({node.op_type}): {e}") from e
            except (KeyError, IndexError, ValueError, TypeError) as e:
                raise ModelError(f"node '{label}' ({node.op_type}) is malformed: "
                                 f"{type(e).__name__}: {e}") from e
        return self._finish()

    def _node(self, node: onnx.NodeProto, label: str) -> None:
        op = node.op_type
        if node.domain not in DEFAULT_DOMAINS:
            raise UnsupportedOpError(op, node.domain, label, "sw2c implements the default ONNX "
                                     "domain only")
        if op in RANDOM:
            raise UnsupportedOpError(op, node.domain, label, "random ops cannot be compiled")
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for a in node.attribute):
            raise UnsupportedOpError(op, node.domain, label, "control flow (subgraphs) is not "
                                     "supported")
        missing = [i for i in node.input if i and i not in self.env]
        if missing:
            raise ModelError(f"node '{label}' ({op}) reads '{missing[0]}', which nothing defines")
        cx = Ctx(self, node, label, [self.env[i] if i else None for i in node.input])
        fn = lookup(op, self.opset)
        if op not in SELF_FOLDING and all(isinstance(v, np.ndarray) for v in cx.present()):
            outs = self._fold(cx, fn)
        elif fn is None:
            detail = ("supported only when all its inputs are constants known at compile time"
                      if onnx.defs.has(op) else "not an ONNX operator sw2c knows")
            raise cx.unsupported(detail)
        else:
            outs = fn(cx)
        if not isinstance(outs, (list, tuple)):
            outs = [outs]
        for i, name in enumerate(node.output):
            v = outs[i] if i < len(outs) else None
            if v is None:
                if self.is_used(name):
                    raise cx.unsupported(f"output {i} ('{name}') is not supported")
                continue
            if isinstance(v, np.ndarray):
                self._set_const(name, v)
            else:
                self.env[name] = v

    def _fold(self, cx: Ctx, fn) -> list[np.ndarray]:
        """Evaluate a node whose inputs are all constants with the ONNX reference evaluator."""
        node = cx.node
        feeds = {name: v for name, v in zip(node.input, cx.inputs) if name}
        check_bytes(predicted_bytes(node, feeds, self.opset),
                    f"node '{cx.label}' ({node.op_type}), evaluated at compile time,")
        try:
            results = ReferenceEvaluator(node, opsets={"": self.opset}).run(None, feeds)
        except Exception as e:  # the evaluator's own errors; our converter may do better
            if fn is not None:
                return fn(cx)
            raise cx.unsupported(f"cannot evaluate it at compile time: {e}") from e
        outs = []
        for r in results:
            if r is not None and not isinstance(r, (np.ndarray, np.generic)):
                raise cx.unsupported("it produces a sequence or map, not a tensor")
            outs.append(None if r is None else np.asarray(r))
        return outs

    # --- outputs ----------------------------------------------------------------------------
    def _finish(self) -> Graph:
        b = self.builder
        inputs = {v.name for v in b.inputs}
        renames: dict[str, str] = {}
        names = [vi.name for vi in self.graph.output]
        if len(set(names)) != len(names):
            raise ModelError(f"the graph lists an output twice: {names}")
        for vi in self.graph.output:
            name = vi.name
            v = self.env.get(name)
            if v is None:
                raise ModelError(f"output '{name}' is never computed")
            if isinstance(v, np.ndarray):
                v = as_array(v)
                if str(v.dtype) not in RUNTIME_DTYPES.values():
                    raise ModelError(f"output '{name}' is a constant {v.dtype} tensor; sw2c "
                                     f"produces {', '.join(RUNTIME_DTYPES.values())} outputs")
                b.append(Node(Op.CONST, (), Value(name, TensorType(v.shape, str(v.dtype))),
                              {"value": np.array(v, order="C")}, name))
            elif v == name:
                pass  # an input that is also an output
            elif v in inputs or v in renames:  # the value already has a name we must keep
                b.append(Node(Op.RESHAPE, (v,), Value(name, b.types[v]),
                              {"shape": b.types[v].shape}, name))
            else:
                renames[v] = name
            self._check_output(vi, b.types[name] if name in b.types else b.types[v])
        nodes = [Node(n.op, tuple(renames.get(i, i) for i in n.inputs),
                      Value(renames.get(n.name, n.name), n.type), n.attrs, n.origin)
                 for n in b.nodes]
        return Graph(b.name, tuple(b.inputs), tuple(nodes), tuple(names))

    @staticmethod
    def _check_output(vi: onnx.ValueInfoProto, t: TensorType) -> None:
        """The declared dtype and static dims of an output must match what we computed."""
        if not vi.type.HasField("tensor_type"):
            raise ModelError(f"output '{vi.name}' is not a tensor")
        tt = vi.type.tensor_type
        if tt.elem_type and RUNTIME_DTYPES.get(tt.elem_type) != t.dtype:
            raise ModelError(f"output '{vi.name}' is declared {_dtype_name(tt.elem_type)}, but "
                             f"the model computes {t.dtype}")
        if not tt.HasField("shape"):
            return
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else None
                for d in tt.shape.dim]
        if len(dims) != t.rank or any(d is not None and d != s for d, s in zip(dims, t.shape)):
            shown = ["?" if d is None else d for d in dims]
            raise ModelError(f"output '{vi.name}' is declared with shape {shown}, but the model "
                             f"computes {list(t.shape)}")
