"""Train digits-as-sequence models (each 8x8 digit read as 8 rows of 8 pixels) with PyTorch,
then write them as small ONNX files for the asic precision tests (issue 12).

    pip install torch==2.13.0 scikit-learn   # this script only; not dependencies of sw2c
    python examples/train_digits_sequence.py

The data is train_digits.py's: scikit-learn's digits split 80/20 (stratified, random_state=0),
pixels / 16; the 360 held-out images are digits_data.npz's test images (checked). Training
augments every epoch by shifting each image up to one pixel in each direction (zero fill),
with softmax cross-entropy and AdamW; deterministic (fixed seeds, one thread, deterministic
algorithms).

Models (input "rows" [1, 8, 8] float32, output "y" [1, 10] logits, opset 17):

- digits_transformer.onnx: row embedding (MatMul 8 -> 32) + learned positions, one pre-norm
  encoder layer (LayerNormalization, one attention head: MatMul q/k/v, q k^T / sqrt(32),
  Softmax, MatMul, output projection; LayerNorm, MLP 32 -> 64 -> 32 with erf GELU), a final
  LayerNorm, the 8 tokens flattened into a dense readout 256 -> 10.
- digits_lstm.onnx / digits_gru.onnx: an ONNX LSTM / GRU (hidden 32) over the 8 rows, every
  step's hidden state flattened into a dense readout 256 -> 10.

The graphs are written node by node (not torch.onnx.export) so they use exactly the ops the
asic lowering matches; onnxruntime then checks each file against the torch model.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
DATA_PATH = HERE / "digits_data.npz"

ROWS = COLS = 8
WIDTH = 32  # transformer width, recurrent state
EPOCHS = 60
BATCH = 64
LR = 3e-3
WEIGHT_DECAY = 1e-4
SEED = 0

Arrays = dict[str, np.ndarray]


# ----------------------------------------------------------------------------- data


def load_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """train_digits.py's split as float32 rows [n, 8, 8] in [0, 1] and int64 labels [n]:
    (train_rows, train_labels, test_rows, test_labels)."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        sys.exit("train_digits_sequence.py needs scikit-learn for the digits dataset (it is "
                 "not a dependency of sw2c): pip install scikit-learn")
    digits = load_digits()
    images = digits.images.astype(np.uint8)
    labels = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(images, labels, test_size=0.2, random_state=0,
                                              stratify=labels)
    shipped = np.load(DATA_PATH)
    if not np.array_equal(shipped["test_images"][:, 0], x_te):
        sys.exit(f"the split differs from {DATA_PATH.name}'s test images")
    scale = np.float32(1.0 / 16.0)
    return x_tr.astype(np.float32) * scale, y_tr, x_te.astype(np.float32) * scale, y_te


def shift(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each image [8, 8] moved by its own random (dy, dx) in {-1, 0, 1}^2, zero filled."""
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1)))
    dy, dx = rng.integers(0, 3, (2, len(images)))
    out = np.empty_like(images)
    for k in range(len(images)):
        out[k] = padded[k, dy[k]:dy[k] + ROWS, dx[k]:dx[k] + COLS]
    return out


# ----------------------------------------------------------------------------- models


def torch_models():
    """{name: constructor} of the torch modules (imported here: torch is optional)."""
    import torch
    from torch import nn

    class Transformer(nn.Module):
        """Row embedding + positions, one pre-norm encoder layer, flattened readout."""

        def __init__(self) -> None:
            super().__init__()
            d = WIDTH
            self.embed = nn.Linear(COLS, d, bias=False)
            self.pos = nn.Parameter(torch.randn(ROWS, d) * 0.1)
            self.ln1, self.ln2, self.ln3 = (nn.LayerNorm(d) for _ in range(3))
            self.q, self.k, self.v, self.o = (nn.Linear(d, d, bias=False) for _ in range(4))
            self.fc1 = nn.Linear(d, 2 * d)
            self.fc2 = nn.Linear(2 * d, d, bias=False)
            self.readout = nn.Linear(ROWS * d, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.embed(x) + self.pos
            a = self.ln1(h)
            s = self.q(a) @ self.k(a).transpose(1, 2) * WIDTH ** -0.5
            h = h + self.o(torch.softmax(s, dim=-1) @ self.v(a))
            h = h + self.fc2(nn.functional.gelu(self.fc1(self.ln2(h))))
            return self.readout(self.ln3(h).flatten(1))

    class Recurrent(nn.Module):
        """An LSTM or GRU over the rows, every step's state flattened into the readout."""

        def __init__(self, cell: type[nn.Module]) -> None:
            super().__init__()
            self.rnn = cell(COLS, WIDTH, batch_first=True)
            self.readout = nn.Linear(ROWS * WIDTH, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.readout(self.rnn(x)[0].flatten(1))

    return {"transformer": Transformer, "lstm": lambda: Recurrent(nn.LSTM),
            "gru": lambda: Recurrent(nn.GRU)}


def train(name: str, x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray,
          y_te: np.ndarray):
    """Minibatch AdamW with a cosine learning rate; prints test accuracy now and then."""
    import torch

    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    model = torch_models()[name]()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    steps = EPOCHS * -(-len(x_tr) // BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, LR, total_steps=steps)
    labels = torch.from_numpy(y_tr)
    for epoch in range(1, EPOCHS + 1):
        model.train()
        x = torch.from_numpy(shift(x_tr, rng))
        order = torch.from_numpy(rng.permutation(len(x)))
        losses = []
        for start in range(0, len(x), BATCH):
            idx = order[start:start + BATCH]
            loss = torch.nn.functional.cross_entropy(model(x[idx]), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        if epoch % 10 == 0 or epoch == 1:
            print(f"{name} epoch {epoch:3d}  loss {np.mean(losses):.4f}  "
                  f"test {accuracy(model, x_te, y_te):.4f}")
    return model.eval()


def accuracy(model, images: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows [n, 8, 8] the torch model classifies correctly."""
    import torch

    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(images)).numpy()
    return float((logits.argmax(axis=1) == labels).mean())


def weights(model) -> Arrays:
    """The torch module's parameters as float32 numpy arrays by name."""
    return {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}


# ----------------------------------------------------------------------------- export


class Graph:
    """An ONNX graph written node by node, nodes named after their outputs."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: Arrays = {}

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits[name] = np.ascontiguousarray(value)
        return name

    def op(self, kind: str, ins: list[str], out: str = "", **attrs) -> str:
        out = out or f"{kind.lower()}{len(self.nodes)}"
        self.nodes.append(helper.make_node(kind, ins, [out], name=out, **attrs))
        return out

    def dense(self, x: str, w: np.ndarray, b: np.ndarray | None, name: str,
              out: str = "") -> str:
        """x @ w.T (+ b): a torch Linear as MatMul (+ Add)."""
        y = self.op("MatMul", [x, self.const(f"{name}_w", w.T)], "" if b is not None else out)
        return y if b is None else self.op("Add", [y, self.const(f"{name}_b", b)], out)

    def model(self, name: str) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, name,
            [helper.make_tensor_value_info("rows", TensorProto.FLOAT, [1, ROWS, COLS])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
            [numpy_helper.from_array(v, k) for k, v in self.inits.items()])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                  producer_name="sw2c examples/train_digits_sequence.py")
        model.ir_version = 8
        onnx.checker.check_model(model, full_check=True)
        return model


def transformer_onnx(w: Arrays) -> onnx.ModelProto:
    """The trained transformer as MatMul / LayerNormalization / Softmax / Erf nodes."""
    g = Graph()

    def ln(x: str, k: str) -> str:
        return g.op("LayerNormalization", [x, g.const(f"ln{k}_gamma", w[f"ln{k}.weight"]),
                                           g.const(f"ln{k}_beta", w[f"ln{k}.bias"])],
                    axis=-1, epsilon=1e-5)

    h = g.op("Add", [g.dense("rows", w["embed.weight"], None, "embed"), g.const("pos", w["pos"])])
    a = ln(h, "1")
    q, k, v = (g.dense(a, w[f"{n}.weight"], None, n) for n in "qkv")
    s = g.op("MatMul", [q, g.op("Transpose", [k], perm=[0, 2, 1])])
    s = g.op("Mul", [s, g.const("scale", np.array(WIDTH ** -0.5, np.float32))])
    ctx = g.op("MatMul", [g.op("Softmax", [s], axis=-1), v])
    h = g.op("Add", [h, g.dense(ctx, w["o.weight"], None, "o")])
    m = g.dense(ln(h, "2"), w["fc1.weight"], w["fc1.bias"], "fc1")
    erf = g.op("Erf", [g.op("Mul", [m, g.const("rsqrt2", np.array(2 ** -0.5, np.float32))])])
    gelu = g.op("Mul", [g.op("Mul", [m, g.op("Add", [erf, g.const(
        "one", np.array(1.0, np.float32))])]), g.const("half", np.array(0.5, np.float32))])
    h = g.op("Add", [h, g.dense(gelu, w["fc2.weight"], None, "fc2")])
    flat = g.op("Reshape", [ln(h, "3"), g.const("flat", np.array([1, ROWS * WIDTH], np.int64))])
    g.dense(flat, w["readout.weight"], w["readout.bias"], "readout", out="y")
    return g.model("digits_transformer")


# torch's gate blocks (LSTM i f g o, GRU r z n) in ONNX's order (LSTM i o f c, GRU z r h)
GATES = {"lstm": [0, 3, 1, 2], "gru": [1, 0, 2]}


def recurrent_onnx(kind: str, w: Arrays) -> onnx.ModelProto:
    """The trained LSTM / GRU as one ONNX LSTM / GRU node (a GRU with linear_before_reset=1,
    torch's form) over the rows transposed to [T, B, I]."""
    def onnx_gates(a: np.ndarray) -> np.ndarray:
        blocks = np.split(a, len(GATES[kind]))
        return np.concatenate([blocks[i] for i in GATES[kind]])[None]

    g = Graph()
    x = g.op("Transpose", ["rows"], perm=[1, 0, 2])  # [T, B, I]
    ins = [x, g.const("W", onnx_gates(w["rnn.weight_ih_l0"])),
           g.const("R", onnx_gates(w["rnn.weight_hh_l0"])),
           g.const("B", np.concatenate([onnx_gates(w["rnn.bias_ih_l0"]),
                                        onnx_gates(w["rnn.bias_hh_l0"])], axis=1))]
    extra = {"linear_before_reset": 1} if kind == "gru" else {}
    y = g.op(kind.upper(), ins, hidden_size=WIDTH, **extra)  # [T, 1, B, H]
    y = g.op("Transpose", [y], perm=[2, 1, 0, 3])  # [B, 1, T, H]
    flat = g.op("Reshape", [y, g.const("flat", np.array([1, ROWS * WIDTH], np.int64))])
    g.dense(flat, w["readout.weight"], w["readout.bias"], "readout", out="y")
    return g.model(f"digits_{kind}")


def onnx_logits(model: onnx.ModelProto, images: np.ndarray) -> np.ndarray:
    """onnxruntime's logits [n, 10] of the batch-1 model, one image at a time."""
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {"rows": x[None]})[0] for x in images])


def main() -> int:
    """Train each model, export it, and check the ONNX file against torch."""
    import torch

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    x_tr, y_tr, x_te, y_te = load_data()
    print(f"train {len(x_tr)}  test {len(x_te)}")
    for name in sys.argv[1:] or ["transformer", "lstm", "gru"]:
        started = time.perf_counter()
        model = train(name, x_tr, y_tr, x_te, y_te)
        acc = accuracy(model, x_te, y_te)
        w = weights(model)
        exported = transformer_onnx(w) if name == "transformer" else recurrent_onnx(name, w)
        path = HERE / f"digits_{name}.onnx"
        onnx.save(exported, path)
        with torch.no_grad():
            want = model(torch.from_numpy(x_te)).numpy()
        got = onnx_logits(exported, x_te)
        ort_acc = float((got.argmax(axis=1) == y_te).mean())
        print(f"{name}: test {acc:.4f}, onnxruntime {ort_acc:.4f} (max |logit diff| "
              f"{np.abs(got - want).max():.2e}); wrote {path.name} "
              f"({path.stat().st_size / 1024:.1f} KiB, {time.perf_counter() - started:.0f} s)")
        if ort_acc != acc or np.abs(got - want).max() > 1e-3:
            print(f"error: {path.name} disagrees with the torch model", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
