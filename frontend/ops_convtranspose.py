"""ConvTranspose (any rank, group, strides, dilations, pads, output_padding, output_shape,
auto_pad, bias), lowered onto Conv.

A transposed convolution is the convolution of the input, with ``stride - 1`` zeros inserted
between its elements and ``dilation * (k - 1) - pad`` zeros around it, by the kernel flipped
along its spatial axes with its input and output channel axes swapped (per group). Three
lowerings, cheapest first:

- kernel == stride, no dilation (U-Net's 2x2/2): every input element scales its own disjoint
  output patch: one MATMUL and a depth-to-space transpose;
- stride > 1 (VAE decoders' 4x4/2): one ordinary conv per output phase (sub-pixel
  convolution), interleaved channels-last by CONCAT + RESHAPE; no MAC touches an inserted
  zero;
- otherwise (a phase without taps: kernel < stride): the zeros are inserted by layout ops (a
  unit axis per spatial axis, PAD on it, RESHAPE), at ``prod(strides)`` times the MACs.

Crops (pads) and growth (output_padding, a larger output_shape) are SLICE and PAD of the full
output; the bias is added after them, so grown positions hold the bias, as in onnxruntime.
"""
from __future__ import annotations

from collections.abc import Sequence

from ..ir import Binary, Op
from .convert import Ctx, Val, converter, prod
from .ops_nn import conv_nc, conv_operands, to_first, to_last


def _ints(cx: Ctx, name: str, n: int, default: int, low: int) -> list[int]:
    v = cx.ints(name, [default] * n)
    if len(v) != n or any(s < low for s in v):
        raise cx.error(f"{name} {v} must be {n} ints >= {low}")
    return v


def _geometry(cx: Ctx, sizes: Sequence[int], span: Sequence[int], strides: Sequence[int],
              extra: Sequence[int]) -> tuple[list[int], list[int]]:
    """(begin, end) crops of the full output per spatial axis (``span`` is the dilated kernel
    extent, ``extra`` the output_padding), from pads, output_shape or auto_pad."""
    n = len(sizes)
    full = [s * (i - 1) + e + k for i, s, e, k in zip(sizes, strides, extra, span)]
    mode = cx.attr("auto_pad", "NOTSET")
    if mode not in ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"):
        raise cx.error(f"unknown auto_pad '{mode}'")
    shape = cx.ints("output_shape")
    if shape is not None and len(shape) == n + 2:  # some exporters include N and C
        shape = shape[2:]
    if shape is None and mode in ("SAME_UPPER", "SAME_LOWER"):
        shape = [i * s for i, s in zip(sizes, strides)]
        if any(o > f for o, f in zip(shape, full)):  # a kernel + output_padding < stride
            raise cx.unsupported(f"auto_pad {mode} with output {full} smaller than input * "
                                 "strides: onnxruntime keeps the smaller size, the ONNX spec "
                                 "pads it")
    if shape is None:
        if mode == "VALID":
            return [0] * n, [0] * n
        pads = _ints(cx, "pads", 2 * n, 0, 0)
        return pads[:n], pads[n:]
    if len(shape) != n:
        raise cx.error(f"output_shape {shape} must have {n} spatial dims")
    # the crops as the spec splits them; a negative crop adds zeros. Without auto_pad, an
    # output_shape larger than the full output grows it at the end, as output_padding does
    # (onnxruntime and the ONNX reference agree); with auto_pad the spec's split (floor
    # division) stands, where onnxruntime keeps the full size or refuses
    total = [f - o for f, o in zip(full, shape)]
    if mode == "NOTSET" and any(t < 0 for t in total):
        return [max(0, t - t // 2) for t in total], [min(t, t // 2) for t in total]
    small = [t // 2 for t in total]
    if mode == "SAME_UPPER":
        return small, [t - h for t, h in zip(total, small)]
    return [t - h for t, h in zip(total, small)], small


@converter("ConvTranspose")
def conv_transpose(cx: Ctx) -> Val:
    x, w, n, group, kernel = conv_operands(cx, "[C, M/group, *K]")
    xs, ws = cx.shape(x), cx.shape(w)
    c, (wc, mg) = xs[1], ws[:2]
    if wc != c:
        raise cx.error(f"weight {list(ws)} does not fit {c} input channels")
    strides = _ints(cx, "strides", n, 1, 1)
    dilations = _ints(cx, "dilations", n, 1, 1)
    extra = _ints(cx, "output_padding", n, 0, 0)
    span = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    begin, end = _geometry(cx, xs[2:], span, strides, extra)
    full = [s * (i - 1) + e + k for i, s, e, k in zip(xs[2:], strides, extra, span)]
    if any(f - b - e < 0 for f, b, e in zip(full, begin, end)):
        raise cx.error(f"pads {begin + end} leave a negative output size")
    bias = cx.x(2) if cx.has(2) else None
    # kernel [C, Mg, *K] -> the equivalent conv's [M, C/group, *K], flipped along *K
    wt = cx.reshape(w, [group, c // group, mg, *kernel])
    wt = cx.reshape(cx.transpose(wt, (0, 2, 1, *range(3, 3 + n))),
                    [group * mg, c // group, *kernel])
    wt = cx.slice(wt, [0, 0, *(k - 1 for k in kernel)], [1, 1, *([-1] * n)], cx.shape(wt))
    if group == 1 and kernel == strides and dilations == [1] * n:
        y = _crop(cx, _patches(cx, x, w), [0] * n, extra, begin, end)
    elif any(s > 1 for s in strides) and (y := _phases(cx, x, wt, group, strides, dilations,
                                                       full)) is not None:
        y = _crop(cx, y, [0] * n, [0] * n, begin, end)
    else:
        return _zero_inserted(cx, x, wt, bias, group, strides, dilations, span, extra, begin,
                              end)
    # the output_padding (and any growth) holds the bias alone: add it after the crop
    return y if bias is None else cx.binary(Binary.ADD, y, cx.reshape(bias, [1, mg * group]
                                                                         + [1] * n))


def _zero_inserted(cx: Ctx, x: Val, wt: Val, bias: Val | None, group: int,
                   strides: Sequence[int], dilations: Sequence[int], span: Sequence[int],
                   extra: Sequence[int], begin: Sequence[int], end: Sequence[int]) -> Val:
    """The conv of the input with stride - 1 zeros between its elements (any case)."""
    xs = cx.shape(x)
    n = len(xs) - 2
    batch, c = xs[:2]
    # [N, C, S1, 1, S2, 1, ...] padded by s - 1 on the unit axes
    up = cx.reshape(x, [batch, c, *(d for i in xs[2:] for d in (i, 1))])
    pads = [0] * 2 * len(cx.shape(up))
    for i, s in enumerate(strides):
        pads[len(pads) // 2 + 3 + 2 * i] = s - 1
    if any(s > 1 for s in strides):
        up = cx.add(Op.PAD, [up], pads=tuple(pads), value=0.0)
    up = cx.reshape(up, [batch, c, *(i * s for i, s in zip(xs[2:], strides))])
    # conv pads around it; the s - 1 trailing zeros already count towards the end pad
    lo = [k - 1 - b for k, b in zip(span, begin)]
    hi = [k - 1 - e + p - (s - 1) for k, e, p, s in zip(span, end, extra, strides)]
    up = _crop(cx, up, [0] * n, [0] * n, [max(0, -v) for v in lo], [max(0, -v) for v in hi])
    return conv_nc(cx, up, wt, bias, group, [1] * n, dilations, [max(0, v) for v in lo],
                   [max(0, v) for v in hi])


def _phases(cx: Ctx, x: Val, wt: Val, group: int, strides: Sequence[int],
            dilations: Sequence[int], full: Sequence[int]) -> Val | None:
    """The full output [N, M, *F] as prod(strides) ordinary convs, one per output phase
    (sub-pixel convolution): output o = r + s * q receives the taps k with k * d = r mod s,
    from inputs q - (k * d - r) / s, a correlation of stride 1 with a strided slice of the
    flipped kernel. No MAC is spent on an inserted zero. The phases, channels last, are
    padded to equal length, stacked on unit axes and interleaved by a reshape; one transpose
    at the end. None when some phase has no taps (kernel < stride): the caller inserts zeros
    instead."""
    xs, ks = cx.shape(x), cx.shape(wt)
    n = len(xs) - 2
    axes = []  # per axis, per phase: (kernel start, step, count, dilation, pad0, pad1, Q)
    for size, k, s, d, f in zip(xs[2:], ks[2:], strides, dilations, full):
        phases = []
        for r in range(s):
            taps = [t for t in range(k) if (t * d - r) % s == 0]
            if not taps:
                return None
            shift = [(t * d - r) // s for t in taps]
            q = -(-(f - r) // s)
            step = taps[1] - taps[0] if len(taps) > 1 else 1
            dil = shift[1] - shift[0] if len(taps) > 1 else 1
            # flipped kernel index k - 1 - t: the last tap comes first
            phases.append((k - 1 - taps[-1], step, len(taps), dil, shift[-1],
                           q - size - shift[0], q))
        axes.append(phases)
    rows = [ph[0][6] for ph in axes]  # phase 0 is the longest
    batch, m = xs[0], ks[0]

    def conv(combo: Sequence[int]) -> Val:
        ph = [axes[i][r] for i, r in enumerate(combo)]
        cut = [max(0, -p[5]) for p in ph]
        xc = cx.slice(x, [0] * (n + 2), [1] * (n + 2),
                      [*xs[:2], *(size - c for size, c in zip(xs[2:], cut))])
        wk = cx.slice(wt, [0, 0, *(p[0] for p in ph)], [1, 1, *(p[1] for p in ph)],
                      [*ks[:2], *(p[2] for p in ph)])
        y = conv_nc(cx, xc, wk, None, group, [1] * n, [p[3] for p in ph], [p[4] for p in ph],
                    [max(0, p[5]) for p in ph], last=True)  # [N, *Q, M]
        short = [rw - p[6] for rw, p in zip(rows, ph)]
        if any(short):  # pad to the longest phase, on the end
            y = cx.add(Op.PAD, [y], pads=(0,) * (n + 2) + (0, *short, 0), value=0.0)
        return cx.reshape(y, [batch, *(d for rw in rows for d in (rw, 1)), m])

    def stack(prefix: tuple[int, ...]) -> Val:
        i = len(prefix)  # interleave axis i's phases on its unit axis 2 + 2 i
        if i == n:
            return conv(prefix)
        return cx.concat([stack((*prefix, r)) for r in range(strides[i])], 2 + 2 * i)

    y = cx.reshape(stack(()), [batch, *(rw * s for rw, s in zip(rows, strides)), m])
    y = cx.slice(y, [0] * (n + 2), [1] * (n + 2), [batch, *full, m])
    return cx.transpose(y, to_first(n + 2))


def _patches(cx: Ctx, x: Val, w: Val) -> Val:
    """Kernel == stride, no dilation: output patch i is x[i] (over channels) @ w, disjoint;
    channels last, [N, *S, C] @ [C, prod(K) * M] -> [N, S1, K1, S2, K2, ..., M] (a transpose
    moving rows of M) -> [N, S1*K1, ..., M], and one transpose to channels first at the end,
    which the layout pass cancels against a following conv's."""
    xs, ws = cx.shape(x), cx.shape(w)
    n = len(xs) - 2
    (batch, c), m, kernel = xs[:2], ws[1], ws[2:]
    wk = cx.reshape(cx.transpose(w, (0, *range(2, n + 2), 1)), [c, prod(kernel) * m])
    y = cx.matmul(cx.transpose(x, to_last(n + 2)), wk)
    y = cx.reshape(y, [batch, *xs[2:], *kernel, m])  # axes: N, S1..Sn, K1..Kn, M
    perm = [0]
    for i in range(n):
        perm += [1 + i, n + 1 + i]
    y = cx.transpose(y, [*perm, 2 * n + 1])
    y = cx.reshape(y, [batch, *(i * k for i, k in zip(xs[2:], kernel)), m])
    return cx.transpose(y, to_first(n + 2))


def _crop(cx: Ctx, y: Val, pad_lo: Sequence[int], pad_hi: Sequence[int],
          cut_lo: Sequence[int], cut_hi: Sequence[int]) -> Val:
    """``y`` [N, C, *S] with ``pad_*`` zeros added and ``cut_*`` elements removed at each end
    of each spatial axis (per axis, one of the two is zero or they net out first)."""
    ys = cx.shape(y)
    n = len(ys) - 2
    lo = [p - q for p, q in zip(pad_lo, cut_lo)]
    hi = [p - q for p, q in zip(pad_hi, cut_hi)]
    if any(v < 0 for v in lo + hi):
        counts = [*ys[:2], *(s + min(0, a) + min(0, b) for s, a, b in zip(ys[2:], lo, hi))]
        y = cx.slice(y, [0, 0, *(max(0, -a) for a in lo)], [1] * (n + 2), counts)
    if any(v > 0 for v in lo + hi):
        pads = [0, 0, *(max(0, a) for a in lo), 0, 0, *(max(0, b) for b in hi)]
        y = cx.add(Op.PAD, [y], pads=tuple(pads), value=0.0)
    return y
