"""The integer program: int8 tensors and the steps (kernels) that compute them.

Lowering turns the optimized float graph into a ``QProgram``; the integer reference
(``reference.py``) defines what each step computes, the simulator executes it on the target's
arena, and the C export translates it. Every activation is int8 with one scale and zero point
(``real = scale * (q - zero_point)``); weights are int8 symmetric per output channel, biases
int32, requantization an int32 multiplier and shift per channel (see ``fixed_point.py``).
With ``precision="int16"`` or ``"auto"`` a tensor may be int16 instead (``QTensor.bits``,
TFLite's 16x8: zero point 0, int8 weights, int64 biases and accumulators in the MAC kinds,
``Requant.wide``); a step's inputs and output share one width, and CONVERT steps change it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from math import prod
from typing import Any

import numpy as np


class Kind(enum.Enum):
    # the MAC array: int8 x int8 -> int32, then requantize
    CONV = "conv"  # x [M.., K] or window patches of x  @  weights [K, N] + bias [N]
    DEPTHWISE = "depthwise"  # window patches [.., *K, C] * weights [*K, C] summed + bias [C]
    # the vector unit
    SUM_POOL = "sum_pool"  # sum of (x - zp) over a window or over axes, then requantize
    MAX_POOL = "max_pool"  # max over a window (padded with -128) or over axes; same scale
    ADD = "add"  # a + b (numpy broadcasting), TFLite style: both rescaled to a common scale
    SUB = "sub"
    MUL = "mul"  # (a - za) * (b - zb), requantized
    SOFTMAX = "softmax"  # exp table of (x + mask - max) in Q15 over attrs["axes"], divided
    BATCH_MATMUL = "matmul"  # a [.., M, K] @ b [.., K, N] of two activations, requantized
    CONST = "load_const"  # copies consts["values"] (int8) from weight memory into the arena
    LUT = "lut"  # y = table[x + 128], or table[c, x + 128] with c the index along attrs["axis"]
    # sequence kernels (sequence.py): an embedding row per index code (consts["table"]
    # int8 [rows, ..]); an integer LayerNorm over the last axis (I-BERT: isqrt, per channel)
    GATHER = "gather"
    LAYERNORM = "layer_norm"
    # data movement (the output keeps the input's scale and zero point)
    TRANSPOSE = "transpose"  # attrs: perm
    SLICE = "slice"  # attrs: starts, steps (counts = the output shape)
    PAD = "pad"  # attrs: pads (begin per axis, then end); pads with the quantized pad value
    CONCAT = "concat"  # attrs: axis; inputs already share the output's scale
    # a change of precision: x (8 or 16 bits) -> y on y's scale and width, requantize(x - zx)
    CONVERT = "convert"


MAC_ARRAY = frozenset({Kind.CONV, Kind.DEPTHWISE, Kind.BATCH_MATMUL})
MOVES = frozenset({Kind.TRANSPOSE, Kind.SLICE, Kind.PAD, Kind.CONCAT})


@dataclass(frozen=True)
class QTensor:
    """An int8 (``bits`` 8) or int16 (``bits`` 16, TFLite's 16x8: zero point 0) activation;
    ``view_of`` names the tensor it reshapes (sharing its bytes)."""

    name: str
    shape: tuple[int, ...]
    scale: float
    zero_point: int
    view_of: str = ""
    bits: int = 8

    @property
    def size(self) -> int:
        """Elements (not bytes: see ``nbytes``)."""
        return prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * (self.bits // 8)

    @property
    def dtype(self) -> type:
        return np.int16 if self.bits == 16 else np.int8


@dataclass(frozen=True)
class Window:
    """Patches of [N, *S, C] as the IR's WINDOW op takes them: pads are begin then end."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads: tuple[int, ...]


@dataclass(frozen=True)
class Requant:
    """int32 accumulator -> int8: ``clamp(MBQM(acc, multiplier, shift) + zero_point, lo, hi)``.
    ``multiplier``/``shift`` broadcast against the accumulator (per channel: shape [C])."""

    multiplier: np.ndarray
    shift: np.ndarray
    zero_point: int
    lo: int = -128
    hi: int = 127
    wide: bool = False  # an int64 accumulator (16x8): fixed_point's *_wide multiply


@dataclass(eq=False)
class Step:
    """One kernel: reads ``inputs`` (tensor names), writes ``output``.

    ``consts`` holds the integer operands (``weights`` int8, ``bias`` int32, ``table`` int8,
    ``exp`` int32); ``attrs`` the static ones (window, pad code, axes, perm, and for ADD/SUB
    ``left_shift`` and the per-input rescales ``a``/``b`` as (multiplier, shift));
    ``origin`` names the ONNX node it came from, ``fused`` the IR nodes it covers. Lowering
    fills a step in; nothing changes it afterwards."""

    kind: Kind
    inputs: tuple[str, ...]
    output: str
    origin: str
    attrs: dict[str, Any] = field(default_factory=dict)
    consts: dict[str, np.ndarray] = field(default_factory=dict)
    requant: Requant | None = None
    fused: tuple[str, ...] = ()

    @property
    def window(self) -> Window | None:
        return self.attrs.get("window")


@dataclass(frozen=True, eq=False)
class QProgram:
    """Float inputs are quantized into ``inputs`` on entry; ``outputs`` are dequantized on exit."""

    name: str
    tensors: dict[str, QTensor]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    steps: tuple[Step, ...]

    @property
    def weights_bytes(self) -> int:
        """Bytes of weight memory: weights, biases, tables and requantization parameters."""
        arrays = {id(a): a for s in self.steps for a in (  # a tiled layer's steps share them
            *s.consts.values(), *((s.requant.multiplier, s.requant.shift) if s.requant else ()))}
        return sum(a.nbytes for a in arrays.values())

    def producer(self) -> dict[str, Step]:
        return {s.output: s for s in self.steps}
