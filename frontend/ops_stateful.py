"""CausalConvWithState, LinearAttention (opset 27) and SwiGLU (opset 28), composed of IR ops.

They follow onnx/reference/ops (op_causal_conv_with_state.py, op_linear_attention.py,
op_swiglu.py), which define them. CausalConvWithState is a depthwise Conv1d over the past
state concatenated before the input. LinearAttention's recurrence is unrolled over the
(static) sequence length: each token is a handful of small batched GEMMs and elementwise ops
on the [B, Hkv, dk, dv] state.
"""

from __future__ import annotations

import math

import numpy as np

from ..ir import Binary, Op, Unary
from .convert import Ctx, Val, converter, prod
from .ops_logic import cast_to
from .ops_nn import conv_nc

FLOAT_TYPES = ("float16", "float32", "float64")
# an unrolled recurrence emits ~10 IR ops per token: past this the model is refused rather
# than compiled into an enormous graph
MAX_UNROLLED_TOKENS = 256


def _float_input(cx: Ctx, i: int, name: str, dtype: str | None = None) -> Val:
    """Input ``i``, checked to be a float tensor (of ``dtype``, if given)."""
    x = cx.x(i)
    got = cx.type(x).dtype
    if got not in FLOAT_TYPES:
        raise cx.unsupported(f"{name} is {got} (float16, float32 or float64 only)")
    if dtype is not None and got != dtype:
        raise cx.error(f"{name} is {got}, the input {dtype}")
    return x


# --- CausalConvWithState -----------------------------------------------------------------------
@converter("CausalConvWithState", since=27)
def causal_conv_with_state(cx: Ctx) -> list[Val | None]:
    """Depthwise causal Conv1d: output = conv(concat(past, input)) (+ bias, then SiLU if
    asked); present_state = the last k - 1 positions of concat(past, input)."""
    x = _float_input(cx, 0, "input")
    dtype = cx.type(x).dtype
    w = _float_input(cx, 1, "weight", dtype)
    xs, ws = cx.shape(x), cx.shape(w)
    if len(xs) != 3 or len(ws) != 3 or ws[0] != xs[1] or ws[1] != 1 or ws[2] < 1:
        raise cx.error(f"input {list(xs)} and weight {list(ws)} must be [B, C, L] and "
                       "[C, 1, k]")
    batch, channels, length = xs
    k = ws[2]
    activation = cx.attr("activation", "none")
    if activation not in ("none", "silu", "swish"):
        raise cx.error(f"activation '{activation}' is not none, silu or swish")
    bias = None
    if cx.has(2):
        bias = _float_input(cx, 2, "bias", dtype)
        if cx.shape(bias) != (channels,):
            raise cx.error(f"bias {list(cx.shape(bias))} must be [{channels}]")
    past = cx.inputs[3] if cx.has(3) else np.zeros((batch, channels, k - 1), dtype)
    if not isinstance(past, np.ndarray):
        _float_input(cx, 3, "past_state", dtype)
    if cx.shape(past) != (batch, channels, k - 1):
        raise cx.error(f"past_state {list(cx.shape(past))} must be "
                       f"[{batch}, {channels}, {k - 1}]")
    padded = x if k == 1 else cx.concat([past, x], 2)
    y = conv_nc(cx, padded, w, bias, channels, [1], [1], [0], [0])
    if activation != "none":  # in float32 whatever the input type, as the reference
        wide = cast_to(cx, y, "float32")
        y = cast_to(cx, cx.binary(Binary.MUL, wide, cx.unary(Unary.SIGMOID, wide)), dtype)
    present = None
    if cx.used(1):
        present = cx.slice(padded, (0, 0, length), (1, 1, 1), (batch, channels, k - 1))
    return [y, present]


# --- LinearAttention ---------------------------------------------------------------------------
class _Heads:
    """LinearAttention's inputs as [B, H, T, D] float32 views and their sizes."""

    def __init__(self, cx: Ctx) -> None:
        q = _float_input(cx, 0, "query")
        self.dtype = cx.type(q).dtype
        k = _float_input(cx, 1, "key", self.dtype)
        v = _float_input(cx, 2, "value", self.dtype)
        hq, hkv = cx.attr("q_num_heads"), cx.attr("kv_num_heads")
        if not hq or not hkv or hq < 1 or hkv < 1 or hq % hkv:
            raise cx.error("q_num_heads must be a positive multiple of a positive kv_num_heads")
        qs, ks, vs = cx.shape(q), cx.shape(k), cx.shape(v)
        if len(qs) != 3 or len(ks) != 3 or len(vs) != 3:
            raise cx.error(f"query {list(qs)}, key {list(ks)}, value {list(vs)} must be 3-D")
        self.batch, self.t = qs[:2]
        if self.t < 1:
            raise cx.error(f"query {list(qs)} has no token")
        if ks[:2] != qs[:2] or vs[:2] != qs[:2] or qs[2] % hq or vs[2] % hkv:
            raise cx.error(f"query {list(qs)}, key {list(ks)}, value {list(vs)} do not fit "
                           f"{hq} query and {hkv} key/value heads")
        self.hq, self.hkv, self.dk, self.dv = hq, hkv, qs[2] // hq, vs[2] // hkv
        if ks[2] != hkv * self.dk:
            raise cx.error(f"key {list(ks)} must be [B, T, {hkv * self.dk}]")
        self.q = self.unpack(cx, q, hq)
        self.k = self.unpack(cx, k, hkv)
        self.v = self.unpack(cx, v, hkv)

    def unpack(self, cx: Ctx, x: Val, heads: int) -> Val:
        """[B, T, H*D] -> [B, H, T, D] float32 (the reference computes in float32)."""
        b, t, hd = cx.shape(x)
        x = cx.transpose(cx.reshape(x, (b, t, heads, hd // heads)), (0, 2, 1, 3))
        return cast_to(cx, x, "float32")

    def token(self, cx: Ctx, x: Val, i: int) -> Val:
        """Token ``i`` of a [B, H, T, D] tensor, as [B, H, 1, D]."""
        b, h, _, d = cx.shape(x)
        return cx.slice(x, (0, 0, i, 0), (1, 1, 1, 1), (b, h, 1, d))


def _per_token(cx: Ctx, sh: _Heads, i: int, name: str, widths: tuple[int, ...]) -> Val:
    """decay or beta (input ``i``) [B, T, H*W] as a float32 [B, H, T, W], W per ``widths``."""
    x = _float_input(cx, i, name, sh.dtype)
    s = cx.shape(x)
    if len(s) != 3 or s[:2] != (sh.batch, sh.t) or s[2] not in widths:
        raise cx.error(f"{name} {list(s)} must be [{sh.batch}, {sh.t}, one of {list(widths)}]")
    heads = sh.hkv if s[2] != 1 else 1
    return sh.unpack(cx, x, heads)


@converter("LinearAttention", since=27)
def linear_attention(cx: Ctx) -> list[Val | None]:
    """The recurrence of the module docstring, token by token."""
    sh = _Heads(cx)
    rule = cx.attr("update_rule", "gated_delta")
    if rule not in ("linear", "gated", "delta", "gated_delta"):
        raise cx.error(f"update_rule '{rule}' is not linear, gated, delta or gated_delta")
    gating, delta = rule in ("gated", "gated_delta"), rule in ("delta", "gated_delta")
    for i, name, needed in ((4, "decay", gating), (5, "beta", delta)):
        if cx.has(i) != needed:
            raise cx.error(f"update_rule '{rule}' {'requires' if needed else 'forbids'} "
                           f"{name}")
    if sh.t > MAX_UNROLLED_TOKENS:
        raise cx.unsupported(f"a sequence of {sh.t} tokens: sw2c unrolls the recurrence, up "
                             f"to {MAX_UNROLLED_TOKENS} tokens")
    decay = _per_token(cx, sh, 4, "decay", (sh.hkv, sh.hkv * sh.dk)) if gating else None
    if decay is not None:  # exp(g) once for all tokens; per key dim, broadcast over dv
        decay = cx.unary(Unary.EXP, decay)
    beta = _per_token(cx, sh, 5, "beta", (sh.hkv, 1)) if delta else None
    state_shape = (sh.batch, sh.hkv, sh.dk, sh.dv)
    state_dtype = sh.dtype
    if cx.has(3):
        past = cx.x(3)
        state_dtype = cx.type(past).dtype
        if state_dtype not in FLOAT_TYPES:
            raise cx.unsupported(f"past_state is {state_dtype} (float16, float32 or float64)")
        if cx.shape(past) != state_shape:
            raise cx.error(f"past_state {list(cx.shape(past))} must be {list(state_shape)}")
        state: Val = cast_to(cx, past, "float32")
    else:
        state = np.zeros(state_shape, np.float32)
    scale = float(cx.attr("scale", 0.0)) or 1 / math.sqrt(sh.dk)
    group = sh.hq // sh.hkv
    outs = []
    for i in range(sh.t):
        k_t = cx.reshape(sh.token(cx, sh.k, i), (sh.batch, sh.hkv, sh.dk, 1))
        v_t = sh.token(cx, sh.v, i)  # [B, Hkv, 1, dv]
        if decay is not None:  # [B, Hkv, 1, 1 or dk] -> a factor per key row of the state
            g_t = sh.token(cx, decay, i)
            g_t = cx.reshape(g_t, (sh.batch, sh.hkv, cx.shape(g_t)[3], 1))
            state = cx.binary(Binary.MUL, state, g_t)
        if beta is not None:  # v_t <- beta_t * (v_t - k_t^T S)
            got = cx.matmul(cx.transpose(k_t, (0, 1, 3, 2)), state)  # [B, Hkv, 1, dv]
            v_t = cx.binary(Binary.MUL, sh.token(cx, beta, i), cx.binary(Binary.SUB, v_t, got))
        state = cx.binary(Binary.ADD, state, cx.binary(Binary.MUL, k_t, v_t))
        # the G query heads of one K/V head read its state: [B, Hkv, G, dk] @ [B, Hkv, dk, dv]
        q_t = cx.reshape(sh.token(cx, sh.q, i), (sh.batch, sh.hkv, group, sh.dk))
        outs.append(cx.reshape(cx.matmul(q_t, state), (sh.batch, 1, sh.hq * sh.dv)))
    y = cx.binary(Binary.MUL, cx.concat(outs, 1), np.array(scale, np.float32))
    present = cast_to(cx, state, state_dtype) if cx.used(1) else None
    return [cast_to(cx, y, sh.dtype), present]


# --- SwiGLU ---------------------------------------------------------------------------------------
@converter("SwiGLU", since=28)
def swiglu(cx: Ctx) -> Val:
    """Swish_alpha(A) * B = A * sigmoid(alpha * A) * B, of two same-shape inputs."""
    a = _float_input(cx, 0, "A")
    b = _float_input(cx, 1, "B", cx.type(a).dtype)
    if cx.shape(a) != cx.shape(b):
        raise cx.error(f"A {list(cx.shape(a))} and B {list(cx.shape(b))} differ in shape")
    alpha = float(cx.attr("alpha", 1.0))
    arg = a if alpha == 1 else cx.binary(Binary.MUL, a, cx.scalar(alpha))
    return cx.binary(Binary.MUL, cx.binary(Binary.MUL, a, cx.unary(Unary.SIGMOID, arg)), b)


# --- TensorScatter --------------------------------------------------------------------------------
@converter("TensorScatter", since=24)
def tensor_scatter(cx: Ctx) -> Val:
    """present = past with update written at write_indices[b] + s (mod max_len if circular)
    along ``axis``: each cache row reads, at run time, the update row that lands on it (a
    GATHER from the flattened update, clamped) or keeps the past (a WHERE)."""
    past, update = cx.x(0), cx.x(1)
    ps, us = cx.shape(past), cx.shape(update)
    rank = len(ps)
    if cx.type(update).dtype != cx.type(past).dtype:
        raise cx.error(f"update is {cx.type(update).dtype}, past_cache {cx.type(past).dtype}")
    axis = cx.axis(int(cx.attr("axis", -2)), rank)
    if axis == 0 or len(us) != rank or us[:axis] != ps[:axis] or us[axis + 1:] != ps[axis + 1:]:
        raise cx.error(f"update {list(us)} must be past_cache {list(ps)} but for the sequence "
                       f"axis {axis} (not the batch axis)")
    mode = cx.attr("mode", "linear")
    if mode not in ("linear", "circular"):
        raise cx.error(f"mode '{mode}' is not linear or circular")
    batch, length, size = ps[0], us[axis], ps[axis]
    if length > size:
        raise cx.error(f"update's {length} positions exceed the cache's {size}")
    outer, inner = prod(ps[1:axis]), prod(ps[axis + 1:])
    w: Val = np.zeros(batch, np.int64)
    if cx.has(2):
        w = cx.x(2)
        if cx.shape(w) != (batch,) or cx.type(w).dtype != "int64":
            raise cx.error(f"write_indices must be int64 [{batch}]")
    w = cx.reshape(w, (batch, 1))
    m = np.array(size, np.int64)
    pos = np.arange(size, dtype=np.int64)[None, :]
    if mode == "circular":  # (pos - w) mod size, with the floor's sign for any w

        def rem(x: Val) -> Val:  # x - trunc(x / size) * size: in (-size, size), x's sign
            return cx.binary(Binary.SUB, x, cx.binary(Binary.MUL, cx.binary(Binary.DIV, x, m), m))

        rel = rem(cx.binary(Binary.SUB, cx.binary(Binary.ADD, pos, m), rem(w)))  # of a > 0
    else:
        rel = cx.binary(Binary.SUB, pos, w)  # [B, size]: the update row landing on each
    valid = cx.binary(Binary.AND, cx.binary(Binary.GE, rel, np.array(0, np.int64)),
                      cx.binary(Binary.LT, rel, np.array(length, np.int64)))
    src = cx.binary(Binary.MIN, cx.binary(Binary.MAX, rel, np.array(0, np.int64)),
                    np.array(length - 1, np.int64))
    # flat position in update [B, outer, length, inner] of each cache element
    base = (np.arange(batch, dtype=np.int64).reshape(batch, 1, 1, 1) * (outer * length * inner)
            + np.arange(outer, dtype=np.int64).reshape(1, outer, 1, 1) * (length * inner)
            + np.arange(inner, dtype=np.int64).reshape(1, 1, 1, inner))
    src = cx.binary(Binary.MUL, cx.reshape(src, (batch, 1, size, 1)), np.array(inner, np.int64))
    flat = cx.binary(Binary.ADD, src, base)
    rows = cx.add(Op.GATHER, [cx.reshape(update, (prod(us),)), flat], axis=0)
    shape4 = (batch, outer, size, inner)
    y = cx.add(Op.WHERE, [cx.reshape(valid, (batch, 1, size, 1)), rows,
                          cx.reshape(past, shape4)])
    return cx.reshape(y, ps)
