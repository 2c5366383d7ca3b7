"""Benchmark zoo builders produce valid, runnable models; the timing harness returns sane data."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
import sw2c
from sw2c.benchmarks import harness, zoo

SMALL = [name for name in zoo.ZOO if name not in zoo.LARGE]


@pytest.mark.parametrize("name", SMALL)
def test_zoo_model_is_valid_and_runs_in_onnxruntime(name: str) -> None:
    model = zoo.get(name)
    onnx.checker.check_model(model, full_check=True)
    session = harness.ort_session(model, threads=1)
    outputs = session.run(None, harness.random_feeds(session, seed=0))
    assert outputs and all(np.isfinite(o).all() for o in outputs)
    assert float(np.abs(outputs[0]).max()) < 1e3  # activations stay O(1)


# models of the CPU speed table (issue 11) compiled nowhere else; the LARGE ones (20-30 s to
# compile: light_inception_v1, light_densenet121) are left to benchmarks/run.py
COMPILED = ["mobilenet_v3", "efficientnet", "light_shufflenet"]


@pytest.mark.parametrize("name", COMPILED)
def test_zoo_model_compiles_and_matches_onnxruntime(name: str) -> None:
    module = sw2c.compile(zoo.get(name), verify=True)  # raises VerificationError on mismatch
    assert module.report["verification_error"] < 1e-3
    assert module.report["kernels"] > 10


def test_se_models_have_their_activations_and_gates() -> None:
    ops = {n: {x.op_type for x in zoo.get(n).graph.node} for n in ("efficientnet", "mobilenet_v3")}
    se = {"GlobalAveragePool", "Conv", "Mul"}
    assert se | {"Sigmoid"} <= ops["efficientnet"]  # SiLU = x * Sigmoid(x), SE gate Sigmoid
    assert se | {"HardSwish", "HardSigmoid", "Relu"} <= ops["mobilenet_v3"]
    assert "HardSwish" not in ops["efficientnet"]


@pytest.mark.parametrize("name", zoo.FAMILIES)
def test_family_models_are_in_the_zoo(name: str) -> None:
    for exporter in ("", ".dynamo"):
        model = zoo.get(name + exporter)
        assert model.graph.node and f"{name}{exporter}" in zoo.available()


def test_builders_are_seeded() -> None:
    a, b, c = zoo.mlp(seed=1), zoo.mlp(seed=1), zoo.mlp(seed=2)
    assert a.SerializeToString() == b.SerializeToString()
    assert a.SerializeToString() != c.SerializeToString()


def test_hand_built_models_are_exporter_style_opset_17() -> None:
    model = zoo.mobilenet_v2()
    assert model.opset_import[0].version == zoo.OPSET
    ops = {n.op_type for n in model.graph.node}
    assert {"Conv", "BatchNormalization", "Clip", "Add", "GlobalAveragePool", "Flatten",
            "Gemm"} <= ops
    assert any(n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute)
               for n in model.graph.node)


def test_randomize_weights_replaces_constant_of_shape_stubs() -> None:
    raw = onnx.load(zoo.light_path("squeezenet"))
    model = zoo.randomize_weights(raw, seed=0)
    assert not any(n.op_type == "ConstantOfShape" for n in model.graph.node)
    assert [i.name for i in model.graph.input] == ["data_0"]
    conv_w = next(t for t in model.graph.initializer if t.name == "conv1_w_0")
    w = onnx.numpy_helper.to_array(conv_w)
    assert w.shape == (64, 3, 3, 3) and 0.1 < w.std() < 0.5  # He: sqrt(2 / 27) = 0.27


def test_get_rejects_unknown_names() -> None:
    with pytest.raises(KeyError):
        zoo.get("no_such_model")


def test_measure_returns_sane_fields() -> None:
    result = harness.measure(lambda: None, lambda: sum(range(200)), min_seconds=0.02,
                             rounds=3, block_seconds=0.005, warmup_seconds=0.01)
    assert result["rounds"] >= 3
    for engine in ("sw2c", "ort"):
        s = result[engine]
        assert s["calls"] >= 3
        assert 0 < s["min"] <= s["median"] <= s["p90"]
        assert s["mean"] > 0
    assert math.isclose(result["ratio"], result["sw2c"]["median"] / result["ort"]["median"])


def test_random_feeds_from_signature() -> None:
    feeds = harness.random_feeds([("x", (1, 3), np.float32), ("n", ("batch", 2), "int64")], 0)
    assert feeds["x"].shape == (1, 3) and feeds["x"].dtype == np.float32
    assert feeds["n"].shape == (1, 2) and feeds["n"].dtype == np.int64


def test_throughput_scales_peak_with_threads() -> None:
    gflops, pct1 = harness.throughput(1e9, 0.01, threads=1)
    _, pct2 = harness.throughput(1e9, 0.01, threads=2)
    assert gflops == pytest.approx(100.0)
    assert pct1 == pytest.approx(100.0 * 100.0 / harness.peak_gflops_per_core())
    assert pct2 == pytest.approx(pct1 / 2)


def test_measured_peak_is_a_vector_fma_rate() -> None:
    """The FMA loop runs at vector speed: more than one scalar FMA per nanosecond (2 GFLOP/s),
    whatever the host; the figure is measured once per process."""
    from sw2c.benchmarks.fma_peak import CHAINS

    assert CHAINS >= 8 and harness.peak_gflops_per_core() > 2.0
    assert harness.peak_gflops_per_core() is harness.peak_gflops_per_core()


def test_randomize_weights_keeps_non_weight_constants() -> None:
    model = zoo.mobilenet_v2(width=0.25, last_channels=64, classes=10)
    redrawn = zoo.randomize_weights(model, seed=1)
    before = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    after = {t.name: onnx.numpy_helper.to_array(t) for t in redrawn.graph.initializer}
    assert before.keys() == after.keys()
    assert after["clip_max"] == 6.0 and after["clip_min"] == 0.0
    assert not np.array_equal(before["features.0.weight"], after["features.0.weight"])
