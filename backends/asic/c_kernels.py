"""The C kernel library of the asic export: one generic C99 function per int8 ``Kind``.

Each snippet is emitted only if a step needs it (directly or through another snippet), because
an unused static function is a -Wall warning. ``emit_c.py`` calls them with constant arguments.
"""

from __future__ import annotations

from collections.abc import Sequence

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

_snippet("mbqm", [], """
/* TFLite MultiplyByQuantizedMultiplier with single rounding (fixed_point.py):
 * x * multiplier / 2^(31 - shift), to nearest with ties toward +inf, saturated to int32.
 * The 32x32->64 product and its rounding shift are the only 64-bit arithmetic in the program;
 * >> on a negative int64 is an arithmetic shift on every compiler we target (it is
 * implementation-defined in C99). */
static int32_t mbqm(int32_t x, int32_t multiplier, int32_t shift)
{
    const int32_t total = 31 - shift;  /* 1..62: shift is in [-31, 30] */
    int64_t r = (int64_t)x * (int64_t)multiplier + ((int64_t)1 << (total - 1));
    r >>= total;
    if (r > INT32_MAX) return INT32_MAX;
    if (r < INT32_MIN) return INT32_MIN;
    return (int32_t)r;
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

_snippet("pool", ["window", "reduce", "index", "requant"], """
/* SUM_POOL (is_max = 0): rq(sum of (x - zx)); MAX_POOL (is_max = 1): the max, kept on the
 * input's scale (rq is 0). Over a window (win; padding reads the pad code) or over axes
 * (red); the other is 0. Averages are sums whose requantization multiplier holds the divisor
 * (per position when padding is not counted). */
static int32_t pool_step(int32_t is_max, int32_t acc, int32_t v, int32_t zx)
{
    if (is_max) return v > acc ? v : acc;
    return acc + (v - zx);
}

static void pool(const int8_t *x, int8_t *y, const win_t *win, const red_t *red,
                 int32_t is_max, int32_t zx, int32_t padv, const rq_t *rq)
{
    const int32_t start = is_max ? -128 : 0;
    int32_t i = 0, org[3], k0, k1, k2, idx[8] = {0};
    if (win) {
        const int32_t npos = window_positions(win), c = win->c;
        int32_t pos, ch;
        for (pos = 0; pos < npos; ++pos) {
            const int32_t n = window_origin(win, pos, org);
            for (ch = 0; ch < c; ++ch, ++i) {
                int32_t acc = start;
                for (k0 = 0; k0 < win->k[0]; ++k0)
                    for (k1 = 0; k1 < win->k[1]; ++k1)
                        for (k2 = 0; k2 < win->k[2]; ++k2) {
                            const int32_t at = window_at(win, n, org, k0, k1, k2);
                            acc = pool_step(is_max, acc, at >= 0 ? (int32_t)x[at + ch] : padv,
                                            zx);
                        }
                y[i] = rq ? rq_at(rq, acc, i % rq->n) : (int8_t)acc;
            }
        }
        return;
    }
    do {
        const int8_t *base = x + offset_of(red->rank, idx, red->stride);
        int32_t ridx[8] = {0}, acc = start;
        do {
            acc = pool_step(is_max, acc, base[offset_of(red->rrank, ridx, red->rstride)], zx);
        } while (next_index(red->rrank, red->rdims, ridx));
        y[i] = rq ? rq_at(rq, acc, i % rq->n) : (int8_t)acc;
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

_snippet("add_sub", ["bcast", "index", "requant", "sat_add", "sat_sub", "sat_shl"], """
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
/* LUT: y = table[c][x + 128], c = the element's index along the table's axis: it advances
 * every `inner` elements and wraps at `channels` (1 for one [256] table). y may be x. */
static void lut(const int8_t *x, int8_t *y, int32_t size, const int8_t *table,
                int32_t channels, int32_t inner)
{
    int32_t i, j = 0, c = 0;
    for (i = 0; i < size; ++i) {
        y[i] = table[c * 256 + (int32_t)x[i] + 128];
        if (++j == inner) {
            j = 0;
            if (++c == channels) c = 0;
        }
    }
}
""")

_snippet("softmax", ["reduce", "index"], """
/* SOFTMAX, TFLite style, over the reduced axes of red: e = table[x - max + 255] (exp in
 * Q15), y = clamp((256 * e + total / 2) / total - 128). Everything fits int32: lowering
 * limits a group to 2^16 - 1 elements of at most 2^15, and total >= 2^15 (the max's e). The
 * output has the input's shape (and strides); each group is read before it is written. */
static void softmax(const int8_t *x, int8_t *y, const red_t *red, const int32_t *table)
{
    int32_t idx[8] = {0};
    do {
        const int32_t base = offset_of(red->rank, idx, red->stride);
        int32_t ridx[8] = {0}, m = -128, total = 0;
        do {
            const int32_t v = x[base + offset_of(red->rrank, ridx, red->rstride)];
            if (v > m) m = v;
        } while (next_index(red->rrank, red->rdims, ridx));
        do {
            total += table[x[base + offset_of(red->rrank, ridx, red->rstride)] - m + 255];
        } while (next_index(red->rrank, red->rdims, ridx));
        do {
            const int32_t at = base + offset_of(red->rrank, ridx, red->rstride);
            int32_t v = (256 * table[x[at] - m + 255] + total / 2) / total - 128;
            y[at] = (int8_t)(v > 127 ? 127 : v < -128 ? -128 : v);
        } while (next_index(red->rrank, red->rdims, ridx));
    } while (next_index(red->rank, red->dims, idx));
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

BOUNDARY = """
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


def library(kernels: set[str]) -> str:
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
