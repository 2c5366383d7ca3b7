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

_snippet("rq_type", [], """
/* Requantization of one step: multiplier/shift arrays of n entries, n = 1 (one value),
 * n = the output's channels (entry = flat index % n) or n = the output's size. */
typedef struct {
    const int32_t *mult, *shift;
    int32_t n, zp, lo, hi;
} rq_t;
""")

_snippet("requant", ["mbqm", "rq_type"], """
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
 * weights are stored transposed, [N][K], so the inner loop reads both operands in order.
 * Each position's patch is gathered once (from a padded copy of a small 2-D input, else with
 * bounds checks; a one-tap patch inside the input is read in place), then two output
 * channels at a time take their dot products over it. With the DSP extension (Cortex-M4,
 * M7, M33) two positions go together and the products are SMLAD dual 16-bit MACs, with Helium
 * (Cortex-M55) VMLADAVA sums 16 products per instruction: the same integer sums in another
 * order, so every target equals the reference bit for bit.
 * Stack: the patches, a padded input of at most CONV_PADDED_MAX bytes, and on DSP cores the
 * patches' 16-bit pairs (4 kc bytes). */
#if defined(__ARM_FEATURE_MVE) && (__ARM_FEATURE_MVE & 1)
/* Helium (Cortex-M55): 16 codes per vector, VMLADAVA sums their products into a scalar
 * accumulator; (x - zx) * w is summed as x * w - zx * w (the same int32 sum). */
#define CONV_MVE 1
#include <arm_mve.h>
#endif
#if defined(__ARM_FEATURE_DSP)
#include <arm_acle.h>

/* Four int8 codes as one word: one LDR (Armv7E-M and Armv8-M allow unaligned word loads
 * unless CCR.UNALIGN_TRP is set, which no sw2c start-up code does). */
static int32_t conv_word(const int8_t *p)
{
    int32_t v;
    __builtin_memcpy(&v, p, 4);
    return v;
}
#endif

#if defined(__ARM_FEATURE_DSP) && defined(__GNUC__)
#define CONV_OWN_FRAME __attribute__((noinline))  /* its own registers: inlined, loops spill */
#else
#define CONV_OWN_FRAME
#endif
#if defined(__ARM_FEATURE_DSP) && defined(__clang__)
#define CONV_COLD __attribute__((noinline, minsize))  /* once per step or rare: small code */
#else
#define CONV_COLD
#endif
#if defined(__ARM_FEATURE_DSP) && defined(__clang__)  /* C99 _Pragma: loops written for
                                                         * 13 registers, kept as written */
#define CONV_AS_WRITTEN _Pragma("clang loop unroll(disable) vectorize(disable)")
#else
#define CONV_AS_WRITTEN
#endif

/* acc[t] = sum over k < n of (x[k] - zx) * w[t * kc + k] for t = 0, 1 (two output channels,
 * rows kc apart). With the DSP extension four codes per step: SXTAB16 gives (x0 - zx,
 * x2 - zx) and, rotated, (x1 - zx, x3 - zx) as 16-bit pairs (all in -255..255), SXTB16 the
 * weights' matching pairs, and SMLAD adds both products to the accumulator: the same integer
 * sum in another order. */
CONV_OWN_FRAME
static void conv_dot2(const int8_t *x, const int8_t *w, int32_t kc, int32_t n, int32_t zx,
                      int32_t *acc)
{
    const int8_t *w1 = w + kc;
    int32_t s0 = 0, s1 = 0, k = 0;
#if defined(__ARM_FEATURE_DSP)
    const int32_t off = (int32_t)(((uint32_t)-zx & 0xFFFFu) * 0x10001u);
    const int8_t *const end = x + (n & ~3);
    CONV_AS_WRITTEN
    while (x < end) {  /* not unrolled: copies would spill */
        const int32_t xv = conv_word(x), a = conv_word(w), b = conv_word(w1);
        const int32_t xe = __sxtab16(off, xv), xo = __sxtab16(off, __ror((uint32_t)xv, 8));
        s0 = __smlad(xo, __sxtb16(__ror((uint32_t)a, 8)), __smlad(xe, __sxtb16(a), s0));
        s1 = __smlad(xo, __sxtb16(__ror((uint32_t)b, 8)), __smlad(xe, __sxtb16(b), s1));
        x += 4;
        w += 4;
        w1 += 4;
    }
    n &= 3;
#endif
    for (; k < n; ++k) {
        const int32_t v = (int32_t)x[k] - zx;
        s0 += v * w[k];
        s1 += v * w1[k];
    }
    acc[0] = s0;
    acc[1] = s1;
}

/* acc[0] = sum over k < n of (x[k] - zx) * w[k] (an odd last channel). */
static int32_t conv_dot1(const int8_t *x, const int8_t *w, int32_t n, int32_t zx)
{
    int32_t s = 0, k = 0;
    CONV_AS_WRITTEN
    for (; k < n; ++k) s += ((int32_t)x[k] - zx) * w[k];
    return s;
}

/* Fill dst[0..n) with the code v (the padding of a patch). */
static int8_t *conv_fill(int8_t *dst, int32_t n, int32_t v)
{
    int32_t k;
    CONV_AS_WRITTEN
    for (k = 0; k < n; ++k) dst[k] = (int8_t)v;  /* short runs: a plain loop */
    return dst + n;
}

/* dst[0..n) = src[0..n): a run of one input row (words where unaligned loads are
 * allowed). */
static int8_t *conv_copy(int8_t *dst, const int8_t *src, int32_t n)
{
    int32_t k = 0;
#if defined(__ARM_FEATURE_DSP)
    for (; k + 4 <= n; k += 4) __builtin_memcpy(dst + k, src + k, 4);
#endif
    CONV_AS_WRITTEN
    for (; k < n; ++k) dst[k] = src[k];
    return dst + n;
}

/* The kc codes of position pos's patch, taps in order, the pad code outside the input:
 * written to col, or x itself when the patch is one tap inside the input. Along the last
 * spatial axis the taps inside the input are one range [lo, hi), computed once per
 * position; with dilation 1 their codes are one contiguous run of each input row. */
CONV_COLD
static const int8_t *conv_patch(const int8_t *x, const win_t *g, int32_t pos, int32_t padv,
                                int32_t kc, int8_t *col)
{
    const int32_t c = g->c, kn = g->k[2], d2 = g->d[2], in2 = g->in[2];
    int32_t org[3], k0, k1, k2, lo, hi;
    const int32_t n = window_origin(g, pos, org);
    int8_t *dst = col;
    lo = org[2] < 0 ? (d2 - 1 - org[2]) / d2 : 0;  /* first tap with org + k d >= 0 */
    hi = in2 > org[2] ? (in2 - org[2] + d2 - 1) / d2 : 0;  /* past the last < in2 */
    if (lo > kn) lo = kn;
    if (hi > kn) hi = kn;
    if (hi < lo) hi = lo;
    for (k0 = 0; k0 < g->k[0]; ++k0) {
        const int32_t i0 = org[0] + k0 * g->d[0];
        const int inside = i0 >= 0 && i0 < g->in[0];
        for (k1 = 0; k1 < g->k[1]; ++k1) {
            const int32_t i1 = org[1] + k1 * g->d[1];
            const int8_t *row;
            if (!inside || i1 < 0 || i1 >= g->in[1]) {
                dst = conv_fill(dst, kn * c, padv);
                continue;
            }
            if (kc == c) {  /* one tap (a 1x1 conv or a matmul): read in place if inside */
                const int32_t at = window_at(g, n, org, 0, 0, 0);
                if (at >= 0) return x + at;
            }
            row = x + (((n * g->in[0] + i0) * g->in[1] + i1) * in2 + org[2] + lo * d2) * c;
            dst = conv_fill(dst, lo * c, padv);
            if (d2 == 1) {
                dst = conv_copy(dst, row, (hi - lo) * c);
            } else {
                for (k2 = lo; k2 < hi; ++k2, row += d2 * c) dst = conv_copy(dst, row, c);
            }
            dst = conv_fill(dst, (kn - hi) * c, padv);
        }
    }
    return col;
}

#define CONV_PADDED_MAX 4096  /* bytes of stack for a padded copy of the input */

/* The extent of the input that a 2-D window touches along axis a (1 or 2), padding
 * included: rows -p .. extent - p - 1. */
static int32_t conv_extent(const win_t *g, int32_t a)
{
    return (g->out[a] - 1) * g->s[a] + (g->k[a] - 1) * g->d[a] + 1;
}

/* Bytes of the padded copy of a 2-D window's input, or 0 when the patches are gathered
 * with bounds checks instead (3-D windows, one-tap patches, inputs too large). */
static int32_t conv_padded_bytes(const win_t *g, int32_t kc)
{
    int32_t bytes;
    if (g->k[0] != 1 || g->in[0] != 1 || g->out[0] != 1 || kc == g->c) return 0;
    bytes = g->batch * conv_extent(g, 1) * conv_extent(g, 2) * g->c;
    return bytes <= CONV_PADDED_MAX ? bytes : 0;
}

/* buf = the input as the window sees it: the pad code around it, [N][H'][W'][C]. */
CONV_COLD
static void conv_pad_input(const int8_t *x, const win_t *g, int32_t padv, int8_t *buf)
{
    const int32_t c = g->c, eh = conv_extent(g, 1), ew = conv_extent(g, 2);
    const int32_t p1 = g->p[1], p2 = g->p[2];
    const int32_t rows = g->in[1] < eh - p1 ? g->in[1] : eh - p1;
    const int32_t cols = g->in[2] < ew - p2 ? g->in[2] : ew - p2;
    int32_t n, i;
    conv_fill(buf, g->batch * eh * ew * c, padv);
    if (cols <= 0) return;
    for (n = 0; n < g->batch; ++n)
        for (i = 0; i < rows; ++i)
            conv_copy(buf + ((n * eh + i + p1) * ew + p2) * c,
                      x + ((n * g->in[1] + i) * g->in[2]) * c, cols * c);
}

/* The patch of position pos from the padded copy: one run of each window row. */
static const int8_t *conv_patch_padded(const int8_t *buf, const win_t *g, int32_t pos,
                                       int8_t *col)
{
    const int32_t c = g->c, ew = conv_extent(g, 2), kn = g->k[2], d2 = g->d[2];
    const int32_t o2 = pos % g->out[2], o1 = (pos / g->out[2]) % g->out[1];
    const int32_t n = pos / (g->out[2] * g->out[1]);
    const int8_t *row = buf + ((n * conv_extent(g, 1) + o1 * g->s[1]) * ew + o2 * g->s[2]) * c;
    int8_t *dst = col;
    int32_t k1, k2;
    for (k1 = 0; k1 < g->k[1]; ++k1, row += g->d[1] * ew * c) {
        if (d2 == 1) {
            dst = conv_copy(dst, row, kn * c);
        } else {
            for (k2 = 0; k2 < kn; ++k2) dst = conv_copy(dst, row + k2 * d2 * c, c);
        }
    }
    return col;
}

/* The patch of position pos: from the padded copy when there is one (pad != 0). */
static const int8_t *conv_gather(const int8_t *x, const int8_t *pad, const win_t *g,
                                 int32_t pos, int32_t padv, int32_t kc, int8_t *col)
{
    return pad ? conv_patch_padded(pad, g, pos, col) : conv_patch(x, g, pos, padv, kc, col);
}

/* mbqm(x, m, shift) (same result, every input): for shift <= -1, the usual case, the
 * rounding shift is by 32 + h bits, h = -1 - shift in 0..30, and needs only the product's
 * high word hi and low word lo: floor((hi * 2^32 + lo + 2^(h + 31)) / 2^(h + 32)) is
 * hi + (lo >= 2^31) for h = 0, else (hi + 2^(h - 1)) >> h (lo / 2^32 < 1 cannot carry past
 * the integer part). No saturation: |x * m| < 2^62 leaves |result| <= 2^30. */
CONV_OWN_FRAME  /* out of line (rare): the loops keep their registers */
static int32_t conv_mbqm_left(int32_t x, int32_t m, int32_t shift)
{
    return mbqm(x, m, shift);
}

static int32_t conv_mbqm(int32_t x, int32_t m, int32_t shift)
{
    const int64_t p = (int64_t)x * m;
    const int32_t hi = (int32_t)(p >> 32), h = -1 - shift;
    if (shift >= 0) return conv_mbqm_left(x, m, shift);
    if (h == 0) return hi + (int32_t)((uint32_t)p >> 31);
    return (hi + ((int32_t)1 << (h - 1))) >> h;
}

/* The requantization of one output: clamp(mbqm(acc + bias) + zp) as rq_at does, the
 * constants passed in (a store through y could alias rq's fields: reloads per output). */
static int8_t conv_rq(int32_t acc, int32_t bias, int32_t m, int32_t s, int32_t zp,
                      int32_t lo, int32_t hi)
{
#if defined(__ARM_FEATURE_DSP)
    int32_t v = conv_mbqm(__qadd(acc, bias), m, s);  /* QADD: sat_add in one instruction */
    (void)sat_add;  /* used, for -Wunused-function */
#else
    int32_t v = conv_mbqm(sat_add(acc, bias), m, s);
#endif
    if (v < lo) v = lo;
    if (v > hi) v = hi;
    return (int8_t)(v + zp);
}

/* out[j] for j < oc from their accumulators, with per-channel constants. */
CONV_OWN_FRAME
static void conv_requant(const int32_t *acc, int8_t *out, int32_t oc, const int32_t *bias,
                         const int32_t *mult, const int32_t *shift, int32_t zp, int32_t lo,
                         int32_t hi)
{
    int32_t j;
    CONV_AS_WRITTEN
    for (j = 0; j < oc; ++j) out[j] = conv_rq(acc[j], bias[j], mult[j], shift[j], zp, lo, hi);
}

/* i % n for an output of oc channels (j = i % oc), without a division when n is 1 or oc. */
static int32_t conv_entry(int32_t i, int32_t j, int32_t oc, int32_t n)
{
    return n == oc ? j : n == 1 ? 0 : i % n;
}

/* Output row out[0..oc) (flat index i0 + j) from its accumulators. */
CONV_COLD
static void conv_out(const int32_t *acc, int8_t *out, int32_t i0, int32_t oc,
                     const int32_t *bias, int32_t nbias, const rq_t *rq)
{
    const int32_t zp = rq->zp, lo = rq->lo - rq->zp, hi = rq->hi - rq->zp, nq = rq->n;
    int32_t j;
    if (nq == oc && nbias == oc) {  /* per-channel constants: the common case */
        conv_requant(acc, out, oc, bias, rq->mult, rq->shift, zp, lo, hi);
        return;
    }
    for (j = 0; j < oc; ++j) {
        const int32_t q = conv_entry(i0 + j, j, oc, nq);
        out[j] = conv_rq(acc[j], bias[conv_entry(i0 + j, j, oc, nbias)], rq->mult[q],
                         rq->shift[q], zp, lo, hi);
    }
}

/* Per-channel requantization constants, for conv_dot22 to requantize in place. */
typedef struct {
    const int32_t *bias, *mult, *shift;
    int32_t zp, lo, hi;
} conv_q_t;

#if defined(__ARM_FEATURE_DSP) && !defined(CONV_MVE)
/* Two positions' patches a, b as 16-bit pairs for SMLAD, interleaved so that one load
 * multiple reads four codes of both: per group of four codes (a0 - zx, a2 - zx),
 * (a1 - zx, a3 - zx), then b's. */
static void conv_widen2(const int8_t *a, const int8_t *b, int32_t groups, int32_t zx,
                        int32_t *out)
{
    const int32_t off = (int32_t)(((uint32_t)-zx & 0xFFFFu) * 0x10001u);
    CONV_AS_WRITTEN
    for (; groups > 0; --groups, a += 4, b += 4, out += 4) {
        const int32_t va = conv_word(a), vb = conv_word(b);
        out[0] = __sxtab16(off, va);
        out[1] = __sxtab16(off, __ror((uint32_t)va, 8));
        out[2] = __sxtab16(off, vb);
        out[3] = __sxtab16(off, __ror((uint32_t)vb, 8));
    }
}

#endif

/* Two positions by two channels: acca[t] / accb[t] = sum over k < kc of (a[k] - zx) *
 * w[t * step + k] / likewise with b, from the interleaved pairs xw (groups of four codes,
 * DSP cores only: elsewhere groups is 0) and the codes past them (ta, tb: the last n). Each
 * weight is loaded once for both positions; on DSP cores a weight word is widened once for 8
 * MACs, about one instruction per MAC. With q, the outputs ya[t], yb[t] are requantized
 * here instead. */
CONV_OWN_FRAME
static void conv_dot22(const int32_t *xw, int32_t groups, const int8_t *ta, const int8_t *tb,
                       int32_t n, const int8_t *w, int32_t step, int32_t zx, int32_t *acca,
                       int32_t *accb, const conv_q_t *q, int32_t j, int8_t *ya, int8_t *yb)
{
    const int8_t *w1 = w + step;
    int32_t s00 = 0, s01 = 0, s10 = 0, s11 = 0, k;
#if defined(CONV_MVE)
    int32_t wu = 0, wv = 0;  /* the weights' sums, for the zx terms */
    (void)xw;
    (void)groups;
    CONV_AS_WRITTEN
    for (k = 0; k < n; k += 16) {  /* zeroing loads: lanes past n add nothing */
        const mve_pred16_t p = vctp8q((uint32_t)(n - k));
        const int8x16_t a = vldrbq_z_s8(ta + k, p), b = vldrbq_z_s8(tb + k, p);
        const int8x16_t u = vldrbq_z_s8(w + k, p), v = vldrbq_z_s8(w1 + k, p);
        s00 = vmladavaq_s8(s00, a, u);
        s10 = vmladavaq_s8(s10, b, u);
        s01 = vmladavaq_s8(s01, a, v);
        s11 = vmladavaq_s8(s11, b, v);
        wu = vaddvaq_s8(wu, u);
        wv = vaddvaq_s8(wv, v);
    }
    s00 -= zx * wu;
    s10 -= zx * wu;
    s01 -= zx * wv;
    s11 -= zx * wv;
    n = 0;
#elif defined(__ARM_FEATURE_DSP)
    CONV_AS_WRITTEN
    for (; groups > 0; --groups, xw += 4, w += 4, w1 += 4) {
        const int32_t u = conv_word(w), v = conv_word(w1);
        const int32_t ue = __sxtb16(u), uo = __sxtb16(__ror((uint32_t)u, 8));
        const int32_t ve = __sxtb16(v), vo = __sxtb16(__ror((uint32_t)v, 8));
        s00 = __smlad(xw[1], uo, __smlad(xw[0], ue, s00));
        s10 = __smlad(xw[3], uo, __smlad(xw[2], ue, s10));
        s01 = __smlad(xw[1], vo, __smlad(xw[0], ve, s01));
        s11 = __smlad(xw[3], vo, __smlad(xw[2], ve, s11));
    }
#else
    (void)xw;
    (void)groups;
#endif
    CONV_AS_WRITTEN
    for (k = 0; k < n; ++k) {
        const int32_t va = (int32_t)ta[k] - zx, vb = (int32_t)tb[k] - zx;
        s00 += va * w[k];
        s01 += va * w1[k];
        s10 += vb * w[k];
        s11 += vb * w1[k];
    }
    if (q) {  /* per-channel constants: requantize here (ya[1], yb[1] only if step) */
        int32_t b = q->bias[j], m = q->mult[j], s = q->shift[j];
        ya[0] = conv_rq(s00, b, m, s, q->zp, q->lo, q->hi);
        yb[0] = conv_rq(s10, b, m, s, q->zp, q->lo, q->hi);
        if (!step) return;
        b = q->bias[j + 1], m = q->mult[j + 1], s = q->shift[j + 1];
        ya[1] = conv_rq(s01, b, m, s, q->zp, q->lo, q->hi);
        yb[1] = conv_rq(s11, b, m, s, q->zp, q->lo, q->hi);
        return;
    }
    acca[0] = s00;
    acca[1] = s01;
    accb[0] = s10;
    accb[1] = s11;
}

static void conv(const int8_t *x, int8_t *y, const win_t *g, int32_t zx, int32_t padv,
                 const int8_t *w, const int32_t *bias, int32_t nbias, int32_t oc,
                 const rq_t *rq)
{
    const int32_t npos = window_positions(g);
    const int32_t kc = g->k[0] * g->k[1] * g->k[2] * g->c;
    /* C99 variable-length arrays on the stack: two patches and their accumulators (a row
     * of oc + 1: an odd last channel is computed twice) */
    const int32_t padded = conv_padded_bytes(g, kc);
    int8_t col[2 * kc], buf[padded ? padded : 1];  /* buf: the padded input, if any */
    int32_t acc[2 * oc + 2];
    int32_t pos = 0, j;
    const int8_t *const pad = padded ? buf : 0;
    if (padded) conv_pad_input(x, g, padv, buf);
#if defined(__ARM_FEATURE_DSP) && !defined(CONV_MVE)
    const int32_t groups = kc >> 2, done = kc & ~3;
    int32_t xw[4 * groups + 1];  /* the pairs of two patches */
#else
    const int32_t groups = 0, done = 0;
    int32_t *const xw = 0;
#endif
    const conv_q_t qc = {bias, rq->mult, rq->shift, rq->zp, rq->lo - rq->zp, rq->hi - rq->zp};
    const conv_q_t *const q = rq->n == oc && nbias == oc ? &qc : 0;
    for (; pos + 2 <= npos; pos += 2) {  /* two positions at a time */
        const int8_t *pa = conv_gather(x, pad, g, pos, padv, kc, col);
        const int8_t *pb = conv_gather(x, pad, g, pos + 1, padv, kc, col + kc);
#if defined(__ARM_FEATURE_DSP) && !defined(CONV_MVE)
        conv_widen2(pa, pb, groups, zx, xw);
#endif
        for (j = 0; j < oc; j += 2)
            conv_dot22(xw, groups, pa + done, pb + done, kc - done, w + j * kc,
                       j + 1 < oc ? kc : 0, zx, acc + j, acc + oc + 1 + j, q, j,
                       y + pos * oc + j, y + (pos + 1) * oc + j);
        if (q) continue;
        conv_out(acc, y + pos * oc, pos * oc, oc, bias, nbias, rq);
        conv_out(acc + oc + 1, y + (pos + 1) * oc, (pos + 1) * oc, oc, bias, nbias, rq);
    }
    if (pos < npos) {  /* the last position of an odd count */
        const int8_t *px = conv_gather(x, pad, g, pos, padv, kc, col);
        for (j = 0; j + 2 <= oc; j += 2) conv_dot2(px, w + j * kc, kc, kc, zx, acc + j);
        for (; j < oc; ++j) acc[j] = conv_dot1(px, w + j * kc, kc, zx);
        conv_out(acc, y + pos * oc, pos * oc, oc, bias, nbias, rq);
    }
}
""")

_snippet("mbqm_hi", ["mbqm"], """
/* mbqm: for shift < 0 (31 - shift >= 32) rounded on the product's high word, with no 64-bit
 * shift (a library call or a long sequence on 32-bit cores): floor((hi + 2^(h-1)) / 2^h)
 * equals mbqm's floor((p + 2^(31+h)) / 2^(32+h)), and |hi| < 2^30 cannot overflow. */
static int32_t mbqm_hi(int32_t x, int32_t m, int32_t shift)
{
    const int64_t p = (int64_t)x * m;
    const int32_t hi = (int32_t)(p >> 32), h = -1 - shift;
    if (shift >= 0) return mbqm(x, m, shift);
    if (h == 0) return hi + (int32_t)((uint32_t)p >> 31);
    return (hi + ((int32_t)1 << (h - 1))) >> h;
}
""")

_snippet("depthwise", ["window", "requant", "sat_add", "mbqm_hi"], """
/* DEPTHWISE: out[pos, c] = rq(bias[c] + sum over taps t of (x - zx) * w[t][c]).
 * Per position, each tap's input pixel is found once (a tap in the padding reads a row of
 * the pad code), then the channels run innermost in blocks of DW_BLOCK accumulators: both
 * operands are contiguous there, so the loop is a plain multiply-accumulate (vectorized
 * where the target has vectors; on DSP cores without Helium two taps per SMLAD) instead of
 * a bounds check per product. The same integer sums in another order: bit-exact. */
#define DW_BLOCK 64
#if defined(__ARM_FEATURE_DSP) && !(defined(__ARM_FEATURE_MVE) && (__ARM_FEATURE_MVE & 1))
#include <arm_acle.h>
#define DW_DSP 1
/* Four codes as one word (unaligned word loads are allowed: see conv_word). */
static int32_t dw_word(const int8_t *p)
{
    int32_t v;
    __builtin_memcpy(&v, p, 4);
    return v;
}

/* The low (PKHBT) or high (PKHTB) halfwords of a and b as one pair, a's first. */
static int32_t dw_low(int32_t a, int32_t b)
{
    return (int32_t)(((uint32_t)a & 0xFFFFu) | ((uint32_t)b << 16));
}

static int32_t dw_high(int32_t a, int32_t b)
{
    return (int32_t)(((uint32_t)b & 0xFFFF0000u) | ((uint32_t)a >> 16));
}

/* acc[ch] += (xa[ch] - zx) * wa[ch] + (xb[ch] - zx) * wb[ch] for ch < n, two taps at once:
 * per four channels SXTAB16 widens the codes minus zx and SXTB16 the weights into 16-bit
 * pairs (channels 0, 2 and, rotated, 1, 3), PKHBT/PKHTB pair each channel's two taps, and
 * one SMLAD adds both products: the same integer sums. Returns the channels done (n & ~3).
 * Not inlined: in depthwise's frame its 13 live values would spill. */
__attribute__((noinline))
static int32_t dw_taps2(const int8_t *xa, const int8_t *xb, const int8_t *wa,
                        const int8_t *wb, int32_t n, int32_t zx, int32_t *acc)
{
    const int32_t off = (int32_t)(((uint32_t)-zx & 0xFFFFu) * 0x10001u);
    const int32_t *const end = acc + (n & ~3);
    int32_t *a = acc;
#if defined(__clang__)
    _Pragma("clang loop unroll(disable)")  /* written for the 13 registers: copies spill */
#endif
    for (; a < end; a += 4, xa += 4, xb += 4, wa += 4, wb += 4) {
        /* channels 0 and 2, then (the words loaded again: fewer live values) 1 and 3 */
        int32_t p = __sxtab16(off, dw_word(xa)), q = __sxtab16(off, dw_word(xb));
        int32_t lo = dw_low(p, q), hi = dw_high(p, q);
        p = __sxtb16(dw_word(wa));
        q = __sxtb16(dw_word(wb));
        a[0] = __smlad(lo, dw_low(p, q), a[0]);
        a[2] = __smlad(hi, dw_high(p, q), a[2]);
        p = __sxtab16(off, __ror((uint32_t)dw_word(xa), 8));
        q = __sxtab16(off, __ror((uint32_t)dw_word(xb), 8));
        lo = dw_low(p, q);
        hi = dw_high(p, q);
        p = __sxtb16(__ror((uint32_t)dw_word(wa), 8));
        q = __sxtb16(__ror((uint32_t)dw_word(wb), 8));
        a[1] = __smlad(lo, dw_low(p, q), a[1]);
        a[3] = __smlad(hi, dw_high(p, q), a[3]);
    }
    return n & ~3;
}
#endif

static void depthwise(const int8_t *x, int8_t *y, const win_t *g, int32_t zx, int32_t padv,
                      const int8_t *w, const int32_t *bias, int32_t nbias, const rq_t *rq)
{
    const int32_t npos = window_positions(g), c = g->c;
    const int32_t taps = g->k[0] * g->k[1] * g->k[2];
    const int32_t per_channel = nbias == c && rq->n == c;
    const int32_t lo = rq->lo - rq->zp, hi = rq->hi - rq->zp;  /* as rq_at clamps */
    const int8_t *row[taps];  /* each tap's pixel (channel c0), or the pad row */
    int8_t pad[DW_BLOCK];
    int32_t acc[DW_BLOCK];
    int32_t pos, c0, ch, t, k0, k1, k2, org[3];
    for (ch = 0; ch < DW_BLOCK; ++ch) pad[ch] = (int8_t)padv;
    for (pos = 0; pos < npos; ++pos) {
        const int32_t n = window_origin(g, pos, org);
        int32_t at[taps];
        t = 0;
        for (k0 = 0; k0 < g->k[0]; ++k0)
            for (k1 = 0; k1 < g->k[1]; ++k1)
                for (k2 = 0; k2 < g->k[2]; ++k2) at[t++] = window_at(g, n, org, k0, k1, k2);
        for (c0 = 0; c0 < c; c0 += DW_BLOCK) {
            const int32_t cn = c - c0 < DW_BLOCK ? c - c0 : DW_BLOCK;
            for (t = 0; t < taps; ++t) row[t] = at[t] >= 0 ? x + at[t] + c0 : pad;
            for (ch = 0; ch < cn; ++ch) acc[ch] = 0;
            t = 0;
#if defined(DW_DSP)
            for (; t + 2 <= taps; t += 2) {  /* tap pairs: SMLAD, then the last channels */
                const int8_t *xa = row[t], *xb = row[t + 1];
                const int8_t *wa = w + t * c + c0, *wb = wa + c;
                for (ch = dw_taps2(xa, xb, wa, wb, cn, zx, acc); ch < cn; ++ch)
                    acc[ch] += ((int32_t)xa[ch] - zx) * wa[ch] + ((int32_t)xb[ch] - zx) * wb[ch];
            }
#endif
            for (; t < taps; ++t) {
                const int8_t *xt = row[t], *wt = w + t * c + c0;
                for (ch = 0; ch < cn; ++ch) acc[ch] += ((int32_t)xt[ch] - zx) * wt[ch];
            }
            if (per_channel) {  /* the common case: constants by channel, no division */
                for (ch = 0; ch < cn; ++ch) {
                    const int32_t j = c0 + ch;
                    int32_t v = mbqm_hi(sat_add(acc[ch], bias[j]), rq->mult[j], rq->shift[j]);
                    v = v < lo ? lo : v > hi ? hi : v;
                    y[pos * c + j] = (int8_t)(v + rq->zp);
                }
                continue;
            }
            for (ch = 0; ch < cn; ++ch) {
                const int32_t i = pos * c + c0 + ch;
                y[i] = rq_at(rq, sat_add(acc[ch], bias[i % nbias]), i % rq->n);
            }
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

_snippet("softmax", ["reduce", "index", "requant"], """
/* SOFTMAX over the reduced axes of red (reference.softmax): z = x + m (mk may be 0: no
 * mask), e = table[z - max + len - 1] (exp in Q15; 0 below the table; times a constant
 * mask's Q15 weights, the fractions of a code, when it has them), p = e / total in
 * Q30 (reference.q30_ratio: total cut to its top 16 bits, all int32), y = rq(p). The sums
 * fit int32: lowering limits a group to 2^16 - 1 elements of at most 2^15, and total >=
 * 2^15 (the max's e; weights keep e < 2^16 and count e < 2^31); |m| < 2^29. The output has
 * the input's shape (and strides); each group is read before it is written. The mask
 * repeats every n elements: constant codes, or an int8 tensor mt rescaled to x's codes
 * (which replaces x where it is nonzero when `absorbs`). */
typedef struct {
    const int32_t *codes;  /* a constant mask, or 0 for the tensor mt */
    int32_t n, zp, mult, shift, absorbs;
    const int32_t *weights;  /* a constant mask's Q15 factors of e, or 0 */
} mask_t;

static int32_t softmax_z(const int8_t *x, const int8_t *mt, const mask_t *mk, int32_t at)
{
    int32_t c;
    if (!mk) return x[at];
    if (mk->codes) return (int32_t)x[at] + mk->codes[at % mk->n];
    c = (int32_t)mt[at % mk->n] - mk->zp;
    if (mk->absorbs && c != 0) return mbqm(c, mk->mult, mk->shift);
    return (int32_t)x[at] + mbqm(c, mk->mult, mk->shift);
}

static int32_t softmax_e(const int32_t *table, int32_t len, int32_t d, const mask_t *mk,
                         int32_t at)
{
    int32_t e;
    d += len - 1;
    e = d >= 0 ? table[d] : 0;
    if (mk && mk->weights) e = (e * mk->weights[at % mk->n] + 16384) >> 15;
    return e;
}

static void softmax(const int8_t *x, const int8_t *mt, int8_t *y, const red_t *red,
                    const int32_t *table, int32_t len, const mask_t *mk, const rq_t *rq)
{
    int32_t idx[8] = {0};
    do {
        const int32_t base = offset_of(red->rank, idx, red->stride);
        int32_t ridx[8] = {0}, m = INT32_MIN, total = 0, s = 0;
        do {
            const int32_t v = softmax_z(x, mt, mk,
                                        base + offset_of(red->rrank, ridx, red->rstride));
            if (v > m) m = v;
        } while (next_index(red->rrank, red->rdims, ridx));
        do {
            const int32_t at = base + offset_of(red->rrank, ridx, red->rstride);
            total += softmax_e(table, len, softmax_z(x, mt, mk, at) - m, mk, at);
        } while (next_index(red->rrank, red->rdims, ridx));
        while ((total >> s) >= 65536) ++s;
        do {
            const int32_t at = base + offset_of(red->rrank, ridx, red->rstride);
            const int32_t e = softmax_e(table, len, softmax_z(x, mt, mk, at) - m, mk, at);
            y[at] = rq_at(rq, (e * 32768 / (total >> s)) * ((int32_t)1 << (15 - s)), 0);
        } while (next_index(red->rrank, red->rdims, ridx));
    } while (next_index(red->rank, red->dims, idx));
}
""")

_snippet("matmul", ["bcast", "index", "requant"], """
/* MATMUL of two activations: per batch index (broadcast: stride 0), y[r][c] =
 * rq(sum over t of (a[r][t] - za) * (b[t][c] - zb)), a [m][k], b [k][n]. */
static void matmul(const int8_t *a, const int8_t *b, int8_t *y, const bcast_t *g, int32_t m,
                   int32_t k, int32_t n, int32_t za, int32_t zb, const rq_t *rq)
{
    int32_t idx[8] = {0}, i = 0, r, c, t;
    do {
        const int8_t *pa = a + offset_of(g->rank, idx, g->a);
        const int8_t *pb = b + offset_of(g->rank, idx, g->b);
        for (r = 0; r < m; ++r)
            for (c = 0; c < n; ++c, ++i) {
                int32_t acc = 0;
                for (t = 0; t < k; ++t)
                    acc += ((int32_t)pa[r * k + t] - za) * ((int32_t)pb[t * n + c] - zb);
                y[i] = rq_at(rq, acc, i % rq->n);
            }
    } while (next_index(g->rank, g->dims, idx));
}
""")

_snippet("load_const", [], """
/* CONST: a constant operand (a class token, a position embedding) copied from weight memory
 * into its arena slot. */
static void load_const(const int8_t *values, int8_t *y, int32_t n)
{
    int32_t i;
    for (i = 0; i < n; ++i) y[i] = values[i];
}
""")

_snippet("copy_type", [], """
/* A strided copy: the data-movement kinds are all one walk over dims, reading x at
 * x0 + idx . xs and writing y at y0 + idx . ys. */
typedef struct {
    int32_t rank, dims[8], xs[8], ys[8];
    int32_t x0, y0;
} copy_t;
""")

_snippet("copy", ["index", "copy_type"], """
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
