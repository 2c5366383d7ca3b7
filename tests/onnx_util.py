"""Small helpers for frontend tests: build one-graph ONNX models with ``onnx.helper`` and
compare ``import_model`` + the IR interpreter with onnxruntime."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from sw2c import ir
from sw2c.frontend import import_model

RTOL, ATOL = 1e-4, 1e-5


def make_model(nodes: Sequence[onnx.NodeProto], inputs: Mapping[str, Sequence[int | str]],
               outputs: Sequence[str], inits: Mapping[str, np.ndarray] | None = None,
               opset: int = 17) -> onnx.ModelProto:
    """float32 ``inputs`` (name -> shape), outputs declared without a shape (``check`` fills
    them in from onnxruntime's results), ``inits`` as initializers."""
    graph = helper.make_graph(
        list(nodes), "test",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def node_model(op: str, inputs: Mapping[str, Sequence[int]], n_out: int = 1,
               inits: Mapping[str, np.ndarray] | None = None, opset: int = 17,
               extra_inputs: Sequence[str] = (), **attrs) -> onnx.ModelProto:
    """A model of one ``op`` node reading ``inputs`` then ``inits`` then ``extra_inputs``
    (use "" for an absent optional input)."""
    names = [*inputs, *(inits or {}), *extra_inputs]
    outs = [f"y{i}" for i in range(n_out)]
    return make_model([helper.make_node(op, names, outs, name=f"{op.lower()}_node", **attrs)],
                      inputs, outs, inits, opset)


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def random_feeds(model: onnx.ModelProto, seed: int = 0,
                 shapes: Mapping[str, Sequence[int]] | None = None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        shape = (shapes or {}).get(vi.name) or [d.dim_value for d in vi.type.tensor_type.shape.dim]
        feeds[vi.name] = np.asarray(rng.standard_normal(shape), np.float32)
    return feeds


def with_output_shapes(model: onnx.ModelProto, results: Sequence[np.ndarray]) -> onnx.ModelProto:
    """``model`` with its outputs declared as the reference computed them (type and shape)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for vi, r in zip(out.graph.output, results):
        vi.CopyFrom(helper.make_tensor_value_info(
            vi.name, helper.np_dtype_to_tensor_dtype(np.asarray(r).dtype), np.shape(r)))
    return out


def check(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray] | None = None, seed: int = 0,
          input_shapes: Mapping[str, Sequence[int]] | None = None,
          rtol: float = RTOL, atol: float = ATOL) -> ir.Graph:
    """Run ``model`` on onnxruntime and on the imported IR; assert every output matches."""
    feeds = dict(feeds) if feeds is not None else random_feeds(model, seed, input_shapes)
    want = session(model).run(None, feeds)
    model = with_output_shapes(model, want)
    graph = import_model(model, input_shapes)
    assert graph.outputs == tuple(o.name for o in model.graph.output)
    assert sorted(v.name for v in graph.inputs) == sorted(feeds)
    got = ir.run(graph, feeds)
    for o, w in zip(model.graph.output, want):
        np.testing.assert_allclose(got[o.name], w, rtol=rtol, atol=atol, err_msg=o.name)
        assert got[o.name].shape == w.shape
    return graph
