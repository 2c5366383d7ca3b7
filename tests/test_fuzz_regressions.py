"""Regressions the differential fuzzer (benchmarks/fuzz.py) found in sw2c's typed ops: each a
minimized reproducer, compared with onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import sw2c
from onnx import TensorProto, helper, numpy_helper


def _model(nodes: list, inputs: list, output: str, inits: list) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "m", inputs, [helper.make_tensor_value_info(output, 0, None)],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return onnx.shape_inference.infer_shapes(model)


def _check(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> None:
    want = ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    got = sw2c.compile(model, verify=False).run(feeds)
    got = got[model.graph.output[0].name]
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("index", [[-8], [3], [-1]])
def test_gather_nd_one_tuple_of_constant_indices(index: list[int]) -> None:
    """Indices of rank 1 fold to a 0-d flat position; the folded constant must stay 0-d (it
    became 1-d: 'gather declares f32[1,1], infers f32[1,1,1]'). Fuzz seed 50017."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [10, 1, 2])
    i = numpy_helper.from_array(np.array(index, np.int64), "i")
    model = _model([helper.make_node("GatherND", ["x", "i"], ["y"])], [x], "y", [i])
    _check(model, {"x": np.random.default_rng(0).standard_normal((10, 1, 2), np.float32)})


@pytest.mark.parametrize("shape", [(2, 1, 29), (1, 2, 3, 4, 5), (2, 3, 4, 5)])
def test_global_max_pool_of_a_constant_keeps_its_rank(shape: tuple[int, ...]) -> None:
    """A GlobalMaxPool whose input is a constant folds to [N, C, 1, ...] for any number of
    spatial axes (the ONNX reference evaluator returned [2, 1] for [2, 1, 29], the model was
    rejected: 'declared with shape [2, 1, 1], but the model computes [2, 1]'). Fuzz seed
    842465."""
    c = numpy_helper.from_array(np.random.default_rng(1).standard_normal(shape, np.float32), "c")
    pooled = (*shape[:2], *[1] * (len(shape) - 2))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, pooled)
    model = _model([helper.make_node("GlobalMaxPool", ["c"], ["p"]),
                    helper.make_node("Add", ["p", "x"], ["y"])], [x], "y", [c])
    _check(model, {"x": np.random.default_rng(0).standard_normal(pooled, np.float32)})


def test_folded_scalar_stays_scalar() -> None:
    """A 0-d int64 result of folding (2 + 1) used as a gather index keeps rank 0."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 3])
    a = numpy_helper.from_array(np.array(2, np.int64), "a")
    c = numpy_helper.from_array(np.array(1, np.int64), "c")
    nodes = [helper.make_node("Add", ["a", "c"], ["i"]),
             helper.make_node("Gather", ["x", "i"], ["y"], axis=0)]
    model = _model(nodes, [x], "y", [a, c])
    _check(model, {"x": np.arange(15, dtype=np.float32).reshape(5, 3)})


@pytest.mark.parametrize("pool", [
    dict(op="MaxPool", kernel_shape=[1, 2], strides=[1, 2], dilations=[2, 2]),
    dict(op="ReduceMax", axes=[3], keepdims=1),
])
@pytest.mark.parametrize("cmp", ["GreaterOrEqual", "Less"])
def test_reduction_then_comparison(pool: dict, cmp: str) -> None:
    """A bool epilogue fused into a reduce kernel (3 channels: its scalar loop) got a buffer
    of bools to accumulate floats in: wrong masks, then heap corruption. Fuzz seed 53474."""
    attrs = {k: v for k, v in pool.items() if k != "op"}
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 13])
    t = numpy_helper.from_array(np.array(0.3, np.float32), "t")
    nodes = [helper.make_node(pool["op"], ["x"], ["p"], **attrs),
             helper.make_node(cmp, ["p", "t"], ["y"])]
    model = _model(nodes, [x], "y", [t])
    x = np.random.default_rng(53474).standard_normal((1, 3, 4, 13)).astype(np.float32)
    _check(model, {"x": x})
