"""Joining models into one program: each model's outputs feed the next model's inputs (in
order, or as ``joins`` say), names that collide are made unique, and every seam is checked.
The joined model then goes through the ordinary passes, so fusion and the memory plan cross
the seams."""

from __future__ import annotations

from collections.abc import Sequence

import onnx
from onnx import compose, version_converter

from ..errors import ModelError

Join = tuple[str, str]


def _names(model: onnx.ModelProto) -> set[str]:
    g = model.graph
    return ({v.name for v in g.input} | {v.name for v in g.output}
            | {t.name for t in g.initializer} | {o for n in g.node for o in n.output}
            | {n.name for n in g.node if n.name})


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _aligned(model: onnx.ModelProto, opset: int, ir_version: int) -> onnx.ModelProto:
    """``model`` at the default-domain ``opset`` and ``ir_version`` merge_models requires."""
    if _opset(model) != opset:
        try:
            model = version_converter.convert_version(model, opset)
        except Exception as e:
            raise ModelError(f"model '{model.graph.name}' (opset {_opset(model)}) cannot be "
                             f"converted to opset {opset} to be joined: {e}") from e
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.ir_version = ir_version
    return out


def _real_inputs(g: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    inits = {t.name for t in g.initializer}
    return [v for v in g.input if v.name not in inits]


def _signature(v: onnx.ValueInfoProto) -> tuple[int, tuple]:
    tt = v.type.tensor_type
    dims = tuple(d.dim_value if d.HasField("dim_value") else d.dim_param or "?"
                 for d in tt.shape.dim)
    return tt.elem_type, dims


def _check_seam(out: onnx.ValueInfoProto, inp: onnx.ValueInfoProto) -> None:
    (ot, od), (it, idims) = _signature(out), _signature(inp)
    static = all(isinstance(d, int) for d in od + idims)
    if ot != it or (static and od != idims) or len(od) != len(idims):
        raise ModelError(f"cannot join output '{out.name}' {onnx.helper.tensor_dtype_to_string(ot)}"
                         f"{list(od)} to input '{inp.name}' "
                         f"{onnx.helper.tensor_dtype_to_string(it)}{list(idims)}: "
                         "shapes and dtypes must agree at every seam")


def _io_map(merged: onnx.ModelProto, nxt: onnx.ModelProto, joins: Sequence[Join],
            renamed: dict[str, str]) -> list[Join]:
    outs = {v.name: v for v in merged.graph.output}
    ins = {v.name: v for v in _real_inputs(nxt.graph)}
    explicit = [(o, renamed.get(i, i)) for o, i in joins if renamed.get(i, i) in ins]
    if explicit:
        pairs = explicit
    else:  # by default: outputs in order feed inputs in order
        out_list, in_list = list(merged.graph.output), _real_inputs(nxt.graph)
        if len(out_list) != len(in_list):
            raise ModelError(f"model '{nxt.graph.name}' takes {len(in_list)} input(s) but the "
                             f"models before it give {len(out_list)} output(s): wire them with "
                             "joins=[('output', 'input'), ...] (--join OUTPUT=INPUT)")
        pairs = [(o.name, i.name) for o, i in zip(out_list, in_list)]
    for o, i in pairs:
        if o not in outs:
            raise ModelError(f"join names output '{o}', which no earlier model produces "
                             f"(outputs: {', '.join(outs)})")
        _check_seam(outs[o], ins[i])
    return pairs


def join_models(models: Sequence[onnx.ModelProto],
                joins: Sequence[Join] | None = None) -> onnx.ModelProto:
    """One model computing ``models`` as a chain (see the module docstring)."""
    joins = list(joins or [])
    later = [v.name for m in models[1:] for v in _real_inputs(m.graph)]
    for _, i in joins:
        if i not in later:  # else the join would be dropped and the models wired in order
            raise ModelError(f"join names input '{i}', which no later model takes "
                             f"(inputs: {', '.join(later) or 'none'})")
    opset = max(_opset(m) for m in models)
    ir_version = max(m.ir_version for m in models)
    merged = _aligned(models[0], opset, ir_version)
    for index, model in enumerate(models[1:], 1):
        nxt = _aligned(model, opset, ir_version)
        renamed: dict[str, str] = {}
        if _names(nxt) & _names(merged):  # collisions: prefix every name of the later model
            prefix = f"m{index}."
            renamed = {name: prefix + name for name in _names(nxt)}
            nxt = compose.add_prefix(nxt, prefix)
        pairs = _io_map(merged, nxt, joins, renamed)
        try:
            merged = compose.merge_models(merged, nxt, io_map=pairs,
                                          name=f"{merged.graph.name}+{nxt.graph.name}")
        except Exception as e:
            raise ModelError(f"cannot join '{nxt.graph.name}': {e}") from e
    return merged
