"""Train a small CNN on scikit-learn's 8x8 digits with plain numpy, then export it to ONNX.

    pip install scikit-learn   # needed by this script only; not a dependency of sw2c
    python examples/train_digits.py

The forward and backward passes are written by hand (convolutions via im2col), trained with
softmax cross-entropy and Adam, and fully deterministic (fixed split, ``default_rng(0)``).

Model (NCHW, input "input" [N, 1, 8, 8] float32 = pixel / 16, output "logits" [N, 10]):

    Conv(1->8, 3x3, pad 1) -> Relu -> MaxPool(2x2, stride 2)
    -> Conv(8->16, 3x3, pad 1) -> Relu -> Flatten -> Gemm(256 -> 10)

Writes next to this script:

- digits_cnn.onnx: the trained model (opset 17, no Softmax; argmax the logits)
- digits_data.npz: ``test_images`` uint8 [360, 1, 8, 8] (raw 0..16), ``test_labels`` uint8
  [360], ``calib_images`` uint8 [256, 1, 8, 8] (the first 256 training images) and ``scale``
  (float32 1/16); feed the model ``images.astype(np.float32) * scale``.

Then it checks with onnxruntime that the exported model scores the same test accuracy as the
numpy one. To compile the result with sw2c:

    python -c "import sw2c; print(sw2c.compile('examples/digits_cnn.onnx',
               input_shapes={'input': (360, 1, 8, 8)}).report)"
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
ONNX_PATH = HERE / "digits_cnn.onnx"
DATA_PATH = HERE / "digits_data.npz"

SCALE = np.float32(1.0 / 16.0)
EPOCHS = 40
BATCH = 32
LR = 2e-3
N_CALIB = 256

Params = dict[str, np.ndarray]


# ----------------------------------------------------------------------------- data


def load_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The digits split 80/20 (stratified, random_state=0) as uint8 [n, 1, 8, 8] images and
    uint8 [n] labels: (train_images, train_labels, test_images, test_labels)."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        sys.exit("train_digits.py needs scikit-learn for the digits dataset (it is not a "
                 "dependency of sw2c): pip install scikit-learn")
    digits = load_digits()
    images = digits.images.astype(np.uint8)[:, None, :, :]  # [1797, 1, 8, 8], values 0..16
    labels = digits.target.astype(np.uint8)  # [1797]
    x_tr, x_te, y_tr, y_te = train_test_split(images, labels, test_size=0.2, random_state=0,
                                              stratify=labels)
    return x_tr, y_tr, x_te, y_te


# ----------------------------------------------------------------------------- layers


def im2col(x: np.ndarray) -> np.ndarray:
    """3x3 patches of x [N, C, H, W] (zero pad 1) -> [N*H*W, C*9], columns ordered (c, kh, kw)
    to match w.reshape(F, C*9)."""
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))  # [N, C, H+2, W+2]
    patches = np.stack([xp[:, :, i:i + h, j:j + w] for i in range(3) for j in range(3)],
                       axis=2)  # [N, C, 9, H, W]
    return patches.transpose(0, 3, 4, 1, 2).reshape(n * h * w, c * 9)


def col2im(dcols: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Adjoint of im2col: scatter-add dcols [N*H*W, C*9] back to dx [N, C, H, W]."""
    n, c, h, w = shape
    d = dcols.reshape(n, h, w, c, 3, 3).transpose(0, 3, 4, 5, 1, 2)  # [N, C, 3, 3, H, W]
    dxp = np.zeros((n, c, h + 2, w + 2), dtype=dcols.dtype)
    for i in range(3):
        for j in range(3):
            dxp[:, :, i:i + h, j:j + w] += d[:, :, i, j]
    return dxp[:, :, 1:-1, 1:-1]


def conv_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, tuple]:
    """3x3 same-padded convolution: x [N, C, H, W], w [F, C, 3, 3], b [F] -> [N, F, H, W]."""
    n, _, h, wd = x.shape
    cols = im2col(x)  # [N*H*W, C*9]
    out = cols @ w.reshape(w.shape[0], -1).T + b  # [N*H*W, F]
    return out.reshape(n, h, wd, -1).transpose(0, 3, 1, 2), (x.shape, cols, w)


def conv_backward(dout: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients (dx, dw, db) of conv_forward given dout [N, F, H, W]."""
    x_shape, cols, w = cache
    f = w.shape[0]
    d = dout.transpose(0, 2, 3, 1).reshape(-1, f)  # [N*H*W, F]
    dw = (d.T @ cols).reshape(w.shape)  # [F, C, 3, 3]
    db = d.sum(axis=0)  # [F]
    dx = col2im(d @ w.reshape(f, -1), x_shape)  # [N, C, H, W]
    return dx, dw, db


def relu_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """max(x, 0); the cache is the mask of positive inputs."""
    mask = x > 0
    return x * mask, mask


def relu_backward(dout: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Pass the gradient where the input was positive."""
    return dout * mask


def pool_windows(x: np.ndarray) -> np.ndarray:
    """x [N, C, H, W] -> its 2x2 windows [N, C, H/2, W/2, 4]."""
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(
        n, c, h // 2, w // 2, 4)


def maxpool_forward(x: np.ndarray) -> tuple[np.ndarray, tuple]:
    """2x2 max pool, stride 2: x [N, C, H, W] -> [N, C, H/2, W/2]."""
    win = pool_windows(x)
    arg = win.argmax(axis=-1)[..., None]  # [N, C, H/2, W/2, 1]; ties go to the first
    return np.take_along_axis(win, arg, axis=-1)[..., 0], (x.shape, arg)


def maxpool_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """Route dout [N, C, H/2, W/2] to the argmax of each window -> [N, C, H, W]."""
    (n, c, h, w), arg = cache
    dwin = np.zeros((n, c, h // 2, w // 2, 4), dtype=dout.dtype)
    np.put_along_axis(dwin, arg, dout[..., None], axis=-1)
    return dwin.reshape(n, c, h // 2, w // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(
        n, c, h, w)


def dense_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x [N, K] @ w[M, K].T + b [M] -> [N, M] (ONNX Gemm with transB=1)."""
    return x @ w.T + b


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of logits [N, K] against int labels [N], and dloss/dlogits [N, K]."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    n = len(labels)
    loss = float(-np.log(p[np.arange(n), labels] + 1e-12).mean())
    p[np.arange(n), labels] -= 1
    return loss, p / n


# ----------------------------------------------------------------------------- model


def init_params(rng: np.random.Generator) -> Params:
    """He-normal weights, zero biases."""
    def he(*shape: int) -> np.ndarray:
        fan_in = int(np.prod(shape[1:]))
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    return {
        "conv1_w": he(8, 1, 3, 3), "conv1_b": np.zeros(8, np.float32),
        "conv2_w": he(16, 8, 3, 3), "conv2_b": np.zeros(16, np.float32),
        "fc_w": he(10, 16 * 4 * 4), "fc_b": np.zeros(10, np.float32),
    }


def forward(p: Params, x: np.ndarray) -> tuple[np.ndarray, list]:
    """x [N, 1, 8, 8] float32 -> logits [N, 10], plus the caches for backward."""
    h, c1 = conv_forward(x, p["conv1_w"], p["conv1_b"])  # [N, 8, 8, 8]
    h, r1 = relu_forward(h)
    h, mp = maxpool_forward(h)  # [N, 8, 4, 4]
    h, c2 = conv_forward(h, p["conv2_w"], p["conv2_b"])  # [N, 16, 4, 4]
    h, r2 = relu_forward(h)
    flat = h.reshape(len(x), -1)  # [N, 256]
    logits = dense_forward(flat, p["fc_w"], p["fc_b"])  # [N, 10]
    return logits, [c1, r1, mp, c2, r2, flat]


def backward(p: Params, dlogits: np.ndarray, caches: list) -> Params:
    """Gradients of every parameter given dloss/dlogits [N, 10]."""
    c1, r1, mp, c2, r2, flat = caches
    g: Params = {"fc_w": dlogits.T @ flat, "fc_b": dlogits.sum(axis=0)}
    dh = (dlogits @ p["fc_w"]).reshape(-1, 16, 4, 4)
    dh = relu_backward(dh, r2)
    dh, g["conv2_w"], g["conv2_b"] = conv_backward(dh, c2)
    dh = maxpool_backward(dh, mp)
    dh = relu_backward(dh, r1)
    _, g["conv1_w"], g["conv1_b"] = conv_backward(dh, c1)
    return g


def predict(p: Params, images: np.ndarray) -> np.ndarray:
    """Class ids [N] for uint8 images [N, 1, 8, 8]."""
    return forward(p, images.astype(np.float32) * SCALE)[0].argmax(axis=1)


def accuracy(p: Params, images: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of images classified correctly."""
    return float((predict(p, images) == labels).mean())


# ----------------------------------------------------------------------------- training


class Adam:
    """Adam (Kingma & Ba) over a dict of parameters, updated in place."""

    def __init__(self, params: Params, lr: float, b1: float = 0.9, b2: float = 0.999,
                 eps: float = 1e-8) -> None:
        self.lr, self.b1, self.b2, self.eps, self.t = lr, b1, b2, eps, 0
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}

    def step(self, params: Params, grads: Params) -> None:
        """One bias-corrected update."""
        self.t += 1
        for k, g in grads.items():
            self.m[k] = self.b1 * self.m[k] + (1 - self.b1) * g
            self.v[k] = self.b2 * self.v[k] + (1 - self.b2) * g * g
            m_hat = self.m[k] / (1 - self.b1 ** self.t)
            v_hat = self.v[k] / (1 - self.b2 ** self.t)
            params[k] -= (self.lr * m_hat / (np.sqrt(v_hat) + self.eps)).astype(np.float32)


def train(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray) -> Params:
    """Minibatch Adam on softmax cross-entropy; prints accuracy every few epochs."""
    rng = np.random.default_rng(0)
    params = init_params(rng)
    opt = Adam(params, LR)
    x = x_tr.astype(np.float32) * SCALE  # [n, 1, 8, 8]
    y = y_tr.astype(np.int64)
    for epoch in range(1, EPOCHS + 1):
        order = rng.permutation(len(x))
        losses = []
        for start in range(0, len(x), BATCH):
            idx = order[start:start + BATCH]
            logits, caches = forward(params, x[idx])
            loss, dlogits = softmax_cross_entropy(logits, y[idx])
            opt.step(params, backward(params, dlogits, caches))
            losses.append(loss)
        if epoch % 5 == 0 or epoch == 1:
            print(f"epoch {epoch:3d}  loss {np.mean(losses):.4f}  "
                  f"train {accuracy(params, x_tr, y_tr):.4f}  "
                  f"test {accuracy(params, x_te, y_te):.4f}")
    return params


# ----------------------------------------------------------------------------- export


def to_onnx(p: Params) -> onnx.ModelProto:
    """The trained network as an opset-17 ONNX model with a symbolic batch dim "N"."""
    def init(name: str) -> TensorProto:
        return numpy_helper.from_array(p[name].astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["input", "conv1_w", "conv1_b"], ["conv1"],
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv1"], ["relu1"]),
        helper.make_node("MaxPool", ["relu1"], ["pool1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["pool1", "conv2_w", "conv2_b"], ["conv2"],
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv2"], ["relu2"]),
        helper.make_node("Flatten", ["relu2"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1),
    ]
    for node in nodes:  # named after their outputs, so reports and errors can name them
        node.name = node.output[0]
    graph = helper.make_graph(
        nodes, "digits_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        initializer=[init(k) for k in p])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="sw2c examples/train_digits.py")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def onnx_accuracy(path: Path, images: np.ndarray, labels: np.ndarray) -> float:
    """Test accuracy of the saved ONNX model under onnxruntime, one batch of all images."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = sess.run(["logits"], {"input": images.astype(np.float32) * SCALE})
    return float((logits.argmax(axis=1) == labels).mean())


def main() -> int:
    """Train, export, save the data and cross-check with onnxruntime."""
    started = time.perf_counter()
    x_tr, y_tr, x_te, y_te = load_data()
    print(f"train {len(x_tr)}  test {len(x_te)}")
    params = train(x_tr, y_tr, x_te, y_te)
    acc = accuracy(params, x_te, y_te)
    print(f"final: train {accuracy(params, x_tr, y_tr):.4f}  test {acc:.4f}  "
          f"({time.perf_counter() - started:.1f} s)")

    onnx.save(to_onnx(params), ONNX_PATH)
    np.savez_compressed(DATA_PATH, test_images=x_te, test_labels=y_te,
                        calib_images=x_tr[:N_CALIB], scale=SCALE)
    for path in (ONNX_PATH, DATA_PATH):
        print(f"wrote {path} ({path.stat().st_size / 1024:.1f} KiB)")

    ort_acc = onnx_accuracy(ONNX_PATH, x_te, y_te)
    print(f"onnxruntime test accuracy {ort_acc:.4f} (numpy {acc:.4f})")
    if ort_acc != acc:
        print("error: the ONNX model disagrees with the numpy model", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
