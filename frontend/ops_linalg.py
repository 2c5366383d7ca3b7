"""Det of small matrices, by the Leibniz formula in float64 (exact products for float32
inputs: closer to the true determinant than a float32 LU)."""

from __future__ import annotations

from itertools import permutations

from ..ir import Binary
from .convert import Ctx, Val, converter
from .ops_logic import cast_to

MAX_DET_SIZE = 4  # 24 products of 4; larger matrices would want an LU with pivoting
FLOAT_TYPES = ("float16", "float32", "float64")


def _sign(perm: tuple[int, ...]) -> int:
    """+1 for an even permutation, -1 for an odd one (by counting inversions)."""
    inversions = sum(a > b for i, a in enumerate(perm) for b in perm[i + 1:])
    return -1 if inversions % 2 else 1


@converter("Det", since=11)
def det(cx: Ctx) -> Val:
    """sum over permutations p of sign(p) * prod_i x[..., i, p(i)]."""
    x = cx.x(0)
    dtype = cx.type(x).dtype
    shape = cx.shape(x)
    if dtype not in FLOAT_TYPES:
        raise cx.error(f"input is {dtype} (float16, float32 or float64)")
    if len(shape) < 2 or shape[-1] != shape[-2]:
        raise cx.error(f"input {list(shape)} is not [*, M, M]")
    m, batch = shape[-1], shape[:-2]
    if not 1 <= m <= MAX_DET_SIZE:
        raise cx.unsupported(f"{m}x{m} matrices (1x1 to {MAX_DET_SIZE}x{MAX_DET_SIZE} only)")
    wide = cast_to(cx, cx.reshape(x, (*batch, m * m)), "float64")
    n = len(batch)

    def entry(i: int, j: int) -> Val:
        return cx.slice(wide, (0,) * n + (i * m + j,), (1,) * (n + 1), (*batch, 1))

    total: Val | None = None
    for perm in permutations(range(m)):
        term = entry(0, perm[0])
        for i in range(1, m):
            term = cx.binary(Binary.MUL, term, entry(i, perm[i]))
        if total is None:
            total = term if _sign(perm) > 0 else cx.binary(Binary.SUB, cx.scalar(0.0), term)
        else:
            total = cx.binary(Binary.ADD if _sign(perm) > 0 else Binary.SUB, total, term)
    return cast_to(cx, cx.reshape(total, batch), dtype)
