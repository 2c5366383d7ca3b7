"""Conv, pooling, BatchNormalization, LRN, Gemm and MatMul.

Convs and pools run on the channels-last WINDOW op, so each is wrapped in a transpose pair
NCHW -> NHWC -> NCHW (the layout pass cancels the pairs between consecutive layers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..ir import Binary, Op, Reduce, Unary
from .convert import Ctx, Val, converter, prod


def to_last(rank: int) -> tuple[int, ...]:
    """The permutation NC* -> N*C."""
    return (0, *range(2, rank), 1)


def to_first(rank: int) -> tuple[int, ...]:
    """The permutation N*C -> NC*."""
    return (0, rank - 1, *range(1, rank - 1))


def _spatial(cx: Ctx, name: str, n: int, default: int) -> list[int]:
    v = cx.ints(name, [default] * n)
    if len(v) != n or any(s < 1 for s in v):
        raise cx.error(f"{name} {v} must be {n} positive ints")
    return v


def _pads(cx: Ctx, sizes: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
          dilations: Sequence[int]) -> tuple[list[int], list[int]]:
    """(begin, end) pads per spatial axis from ``auto_pad`` or ``pads``."""
    n = len(sizes)
    mode = cx.attr("auto_pad", "NOTSET")
    if mode in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for size, k, s, d in zip(sizes, kernel, strides, dilations):
            out = -(-size // s)
            total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
            small = total // 2
            begin.append(small if mode == "SAME_UPPER" else total - small)
            end.append(total - begin[-1])
        return begin, end
    if mode == "VALID":
        return [0] * n, [0] * n
    if mode != "NOTSET":
        raise cx.error(f"unknown auto_pad '{mode}'")
    pads = cx.ints("pads", [0] * 2 * n)
    if len(pads) != 2 * n or any(p < 0 for p in pads):
        raise cx.error(f"pads {pads} must be {2 * n} non-negative ints")
    return pads[:n], pads[n:]


def _window(cx: Ctx, x: Val, kernel: Sequence[int], strides: Sequence[int],
            dilations: Sequence[int], begin: Sequence[int], end: Sequence[int], pad: float) -> Val:
    """NC* -> N*C, then the [N, *O, *K, C] patches."""
    rank = len(cx.shape(x))
    return cx.add(Op.WINDOW, [cx.transpose(x, to_last(rank))], kernel=tuple(kernel),
                  strides=tuple(strides), dilations=tuple(dilations),
                  pads=tuple(begin) + tuple(end), pad=float(pad))


# --- Conv -------------------------------------------------------------------------------------
def conv_operands(cx: Ctx, weight_layout: str) -> tuple[Val, Val, int, int, list[int]]:
    """Input, weight, spatial rank, group and kernel of a Conv or ConvTranspose, checked
    (the weight's channel axes are the caller's to check)."""
    x, w = cx.x(0), cx.x(1)
    xs, ws = cx.shape(x), cx.shape(w)
    if len(xs) < 3 or len(ws) != len(xs):
        raise cx.error(f"input {list(xs)} and weight {list(ws)} must be [N, C, *S] and "
                       f"{weight_layout} of the same rank >= 3")
    kernel = list(ws[2:])
    group = int(cx.attr("group", 1))
    if cx.ints("kernel_shape") not in (None, kernel):
        raise cx.error(f"kernel_shape {cx.ints('kernel_shape')} differs from the weight's {kernel}")
    if group < 1 or xs[1] % group:
        raise cx.error(f"group {group} does not fit {xs[1]} input channels, weight {list(ws)}")
    return x, w, len(xs) - 2, group, kernel


@converter("Conv")
def conv(cx: Ctx) -> Val:
    x, w, n, group, kernel = conv_operands(cx, "[M, C/group, *K]")
    xs, ws = cx.shape(x), cx.shape(w)
    c, (m, cg) = xs[1], ws[:2]
    if m % group or cg * group != c:
        raise cx.error(f"group {group} does not fit {c} input channels, weight {list(ws)}")
    strides, dilations = _spatial(cx, "strides", n, 1), _spatial(cx, "dilations", n, 1)
    begin, end = _pads(cx, xs[2:], kernel, strides, dilations)
    return conv_nc(cx, x, w, cx.x(2) if cx.has(2) else None, group, strides, dilations,
                   begin, end)


def conv_nc(cx: Ctx, x: Val, w: Val, bias: Val | None, group: int, strides: Sequence[int],
            dilations: Sequence[int], begin: Sequence[int], end: Sequence[int],
            last: bool = False) -> Val:
    """The convolution of x [N, C, *S] by w [M, C/group, *K] (+ bias [M]), checked shapes and
    non-negative pads: the body of Conv, shared with ConvTranspose. [N, M, *O], or with
    ``last`` the channels-last [N, *O, M] it computes."""
    xs, ws = cx.shape(x), cx.shape(w)
    n = len(xs) - 2
    (batch, c), (m, cg), kernel = xs[:2], ws[:2], list(ws[2:])
    win = _window(cx, x, kernel, strides, dilations, begin, end, 0.0)
    out = list(cx.shape(win)[1:1 + n])
    taps = prod(kernel)
    k_first = (*range(2, 2 + n), 1, 0)  # W [M, Cg, *K] -> [*K, Cg, M]
    if group == 1:
        patches = cx.reshape(win, [batch, *out, taps * c])
        y = cx.matmul(patches, cx.reshape(cx.transpose(w, k_first), [taps * c, m]))
    elif group == c == m:  # depthwise: patches * per-channel taps, summed over the kernel axes
        taps_c = cx.reshape(cx.transpose(w, k_first), [*kernel, c])
        y = cx.reduce(Reduce.SUM, cx.binary(Binary.MUL, win, taps_c), range(1 + n, 1 + 2 * n))
        y = cx.reshape(y, [batch, *out, c])
    else:  # grouped: one batched matmul over the groups
        mg = m // group
        p = cx.reshape(win, [batch, *out, taps, group, cg])
        p = cx.transpose(p, (n + 2, *range(n + 2), n + 3))  # [G, N, *O, taps, Cg]
        p = cx.reshape(p, [group, batch * prod(out), taps * cg])
        wg = cx.reshape(w, [group, mg, cg, *kernel])
        wg = cx.transpose(wg, (0, *range(3, 3 + n), 2, 1))  # [G, *K, Cg, Mg]
        y = cx.matmul(p, cx.reshape(wg, [group, taps * cg, mg]))  # [G, N*O, Mg]
        y = cx.reshape(cx.transpose(y, (1, 0, 2)), [batch, *out, m])
    if bias is not None:  # along the channel (last) axis, before the transpose back
        y = cx.binary(Binary.ADD, y, cx.reshape(bias, [1] * (n + 1) + [m]))
    return y if last else cx.transpose(y, to_first(n + 2))


# --- pooling ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PoolGeometry:
    """Per spatial axis: input size, kernel, stride, dilation, declared pads, output size."""

    sizes: list[int]
    kernel: list[int]
    strides: list[int]
    dilations: list[int]
    begin: list[int]
    end: list[int]
    outs: list[int]

    def counts(self, include_pad: bool) -> np.ndarray:
        """[*O]: how many taps of each window fall inside the input (or the declared pads);
        the ceil_mode overhang never counts (as in onnxruntime)."""
        count = np.ones((), np.float32)
        for size, k, s, d, pb, pe, out in zip(self.sizes, self.kernel, self.strides,
                                              self.dilations, self.begin, self.end, self.outs):
            taps = (np.arange(out) * s - pb)[:, None] + np.arange(k)[None, :] * d
            lo, hi = (-pb, size + pe) if include_pad else (0, size)
            count = np.multiply.outer(count, ((taps >= lo) & (taps < hi)).sum(axis=1))
        return count.astype(np.float32)


def _pool(cx: Ctx, pad: float) -> tuple[Val, PoolGeometry]:
    """The [N, *O, *K, C] window of a pool and its geometry. With ceil_mode the last window
    may run past the end pad (the window's end pad grows), but may not start in it."""
    x = cx.x(0)
    xs = cx.shape(x)
    n = len(xs) - 2
    kernel = cx.ints("kernel_shape")
    if n < 1 or kernel is None or len(kernel) != n or any(k < 1 for k in kernel):
        raise cx.error(f"kernel_shape {kernel} does not fit input {list(xs)}")
    strides, dilations = _spatial(cx, "strides", n, 1), _spatial(cx, "dilations", n, 1)
    sizes = list(xs[2:])
    begin, end = _pads(cx, sizes, kernel, strides, dilations)
    ceil = bool(cx.attr("ceil_mode", 0))
    outs, ends = [], []
    for size, k, s, d, pb, pe in zip(sizes, kernel, strides, dilations, begin, end):
        span = (k - 1) * d + 1
        room = size + pb + pe - span
        if room < 0:
            raise cx.error(f"kernel {kernel} (dilated) is larger than the padded input {sizes}")
        o = (-(-room // s) if ceil else room // s) + 1
        if ceil and (o - 1) * s >= size + pb:
            o -= 1
        outs.append(o)
        ends.append(max(pe, (o - 1) * s + span - size - pb))
    win = _window(cx, x, kernel, strides, dilations, begin, ends, pad)
    return win, PoolGeometry(sizes, kernel, strides, dilations, begin, end, outs)


def _reduce_window(cx: Ctx, fn: Reduce, win: Val, g: PoolGeometry) -> Val:
    """[N, *O, *K, C] -> [N, *O, C], reduced over the kernel axes."""
    n = len(g.kernel)
    xs = cx.shape(cx.x(0))
    return cx.reshape(cx.reduce(fn, win, range(1 + n, 1 + 2 * n)), [xs[0], *g.outs, xs[1]])


SMALL_INTS = ("int8", "uint8", "int16", "uint16")  # every value exact in float32


@converter("MaxPool")
def max_pool(cx: Ctx) -> list[Val | None]:
    dtype = cx.type(cx.x(0)).dtype
    if dtype in SMALL_INTS:  # exact in float32; a window all in the pads gives the type's min
        cx.inputs[0] = cx.add(Op.CAST, [cx.x(0)], to="float32")
    win, g = _pool(cx, float("-inf"))
    y = cx.transpose(_reduce_window(cx, Reduce.MAX, win, g), to_first(len(g.kernel) + 2))
    if dtype in SMALL_INTS:
        low = np.array(np.iinfo(dtype).min, np.float32)
        y = cx.add(Op.CAST, [cx.binary(Binary.MAX, y, low)], to=dtype)
    indices = None
    if cx.used(1):
        from .ops_pool_indices import max_pool_indices  # it imports this module

        indices = max_pool_indices(cx, win, g)
    return [y, indices]


@converter("AveragePool")
def average_pool(cx: Ctx) -> Val:
    """Sum over the window, divided by a per-position count map computed now."""
    win, g = _pool(cx, 0.0)
    y = _reduce_window(cx, Reduce.SUM, win, g)
    count = g.counts(bool(cx.attr("count_include_pad", 0)))
    uniform = np.all(count == count.flat[0])
    div = cx.scalar(count.flat[0]) if uniform else count.reshape(1, *g.outs, 1)
    return cx.transpose(cx.binary(Binary.DIV, y, div), to_first(len(g.kernel) + 2))


@converter("GlobalAveragePool", "GlobalMaxPool")
def global_pool(cx: Ctx) -> Val:
    x = cx.x(0)
    rank = len(cx.shape(x))
    if rank < 2:
        raise cx.error("input must be [N, C, *S]")
    fn = Reduce.MEAN if cx.op_type == "GlobalAveragePool" else Reduce.MAX
    return cx.reduce(fn, x, range(2, rank))


# --- normalization ----------------------------------------------------------------------------
@converter("BatchNormalization")
def batch_norm(cx: Ctx) -> Val:
    """Inference: x * scale + shift per channel, scale = gamma / sqrt(var + eps) and shift =
    beta - mean * scale (folded now when the statistics are constants)."""
    if cx.attr("training_mode", 0):
        raise cx.unsupported("training_mode=1 is not supported (inference only)")
    if any(cx.used(i) for i in range(1, 5)):
        raise cx.unsupported("the running/saved statistics outputs are not supported")
    x = cx.x(0)
    xs = cx.shape(x)
    if len(xs) < 2:
        raise cx.error(f"input {list(xs)} must be [N, C, ...]")
    params = []
    for i in range(1, 5):
        p = cx.x(i)
        size = prod(cx.shape(p))
        # per channel, or (opset < 9, spatial=0) per activation
        params.append(cx.reshape(p, [xs[1]] + [1] * (len(xs) - 2) if size == xs[1] else xs[1:]))
    gamma, beta, mean, var = params
    std = cx.unary(Unary.SQRT, cx.binary(Binary.ADD, var, cx.scalar(cx.attr("epsilon", 1e-5))))
    scale = cx.binary(Binary.DIV, gamma, std)
    shift = cx.binary(Binary.SUB, beta, cx.binary(Binary.MUL, mean, scale))
    return cx.binary(Binary.ADD, cx.binary(Binary.MUL, x, scale), shift)


@converter("LRN")
def lrn(cx: Ctx) -> Val:
    """x / (bias + alpha/size * sum of x^2 over a channel window)^beta. The window sum runs on
    WINDOW with the channel axis as its spatial axis: [N, C, *S] -> [N, C, prod(S)]."""
    x = cx.x(0)
    xs = cx.shape(x)
    size = int(cx.attr("size", 0))
    if size < 1 or len(xs) < 2:
        raise cx.error(f"size {size} must be positive and the input [N, C, ...]")
    sq = cx.reshape(cx.binary(Binary.MUL, x, x), [xs[0], xs[1], prod(xs[2:])])
    lo = (size - 1) // 2
    win = cx.add(Op.WINDOW, [sq], kernel=(size,), strides=(1,), dilations=(1,),
                 pads=(lo, size - 1 - lo), pad=0.0)
    total = cx.reshape(cx.reduce(Reduce.SUM, win, (2,)), xs)
    alpha, beta, bias = cx.attr("alpha", 1e-4), cx.attr("beta", 0.75), cx.attr("bias", 1.0)
    base = cx.binary(Binary.ADD, cx.binary(Binary.MUL, total, cx.scalar(alpha / size)),
                     cx.scalar(bias))
    return cx.binary(Binary.DIV, x, cx.binary(Binary.POW, base, cx.scalar(beta)))


# --- matrix products --------------------------------------------------------------------------
@converter("Gemm")
def gemm(cx: Ctx) -> Val:
    """alpha * A' @ B' + beta * C (alpha folds into a constant B, beta into a constant C)."""
    a, b = cx.x(0), cx.x(1)
    if len(cx.shape(a)) != 2 or len(cx.shape(b)) != 2:
        raise cx.error(f"A {list(cx.shape(a))} and B {list(cx.shape(b))} must be matrices")
    if cx.attr("transA", 0):
        a = cx.transpose(a, (1, 0))
    if cx.attr("transB", 0):
        b = cx.transpose(b, (1, 0))
    alpha, beta = cx.attr("alpha", 1.0), cx.attr("beta", 1.0)
    scaled = alpha != 1 and isinstance(b, np.ndarray)
    y = cx.matmul(a, cx.binary(Binary.MUL, b, cx.scalar(alpha)) if scaled else b)
    if alpha != 1 and not scaled:
        y = cx.binary(Binary.MUL, y, cx.scalar(alpha))
    if cx.has(2) and beta != 0:  # onnxruntime ignores C when beta == 0
        c = cx.x(2)
        y = cx.binary(Binary.ADD, y, c if beta == 1 else cx.binary(Binary.MUL, c, cx.scalar(beta)))
    return y


@converter("MatMul")
def matmul(cx: Ctx) -> Val:
    return numpy_matmul(cx, cx.x(0), cx.x(1))


def numpy_matmul(cx: Ctx, a: Val, b: Val) -> Val:
    """numpy matmul: a 1-D operand gets a unit axis that is dropped from the result."""
    sa, sb = cx.shape(a), cx.shape(b)
    if not sa or not sb:
        raise cx.error("operands must have rank >= 1")
    if len(sa) == 1:
        a = cx.reshape(a, [1, sa[0]])
    if len(sb) == 1:
        b = cx.reshape(b, [sb[0], 1])
    y = cx.matmul(a, b)
    shape = list(cx.shape(y))
    if len(sb) == 1:
        shape.pop(-1)
    if len(sa) == 1:
        shape.pop(-2 if len(sb) > 1 else -1)
    return cx.reshape(y, shape)

