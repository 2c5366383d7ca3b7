"""Integer sequence kernels of the asic target (issue 12): embedding lookup and LayerNorm.

Both are defined here once (the numpy integer reference, what lowering computes for them and
their QDQ translation); ``c_sequence.py`` holds their C, ``match.py`` finds them.

* GATHER (embedding lookup): ``y[..., :] = table[k]`` for every index code of the input, the
  table's int8 (int16) rows quantized at compile time on the output's scale, so the step is a
  pure copy. An index input (an integer graph input: token ids) is coded with scale 1: ``id =
  code - zero_point`` (``index_coding``); an index below 0 wraps once (ONNX's negative
  indices), then it is clamped into the table, so native code never reads outside it (the IR's
  GATHER semantics).
* LAYERNORM over the last axis, integer only as in I-BERT (Kim et al., ICML 2021), with the
  statistics exact: ``d_i = C xc_i - sum(xc)`` (C times the centered value), ``S = sum(d^2)
  4^g + E`` (int64, in units of 4^-g: ``E = round(C^3 eps 4^g / s_x^2)`` is epsilon with 2g
  fraction bits, g as large as the row's largest S allows, at most EPS_FRACTION_BITS / 2: in
  whole units a small epsilon rounded to 0 or 1 and a row of two channels one code apart came
  out up to 5% too large), both scaled by 4^k and 2^(k+g) so that S takes 61 or 62 bits (``k
  = (62 - bits(S)) // 2``: the floor square root of a small S, a row of few codes, would be
  off by up to 40%), ``r = isqrt(S 4^k)``, one reciprocal per row ``inv = floor(2^(b + 30) /
  r)`` with b the bit length of r, then ``u_i = round(d_i 2^(k+g) inv / 2^b)``, the
  normalized value ``d_i / sqrt(S)`` in Q30 (``|u| <= 2^30`` since ``|d_i| 2^(k+g) <=
  r``). The output is ``clamp((mbqm(sign_i u_i, M_i) +
  beta_i + 2^(F-1)) >> F + z_y)`` with ``M_i = |gamma_i| sqrt(C) 2^F / (2^30 s_y)`` and beta_i
  in 2^-F output codes: one rounding of gamma n + beta (rounding beta on its own first put a
  quarter of the codes one off), F = OUT_FRACTION.
"""

from __future__ import annotations

import math

import numpy as np

from ...errors import ModelError
from .fixed_point import code_range, multiply_by_quantized_multiplier, quantize_multiplier
from .program import Kind, QTensor, Step

Q30 = 30  # the normalized value's fraction bits
S_LIMIT = 1 << 62  # sum(d^2) + E stays below: isqrt < 2^31, d * inv < 2^62 in int64
EPS_LIMIT = 1 << 60
EPS_FRACTION_BITS = 32  # 2g at most: S (and epsilon) in units of 4^-g
OUT_FRACTION = 8  # F: gamma n + beta in 2^-F output codes before the one rounding
BETA_LIMIT = 1 << 28  # |beta| in 2^-F output codes (beyond it every output saturates anyway)
MAX_INDEX_ROWS = 1 << 15  # a table indexed by int16 codes


# --- embedding lookup --------------------------------------------------------------------------
def index_coding(rows: int) -> tuple[int, int]:
    """(bits, zero_point) of an index input reading a table of ``rows`` rows: codes equal to
    the ids, int8 up to 128 rows, else int16 (ONNX's negative ids, down to -rows, must be
    coded too: an offset coding of int8 would not hold them)."""
    if rows <= 128:
        return 8, 0
    if rows <= MAX_INDEX_ROWS:
        return 16, 0
    raise ModelError(f"an embedding table of {rows} rows: the asic target indexes at most "
                     f"{MAX_INDEX_ROWS} (int16 ids)")


def gather(step: Step, x: np.ndarray, tx: QTensor) -> np.ndarray:
    """table[clamp(wrap(code - zero_point))] for every index code: [*x.shape, *row]."""
    table = step.consts["table"]
    rows = table.shape[0]
    k = x.astype(np.int64) - tx.zero_point
    k = np.clip(np.where(k < 0, k + rows, k), 0, rows - 1)
    return table[k]


def fill_gather(table: np.ndarray, x: QTensor, y: QTensor, s: Step) -> None:
    """The table quantized on the output's scale (int8 rows, int16 for a 16-bit output)."""
    from .fixed_point import quantize

    s.consts["table"] = quantize(np.asarray(table, np.float32), y.scale, y.zero_point, y.bits)


# --- LayerNorm -------------------------------------------------------------------------------
def isqrt(n: np.ndarray) -> np.ndarray:
    """floor(sqrt(n)) of int64 values >= 0, exactly (the C export's bitwise isqrt)."""
    flat = np.asarray(n, np.int64).reshape(-1)
    return np.array([math.isqrt(int(v)) for v in flat], np.int64).reshape(np.shape(n))


def _bit_length(r: np.ndarray) -> np.ndarray:
    """Bits of int64 values >= 0, exactly."""
    flat = np.asarray(r, np.int64).reshape(-1)
    return np.array([int(v).bit_length() for v in flat], np.int64).reshape(np.shape(r))


EPS_SLIVER = 2.0 ** -20  # the QDQ export's epsilon, in S units, where it rounded to 0


def normalized_q30(x: np.ndarray, tx: QTensor, eps: int, shift: int = 0) -> np.ndarray:
    """(x - mean) / sqrt(var + eps) over the last axis, as d / isqrt(S) in Q30 (int64);
    S and ``eps`` in units of 4^-``shift`` (module doc)."""
    xc = x.astype(np.int64) - tx.zero_point
    c = x.shape[-1]
    d = c * xc - xc.sum(axis=-1, keepdims=True)
    s = np.left_shift((d * d).sum(axis=-1, keepdims=True), 2 * shift) + eps
    k = (62 - _bit_length(s)) // 2  # S 4^k has 61 or 62 bits (0 stays 0)
    r = np.maximum(isqrt(np.left_shift(s, 2 * k)), 1)
    d = np.left_shift(d, k + shift)  # |d 2^(k+g)| <= r
    b = _bit_length(r)
    inv = np.left_shift(np.int64(1), b + Q30) // r
    return (d * inv + np.left_shift(np.int64(1), b - 1)) >> b


def layer_norm(step: Step, x: np.ndarray, tx: QTensor) -> np.ndarray:
    """clamp((mbqm(sign u, M) + beta + 2^(F-1)) >> F + z_y) per channel of the last axis
    (module doc)."""
    c = step.consts
    u = normalized_q30(x, tx, int(step.attrs["eps"]), int(step.attrs.get("eps_shift", 0)))
    u = u * c["sign"].astype(np.int64)
    v = multiply_by_quantized_multiplier(u, c["mult"], c["shift"]) + c["beta"]
    y = (v + (1 << (OUT_FRACTION - 1))) >> OUT_FRACTION
    return np.clip(y + step.attrs["zero_point"], step.attrs["lo"], step.attrs["hi"])


def _largest_sum(c: int, most: int) -> int:
    """The largest sum(d^2) of a row of ``c`` codes at most ``most`` apart: |d_i| <= (c - 1)
    most (Python ints: no overflow)."""
    return int(c) * ((int(c) - 1) * int(most)) ** 2


def eps_shift(c: int, most: int, e: float) -> int:
    """g: the most fraction bits (2g, EPS_FRACTION_BITS at most) that S = sum(d^2) 4^g +
    round(E 4^g) keeps below S_LIMIT on any row of ``c`` codes at most ``most`` apart, E
    (epsilon in whole units) 4^g staying within EPS_LIMIT."""
    largest = _largest_sum(c, most)
    for g in range(EPS_FRACTION_BITS // 2, 0, -1):
        fine = e * 4.0 ** g
        if fine <= EPS_LIMIT and (largest << 2 * g) + round(fine) < S_LIMIT:
            return g
    return 0


def fill_layer_norm(eps: float, gamma: np.ndarray, beta: np.ndarray, x: QTensor, y: QTensor,
                    s: Step) -> None:
    """The integer constants of a LayerNorm of x (last axis) with real gamma, beta [C]."""
    c = x.shape[-1]
    lo, hi = code_range(x.bits)
    most = hi - lo  # the largest |x_i - x_j|
    # |d_i| = |sum_j (x_i - x_j)| <= (C - 1) most: int16 rows up to 931 channels (BERT-base's
    # 768), int8 ones up to 37,608
    if _largest_sum(c, most) >= S_LIMIT - EPS_LIMIT:
        raise ModelError(f"node '{s.origin}': a LayerNorm over {c} int{x.bits} channels could "
                         "overflow its int64 variance")
    e = c ** 3 * float(eps) / float(x.scale) ** 2
    g = eps_shift(c, most, e)
    gamma = np.broadcast_to(np.asarray(gamma, np.float64), (c,))
    beta = np.broadcast_to(np.asarray(beta, np.float64), (c,))
    fine = 2.0 ** OUT_FRACTION / y.scale  # 2^-F output codes per real unit
    mult, shift = quantize_multiplier(np.abs(gamma) * np.sqrt(c) * fine / 2.0 ** Q30)
    s.consts.update({
        "mult": mult, "shift": shift, "sign": np.where(gamma < 0, -1, 1).astype(np.int8),
        "beta": np.clip(np.round(beta * fine), -BETA_LIMIT, BETA_LIMIT).astype(np.int32)})
    ylo, yhi = code_range(y.bits)
    s.attrs.update({"eps": int(min(round(e * 4.0 ** g), EPS_LIMIT)), "eps_shift": g,
                    "zero_point": y.zero_point, "lo": ylo, "hi": yhi})


def layer_norm_reals(step: Step, x: QTensor, y: QTensor) -> tuple[np.ndarray, np.ndarray,
                                                                     float]:
    """(gamma, beta, epsilon) as the integer constants encode them (for the QDQ export)."""
    c = step.consts
    ch = x.shape[-1]
    m = c["mult"].astype(np.float64) * np.exp2(c["shift"].astype(np.float64) - 31)
    fine = 2.0 ** OUT_FRACTION / y.scale
    gamma = c["sign"] * m * 2.0 ** Q30 / (fine * np.sqrt(ch))
    # an epsilon of 0 units (a model's epsilon of 0) is exported as a sliver of one (S >= 1
    # on any row that is not constant): float's 0 / 0 on a constant row would be NaN where
    # the integer kernel's d = 0 gives beta
    units = (step.attrs["eps"] or EPS_SLIVER) / 4.0 ** step.attrs.get("eps_shift", 0)
    return gamma, c["beta"] / fine, units * float(x.scale) ** 2 / ch ** 3


# --- QDQ export (``qdq._Builder`` as g) --------------------------------------------------------
def qdq_gather(g, step: Step) -> str:
    """The index codes as int64 ids (wrapped once, clamped: ONNX Gather refuses an id outside
    the table), then Gather of the int8 table: exact."""
    from onnx import TensorProto

    x = g.tensor(step.inputs[0])
    rows = step.consts["table"].shape[0]
    i64 = {n: g.const(n, np.array(v, np.int64)) for n, v in
           (("zero_point", x.zero_point), ("zero", 0), ("rows", rows), ("last", rows - 1))}
    k = g.node("Sub", [g.node("Cast", [g.int8(x.name)], to=TensorProto.INT64),
                       i64["zero_point"]])
    k = g.node("Where", [g.node("Less", [k, i64["zero"]]), g.node("Add", [k, i64["rows"]]), k])
    k = g.node("Min", [g.node("Max", [k, i64["zero"]]), i64["last"]])
    return g.node("Gather", [g.const("table", step.consts["table"]), k], axis=0)


def qdq_layer_norm(g, step: Step) -> str:
    """ONNX LayerNormalization (opset 17) of the dequantized input, quantized."""
    x, y = g.tensor(step.inputs[0]), g.tensor(step.output)
    gamma, beta, eps = layer_norm_reals(step, x, y)
    v = g.dequantize(g.int8(x.name), x)
    n = g.node("LayerNormalization", [v, g.const("gamma", gamma.astype(np.float32)),
                                      g.const("beta", beta.astype(np.float32))],
               axis=-1, epsilon=float(eps))
    return g.quantize(n, y)


def index_inputs(graph, regions, root) -> dict[str, tuple[int, int]]:
    """(bits, zero_point) of every integer graph input: token ids read by embedding lookups
    (``root`` resolves a reshape or cast view to the input it views), or integer masks."""
    from ...ir.types import INTS

    rows = {v.name: 1 for v in graph.inputs if v.type.dtype in INTS}
    for r in regions:
        src = root(r.sources[0]) if r.sources else ""
        if r.kind is Kind.GATHER and src in rows:
            rows[src] = max(rows[src], r.weights.shape[0])
    return {name: index_coding(n) for name, n in rows.items()}


SHARE_MIN_BYTES = 64  # smaller constants are not worth comparing


def share_constants(steps: list[Step]) -> None:
    """Equal constant arrays of different steps (an unrolled LSTM's recurrent weights, once per
    time step) become one array object: the weight memory holds it once
    (``QProgram.weights_bytes`` counts arrays by identity; the C export declares equal arrays
    once)."""
    import hashlib

    seen: dict[tuple, list[np.ndarray]] = {}
    for s in steps:
        for name, a in s.consts.items():
            if not isinstance(a, np.ndarray) or a.nbytes < SHARE_MIN_BYTES:
                continue
            key = (a.dtype.str, a.shape, hashlib.blake2b(a.tobytes(), digest_size=16).digest())
            same = seen.setdefault(key, [])
            first = next((b for b in same if np.array_equal(a, b)), None)
            if first is None:
                same.append(a)
            else:
                s.consts[name] = first
