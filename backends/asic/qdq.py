"""Export a ``QProgram`` as a standard QDQ ONNX model, to cross-check the int8 program in any
ONNX runtime.

The model takes the program's float inputs (same names and shapes), quantizes them with
``QuantizeLinear`` to each input tensor's scale and zero point, and computes every step in
the QDQ pattern: ``DequantizeLinear`` (int8 activations) -> float op(s) -> ``QuantizeLinear``
(the output's scale and zero point). The outputs are dequantized under the program's output
names. Conventions follow TFLite / onnxruntime so that ORT fuses the patterns into its
integer kernels (QLinearConv, QLinearMatMul, ...) where it can:

* weights are int8 initializers dequantized per output channel (``axis`` = that channel);
  biases int32 initializers dequantized with scale ``s_x * s_w[c]`` and zero point 0;
* data movement (transpose, slice, pad, concat, reshape views) runs on the int8 tensors
  directly, which is exact; so do a step's clamp (an int8 ``Clip`` after ``QuantizeLinear``:
  clamping commutes with rounding to integers) and a lookup table (a ``Gather`` on the int8
  table at ``x + 128``, or ``c * 256 + x + 128`` for a [C, 256] table indexed along an axis);
* a softmax is ONNX ``Softmax`` (or Exp / ReduceSum / Div over several axes), after an
  ``Add`` of its mask if it has one, quantized to its output's scale;
* a matmul of two activations is ``MatMul`` of both dequantized, times a float factor; a
  constant operand (CONST step) is its int8 codes as an initializer;
* a step's weight scale is not stored in the program, only the requantization multiplier
  ``M = s_x * s_w * gain / s_y`` (``gain`` = folded batch-norm scale or pool divisor). The
  export recovers ``M = multiplier * 2^(shift - 31)`` and dequantizes the weights with
  ``s_w' = M * s_y / s_x``, so the float op's result, quantized with ``s_y``, is ``M * acc``.
  Where ``M`` varies per position (average pools not counting the padding), the weights keep
  scale 1 and a float ``Mul`` by ``M * s_y / s_x`` precedes the ``QuantizeLinear``. Sum pools
  are depthwise convolutions with all-ones weights (global ones: ``ReduceSum``).

Agreement with ``reference.run_reference``: the float model computes each step in float32 and
rounds once; the program's requantization rounds once too (TFLite's single rounding, see
``fixed_point.py``), so they agree except where float32 or the Q31 multiplier lands within
rounding error of a tie, or where ``QuantizeLinear`` rounds an exact half to even (the
program rounds it away from zero). The program's softmax (a Q15 exp table and an integer
division) matches ONNX ``Softmax`` on ~99.9% of codes, within one. Measured in the tests: every
output code equal on the digits CNN and every single-kind model, 99.9% (max one code) on a
softmax. A difference can propagate and grow downstream (a MUL by a large operand, a
softmax); to compare a deep model, compare step by step (below).

onnxruntime's graph optimizations do not change this. On x86 ORT fuses QDQ groups with int8
(signed) activations into integer kernels only if the session sets
``session.qdqisint8allowed=1`` (the default on ARM); with it, convolutions and matmuls run
as QLinearConv / QGemm, which requantize ``acc * (s_x * s_w / s_y)`` in float32 with
round-to-nearest-even: the same single rounding as the float ops.

``to_qdq(program, int8_outputs=True)`` also outputs every program tensor's int8 codes (the
values named ``<tensor>.q8``), to compare with ``run_reference(..., keep=True)`` step by
step.

int16 layers (``precision="int16"``/``"auto"``, TFLite's 16x8) are exported with int16
Quantize/DequantizeLinear, which ONNX has from opset 21 (a program with any int16 tensor is an
opset-21 model; an all-int8 one stays opset 17). Their translations are the int8 ones with
these differences: a 16x8 requantization's multiplier is the Q15 one it applies
(``real_multiplier``); a CONVERT (a change of precision) is a Dequantize then a Quantize; the
clamp, pad and max-pool padding of int16 codes go through int32 (onnxruntime has no int16
Clip or Pad); an int16 table (512 segments linearly interpolated, ``reference.lut16``) is its
integer interpolation in int32 ops, exact; so is an int16 softmax, its interpolated exp,
Q30 division and requantization spelled out in int64 ops (``qdq_softmax16``: ONNX ``Softmax``
was up to 7 int16 codes off). What float ops cannot say exactly: a LayerNorm's (ONNX
``LayerNormalization``); see ``QDQ16_MAX_LSB`` in ``runtime/verify.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .fixed_point import code_range
from .program import Kind, QProgram, QTensor, Requant, Step
from .qdq_softmax16 import softmax16
from .sequence import qdq_gather, qdq_layer_norm

OPSET = 17
IR_VERSION = 8  # the IR version of opset 17: loadable by any runtime supporting that opset
OPSET16 = 21  # int16 Quantize/DequantizeLinear
IR_VERSION16 = 10
INT16_ELEMENT = {8: TensorProto.INT8, 16: TensorProto.INT16}


def real_multiplier(r: Requant) -> np.ndarray:
    """The real value of a fixed-point multiplier, ``multiplier * 2^(shift - 31)``; of a
    16x8 (``wide``) one, the Q15 multiplier it applies (fixed_point's ``*_wide``)."""
    m = r.multiplier.astype(np.int64)
    if r.wide:
        m15 = np.where(m < 0x7FFF0000, (m + (1 << 15)) >> 16, 0x7FFF)
        return m15.astype(np.float64) * np.exp2(r.shift.astype(np.float64) - 15)
    return m.astype(np.float64) * np.exp2(r.shift.astype(np.float64) - 31)


def _channels_first(rank: int) -> list[int]:
    return [0, rank - 1, *range(1, rank - 1)]


def _channels_last(rank: int) -> list[int]:
    return [0, *range(2, rank), 1]


class _Builder:
    """Accumulates nodes and initializers; maps program tensors to their int8 ONNX values."""

    def __init__(self, program: QProgram) -> None:
        self.program = program
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[TensorProto] = []
        # the float interface keeps the program's names; everything else gets fresh ones
        self.used: set[str] = set(program.inputs) | set(program.outputs)
        self.int8_values: dict[str, str] = {}
        self.qparams: dict[tuple[float, int], tuple[str, str]] = {}
        self.prefix = ""  # names of a step's intermediate values start with its output
        self.opset = OPSET16 if any(t.bits == 16 for t in program.tensors.values()) else OPSET

    def fresh(self, base: str) -> str:
        name, i = base, 0
        while name in self.used:
            i += 1
            name = f"{base}.{i}"
        self.used.add(name)
        return name

    def tensor(self, name: str) -> QTensor:
        return self.program.tensors[name]

    def const(self, base: str, value: np.ndarray) -> str:
        name = self.fresh(f"{self.prefix}.{base}" if self.prefix else base)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: Sequence[str], name: str = "", **attrs) -> str:
        """Append one node; returns its (only) output, ``name`` or a fresh one."""
        out = name or self.fresh(f"{self.prefix}.{op}" if self.prefix else op)
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=out, **attrs))
        return out

    # --- int8 activations ---------------------------------------------------------------
    def int8(self, name: str) -> str:
        """The int8 value of program tensor ``name``; a view is a Reshape of its source."""
        if name not in self.int8_values:
            t = self.tensor(name)
            if not t.view_of:
                raise ValueError(f"tensor '{name}' is read before any step writes it")
            src = self.int8(t.view_of)
            self.int8_values[name] = self.node(
                "Reshape", [src, self.const("shape", np.array(t.shape, np.int64))],
                self.fresh(f"{name}.q8"))
        return self.int8_values[name]

    def _qparams(self, t: QTensor) -> tuple[str, str]:
        """Scale and zero point initializers, shared by every tensor with the same pair."""
        key = (float(np.float32(t.scale)), t.zero_point, t.bits)
        if key not in self.qparams:
            prefix, self.prefix = self.prefix, ""
            self.qparams[key] = (self.const("scale", np.array(t.scale, np.float32)),
                                 self.const("zero_point", np.array(t.zero_point, t.dtype)))
            self.prefix = prefix
        return self.qparams[key]

    def dequantize(self, value: str, t: QTensor, name: str = "") -> str:
        return self.node("DequantizeLinear", [value, *self._qparams(t)], name)

    def quantize(self, value: str, t: QTensor, name: str = "") -> str:
        return self.node("QuantizeLinear", [value, *self._qparams(t)], name)

    def reshape(self, value: str, have: Sequence[int], want: Sequence[int]) -> str:
        if tuple(have) == tuple(want):
            return value
        return self.node("Reshape", [value, self.const("shape", np.array(want, np.int64))])

    def transpose(self, value: str, perm: Sequence[int]) -> str:
        return self.node("Transpose", [value], perm=list(perm))

    def reduce_max(self, value: str, axes: Sequence[int]) -> str:
        """ReduceMax keeping the axes (an attribute before opset 18, an input from it)."""
        if self.opset < 18:
            return self.node("ReduceMax", [value], axes=list(axes), keepdims=1)
        return self.node("ReduceMax", [value, self.const("axes", np.array(axes, np.int64))],
                         keepdims=1)

    def on_codes(self, op: str, value: str, t: QTensor, operands: Sequence[str | int],
                 **attrs) -> str:
        """``op`` (Clip, Pad) of the codes ``value`` of tensor ``t``; an int operand is a
        code (a constant of the codes' type), a str a value. On int8 directly, on int16
        through int32 (onnxruntime has no int16 Clip or Pad): exact either way."""
        dtype = np.int8 if t.bits == 8 else np.int32
        if t.bits != 8:
            value = self.node("Cast", [value], to=TensorProto.INT32)
        inputs = [v if isinstance(v, str) else self.const("code", np.array(v, dtype))
                  for v in operands]
        value = self.node(op, [value, *inputs], **attrs)
        return value if t.bits == 8 else self.node("Cast", [value], to=TensorProto.INT16)

    # --- constants in the QDQ convention ------------------------------------------------
    def weights(self, w: np.ndarray, scale: np.ndarray, axis: int) -> str:
        """int8 weights dequantized per channel along ``axis``."""
        zero = np.zeros(scale.shape, np.int8)
        return self.node("DequantizeLinear", [
            self.const("weights", w.astype(np.int8)),
            self.const("weights_scale", scale.astype(np.float32)),
            self.const("weights_zero_point", zero)], axis=axis)

    def bias(self, bias: np.ndarray, x: QTensor, w_scale: np.ndarray) -> str:
        """int32 bias dequantized with scale s_x * s_w[c] (computed in float32, as ORT does
        when it fuses the conv into an integer kernel that adds the raw int32 bias)."""
        scale = np.float32(x.scale) * w_scale.astype(np.float32)
        return self.node("DequantizeLinear", [
            self.const("bias", bias.astype(np.int32)),
            self.const("bias_scale", scale),
            self.const("bias_zero_point", np.zeros(scale.shape, np.int32))], axis=0)


# --- the per-kind translations: each returns the int8 value of the step's output ---------

def _factor(step: Step, x: QTensor, y: QTensor) -> np.ndarray:
    """``M * s_y / s_x``, what the float sum of DQ(x) terms is multiplied by before the
    quantization to ``s_y``: per channel ([C]) when it allows, else in the output's shape."""
    f = real_multiplier(step.requant) * y.scale / x.scale
    channels = y.shape[-1]
    if f.size == 1 or f.shape == (channels,):
        return np.broadcast_to(f, (channels,)).astype(np.float32)
    return np.broadcast_to(f, y.shape).astype(np.float32)


def _mac_scales(step: Step, x: QTensor, y: QTensor) -> tuple[np.ndarray, np.ndarray | None]:
    """(per-channel weight scales, per-position factor or None): a per-channel factor is
    folded into the weight scales (the TFLite/ORT form), a per-position one cannot be."""
    f = _factor(step, x, y)
    if f.ndim == 1:
        return f, None
    return np.ones(y.shape[-1], np.float32), f


def _requantize(g: _Builder, step: Step, acc: str, shape: Sequence[int],
                factor: np.ndarray | None = None, channels_first: bool = False) -> str:
    """A float result (in ``shape``, NCHW if ``channels_first``) -> the step's int8 output:
    times ``factor`` (per position, in the output's shape), quantized, reshaped, clamped."""
    y = g.tensor(step.output)
    shape = list(shape)
    if factor is not None:  # the factor is laid out like the output: move there in float
        if channels_first:
            acc = g.transpose(acc, _channels_last(len(shape)))
            shape, channels_first = [shape[i] for i in _channels_last(len(shape))], False
        acc = g.reshape(acc, shape, y.shape)
        acc, shape = g.node("Mul", [acc, g.const("factor", factor)]), list(y.shape)
    q = g.quantize(acc, y)
    if channels_first:
        q = g.transpose(q, _channels_last(len(shape)))
        shape = [shape[i] for i in _channels_last(len(shape))]
    q = g.reshape(q, shape, y.shape)
    r = step.requant
    if r is not None and (r.lo, r.hi) != code_range(y.bits):
        q = g.on_codes("Clip", q, y, [r.lo, r.hi])
    return q


def _window_input(g: _Builder, step: Step, x: QTensor, neutral: int) -> tuple[str, list[int]]:
    """The step's input as int8 NCHW and the pads for the ONNX op. ONNX pads with 0.0 (conv)
    or ignores the padding (max pool); a pad code acting otherwise is padded explicitly."""
    win = step.window
    value, pads = g.int8(x.name), list(win.pads)
    if step.attrs["pad"] != neutral and any(pads):
        n = len(win.kernel)
        width = [0, *pads[:n], 0, 0, *pads[n:], 0]
        value = g.on_codes("Pad", value, x, [g.const("pads", np.array(width, np.int64)),
                                             step.attrs["pad"]])
        pads = [0] * (2 * n)
    return g.transpose(value, _channels_first(len(x.shape))), pads


def _window_attrs(step: Step, pads: list[int]) -> dict:
    win = step.window
    return {"kernel_shape": list(win.kernel), "strides": list(win.strides),
            "dilations": list(win.dilations), "pads": pads}


def _out_nchw(x: QTensor, step: Step, channels: int) -> list[int]:
    """The NCHW shape of a windowed op's result, as ONNX computes it (floor mode)."""
    win, n = step.window, len(step.window.kernel)
    spatial = [(s + win.pads[i] + win.pads[n + i] - (k - 1) * d - 1) // st + 1
               for i, (s, k, d, st) in enumerate(zip(x.shape[1:-1], win.kernel, win.dilations,
                                                     win.strides))]
    return [x.shape[0], channels, *spatial]


def _conv(g: _Builder, step: Step) -> str:
    x = g.tensor(step.inputs[0])
    w = step.consts["weights"]  # [K, N]; with a window K = taps (row-major) then channels
    n_out = w.shape[1]
    w_scale, factor = _mac_scales(step, x, g.tensor(step.output))
    bias = g.bias(step.consts["bias"], x, w_scale)
    win = step.window
    if win is None:
        rows = x.size // w.shape[0]
        a = g.reshape(g.int8(x.name), x.shape, (rows, w.shape[0]))
        acc = g.node("MatMul", [g.dequantize(a, x), g.weights(w, w_scale, axis=1)])
        acc = g.node("Add", [acc, bias])
        return _requantize(g, step, acc, (rows, n_out), factor)
    taps = w.reshape(*win.kernel, -1, n_out)  # [*K, Cin, N]
    taps = np.moveaxis(taps, (-1, -2), (0, 1))  # ONNX: [N, Cin, *K]
    xs, pads = _window_input(g, step, x, neutral=x.zero_point)
    acc = g.node("Conv", [g.dequantize(xs, x), g.weights(taps, w_scale, axis=0), bias],
                 **_window_attrs(step, pads))
    return _requantize(g, step, acc, _out_nchw(x, step, n_out), factor, channels_first=True)


def _depthwise(g: _Builder, step: Step) -> str:
    x = g.tensor(step.inputs[0])
    channels = x.shape[-1]
    w_scale, factor = _mac_scales(step, x, g.tensor(step.output))
    taps = np.moveaxis(step.consts["weights"], -1, 0)[:, None]  # [*K, C] -> [C, 1, *K]
    xs, pads = _window_input(g, step, x, neutral=x.zero_point)
    acc = g.node("Conv", [g.dequantize(xs, x), g.weights(taps, w_scale, axis=0),
                          g.bias(step.consts["bias"], x, w_scale)],
                 group=channels, **_window_attrs(step, pads))
    return _requantize(g, step, acc, _out_nchw(x, step, channels), factor, channels_first=True)


def _sum_pool(g: _Builder, step: Step) -> str:
    x, y = g.tensor(step.inputs[0]), g.tensor(step.output)
    channels = x.shape[-1]
    if step.window is None:  # global: ReduceSum, then the factor in the output's layout
        axes = g.const("axes", np.array(step.attrs["axes"], np.int64))
        acc = g.node("ReduceSum", [g.dequantize(g.int8(x.name), x), axes], keepdims=1)
        shape = [1 if i in [a % len(x.shape) for a in step.attrs["axes"]] else d
                 for i, d in enumerate(x.shape)]
        return _requantize(g, step, acc, shape, _factor(step, x, y))
    # windowed: a depthwise conv with all-ones taps (scaled per channel when possible)
    w_scale, factor = _mac_scales(step, x, y)
    ones = np.ones((channels, 1, *step.window.kernel), np.int8)
    xs, pads = _window_input(g, step, x, neutral=x.zero_point)
    acc = g.node("Conv", [g.dequantize(xs, x), g.weights(ones, w_scale, axis=0)],
                 group=channels, **_window_attrs(step, pads))
    return _requantize(g, step, acc, _out_nchw(x, step, channels), factor, channels_first=True)


def _max_pool(g: _Builder, step: Step) -> str:
    x = g.tensor(step.inputs[0])
    if step.window is None:
        axes = [a % len(x.shape) for a in step.attrs["axes"]]
        m = g.reduce_max(g.dequantize(g.int8(x.name), x), axes)
        return _requantize(g, step, m, [1 if i in axes else d for i, d in enumerate(x.shape)])
    # max(lowest, v) = v
    xs, pads = _window_input(g, step, x, neutral=code_range(x.bits)[0])
    m = g.node("MaxPool", [g.dequantize(xs, x)], **_window_attrs(step, pads))
    return _requantize(g, step, m, _out_nchw(x, step, x.shape[-1]), channels_first=True)


def _elementwise(op: str) -> Callable[[_Builder, Step], str]:
    def translate(g: _Builder, step: Step) -> str:
        a, b = (g.dequantize(g.int8(i), g.tensor(i)) for i in step.inputs)
        return _requantize(g, step, g.node(op, [a, b]), g.tensor(step.output).shape)

    translate.__doc__ = f"{op} of the two dequantized inputs (numpy = ONNX broadcasting)."
    return translate


def _lut(g: _Builder, step: Step) -> str:
    x = g.tensor(step.inputs[0])
    table = step.consts["table"]
    if x.bits == 16:
        return _lut16(g, step, x, table)
    offset = np.array(128, np.int64)  # code -128 is entry 0
    if table.ndim == 2:  # [C, 256], one table per index along attrs["axis"]: a flat gather
        shape = [1] * len(x.shape)
        shape[step.attrs.get("axis", -1)] = table.shape[0]
        offset = (np.arange(table.shape[0], dtype=np.int64) * 256 + 128).reshape(shape)
    index = g.node("Cast", [g.int8(x.name)], to=TensorProto.INT64)
    index = g.node("Add", [index, g.const("offset", offset)])
    out = g.node("Gather", [g.const("table", table.reshape(-1)), index], axis=0)
    return g.reshape(out, x.shape, g.tensor(step.output).shape)


def _lut16(g: _Builder, step: Step, x: QTensor, table: np.ndarray) -> str:
    """``reference.lut16`` in int32 ops: u = x + 2^15 >= 0, segment i = u / 128 (of the [C,
    513] table, row c's at c * 513 + i), t[i] + floor(((t[i+1] - t[i]) (u mod 128) + 64) /
    128); the floor of a negative through an offset of 2^17 segments (|slope * 127| < 2^24)."""
    def i32(v: int | np.ndarray) -> str:
        return g.const("k", np.asarray(v, np.int32))

    u = g.node("Add", [g.node("Cast", [g.int8(x.name)], to=TensorProto.INT32), i32(1 << 15)])
    i = g.node("Div", [u, i32(128)])  # u >= 0: truncation is the floor
    frac = g.node("Sub", [u, g.node("Mul", [i, i32(128)])])
    if table.ndim == 2:  # one row per index along attrs["axis"]: a flat gather
        shape = [1] * len(x.shape)
        shape[step.attrs.get("axis", -1)] = table.shape[0]
        rows = np.arange(table.shape[0], dtype=np.int32) * table.shape[1]
        i = g.node("Add", [i, i32(rows.reshape(shape))])
    flat = g.const("table", table.reshape(-1).astype(np.int32))
    base = g.node("Gather", [flat, i], axis=0)
    nxt = g.node("Gather", [flat, g.node("Add", [i, i32(1)])], axis=0)
    slope = g.node("Mul", [g.node("Sub", [nxt, base]), frac])
    offset = 1 << 17
    step_ = g.node("Sub", [g.node("Div", [g.node("Add", [slope, i32(64 + 128 * offset)]),
                                          i32(128)]), i32(offset)])
    out = g.node("Cast", [g.node("Add", [base, step_])], to=TensorProto.INT16)
    return g.reshape(out, x.shape, g.tensor(step.output).shape)


def _softmax(g: _Builder, step: Step) -> str:
    """Softmax of the dequantized input (plus its mask) over attrs["axes"], quantized to the
    output's scale (zero point -128)."""
    x = g.tensor(step.inputs[0])
    if x.bits == 16:  # float Softmax is several int16 codes off: the integer definition
        return softmax16(g, step)
    axes = [a % len(x.shape) for a in step.attrs["axes"]]
    v = g.dequantize(g.int8(x.name), x)
    if "mask" in step.consts:  # the additive mask, in x's codes over its trailing axes
        mask = step.consts["mask"] * x.scale
        if "mask_weight" in step.consts:  # and its fractions of a code, factors of exp
            mask = mask + np.log(step.consts["mask_weight"] / (1 << 15))
        mask = mask.astype(np.float32)
        v = g.node("Add", [v, g.const("mask", mask)])
    elif len(step.inputs) == 2:  # a mask tensor
        t = g.tensor(step.inputs[1])
        v = g.node("Add", [v, g.dequantize(g.int8(t.name), t)])
    if len(axes) == 1:
        p = g.node("Softmax", [v], axis=axes[0])
    else:  # ONNX's Softmax normalizes over one axis: spell it out
        top = g.reduce_max(v, axes)
        e = g.node("Exp", [g.node("Sub", [v, top])])
        total = g.node("ReduceSum", [e, g.const("axes", np.array(axes, np.int64))], keepdims=1)
        p = g.node("Div", [e, total])
    return _requantize(g, step, p, x.shape)


def _batch_matmul(g: _Builder, step: Step) -> str:
    """MatMul of the two dequantized activations, times M s_y / (s_a s_b), quantized."""
    a, b = (g.tensor(i) for i in step.inputs)
    y = g.tensor(step.output)
    acc = g.node("MatMul", [g.dequantize(g.int8(a.name), a), g.dequantize(g.int8(b.name), b)])
    factor = real_multiplier(step.requant) * y.scale / (a.scale * b.scale)
    return _requantize(g, step, acc, y.shape, factor.astype(np.float32))


def _load_const(g: _Builder, step: Step) -> str:
    """The constant's int8 (int16) codes, as an initializer."""
    dtype = g.tensor(step.output).dtype
    return g.node("Identity", [g.const("values", step.consts["values"].astype(dtype))])


def _transpose(g: _Builder, step: Step) -> str:
    return g.transpose(g.int8(step.inputs[0]), step.attrs["perm"])


def _slice(g: _Builder, step: Step) -> str:
    starts, steps = step.attrs["starts"], step.attrs["steps"]
    counts = g.tensor(step.output).shape
    # ONNX ends are exclusive; one past index 0 going backwards must be spelled INT64_MIN
    ends = [s + (n - 1) * st + (1 if st > 0 else -1) for s, st, n in zip(starts, steps, counts)]
    ends = [e if e >= 0 else np.iinfo(np.int64).min for e in ends]
    return g.node("Slice", [g.int8(step.inputs[0]),
                            g.const("starts", np.array(starts, np.int64)),
                            g.const("ends", np.array(ends, np.int64)),
                            g.const("axes", np.arange(len(starts), dtype=np.int64)),
                            g.const("steps", np.array(steps, np.int64))])


def _pad(g: _Builder, step: Step) -> str:
    x = g.tensor(step.inputs[0])
    return g.on_codes("Pad", g.int8(x.name), x, [
        g.const("pads", np.array(step.attrs["pads"], np.int64)), step.attrs["value"]])


def _convert(g: _Builder, step: Step) -> str:
    """A change of precision (or scale): the dequantized input times ``M s_y / s_x`` (1 but
    for the multiplier's rounding), quantized to the output's."""
    x, y = g.tensor(step.inputs[0]), g.tensor(step.output)
    v = g.dequantize(g.int8(x.name), x)
    factor = real_multiplier(step.requant) * y.scale / x.scale
    return _requantize(g, step, v, x.shape, np.broadcast_to(factor, y.shape).astype(np.float32))


def _concat(g: _Builder, step: Step) -> str:
    return g.node("Concat", [g.int8(i) for i in step.inputs], axis=step.attrs["axis"])


STEPS: dict[Kind, Callable[[_Builder, Step], str]] = {
    Kind.CONV: _conv, Kind.DEPTHWISE: _depthwise, Kind.SUM_POOL: _sum_pool,
    Kind.MAX_POOL: _max_pool, Kind.ADD: _elementwise("Add"), Kind.SUB: _elementwise("Sub"),
    Kind.MUL: _elementwise("Mul"), Kind.LUT: _lut, Kind.SOFTMAX: _softmax,
    Kind.TRANSPOSE: _transpose,
    Kind.SLICE: _slice, Kind.PAD: _pad, Kind.CONCAT: _concat,
    Kind.BATCH_MATMUL: _batch_matmul, Kind.CONST: _load_const, Kind.CONVERT: _convert,
    Kind.GATHER: qdq_gather, Kind.LAYERNORM: qdq_layer_norm,  # sequence.py
}


def to_qdq(program: QProgram, int8_outputs: bool = False) -> onnx.ModelProto:
    """The QDQ ONNX model of ``program``: float inputs and outputs under the program's names;
    with ``int8_outputs``, then every program tensor's int8 codes, in ``program.tensors``
    order (their names are ``<tensor>.q8``, suffixed if that is taken)."""
    g = _Builder(program)
    for name in program.inputs:
        g.int8_values[name] = g.quantize(name, g.tensor(name), g.fresh(f"{name}.q8"))
    for step in program.steps:
        g.prefix = step.output
        value = STEPS[step.kind](g, step)
        # the step's int8 output carries the tensor's name (plus .q8), for debugging
        last = g.nodes[-1]
        assert last.output[0] == value, "a translation must end with its output's producer"
        name = g.fresh(f"{step.output}.q8")
        last.output[0] = last.name = name
        g.int8_values[step.output] = name
    g.prefix = ""
    for name in program.outputs:
        g.dequantize(g.int8(name), g.tensor(name), name)

    def value_info(name: str, elem_type: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, elem_type, g.tensor(name).shape)

    outputs = [value_info(n) for n in program.outputs]
    if int8_outputs:
        for name in program.tensors:
            outputs.append(value_info(name, INT16_ELEMENT[g.tensor(name).bits]))
            outputs[-1].name = g.int8(name)
    graph = helper.make_graph(g.nodes, f"{program.name or 'program'}_qdq",
                              [value_info(n) for n in program.inputs], outputs, g.inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", g.opset)],
                             producer_name="sw2c",
                             ir_version=IR_VERSION if g.opset == OPSET else IR_VERSION16)
