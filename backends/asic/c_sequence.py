"""C of the sequence kernels (``sequence.py``): embedding lookup and integer LayerNorm.

The snippets join ``c_kernels``' library; ``BUILDERS`` join ``emit_c``'s per-kind call
builders (each called as ``build(emitter, i, step, *tensors)``). Codes are read through
``seq_load`` so that one kernel serves int8 and int16 tensors.
"""

from __future__ import annotations

import numpy as np

from .c_kernels import _snippet
from .program import Kind, QTensor, Step
from .sequence import OUT_FRACTION

_snippet("seq_load", [], """
/* Element i of a tensor of int8 (bits 8) or int16 (bits 16) codes. */
static int32_t seq_load(const void *p, int32_t bits, int32_t i)
{
    return bits == 16 ? (int32_t)((const int16_t *)p)[i] : (int32_t)((const int8_t *)p)[i];
}
""")

_snippet("gather", ["seq_load"], """
/* GATHER (sequence.gather): row k of the table [rows] of `row_bytes`-byte rows (int8 or
 * int16 codes) for every index code, k = code - zp, wrapped once if negative, clamped into
 * [0, rows): never outside the table. */
static void gather(const void *idx, int32_t bits, int32_t count, int32_t zp,
                   const void *table, int32_t rows, int32_t row_bytes, void *y)
{
    const unsigned char *t = (const unsigned char *)table;
    unsigned char *out = (unsigned char *)y;
    int32_t i, j;
    for (i = 0; i < count; ++i) {
        int32_t k = seq_load(idx, bits, i) - zp;
        if (k < 0) k += rows;
        if (k < 0) k = 0;
        if (k >= rows) k = rows - 1;
        for (j = 0; j < row_bytes; ++j) out[i * row_bytes + j] = t[k * row_bytes + j];
    }
}
""")

_snippet("layer_norm", ["seq_load", "mbqm"], """
/* floor(sqrt(n)), bit by bit (n < 2^62). */
static uint64_t isqrt64(uint64_t n)
{
    uint64_t res = 0, bit = (uint64_t)1 << 62;
    while (bit > n) bit >>= 2;
    while (bit != 0) {
        if (n >= res + bit) {
            n -= res + bit;
            res = (res >> 1) + bit;
        } else {
            res >>= 1;
        }
        bit >>= 2;
    }
    return res;
}

/* LAYERNORM over the last axis (sequence.layer_norm), `rows` rows of c codes: d = c (x - zx)
 * - sum, S = sum(d^2) 4^g + eps in int64 (units of 4^-g, g = eps_shift; lowering bounds S
 * below 2^62), scaled by 4^k to 61 or 62 bits, r = isqrt(S 4^k), b its bit length, inv =
 * 2^(b+30) / r, u = (d 2^(k+g) inv + 2^(b-1)) >> b (|u| <= 2^30), then per channel
 * clamp((mbqm(sign u, mult, shift) + beta + 2^(F-1)) >> F + zy, lo, hi) with beta in 2^-F
 * codes, F = `fraction`. Each row is read twice, written once (y is not x). */
typedef struct {
    const int32_t *mult, *shift, *beta;
    const int8_t *sign;
    int64_t eps;
    int32_t eps_shift, zx, xbits, zy, ybits, lo, hi, fraction;
} ln_t;

static void layer_norm(const void *x, void *y, int32_t rows, int32_t c, const ln_t *p)
{
    int32_t r, i;
    for (r = 0; r < rows; ++r) {
        const int32_t at = r * c;
        int32_t sum = 0, b = 0, bits = 0, k;
        int64_t s = 0, inv, scale;
        uint64_t root;
        for (i = 0; i < c; ++i) sum += seq_load(x, p->xbits, at + i) - p->zx;
        for (i = 0; i < c; ++i) {
            const int64_t d = (int64_t)c * (seq_load(x, p->xbits, at + i) - p->zx) - sum;
            s += d * d;
        }
        s = (int64_t)((uint64_t)s << (2 * p->eps_shift)) + p->eps;
        while (((uint64_t)s >> bits) != 0) ++bits;
        k = (62 - bits) / 2;
        scale = (int64_t)1 << (k + p->eps_shift);
        root = isqrt64((uint64_t)s << (2 * k));
        if (root == 0) root = 1;
        while ((root >> b) != 0) ++b;
        inv = ((int64_t)1 << (b + 30)) / (int64_t)root;
        for (i = 0; i < c; ++i) {
            const int64_t d = ((int64_t)c * (seq_load(x, p->xbits, at + i) - p->zx) - sum)
                              * scale;
            int64_t u = (d * inv + ((int64_t)1 << (b - 1))) >> b;
            int64_t v;
            if (p->sign[i] < 0) u = -u;
            v = (int64_t)mbqm((int32_t)u, p->mult[i], p->shift[i]) + p->beta[i];
            v = ((v + ((int64_t)1 << (p->fraction - 1))) >> p->fraction) + p->zy;
            if (v < p->lo) v = p->lo;
            if (v > p->hi) v = p->hi;
            if (p->ybits == 16) ((int16_t *)y)[at + i] = (int16_t)v;
            else ((int8_t *)y)[at + i] = (int8_t)v;
        }
    }
}
""")


def _gather(e, i: int, s: Step, x: QTensor, out: QTensor) -> str:
    from .emit_c import _c_array

    table = np.asarray(s.consts["table"])
    rows = table.shape[0]
    width = table[0].size
    if out.size != x.size * width or table.dtype != out.dtype:
        raise ValueError(f"step {i}: a gather of {table.shape} by {x.shape} -> {out.shape}")
    e.static(_c_array(f"int{out.bits}_t", f"s{i}_table", table))
    return (f"gather({e.ptr(x.name)}, {x.bits}, {x.size}, {x.zero_point}, s{i}_table, {rows}, "
            f"{width * out.bits // 8}, {e.ptr(out.name)});")


def _layer_norm(e, i: int, s: Step, x: QTensor, out: QTensor) -> str:
    from .emit_c import _c_array

    c = x.shape[-1]
    k = s.consts
    if x.shape != out.shape or any(np.asarray(k[n]).size != c for n in
                                   ("mult", "shift", "beta", "sign")):
        raise ValueError(f"step {i}: a layer norm of {x.shape} -> {out.shape}")
    for n in ("mult", "shift", "beta"):
        e.static(_c_array("int32_t", f"s{i}_{n}", np.asarray(k[n]).astype(np.int64)))
    e.static(_c_array("int8_t", f"s{i}_sign", np.asarray(k["sign"])))
    a = s.attrs
    e.static(f"static const ln_t s{i}_ln = {{s{i}_mult, s{i}_shift, s{i}_beta, s{i}_sign, "
             f"INT64_C({int(a['eps'])}), {int(a.get('eps_shift', 0))}, {x.zero_point}, "
             f"{x.bits}, {a['zero_point']}, "
             f"{out.bits}, {a['lo']}, {a['hi']}, {OUT_FRACTION}}};\n")
    return (f"layer_norm({e.ptr(x.name)}, {e.ptr(out.name)}, {x.size // c}, {c}, "
            f"&s{i}_ln);")


BUILDERS = {Kind.GATHER: _gather, Kind.LAYERNORM: _layer_norm}
