"""Models joined into one program: checked against onnxruntime on the composed model, with
fewer kernels than the parts (fusion crosses the seam) and no more arena than their sum."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.utils
import pytest
import sw2c
from onnx import TensorProto, compose, helper, numpy_helper
from sw2c.benchmarks.zoo import get
from sw2c.runtime.verify import reference_session

RNG = np.random.default_rng(0)


def tensor(name: str, *shape: int, scale: float = 0.3) -> TensorProto:
    return numpy_helper.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name)


def value(name: str, *shape: int) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def backbone() -> onnx.ModelProto:
    """A bare conv (no activation): what a feature extractor exported alone ends with."""
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])], "backbone",
        [value("x", 1, 3, 8, 8)], [value("y", 1, 8, 8, 8)], [tensor("w", 8, 3, 3, 3),
                                                             tensor("b", 8)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def head(channels: int = 8) -> onnx.ModelProto:
    """BatchNorm + ReLU first (they fold into the backbone's conv), then conv, pool, linear."""
    var = numpy_helper.from_array(RNG.uniform(0.5, 2, channels).astype(np.float32), "var")
    nodes = [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "var"], ["n"]),
             helper.make_node("Relu", ["n"], ["r"]),
             helper.make_node("Conv", ["r", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["c"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fc", "fb"], ["y"], transB=1)]
    inits = [tensor("s", channels), tensor("b", channels), tensor("m", channels), var,
             tensor("w", 16, channels, 3, 3), tensor("fc", 5, 16), tensor("fb", 5)]
    graph = helper.make_graph(nodes, "head", [value("x", 1, channels, 8, 8)], [value("y", 1, 5)],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def compare_with_composed(module: sw2c.Module, composed: onnx.ModelProto) -> None:
    feeds = {n: RNG.standard_normal(s).astype(np.float32) for n, s, _ in module.inputs}
    ref = reference_session(composed).run(None, feeds)
    for (name, _, _), want in zip(module.outputs, ref):
        np.testing.assert_allclose(module.run(feeds)[name], want, rtol=1e-4, atol=1e-4)


def test_join_fuses_across_the_seam():
    a, b = backbone(), head()
    joined = sw2c.compile([a, b])  # names collide ("x", "y", "w", "b"): made unique
    parts = [sw2c.compile(a), sw2c.compile(b)]
    composed = compose.merge_models(a, compose.add_prefix(b, "m1."), io_map=[("y", "m1.x")])
    compare_with_composed(joined, composed)
    assert joined.report["kernels"] < sum(p.report["kernels"] for p in parts)
    assert joined.report["arena_bytes"] <= sum(p.report["arena_bytes"] for p in parts)


def test_resnet_split_at_a_residual_boundary_joins_back(tmp_path):
    full = tmp_path / "resnet18.onnx"
    onnx.save(get("resnet18"), full)
    seam = "/layer2.1/Add_output_0"  # a residual sum, before its ReLU
    onnx.utils.extract_model(str(full), str(tmp_path / "a.onnx"), ["input"], [seam])
    onnx.utils.extract_model(str(full), str(tmp_path / "b.onnx"), [seam], ["output"])
    joined = sw2c.compile([str(tmp_path / "a.onnx"), str(tmp_path / "b.onnx")])
    compare_with_composed(joined, onnx.load(full))
    parts = [sw2c.compile(str(tmp_path / p)) for p in ("a.onnx", "b.onnx")]
    assert joined.report["kernels"] < sum(p.report["kernels"] for p in parts)
    assert joined.report["arena_bytes"] <= sum(p.report["arena_bytes"] for p in parts)


def test_seam_shapes_must_agree():
    with pytest.raises(sw2c.ModelError, match="'y'.*'m1.x'|'y'.*'x'"):
        sw2c.compile([backbone(), head(channels=4)])


def test_explicit_joins_and_counts():
    with pytest.raises(sw2c.ModelError, match="no earlier model produces"):
        sw2c.compile([backbone(), head()], joins=[("nope", "x")])
    with pytest.raises(sw2c.ModelError, match="input 'nope', which no later model takes"):
        sw2c.compile([backbone(), head()], joins=[("y", "nope")])  # was wired in order, silently
    module = sw2c.compile([backbone(), head()], joins=[("y", "x")])
    assert [n for n, _, _ in module.inputs] == ["x"]


def test_asic_chain_is_calibrated_end_to_end():
    """On the int8 target the joined chain is calibrated as one program (the seam's range
    comes from the backbone run on the user's inputs) and still fuses across the seam."""
    a, b = backbone(), head()
    calib = [RNG.standard_normal((1, 3, 8, 8)).astype(np.float32) for _ in range(8)]
    joined = sw2c.compile([a, b], target="asic", calibration=calib)  # verify: bit-exact
    seam = [reference_session(a).run(None, {"x": x})[0] for x in calib]
    parts = [sw2c.compile(a, target="asic", calibration=calib),
             sw2c.compile(b, target="asic", calibration=seam)]
    assert joined.report["kernels"] < sum(p.report["kernels"] for p in parts)
    assert joined.report["arena_bytes"] <= sum(p.report["arena_bytes"] for p in parts)
    composed = compose.merge_models(a, compose.add_prefix(b, "m1."), io_map=[("y", "m1.x")])
    want = np.concatenate([reference_session(composed).run(None, {"x": x})[0] for x in calib])
    got = np.concatenate([joined(x) for x in calib])
    assert 10 * np.log10(np.sum(want ** 2) / np.sum((got - want) ** 2)) > 25
