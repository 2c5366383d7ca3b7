"""Whole models: the architectures the onnx wheel ships (light/*: constant 0.02 weights, so
also re-run with random weights against onnxruntime) and the pytorch-converted/-operator cases
whose ops sw2c supports."""

from __future__ import annotations

import glob
import os

import numpy as np
import onnx
import onnx.version_converter
import pytest
import sw2c
from onnx import numpy_helper
from sw2c.benchmarks.zoo import randomize_weights
from sw2c.tests.conformance import FOLDABLE, SUPPORTED

DATA = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")
LIGHT = sorted(os.path.basename(p)[len("light_"):-len(".onnx")]
               for p in glob.glob(os.path.join(DATA, "light", "light_*.onnx")))


def dummy_input(vi: onnx.ValueInfoProto) -> np.ndarray:
    """The input onnx's backend runner feeds the light models (arange / n)."""
    shape = tuple(d.dim_value or 1 for d in vi.type.tensor_type.shape.dim)
    n = int(np.prod(shape))
    return (np.arange(n).reshape(shape) / n).astype(np.float32)


def light_model(name: str) -> onnx.ModelProto:
    return onnx.load(os.path.join(DATA, "light", f"light_{name}.onnx"))


@pytest.mark.parametrize("name", LIGHT)
def test_light_model_matches_reference_output(name):
    model = light_model(name)
    inits = {t.name for t in model.graph.initializer}
    inputs = [vi for vi in model.graph.input if vi.name not in inits]
    feeds = {vi.name: dummy_input(vi) for vi in inputs}
    module = sw2c.compile(model, verify=False)
    got = module.run(feeds)
    expect = numpy_helper.to_array(onnx.load_tensor(
        os.path.join(DATA, "light", f"light_{name}_output_0.pb")))
    np.testing.assert_allclose(got[module.outputs[0][0]], expect, rtol=2e-3, atol=1e-5)


@pytest.mark.parametrize("name", LIGHT)
def test_light_model_with_random_weights_matches_onnxruntime(name):
    model = randomize_weights(light_model(name), seed=0)
    module = sw2c.compile(model, verify=True)  # raises VerificationError on disagreement
    assert module.report["verification_error"] < 1e-3


def converted_scope(model: onnx.ModelProto, inputs: list[np.ndarray]) -> str | None:
    """None when a pytorch-converted/-operator case is inside the fp32 static scope."""
    ops = {n.op_type for n in model.graph.node}
    if model.graph.doc_string == "legacy PRelu":
        return "opset-6 PRelu channel slope, which onnx's version converter does not translate"
    if not ops <= SUPPORTED | FOLDABLE:
        return "uses ops sw2c does not implement: " + ", ".join(sorted(ops - SUPPORTED - FOLDABLE))
    if any(x.dtype != np.float32 for x in inputs):
        return f"{', '.join(sorted({str(x.dtype) for x in inputs} - {'float32'}))} input data"
    for node in model.graph.node:
        modes = [a.s.decode() for a in node.attribute if a.name == "mode"]
        if node.op_type == "Pad" and modes and modes[0] != "constant":
            return f"Pad mode '{modes[0]}'"
    return None


def _load_case(case: str) -> tuple[onnx.ModelProto, list[np.ndarray], list[np.ndarray]]:
    model = onnx.load(os.path.join(case, "model.onnx"))
    if model.opset_import[0].version < 7:  # these were exported at opset 6; sw2c takes 7+
        legacy_prelu = any(n.op_type == "PRelu" for n in model.graph.node)
        model = onnx.version_converter.convert_version(model, 9)
        if legacy_prelu:  # opset 6 applied a [C] slope per channel; the converter keeps [C]
            model.graph.doc_string = "legacy PRelu"
    data = os.path.join(case, "test_data_set_0")
    inputs = [numpy_helper.to_array(onnx.load_tensor(p))
              for p in sorted(glob.glob(os.path.join(data, "input_*.pb")))]
    outputs = [numpy_helper.to_array(onnx.load_tensor(p))
               for p in sorted(glob.glob(os.path.join(data, "output_*.pb")))]
    return model, inputs, outputs


def _converted_cases() -> tuple[list[str], dict[str, str]]:
    cases, excluded = [], {}
    for kind in ("pytorch-converted", "pytorch-operator"):
        for d in sorted(glob.glob(os.path.join(DATA, kind, "test_*"))):
            reason = converted_scope(*_load_case(d)[:2])
            if reason is None:
                cases.append(d)
            else:
                excluded[os.path.basename(d)] = reason
    return cases, excluded


CONVERTED, CONVERTED_EXCLUDED = _converted_cases()


@pytest.mark.parametrize("case", CONVERTED, ids=[os.path.basename(c) for c in CONVERTED])
def test_pytorch_case(case):
    model, inputs, outputs = _load_case(case)
    inits = {t.name for t in model.graph.initializer}
    names = [vi.name for vi in model.graph.input if vi.name not in inits]
    feeds = dict(zip(names, inputs))
    module = sw2c.compile(model, verify=False, input_shapes={k: v.shape for k, v in feeds.items()})
    got = module.run(feeds)
    for (name, _, _), want in zip(module.outputs, outputs):
        np.testing.assert_allclose(got[name], want, rtol=1e-3, atol=1e-5)


def test_pytorch_scope_excludes_only_what_is_documented():
    assert len(CONVERTED) >= 90
    assert set(CONVERTED_EXCLUDED.values()) <= {
        "float64 input data", "int64 input data", "Pad mode 'reflect'", "Pad mode 'edge'",
        "uses ops sw2c does not implement: ConvTranspose", "uses ops sw2c does not implement: Elu",
        "uses ops sw2c does not implement: Selu", "uses ops sw2c does not implement: PRelu",
        "uses ops sw2c does not implement: Softplus", "uses ops sw2c does not implement: Tile",
        "uses ops sw2c does not implement: InstanceNormalization",
        "opset-6 PRelu channel slope, which onnx's version converter does not translate",
    }, CONVERTED_EXCLUDED
