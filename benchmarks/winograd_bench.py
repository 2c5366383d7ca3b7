"""Per-layer Winograd benchmark: one 3x3 conv (+ bias + relu) per model, compiled direct
(im2col + GEMM) and with F(2,3) / F(4,3), each timed interleaved against onnxruntime.

    python -m sw2c.benchmarks.winograd_bench [--layers r56,v28] [--variants off,2,4] [--seconds 1]

Prints sw2c/onnxruntime median ratios (lower is better) and the max errors against onnxruntime.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from functools import partial

import numpy as np
import onnx
import sw2c
from onnx import TensorProto, helper, numpy_helper

from . import harness
from .zoo import he_normal, small_normal

# name -> (in channels, out channels, height = width): ResNet-50's stride-1 3x3 convs, VGG-19's
LAYERS: dict[str, tuple[int, int, int]] = {
    "r56": (64, 64, 56), "r28": (128, 128, 28), "r14": (256, 256, 14), "r7": (512, 512, 7),
    "v224": (64, 64, 224), "v112a": (64, 128, 112), "v112": (128, 128, 112),
    "v56a": (128, 256, 56), "v56": (256, 256, 56), "v28a": (256, 512, 28), "v28": (512, 512, 28),
    "v14": (512, 512, 14),
}


def conv_model(c: int, m: int, size: int, seed: int = 0) -> onnx.ModelProto:
    """Conv 3x3 pad 1 (He-normal weights, small bias) + Relu on a [1, c, size, size] input."""
    rng = np.random.default_rng(seed)
    w = he_normal(rng, (m, c, 3, 3), 9 * c)
    b = small_normal(rng, (m,))
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["y"])], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, m, size, size])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def compile_variant(model: onnx.ModelProto, variant: str) -> sw2c.Module:
    """Compile at 1 thread with winograd=variant (off: direct conv; auto, 2, 4)."""
    return sw2c.compile(model, threads=1, verify=False, winograd=variant)


def errors(run: Callable[[dict], dict], model: onnx.ModelProto,
           seed: int = 1) -> tuple[float, float]:
    """(max abs error, max abs error / max |reference|) against onnxruntime."""
    sess = harness.ort_session(model, 1)
    feeds = harness.random_feeds(sess, seed)
    ref = sess.run(None, feeds)[0]
    got = next(iter(run(feeds).values()))
    err = float(np.abs(np.asarray(got, np.float64) - ref).max())
    return err, err / float(np.abs(ref).max())


def bench_layer(name: str, variants: Sequence[str], seconds: float) -> None:
    c, m, size = LAYERS[name]
    model = conv_model(c, m, size)
    sess = harness.ort_session(model, 1)
    feeds = harness.random_feeds(sess, 0)
    for v in variants:
        run = compile_variant(model, v).run
        abs_err, rel_err = errors(run, model)
        r = harness.measure(partial(run, feeds), partial(sess.run, None, feeds),
                            min_seconds=seconds, rounds=4)
        print(f"{name:6s} C{c:<4d} M{m:<4d} {size:3d}x{size:<3d} {v:>4s}: ratio "
              f"{r['ratio']:.3f} "
              f"sw2c {r['sw2c']['median'] * 1e3:8.3f} ms  ort {r['ort']['median'] * 1e3:8.3f} ms"
              f"  err abs {abs_err:.2e} rel {rel_err:.2e}", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--layers", default=",".join(LAYERS))
    p.add_argument("--variants", default="off,2,4")
    p.add_argument("--seconds", type=float, default=1.0)
    a = p.parse_args(argv)
    for name in a.layers.split(","):
        bench_layer(name, a.variants.split(","), a.seconds)


if __name__ == "__main__":
    main()
