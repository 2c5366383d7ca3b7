"""Hostile and broken models: every one is refused with a Sw2cError naming what is wrong, in
the API and in the CLI (one line on stderr, exit 1) — never a crash, a hang or a read outside
the model's folder."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
import sw2c
from onnx import TensorProto, helper, numpy_helper


def model(nodes, inits=(), shape=(1, 4)) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))
    graph = helper.make_graph(nodes, "hostile", [x], [y], list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20),
                                                   helper.make_opsetid("com.acme", 1)])


def weight(values=(1.0, 2.0, 3.0, 4.0)) -> TensorProto:
    return numpy_helper.from_array(np.array([values], np.float32), "w")


def external(tmp_path, location: str) -> str:
    """A model whose initializer's data is external, at ``location``; returns its path."""
    m = model([helper.make_node("Add", ["x", "w"], ["y"])], [weight()])
    t = m.graph.initializer[0]
    t.ClearField("raw_data")
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    for key, value in {"location": location, "offset": "0", "length": "16"}.items():
        entry = t.external_data.add()
        entry.key, entry.value = key, value
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    path = folder / "m.onnx"
    path.write_bytes(m.SerializeToString())
    return str(path)


def truncated_raw_data() -> onnx.ModelProto:
    w = weight()
    w.raw_data = w.raw_data[:8]
    return model([helper.make_node("Add", ["x", "w"], ["y"])], [w])


def absurd_constant() -> onnx.ModelProto:
    shape = helper.make_tensor("s", TensorProto.INT64, [2], [1 << 30, 1 << 30])
    return model([helper.make_node("ConstantOfShape", ["s"], ["c"]),
                  helper.make_node("Add", ["x", "c"], ["y"])], [shape])


CASES = {
    "cycle": (lambda: model([helper.make_node("Relu", ["z"], ["y"]),
                             helper.make_node("Relu", ["y"], ["z"])]), "topologically sorted"),
    "raw data shorter than dims": (truncated_raw_data, "raw_data size"),
    "shapes that do not broadcast": (
        lambda: model([helper.make_node("Add", ["x", "w"], ["y"])],
                      [numpy_helper.from_array(np.ones((3, 5), np.float32), "w")]),
        "do not broadcast"),
    "absurd constant": (absurd_constant, "memory limit"),
    "absurd input": (lambda: model([helper.make_node("Relu", ["x"], ["y"])], (),
                                   (1 << 31, 1 << 31)), "memory limit"),
    "unsupported op": (lambda: model([helper.make_node("NonZero", ["x"], ["y"], name="act")]),
                       "NonZero.*act"),
    "other domain": (lambda: model([helper.make_node("Foo", ["x"], ["y"], domain="com.acme",
                                                     name="f")]), "com.acme::Foo"),
}


@pytest.mark.parametrize("name", CASES)
def test_broken_models_raise_sw2c_errors(name):
    build, match = CASES[name]
    with pytest.raises(sw2c.Sw2cError, match=match):
        sw2c.compile(build())


def test_unsupported_op_error_names_op_domain_and_node():
    with pytest.raises(sw2c.UnsupportedOpError) as info:
        sw2c.compile(CASES["unsupported op"][0]())
    assert (info.value.op_type, info.value.domain, info.value.node) == ("NonZero", "ai.onnx", "act")


@pytest.mark.parametrize("content", [b"", b"\x00\x01garbage\xff" * 10, None])
def test_unreadable_files(tmp_path, content):
    path = tmp_path / "m.onnx"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(sw2c.ModelError, match="m.onnx"):
        sw2c.compile(str(path))


def test_truncated_file(tmp_path):
    data = model([helper.make_node("Relu", ["x"], ["y"])]).SerializeToString()
    path = tmp_path / "m.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(sw2c.ModelError):
        sw2c.compile(str(path))


@pytest.mark.parametrize("where", ["../secret.bin", "ABSOLUTE", "link.bin"])
def test_external_data_outside_the_model_folder_is_never_opened(tmp_path, where):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.ones(4, np.float32).tobytes())
    if where == "ABSOLUTE":
        where = str(secret)
    path = external(tmp_path, where)
    if where == "link.bin":
        os.symlink(secret, os.path.join(os.path.dirname(path), "link.bin"))
    with pytest.raises(sw2c.ModelError, match="m.onnx"):
        sw2c.compile(path)


def test_external_data_inside_the_folder_loads(tmp_path):
    path = external(tmp_path, "w.bin")
    with open(os.path.join(os.path.dirname(path), "w.bin"), "wb") as f:
        f.write(np.array([1, 2, 3, 4], np.float32).tobytes())
    module = sw2c.compile(path)
    x = np.zeros((1, 4), np.float32)
    np.testing.assert_array_equal(module(x), [[1, 2, 3, 4]])


def test_cli_prints_one_line_and_exits_1(tmp_path):
    path = tmp_path / "bad.onnx"
    path.write_bytes(b"not a model")
    proc = subprocess.run([sys.executable, "-m", "sw2c.cli", str(path), "-o", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sw2c: error:") and "bad.onnx" in lines[0]


def test_cli_usage_error_exits_2():
    proc = subprocess.run([sys.executable, "-m", "sw2c.cli", "--no-such-flag"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
