"""Depthwise convs and pools as vector reduce kernels (channel vectors accumulated in registers
over the window) against the interpreter for every edge, padding, channel count and pad value,
on one and two threads; and sums that keep infinities and NaNs."""

from __future__ import annotations

import numpy as np
import pytest
from sw2c.driver import compile_graph
from sw2c.ir import Binary, Builder, Op, Reduce, TensorType, Unary, Value, run


def _window_reduce(c: int, h: int, w: int, fn: Reduce, depthwise: bool, stride: int):
    rng = np.random.default_rng(c * 100 + h * 10 + w)
    b = Builder("dw", [Value("x", TensorType((1, h, w, c)))])
    pad = 0.0 if fn is Reduce.SUM else float("-inf")
    win = b.add(Op.WINDOW, ["x"], kernel=(3, 3), strides=(stride, stride), dilations=(1, 1),
                pads=(1, 1, 1, 1), pad=pad)
    if depthwise:
        taps = b.const(rng.standard_normal((3, 3, c)).astype(np.float32))
        win = b.add(Op.BINARY, [win, taps], fn=Binary.MUL)
    y = b.add(Op.REDUCE, [win], fn=fn, axes=(3, 4))
    bias = b.const(rng.standard_normal((c,)).astype(np.float32))
    y = b.add(Op.UNARY, [b.add(Op.BINARY, [y, bias], fn=Binary.ADD)], fn=Unary.RELU)
    return b.finish([y])


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("h,w", [(1, 1), (1, 5), (3, 2), (4, 3), (5, 7), (2, 11)])
@pytest.mark.parametrize("c,fn,depthwise,stride", [
    (16, Reduce.SUM, True, 1), (40, Reduce.SUM, True, 2), (5, Reduce.MAX, False, 1),
    (136, Reduce.SUM, True, 1), (24, Reduce.MEAN, False, 2)])
def test_window_reductions_match_the_interpreter(monkeypatch, threads, h, w, c, fn, depthwise,
                                                 stride):
    monkeypatch.setattr("sw2c.backends.cpu.codegen.MIN_PARALLEL_WORK", 0)
    graph = _window_reduce(c, h, w, fn, depthwise, stride)
    x = np.random.default_rng(1).standard_normal((1, h, w, c)).astype(np.float32)
    want = run(graph, {"x": x})[graph.outputs[0]]
    got = compile_graph(graph, "dw", threads=threads).run({"x": x})[graph.outputs[0]]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fn", [Reduce.SUM, Reduce.MEAN])
def test_sums_keep_infinities_and_nans(fn):
    """The accumulation may be reassociated, never assumed finite: a -inf, +inf or NaN among
    the summed elements reaches the result as in numpy."""
    b = Builder("sums", [Value("x", TensorType((4, 3, 32)))])
    graph = b.finish([b.add(Op.REDUCE, ["x"], fn=fn, axes=(1,))])
    x = np.random.default_rng(3).standard_normal((4, 3, 32)).astype(np.float32)
    x[0, 1, 3], x[1, 0, 5], x[2, 2, 7], x[3, 0, 9], x[3, 1, 9] = (
        -np.inf, np.inf, np.nan, np.inf, -np.inf)
    got = compile_graph(graph, "sums").run({"x": x})[graph.outputs[0]]
    with np.errstate(invalid="ignore"):  # inf - inf is NaN, on purpose
        want = run(graph, {"x": x})[graph.outputs[0]]
    np.testing.assert_allclose(got, want, rtol=1e-6)
