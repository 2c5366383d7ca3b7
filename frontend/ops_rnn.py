"""The recurrent ops LSTM, GRU and RNN (opsets 7, 14 and 22), unrolled over a static sequence.

The lowering:

- the input projection X W^T + Wb (+ Rb) of every time step and both directions is ONE matmul
  before the loop ([T*B, I] @ [I, D*G*H], the bias in its epilogue);
- each step is one recurrent matmul H R^T and the gate math on [B, H] slices of the
  projection and of that product, which the fuse pass turns into one or two kernels (the slices
  are read inside the kernels, so no copy is made);
- the outputs are stacked with one Concat.

sequence_lens must be a constant: a step past a batch row's length leaves Y zero and holds the
state (a Where with a constant mask, only on the steps where some rows have ended); the reverse
direction then runs each row from its own last step, by one constant Gather of the projection
rows before the loop and one of Y after it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..ir import Binary, Op, Unary
from .convert import Ctx, Val, converter

# activation name (lower case, as onnxruntime matches them) -> (takes alpha, takes beta)
ACTIVATIONS: dict[str, tuple[bool, bool]] = {
    "relu": (False, False), "tanh": (False, False), "sigmoid": (False, False),
    "affine": (True, True), "leakyrelu": (True, False), "thresholdedrelu": (True, False),
    "scaledtanh": (True, True), "hardsigmoid": (True, True), "elu": (True, False),
    "softsign": (False, False), "softplus": (False, False),
}
# defaults of alpha / beta when the lists run out (onnxruntime's; the spec gives none, 0 else)
ACT_DEFAULTS = {"leakyrelu": (0.01, 0.0), "hardsigmoid": (0.2, 0.5), "elu": (1.0, 0.0)}


@dataclass(frozen=True)
class Kind:
    """What differs between LSTM, GRU and RNN."""

    gates: int  # gate blocks in W, R: iofc, zrh, i
    activations: tuple[str, ...]  # per direction, the defaults
    inputs: int  # inputs an op of this kind may have


LSTM = Kind(4, ("sigmoid", "tanh", "tanh"), 8)
GRU = Kind(3, ("sigmoid", "tanh"), 6)
RNN = Kind(1, ("tanh",), 6)

Act = tuple[str, float, float]
# steps x directions unrolled per node: each is a few kernels that LLVM compiles one by one
# (about 0.1 s per step), so a longer sequence is refused rather than compiled for an hour
MAX_UNROLLED = 2048


@dataclass
class Cell:
    """One recurrent node being unrolled: its checked operands and attributes."""

    cx: Ctx
    kind: Kind
    x: Val
    w: Val
    r: Val
    b: Val | None
    steps: int  # T
    batch: int  # B
    hidden: int  # H
    dirs: int  # D
    reverse: tuple[bool, ...]  # per direction
    layout: int
    lens: np.ndarray | None  # per batch row, None when every row runs all T steps
    acts: list[list[Act]]  # per direction
    clip: float | None
    h0: list[Val | None] = field(default_factory=list)  # per direction, None: zeros
    c0: list[Val | None] = field(default_factory=list)

    # --- emission helpers -------------------------------------------------------------------
    def add(self, a: Val | None, b: Val | None) -> Val | None:
        if a is None or b is None:
            return b if a is None else a
        return self.cx.binary(Binary.ADD, a, b)

    def mul(self, a: Val, b: Val) -> Val:
        return self.cx.binary(Binary.MUL, a, b)

    def act(self, a: Act, x: Val) -> Val:
        """Activation ``a`` of ``x``, after the cell clip."""
        cx, (name, alpha, beta) = self.cx, a
        if self.clip is not None:
            x = cx.unary(Unary.CLIP, x, lo=-self.clip, hi=self.clip)
        if name in ("relu", "tanh", "sigmoid", "softplus"):
            fn = {"relu": Unary.RELU, "tanh": Unary.TANH, "sigmoid": Unary.SIGMOID,
                  "softplus": Unary.SOFTPLUS}[name]
            return cx.unary(fn, x)
        if name == "affine":
            return cx.binary(Binary.ADD, self.mul(x, cx.scalar(alpha)), cx.scalar(beta))
        if name == "leakyrelu":
            return cx.unary(Unary.LEAKY_RELU, x, alpha=alpha)
        if name == "thresholdedrelu":
            return cx.unary(Unary.THRESHOLDED_RELU, x, alpha=alpha)
        if name == "scaledtanh":
            return self.mul(cx.unary(Unary.TANH, self.mul(x, cx.scalar(beta))), cx.scalar(alpha))
        if name == "hardsigmoid":
            return cx.unary(Unary.HARD_SIGMOID, x, alpha=alpha, beta=beta)
        if name == "elu":
            return cx.unary(Unary.ELU, x, alpha=alpha)
        assert name == "softsign"
        den = cx.binary(Binary.ADD, cx.unary(Unary.ABS, x), cx.scalar(1.0))
        return cx.binary(Binary.DIV, x, den)

    def rows(self, src: Val, t: int, col: int, width: int, batch_major: bool) -> Val:
        """The [B, width] block of ``src`` (rows of [T*B] or, batch_major, [B*T]) at time t."""
        if batch_major:
            return self.cx.slice(src, [t, col], [self.steps, 1], [self.batch, width])
        return self.cx.slice(src, [t * self.batch, col], [1, 1], [self.batch, width])

    def cols(self, src: Val, col: int, width: int) -> Val:
        return self.cx.slice(src, [0, col], [1, 1], [self.batch, width])

    def per_dir(self, v: Val, d: int, shape: Sequence[int]) -> Val:
        """Row ``d`` of a [D, ...] operand, reshaped to ``shape``."""
        full = self.cx.shape(v)
        part = self.cx.slice(v, [d] + [0] * (len(full) - 1), [1] * len(full), [1, *full[1:]])
        return self.cx.reshape(part, shape)

    def state(self, v: Val | None, d: int) -> Val | None:
        """Direction ``d`` of an initial state ([D, B, H], or [B, D, H] with layout 1)."""
        if v is None or (isinstance(v, np.ndarray) and not np.any(v)):
            return None  # zeros: the first step skips its recurrent matmul
        if self.layout == 0:
            return self.per_dir(v, d, [self.batch, self.hidden])
        part = self.cx.slice(v, [0, d, 0], [1, 1, 1], [self.batch, 1, self.hidden])
        return self.cx.reshape(part, [self.batch, self.hidden])

    def hold(self, valid: np.ndarray | None, new: Val, old: Val | None) -> Val:
        """``new`` on the rows still running, ``old`` (or 0) on those that ended."""
        if valid is None:
            return new
        keep = np.zeros((), np.float32) if old is None else old
        return self.cx.add(Op.WHERE, [valid, new, keep])


# --- parsing ---------------------------------------------------------------------------------
def _activations(cx: Ctx, kind: Kind, dirs: int) -> list[list[Act]]:
    names = cx.attr("activations")
    per = len(kind.activations)
    if names is None:
        names = list(kind.activations) * dirs
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    if len(names) != per * dirs:
        raise cx.error(f"activations {names} must list {per * dirs} functions ({per} per "
                       f"direction, {dirs} direction{'s' if dirs > 1 else ''})")
    alphas = [float(a) for a in cx.attr("activation_alpha", [])]
    betas = [float(b) for b in cx.attr("activation_beta", [])]
    acts: list[Act] = []
    for name in names:
        key = name.lower()
        if key not in ACTIVATIONS:
            raise cx.unsupported(f"activation '{name}' (the spec's are "
                                 "Relu, Tanh, Sigmoid, Affine, LeakyRelu, ThresholdedRelu, "
                                 "ScaledTanh, HardSigmoid, Elu, Softsign, Softplus)")
        takes_a, takes_b = ACTIVATIONS[key]
        da, db = ACT_DEFAULTS.get(key, (0.0, 0.0))
        alpha = (alphas.pop(0) if alphas else da) if takes_a else 0.0
        beta = (betas.pop(0) if betas else db) if takes_b else 0.0
        acts.append((key, alpha, beta))
    return [acts[d * per:(d + 1) * per] for d in range(dirs)]


def _expect(cx: Ctx, v: Val, shape: Sequence[int], what: str) -> None:
    if cx.shape(v) != tuple(shape):
        raise cx.error(f"{what} has shape {list(cx.shape(v))}, expected {list(shape)}")


def _lens(cx: Ctx, steps: int, batch: int) -> np.ndarray | None:
    if not cx.has(4):
        return None
    if not isinstance(cx.inputs[4], np.ndarray):
        raise cx.unsupported(f"sequence_lens (input '{cx.node.input[4]}') must be a constant "
                             "known at compile time (the graph is unrolled over the steps)")
    lens = np.asarray(cx.inputs[4]).astype(np.int64).reshape(-1)
    if lens.shape != (batch,):
        raise cx.error(f"sequence_lens has {lens.size} values for a batch of {batch}")
    if np.any(lens < 1) or np.any(lens > steps):
        raise cx.error(f"sequence_lens {lens.tolist()} must lie in [1, {steps}]")
    return None if np.all(lens == steps) else lens


def parse(cx: Ctx, kind: Kind) -> Cell:
    """The operands of a recurrent node, checked against each other."""
    x, w, r = cx.x(0), cx.x(1), cx.x(2)
    if cx.type(x).dtype != "float32":
        raise cx.unsupported(f"X of dtype {cx.type(x).dtype} (sw2c computes float32)")
    layout = int(cx.attr("layout", 0))
    if layout not in (0, 1):
        raise cx.error(f"layout {layout} must be 0 or 1")
    direction = cx.attr("direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise cx.error(f"direction '{direction}' must be forward, reverse or bidirectional")
    dirs = 2 if direction == "bidirectional" else 1
    xs = cx.shape(x)
    if len(xs) != 3:
        raise cx.error(f"X must have rank 3, got shape {list(xs)}")
    steps, batch, size = (xs[0], xs[1], xs[2]) if layout == 0 else (xs[1], xs[0], xs[2])
    rs = cx.shape(r)
    if len(rs) != 3:
        raise cx.error(f"R must have rank 3, got shape {list(rs)}")
    hidden = int(cx.attr("hidden_size", rs[2]))
    g = kind.gates
    _expect(cx, w, [dirs, g * hidden, size], "W")
    _expect(cx, r, [dirs, g * hidden, hidden], "R")
    b = cx.x(3) if cx.has(3) else None
    if b is not None:
        _expect(cx, b, [dirs, 2 * g * hidden], "B")
    if steps < 1 or batch < 1 or hidden < 1:
        raise cx.unsupported(f"an empty sequence, batch or hidden state (X {list(xs)}, "
                             f"hidden_size {hidden})")
    if steps * dirs > MAX_UNROLLED:
        raise cx.unsupported(f"a sequence of {steps} steps x {dirs} direction(s): sw2c unrolls "
                             f"recurrent ops over time, up to {MAX_UNROLLED} steps in all")
    for i in range(kind.inputs, len(cx.inputs)):
        if cx.has(i):
            raise cx.error(f"{cx.op_type} has {kind.inputs} inputs, got {len(cx.inputs)}")
    clip = cx.attr("clip")
    if clip is not None and not clip > 0:
        raise cx.error(f"clip {clip} must be positive")
    cell = Cell(cx, kind, x, w, r, b, steps, batch, hidden, dirs,
                (direction == "reverse",) if dirs == 1 else (False, True), layout,
                _lens(cx, steps, batch), _activations(cx, kind, dirs),
                None if clip is None else float(clip))
    state_shape = [dirs, batch, hidden] if layout == 0 else [batch, dirs, hidden]
    for i, slot in ((5, cell.h0), (6, cell.c0)):
        v = cx.x(i) if cx.has(i) and i < kind.inputs else None
        if v is not None:
            _expect(cx, v, state_shape, "initial_h" if i == 5 else "initial_c")
        slot.extend(cell.state(v, d) for d in range(dirs))
    return cell


# --- the projection and the outputs ------------------------------------------------------------
def projection(c: Cell, rb_keep: np.ndarray | None) -> Val:
    """X W^T + Wb + Rb * rb_keep for every step and direction: [rows, D*G*H] (rows as X's)."""
    cx, gh = c.cx, c.kind.gates * c.hidden
    size = cx.shape(c.w)[2]
    x2 = cx.reshape(c.x, [c.steps * c.batch, size])
    wt = cx.reshape(cx.transpose(c.w, (2, 0, 1)), [size, c.dirs * gh])
    y = cx.matmul(x2, wt)
    if c.b is None:
        return y
    wb = cx.slice(c.b, [0, 0], [1, 1], [c.dirs, gh])
    rb = cx.slice(c.b, [0, gh], [1, 1], [c.dirs, gh])
    if rb_keep is not None:
        rb = c.mul(rb, rb_keep)
    return cx.binary(Binary.ADD, y, cx.reshape(c.add(wb, rb), [c.dirs * gh]))


def _reversal(c: Cell, order: Callable[[int, int], int]) -> np.ndarray:
    """Per time-major row k*B + b: the row ``order`` gives for step (len_b - 1 - k, b) if
    k < len_b, else for (k, b) (rows past the length only feed masked steps)."""
    assert c.lens is not None
    return np.array([order(int(c.lens[b]) - 1 - k if k < c.lens[b] else k, b)
                     for k in range(c.steps) for b in range(c.batch)], np.int64)


def run(c: Cell, step: Callable[[Cell, int, Callable[..., Val], list[Val | None]],
                                list[Val | None]]) -> tuple[list, list]:
    """Unroll ``step`` over time for every direction: per direction the outputs per time step
    (None: zeros) and the final states. ``step(c, d, xg, states)`` reads gate g of the
    projection as ``xg(g, width=1)``."""
    cx, h, g = c.cx, c.hidden, c.kind.gates
    rb_keep = None
    if c.kind is GRU and c.cx.attr("linear_before_reset", 0):  # Rbh stays inside r * (...)
        rb_keep = np.ones(g * h, np.float32)
        rb_keep[2 * h:] = 0
    proj = projection(c, rb_keep)
    batch_major = c.layout == 1
    rowwise = c.lens is not None and any(c.reverse)
    if rowwise:  # one row order per batch row: gather the rows into reversed, time-major order
        order = ((lambda t, b: b * c.steps + t) if batch_major else
                 (lambda t, b: t * c.batch + b))
        rev_proj = cx.add(Op.GATHER, [proj, _reversal(c, order)], axis=0)
    ys, finals = [], []
    for d in range(c.dirs):
        states = [c.h0[d], c.c0[d]]
        out: list[Val | None] = [None] * c.steps
        for k in range(c.steps):
            valid = None if c.lens is None else (k < c.lens).reshape(c.batch, 1)
            if valid is not None and not valid.any():
                continue  # every row has ended: states held, Y zero
            if valid is not None and valid.all():
                valid = None
            reverse = c.reverse[d]
            if reverse and rowwise:
                src, t, bm = rev_proj, k, False
            else:
                src, t, bm = proj, (c.steps - 1 - k if reverse else k), batch_major

            def xg(gate: int, width: int = 1, src=src, t=t, bm=bm, d=d) -> Val:
                return c.rows(src, t, (d * g + gate) * h, width * h, bm)

            new = step(c, d, xg, states)
            states = [c.hold(valid, n, o) if n is not None else o for n, o in zip(new, states)]
            out[t] = c.hold(valid, new[0], None)
        ys.append(out)
        finals.append(states)
    return ys, finals


def outputs(c: Cell, ys: list[list[Val | None]], finals: list[list[Val | None]],
            n_states: int) -> list[Val | None]:
    """Y, Y_h (and Y_c) as ONNX lays them out, each built only if something reads it."""
    cx, b, h, dirs, steps = c.cx, c.batch, c.hidden, c.dirs, c.steps
    zeros = np.zeros((b, h), np.float32)
    piece = [1, b, h] if c.layout == 0 else [b, 1, h]
    axis = 0 if c.layout == 0 else 1

    def stack(vs: Sequence[Val | None]) -> Val:
        return cx.concat([cx.reshape(zeros if v is None else v, piece) for v in vs], axis)

    result: list[Val | None] = [None]
    if cx.used(0):
        y = stack([ys[d][t] for t in range(steps) for d in range(dirs)])
        if c.lens is not None and any(c.reverse):  # put each row's reversed steps back
            y = _unreverse(c, y)
        result[0] = cx.reshape(y, [steps, dirs, b, h] if c.layout == 0 else [b, steps, dirs, h])
    for i in range(n_states):
        result.append(stack([finals[d][i] for d in range(dirs)]) if cx.used(1 + i) else None)
    return result


def _unreverse(c: Cell, y: Val) -> Val:
    """Y of the reverse direction, computed in each row's reversed order, back in time order."""
    b, dirs, steps = c.batch, c.dirs, c.steps
    if c.layout == 0:
        def order(t: int, r: int, d: int) -> int:
            return (t * dirs + d) * b + r
    else:
        def order(t: int, r: int, d: int) -> int:
            return (r * steps + t) * dirs + d
    idx = np.arange(steps * dirs * b, dtype=np.int64)
    for d in range(dirs):
        if not c.reverse[d]:
            continue
        for t in range(steps):
            for r in range(b):
                n = int(c.lens[r])
                idx[order(t, r, d)] = order(n - 1 - t if t < n else t, r, d)
    flat = c.cx.reshape(y, [steps * dirs * b, c.hidden])
    return c.cx.add(Op.GATHER, [flat, idx], axis=0)


# --- the cells ------------------------------------------------------------------------------
def _recurrent(c: Cell, d: int, hprev: Val | None, first: int, count: int) -> Val | None:
    """hprev @ R[d, first*H:(first+count)*H]^T: [B, count*H], None if hprev is zero."""
    if hprev is None:
        return None
    h = c.hidden
    rd = c.per_dir(c.r, d, [c.kind.gates * h, h])
    part = c.cx.slice(rd, [first * h, 0], [1, 1], [count * h, h])
    return c.cx.matmul(hprev, c.cx.transpose(part, (1, 0)))


def _col(c: Cell, rec: Val | None, gate: int) -> Val | None:
    return None if rec is None else c.cols(rec, gate * c.hidden, c.hidden)


def lstm_step(c: Cell, d: int, xg: Callable[..., Val], states: list) -> list:
    """Gates i, o, f, c; C = f C' + i g(c~); H = o h(C) (peepholes and input_forget aside)."""
    hprev, cprev = states
    f_act, g_act, h_act = c.acts[d]
    rec = _recurrent(c, d, hprev, 0, 4)
    peep = c.cx.inputs[7] if c.cx.has(7) else None
    h = c.hidden
    p = [None] * 3 if peep is None else [
        c.cx.slice(c.per_dir(peep, d, [1, 3 * h]), [0, j * h], [1, 1], [1, h]) for j in range(3)]

    def pre(gate: int, extra: Val | None = None) -> Val:
        return c.add(c.add(xg(gate), _col(c, rec, gate)), extra)

    def peephole(j: int, state: Val | None) -> Val | None:
        return None if p[j] is None or state is None else c.mul(p[j], state)

    i = c.act(f_act, pre(0, peephole(0, cprev)))
    if c.cx.attr("input_forget", 0):
        f = c.cx.binary(Binary.SUB, c.cx.scalar(1.0), i)
    else:
        f = c.act(f_act, pre(2, peephole(2, cprev)))
    cell = c.mul(i, c.act(g_act, pre(3)))
    if cprev is not None:
        cell = c.add(c.mul(f, cprev), cell)
    o = c.act(f_act, pre(1, peephole(1, cell)))
    return [c.mul(o, _act_noclip(c, h_act, cell)), cell]


def _act_noclip(c: Cell, a: Act, x: Val) -> Val:
    """h(C): the clip bounds the gates' inputs, not the cell state."""
    clip, c.clip = c.clip, None
    try:
        return c.act(a, x)
    finally:
        c.clip = clip


def gru_step(c: Cell, d: int, xg: Callable[..., Val], states: list) -> list:
    """z, r gates; h~ = g(Xh + (r H') Rh^T + Rbh) (or r (H' Rh^T + Rbh) with linear_before_reset);
    H = (1 - z) h~ + z H'."""
    (hprev,) = states
    h = c.hidden
    f_act, g_act = c.acts[d]
    lbr = bool(c.cx.attr("linear_before_reset", 0))
    rec = _recurrent(c, d, hprev, 0, 3 if lbr else 2)
    def z() -> Val:  # made once per use, so each fuses into the kernel that reads it
        return c.act(f_act, c.add(xg(0), _col(c, rec, 0)))

    r = c.act(f_act, c.add(xg(1), _col(c, rec, 1)))
    if lbr:
        rbh = None if c.b is None else c.cx.slice(c.per_dir(c.b, d, [1, 6 * h]), [0, 5 * h],
                                                   [1, 1], [1, h])
        inner = c.add(_col(c, rec, 2), rbh)
        gated = None if inner is None else c.mul(r, inner)
    else:
        gated = _recurrent(c, d, None if hprev is None else c.mul(r, hprev), 2, 1)
    cand = c.act(g_act, c.add(xg(2), gated))
    new = c.mul(c.cx.binary(Binary.SUB, c.cx.scalar(1.0), z()), cand)
    if hprev is not None:
        new = c.add(new, c.mul(z(), hprev))
    return [new]


def rnn_step(c: Cell, d: int, xg: Callable[..., Val], states: list) -> list:
    """H = f(Xi Wi^T + H' Ri^T + Wbi + Rbi)."""
    (hprev,) = states
    (f_act,) = c.acts[d]
    return [c.act(f_act, c.add(xg(0), _recurrent(c, d, hprev, 0, 1)))]


@converter("LSTM", since=7)
def lstm(cx: Ctx) -> list[Val | None]:
    c = parse(cx, LSTM)
    ys, finals = run(c, lstm_step)
    return outputs(c, ys, finals, 2)


@converter("GRU", since=7)
def gru(cx: Ctx) -> list[Val | None]:
    return _hidden_state_only(cx, GRU, gru_step)


@converter("RNN", since=7)
def rnn(cx: Ctx) -> list[Val | None]:
    return _hidden_state_only(cx, RNN, rnn_step)


def _hidden_state_only(cx: Ctx, spec, step) -> list[Val | None]:
    """GRU and RNN: LSTM's loop with no cell state (Y and Y_h only)."""
    c = parse(cx, spec)
    c.c0 = [None] * c.dirs
    ys, finals = run(c, lambda c, d, xg, s: step(c, d, xg, s[:1]) + [None])
    return outputs(c, ys, finals, 1)
