"""Cover the optimized float graph with target kernels: which IR nodes each int8 step computes.

Walking the graph in order, every node either starts a region (its anchor) or is absorbed by
one: a matmul takes its im2col window and its affine/clamp epilogue (bias, BN scale, ReLU,
Clip); a sum over a windowed product is a depthwise conv; a reduction over a window is a pool;
an elementwise tree of one tensor and constants becomes one lookup table. A constant operand
no table can hold (a position embedding added over several axes, a class token concatenated)
is a source of its own: lowering loads it into the arena with a CONST step. A matmul of two
activations is a BATCH_MATMUL (attention scores and context); a constant or a broadcast tensor
added right before a softmax is its mask. Only a region's output is materialized as an int8
tensor; reshapes of a materialized tensor are views of it. Anything else is a clear
``UnsupportedOpError`` naming the ONNX node.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import UnsupportedOpError, blame
from ...ir import Graph, Node, Op
from ...ir.ops import Binary, Reduce, Unary
from .emit_c import MAX_RANK
from .program import Kind
from .sequence_match import layer_norm, sequence_region

ACCUMULATING = frozenset({Kind.CONV, Kind.DEPTHWISE, Kind.SUM_POOL})
MOVES = {Op.TRANSPOSE: Kind.TRANSPOSE, Op.SLICE: Kind.SLICE, Op.PAD: Kind.PAD,
         Op.CONCAT: Kind.CONCAT}
TWO_TENSOR = {Binary.ADD: Kind.ADD, Binary.SUB: Kind.SUB, Binary.MUL: Kind.MUL}
# the kinds whose C kernels walk their tensors by an index of at most MAX_RANK axes (windowed
# pools see [N, D, H, W, C] instead)
STRIDED = frozenset({*MOVES.values(), *TWO_TENSOR.values(), Kind.SOFTMAX, Kind.MAX_POOL,
                     Kind.SUM_POOL})


@dataclass
class Region:
    """The IR nodes of one int8 step. ``gain``/``offset`` (broadcast to the output shape) and
    ``clamp`` hold the folded epilogue: out = clamp(acc_real * gain + offset)."""

    kind: Kind
    anchor: Node
    sources: tuple[str, ...]  # the materialized tensors it reads
    output: str
    nodes: list[Node]
    window: Node | None = None
    weights: np.ndarray | None = None
    gain: np.ndarray | None = None
    offset: np.ndarray | None = None
    clamp: tuple[float, float] | None = None
    axis: int | None = None  # the axis a per-channel lookup table is indexed by
    mask: np.ndarray | None = None  # a softmax's additive constant mask (real units)
    eps: float | None = None  # a LayerNorm's epsilon (gain/offset: its gamma/beta)


def unsupported(node: Node, detail: str) -> UnsupportedOpError:
    """The ONNX node whose lowered form has no int8 kernel; the cpu target still takes it."""
    fn = node.attrs.get("fn")
    return UnsupportedOpError(fn.value if fn is not None else node.op.value, "asic",
                              node.origin or node.name,
                              f"{detail} has no int8 kernel; compile this model for --target "
                              "cpu, or replace the op")


def channel_constant(a: np.ndarray) -> bool:
    """True if ``a`` varies along its last axis only."""
    flat = a.reshape(-1, a.shape[-1]) if a.ndim else a.reshape(1, 1)
    return bool(np.all(flat == flat[:1]))


class Matcher:
    def __init__(self, graph: Graph) -> None:
        self.g = graph
        self.users = graph.users
        self.producer = graph.producer
        self.outputs = set(graph.outputs)
        self.materialized = {v.name for v in graph.inputs}
        self.views: dict[str, str] = {}  # reshape -> the tensor it views
        self.virtual: set[str] = set()  # window patches waiting for their consumer
        self.absorbed: set[str] = set()
        self.regions: list[Region] = []
        self.masks: dict[str, str] = {}  # scores + mask nodes a softmax absorbs -> scores

    def const(self, name: str) -> np.ndarray | None:
        return self.g.const(name)

    def operands(self, node: Node) -> list[str]:
        return [i for i in node.inputs if self.const(i) is None]

    def run(self) -> list[Region]:
        for node in self.g.nodes:
            if node.op is Op.CONST or node.name in self.absorbed:
                continue
            with blame(f"node '{node.origin or node.name}'"):
                region = self.visit(node)
            if region is not None:
                self.check_rank(region)
                self.regions.append(region)
                self.absorbed.update(n.name for n in region.nodes)
                self.materialized.add(region.output)
        for name in self.virtual - self.absorbed:
            raise unsupported(self.producer[name], "window patches used other than by a conv "
                              "or pool")
        for name in self.g.outputs:
            if name not in self.materialized:
                raise unsupported(self.producer[name], "a constant model output")
        return self.regions

    def check_rank(self, r: Region) -> None:
        """Refuse at compile time, not at export, a step the C kernels could not index: one
        over more than MAX_RANK axes of size > 1 (the export drops size-1 axes and merges
        contiguous ones, so this bound is safe)."""
        if r.kind not in STRIDED or r.window is not None:
            return
        for name in (*r.sources, r.output):
            axes = sum(d != 1 for d in self.g.type_of(name).shape)
            if axes > MAX_RANK:
                raise unsupported(r.anchor, f"a {r.kind.value} of a tensor with {axes} axes of "
                                  f"size > 1 (at most {MAX_RANK})")

    def visit(self, node: Node) -> Region | None:
        ins = node.inputs
        patches = any(i in self.virtual for i in ins)  # reads window patches
        if (node.op is Op.WINDOW and not patches) or (patches and (
                node.op is Op.RESHAPE or (node.op is Op.BINARY and node.attrs["fn"] is Binary.MUL
                                          and len(self.operands(node)) == 1))):
            self.virtual.add(node.name)  # waits for the conv or pool that consumes it
            return None
        if node.op is Op.MATMUL:
            return self.conv(node)
        if node.op is Op.REDUCE:
            if node.attrs["fn"] is Reduce.PROD:
                raise unsupported(node, "a product reduction")
            return self.windowed_reduce(node) if patches else self.global_reduce(node)
        if node.op is Op.TRANSPOSE and (grouped := self.grouped_conv(node)) is not None:
            return grouped
        if patches:
            raise unsupported(node, "window patches used other than by a conv or pool")
        if node.op is Op.RESHAPE:
            self.views[node.name] = self.views.get(ins[0], ins[0])
            self.materialized.add(node.name)
            self.absorbed.add(node.name)
            return None
        if node.op in MOVES:
            # a constant is loaded into the arena by a CONST step (a concat's only, where it
            # is a ViT's class token); the other moves of a constant were folded by the passes
            if len(self.operands(node)) != len(ins) and node.op is not Op.CONCAT:
                raise unsupported(node, f"a {node.op.value} with a constant operand")
            return Region(MOVES[node.op], node, tuple(ins), node.name, [node])
        if self.mask_add(node):
            return None  # absorbed by the softmax that follows
        if (seq := self.sequence(node)) is not None:
            return seq if isinstance(seq, Region) else None
        if node.op is Op.BINARY and len(set(self.operands(node))) == 2:
            if node.attrs["fn"] not in TWO_TENSOR:
                raise unsupported(node, f"{node.attrs['fn'].value} of two tensors")
            return self.clamped(Region(TWO_TENSOR[node.attrs["fn"]], node, tuple(ins),
                                       node.name, [node]))
        if node.op in (Op.UNARY, Op.BINARY):
            return self.lookup_table(node)
        raise unsupported(node, "no int8 kernel for this op")

    def with_constant(self, node: Node) -> Region | None:
        """``x op c`` whose constant no lookup table can hold (it varies along several axes,
        or broadcasts x): a two-tensor step whose second source is the constant."""
        fn = node.attrs["fn"]
        if fn not in TWO_TENSOR or len(self.operands(node)) != 1 or (
                fn is Binary.SUB and self.const(node.inputs[0]) is not None):
            return None
        return self.clamped(Region(TWO_TENSOR[fn], node, tuple(node.inputs), node.name, [node]))

    def mask_add(self, node: Node) -> bool:
        """Whether ``node`` is ``scores + mask`` read only by a softmax along the last axis,
        which takes the mask: a constant, or a tensor broadcast over leading axes only (a
        padding mask [1, 1, 1, S] on scores [1, H, S, S])."""
        if node.op is not Op.BINARY or node.attrs["fn"] is not Binary.ADD \
                or node.name in self.outputs or len(set(node.inputs)) != 2:
            return False
        ops = sorted(dict.fromkeys(self.operands(node)), key=lambda n: self.g.type_of(n).size)
        scores = ops[-1] if ops else None
        if scores is None or self.g.type_of(scores).shape != node.type.shape:
            return False
        if len(ops) == 2:
            mask = self.g.type_of(ops[0]).shape
            while mask and mask[0] == 1:
                mask = mask[1:]
            if len(mask) >= node.type.rank or node.type.shape[node.type.rank - len(mask):] \
                    != mask:
                return False
        users = self.users.get(node.name, [])
        top = next((u for u in users if u.op is Op.REDUCE and u.attrs["fn"] is Reduce.MAX),
                   None)
        if top is None or len(users) != 2 or self.softmax(top) is None:
            return False
        axes = [a % node.type.rank for a in top.attrs["axes"]]
        if axes != [node.type.rank - 1]:  # along the last axis (a row's keys) only
            return False
        self.masks[node.name] = scores
        return True

    def sequence(self, node: Node) -> Region | bool | None:
        """An embedding lookup, a cast of token ids or of a 0/1 mask (a view: the codes are
        the values), a mask's AND with a constant or WHERE of scalars; see
        ``sequence_match``."""
        return sequence_region(self, node)

    # --- MAC array ------------------------------------------------------------------------
    def conv(self, node: Node) -> Region:
        a, b = node.inputs
        w = self.const(b)
        if w is None and self.const(a) is None and a not in self.virtual:
            return self.epilogue(Region(Kind.BATCH_MATMUL, node, (a, b), node.name, [node]))
        if w is None or w.ndim != 2:
            raise unsupported(node, "a matmul needs a 2-D constant right operand or two "
                              "activations (a constant left operand, a batched constant and "
                              "grouped convs are not supported)")
        if a not in self.virtual:
            return self.epilogue(Region(Kind.CONV, node, (a,), node.name, [node], weights=w))
        flat = self.producer[a]
        win = self.producer.get(flat.inputs[0])
        if flat.op is not Op.RESHAPE or win is None or win.op is not Op.WINDOW:
            raise unsupported(node, "a matmul over patches must read reshaped window patches")
        n = len(win.attrs["kernel"])
        if flat.type.shape[:-1] != win.type.shape[:1 + n]:
            raise unsupported(node, "the patches must flatten kernel taps and channels only")
        return self.epilogue(Region(Kind.CONV, node, (win.inputs[0],), node.name,
                                    [win, flat, node], window=win, weights=w))

    def grouped_conv(self, t: Node) -> Region | None:
        """The frontend's grouped conv, patches [N, *O, taps, G, cg] -> transpose -> [G, N*O,
        taps*cg] @ W [G, taps*cg, Mg] -> transpose -> [N, *O, G*Mg], as one conv whose weights
        are block diagonal (the schedule skips the all-zero weight tiles)."""
        split = self.producer.get(t.inputs[0])
        flat = self._next(t.name)
        mm = self._next(flat.name) if flat is not None else None
        back = self._next(mm.name) if mm is not None else None
        out = self._next(back.name) if back is not None else None
        chain = (split, flat, mm, back, out)
        if None in chain or [c.op for c in chain] != [Op.RESHAPE, Op.RESHAPE, Op.MATMUL,
                                                      Op.TRANSPOSE, Op.RESHAPE] \
                or mm.inputs[0] != flat.name or tuple(back.attrs["perm"]) != (1, 0, 2):
            return None
        w = self.const(mm.inputs[1])
        if split.type.rank < 4:  # not [N, *O, taps, G, cg]: a plain transpose between reshapes
            return None
        *lead, taps, groups, cg = split.type.shape
        n = len(lead) - 1
        if w is None or w.ndim != 3 or w.shape[:2] != (groups, taps * cg) or not lead or tuple(
                t.attrs["perm"]) != (n + 2, *range(n + 2), n + 3):
            return None
        mg = w.shape[2]
        if out.type.shape != (*lead, groups * mg):
            # the requantization is per channel, the last axis: not for an output the layout
            # pass reshaped straight to NCHW (a 1x1 one), which would not broadcast
            return None
        blocks = np.zeros((taps, groups, cg, groups, mg), w.dtype)  # [taps*C, G*Mg]
        for g in range(groups):
            blocks[:, g, :, g, :] = w[g].reshape(taps, cg, mg)
        weights = blocks.reshape(taps * groups * cg, groups * mg)
        src = split.inputs[0]
        win = self.producer.get(src) if src in self.virtual else None
        if win is not None and win.op is not Op.WINDOW:
            return None
        nodes = [n for n in (win, split, t, flat, mm, back, out) if n is not None]
        source = win.inputs[0] if win is not None else self.views.get(src, src)
        if split.name in self.materialized:  # an earlier region's epilogue took the reshape
            # (a pool's, whose last axis of 1 it keeps): read its output, a [N, *O, C] view
            nodes, source = [t, flat, mm, back, out], split.name
        return self.epilogue(Region(Kind.CONV, mm, (source,), out.name, nodes, window=win,
                                    weights=weights))

    def windowed_reduce(self, node: Node) -> Region:
        src = self.producer[node.inputs[0]]
        fn = node.attrs["fn"]
        if src.op is Op.BINARY:  # depthwise: sum(window * taps)
            win_name = next(i for i in src.inputs if i in self.virtual)
            win, taps = self.producer[win_name], self.const(next(
                i for i in src.inputs if i != win_name))
            nodes, kind = [win, src, node], Kind.DEPTHWISE
        else:
            win, taps, nodes = src, None, [src, node]
            kind = Kind.MAX_POOL if fn is Reduce.MAX else Kind.SUM_POOL
        n = len(win.attrs["kernel"])
        kernel_axes = tuple(range(1 + n, 1 + 2 * n))
        if win.op is not Op.WINDOW or tuple(node.attrs["axes"]) != kernel_axes or (
                kind is Kind.DEPTHWISE and fn is not Reduce.SUM):
            raise unsupported(node, "a reduction over patches must be a pool or depthwise conv")
        region = Region(kind, node, (win.inputs[0],), node.name, nodes, window=win,
                        weights=taps)
        if kind is Kind.MAX_POOL:
            return region
        if fn is Reduce.MEAN:
            region.gain = np.full(node.type.shape, 1.0 / np.prod(win.attrs["kernel"]))
        return self.epilogue(region)

    def global_reduce(self, node: Node) -> Region:
        fn = node.attrs["fn"]
        if fn is Reduce.MEAN and (norm := layer_norm(self, node)) is not None:
            return norm
        if fn is Reduce.MAX and (soft := self.softmax(node)) is not None:
            return soft
        kind = Kind.MAX_POOL if fn is Reduce.MAX else Kind.SUM_POOL
        region = Region(kind, node, (node.inputs[0],), node.name, [node])
        if kind is Kind.MAX_POOL:
            return region
        if fn is Reduce.MEAN:
            shape = self.g.type_of(node.inputs[0]).shape
            count = np.prod([shape[a] for a in node.attrs["axes"]])
            region.gain = np.full(node.type.shape, 1.0 / count)
        return self.epilogue(region)

    def softmax(self, top: Node) -> Region | None:
        """exp(x - max(x)) / sum(exp(x - max(x))) over the same axes, as the frontend writes
        Softmax: one step (its output scale is lowering's ``softmax_params``). What
        ``mask_add`` found added to x just before it becomes its additive mask: a constant
        (``Region.mask``) or a second source."""
        x = top.inputs[0]
        sub = self._next(top.name)
        if sub is None or sub.op is not Op.BINARY or sub.attrs["fn"] is not Binary.SUB \
                or sub.inputs != (x, top.name):
            return None
        exp = self._next(sub.name)
        if exp is None or exp.op is not Op.UNARY or exp.attrs["fn"] is not Unary.EXP:
            return None
        users = self.users.get(exp.name, [])
        total = next((u for u in users if u.op is Op.REDUCE), None)
        div = self._next(total.name) if total is not None else None
        if len(users) != 2 or exp.name in self.outputs or total is None \
                or total.attrs["fn"] is not Reduce.SUM \
                or total.attrs["axes"] != top.attrs["axes"] or div is None \
                or div.op is not Op.BINARY or div.attrs["fn"] is not Binary.DIV \
                or div.inputs != (exp.name, total.name):
            return None
        region = Region(Kind.SOFTMAX, top, (x,), div.name, [top, sub, exp, total, div])
        if x in self.masks:  # mask_add left scores + mask to this softmax
            add, scores = self.producer[x], self.masks[x]
            mask = next(i for i in add.inputs if i != scores)
            if self.const(mask) is None:  # a tensor: the step's second input
                region.sources = (scores, mask)
            else:
                region.sources, region.mask = (scores,), self.const(mask)
            region.nodes.insert(0, add)
        return region

    # --- epilogues ------------------------------------------------------------------------
    def _next(self, name: str) -> Node | None:
        users = self.users.get(name, [])
        return users[0] if name not in self.outputs and len(users) == 1 else None

    def epilogue(self, r: Region) -> Region:
        """Absorb per-channel affine constants, reshapes keeping the channels, then a clamp.
        A sum pool has no bias to hold an offset: it absorbs scales only."""
        shape = self.g.type_of(r.output).shape
        gain = np.ones(shape) if r.gain is None else r.gain
        offset = np.zeros(shape)
        biased = r.kind not in (Kind.SUM_POOL, Kind.BATCH_MATMUL)
        while r.clamp is None and (u := self._next(r.output)) is not None:
            if u.op is Op.RESHAPE and u.type.shape[-1:] == shape[-1:]:
                shape = u.type.shape
                gain, offset = gain.reshape(shape), offset.reshape(shape)
            elif u.op is Op.BINARY and (step := self._affine(u, r.output, gain, offset)) and (
                    biased or not np.any(step[1])):
                gain, offset = step
            elif not self._clamp(u, r):
                break
            r.nodes.append(u)
            r.output = u.name
        r.gain, r.offset = gain, offset
        return r

    def clamped(self, r: Region) -> Region:
        while r.clamp is None and (u := self._next(r.output)) is not None and self._clamp(u, r):
            r.nodes.append(u)
            r.output = u.name
        return r

    def _clamp(self, u: Node, r: Region) -> bool:
        fn = u.attrs.get("fn") if u.op is Op.UNARY else None
        if fn is Unary.RELU:
            r.clamp = (0.0, np.inf)
        elif fn is Unary.CLIP:
            r.clamp = (float(u.attrs["lo"]), float(u.attrs["hi"]))
        return r.clamp is not None

    def _affine(self, u: Node, cur: str, gain: np.ndarray, offset: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray] | None:
        """cur (+ - * /) a constant, kept when the bias stays per channel and scales > 0."""
        fn, (x, y) = u.attrs["fn"], u.inputs
        c = self.const(y if x == cur else x)
        if c is None or u.type.shape != gain.shape:
            return None
        c = np.broadcast_to(c.astype(np.float64), gain.shape)
        if fn is Binary.ADD:
            new = gain, offset + c
        elif fn is Binary.SUB and x == cur:
            new = gain, offset - c
        elif fn is Binary.MUL and np.all(c > 0):
            new = gain * c, offset * c
        elif fn is Binary.DIV and x == cur and np.all(c > 0):
            new = gain / c, offset / c
        else:
            return None
        return new if channel_constant(new[1] / new[0]) else None

    # --- lookup tables --------------------------------------------------------------------
    def lookup_table(self, node: Node) -> Region:
        """An elementwise tree of one tensor and constants varying along (at most) one axis:
        grow it while every new node reads only the source tensor, the tree and constants."""
        (src,) = set(self.operands(node))
        shape = node.type.shape
        r = Region(Kind.LUT, node, (src,), node.name, [node])
        if self.g.type_of(src).shape != shape or not self._table_axis(node, r):
            if node.op is Op.BINARY and (two := self.with_constant(node)) is not None:
                return two
            raise unsupported(node, "an elementwise constant varying along several axes"
                              if self.g.type_of(src).shape == shape else
                              "an elementwise op that broadcasts its input")
        inside = {node.name}
        while (u := self._next(r.output)) is not None and u.op in (Op.UNARY, Op.BINARY) and all(
                i in inside or i == src for i in self.operands(u)) \
                and u.type.shape == shape and self._table_axis(u, r):
            r.nodes.append(u)
            r.output = u.name
            inside.add(u.name)
        return r

    def _table_axis(self, node: Node, r: Region) -> bool:
        """Whether ``node``'s constants vary along one axis only, the same for the whole
        region (recorded in ``r.axis``): the table is then [C, 256], one row per index."""
        rank = node.type.rank
        for i in node.inputs:
            c = self.const(i)
            if c is None or c.size == 1:
                continue
            full = (1,) * (rank - c.ndim) + c.shape
            axes = [a for a, d in enumerate(full) if d != 1]
            if len(axes) != 1 or (r.axis is not None and r.axis != axes[0]):
                return False
            r.axis = axes[0]
        return True


def match(graph: Graph) -> tuple[list[Region], dict[str, str]]:
    """The regions of ``graph`` in execution order, and its reshape views (view -> source)."""
    m = Matcher(graph)
    return m.run(), m.views
