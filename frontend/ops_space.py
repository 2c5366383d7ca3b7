"""DepthToSpace and SpaceToDepth: a reshape to rank 6, one transpose, a reshape back (the
numpy definitions in the ONNX spec, verbatim)."""

from __future__ import annotations

from .convert import Ctx, Val, converter

# (mode -> permutation of the rank-6 intermediate), as the ONNX spec writes them
DEPTH_TO_SPACE = {"DCR": (0, 3, 4, 1, 5, 2), "CRD": (0, 1, 4, 2, 5, 3)}
SPACE_TO_DEPTH = {"DCR": (0, 3, 5, 1, 2, 4), "CRD": (0, 1, 3, 5, 2, 4)}


def _geometry(cx: Ctx, table: dict[str, tuple[int, ...]]) -> tuple[tuple[int, ...], int,
                                                                    tuple[int, ...]]:
    """(input shape, blocksize, permutation); the mode and rank checked."""
    xs = cx.shape(cx.x(0))
    mode = cx.attr("mode", "DCR")
    if mode not in table:
        raise cx.unsupported(f"mode '{mode}' (DCR and CRD are supported)")
    if len(xs) != 4:
        raise cx.unsupported(f"input of rank {len(xs)} (only [N, C, H, W] is supported)")
    b = int(cx.attr("blocksize", 0))
    if b < 1:
        raise cx.error(f"blocksize {b} must be positive")
    return xs, b, table[mode]


@converter("DepthToSpace")
def depth_to_space(cx: Ctx) -> Val:
    (n, c, h, w), b, perm = _geometry(cx, DEPTH_TO_SPACE)
    if c % (b * b):
        raise cx.error(f"{c} channels are not a multiple of blocksize^2 = {b * b}")
    blocks = [b, b, c // (b * b)] if perm == DEPTH_TO_SPACE["DCR"] else [c // (b * b), b, b]
    y = cx.transpose(cx.reshape(cx.x(0), [n, *blocks, h, w]), perm)
    return cx.reshape(y, [n, c // (b * b), h * b, w * b])


@converter("SpaceToDepth")
def space_to_depth(cx: Ctx) -> Val:
    (n, c, h, w), b, perm = _geometry(cx, SPACE_TO_DEPTH)
    if h % b or w % b:
        raise cx.error(f"spatial size {h}x{w} is not a multiple of blocksize {b}")
    y = cx.transpose(cx.reshape(cx.x(0), [n, c, h // b, b, w // b, b]), perm)
    return cx.reshape(y, [n, c * b * b, h // b, w // b])
