"""Shared models for the asic tests: the shipped digits CNN and a model using every int8 kind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper
from sw2c.tests.onnx_util import make_model

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DIGITS = EXAMPLES / "digits_cnn.onnx"


def digits_data() -> dict[str, np.ndarray]:
    """calib [256,1,8,8], test [360,1,8,8] float32 in [0, 1], labels [360]."""
    d = np.load(EXAMPLES / "digits_data.npz")
    scale = d["scale"]
    return {"calib": d["calib_images"].astype(np.float32) * scale,
            "test": d["test_images"].astype(np.float32) * scale, "labels": d["test_labels"]}


def every_kind(seed: int = 0) -> onnx.ModelProto:
    """Conv+ReLU, depthwise (stride 2, pads), average pool with pads (count_include_pad=0),
    max pool, a residual Add, a Mul of two tensors, Sigmoid and a per-channel affine (tables),
    Concat of differently scaled inputs, Slice, Pad, global average pool, a dense layer."""
    rng = np.random.default_rng(seed)

    def w(*shape: int, s: float = 0.3) -> np.ndarray:
        return (rng.standard_normal(shape) * s).astype(np.float32)

    inits = {
        "w1": w(8, 3, 3, 3), "b1": w(8), "wd": w(8, 1, 3, 3), "bd": w(8),
        "ch": (rng.random((1, 8, 1, 1)) + 0.5).astype(np.float32), "chb": w(1, 8, 1, 1),
        "starts": np.array([0, 4, 1, 1], np.int64), "ends": np.array([1, 12, 4, 4], np.int64),
        "pads": np.array([0, 0, 1, 1, 0, 0, 0, 0], np.int64), "wf": w(8, 5),
        "shape": np.array([1, 8], np.int64),
    }
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w1", "b1"], ["c1"], name="conv", pads=[1, 1, 1, 1]),
        n("Relu", ["c1"], ["r1"], name="relu"),
        n("Conv", ["r1", "wd", "bd"], ["d1"], name="depthwise", group=8, strides=[2, 2],
          pads=[1, 1, 1, 1]),
        n("AveragePool", ["r1"], ["a1"], name="avgpool", kernel_shape=[3, 3], strides=[2, 2],
          pads=[1, 1, 1, 1], count_include_pad=0),
        n("Add", ["d1", "a1"], ["s1"], name="residual"),
        n("Sigmoid", ["s1"], ["g1"], name="sigmoid"),
        n("Mul", ["a1", "g1"], ["m1"], name="gate"),
        n("MaxPool", ["r1"], ["p1"], name="maxpool", kernel_shape=[2, 2], strides=[2, 2]),
        n("Mul", ["p1", "ch"], ["t1"], name="channel_scale"),
        n("Add", ["t1", "chb"], ["t2"], name="channel_shift"),
        n("Concat", ["m1", "t2"], ["cat"], name="concat", axis=1),
        n("Slice", ["cat", "starts", "ends"], ["sl"], name="slice"),
        n("Pad", ["sl", "pads"], ["pd"], name="pad"),
        n("GlobalAveragePool", ["pd"], ["gap"], name="gap"),
        n("Reshape", ["gap", "shape"], ["flat"], name="flatten"),
        n("MatMul", ["flat", "wf"], ["y"], name="dense"),
    ]
    model = make_model(nodes, {"x": [1, 3, 8, 8]}, ["y"], inits)
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5]))
    return model
