"""Attention (opset 23+) and RotaryEmbedding (opset 23), composed of IR ops.

Attention follows onnx/reference/ops/op_attention.py, which defines it: Q @ K^T scaled by
``scale`` (as sqrt(scale) on each side, here one scalar multiply the GEMM epilogue absorbs),
optional softcap, plus an additive bias built from the mask, the causal / sliding-window
frontiers and the ``nonpad_kv_seqlen`` padding, a softmax whose fully-masked rows are zeros,
then @ V. Grouped-query heads are not repeated: the ``G`` query heads that share one K/V head
are adjacent, so Q reshapes (for free) to [B, Hkv, G * Sq, D] and each K/V head serves one
taller GEMM. K^T is a transpose the fuse pass hands to the QK GEMM's run-time packing, and the
bias add is emitted per softmax kernel (max, shift) so it is never written out.
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from ..ir import Binary, Op, Reduce, Unary
from .convert import Ctx, Val, converter
from .ops_math import _softmax

FLOAT_TYPES = ("float16", "float32", "float64")
# softmax_precision -> the type the softmax is computed in (bfloat16 has no IR type)
SOFTMAX_PRECISIONS = {onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.FLOAT: "float32",
                      onnx.TensorProto.DOUBLE: "float64"}


def _or_none(cx: Ctx, i: int) -> Val | None:
    return cx.inputs[i] if cx.has(i) else None


def _dtype(cx: Ctx, v: Val) -> str:
    """The element type of ``v``; a constant's own (bfloat16, float64, ...), before the
    IR's conversion, so odd types are refused by name rather than asserted on."""
    return str(v.dtype) if isinstance(v, np.ndarray) else cx.type(v).dtype


class _Shapes:
    """The 4-D views of Q, K and V and the sizes the rest of the op needs."""

    def __init__(self, cx: Ctx) -> None:
        q, k, v = cx.x(0), cx.x(1), cx.x(2)
        qs, ks, vs = cx.shape(q), cx.shape(k), cx.shape(v)
        rank = len(qs)
        if rank not in (3, 4) or len(ks) != rank or len(vs) != rank:
            raise cx.error(f"Q {list(qs)}, K {list(ks)} and V {list(vs)} must all be 3-D or "
                           "all 4-D")
        self.dtype = _dtype(cx, q)
        if self.dtype not in FLOAT_TYPES:
            raise cx.unsupported(f"Q is {self.dtype}; sw2c computes Attention on "
                                 f"{', '.join(FLOAT_TYPES)}")
        for name, x in (("K", k), ("V", v)):
            if _dtype(cx, x) != self.dtype:
                raise cx.error(f"{name} is {_dtype(cx, x)}, Q {self.dtype}")
        hq_attr, hkv_attr = cx.attr("q_num_heads"), cx.attr("kv_num_heads")
        self.rank = rank
        if rank == 3:
            if not hq_attr or not hkv_attr or hq_attr < 1 or hkv_attr < 1:
                raise cx.error("3-D inputs need positive q_num_heads and kv_num_heads")
            for name, s, h in (("Q", qs, hq_attr), ("K", ks, hkv_attr), ("V", vs, hkv_attr)):
                if s[2] % h:
                    raise cx.error(f"{name}'s hidden size {s[2]} is not a multiple of its "
                                   f"{h} heads")
            q = cx.transpose(cx.reshape(q, (qs[0], qs[1], hq_attr, qs[2] // hq_attr)),
                             (0, 2, 1, 3))
            k = cx.transpose(cx.reshape(k, (ks[0], ks[1], hkv_attr, ks[2] // hkv_attr)),
                             (0, 2, 1, 3))
            v = cx.transpose(cx.reshape(v, (vs[0], vs[1], hkv_attr, vs[2] // hkv_attr)),
                             (0, 2, 1, 3))
        elif (hq_attr is not None or hkv_attr is not None) and cx.opset >= 25:
            raise cx.error("q_num_heads and kv_num_heads must not be given for 4-D inputs")
        self.q, self.k, self.v = q, k, v
        qs, ks, vs = cx.shape(q), cx.shape(k), cx.shape(v)
        self.batch, self.hq, self.sq, self.d = qs
        self.hkv, self.skv, self.dv = ks[1], ks[2], vs[3]
        if ks[0] != self.batch or vs[0] != self.batch:
            raise cx.error(f"Q, K and V differ in batch: {qs[0]}, {ks[0]}, {vs[0]}")
        if ks[3] != self.d:
            raise cx.error(f"Q's head size {self.d} differs from K's {ks[3]}")
        if vs[1] != self.hkv or vs[2] != self.skv:
            raise cx.error(f"K {list(ks)} and V {list(vs)} differ in heads or sequence length")
        if self.hq % self.hkv:
            raise cx.error(f"{self.hq} query heads are not a multiple of {self.hkv} K/V heads")
        self.group = self.hq // self.hkv


def _with_past(cx: Ctx, sh: _Shapes) -> tuple[Val, Val, int]:
    """present_key, present_value (the past concatenated before K / V) and the past length."""
    pk, pv = _or_none(cx, 4), _or_none(cx, 5)
    if (pk is None) != (pv is None):
        raise cx.error("past_key and past_value must be given together")
    if pk is None:
        return sh.k, sh.v, 0
    pks, pvs = cx.shape(pk), cx.shape(pv)
    past = pks[2] if len(pks) == 4 else -1
    if pks != (sh.batch, sh.hkv, past, sh.d) or pvs != (sh.batch, sh.hkv, past, sh.dv):
        raise cx.error(f"past_key {list(pks)} / past_value {list(pvs)} must be "
                       f"[{sh.batch}, {sh.hkv}, P, {sh.d}] / [{sh.batch}, {sh.hkv}, P, {sh.dv}]")
    return cx.concat([pk, sh.k], 2), cx.concat([pv, sh.v], 2), past


def _i64(v: int) -> np.ndarray:
    return np.array(v, np.int64)


def _both(cx: Ctx, a: Val | None, b: Val) -> Val:
    return b if a is None else cx.binary(Binary.AND, a, b)


def _mask(cx: Ctx, total: int, dtype: str) -> tuple[Val | None, Val | None]:
    """attn_mask as (allowed: bool, additive: ``dtype``), its last axis padded to ``total``."""
    mask = _or_none(cx, 3)
    if mask is None:
        return None, None
    if _dtype(cx, mask) not in ("bool", dtype):
        raise cx.error(f"a {_dtype(cx, mask)} attn_mask (bool or Q's {dtype})")
    t = cx.type(mask)
    if t.rank == 0 or t.shape[-1] > total:
        raise cx.error(f"attn_mask {list(t.shape)} does not fit {total} keys")
    short = total - t.shape[-1]
    if short:
        # padded keys are masked: False, or -inf
        pad = 0.0 if t.dtype == "bool" else float("-inf")
        mask = cx.add(Op.PAD, [mask], pads=(0,) * (2 * t.rank - 1) + (short,), value=pad)
    return (mask, None) if t.dtype == "bool" else (None, mask)


def _frontiers(cx: Ctx, sh: _Shapes, past: int, total: int) -> Val | None:
    """The bool 'allowed' mask of is_causal, the sliding window (opset 25) and the
    nonpad_kv_seqlen padding, or None when none applies. With ``nonpad_kv_seqlen`` and no
    past, the causal and window frontiers sit at a per-batch offset nonpad - Sq."""
    nonpad = _or_none(cx, 6) if cx.opset >= 24 else None
    if nonpad is not None and past:
        raise cx.error("nonpad_kv_seqlen cannot be combined with past_key / past_value")
    left = int(cx.attr("left_window_size", -1)) if cx.opset >= 25 else -1
    right = int(cx.attr("right_window_size", -1)) if cx.opset >= 25 else -1
    if left < -1 or right < -1:
        raise cx.error("left_window_size and right_window_size must be -1 or >= 0")
    lengths = None
    if nonpad is not None:
        if cx.shape(nonpad) != (sh.batch,):
            raise cx.error(f"nonpad_kv_seqlen {list(cx.shape(nonpad))} must be [{sh.batch}]")
        if _dtype(cx, nonpad) not in ("int64", "int32"):
            raise cx.error("nonpad_kv_seqlen must be int64")
        lengths = cx.reshape(nonpad, (sh.batch, 1, 1, 1))
        if _dtype(cx, nonpad) != "int64":
            lengths = cx.add(Op.CAST, [lengths], to="int64")
    allowed = None
    if cx.attr("is_causal", 0) or left >= 0 or right >= 0:
        # diff = (i + offset) - j for query i, key j: causal keeps diff >= 0, the window
        # -right <= diff <= left
        rel = (np.arange(sh.sq)[:, None] - np.arange(total)[None, :]).astype(np.int64)
        if lengths is None:
            diff: Val = rel + np.int64(past)
        else:
            diff = cx.binary(Binary.ADD, cx.binary(Binary.SUB, lengths, _i64(sh.sq)), rel)
        if cx.attr("is_causal", 0):
            allowed = _both(cx, allowed, cx.binary(Binary.GE, diff, _i64(0)))
        if left >= 0:
            allowed = _both(cx, allowed, cx.binary(Binary.LE, diff, _i64(left)))
        if right >= 0:
            allowed = _both(cx, allowed, cx.binary(Binary.GE, diff, _i64(-right)))
    if lengths is not None:
        allowed = _both(cx, allowed, cx.binary(Binary.LT, np.arange(total, dtype=np.int64),
                                               lengths))
    return allowed


def _bias(cx: Ctx, sh: _Shapes, past: int, total: int) -> Val | None:
    """The additive bias (0 where attended, -inf where masked, plus a float attn_mask)."""
    allowed, additive = _mask(cx, total, sh.dtype)
    frontier = _frontiers(cx, sh, past, total)
    if frontier is not None:
        allowed = _both(cx, allowed, frontier)
    if allowed is None:
        return additive
    # constants in Q's type: both branches may be constants, which nothing then adapts
    zero, neg_inf = np.array(0, sh.dtype), np.array(-np.inf, sh.dtype)
    return cx.add(Op.WHERE, [allowed, zero if additive is None else additive, neg_inf])


def _scale(cx: Ctx, head_size: int, dtype: str) -> np.ndarray:
    """sqrt(scale) rounded to ``dtype`` and squared, as the reference's Q*s @ (K*s)^T."""
    scale = cx.attr("scale")
    scale = 1 / math.sqrt(head_size) if scale is None else float(scale)
    if scale < 0:  # the reference's sqrt(scale) on Q and K is NaN; others negate the scores
        raise cx.unsupported(f"a negative scale ({scale})")
    root = np.float64(np.dtype(dtype).type(np.sqrt(scale)))
    return np.array(root * root, dtype)


def _heads(cx: Ctx, x: Val, sh: _Shapes, rows: int) -> Val:
    """[B, Hq, rows, n] <-> [B, Hkv, G * rows, n]: a free reshape grouping query heads."""
    s = cx.shape(x)
    if sh.group == 1:
        return x
    if s[1] == sh.hq:
        return cx.reshape(x, (s[0], sh.hkv, sh.group * rows, s[3]))
    return cx.reshape(x, (s[0], sh.hq, rows, s[3]))


@converter("Attention", since=23)
def attention(cx: Ctx) -> list[Val | None]:
    """Scaled dot-product attention (see the module docstring)."""
    sh = _Shapes(cx)
    mode = int(cx.attr("qk_matmul_output_mode", 0))
    if mode not in (0, 1, 2, 3):
        raise cx.error(f"qk_matmul_output_mode {mode} is not 0, 1, 2 or 3")
    precision = cx.attr("softmax_precision")
    if precision is not None and precision not in SOFTMAX_PRECISIONS:
        raise cx.unsupported(f"softmax_precision {precision} (FLOAT16, FLOAT or DOUBLE only)")
    # the softmax's own type; a float64 softmax of float32/float16 scores is computed in
    # float32, which changes nothing after the cast back to the scores' type
    soft = sh.dtype if precision is None else SOFTMAX_PRECISIONS[precision]
    if soft == "float64" and sh.dtype != "float64":
        soft = "float32"
    if np.dtype(soft).itemsize < np.dtype(sh.dtype).itemsize:
        raise cx.unsupported(f"softmax_precision {precision}: a {soft} softmax of {sh.dtype} "
                             "scores (coarser than the inputs)")
    present_k, present_v, past = _with_past(cx, sh)
    total = past + sh.skv
    scores_shape = (sh.batch, sh.hq, sh.sq, total)
    bias = _bias(cx, sh, past, total)
    if bias is not None:
        bshape = cx.shape(bias)
        if len(bshape) > 4 or any(b not in (1, s) for b, s in
                                  zip(bshape[::-1], scores_shape[::-1])):
            raise cx.error(f"the attention mask/bias {list(bshape)} does not broadcast to "
                           f"the scores {list(scores_shape)}")
        bias = cx.reshape(bias, (1,) * (4 - len(bshape)) + bshape)
        if isinstance(bias, np.ndarray) and not bias.any():  # every key attended
            bias = None
    # grouped query heads: the softmax runs on the GEMM's own [B, Hkv, G * Sq, T] rows when
    # the bias is one for all heads and queries, so no reshape separates the mask add from
    # the softmax's kernels
    grouped = bias is None or cx.shape(bias)[1:3] == (1, 1)
    # [B, Hkv, G * Sq, D] @ [B, Hkv, D, T]: K^T read by the GEMM's packing, the scale in its
    # epilogue
    kt = cx.transpose(present_k, (0, 1, 3, 2))
    qk = cx.matmul(_heads(cx, sh.q, sh, sh.sq), kt)
    raw = qk = cx.binary(Binary.MUL, qk, _scale(cx, sh.d, sh.dtype))
    softcap = float(cx.attr("softcap", 0.0))
    if softcap > 0:  # before the mask, so masked scores stay -inf
        cap = cx.scalar(softcap)
        qk = cx.binary(Binary.MUL, cx.unary(Unary.TANH, cx.binary(Binary.DIV, qk, cap)), cap)
    if not grouped:
        qk = _heads(cx, qk, sh, sh.sq)  # [B, Hq, Sq, T]
    scores = qk if bias is None else cx.binary(Binary.ADD, qk, bias)
    if soft != sh.dtype:  # the scores (with the bias) cast to the softmax's type, and back
        wide = cx.add(Op.CAST, [scores], to=soft)
        probs = cx.add(Op.CAST, [_softmax(cx, (3,), wide)], to=sh.dtype)
    elif mode == 2 and cx.used(3):  # the scores are an output: materialize them once
        probs = _softmax(cx, (3,), scores)
    else:  # the mask add fused into the softmax's max and shift kernels
        probs = _softmax(cx, (3,), qk, bias)
    probs = _guard_masked_rows(cx, probs, bias)
    y = cx.matmul(probs if grouped else _heads(cx, probs, sh, sh.sq), present_v)
    y = _heads(cx, y, sh, sh.sq)  # [B, Hq, Sq, Dv]
    if sh.rank == 3:
        y = cx.reshape(cx.transpose(y, (0, 2, 1, 3)), (sh.batch, sh.sq, sh.hq * sh.dv))
    qk_out = None
    if cx.used(3):
        # mode 0 is the scores before the softcap, as the spec and onnxruntime have it (the
        # reference implementation gives mode 1's softcapped scores for mode 0 too)
        qk_out = cx.reshape({0: raw, 1: qk, 2: scores, 3: probs}[mode], scores_shape)
    return [y, present_k, present_v, qk_out]


def _guard_masked_rows(cx: Ctx, probs: Val, bias: Val | None) -> Val:
    """Zero the rows whose bias is -inf throughout (no key to attend): the softmax gives NaN
    there. Known at compile time for constant masks, so usually nothing is emitted."""
    if bias is None:
        return probs
    dead = cx.binary(Binary.EQ, cx.reduce(Reduce.MAX, bias, (len(cx.shape(bias)) - 1,)),
                     np.array(-np.inf, cx.type(bias).dtype))
    if isinstance(dead, np.ndarray) and not dead.any():
        return probs
    return cx.add(Op.WHERE, [dead, cx.scalar(0), probs])


# --- RotaryEmbedding -------------------------------------------------------------------------
@converter("RotaryEmbedding", since=23)
def rotary_embedding(cx: Ctx) -> Val:
    """Rotate the first ``rotary_embedding_dim`` features of each head by the cos/sin cache
    (gathered by ``position_ids`` if given), in the input's own layout (no transposes)."""
    x, cos, sin = cx.x(0), cx.x(1), cx.x(2)
    xs = cx.shape(x)
    if _dtype(cx, x) != "float32":
        raise cx.unsupported(f"input is {_dtype(cx, x)}; sw2c computes RotaryEmbedding on "
                             "float32")
    if len(xs) == 4:
        batch, _, seq, head = xs
        x4 = x
    elif len(xs) == 3:
        heads = int(cx.attr("num_heads", 0))
        if heads < 1 or xs[2] % heads:
            raise cx.error(f"a 3-D input {list(xs)} needs num_heads dividing its hidden size")
        batch, seq, head = xs[0], xs[1], xs[2] // heads
        x4 = cx.reshape(x, (batch, seq, heads, head))
    else:
        raise cx.error(f"input {list(xs)} must be 3-D or 4-D")
    rot = int(cx.attr("rotary_embedding_dim", 0)) or head
    if rot % 2 or not 0 < rot <= head:
        raise cx.error(f"rotary_embedding_dim {rot} must be even and at most the head size "
                       f"{head}")
    half = rot // 2
    for name, c in (("cos_cache", cos), ("sin_cache", sin)):
        if _dtype(cx, c) != "float32":
            raise cx.unsupported(f"a {_dtype(cx, c)} {name}")
    if cx.has(3):
        pos = cx.x(3)
        if cx.shape(pos) != (batch, seq):
            raise cx.error(f"position_ids {list(cx.shape(pos))} must be [{batch}, {seq}]")
        if len(cx.shape(cos)) != 2 or cx.shape(cos) != cx.shape(sin):
            raise cx.error("with position_ids, cos_cache and sin_cache must be 2-D, alike")
        cos = cx.add(Op.GATHER, [cos, pos], axis=0)
        sin = cx.add(Op.GATHER, [sin, pos], axis=0)
    for name, c in (("cos_cache", cos), ("sin_cache", sin)):
        if cx.shape(c) != (batch, seq, half):
            raise cx.error(f"{name} gives {list(cx.shape(c))} per token, not "
                           f"[{batch}, {seq}, {half}]")
    # cos/sin broadcast over the heads axis: 1 for [B, H, S, D], 2 for [B, S, H, D]
    cs = (batch, 1, seq, half) if len(xs) == 4 else (batch, seq, 1, half)
    cos, sin = cx.reshape(cos, cs), cx.reshape(sin, cs)
    shape = cx.shape(x4)
    lead = shape[:3]

    def part(start: int, step: int, count: int) -> Val:
        return cx.slice(x4, (0, 0, 0, start), (1, 1, 1, step), (*lead, count))

    interleaved = bool(cx.attr("interleaved", 0))
    x1 = part(0, 2, half) if interleaved else part(0, 1, half)
    x2 = part(1, 2, half) if interleaved else part(half, 1, half)
    real = cx.binary(Binary.SUB, cx.binary(Binary.MUL, cos, x1), cx.binary(Binary.MUL, sin, x2))
    imag = cx.binary(Binary.ADD, cx.binary(Binary.MUL, sin, x1), cx.binary(Binary.MUL, cos, x2))
    if interleaved:  # real, imag pairs back into consecutive features
        pairs = cx.concat([cx.reshape(real, (*lead, half, 1)),
                           cx.reshape(imag, (*lead, half, 1))], 4)
        rotated = cx.reshape(pairs, (*lead, rot))
    else:
        rotated = cx.concat([real, imag], 3)
    if rot < head:
        rotated = cx.concat([rotated, part(rot, 1, head - rot)], 3)
    return cx.reshape(rotated, xs)
