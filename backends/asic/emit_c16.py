"""The C export of int16 steps (16x8) and of precision conversions: one builder per kind,
``build16(emitter, i, step, *tensors) -> (call, snippet)``, calling ``c_kernels16``.

The int8 builders of ``emit_c`` do the geometry; where a kernel differs only in its code type
(pools, add/sub/mul, moves, matmul) their call is reused with the kernel renamed (the
emitter's pointers are already ``int16_t *`` for 16-bit tensors).
"""

from __future__ import annotations

from collections.abc import Callable
from math import prod
from typing import Any

import numpy as np

from . import c_kernels16  # noqa: F401  (registers the int16 snippets)
from .program import Kind, QTensor, Step
from .reference import LUT16_ENTRIES


def _c_array(ctype: str, name: str, values: np.ndarray) -> str:
    from .emit_c import _c_array as c_array

    return c_array(ctype, name, values)


def _renamed(fn: str) -> Callable[..., tuple[str, str]]:
    """The int8 builder of ``fn``'s kind, its call renamed to ``fn``16."""
    def build(e: Any, i: int, s: Step, *ts: QTensor) -> tuple[str, str]:
        from .emit_c import _BUILDERS

        call = _BUILDERS[s.kind](e, i, s, *ts)
        assert call.startswith(f"{fn}("), call
        call = f"{fn}16(" + call[len(fn) + 1:]
        return call.replace("(const int8_t *const[])", "(const int16_t *const[])"), f"{fn}16"
    return build


def _bias64(e: Any, i: int, s: Step, channels: int, size: int) -> tuple[str, int]:
    b = np.asarray(s.consts["bias"]).reshape(-1)
    if b.size not in (1, channels, size):
        raise NotImplementedError(f"step {i}: a bias of shape {s.consts['bias'].shape}")
    e.static(_c_array("int64_t", f"s{i}_bias", b.astype(np.int64)))
    return f"s{i}_bias", b.size


def _check_wide(i: int, s: Step) -> None:
    if s.requant is None or not s.requant.wide or np.any(np.asarray(s.requant.shift) > 14):
        raise ValueError(f"step {i}: a 16x8 step needs a wide requantization, shift <= 14")


def _wide_requant(e: Any, i: int, s: Step, out: QTensor) -> str:
    _check_wide(i, s)
    return e.requant(i, s.requant, out)


def conv(e: Any, i: int, s: Step, x: QTensor, out: QTensor) -> tuple[str, str]:
    w = np.asarray(s.consts["weights"])  # [K, N]
    oc = w.shape[1]
    win = e.window(i, s, x, oc, out)
    e.static(_c_array("int8_t", f"s{i}_w", np.ascontiguousarray(w.T)))  # [N][K]
    bias, nb = _bias64(e, i, s, oc, out.size)
    rq = _wide_requant(e, i, s, out)
    return (f"conv16({e.ptr(x.name)}, {e.ptr(out.name)}, {win}, {x.zero_point}, "
            f"{s.attrs.get('pad', x.zero_point)}, s{i}_w, {bias}, {nb}, {oc}, {rq});", "conv16")


def depthwise(e: Any, i: int, s: Step, x: QTensor, out: QTensor) -> tuple[str, str]:
    c = x.shape[-1]
    win = e.window(i, s, x, c, out)
    w = np.asarray(s.consts["weights"])
    if w.size != prod(s.window.kernel) * c:
        raise ValueError(f"step {i}: depthwise weights {w.shape} for {c} channels")
    e.static(_c_array("int8_t", f"s{i}_w", w))  # [taps][C]
    bias, nb = _bias64(e, i, s, c, out.size)
    rq = _wide_requant(e, i, s, out)
    return (f"depthwise16({e.ptr(x.name)}, {e.ptr(out.name)}, {win}, {x.zero_point}, "
            f"{s.attrs['pad']}, s{i}_w, {bias}, {nb}, {rq});", "depthwise16")


def matmul(e: Any, i: int, s: Step, a: QTensor, b: QTensor, out: QTensor) -> tuple[str, str]:
    _check_wide(i, s)  # (the int8 builder emits the rq_t)
    return _renamed("matmul")(e, i, s, a, b, out)


def lut(e: Any, i: int, s: Step, x: QTensor, out: QTensor) -> tuple[str, str]:
    table = np.asarray(s.consts["table"])
    channels, inner = 1, max(out.size, 1)
    if table.ndim == 2:
        axis = int(s.attrs["axis"]) % len(x.shape)
        channels, inner = table.shape[0], prod(x.shape[axis + 1:])
        if x.shape[axis] != channels:
            raise ValueError(f"step {i}: a table {table.shape} along axis {axis} of {x.shape}")
    if table.shape[-1] != LUT16_ENTRIES or x.shape != out.shape or x.bits != 16:
        raise ValueError(f"step {i}: an int16 table {table.shape} on {x.shape} -> {out.shape}")
    e.static(_c_array("int16_t", f"s{i}_table", table))
    return (f"lut16({e.ptr(x.name)}, {e.ptr(out.name)}, {out.size}, s{i}_table, {channels}, "
            f"{inner});", "lut16")


def softmax(e: Any, i: int, s: Step, *ts: QTensor) -> tuple[str, str]:
    """As ``emit_c._Emitter.softmax``, with ``mask16_t`` and the difference rescale."""
    from .emit_c import _Emitter

    if any(t.bits != 16 for t in ts):
        raise ValueError(f"step {i}: an int16 softmax with an int8 operand")
    if "mask_weight" in s.consts:
        raise ValueError(f"step {i}: an int16 softmax with mask weights")
    call = _Emitter.softmax(e, i, s, *ts)
    e.statics[:] = [d.replace(f"static const mask_t s{i}_mk", f"static const mask16_t s{i}_mk")
                    for d in e.statics]
    dr = "0"
    if "exp_interp" in s.attrs:
        mult, shift = (int(v) for v in s.attrs["exp_interp"])
        e.static(f"static const int32_t s{i}_dr[2] = {{{mult}, {shift}}};\n")
        dr = f"s{i}_dr"
    head, _, rest = call.partition("(")
    args = rest.rsplit(", ", 1)  # ..., rq);
    assert head == "softmax", call
    return f"softmax16({args[0]}, {dr}, {args[1]}", "softmax16"


def load_const(e: Any, i: int, s: Step, out: QTensor) -> tuple[str, str]:
    e.static(_c_array("int16_t", f"s{i}_values", np.asarray(s.consts["values"])))
    return f"load_const16(s{i}_values, {e.ptr(out.name)}, {out.size});", "load_const16"


def convert(e: Any, i: int, s: Step, x: QTensor, out: QTensor) -> tuple[str, str]:
    if s.requant is None or s.requant.wide or np.asarray(s.requant.multiplier).size != 1:
        raise ValueError(f"step {i}: a conversion needs one requantization multiplier")
    rq = e.requant(i, s.requant, out)
    return (f"convert({e.ptr(x.name)}, {x.bits}, {e.ptr(out.name)}, {out.bits}, {out.size}, "
            f"{x.zero_point}, {rq});", "convert")


BUILDERS16: dict[Kind, Callable[..., tuple[str, str]]] = {
    Kind.CONV: conv, Kind.DEPTHWISE: depthwise, Kind.BATCH_MATMUL: matmul, Kind.LUT: lut,
    Kind.SOFTMAX: softmax, Kind.CONST: load_const, Kind.CONVERT: convert,
    Kind.SUM_POOL: _renamed("pool"), Kind.MAX_POOL: _renamed("pool"),
    Kind.ADD: _renamed("add_sub"), Kind.SUB: _renamed("add_sub"), Kind.MUL: _renamed("mul"),
    Kind.TRANSPOSE: _renamed("transpose"), Kind.SLICE: _renamed("slice"),
    Kind.PAD: _renamed("pad"), Kind.CONCAT: _renamed("concat"),
}


def build16(e: Any, i: int, s: Step, *ts: QTensor) -> tuple[str, str]:
    """The call of int16 (or converting) step i and the snippet it needs."""
    build = BUILDERS16.get(s.kind)
    if build is None:
        raise NotImplementedError(f"C export: no int16 kernel for a {s.kind.value} step")
    if s.kind is not Kind.CONVERT and len({t.bits for t in ts}) != 1:
        raise ValueError(f"step {i} ({s.kind.value}) mixes int8 and int16 tensors")
    return build(e, i, s, *ts)
