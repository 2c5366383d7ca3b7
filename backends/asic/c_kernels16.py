"""The int16 kernels of the C export (TFLite's 16x8: int16 activations, int8 weights).

Registered into ``c_kernels``' snippet library on import, each named ``<kind>16``. The
elementwise, pooling and data-movement kernels are the int8 ones with int16 codes (the same
text, its types and names rewritten: ``_retyped``); the MAC kernels accumulate in int64 and
requantize with ``mbqm64`` (``fixed_point.multiply_by_quantized_multiplier_wide``); the table
interpolates (``reference.lut16``); the softmax may rescale its differences onto its table.
``convert`` changes a tensor's precision. Everything equals ``reference.py`` bit for bit.
"""

from __future__ import annotations

import re

from .c_kernels import _SNIPPETS, BOUNDARY, _snippet


def _retyped(name: str, deps: list[str]) -> None:
    """Register ``name``16: snippet ``name`` with int16_t codes, its functions renamed with a
    16 suffix, rq_at as rq_at16 and the max pool's start code at -32768."""
    code = _SNIPPETS[name][1]
    for fn in re.findall(r"^static [\w ]+?\**(\w+)\(", code, flags=re.M):
        code = re.sub(rf"\b{fn}\(", f"{fn}16(", code)
    code = code.replace("int8_t", "int16_t").replace("rq_at(", "rq_at16(")
    code = code.replace("is_max ? -128 : 0", "is_max ? -32768 : 0")
    _snippet(f"{name}16", deps, code)


_snippet("requant16", ["mbqm", "rq_type"], """
/* rq_at for int16 outputs: clamp(mbqm(acc) + zp, lo, hi) as int16. */
static int16_t rq_at16(const rq_t *rq, int32_t acc, int32_t k)
{
    int32_t v = mbqm(acc, rq->mult[k], rq->shift[k]);
    if (v < rq->lo - rq->zp) v = rq->lo - rq->zp;
    if (v > rq->hi - rq->zp) v = rq->hi - rq->zp;
    return (int16_t)(v + rq->zp);
}
""")

_snippet("requant64", ["rq_type"], """
/* TFLite's int64 MultiplyByQuantizedMultiplier (16x8 kernels): x cut to +-2^47, times the
 * Q31 multiplier rounded to Q15, rounded to nearest (ties toward +inf) by 2^(15 - shift),
 * saturated to int32 (shift <= 14). |x * m15| < 2^62: no overflow. */
static int32_t mbqm64(int64_t x, int32_t multiplier, int32_t shift)
{
    const int64_t lim = (int64_t)1 << 47;
    const int64_t m15 = multiplier < 0x7FFF0000 ? ((int64_t)multiplier + 32768) >> 16 : 0x7FFF;
    const int32_t total = 15 - shift;
    int64_t r;
    if (x > lim - 1) x = lim - 1;
    if (x < -lim) x = -lim;
    r = (x * m15 + ((int64_t)1 << (total - 1))) >> total;
    if (r > INT32_MAX) return INT32_MAX;
    if (r < INT32_MIN) return INT32_MIN;
    return (int32_t)r;
}

/* An int64 accumulator -> int16: clamp(mbqm64(acc) + zp, lo, hi). */
static int16_t rq_wide(const rq_t *rq, int64_t acc, int32_t k)
{
    int32_t v = mbqm64(acc, rq->mult[k], rq->shift[k]);
    if (v < rq->lo - rq->zp) v = rq->lo - rq->zp;
    if (v > rq->hi - rq->zp) v = rq->hi - rq->zp;
    return (int16_t)(v + rq->zp);
}
""")

_snippet("conv16", ["window", "requant64"], """
/* CONV 16x8: out[pos, j] = rq_wide(bias[j] + sum over taps t, channels c of (x - zx) *
 * w[j][t][c]) in int64 (a plain matmul is a window of 1x1x1 taps). */
static void conv16(const int16_t *x, int16_t *y, const win_t *g, int32_t zx, int32_t padv,
                   const int8_t *w, const int64_t *bias, int32_t nbias, int32_t oc,
                   const rq_t *rq)
{
    const int32_t npos = window_positions(g), c = g->c;
    const int32_t kc = g->k[0] * g->k[1] * g->k[2] * c;
    int32_t pos, j, k0, k1, k2, ch, org[3];
    for (pos = 0; pos < npos; ++pos) {
        const int32_t n = window_origin(g, pos, org);
        for (j = 0; j < oc; ++j) {
            const int8_t *wt = w + j * kc;
            const int32_t i = pos * oc + j;
            int64_t acc = bias[i % nbias];
            for (k0 = 0; k0 < g->k[0]; ++k0)
                for (k1 = 0; k1 < g->k[1]; ++k1)
                    for (k2 = 0; k2 < g->k[2]; ++k2, wt += c) {
                        const int32_t at = window_at(g, n, org, k0, k1, k2);
                        for (ch = 0; ch < c; ++ch)
                            acc += (int64_t)((at >= 0 ? (int32_t)x[at + ch] : padv) - zx)
                                   * wt[ch];
                    }
            y[i] = rq_wide(rq, acc, i % rq->n);
        }
    }
}
""")

_snippet("depthwise16", ["window", "requant64"], """
/* DEPTHWISE 16x8: out[pos, c] = rq_wide(bias[c] + sum over taps t of (x - zx) * w[t][c]). */
static void depthwise16(const int16_t *x, int16_t *y, const win_t *g, int32_t zx,
                        int32_t padv, const int8_t *w, const int64_t *bias, int32_t nbias,
                        const rq_t *rq)
{
    const int32_t npos = window_positions(g), c = g->c;
    int32_t pos, ch, k0, k1, k2, org[3];
    for (pos = 0; pos < npos; ++pos) {
        const int32_t n = window_origin(g, pos, org);
        for (ch = 0; ch < c; ++ch) {
            const int32_t i = pos * c + ch;
            const int8_t *wt = w + ch;
            int64_t acc = bias[i % nbias];
            for (k0 = 0; k0 < g->k[0]; ++k0)
                for (k1 = 0; k1 < g->k[1]; ++k1)
                    for (k2 = 0; k2 < g->k[2]; ++k2, wt += c) {
                        const int32_t at = window_at(g, n, org, k0, k1, k2);
                        acc += (int64_t)((at >= 0 ? (int32_t)x[at + ch] : padv) - zx) * *wt;
                    }
            y[i] = rq_wide(rq, acc, i % rq->n);
        }
    }
}
""")

_snippet("matmul16", ["bcast", "index", "requant64"], """
/* MATMUL of two int16 activations: int64 sums of (a - za)(b - zb), rq_wide. */
static void matmul16(const int16_t *a, const int16_t *b, int16_t *y, const bcast_t *g,
                     int32_t m, int32_t k, int32_t n, int32_t za, int32_t zb, const rq_t *rq)
{
    int32_t idx[8] = {0}, i = 0, r, c, t;
    do {
        const int16_t *pa = a + offset_of(g->rank, idx, g->a);
        const int16_t *pb = b + offset_of(g->rank, idx, g->b);
        for (r = 0; r < m; ++r)
            for (c = 0; c < n; ++c, ++i) {
                int64_t acc = 0;
                for (t = 0; t < k; ++t)
                    acc += (int64_t)((int32_t)pa[r * k + t] - za)
                           * ((int32_t)pb[t * n + c] - zb);
                y[i] = rq_wide(rq, acc, i % rq->n);
            }
    } while (next_index(g->rank, g->dims, idx));
}
""")

_snippet("lut16", [], """
/* LUT on int16 codes (reference.lut16, TFLite's lut_lookup): u = x + 32768, segment u >> 7
 * of the channel's 513-entry table, interpolated by u & 127. y may be x. */
static void lut16(const int16_t *x, int16_t *y, int32_t size, const int16_t *table,
                  int32_t channels, int32_t inner)
{
    int32_t i, j = 0, c = 0;
    for (i = 0; i < size; ++i) {
        const int32_t u = (int32_t)x[i] + 32768;
        const int16_t *t = table + c * 513 + (u >> 7);
        const int32_t base = t[0], step = (int32_t)t[1] - base;
        y[i] = (int16_t)(base + ((step * (u & 127) + 64) >> 7));
        if (++j == inner) {
            j = 0;
            if (++c == channels) c = 0;
        }
    }
}
""")

_snippet("softmax16", ["reduce", "index", "requant16"], """
/* SOFTMAX on int16 codes, int16 probabilities: the int8 kernel's algorithm, its exp from an
 * interpolated table when dr != 0 (softmax_e16). The
 * mask as the int8 kernel's mask_t (its own type: either kernel may be emitted alone). */
typedef struct {
    const int32_t *codes;  /* a constant mask, or 0 for the tensor mt */
    int32_t n, zp, mult, shift, absorbs;
    const int32_t *weights;  /* always 0: int16 codes are fine enough (lower._mask_weight) */
} mask16_t;

static int32_t softmax_z16(const int16_t *x, const int16_t *mt, const mask16_t *mk,
                           int32_t at)
{
    int32_t c;
    if (!mk) return x[at];
    if (mk->codes) return (int32_t)x[at] + mk->codes[at % mk->n];
    c = (int32_t)mt[at % mk->n] - mk->zp;
    if (mk->absorbs && c != 0) return mbqm(c, mk->mult, mk->shift);
    return (int32_t)x[at] + mbqm(c, mk->mult, mk->shift);
}

/* exp of the difference d <= 0: table[d + len - 1] (0 below), or with dr
 * (reference.exp_interpolated) u = mbqm(d, dr[0], dr[1]) on the table's grid with 7
 * fraction bits, entry (u >> 7) + len - 1 interpolated by the fraction toward the next. */
static int32_t softmax_e16(const int32_t *table, int32_t len, int32_t d, const int32_t *dr)
{
    int32_t u, p, f, base;
    if (!dr) {
        d += len - 1;
        return d >= 0 ? table[d] : 0;
    }
    u = mbqm(d, dr[0], dr[1]);
    p = (u >> 7) + len - 1;
    f = u - (u >> 7) * 128;
    if (p < 0) return 0;
    base = table[p];
    if (p + 1 >= len) return base;
    return base + (((table[p + 1] - base) * f + 64) >> 7);
}

static void softmax16(const int16_t *x, const int16_t *mt, int16_t *y, const red_t *red,
                      const int32_t *table, int32_t len, const mask16_t *mk,
                      const int32_t *dr,
                      const rq_t *rq)
{
    int32_t idx[8] = {0};
    do {
        const int32_t base = offset_of(red->rank, idx, red->stride);
        int32_t ridx[8] = {0}, m = INT32_MIN, total = 0, s = 0;
        do {
            const int32_t v = softmax_z16(x, mt, mk,
                                          base + offset_of(red->rrank, ridx, red->rstride));
            if (v > m) m = v;
        } while (next_index(red->rrank, red->rdims, ridx));
        do {
            const int32_t at = base + offset_of(red->rrank, ridx, red->rstride);
            total += softmax_e16(table, len, softmax_z16(x, mt, mk, at) - m, dr);
        } while (next_index(red->rrank, red->rdims, ridx));
        while ((total >> s) >= 65536) ++s;
        do {
            const int32_t at = base + offset_of(red->rrank, ridx, red->rstride);
            const int32_t e = softmax_e16(table, len, softmax_z16(x, mt, mk, at) - m, dr);
            y[at] = rq_at16(rq, (e * 32768 / (total >> s)) * ((int32_t)1 << (15 - s)), 0);
        } while (next_index(red->rrank, red->rdims, ridx));
    } while (next_index(red->rank, red->dims, idx));
}
""")

_snippet("copy16", ["index", "copy_type"], """
/* copy_strided on int16 codes (the offsets and strides count elements). */
static void copy_strided16(const int16_t *x, int16_t *y, const copy_t *g)
{
    const int32_t r = g->rank - 1, n = g->dims[r], sx = g->xs[r], sy = g->ys[r];
    int32_t idx[8] = {0}, j;
    do {
        const int16_t *px = x + g->x0 + offset_of(r, idx, g->xs);
        int16_t *py = y + g->y0 + offset_of(r, idx, g->ys);
        for (j = 0; j < n; ++j) py[j * sy] = px[j * sx];
    } while (next_index(r, g->dims, idx));
}
""")

_snippet("convert", ["mbqm", "rq_type"], """
/* CONVERT: a change of precision, y = clamp(mbqm(x - zx) + zy) with x and y int8 or int16
 * (xbits, ybits) and one multiplier. */
static void convert(const void *x, int32_t xbits, void *y, int32_t ybits, int32_t n,
                    int32_t zx, const rq_t *rq)
{
    int32_t i;
    for (i = 0; i < n; ++i) {
        const int32_t v = xbits == 16 ? ((const int16_t *)x)[i] : ((const int8_t *)x)[i];
        int32_t r = mbqm(v - zx, rq->mult[0], rq->shift[0]);
        if (r < rq->lo - rq->zp) r = rq->lo - rq->zp;
        if (r > rq->hi - rq->zp) r = rq->hi - rq->zp;
        if (ybits == 16) ((int16_t *)y)[i] = (int16_t)(r + rq->zp);
        else ((int8_t *)y)[i] = (int8_t)(r + rq->zp);
    }
}
""")

_retyped("pool", ["window", "reduce", "index", "requant16"])
_retyped("add_sub", ["bcast", "index", "requant16", "sat_add", "sat_sub", "sat_shl"])
_retyped("mul", ["bcast", "index", "requant16"])
_retyped("load_const", [])
for _name in ("transpose", "slice", "pad", "concat"):
    _SNIPPETS[f"{_name}16"] = (("copy16",), _SNIPPETS[_name][1].replace(
        "int8_t", "int16_t").replace(f"{_name}(", f"{_name}16(").replace(
        "copy_strided(", "copy_strided16("))

# fixed_point.quantize / dequantize for int16 codes (bits 16): the int8 ones, retyped
BOUNDARY16 = (BOUNDARY.replace("int8_t", "int16_t").replace("(-128 - zp)", "(-32768 - zp)")
              .replace("(127 - zp)", "(32767 - zp)").replace("quantize(", "quantize16("))
