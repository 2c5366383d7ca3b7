"""Winograd convolution: a 3x3 stride-1 conv (im2col WINDOW -> RESHAPE -> MATMUL by a constant
weight matrix) becomes F(m x m, 3 x 3) with existing IR ops, so the interpreter defines it:

- tiles: a WINDOW of (m+2) x (m+2) taps at stride m over the padded input, channels moved to
  the front so each tile is one row of t*t = (m+2)^2 values;
- input transform: that row times the constant kron(B^T, B^T)^T (one product by a small
  constant matrix, which the CPU backend unrolls over its nonzero coefficients, reading the
  tiles through the window: a "lincomb" kernel, passes/fuse.py);
- per transform position, a batched MATMUL by the constant U = G g G^T (computed in float64);
- output transform: the t*t values of each (tile, channel) times kron(A^T, A^T)^T, then the
  m x m blocks are put back in place and cropped to the conv's output.

The multiplies drop from 9 per output to (m+2)^2 / m^2 (4 for F(2,3), 2.25 for F(4,3)); the
transforms are memory traffic. F(4,3) loses a few bits in float32 (its transforms have
entries up to 8 and 1/24): max error ~1e-5 of max |y| on 512-channel layers, verify allows 1e-3.

On by default (``sw2c.compile(..., winograd="auto")``; "off" keeps direct convs): ResNet-50
and VGG-19 run ~10% and ~45% faster at 1 thread. The price is weights: U holds (m+2)^2 / 9
times the conv's weights (4x for F(4,3)), and each conv becomes three GEMM kernels.
"""

from __future__ import annotations

import numpy as np

from ..errors import check_choice
from ..ir import Graph, Node, Op
from .rewrite import Rewriter, rewrite

# Lavin & Gray's matrices: Y = A^T [(G g G^T) * (B^T d B)] A
_F2 = (
    [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
    [[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]],
    [[1, 1, 1, 0], [0, 1, -1, -1]],
)
_F4 = (
    [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
     [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
    [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
     [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
    [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
)
MATRICES = {2: _F2, 4: _F4}

# Measured at 1 thread (benchmarks/winograd_bench.py): below 32 input or output channels the
# transforms cost more than the multiplies saved (16 -> 16 at 56x56: 0.18 ms vs 0.15 direct).
MIN_CHANNELS = 32
# F(4,3) from this output size on (14x14 at 256 ch: 0.88 ms vs 1.08 for F(2,3)); smaller maps
# take F(2,3), whose U (16 C M floats) is less weight traffic than F(4,3)'s (36 C M) when the
# GEMM has few rows (7x7 at 512 ch: F(2,3) 1.7 ms, F(4,3) 1.6-2.8, direct 2.2-2.9)
F4_MIN_SIZE = 12
# "auto" keeps a conv of fewer tiles direct: their GEMM has too few rows to reuse the weights,
# and streaming U (16/9 of the conv's weights for F(2,3)) takes longer than the direct conv's
# multiplies. Per C x M weight pair, F(2,3) costs max(32 P flops, 64 bytes) and direct
# max(72 P flops, 36 bytes); at ~8 flops per byte of memory bandwidth the two meet at P ~ 7.
# ResNet-18-style at 112x112, its 4x4 layer4 direct: 0.94x the time at 1 thread, 0.95x at 2.
MIN_TILES = 8


def transforms(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(B^T, G, A^T) of F(m x m, 3 x 3) in float64."""
    bt, g, at = MATRICES[m]
    return np.array(bt, np.float64), np.array(g, np.float64), np.array(at, np.float64)


WEIGHT_BLOCK = 8192  # (c m) columns transformed at once: 3 x 3 x 8192 float64 (576 KiB)


def weight_transform(w: np.ndarray, c: int, m: int) -> np.ndarray:
    """The im2col weight [9C, M] (rows ordered ky, kx, c) -> U [t*t, C, M] = G g G^T per
    (c, m) pair, computed in float64 and rounded once to float32."""
    _, g, _ = transforms(m)
    k = np.asarray(w).reshape(3, -1)  # [i, (j c m)]
    cm = k.shape[1] // 3
    u = np.empty((len(g), len(g), cm), np.float32)  # [a, b, (c m)]
    # BLAS products on blocks of (c m) columns: float64 temporaries that stay in cache (einsum
    # on whole arrays took 3x as long on VGG-19's weights, most of it in page faults)
    for lo in range(0, cm, WEIGHT_BLOCK):
        hi = min(cm, lo + WEIGHT_BLOCK)
        kb = k.reshape(3, 3, cm)[:, :, lo:hi].astype(np.float64)  # [i, j, block]
        t = np.tensordot(g, kb, axes=(1, 0))  # [a, j, block]: G on the rows
        for a in range(len(g)):
            u[a, :, lo:hi] = g @ t[a]  # and on the columns, rounded once to float32
    return u.reshape(-1, c, w.shape[-1])


def _conv(rw: Rewriter, node: Node) -> tuple[Node, np.ndarray] | None:
    """(window, weight) when ``node`` is the MATMUL of a 3x3 stride-1 dilation-1 group-1
    float32 conv with a constant weight and enough channels, else None."""
    if node.op is not Op.MATMUL or node.type.dtype != "float32":
        return None
    w = rw.const(node.inputs[1])
    r = rw.source(node.inputs[0], Op.RESHAPE)
    win = rw.source(r.inputs[0], Op.WINDOW) if r is not None else None
    if w is None or win is None or not rw.single_use(r.name) or not rw.single_use(win.name):
        return None
    at = win.attrs
    wshape = win.type.shape  # [N, OH, OW, 3, 3, C]
    if (tuple(at["kernel"]), tuple(at["strides"]), tuple(at["dilations"])) != (
            (3, 3), (1, 1), (1, 1)) or at["pad"] != 0.0 or len(wshape) != 6:
        return None
    c = wshape[-1]
    if w.ndim != 2 or w.shape[0] != 9 * c or r.type.shape != (*wshape[:3], 9 * c):
        return None
    if min(c, w.shape[1]) < MIN_CHANNELS:
        return None
    return win, w


def _input_tiles(rw: Rewriter, win: Node, m: int, tiles: tuple[int, int]) -> str:
    """The transformed input V [t*t, N*TH*TW, C]: every copy keeps the channels innermost
    (contiguous runs), and the transform is one GEMM kron(B^T, B^T) @ D [t*t, N*TH*TW*C]."""
    t = m + 2
    x = win.inputs[0]
    n, h, w_, c = rw.type_of(x).shape
    top, left, _, _ = win.attrs["pads"]
    bottom = (tiles[0] - 1) * m + t - h - top  # the last tile may reach past the conv's pads
    right = (tiles[1] - 1) * m + t - w_ - left
    o = win.origin
    d = rw.emit(Op.WINDOW, (x,), o, kernel=(t, t), strides=(m, m), dilations=(1, 1),
                pads=(top, left, bottom, right), pad=0.0)  # [N, TH, TW, t, t, C]
    d = rw.emit(Op.TRANSPOSE, (d,), o, perm=(3, 4, 0, 1, 2, 5))  # [t, t, N, TH, TW, C]
    p = n * tiles[0] * tiles[1]
    d = rw.emit(Op.RESHAPE, (d,), o, shape=(t * t, p * c))
    bt, _, _ = transforms(m)
    kb = np.kron(bt, bt).astype(np.float32)  # exact: small integers
    v = rw.emit(Op.MATMUL, (rw.constant(kb, o), d), o)
    return rw.emit(Op.RESHAPE, (v,), o, shape=(t * t, p, c))


def _output(rw: Rewriter, y: str, m: int, n: int, tiles: tuple[int, int],
            out: tuple[int, ...], origin: str) -> str:
    """Y [t*t, N*TH*TW, M] -> kron(A^T, A^T) @ Y -> the conv's [N, OH, OW, M]."""
    t = m + 2
    mo = out[-1]
    _, _, at = transforms(m)
    ka = np.kron(at, at).astype(np.float32)  # [m*m, t*t]; exact
    y = rw.emit(Op.RESHAPE, (y,), origin, shape=(t * t, n * tiles[0] * tiles[1] * mo))
    y = rw.emit(Op.MATMUL, (rw.constant(ka, origin), y), origin)
    y = rw.emit(Op.RESHAPE, (y,), origin, shape=(m, m, n, tiles[0], tiles[1], mo))
    y = rw.emit(Op.TRANSPOSE, (y,), origin, perm=(2, 3, 0, 4, 1, 5))  # [N, TH, m, TW, m, M]
    full = (n, tiles[0] * m, tiles[1] * m, mo)
    y = rw.emit(Op.RESHAPE, (y,), origin, shape=full)
    if full == tuple(out):
        return y
    return rw.emit(Op.SLICE, (y,), origin, starts=(0, 0, 0, 0), steps=(1, 1, 1, 1),
                   counts=tuple(out))


def choose(oh: int, ow: int) -> int:
    """The tile size m of F(m x m, 3 x 3) for an output of oh x ow (measured, see above)."""
    return 4 if min(oh, ow) >= F4_MIN_SIZE else 2


def winograd_rule(tile: int):
    """The rewrite rule for F(tile x tile, 3 x 3); tile 0 chooses per conv (``choose``)."""

    def rule(rw: Rewriter, node: Node) -> str | None:
        found = _conv(rw, node)
        if found is None:
            return None
        win, w = found
        n, oh, ow, _, _, c = win.type.shape
        m = tile or choose(oh, ow)
        tiles = (-(-oh // m), -(-ow // m))
        if not tile and n * tiles[0] * tiles[1] < MIN_TILES:
            return None
        v = _input_tiles(rw, win, m, tiles)
        u = rw.constant(weight_transform(w, c, m), node.origin)
        y = rw.emit(Op.MATMUL, (v, u), node.origin)  # [t*t, P, M]
        return _output(rw, y, m, n, tiles, node.type.shape, node.origin)

    rule.__name__ = f"winograd_f{tile}"
    return rule


MODES: dict[str, int | None] = {"off": None, "auto": 0, "2": 2, "4": 4}
DEFAULT_MODE = "auto"


def check_mode(mode: str | int) -> str:
    """``mode`` as a key of MODES; a Sw2cError naming the choices otherwise."""
    return check_choice("winograd", mode, MODES)


def winograd(graph: Graph, mode: str | int = DEFAULT_MODE) -> Graph:
    """Rewrite the eligible 3x3 convs of ``graph`` to Winograd F(m x m, 3 x 3). ``mode``:
    "auto" (m per conv by output size), "off", or 2 / 4 (every eligible conv at that m)."""
    tile = MODES[check_mode(mode)]
    return graph if tile is None else rewrite(graph, [winograd_rule(tile)])
