"""Small IR graphs built by hand, in the shapes the frontend emits, for pass and backend tests."""

from __future__ import annotations

import numpy as np
import pytest
from sw2c import Module
from sw2c.driver import compile_graph
from sw2c.ir import Binary, Builder, Graph, Op, Reduce, TensorType, Unary, Value

NCHW_TO_NHWC = (0, 2, 3, 1)
NHWC_TO_NCHW = (0, 3, 1, 2)


def conv(b: Builder, x: str, w: np.ndarray, bias: np.ndarray, stride: int = 1, pad: int = 1) -> str:
    """NCHW conv as the frontend lowers it: transpose, window, reshape, matmul, add, transpose."""
    m, c, kh, kw = w.shape
    t = b.add(Op.TRANSPOSE, [x], perm=NCHW_TO_NHWC)
    win = b.add(Op.WINDOW, [t], kernel=(kh, kw), strides=(stride, stride), dilations=(1, 1),
                pads=(pad, pad, pad, pad), pad=0.0)
    n, oh, ow = b.types[win].shape[:3]
    patches = b.add(Op.RESHAPE, [win], shape=(n, oh, ow, kh * kw * c))
    wmat = b.const(w.transpose(2, 3, 1, 0).reshape(kh * kw * c, m), "w")
    y = b.add(Op.MATMUL, [patches, wmat])
    y = b.add(Op.BINARY, [y, b.const(bias.reshape(1, 1, 1, m), "bias")], fn=Binary.ADD)
    return b.add(Op.TRANSPOSE, [y], perm=NHWC_TO_NCHW)


def batchnorm(b: Builder, x: str, rng: np.random.Generator) -> str:
    c = b.types[x].shape[1]
    scale = rng.uniform(0.5, 1.5, (c, 1, 1)).astype(np.float32)
    shift = rng.normal(0, 0.1, (c, 1, 1)).astype(np.float32)
    y = b.add(Op.BINARY, [x, b.const(scale, "bn_scale")], fn=Binary.MUL)
    return b.add(Op.BINARY, [y, b.const(shift, "bn_shift")], fn=Binary.ADD)


def residual_cnn(seed: int = 0, c: int = 8, hw: int = 10) -> Graph:
    """conv-bn-relu, conv-bn + residual, relu, maxpool, global average, linear."""
    rng = np.random.default_rng(seed)
    b = Builder("residual_cnn", [Value("x", TensorType((1, 3, hw, hw)))])

    def weights(m: int, cin: int) -> np.ndarray:
        return rng.normal(0, (2 / (cin * 9)) ** 0.5, (m, cin, 3, 3)).astype(np.float32)

    def bias(m: int) -> np.ndarray:
        return rng.normal(0, 0.1, m).astype(np.float32)

    h = conv(b, "x", weights(c, 3), bias(c))
    h = b.add(Op.UNARY, [batchnorm(b, h, rng)], fn=Unary.RELU)
    y = batchnorm(b, conv(b, h, weights(c, c), bias(c)), rng)
    y = b.add(Op.UNARY, [b.add(Op.BINARY, [y, h], fn=Binary.ADD)], fn=Unary.RELU)
    t = b.add(Op.TRANSPOSE, [y], perm=NCHW_TO_NHWC)
    win = b.add(Op.WINDOW, [t], kernel=(2, 2), strides=(2, 2), dilations=(1, 1),
                pads=(0, 0, 0, 0), pad=float("-inf"))
    p = b.add(Op.REDUCE, [win], fn=Reduce.MAX, axes=(3, 4))
    n, ph, pw = b.types[p].shape[:3]
    p = b.add(Op.RESHAPE, [p], shape=(n, ph, pw, c))
    p = b.add(Op.TRANSPOSE, [p], perm=NHWC_TO_NCHW)
    g = b.add(Op.REDUCE, [p], fn=Reduce.MEAN, axes=(2, 3))
    g = b.add(Op.RESHAPE, [g], shape=(1, c))
    fc = b.const(rng.normal(0, 0.3, (c, 5)).astype(np.float32), "fc")
    out = b.add(Op.MATMUL, [g, fc])
    out = b.add(Op.BINARY, [out, b.const(bias(5), "fc_bias")], fn=Binary.ADD, name="logits")
    return b.finish([out])


def split_residual_cnn(name: str) -> Module:
    """``residual_cnn`` compiled for a team of two, with a split threshold low enough that its
    convs are cut into chunks the team shares (the module of the threaded runtime tests)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("sw2c.backends.cpu.codegen.MIN_PARALLEL_WORK", 20000)
        module = compile_graph(residual_cnn(c=16, hw=24), name, threads=2)
    assert module.report["threads"] == 2
    return module
