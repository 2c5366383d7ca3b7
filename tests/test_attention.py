"""Attention (opset 23/24/25) and RotaryEmbedding (opset 23): compiled to native code and
compared with onnxruntime and with the ONNX reference implementation (which defines the ops:
fully-masked rows are zeros, the mask is padded to the keys, the causal frontier is offset by
the past); plus the refusals."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import sw2c
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from sw2c.errors import ModelError, UnsupportedOpError
from sw2c.tests.onnx_util import with_output_shapes

RNG = np.random.default_rng(2323)
TYPES = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.bool_): TensorProto.BOOL,
         np.dtype(np.int64): TensorProto.INT64}


def rand(*shape: int) -> np.ndarray:
    return np.asarray(RNG.standard_normal(shape), np.float32)


def model_of(op: str, feeds: Mapping[str, np.ndarray | None], n_out: int, opset: int,
             inits: Mapping[str, np.ndarray] | None = None, **attrs) -> onnx.ModelProto:
    """One ``op`` node; ``feeds`` in input order (None: an absent optional input), then
    ``inits`` (constants, appended after the feeds)."""
    inits = dict(inits or {})
    names = [n if v is not None else "" for n, v in feeds.items()] + list(inits)
    outs = [f"y{i}" for i in range(n_out)]
    graph = helper.make_graph(
        [helper.make_node(op, names, outs, **attrs)], "t",
        [helper.make_tensor_value_info(n, TYPES[v.dtype], v.shape) for n, v in feeds.items()
         if v is not None],
        # a placeholder shape: run_both sets the real ones from the reference's results
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, ["n"]) for o in outs],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def run_both(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray | None],
             use_ort: bool = True, use_reference: bool = True) -> dict[str, np.ndarray]:
    """sw2c's outputs, checked against the reference implementation (``use_reference``) and
    onnxruntime (``use_ort``) at rtol 1e-4."""
    feeds = {k: v for k, v in feeds.items() if v is not None}
    want = ReferenceEvaluator(model).run(None, feeds)
    model = with_output_shapes(model, want)
    module = sw2c.compile(model, verify=False)
    got = module.run(feeds)
    names = [o.name for o in model.graph.output]
    for name, w in zip(names, want if use_reference else ()):
        np.testing.assert_allclose(got[name], w, rtol=1e-4, atol=1e-5, err_msg=name)
    if use_ort:
        theirs = ort.InferenceSession(model.SerializeToString(),
                                      providers=["CPUExecutionProvider"]).run(None, feeds)
        for name, w in zip(names, theirs):
            np.testing.assert_allclose(got[name], w, rtol=1e-4, atol=1e-5, err_msg=name)
    return got


def attention(q, k, v, mask=None, past=None, nonpad=None, n_out=1, opset=23,
              use_ort=True, use_reference=True, **attrs):
    feeds = {"Q": q, "K": k, "V": v, "M": mask,
             "PK": None if past is None else past[0], "PV": None if past is None else past[1]}
    if nonpad is not None:
        feeds["N"] = nonpad
    return run_both(model_of("Attention", feeds, n_out, opset, **attrs), feeds, use_ort,
                    use_reference)


# --- Attention --------------------------------------------------------------------------------
@pytest.mark.parametrize("hq, hkv, d, dv", [(2, 2, 8, 8), (4, 2, 8, 8), (6, 1, 4, 4),
                                             (3, 3, 8, 5), (4, 2, 6, 10)])
@pytest.mark.parametrize("sq, skv", [(5, 5), (3, 7)])
def test_attention_4d_heads(hq, hkv, d, dv, sq, skv):
    attention(rand(2, hq, sq, d), rand(2, hkv, skv, d), rand(2, hkv, skv, dv))


@pytest.mark.parametrize("hq, hkv, d, dv", [(2, 2, 8, 8), (4, 2, 8, 8), (3, 1, 4, 6)])
def test_attention_3d(hq, hkv, d, dv):
    y = attention(rand(2, 5, hq * d), rand(2, 7, hkv * d), rand(2, 7, hkv * dv),
                  q_num_heads=hq, kv_num_heads=hkv)
    assert y["y0"].shape == (2, 5, hq * dv)


@pytest.mark.parametrize("scale, softcap", [(0.3, 0.0), (None, 2.0), (1.5, 0.5)])
def test_attention_scale_softcap(scale, softcap):
    attrs = {"softcap": softcap} | ({} if scale is None else {"scale": scale})
    attention(rand(1, 2, 4, 8) * 3, rand(1, 2, 6, 8) * 3, rand(1, 2, 6, 8), **attrs)


@pytest.mark.parametrize("mask_shape", [(4, 6), (2, 4, 6), (1, 1, 4, 6), (2, 1, 4, 6),
                                        (2, 2, 4, 6), (6,), (4, 1)])
@pytest.mark.parametrize("kind", ["float", "bool"])
def test_attention_mask_broadcast(mask_shape, kind):
    mask = rand(*mask_shape) if kind == "float" else RNG.random(mask_shape) < 0.7
    attention(rand(2, 2, 4, 8), rand(2, 2, 6, 8), rand(2, 2, 6, 8), mask, use_ort=False)


@pytest.mark.parametrize("causal", [0, 1])
def test_attention_mask_shorter_than_keys_is_padded(causal):
    """A mask over 5 of 8 keys (the last 3 masked out), float and bool."""
    for mask in (rand(2, 1, 3, 5), RNG.random((3, 5)) < 0.8):
        attention(rand(2, 2, 3, 4), rand(2, 2, 8, 4), rand(2, 2, 8, 4), mask, is_causal=causal,
                  use_ort=False)


@pytest.mark.parametrize("sq, skv, past", [(4, 4, 0), (3, 6, 0), (2, 3, 4), (1, 1, 5)])
def test_attention_causal_with_past(sq, skv, past):
    """The causal frontier sits ``past`` keys to the right; present = past ++ new."""
    pk, pv = rand(2, 2, past, 8), rand(2, 2, past, 6)
    got = attention(rand(2, 4, sq, 8), rand(2, 2, skv, 8), rand(2, 2, skv, 6),
                    past=(pk, pv) if past else None, n_out=3 if past else 1, is_causal=1)
    if past:
        assert got["y1"].shape == (2, 2, past + skv, 8)


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
@pytest.mark.parametrize("softcap", [0.0, 3.0])
def test_attention_qk_matmul_output_modes(mode, softcap):
    """Mode 0 is the scaled Q @ K^T before the softcap, as the spec and onnxruntime say; the
    reference implementation returns the softcapped scores there (so it is left out)."""
    mask = rand(3, 7)
    attention(rand(2, 4, 3, 8), rand(2, 2, 4, 8), rand(2, 2, 4, 8), mask,
              past=(rand(2, 2, 3, 8), rand(2, 2, 3, 8)), n_out=4, softcap=softcap,
              qk_matmul_output_mode=mode, use_reference=mode != 0 or softcap == 0)


def test_attention_fully_masked_rows_are_zero():
    """A row whose mask allows no key is 0 in Y and in the mode-3 probabilities, not NaN:
    for a run-time float mask, a constant bool mask and a negative nonpad offset."""
    mask = rand(4, 5)
    mask[1] = -np.inf
    got = attention(rand(1, 2, 4, 8), rand(1, 2, 5, 8), rand(1, 2, 5, 8), mask, n_out=4,
                    qk_matmul_output_mode=3, use_ort=False)
    assert not np.isnan(got["y0"]).any() and (got["y0"][:, :, 1] == 0).all()
    q, k, v = rand(1, 2, 4, 8), rand(1, 2, 5, 8), rand(1, 2, 5, 8)
    bool_mask = np.ones((4, 5), bool)
    bool_mask[2] = False
    feeds = {"Q": q, "K": k, "V": v}
    model = model_of("Attention", feeds, 1, 23, inits={"M": bool_mask})
    got = run_both(model, feeds, use_ort=False)
    assert (got["y0"][:, :, 2] == 0).all()


@pytest.mark.parametrize("sq", [1, 3, 6])
@pytest.mark.parametrize("causal", [0, 1])
def test_attention_nonpad_kv_seqlen(sq, causal):
    """An external cache of 6 keys of which 2 and 5 are valid (opset 24), as a run-time
    input; with is_causal the frontier is per batch at nonpad - Sq (negative: empty rows)."""
    mask = RNG.random((sq, 6)) < 0.8
    mask[:, 0] = True
    attention(rand(2, 2, sq, 4), rand(2, 1, 6, 4), rand(2, 1, 6, 4), mask,
              nonpad=np.array([2, 5], np.int64), opset=24, is_causal=causal, use_ort=False)


@pytest.mark.parametrize("left, right, causal", [(2, -1, 1), (1, 1, 0), (-1, 0, 0)])
def test_attention_sliding_window_opset25(left, right, causal):
    attention(rand(1, 2, 5, 4), rand(1, 2, 5, 4), rand(1, 2, 5, 4), opset=25, use_ort=False,
              is_causal=causal, left_window_size=left, right_window_size=right)


def test_attention_kernels():
    """A 4-D attention with a run-time mask: K^T is read by the QK GEMM's packing and the
    scale rides in its epilogue, the grouped heads share K/V without a repeat, the mask add
    fuses into the softmax's row kernel (never written out); the mask's own check for fully
    masked rows is two small kernels."""
    q, k, v, m = rand(2, 4, 16, 8), rand(2, 2, 16, 8), rand(2, 2, 16, 8), rand(16, 16)
    feeds = {"Q": q, "K": k, "V": v, "M": m}
    model = with_output_shapes(model_of("Attention", feeds, 1, 23), [q])
    module = sw2c.compile(model, verify=False)
    kernels = [n for n in module.graph.nodes if n.op is sw2c.ir.Op.KERNEL]
    kinds = [n.attrs["kind"] for n in kernels]
    assert kinds.count("matmul") == 2
    qk = next(n for n in kernels if n.attrs["kind"] == "matmul")
    assert {n.op for n in qk.attrs["body"].nodes} == {
        sw2c.ir.Op.TRANSPOSE, sw2c.ir.Op.MATMUL, sw2c.ir.Op.BINARY, sw2c.ir.Op.CONST}
    adds = [k for k in kernels if any(n.op is sw2c.ir.Op.BINARY and n.attrs["fn"].value == "add"
                                      for n in k.attrs["body"].nodes)]
    assert [k.attrs["kind"] for k in adds] == ["rows"]  # max, shift, exp, sum, divide
    assert len(kernels) == 5


# --- Attention refusals -----------------------------------------------------------------------
def _refused(feeds, error, opset=23, **attrs):
    model = model_of("Attention", feeds, 1, opset, **attrs)
    with pytest.raises(error, match="Attention"):
        sw2c.compile(model, verify=False)


def test_attention_refusals():
    q, k, v = rand(1, 4, 3, 8), rand(1, 3, 5, 8), rand(1, 3, 5, 8)
    _refused({"Q": q, "K": k, "V": v}, ModelError)  # 4 heads over 3 K/V heads
    _refused({"Q": rand(1, 3, 8), "K": rand(1, 5, 8), "V": rand(1, 5, 8)}, ModelError)
    _refused({"Q": rand(1, 2, 3, 8), "K": rand(1, 2, 5, 4), "V": rand(1, 2, 5, 8)}, ModelError)
    _refused({"Q": rand(1, 2, 3, 8), "K": rand(1, 2, 5, 8), "V": rand(1, 2, 5, 8)}, ModelError,
             qk_matmul_output_mode=4)
    _refused({"Q": rand(1, 2, 3, 8), "K": rand(1, 2, 5, 8), "V": rand(1, 2, 5, 8),
              "M": rand(3, 3, 5)}, ModelError)  # mask heads 3 vs 2
    _refused({"Q": rand(1, 2, 3, 8), "K": rand(1, 2, 5, 8), "V": rand(1, 2, 5, 8)},
             UnsupportedOpError, softmax_precision=TensorProto.FLOAT16)
    _refused({"Q": rand(1, 2, 3, 8), "K": rand(1, 2, 5, 8), "V": rand(1, 2, 5, 8)},
             ModelError, opset=25, q_num_heads=2, kv_num_heads=2)


# --- RotaryEmbedding --------------------------------------------------------------------------
@pytest.mark.parametrize("rank", [3, 4])
@pytest.mark.parametrize("interleaved", [0, 1])
@pytest.mark.parametrize("rot", [0, 4])
@pytest.mark.parametrize("positions", [True, False])
def test_rotary_embedding(rank, interleaved, rot, positions):
    b, h, s, d = 2, 3, 5, 8
    half = (rot or d) // 2
    x = rand(b, h, s, d) if rank == 4 else rand(b, s, h * d)
    if positions:
        feeds = {"X": x, "C": rand(12, half), "S": rand(12, half),
                 "P": RNG.integers(0, 12, (b, s)).astype(np.int64)}
    else:
        feeds = {"X": x, "C": rand(b, s, half), "S": rand(b, s, half)}
    attrs = {"interleaved": interleaved, "rotary_embedding_dim": rot}
    if rank == 3:
        attrs["num_heads"] = h
    run_both(model_of("RotaryEmbedding", feeds, 1, 23, **attrs), feeds)


def test_rotary_embedding_refusals():
    feeds = {"X": rand(1, 2, 3, 8), "C": rand(1, 3, 4), "S": rand(1, 3, 4)}
    for attrs in ({"rotary_embedding_dim": 5}, {"rotary_embedding_dim": 6}):
        with pytest.raises(ModelError, match="RotaryEmbedding"):
            sw2c.compile(model_of("RotaryEmbedding", feeds, 1, 23, **attrs), verify=False)
    feeds = {"X": rand(1, 3, 8), "C": rand(1, 3, 4), "S": rand(1, 3, 4)}
    with pytest.raises(ModelError, match="num_heads"):
        sw2c.compile(model_of("RotaryEmbedding", feeds, 1, 23), verify=False)


# --- a matmul by a transposed run-time operand (Q @ K^T) --------------------------------------
@pytest.mark.parametrize("a_shape, bt_shape", [
    ((5, 8), (3, 8)), ((4, 7, 9), (4, 70, 9)), ((2, 3, 6, 16), (2, 3, 17, 16)),
    ((3, 4, 5), (1, 33, 5)), ((2, 1, 4, 8), (2, 3, 64, 8))])
def test_matmul_reads_transposed_rhs_in_packing(a_shape, bt_shape):
    """The transpose fuses into the matmul kernel (its packing reads B^T column by column),
    including partial panels and broadcast batches."""
    r = len(bt_shape)
    perm = (*range(r - 2), r - 1, r - 2)
    feeds = {"A": rand(*a_shape), "B": rand(*bt_shape)}
    graph = helper.make_graph(
        [helper.make_node("Transpose", ["B"], ["BT"], perm=perm),
         helper.make_node("MatMul", ["A", "BT"], ["y0"])], "t",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, v.shape) for n, v in feeds.items()],
        [helper.make_tensor_value_info("y0", TensorProto.FLOAT, ["n"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    run_both(model, feeds)
    module = sw2c.compile(with_output_shapes(model, [feeds["A"] @ np.swapaxes(feeds["B"], -1,
                                                                               -2)]),
                          verify=False)
    assert [n.attrs["kind"] for n in module.graph.nodes if n.op is sw2c.ir.Op.KERNEL] == \
        ["matmul"]
