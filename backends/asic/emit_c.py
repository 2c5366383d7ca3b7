"""C export of an int8 program: portable C99 that computes ``reference.py`` bit for bit.

The generated ``<name>.c`` holds the weights as ``static const`` arrays, one static arena laid
out by the memory plan, a small library of generic kernels (one per ``Kind``, in the style of
the TFLite Micro / CMSIS-NN reference kernels) and one call per step with constant arguments.
Every shape-dependent index computation (strides, broadcasting, coalescing of contiguous axes)
happens here, at generation time; the kernels only walk what they are given.

Arithmetic is int8/int16/int32; the one 64-bit operation is the 32x32->64 product inside the
requantization high multiply (``fixed_point.high_mul``), as in gemmlowp and TFLite. Float
appears only in ``<name>_run``'s quantize/dequantize boundary, defined in float32 exactly as
``fixed_point.quantize``/``dequantize``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from math import prod

import numpy as np

from .fixed_point import I32_MIN
from .plan import AsicPlan
from .program import Kind, QProgram, QTensor, Requant, Step

MAX_RANK = 8  # the kernels' index arrays (after merging contiguous axes)
MAX_SPATIAL = 3  # window kernels see [N, D, H, W, C]; 1-D and 2-D windows get leading 1s
PER_LINE = {"int8_t": 24, "int32_t": 12}  # numbers per line in the constant tables

# ------------------------------------------------------------------------------------------
# The C kernel library. Each snippet is emitted only if a step needs it (directly or through
# another snippet), because an unused static function is a -Wall warning.
# ------------------------------------------------------------------------------------------

_SNIPPETS: dict[str, tuple[tuple[str, ...], str]] = {}  # name -> (dependencies, C code)


def _snippet(name: str, deps: Sequence[str], code: str) -> None:
    _SNIPPETS[name] = (tuple(deps), code.strip("\n") + "\n")


_snippet("sat_add", [], """
/* a + b saturated to int32: an int32 bias on a large accumulator cannot wrap (the reference
 * adds in int64 and saturates before requantizing). */
static int32_t sat_add(int32_t a, int32_t b)
{
    if (b > 0 && a > INT32_MAX - b) return INT32_MAX;
    if (b < 0 && a < INT32_MIN - b) return INT32_MIN;
    return a + b;
}
""")

_snippet("sat_sub", [], """
static int32_t sat_sub(int32_t a, int32_t b)
{
    if (b < 0 && a > INT32_MAX + b) return INT32_MAX;
    if (b > 0 && a < INT32_MIN + b) return INT32_MIN;
    return a - b;
}
""")

_snippet("sat_shl", [], """
/* x * 2^s saturated to int32, 0 <= s <= 30 (TFLite's saturating left shift). A multiply,
 * not <<, because shifting a negative value left is undefined in C99. */
static int32_t sat_shl(int32_t x, int32_t s)
{
    const int32_t limit = INT32_MAX >> s;
    if (x > limit) return INT32_MAX;
    if (x < -limit - 1) return INT32_MIN;
    return x * ((int32_t)1 << s);
}
""")

_snippet("high_mul", [], """
/* gemmlowp SaturatingRoundingDoublingHighMul: round(a * b / 2^31), halves away from zero.
 * The 32x32->64 product (with its nudge and division) is the only 64-bit arithmetic in the
 * program. C's division truncates toward zero, as fixed_point.high_mul spells out. */
static int32_t high_mul(int32_t a, int32_t b)
{
    int64_t ab;
    if (a == INT32_MIN && b == INT32_MIN) return INT32_MAX;
    ab = (int64_t)a * (int64_t)b;
    ab += ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30));
    return (int32_t)(ab / ((int64_t)1 << 31));
}
""")

_snippet("divide_by_pot", [], """
/* gemmlowp RoundingDivideByPOT: x / 2^e rounded half away from zero, 0 <= e <= 31.
 * x >> e on a negative int32 is an arithmetic shift on every compiler we target (it is
 * implementation-defined in C99); & on int32_t is two's complement by definition. */
static int32_t divide_by_pot(int32_t x, int32_t e)
{
    const int32_t mask = (int32_t)(((uint32_t)1 << e) - 1u);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> e) + (remainder > threshold ? 1 : 0);
}
""")

_snippet("mbqm", ["sat_shl", "high_mul", "divide_by_pot"], """
/* TFLite MultiplyByQuantizedMultiplier: shift > 0 shifts left (saturating), < 0 right. */
static int32_t mbqm(int32_t x, int32_t multiplier, int32_t shift)
{
    const int32_t left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
    return divide_by_pot(high_mul(sat_shl(x, left), multiplier), right);
}
""")

_snippet("requant", ["mbqm"], """
/* Requantization of one step: multiplier/shift arrays of n entries, n = 1 (one value),
 * n = the output's channels (entry = flat index % n) or n = the output's size. */
typedef struct {
    const int32_t *mult, *shift;
    int32_t n, zp, lo, hi;
} rq_t;

/* clamp(mbqm(acc) + zp, lo, hi) (fixed_point.requantize); clamped before adding the zero
 * point so that no int32 overflow is possible. */
static int8_t rq_at(const rq_t *rq, int32_t acc, int32_t k)
{
    int32_t v = mbqm(acc, rq->mult[k], rq->shift[k]);
    if (v < rq->lo - rq->zp) v = rq->lo - rq->zp;
    if (v > rq->hi - rq->zp) v = rq->hi - rq->zp;
    return (int8_t)(v + rq->zp);
}
""")

_snippet("index", [], """
/* Multi-index walking for the strided kernels: shapes have at most 8 axes after contiguous
 * axes were merged at generation time; the last axis is the kernels' inner loop. */
static int32_t offset_of(int32_t rank, const int32_t *idx, const int32_t *stride)
{
    int32_t a, off = 0;
    for (a = 0; a < rank; ++a) off += idx[a] * stride[a];
    return off;
}

/* Advance idx over dims, last axis fastest; 0 once every index was visited. */
static int next_index(int32_t rank, const int32_t *dims, int32_t *idx)
{
    int32_t a;
    for (a = rank - 1; a >= 0; --a) {
        if (++idx[a] < dims[a]) return 1;
        idx[a] = 0;
    }
    return 0;
}
""")

_snippet("window", [], """
/* Patches of [N, D, H, W, C] (ir.interp.window): unused leading spatial axes have size 1.
 * A tap outside the input reads the step's pad code. */
typedef struct {
    int32_t batch, c;  /* N and the input channels */
    int32_t in[3], out[3];  /* spatial sizes of the input and of the output positions */
    int32_t k[3], s[3], d[3], p[3];  /* kernel, stride, dilation, padding before */
} win_t;

static int32_t window_positions(const win_t *g)
{
    return g->batch * g->out[0] * g->out[1] * g->out[2];
}

/* The input coordinates of position pos's first tap (org); returns its batch index. */
static int32_t window_origin(const win_t *g, int32_t pos, int32_t org[3])
{
    int32_t a;
    for (a = 2; a >= 0; --a) {
        org[a] = (pos % g->out[a]) * g->s[a] - g->p[a];
        pos /= g->out[a];
    }
    return pos;
}

/* The offset of tap (k0, k1, k2)'s pixel in the input, or -1 in the padding. */
static int32_t window_at(const win_t *g, int32_t n, const int32_t org[3], int32_t k0,
                         int32_t k1, int32_t k2)
{
    const int32_t i0 = org[0] + k0 * g->d[0], i1 = org[1] + k1 * g->d[1];
    const int32_t i2 = org[2] + k2 * g->d[2];
    if (i0 < 0 || i0 >= g->in[0] || i1 < 0 || i1 >= g->in[1] || i2 < 0 || i2 >= g->in[2])
        return -1;
    return (((n * g->in[0] + i0) * g->in[1] + i1) * g->in[2] + i2) * g->c;
}
""")

_snippet("reduce", [], """
/* A reduction over axes (keepdims): the kept axes (the output's shape) and the reduced
 * axes, each with the input's strides. */
typedef struct {
    int32_t rank, dims[8], stride[8];
    int32_t rrank, rdims[8], rstride[8];
} red_t;
""")

_snippet("conv", ["window", "requant", "sat_add"], """
/* CONV: out[pos, j] = rq(bias[j] + sum over taps t, channels c of (x - zx) * w[j][t][c]),
 * the implicit im2col of the patches (a window of 1x1x1 taps for a plain matmul). The
 * weights are stored transposed, [N][K], so the inner loop reads both operands in order. */
static void conv(const int8_t *x, int8_t *y, const win_t *g, int32_t zx, int32_t padv,
                 const int8_t *w, const int32_t *bias, int32_t nbias, int32_t oc,
                 const rq_t *rq)
{
    const int32_t npos = window_positions(g), c = g->c;
    const int32_t kc = g->k[0] * g->k[1] * g->k[2] * c;
    int32_t pos, j, k0, k1, k2, ci, org[3];
    for (pos = 0; pos < npos; ++pos) {
        const int32_t n = window_origin(g, pos, org);
        for (j = 0; j < oc; ++j) {
            const int32_t i = pos * oc + j;
            const int8_t *wt = w + j * kc;
            int32_t acc = 0;
            for (k0 = 0; k0 < g->k[0]; ++k0)
                for (k1 = 0; k1 < g->k[1]; ++k1)
                    for (k2 = 0; k2 < g->k[2]; ++k2, wt += c) {
                        const int32_t at = window_at(g, n, org, k0, k1, k2);
                        if (at >= 0) {
                            const int8_t *px = x + at;
                            for (ci = 0; ci < c; ++ci) acc += ((int32_t)px[ci] - zx) * wt[ci];
                        } else if (padv != zx) {
                            for (ci = 0; ci < c; ++ci) acc += (padv - zx) * wt[ci];
                        }
                    }
            y[i] = rq_at(rq, sat_add(acc, bias[i % nbias]), i % rq->n);
        }
    }
}
""")

_snippet("depthwise", ["window", "requant", "sat_add"], """
/* DEPTHWISE: out[pos, c] = rq(bias[c] + sum over taps t of (x - zx) * w[t][c]). */
static void depthwise(const int8_t *x, int8_t *y, const win_t *g, int32_t zx, int32_t padv,
                      const int8_t *w, const int32_t *bias, int32_t nbias, const rq_t *rq)
{
    const int32_t npos = window_positions(g), c = g->c;
    int32_t pos, ch, k0, k1, k2, org[3];
    for (pos = 0; pos < npos; ++pos) {
        const int32_t n = window_origin(g, pos, org);
        for (ch = 0; ch < c; ++ch) {
            const int32_t i = pos * c + ch;
            const int8_t *wt = w + ch;
            int32_t acc = 0;
            for (k0 = 0; k0 < g->k[0]; ++k0)
                for (k1 = 0; k1 < g->k[1]; ++k1)
                    for (k2 = 0; k2 < g->k[2]; ++k2, wt += c) {
                        const int32_t at = window_at(g, n, org, k0, k1, k2);
                        acc += ((at >= 0 ? (int32_t)x[at + ch] : padv) - zx) * *wt;
                    }
            y[i] = rq_at(rq, sat_add(acc, bias[i % nbias]), i % rq->n);
        }
    }
}
""")

_snippet("sum_pool", ["window", "reduce", "index", "requant"], """
/* SUM_POOL: rq(sum of (x - zx)) over a window (win) or over axes (red); the other is 0.
 * Averages are sums whose requantization multiplier holds the divisor (per position when
 * padding is not counted). */
static void sum_pool(const int8_t *x, int8_t *y, const win_t *win, const red_t *red,
                     int32_t zx, int32_t padv, const rq_t *rq)
{
    int32_t i = 0, org[3], k0, k1, k2, idx[8] = {0};
    if (win) {
        const int32_t npos = window_positions(win), c = win->c;
        int32_t pos, ch;
        for (pos = 0; pos < npos; ++pos) {
            const int32_t n = window_origin(win, pos, org);
            for (ch = 0; ch < c; ++ch, ++i) {
                int32_t acc = 0;
                for (k0 = 0; k0 < win->k[0]; ++k0)
                    for (k1 = 0; k1 < win->k[1]; ++k1)
                        for (k2 = 0; k2 < win->k[2]; ++k2) {
                            const int32_t at = window_at(win, n, org, k0, k1, k2);
                            acc += (at >= 0 ? (int32_t)x[at + ch] : padv) - zx;
                        }
                y[i] = rq_at(rq, acc, i % rq->n);
            }
        }
        return;
    }
    do {
        const int8_t *base = x + offset_of(red->rank, idx, red->stride);
        int32_t ridx[8] = {0}, acc = 0;
        do {
            acc += (int32_t)base[offset_of(red->rrank, ridx, red->rstride)] - zx;
        } while (next_index(red->rrank, red->rdims, ridx));
        y[i] = rq_at(rq, acc, i % rq->n);
        ++i;
    } while (next_index(red->rank, red->dims, idx));
}
""")

_snippet("max_pool", ["window", "reduce", "index", "requant"], """
/* MAX_POOL: the max over a window (padding reads the pad code, -128 for a max pool) or
 * over axes; rq is 0 (the output keeps the input's scale). */
static void max_pool(const int8_t *x, int8_t *y, const win_t *win, const red_t *red,
                     int32_t padv, const rq_t *rq)
{
    int32_t i = 0, org[3], k0, k1, k2, idx[8] = {0};
    if (win) {
        const int32_t npos = window_positions(win), c = win->c;
        int32_t pos, ch;
        for (pos = 0; pos < npos; ++pos) {
            const int32_t n = window_origin(win, pos, org);
            for (ch = 0; ch < c; ++ch, ++i) {
                int32_t m = -128;
                for (k0 = 0; k0 < win->k[0]; ++k0)
                    for (k1 = 0; k1 < win->k[1]; ++k1)
                        for (k2 = 0; k2 < win->k[2]; ++k2) {
                            const int32_t at = window_at(win, n, org, k0, k1, k2);
                            const int32_t v = at >= 0 ? (int32_t)x[at + ch] : padv;
                            if (v > m) m = v;
                        }
                y[i] = rq ? rq_at(rq, m, i % rq->n) : (int8_t)m;
            }
        }
        return;
    }
    do {
        const int8_t *base = x + offset_of(red->rank, idx, red->stride);
        int32_t ridx[8] = {0}, m = -128;
        do {
            const int32_t v = base[offset_of(red->rrank, ridx, red->rstride)];
            if (v > m) m = v;
        } while (next_index(red->rrank, red->rdims, ridx));
        y[i] = rq ? rq_at(rq, m, i % rq->n) : (int8_t)m;
        ++i;
    } while (next_index(red->rank, red->dims, idx));
}
""")

_snippet("bcast", [], """
/* Two operands broadcast (numpy rules) to the output's shape: their strides are 0 on the
 * broadcast axes. */
typedef struct {
    int32_t rank, dims[8], a[8], b[8];
} bcast_t;
""")

_snippet("add_sub", ["bcast", "index", "requant", "sat_add", "sat_sub"], """
/* ADD / SUB, TFLite style: both sides centered, shifted left by `left`, rescaled to a common
 * scale (mbqm), added (or subtracted when sub != 0), then requantized. y may be a or b (same
 * shape, in place): element i is read before it is written and never read again. */
static void add_sub(const int8_t *a, const int8_t *b, int8_t *y, const bcast_t *g,
                    int32_t za, int32_t zb, int32_t left, int32_t am, int32_t as,
                    int32_t bm, int32_t bs, int sub, const rq_t *rq)
{
    const int32_t r = g->rank - 1, n = g->dims[r], sa = g->a[r], sb = g->b[r];
    int32_t idx[8] = {0}, i = 0, q = 0, j;
    do {
        const int8_t *pa = a + offset_of(r, idx, g->a), *pb = b + offset_of(r, idx, g->b);
        for (j = 0; j < n; ++j, ++i) {
            const int32_t va = mbqm(sat_shl((int32_t)pa[j * sa] - za, left), am, as);
            const int32_t vb = mbqm(sat_shl((int32_t)pb[j * sb] - zb, left), bm, bs);
            y[i] = rq_at(rq, sub ? sat_sub(va, vb) : sat_add(va, vb), q);
            if (++q == rq->n) q = 0;
        }
    } while (next_index(r, g->dims, idx));
}
""")

_snippet("mul", ["bcast", "index", "requant"], """
/* MUL: rq((a - za) * (b - zb)); in place like add_sub. */
static void mul(const int8_t *a, const int8_t *b, int8_t *y, const bcast_t *g, int32_t za,
                int32_t zb, const rq_t *rq)
{
    const int32_t r = g->rank - 1, n = g->dims[r], sa = g->a[r], sb = g->b[r];
    int32_t idx[8] = {0}, i = 0, q = 0, j;
    do {
        const int8_t *pa = a + offset_of(r, idx, g->a), *pb = b + offset_of(r, idx, g->b);
        for (j = 0; j < n; ++j, ++i) {
            const int32_t acc = ((int32_t)pa[j * sa] - za) * ((int32_t)pb[j * sb] - zb);
            y[i] = rq_at(rq, acc, q);
            if (++q == rq->n) q = 0;
        }
    } while (next_index(r, g->dims, idx));
}
""")

_snippet("lut", [], """
/* LUT: y = table[c][x + 128], c = the last-axis index (channels = 1 for one [256] table).
 * y may be x (in place). */
static void lut(const int8_t *x, int8_t *y, int32_t size, const int8_t *table,
                int32_t channels)
{
    int32_t i, c = 0;
    for (i = 0; i < size; ++i) {
        y[i] = table[c * 256 + (int32_t)x[i] + 128];
        if (++c == channels) c = 0;
    }
}
""")

_snippet("copy", ["index"], """
/* A strided copy: the data-movement kinds are all one walk over dims, reading x at
 * x0 + idx . xs and writing y at y0 + idx . ys. */
typedef struct {
    int32_t rank, dims[8], xs[8], ys[8];
    int32_t x0, y0;
} copy_t;

static void copy_strided(const int8_t *x, int8_t *y, const copy_t *g)
{
    const int32_t r = g->rank - 1, n = g->dims[r], sx = g->xs[r], sy = g->ys[r];
    int32_t idx[8] = {0}, j;
    do {
        const int8_t *px = x + g->x0 + offset_of(r, idx, g->xs);
        int8_t *py = y + g->y0 + offset_of(r, idx, g->ys);
        for (j = 0; j < n; ++j) py[j * sy] = px[j * sx];
    } while (next_index(r, g->dims, idx));
}
""")

_snippet("transpose", ["copy"], """
/* TRANSPOSE: the output in order, the input through permuted strides. */
static void transpose(const int8_t *x, int8_t *y, const copy_t *g)
{
    copy_strided(x, y, g);
}
""")

_snippet("slice", ["copy"], """
/* SLICE: the input from the start offset with strides multiplied by the steps. */
static void slice(const int8_t *x, int8_t *y, const copy_t *g)
{
    copy_strided(x, y, g);
}
""")

_snippet("pad", ["copy"], """
/* PAD: the output filled with the pad code, then the input copied inside. */
static void pad(const int8_t *x, int8_t *y, int32_t size, int32_t value, const copy_t *g)
{
    int32_t i;
    for (i = 0; i < size; ++i) y[i] = (int8_t)value;
    copy_strided(x, y, g);
}
""")

_snippet("concat", ["copy"], """
/* CONCAT: each input copied into its slab of the output (inputs share the output's scale). */
static void concat(const int8_t *const *xs, int8_t *y, int32_t count, const copy_t *g)
{
    int32_t i;
    for (i = 0; i < count; ++i) copy_strided(xs[i], y, &g[i]);
}
""")

_BOUNDARY = """
/* fixed_point.quantize in float32: v = x / scale; NaN or v < lo -> lo, v > hi -> hi; round
 * half away from zero; + zp. Each float result is assigned to a float so that it is rounded
 * to float32 even where the FPU keeps excess precision (C99 6.3.1.8). */
static int8_t quantize(float x, float scale, int32_t zp)
{
    const float lo = (float)(-128 - zp), hi = (float)(127 - zp);
    float v = x / scale, r;
    if (!(v >= lo)) v = lo;
    if (v > hi) v = hi;
    r = v + (v >= 0.0f ? 0.5f : -0.5f);
    return (int8_t)((int32_t)r + zp);
}

/* fixed_point.dequantize: (q - zp) * scale in float32. */
static float dequantize(int8_t q, float scale, int32_t zp)
{
    const float v = (float)((int32_t)q - zp) * scale;
    return v;
}
"""


def _library(kernels: set[str]) -> str:
    """The snippets ``kernels`` need, dependencies first, in a stable order."""
    need: set[str] = set()

    def visit(name: str) -> None:
        if name not in need:
            need.add(name)
            for d in _SNIPPETS[name][0]:
                visit(d)

    for k in kernels:
        visit(k)
    order: list[str] = []

    def place(name: str) -> None:
        if name not in order:
            for d in _SNIPPETS[name][0]:
                place(d)
            order.append(name)

    for name in _SNIPPETS:  # definition order, dependencies pulled forward
        if name in need:
            place(name)
    return "\n".join(_SNIPPETS[n][1] for n in order)


# ------------------------------------------------------------------------------------------
# Generation-time geometry
# ------------------------------------------------------------------------------------------

def _strides(shape: Sequence[int]) -> list[int]:
    """Element strides of a C-contiguous array."""
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return out[::-1]


def _coalesce(dims: Sequence[int], *strides: Sequence[int]) -> tuple[list[int], ...]:
    """Drop size-1 axes and merge neighbours that are contiguous in every stride set, so
    the kernels' inner loop is as long as possible. Returns (dims, *strides), rank >= 1."""
    ds: list[int] = []
    ss: list[list[int]] = [[] for _ in strides]
    for i, d in enumerate(dims):
        if d == 1:
            continue
        if ds and all(s[-1] == st[i] * d for s, st in zip(ss, strides)):
            ds[-1] *= d
            for s, st in zip(ss, strides):
                s[-1] = st[i]
            continue
        ds.append(d)
        for s, st in zip(ss, strides):
            s.append(st[i])
    if not ds:
        ds, ss = [1], [[0] for _ in strides]
    if len(ds) > MAX_RANK:
        raise NotImplementedError(f"C export: more than {MAX_RANK} non-mergeable axes")
    return (ds, *ss)


def _ints(values: Sequence[int]) -> str:
    return "{" + ", ".join(str(int(v)) for v in values) + "}"


def _f32(value: float) -> str:
    """A C float literal that reads back as exactly np.float32(value)."""
    s = f"{float(np.float32(value)):.9g}"
    if not any(ch in s for ch in ".en"):
        s += ".0"
    return s + "f"


def _comment(text: str) -> str:
    """Text safe inside a C block comment (no terminator, no trigraph, ASCII only)."""
    text = text.encode("ascii", "backslashreplace").decode().replace("*/", "* /")
    return text.replace("??", "? ?")


def _identifier(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"C export: the name {name!r} is not a C identifier")
    return name


def _c_array(ctype: str, name: str, values: np.ndarray) -> str:
    """``static const ctype name[n] = {...};``: numbers formatted in bulk (tolist + join is
    the fast path in CPython; models carry megabytes of weights)."""
    flat = np.asarray(values).reshape(-1)
    if flat.size == 0:
        flat = np.zeros(1, np.int64)
    strs = list(map(str, flat.tolist()))
    if ctype == "int32_t" and int(flat.min()) == I32_MIN:
        strs = ["INT32_MIN" if s == str(I32_MIN) else s for s in strs]  # not a C literal
    n = PER_LINE.get(ctype, 16)
    lines = ",\n    ".join(", ".join(strs[i:i + n]) for i in range(0, len(strs), n))
    return f"static const {ctype} {name}[{len(strs)}] = {{\n    {lines}\n}};\n"


# ------------------------------------------------------------------------------------------
# The emitter
# ------------------------------------------------------------------------------------------

class _Emitter:
    """Collects the constant tables, the geometry structs and the step calls."""

    def __init__(self, program: QProgram, plan: AsicPlan, name: str) -> None:
        self.p, self.plan, self.name = program, plan, _identifier(name)
        self.statics: list[str] = []
        self.calls: list[str] = []
        self.kernels: set[str] = set()

    def t(self, name: str) -> QTensor:
        return self.p.tensors[name]

    def ptr(self, name: str) -> str:
        return f"ARENA + {self.plan.offsets[name]}"

    def static(self, decl: str) -> None:
        self.statics.append(decl)

    # --- shared argument builders ----------------------------------------------------------
    def requant(self, i: int, r: Requant, out: QTensor) -> str:
        """rq_t for step i: the multipliers as one value, per channel or per element."""
        mult, shift = np.asarray(r.multiplier), np.asarray(r.shift)
        shape = out.shape or (1,)
        chans = shape[-1]
        if mult.shape != shift.shape:
            mult, shift = np.broadcast_arrays(mult, shift)
        if mult.size == 1:
            mult, shift = mult.reshape(1), shift.reshape(1)
        elif mult.shape[-1] == chans and mult.size == chans:
            mult, shift = mult.reshape(-1), shift.reshape(-1)
        else:  # anything else broadcast to every element (index = flat index)
            mult = np.broadcast_to(mult, shape).reshape(-1)
            shift = np.broadcast_to(shift, shape).reshape(-1)
        if np.any(shift > 30) or np.any(shift < -31) or np.any(mult < 0):
            raise ValueError(f"step {i}: requantization shift outside [-31, 30]")
        self.static(_c_array("int32_t", f"s{i}_mult", mult.astype(np.int64)))
        self.static(_c_array("int32_t", f"s{i}_shift", shift.astype(np.int64)))
        self.static(f"static const rq_t s{i}_rq = {{s{i}_mult, s{i}_shift, {mult.size}, "
                    f"{r.zero_point}, {r.lo}, {r.hi}}};\n")
        return f"&s{i}_rq"

    def bias(self, i: int, step: Step, channels: int, size: int) -> tuple[str, int]:
        b = np.asarray(step.consts["bias"]).reshape(-1)
        if b.size not in (1, channels, size):
            raise NotImplementedError(f"step {i}: a bias of shape {step.consts['bias'].shape}")
        self.static(_c_array("int32_t", f"s{i}_bias", b.astype(np.int64)))
        return f"s{i}_bias", b.size

    def window(self, i: int, step: Step, x: QTensor, out_channels: int, out: QTensor) -> str:
        """win_t for step i: the step's window, or 1x1 taps over [M, K] for a plain matmul."""
        w = step.window
        if w is None:  # rows of K = the weights' first dimension
            k = step.consts["weights"].shape[0]
            batch, c, spatial = x.size // k, k, [1]
            kernel = strides = dilations = [1]
            pads, outs = [0, 0], [1]
        else:
            n = len(w.kernel)
            if n > MAX_SPATIAL or len(x.shape) != n + 2:
                raise NotImplementedError(f"step {i}: a {n}-D window over {x.shape}")
            batch, spatial, c = x.shape[0], list(x.shape[1:-1]), x.shape[-1]
            kernel, strides, dilations, pads = w.kernel, w.strides, w.dilations, w.pads
            outs = [(spatial[a] + pads[a] + pads[n + a] - (kernel[a] - 1) * dilations[a] - 1)
                    // strides[a] + 1 for a in range(n)]
        n = len(kernel)
        lead = MAX_SPATIAL - n

        def full(v: Sequence[int], fill: int) -> str:
            return _ints([fill] * lead + list(v))

        if batch * prod(outs) * out_channels != out.size:
            raise ValueError(f"step {i}: the window gives {batch}x{outs}x{out_channels} "
                             f"outputs, the tensor holds {out.size}")
        self.static(f"static const win_t s{i}_win = {{{batch}, {c}, {full(spatial, 1)}, "
                    f"{full(outs, 1)}, {full(kernel, 1)}, {full(strides, 1)}, "
                    f"{full(dilations, 1)}, {full(pads[:n], 0)}}};\n")
        return f"&s{i}_win"

    def reduce(self, i: int, step: Step, x: QTensor) -> str:
        """red_t for a reduction over ``axes`` (keepdims) of x."""
        rank = len(x.shape)
        axes = {int(a) % rank for a in step.attrs["axes"]}
        st = _strides(x.shape)
        kept = [(x.shape[a] if a not in axes else 1, st[a]) for a in range(rank)]
        red = [(x.shape[a], st[a]) for a in sorted(axes)]
        kd, ks = _coalesce([d for d, _ in kept], [s for _, s in kept])
        rd, rs = _coalesce([d for d, _ in red], [s for _, s in red])
        self.static(f"static const red_t s{i}_red = {{{len(kd)}, {_ints(kd)}, {_ints(ks)}, "
                    f"{len(rd)}, {_ints(rd)}, {_ints(rs)}}};\n")
        return f"&s{i}_red"

    def copy(self, name: str, dims: Sequence[int], xs: Sequence[int], ys: Sequence[int],
             x0: int = 0, y0: int = 0) -> str:
        """A copy_t initializer (or declaration when ``name`` is given)."""
        d, sx, sy = _coalesce(dims, xs, ys)
        body = f"{{{len(d)}, {_ints(d)}, {_ints(sx)}, {_ints(sy)}, {x0}, {y0}}}"
        return f"static const copy_t {name} = {body};\n" if name else body

    def bcast(self, i: int, a: QTensor, b: QTensor, out: QTensor) -> str:
        """bcast_t: a and b broadcast to out (right-aligned, stride 0 on broadcast axes)."""
        r = len(out.shape)

        def strides(t: QTensor) -> list[int]:
            shape = (1,) * (r - len(t.shape)) + tuple(t.shape)
            if len(shape) != r or any(s not in (1, o) for s, o in zip(shape, out.shape)):
                raise ValueError(f"step {i}: {t.shape} does not broadcast to {out.shape}")
            return [0 if s == 1 else st for s, st in zip(shape, _strides(shape))]

        d, sa, sb = _coalesce(out.shape, strides(a), strides(b))
        self.static(f"static const bcast_t s{i}_bc = {{{len(d)}, {_ints(d)}, {_ints(sa)}, "
                    f"{_ints(sb)}}};\n")
        return f"&s{i}_bc"

    # --- one builder per kind: the call of step i ------------------------------------------
    def conv(self, i: int, s: Step, x: QTensor, out: QTensor) -> str:
        w = np.asarray(s.consts["weights"])  # [K, N]
        oc = w.shape[1]
        win = self.window(i, s, x, oc, out)
        self.static(_c_array("int8_t", f"s{i}_w", np.ascontiguousarray(w.T)))  # [N][K]
        bias, nb = self.bias(i, s, oc, out.size)
        rq = self.requant(i, s.requant, out)
        return (f"conv({self.ptr(x.name)}, {self.ptr(out.name)}, {win}, {x.zero_point}, "
                f"{s.attrs.get('pad', x.zero_point)}, s{i}_w, {bias}, {nb}, {oc}, {rq});")

    def depthwise(self, i: int, s: Step, x: QTensor, out: QTensor) -> str:
        c = x.shape[-1]
        win = self.window(i, s, x, c, out)
        w = np.asarray(s.consts["weights"])
        if w.size != prod(s.window.kernel) * c:
            raise ValueError(f"step {i}: depthwise weights {w.shape} for {c} channels")
        self.static(_c_array("int8_t", f"s{i}_w", w))  # [taps][C]
        bias, nb = self.bias(i, s, c, out.size)
        rq = self.requant(i, s.requant, out)
        return (f"depthwise({self.ptr(x.name)}, {self.ptr(out.name)}, {win}, {x.zero_point}, "
                f"{s.attrs['pad']}, s{i}_w, {bias}, {nb}, {rq});")

    def _pool_geometry(self, i: int, s: Step, x: QTensor, out: QTensor) -> tuple[str, str, int]:
        if s.window is not None:
            return self.window(i, s, x, x.shape[-1], out), "0", int(s.attrs["pad"])
        return "0", self.reduce(i, s, x), 0

    def sum_pool(self, i: int, s: Step, x: QTensor, out: QTensor) -> str:
        win, red, pad = self._pool_geometry(i, s, x, out)
        rq = self.requant(i, s.requant, out)
        return (f"sum_pool({self.ptr(x.name)}, {self.ptr(out.name)}, {win}, {red}, "
                f"{x.zero_point}, {pad}, {rq});")

    def max_pool(self, i: int, s: Step, x: QTensor, out: QTensor) -> str:
        win, red, pad = self._pool_geometry(i, s, x, out)
        rq = "0" if s.requant is None else self.requant(i, s.requant, out)
        return f"max_pool({self.ptr(x.name)}, {self.ptr(out.name)}, {win}, {red}, {pad}, {rq});"

    def add_sub(self, i: int, s: Step, a: QTensor, b: QTensor, out: QTensor) -> str:
        bc = self.bcast(i, a, b, out)
        (am, ash), (bm, bsh) = s.attrs["a"], s.attrs["b"]
        left = int(s.attrs["left_shift"])
        if not 0 <= left <= 30 or not all(-31 <= v <= 30 for v in (ash, bsh)):
            raise ValueError(f"step {i}: add shifts outside the supported range")
        rq = self.requant(i, s.requant, out)
        sub = int(s.kind is Kind.SUB)
        return (f"add_sub({self.ptr(a.name)}, {self.ptr(b.name)}, {self.ptr(out.name)}, {bc}, "
                f"{a.zero_point}, {b.zero_point}, {left}, {am}, {ash}, {bm}, {bsh}, {sub}, "
                f"{rq});")

    def mul(self, i: int, s: Step, a: QTensor, b: QTensor, out: QTensor) -> str:
        bc = self.bcast(i, a, b, out)
        rq = self.requant(i, s.requant, out)
        return (f"mul({self.ptr(a.name)}, {self.ptr(b.name)}, {self.ptr(out.name)}, {bc}, "
                f"{a.zero_point}, {b.zero_point}, {rq});")

    def lut(self, i: int, s: Step, x: QTensor, out: QTensor) -> str:
        table = np.asarray(s.consts["table"])
        channels = 1 if table.ndim == 1 else table.shape[0]
        if table.shape[-1] != 256 or x.shape != out.shape or (
                channels > 1 and x.shape[-1] != channels):
            raise ValueError(f"step {i}: a table {table.shape} on {x.shape} -> {out.shape}")
        self.static(_c_array("int8_t", f"s{i}_table", table))
        return f"lut({self.ptr(x.name)}, {self.ptr(out.name)}, {out.size}, s{i}_table, " \
               f"{channels});"

    def transpose(self, i: int, s: Step, x: QTensor, out: QTensor) -> str:
        perm = [int(p) for p in s.attrs["perm"]]
        xs = _strides(x.shape)
        self.static(self.copy(f"s{i}_copy", out.shape, [xs[p] for p in perm],
                              _strides(out.shape)))
        return f"transpose({self.ptr(x.name)}, {self.ptr(out.name)}, &s{i}_copy);"

    def slice(self, i: int, s: Step, x: QTensor, out: QTensor) -> str:
        starts, steps = [int(v) for v in s.attrs["starts"]], [int(v) for v in s.attrs["steps"]]
        for a, (st, sp, n) in enumerate(zip(starts, steps, out.shape)):
            last = st + (n - 1) * sp
            if n and not (0 <= st < x.shape[a] and 0 <= last < x.shape[a]):
                raise ValueError(f"step {i}: slice indices outside axis {a} of {x.shape}")
        xs = _strides(x.shape)
        x0 = sum(st * stride for st, stride in zip(starts, xs))
        self.static(self.copy(f"s{i}_copy", out.shape, [sp * st for sp, st in zip(steps, xs)],
                              _strides(out.shape), x0=x0))
        return f"slice({self.ptr(x.name)}, {self.ptr(out.name)}, &s{i}_copy);"

    def pad(self, i: int, s: Step, x: QTensor, out: QTensor) -> str:
        pads = [int(p) for p in s.attrs["pads"]]
        if any(p < 0 for p in pads):
            raise NotImplementedError(f"step {i}: negative pads")
        ys = _strides(out.shape)
        y0 = sum(p * st for p, st in zip(pads, ys))
        self.static(self.copy(f"s{i}_copy", x.shape, _strides(x.shape), ys, y0=y0))
        return (f"pad({self.ptr(x.name)}, {self.ptr(out.name)}, {out.size}, "
                f"{int(s.attrs['value'])}, &s{i}_copy);")

    def concat(self, i: int, s: Step, *args: QTensor) -> str:
        *xs, out = args
        axis = int(s.attrs["axis"]) % len(out.shape)
        ys = _strides(out.shape)
        parts, at = [], 0
        for x in xs:
            parts.append(self.copy("", x.shape, _strides(x.shape), ys, y0=at * ys[axis]))
            at += x.shape[axis]
        if at != out.shape[axis]:
            raise ValueError(f"step {i}: concat inputs do not fill axis {axis} of {out.shape}")
        self.static(f"static const copy_t s{i}_copy[{len(xs)}] = {{\n    "
                    + ",\n    ".join(parts) + "\n};\n")
        ptrs = ", ".join(self.ptr(x.name) for x in xs)
        return (f"concat((const int8_t *const[]){{{ptrs}}}, {self.ptr(out.name)}, {len(xs)}, "
                f"s{i}_copy);")

    # --- the files -------------------------------------------------------------------------
    def step(self, i: int, s: Step) -> None:
        build = _BUILDERS[s.kind]
        if s.requant is None and s.kind in _NEEDS_REQUANT:
            raise ValueError(f"step {i} ({s.kind.value}) has no requantization")
        if s.requant is not None and s.kind not in _NEEDS_REQUANT | {Kind.MAX_POOL}:
            raise NotImplementedError(f"step {i}: a {s.kind.value} step with requantization")
        ts = [self.t(n) for n in (*s.inputs, s.output)]
        call = build(self, i, s, *ts)
        self.kernels.add(_KERNEL[s.kind])
        desc = " + ".join(f"'{n}' {list(self.t(n).shape)}" for n in s.inputs)
        self.calls.append(f"    /* {i}: {s.kind.value} ({_comment(s.origin)}): "
                          f"{_comment(desc)} -> '{_comment(s.output)}' {list(ts[-1].shape)} */"
                          f"\n    {call}\n")

    def io(self, prefix: str, names: Sequence[str]) -> list[tuple[str, str, QTensor]]:
        """(parameter, macro prefix, tensor) per input or output."""
        up = self.name.upper()
        return [(f"{prefix}{k}", f"{up}_{prefix.upper()}{k}", self.t(n))
                for k, n in enumerate(names)]

    def header(self) -> str:
        up, n = self.name.upper(), self.name
        ins, outs = self.io("in", self.p.inputs), self.io("out", self.p.outputs)
        lines = [f"/* {n}.h: the int8 program '{_comment(self.p.name)}' exported by sw2c "
                 f"(asic target), {len(self.p.steps)} steps.",
                 " *",
                 f" * {n}_run quantizes float inputs, runs the int8 steps and dequantizes the",
                 f" * outputs; {n}_run_int8 takes and gives the int8 codes",
                 " * (real = scale * (q - zero_point)). Both use one static arena: not "
                 "reentrant.", " *"]
        for param, _, t in (*ins, *outs):
            lines.append(f" * {param}: '{_comment(t.name)}' {list(t.shape)} ({t.size} values),"
                         f" scale {t.scale:.9g}, zero point {t.zero_point}")
        lines += [" */", f"#ifndef {up}_H", f"#define {up}_H", "", "#include <stdint.h>", "",
                  "#ifdef __cplusplus", 'extern "C" {', "#endif", "",
                  f"#define {up}_ARENA_BYTES {self.arena_bytes()}",
                  f"#define {up}_WEIGHT_BYTES {self.p.weights_bytes}"]
        for _, macro, t in (*ins, *outs):
            lines += [f"#define {macro}_SIZE {t.size}", f"#define {macro}_SCALE {_f32(t.scale)}",
                      f"#define {macro}_ZERO_POINT ({t.zero_point})"]
        fargs = ", ".join([f"const float *{p}" for p, _, _ in ins]
                          + [f"float *{p}" for p, _, _ in outs])
        qargs = ", ".join([f"const int8_t *{p}" for p, _, _ in ins]
                          + [f"int8_t *{p}" for p, _, _ in outs])
        lines += ["", "/* Returns 0. */", f"int {n}_run({fargs});",
                  f"int {n}_run_int8({qargs});", "", "#ifdef __cplusplus", "}", "#endif", "",
                  f"#endif /* {up}_H */", ""]
        return "\n".join(lines)

    def arena_bytes(self) -> int:
        return max(self.plan.arena_bytes, 4)  # a C array cannot be empty

    def source(self) -> str:
        for i, s in enumerate(self.p.steps):
            self.step(i, s)
        n, up = self.name, self.name.upper()
        ins, outs = self.io("in", self.p.inputs), self.io("out", self.p.outputs)
        fargs = ", ".join([f"const float *{p}" for p, _, _ in ins]
                          + [f"float *{p}" for p, _, _ in outs])
        qargs = ", ".join([f"const int8_t *{p}" for p, _, _ in ins]
                          + [f"int8_t *{p}" for p, _, _ in outs])
        parts = [
            f"/* {n}.c: generated by sw2c from the int8 program '{_comment(self.p.name)}'.",
            " * Portable C99: int8/int32 arithmetic (64 bits only inside high_mul), no",
            " * allocation, no I/O, float only at the quantize/dequantize boundary. */",
            "#include <stdint.h>", f'#include "{n}.h"', "",
            "/* The activations: every tensor is ARENA + its offset from the memory plan. The",
            " * union aligns the arena to a 4-byte word. */",
            f"static union {{\n    int32_t align;\n    int8_t bytes[{up}_ARENA_BYTES];\n}} "
            f"{n}_arena;", f"#define ARENA ({n}_arena.bytes)", "",
            "/* ---- kernels ---- */", _library(self.kernels), _BOUNDARY,
            "/* ---- constants: weights [N][K] or [taps][C], biases, tables, requantization"
            " ---- */", *self.statics,
            f"static void {n}_steps(void)", "{", *self.calls, "}", "",
        ]
        body = [f"int {n}_run({fargs})", "{", "    int32_t i;"]
        for p, macro, t in ins:
            body.append(f"    for (i = 0; i < {macro}_SIZE; ++i)\n        "
                        f"ARENA[{self.plan.offsets[t.name]} + i] = quantize({p}[i], "
                        f"{macro}_SCALE, {macro}_ZERO_POINT);")
        body.append(f"    {n}_steps();")
        for p, macro, t in outs:
            body.append(f"    for (i = 0; i < {macro}_SIZE; ++i)\n        "
                        f"{p}[i] = dequantize(ARENA[{self.plan.offsets[t.name]} + i], "
                        f"{macro}_SCALE, {macro}_ZERO_POINT);")
        body += ["    return 0;", "}", "", f"int {n}_run_int8({qargs})", "{", "    int32_t i;"]
        for p, macro, t in ins:
            body.append(f"    for (i = 0; i < {macro}_SIZE; ++i) "
                        f"ARENA[{self.plan.offsets[t.name]} + i] = {p}[i];")
        body.append(f"    {n}_steps();")
        for p, macro, t in outs:
            body.append(f"    for (i = 0; i < {macro}_SIZE; ++i) "
                        f"{p}[i] = ARENA[{self.plan.offsets[t.name]} + i];")
        body += ["    return 0;", "}", ""]
        return "\n".join(parts + body)


_Builder = Callable[..., str]
_BUILDERS: dict[Kind, _Builder] = {
    Kind.CONV: _Emitter.conv, Kind.DEPTHWISE: _Emitter.depthwise,
    Kind.SUM_POOL: _Emitter.sum_pool, Kind.MAX_POOL: _Emitter.max_pool,
    Kind.ADD: _Emitter.add_sub, Kind.SUB: _Emitter.add_sub, Kind.MUL: _Emitter.mul,
    Kind.LUT: _Emitter.lut, Kind.TRANSPOSE: _Emitter.transpose, Kind.SLICE: _Emitter.slice,
    Kind.PAD: _Emitter.pad, Kind.CONCAT: _Emitter.concat,
}
_KERNEL = {k: ("add_sub" if k in (Kind.ADD, Kind.SUB) else k.value) for k in Kind}  # -> snippet
_NEEDS_REQUANT = frozenset({Kind.CONV, Kind.DEPTHWISE, Kind.SUM_POOL, Kind.ADD, Kind.SUB,
                            Kind.MUL})


def emit_c(program: QProgram, plan: AsicPlan, name: str) -> tuple[str, str]:
    """The C99 source and header of ``program`` laid out by ``plan``: ``(<name>.c, <name>.h)``.

    ``name`` (a C identifier) prefixes the entry points ``<name>_run`` (float in/out) and
    ``<name>_run_int8`` (int8 codes in/out), the arena and the header's macros."""
    e = _Emitter(program, plan, name)
    source = e.source()
    return source, e.header()
