"""Digits read as sequences (issue 12): each 8x8 image is 8 rows of 8 pixels, read by an LSTM or
by a small transformer encoder, then a dense readout to the 10 classes.

Trained in about a second, without backpropagation: the recurrent / attention weights are
random (a fixed seed; an echo-state or random-feature model) and the readout, which sees every
step's features, is fit by ridge regression on the training images. The training images are the
shipped calibration images (examples/digits_data.npz, unlabeled) labeled by the shipped digits
CNN (99.2% top-1) and shifted by one pixel in each direction (x5 data); the held-out split is the
360 labeled test images. (scikit-learn, whose digits these are, is not a dependency.)
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from .asic_models import DIGITS, digits_data

ROWS = COLS = 8
HIDDEN = 32  # LSTM state, transformer width
RIDGE = 1e-2  # relative to the features' mean energy


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _shifted(images: np.ndarray) -> np.ndarray:
    """[N, 8, 8] -> [5N, 8, 8]: the images and their one-pixel shifts (zero filled)."""
    out = [images]
    for axis, step in ((1, 1), (1, -1), (2, 1), (2, -1)):
        s = np.roll(images, step, axis=axis)
        edge = [slice(None)] * 3
        edge[axis] = 0 if step > 0 else -1
        s[tuple(edge)] = 0
        out.append(s)
    return np.concatenate(out)


def digits_sequences() -> dict[str, np.ndarray]:
    """train [1280, 8, 8] with teacher labels, calib [256, 8, 8] (the training images before
    the shifts), test [360, 8, 8] and its labels; float32 pixels in [0, 1]."""
    d = digits_data()
    teacher = _session(onnx.load(DIGITS))
    name = teacher.get_inputs()[0].name
    labels = teacher.run(None, {name: d["calib"]})[0].argmax(axis=-1)
    train = _shifted(d["calib"][:, 0])
    return {"train": train, "train_labels": np.tile(labels, 5),
            "calib": d["calib"].reshape(-1, ROWS, COLS),
            "test": d["test"].reshape(-1, ROWS, COLS), "labels": d["labels"]}


class _Graph:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, np.ndarray] = {}

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits[name] = np.asarray(value)
        return name

    def weight(self, name: str, *shape: int, std: float) -> str:
        return self.const(name, (self.rng.standard_normal(shape) * std).astype(np.float32))

    def op(self, kind: str, ins: list[str], **attrs) -> str:
        out = f"{kind.lower()}{len(self.nodes)}"
        self.nodes.append(helper.make_node(kind, ins, [out], name=out, **attrs))
        return out

    def model(self, out: str, batch: int, width: int, name: str) -> onnx.ModelProto:
        self.nodes[-1].output[0] = "y"
        self.nodes[-1].name = "y"
        graph = helper.make_graph(
            self.nodes, name,
            [helper.make_tensor_value_info("rows", TensorProto.FLOAT, [batch, ROWS, COLS])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, width])],
            [numpy_helper.from_array(v, k) for k, v in self.inits.items()])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _lstm_body(g: _Graph, batch: int) -> str:
    """rows [B, 8, 8] -> an LSTM over the 8 rows -> every step's hidden state [B, 8 * H]."""
    x = g.op("Transpose", ["rows"], perm=[1, 0, 2])  # [T, B, I]
    w = g.weight("W", 1, 4 * HIDDEN, COLS, std=1.0)
    r = g.weight("R", 1, 4 * HIDDEN, HIDDEN, std=0.6 / np.sqrt(HIDDEN))
    b = g.weight("B", 1, 8 * HIDDEN, std=0.2)
    y = g.op("LSTM", [x, w, r, b], hidden_size=HIDDEN)  # [T, 1, B, H]
    y = g.op("Transpose", [y], perm=[2, 1, 0, 3])  # [B, 1, T, H]
    return g.op("Reshape", [y, g.const("flat", np.array([batch, ROWS * HIDDEN], np.int64))])


def _transformer_body(g: _Graph, batch: int) -> str:
    """rows [B, 8, 8] -> row embedding + positions -> a pre-norm encoder layer (one attention
    head, GELU MLP) -> LayerNorm -> [B, 8 * D]."""
    d = HIDDEN

    def ln(x: str, k: str) -> str:
        return g.op("LayerNormalization", [x, g.const(f"ln{k}_gamma", np.ones(d, np.float32)),
                                           g.const(f"ln{k}_beta", np.zeros(d, np.float32))],
                    axis=-1, epsilon=1e-5)

    h = g.op("MatMul", ["rows", g.weight("we", COLS, d, std=1.0)])
    h = g.op("Add", [h, g.weight("pos", ROWS, d, std=0.5)])
    a = ln(h, "1")
    q, k, v = (g.op("MatMul", [a, g.weight(f"w{n}", d, d, std=2 / np.sqrt(d))]) for n in "qkv")
    s = g.op("MatMul", [q, g.op("Transpose", [k], perm=[0, 2, 1])])
    s = g.op("Mul", [s, g.const("scale", np.array(d ** -0.5, np.float32))])
    ctx = g.op("MatMul", [g.op("Softmax", [s], axis=-1), v])
    h = g.op("Add", [h, g.op("MatMul", [ctx, g.weight("wo", d, d, std=d ** -0.5)])])
    m = g.op("Add", [g.op("MatMul", [ln(h, "2"), g.weight("w1", d, 2 * d, std=d ** -0.5)]),
                     g.weight("b1", 2 * d, std=0.1)])
    gelu = g.op("Mul", [g.op("Mul", [m, g.op("Add", [g.op("Erf", [g.op("Mul", [
        m, g.const("rsqrt2", np.array(2 ** -0.5, np.float32))])]),
        g.const("one", np.array(1.0, np.float32))])]), g.const("half", np.array(0.5, np.float32))])
    h = g.op("Add", [h, g.op("MatMul", [gelu, g.weight("w2", 2 * d, d, std=(2 * d) ** -0.5)])])
    return g.op("Reshape", [ln(h, "3"), g.const("flat", np.array([batch, ROWS * d], np.int64))])


BODIES = {"lstm": _lstm_body, "transformer": _transformer_body}


def _ridge(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The readout [F, 10] and bias [10] minimizing ||[F 1] W - onehot||^2 + ridge ||W||^2."""
    f = np.concatenate([features, np.ones((len(features), 1))], axis=1).astype(np.float64)
    target = np.eye(10)[labels]
    gram = f.T @ f
    lam = RIDGE * np.trace(gram) / len(gram)
    w = np.linalg.solve(gram + lam * np.eye(len(gram)), f.T @ target)
    return w[:-1].astype(np.float32), w[-1].astype(np.float32)


def trained(kind: str, data: dict[str, np.ndarray], seed: int = 0) -> onnx.ModelProto:
    """The ``kind`` ("lstm" or "transformer") classifier, rows [1, 8, 8] -> logits [1, 10]:
    its random body run on the training images in onnxruntime, its readout fit on that."""
    train = data["train"]
    g = _Graph(seed)
    body = g.model(BODIES[kind](g, len(train)), len(train), ROWS * HIDDEN, kind)
    features = _session(body).run(None, {"rows": train})[0]
    w, b = _ridge(features, data["train_labels"])
    g = _Graph(seed)  # the same random weights, batch 1, with the readout
    x = BODIES[kind](g, 1)
    g.op("Add", [g.op("MatMul", [x, g.const("readout", w)]), g.const("readout_bias", b)])
    return g.model("y", 1, 10, f"digits_{kind}")


def top1(predict, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy (%) of ``predict(rows [1, 8, 8]) -> logits`` over the images."""
    hits = sum(int(np.argmax(predict(x.reshape(1, ROWS, COLS))) == y)
               for x, y in zip(images, labels))
    return 100.0 * hits / len(labels)
