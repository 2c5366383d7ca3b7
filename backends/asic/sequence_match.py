"""Find the sequence kernels (``sequence.py``) in the optimized float graph, for ``match``.

* An embedding lookup is the IR's GATHER of a constant table along axis 0 by integer
  indices (a token-id input, or a view of one).
* A cast of token ids (or of an integer mask) to float is a view: their codes (scale 1, see
  ``sequence.index_coding``) already are the float values; a cast of them to int32 or int64
  too (exporters cast int32 ids to int64: the codes, 16 bits at most, hold the same ids); a
  cast of a 0/1 mask to bool too (nonzero is true), the AND of it with a constant mask a
  MUL, a WHERE of it between two scalars a table.
* LayerNormalization as ``frontend/ops_norm.py`` writes it over the last axis: mean = MEAN(x);
  c = x - mean (once or twice); var = MEAN(c * c); inv = 1 / SQRT(var + eps); c * inv; then an
  optional per-channel MUL by gamma and ADD of beta. The region covers them all.
"""

from __future__ import annotations

import numpy as np

from ...ir import Node, Op
from ...ir.ops import Binary, Reduce, Unary
from ...ir.types import FLOATS, INTS
from .program import Kind

WIDE_INTS = ("int32", "int64")  # casts of codes (16 bits at most) to them change no value


def _unique(nodes: list[Node]) -> list[Node]:
    return list({n.name: n for n in nodes}.values())


def _is(node: Node | None, op: Op, fn: object) -> bool:
    return node is not None and node.op is op and node.attrs.get("fn") is fn


def sequence_region(m, node: Node):
    """A GATHER region, True for a cast absorbed as a view, None for anything else."""
    from .match import Region, unsupported

    g = m.g
    if node.op is Op.CAST and g.type_of(node.inputs[0]).dtype in INTS \
            and (node.type.dtype in FLOATS or node.type.dtype in ("bool", *WIDE_INTS)) \
            and node.inputs[0] in m.materialized:
        src = node.inputs[0]
        m.views[node.name] = m.views.get(src, src)
        m.materialized.add(node.name)
        m.absorbed.add(node.name)
        return True
    if _is(node, Op.BINARY, Binary.AND) and len(m.operands(node)) == 1:
        # a 0/1 mask and a constant one (transformers' padding and causal masks): their
        # product is nonzero where both are (a MUL step; the constant loaded by a CONST step)
        return m.clamped(Region(Kind.MUL, node, tuple(node.inputs), node.name, [node]))
    if node.op is Op.WHERE and m.const(node.inputs[0]) is None and all(
            m.const(i) is not None and m.const(i).size == 1 for i in node.inputs[1:]):
        # where(mask, a, b) of scalars: a table of the mask's codes (nonzero -> a)
        return Region(Kind.LUT, node, (node.inputs[0],), node.name, [node])
    if node.op is Op.GATHER:
        data, idx = node.inputs
        table = m.const(data)
        ids = {v.name for v in g.inputs if v.type.dtype in INTS}  # coded with scale 1
        if table is None or node.attrs["axis"] != 0 or m.views.get(idx, idx) not in ids:
            raise unsupported(node, "a gather other than rows of a constant table by an "
                              "integer model input or a reshape of one (an embedding lookup)")
        return Region(Kind.GATHER, node, (idx,), node.name, [node], weights=table)
    return None


def _scalar(m, node: Node, other: str) -> float | None:
    """The scalar constant operand of a binary ``node`` whose other operand is ``other``."""
    if node.op is not Op.BINARY or other not in node.inputs or len(node.inputs) != 2:
        return None
    c = m.const(node.inputs[1] if node.inputs[0] == other else node.inputs[0])
    return float(c.reshape(-1)[0]) if c is not None and c.size == 1 else None


def _channel_const(m, node: Node, other: str, fn: Binary, channels: int) -> np.ndarray | None:
    """The per-channel constant [C] of ``other (fn) c``, if ``node`` is that."""
    if not _is(node, Op.BINARY, fn) or other not in node.inputs \
            or node.type.shape != m.g.type_of(other).shape:
        return None
    c = m.const(node.inputs[1] if node.inputs[0] == other else node.inputs[0])
    if c is None or len(set(node.inputs)) != 2:
        return None
    full = np.broadcast_to(c.astype(np.float64), node.type.shape).reshape(-1, channels)
    return full[0].copy() if np.all(full == full[:1]) else None


def layer_norm(m, mean: Node):
    """The LAYERNORM region anchored at ``mean`` (a MEAN over the last axis), or None."""
    from .match import Region

    g, x = m.g, mean.inputs[0]
    shape = g.type_of(x).shape
    rank = len(shape)
    axes = [a % rank for a in mean.attrs["axes"]]
    if axes != [rank - 1] or m.const(x) is not None or mean.name in m.outputs:
        return None
    subs = _unique(m.users.get(mean.name, []))
    if not subs or any(not _is(u, Op.BINARY, Binary.SUB) or u.inputs != (x, mean.name)
                       or u.name in m.outputs for u in subs):
        return None
    centered = {u.name for u in subs}
    readers = _unique([r for u in subs for r in m.users.get(u.name, [])])
    sq = next((r for r in readers if _is(r, Op.BINARY, Binary.MUL)
               and r.inputs[0] == r.inputs[1] and r.inputs[0] in centered), None)
    var = m._next(sq.name) if sq is not None else None
    if not _is(var, Op.REDUCE, Reduce.MEAN) or [a % rank for a in var.attrs["axes"]] != axes:
        return None
    add = m._next(var.name)
    eps = _scalar(m, add, var.name) if _is(add, Op.BINARY, Binary.ADD) else None
    root = m._next(add.name) if eps is not None else None
    inv = m._next(root.name) if _is(root, Op.UNARY, Unary.SQRT) else None
    if not _is(inv, Op.BINARY, Binary.DIV) or inv.inputs[1] != root.name \
            or _scalar(m, inv, root.name) != 1.0:
        return None
    norm = m._next(inv.name)
    if not _is(norm, Op.BINARY, Binary.MUL) or not any(i in centered for i in norm.inputs) \
            or {r.name for r in readers} != {sq.name, norm.name} or not eps >= 0:
        return None
    nodes = [mean, *subs, sq, var, add, root, inv, norm]
    out, c = norm, shape[-1]
    gamma, beta = np.ones(c), np.zeros(c)
    u = m._next(out.name)
    if (k := _channel_const(m, u, out.name, Binary.MUL, c)) is not None:
        gamma, out = k, u
        nodes.append(u)
        u = m._next(out.name)
    if (k := _channel_const(m, u, out.name, Binary.ADD, c)) is not None:
        beta, out = k, u
        nodes.append(u)
    return Region(Kind.LAYERNORM, mean, (x,), out.name, nodes, gain=gamma, offset=beta,
                  eps=eps)


def recurrent_states(regions: list) -> set[str]:
    """The outputs of the regions that carry a recurrent state from one unrolled time step to
    the next: chains ADD -> MUL -> ADD -> MUL -> ADD (an LSTM's cell c_t = f c_{t-1} + i g, a
    GRU's h_t = (1 - z) h~ + z h_{t-1}), the ADDs and the MULs between them; a single link
    (a residual add scaled once) is not a recurrence. TFLite's int8 LSTM keeps the cell state
    in int16: accumulated over every step, it is where int8 error compounds."""
    made = {r.output: r for r in regions}
    links: list[tuple[str, str, str]] = []  # (previous state, the MUL reading it, the ADD)
    for r in regions:
        if r.kind is not Kind.ADD:
            continue
        for m in (made.get(s) for s in r.sources):
            if m is not None and m.kind is Kind.MUL:
                links += [(x, m.output, r.output) for x in m.sources
                          if x in made and made[x].kind is Kind.ADD]
    heads = {a for _, _, a in links}
    tails = {p for p, _, _ in links}
    states: set[str] = set()
    for prev, mul, add in links:
        if prev in heads or add in tails:  # part of a chain of two links or more
            states.update((prev, mul, add))
    return states
