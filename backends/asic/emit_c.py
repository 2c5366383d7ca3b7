"""C export of an int8 program: portable C99 that computes ``reference.py`` bit for bit.

The generated ``<name>.c`` holds the weights as ``static const`` arrays, one static arena laid
out by the memory plan, a small library of generic kernels (one per ``Kind``, in the style of
the TFLite Micro / CMSIS-NN reference kernels) and one call per step with constant arguments.
Every shape-dependent index computation (strides, broadcasting, coalescing of contiguous axes)
happens here, at generation time; the kernels only walk what they are given.

Arithmetic is int8/int16/int32; the one 64-bit operation is the 32x32->64 product inside the
requantization multiply (``fixed_point.multiply_by_quantized_multiplier``), as in TFLite. Float
appears only in ``<name>_run``'s quantize/dequantize boundary, defined in float32 exactly as
``fixed_point.quantize``/``dequantize``.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable, Sequence
from math import prod

import numpy as np

from .c_kernels import BOUNDARY, library
from .c_sequence import BUILDERS as SEQUENCE_BUILDERS
from .fixed_point import I32_MIN
from .plan import AsicPlan
from .program import Kind, QProgram, QTensor, Requant, Step
from .reference import MASK_WEIGHT_MAX

MAX_RANK = 8  # the kernels' index arrays (after merging contiguous axes)
MAX_SPATIAL = 3  # window kernels see [N, D, H, W, C]; 1-D and 2-D windows get leading 1s
PER_LINE = {"int8_t": 16, "int32_t": 8}  # numbers per line: about 100 columns

# ------------------------------------------------------------------------------------------
# Generation-time geometry
# ------------------------------------------------------------------------------------------

def _strides(shape: Sequence[int]) -> list[int]:
    """Element strides of a C-contiguous array."""
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return out[::-1]


def _coalesce(dims: Sequence[int], *strides: Sequence[int]) -> tuple[list[int], ...]:
    """Drop size-1 axes and merge neighbours that are contiguous in every stride set, so
    the kernels' inner loop is as long as possible. Returns (dims, *strides), rank >= 1."""
    ds: list[int] = []
    ss: list[list[int]] = [[] for _ in strides]
    for i, d in enumerate(dims):
        if d == 1:
            continue
        if ds and all(s[-1] == st[i] * d for s, st in zip(ss, strides)):
            ds[-1] *= d
            for s, st in zip(ss, strides):
                s[-1] = st[i]
            continue
        ds.append(d)
        for s, st in zip(ss, strides):
            s.append(st[i])
    if not ds:
        ds, ss = [1], [[0] for _ in strides]
    if len(ds) > MAX_RANK:
        raise NotImplementedError(f"C export: more than {MAX_RANK} non-mergeable axes")
    return (ds, *ss)


def _ints(values: Sequence[int]) -> str:
    return "{" + ", ".join(str(int(v)) for v in values) + "}"


def _f32(value: float) -> str:
    """A C float literal that reads back as exactly np.float32(value) (9 significant digits
    round-trip any float32)."""
    if not np.isfinite(np.float32(value)):
        raise ValueError(f"C export: a non-finite scale {value}")
    s = f"{float(np.float32(value)):.9g}"
    if not any(ch in s for ch in ".e"):
        s += ".0"
    return s + "f"


def _comment(text: str) -> str:
    """Text safe inside a C block comment (no terminator, no trigraph, ASCII only)."""
    text = text.encode("ascii", "backslashreplace").decode().replace("*/", "* /")
    return text.replace("??", "? ?")


def _dims(shape: Sequence[int]) -> str:
    return "[" + "x".join(map(str, shape)) + "]"


def _block_comment(text: str, indent: str, width: int = 100) -> str:
    """``text`` as a C block comment wrapped to ``width`` columns."""
    lines = textwrap.wrap(_comment(text), width - len(indent) - 6, break_on_hyphens=False)
    return indent + "/* " + f"\n{indent} * ".join(lines) + " */"


def _wrap(code: str, indent: str, width: int = 100) -> str:
    """A call, prototype or initializer broken after its top-level commas, continued under
    its opening parenthesis (or brace)."""
    if len(indent) + len(code) <= width:
        return indent + code
    cut = min(code.find(c) % (len(code) + 1) for c in "({") + 1
    parts, depth, start = [], 0, cut
    for k in range(cut, len(code)):
        ch = code[k]
        depth += (ch in "({[") - (ch in ")}]")
        if ch == "," and depth == 0:
            parts.append(code[start:k + 1])
            start = k + 2  # skip the space
    parts.append(code[start:])
    cont = " " * (len(indent) + cut)
    lines, line = [], indent + code[:cut] + parts[0]
    for part in parts[1:]:
        if len(line) + 1 + len(part) > width:
            lines.append(line)
            line = cont + part
        else:
            line += " " + part
    return "\n".join([*lines, line])


def _identifier(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"C export: the name {name!r} is not a C identifier")
    return name


def _c_array(ctype: str, name: str, values: np.ndarray) -> str:
    """``static const ctype name[n] = {...};``: numbers formatted in bulk (tolist + join is
    the fast path in CPython; models carry megabytes of weights)."""
    flat = np.asarray(values).reshape(-1)
    if flat.size == 0:
        flat = np.zeros(1, np.int64)
    strs = list(map(str, flat.tolist()))
    if ctype == "int32_t" and int(flat.min()) == I32_MIN:
        strs = ["INT32_MIN" if s == str(I32_MIN) else s for s in strs]  # not a C literal
    n = PER_LINE.get(ctype, 16)
    lines = ",\n    ".join(", ".join(strs[i:i + n]) for i in range(0, len(strs), n))
    return f"static const {ctype} {name}[{len(strs)}] = {{\n    {lines}\n}};\n"


# ------------------------------------------------------------------------------------------
# The emitter
# ------------------------------------------------------------------------------------------

class _Emitter:
    """Collects the constant tables, the geometry structs and the step calls."""

    def __init__(self, program: QProgram, plan: AsicPlan, name: str) -> None:
        self.p, self.plan, self.name = program, plan, _identifier(name)
        self.statics: list[str] = []
        self.calls: list[str] = []
        self.kernels: set[str] = set()
        self.arrays: dict[str, str] = {}  # an array's declaration without its name -> name

    def t(self, name: str) -> QTensor:
        return self.p.tensors[name]

    def ptr(self, name: str) -> str:
        at = f"arena + {self.plan.offsets[name]}"  # the local of <name>_steps
        return at if self.t(name).bits == 8 else f"(int16_t *)({at})"

    def static(self, decl: str) -> None:
        """A constant declaration; one-line ones are wrapped to 100 columns. An array equal
        to one already declared (a tiled layer's weights, once per tile: tiling.py) becomes
        a macro naming that one, so the weight memory holds it once."""
        head = re.match(r"static const \w+ (\w+)\[\d+\] = ", decl)
        if head:
            first = self.arrays.setdefault(decl[:head.start(1)] + decl[head.end(1):],
                                           head.group(1))
            if first != head.group(1):
                self.statics.append(f"#define {head.group(1)} {first}\n")
                return
        one_line = decl.count("\n") == 1 and decl.endswith("\n")
        self.statics.append(_wrap(decl[:-1], "") + "\n" if one_line else decl)

    # --- shared argument builders ----------------------------------------------------------
    def requant(self, i: int, r: Requant, out: QTensor) -> str:
        """rq_t for step i: the multipliers as one value, per channel or per element."""
        mult, shift = np.asarray(r.multiplier), np.asarray(r.shift)
        shape = out.shape or (1,)
        chans = shape[-1]
        if mult.shape != shift.shape:
            mult, shift = np.broadcast_arrays(mult, shift)
        if mult.size == 1:
            mult, shift = mult.reshape(1), shift.reshape(1)
        elif mult.shape[-1] == chans and mult.size == chans:
            mult, shift = mult.reshape(-1), shift.reshape(-1)
        else:  # anything else broadcast to every element (index = flat index)
            mult = np.broadcast_to(mult, shape).reshape(-1)
            shift = np.broadcast_to(shift, shape).reshape(-1)
        if np.any(shift > 30) or np.any(shift < -31) or np.any(mult < 0):
            raise ValueError(f"step {i}: a requantization shift outside [-31, 30] or a "
                             "negative multiplier")
        self.static(_c_array("int32_t", f"s{i}_mult", mult.astype(np.int64)))
        self.static(_c_array("int32_t", f"s{i}_shift", shift.astype(np.int64)))
        self.static(f"static const rq_t s{i}_rq = {{s{i}_mult, s{i}_shift, {mult.size}, "
                    f"{r.zero_point}, {r.lo}, {r.hi}}};\n")
        return f"&s{i}_rq"

    def bias(self, i: int, step: Step, channels: int, size: int) -> tuple[str, int]:
        b = np.asarray(step.consts["bias"]).reshape(-1)
        if b.size not in (1, channels, size):
            raise NotImplementedError(f"step {i}: a bias of shape {step.consts['bias'].shape}")
        self.static(_c_array("int32_t", f"s{i}_bias", b.astype(np.int64)))
        return f"s{i}_bias", b.size

    def window(self, i: int, step: Step, x: QTensor, out_channels: int, out: QTensor) -> str:
        """win_t for step i: the step's window, or 1x1 taps over [M, K] for a plain matmul."""
        w = step.window
        if w is None:  # rows of K = the weights' first dimension
            k = step.consts["weights"].shape[0]
            batch, c, spatial = x.size // k, k, [1]
            kernel = strides = dilations = [1]
            pads, outs = [0, 0], [1]
        else:
            n = len(w.kernel)
            if n > MAX_SPATIAL or len(x.shape) != n + 2:
                raise NotImplementedError(f"step {i}: a {n}-D window over {x.shape}")
            batch, spatial, c = x.shape[0], list(x.shape[1:-1]), x.shape[-1]
            kernel, strides, dilations, pads = w.kernel, w.strides, w.dilations, w.pads
            outs = [(spatial[a] + pads[a] + pads[n + a] - (kernel[a] - 1) * dilations[a] - 1)
                    // strides[a] + 1 for a in range(n)]
        n = len(kernel)
        lead = MAX_SPATIAL - n

        def full(v: Sequence[int], fill: int) -> str:
            return _ints([fill] * lead + list(v))

        if batch * prod(outs) * out_channels != out.size:
            raise ValueError(f"step {i}: the window gives {batch}x{outs}x{out_channels} "
                             f"outputs, the tensor holds {out.size}")
        self.static(f"static const win_t s{i}_win = {{{batch}, {c}, {full(spatial, 1)}, "
                    f"{full(outs, 1)}, {full(kernel, 1)}, {full(strides, 1)}, "
                    f"{full(dilations, 1)}, {full(pads[:n], 0)}}};\n")
        return f"&s{i}_win"

    def reduce(self, i: int, step: Step, x: QTensor) -> str:
        """red_t for a reduction over ``axes`` (keepdims) of x."""
        rank = len(x.shape)
        axes = {int(a) % rank for a in step.attrs["axes"]}
        st = _strides(x.shape)
        kept = [(x.shape[a] if a not in axes else 1, st[a]) for a in range(rank)]
        red = [(x.shape[a], st[a]) for a in sorted(axes)]
        kd, ks = _coalesce([d for d, _ in kept], [s for _, s in kept])
        rd, rs = _coalesce([d for d, _ in red], [s for _, s in red])
        self.static(f"static const red_t s{i}_red = {{{len(kd)}, {_ints(kd)}, {_ints(ks)}, "
                    f"{len(rd)}, {_ints(rd)}, {_ints(rs)}}};\n")
        return f"&s{i}_red"

    def copy(self, name: str, dims: Sequence[int], xs: Sequence[int], ys: Sequence[int],
             x0: int = 0, y0: int = 0) -> str:
        """A copy_t initializer (or declaration when ``name`` is given)."""
        d, sx, sy = _coalesce(dims, xs, ys)
        body = f"{{{len(d)}, {_ints(d)}, {_ints(sx)}, {_ints(sy)}, {x0}, {y0}}}"
        return f"static const copy_t {name} = {body};\n" if name else body

    def bcast(self, i: int, a: QTensor, b: QTensor, out: QTensor) -> str:
        """bcast_t: a and b broadcast to out (right-aligned, stride 0 on broadcast axes)."""
        r = len(out.shape)

        def strides(t: QTensor) -> list[int]:
            shape = (1,) * (r - len(t.shape)) + tuple(t.shape)
            if len(shape) != r or any(s not in (1, o) for s, o in zip(shape, out.shape)):
                raise ValueError(f"step {i}: {t.shape} does not broadcast to {out.shape}")
            return [0 if s == 1 else st for s, st in zip(shape, _strides(shape))]

        d, sa, sb = _coalesce(out.shape, strides(a), strides(b))
        self.static(f"static const bcast_t s{i}_bc = {{{len(d)}, {_ints(d)}, {_ints(sa)}, "
                    f"{_ints(sb)}}};\n")
        return f"&s{i}_bc"

    # --- one builder per kind: the call of step i ------------------------------------------
    def conv(self, i: int, s: Step, x: QTensor, out: QTensor) -> str:
        w = np.asarray(s.consts["weights"])  # [K, N]
        oc = w.shape[1]
        win = self.window(i, s, x, oc, out)
        self.static(_c_array("int8_t", f"s{i}_w", np.ascontiguousarray(w.T)))  # [N][K]
        bias, nb = self.bias(i, s, oc, out.size)
        rq = self.requant(i, s.requant, out)
        return (f"conv({self.ptr(x.name)}, {self.ptr(out.name)}, {win}, {x.zero_point}, "
                f"{s.attrs.get('pad', x.zero_point)}, s{i}_w, {bias}, {nb}, {oc}, {rq});")

    def depthwise(self, i: int, s: Step, x: QTensor, out: QTensor) -> str:
        c = x.shape[-1]
        win = self.window(i, s, x, c, out)
        w = np.asarray(s.consts["weights"])
        if w.size != prod(s.window.kernel) * c:
            raise ValueError(f"step {i}: depthwise weights {w.shape} for {c} channels")
        self.static(_c_array("int8_t", f"s{i}_w", w))  # [taps][C]
        bias, nb = self.bias(i, s, c, out.size)
        rq = self.requant(i, s.requant, out)
        return (f"depthwise({self.ptr(x.name)}, {self.ptr(out.name)}, {win}, {x.zero_point}, "
                f"{s.attrs['pad']}, s{i}_w, {bias}, {nb}, {rq});")

    def _pool_geometry(self, i: int, s: Step, x: QTensor, out: QTensor) -> tuple[str, str, int]:
        if s.window is not None:
            return self.window(i, s, x, x.shape[-1], out), "0", int(s.attrs["pad"])
        return "0", self.reduce(i, s, x), 0

    def pool(self, i: int, s: Step, x: QTensor, out: QTensor) -> str:
        win, red, pad = self._pool_geometry(i, s, x, out)
        rq = "0" if s.requant is None else self.requant(i, s.requant, out)
        is_max = int(s.kind is Kind.MAX_POOL)
        return (f"pool({self.ptr(x.name)}, {self.ptr(out.name)}, {win}, {red}, {is_max}, "
                f"{x.zero_point}, {pad}, {rq});")

    def add_sub(self, i: int, s: Step, a: QTensor, b: QTensor, out: QTensor) -> str:
        bc = self.bcast(i, a, b, out)
        (am, ash), (bm, bsh) = s.attrs["a"], s.attrs["b"]
        left = int(s.attrs["left_shift"])
        if not 0 <= left <= 30 or not all(-31 <= v <= 30 for v in (ash, bsh)):
            raise ValueError(f"step {i}: add shifts outside the supported range")
        rq = self.requant(i, s.requant, out)
        sub = int(s.kind is Kind.SUB)
        return (f"add_sub({self.ptr(a.name)}, {self.ptr(b.name)}, {self.ptr(out.name)}, {bc}, "
                f"{a.zero_point}, {b.zero_point}, {left}, {am}, {ash}, {bm}, {bsh}, {sub}, "
                f"{rq});")

    def mul(self, i: int, s: Step, a: QTensor, b: QTensor, out: QTensor) -> str:
        bc = self.bcast(i, a, b, out)
        rq = self.requant(i, s.requant, out)
        return (f"mul({self.ptr(a.name)}, {self.ptr(b.name)}, {self.ptr(out.name)}, {bc}, "
                f"{a.zero_point}, {b.zero_point}, {rq});")

    def lut(self, i: int, s: Step, x: QTensor, out: QTensor) -> str:
        table = np.asarray(s.consts["table"])
        channels, inner = 1, max(out.size, 1)
        if table.ndim == 2:  # one row per index along attrs["axis"]
            axis = int(s.attrs["axis"]) % len(x.shape)
            channels, inner = table.shape[0], prod(x.shape[axis + 1:])
            if x.shape[axis] != channels:
                raise ValueError(f"step {i}: a table {table.shape} along axis {axis} of "
                                 f"{x.shape}")
        if table.shape[-1] != 256 or x.shape != out.shape:
            raise ValueError(f"step {i}: a table {table.shape} on {x.shape} -> {out.shape}")
        self.static(_c_array("int8_t", f"s{i}_table", table))
        return f"lut({self.ptr(x.name)}, {self.ptr(out.name)}, {out.size}, s{i}_table, " \
               f"{channels}, {inner});"

    def softmax(self, i: int, s: Step, *ts: QTensor) -> str:
        x, out = ts[0], ts[-1]
        table = np.asarray(s.consts["exp"]).reshape(-1)
        if table.size < 256 or x.shape != out.shape or np.any(table < 0) or np.any(
                table > 1 << 15) or table[-1] != 1 << 15:
            raise ValueError(f"step {i}: a softmax table {table.shape} on {x.shape}")
        self.static(_c_array("int32_t", f"s{i}_exp", table.astype(np.int64)))
        red = self.reduce(i, s, x)
        mk, mt = "0", "0"
        if "mask" in s.consts:
            m = np.asarray(s.consts["mask"]).reshape(-1)
            if x.size % m.size:
                raise ValueError(f"step {i}: a mask of {m.size} values on {x.shape}")
            self.static(_c_array("int32_t", f"s{i}_mask", m.astype(np.int64)))
            weights = "0"
            if "mask_weight" in s.consts:
                w = np.asarray(s.consts["mask_weight"]).reshape(-1)
                if w.size != m.size or np.any(w < 1) or np.any(w > MASK_WEIGHT_MAX):
                    raise ValueError(f"step {i}: mask weights {w.shape} for {m.size} codes")
                self.static(_c_array("int32_t", f"s{i}_mask_w", w.astype(np.int64)))
                weights = f"s{i}_mask_w"
            self.static(f"static const mask_t s{i}_mk = {{s{i}_mask, {m.size}, 0, 0, 0, 0, "
                        f"{weights}}};\n")
            mk = f"&s{i}_mk"
        elif len(ts) == 3:  # a mask tensor repeating over x's leading axes
            t = ts[1]
            shape = tuple(t.shape)
            while shape and shape[0] == 1:
                shape = shape[1:]
            mult, shift = s.attrs["mask_rescale"]
            if x.shape[len(x.shape) - len(shape):] != shape or not -31 <= shift <= 30:
                raise ValueError(f"step {i}: a mask {t.shape} on {x.shape}")
            absorbs = int(bool(s.attrs.get("mask_absorbs")))
            self.static(f"static const mask_t s{i}_mk = {{0, {t.size}, {t.zero_point}, {mult}, "
                        f"{shift}, {absorbs}, 0}};\n")
            mk, mt = f"&s{i}_mk", self.ptr(t.name)
        rq = self.requant(i, s.requant, out)
        return (f"softmax({self.ptr(x.name)}, {mt}, {self.ptr(out.name)}, {red}, s{i}_exp, "
                f"{table.size}, {mk}, {rq});")

    def matmul(self, i: int, s: Step, a: QTensor, b: QTensor, out: QTensor) -> str:
        """Batch axes as a bcast_t over out.shape[:-2] (strides per [m, k] / [k, n] block)."""
        m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
        # numpy's batch broadcasting, which the reference computes (then reshapes to out,
        # whose axes may be shaped otherwise: [2, 6, 7] @ [2, 7, 6] -> [2, 1, 6, 6], and a
        # vector's product [1, 8] @ [8, 1] -> [1])
        batch = tuple(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]))
        if b.shape[-2] != k or prod(batch) * m * n != out.size:
            raise ValueError(f"step {i}: matmul {a.shape} @ {b.shape} -> {out.shape}")

        def strides(t: QTensor) -> list[int]:
            lead = (1,) * (len(batch) - len(t.shape[:-2])) + tuple(t.shape[:-2])
            block = t.shape[-2] * t.shape[-1]
            return [0 if d == 1 else st * block for d, st in zip(lead, _strides(lead))]

        d, sa, sb = _coalesce(batch, strides(a), strides(b))
        self.static(f"static const bcast_t s{i}_bc = {{{len(d)}, {_ints(d)}, {_ints(sa)}, "
                    f"{_ints(sb)}}};\n")
        rq = self.requant(i, s.requant, out)
        return (f"matmul({self.ptr(a.name)}, {self.ptr(b.name)}, {self.ptr(out.name)}, "
                f"&s{i}_bc, {m}, {k}, {n}, {a.zero_point}, {b.zero_point}, {rq});")

    def load_const(self, i: int, s: Step, out: QTensor) -> str:
        self.static(_c_array("int8_t", f"s{i}_values", np.asarray(s.consts["values"])))
        return f"load_const(s{i}_values, {self.ptr(out.name)}, {out.size});"

    def transpose(self, i: int, s: Step, x: QTensor, out: QTensor) -> str:
        perm = [int(p) for p in s.attrs["perm"]]
        xs = _strides(x.shape)
        self.static(self.copy(f"s{i}_copy", out.shape, [xs[p] for p in perm],
                              _strides(out.shape)))
        return f"transpose({self.ptr(x.name)}, {self.ptr(out.name)}, &s{i}_copy);"

    def slice(self, i: int, s: Step, x: QTensor, out: QTensor) -> str:
        starts, steps = [int(v) for v in s.attrs["starts"]], [int(v) for v in s.attrs["steps"]]
        for a, (st, sp, n) in enumerate(zip(starts, steps, out.shape)):
            last = st + (n - 1) * sp
            if n and not (0 <= st < x.shape[a] and 0 <= last < x.shape[a]):
                raise ValueError(f"step {i}: slice indices outside axis {a} of {x.shape}")
        xs = _strides(x.shape)
        x0 = sum(st * stride for st, stride in zip(starts, xs))
        self.static(self.copy(f"s{i}_copy", out.shape, [sp * st for sp, st in zip(steps, xs)],
                              _strides(out.shape), x0=x0))
        return f"slice({self.ptr(x.name)}, {self.ptr(out.name)}, &s{i}_copy);"

    def pad(self, i: int, s: Step, x: QTensor, out: QTensor) -> str:
        pads = [int(p) for p in s.attrs["pads"]]
        if any(p < 0 for p in pads):
            raise NotImplementedError(f"step {i}: negative pads")
        ys = _strides(out.shape)
        y0 = sum(p * st for p, st in zip(pads, ys))
        self.static(self.copy(f"s{i}_copy", x.shape, _strides(x.shape), ys, y0=y0))
        return (f"pad({self.ptr(x.name)}, {self.ptr(out.name)}, {out.size}, "
                f"{int(s.attrs['value'])}, &s{i}_copy);")

    def concat(self, i: int, s: Step, *args: QTensor) -> str:
        *xs, out = args
        axis = int(s.attrs["axis"]) % len(out.shape)
        ys = _strides(out.shape)
        parts, at = [], 0
        for x in xs:
            parts.append(self.copy("", x.shape, _strides(x.shape), ys, y0=at * ys[axis]))
            at += x.shape[axis]
        if at != out.shape[axis]:
            raise ValueError(f"step {i}: concat inputs do not fill axis {axis} of {out.shape}")
        self.static(f"static const copy_t s{i}_copy[{len(xs)}] = {{\n    "
                    + ",\n    ".join(parts) + "\n};\n")
        ptrs = ", ".join(self.ptr(x.name) for x in xs)
        return (f"concat((const int8_t *const[]){{{ptrs}}}, {self.ptr(out.name)}, {len(xs)}, "
                f"s{i}_copy);")

    # --- the files -------------------------------------------------------------------------
    def step(self, i: int, s: Step) -> None:
        # (the sequence kernels read int8 or int16 codes themselves: c_sequence.py)
        if s.kind not in SEQUENCE_BUILDERS and (s.kind is Kind.CONVERT or any(
                self.t(n).bits != 8 for n in (*s.inputs, s.output))):
            from .emit_c16 import build16  # int16 steps (16x8) and precision conversions

            call, kernel = build16(self, i, s, *(self.t(n) for n in (*s.inputs, s.output)))
            self.kernels.add(kernel)
            self.calls.append(_block_comment(f"{i}: {s.kind.value} ({s.origin}) in int16 -> "
                                             f"'{s.output}'", "    ") + "\n" + _wrap(call, "    "))
            return
        build = _BUILDERS.get(s.kind)
        if build is None:
            raise NotImplementedError(f"C export: no kernel for a {s.kind.value} step")
        if s.requant is None and s.kind in _NEEDS_REQUANT:
            raise ValueError(f"step {i} ({s.kind.value}) has no requantization")
        if s.requant is not None and s.kind not in _NEEDS_REQUANT | {Kind.MAX_POOL}:
            raise NotImplementedError(f"step {i}: a {s.kind.value} step with requantization")
        ts = [self.t(n) for n in (*s.inputs, s.output)]
        call = build(self, i, s, *ts)
        self.kernels.add(_KERNEL[s.kind])
        desc = " + ".join(f"'{n}' {_dims(self.t(n).shape)}" for n in s.inputs)
        note = f"{i}: {s.kind.value} ({s.origin}): {desc} -> '{s.output}' {_dims(ts[-1].shape)}"
        self.calls.append(_block_comment(note, "    ") + "\n" + _wrap(call, "    "))

    def io(self) -> tuple[list[tuple[str, str, QTensor]], list[tuple[str, str, QTensor]]]:
        """(parameter, macro prefix, tensor) per input, then per output."""
        up = self.name.upper()
        return tuple([(f"{pre}{k}", f"{up}_{pre.upper()}{k}", self.t(n))
                      for k, n in enumerate(names)]
                     for pre, names in (("in", self.p.inputs), ("out", self.p.outputs)))

    def signatures(self) -> tuple[str, str]:
        """The prototypes of <name>_run and <name>_run_int8."""
        ins, outs = self.io()
        fargs = [f"const float *{p}" for p, _, _ in ins] + [f"float *{p}" for p, _, _ in outs]
        qargs = [f"const int{t.bits}_t *{p}" for p, _, t in ins] + [
            f"int{t.bits}_t *{p}" for p, _, t in outs]
        return (_wrap(f"int {self.name}_run({', '.join(fargs)})", ""),
                _wrap(f"int {self.name}_run_int8({', '.join(qargs)})", ""))

    def boundary(self) -> str:
        """The quantize/dequantize functions the entry points use (int8 and/or int16)."""
        ins, outs = self.io()
        if all(t.bits == 8 for _, _, t in (*ins, *outs)):
            return BOUNDARY
        from .c_kernels16 import BOUNDARY16

        q8, _, d8 = BOUNDARY.partition("\n/* fixed_point.dequantize")
        q16, _, d16 = BOUNDARY16.partition("\n/* fixed_point.dequantize")
        parts = [q8 if any(t.bits == 8 for _, _, t in ins) else "",
                 "/* fixed_point.dequantize" + d8 if any(t.bits == 8 for _, _, t in outs)
                 else "", q16 if any(t.bits == 16 for _, _, t in ins) else "",
                 "/* fixed_point.dequantize" + d16 if any(t.bits == 16 for _, _, t in outs)
                 else ""]
        return "\n".join(p for p in parts if p)

    def arena_bytes(self) -> int:
        return max(self.plan.arena_bytes, 4)  # a C array cannot be empty

    def header(self) -> str:
        up, n = self.name.upper(), self.name
        ins, outs = self.io()
        lines = [f"/* {n}.h: the int8 program '{_comment(self.p.name)}' exported by sw2c "
                 f"(asic target), {len(self.p.steps)} steps.",
                 " *",
                 f" * {n}_run quantizes float inputs, runs the int8 steps and dequantizes the",
                 f" * outputs; {n}_run_int8 takes and gives the int8 codes",
                 " * (real = scale * (q - zero_point)). Both use one static arena: not "
                 "reentrant.", " *"]
        for param, _, t in (*ins, *outs):
            lines.append(f" * {param}: '{_comment(t.name)}' {list(t.shape)} ({t.size} values),"
                         f" scale {t.scale:.9g}, zero point {t.zero_point}")
        lines += [" */", f"#ifndef {up}_H", f"#define {up}_H", "", "#include <stdint.h>", "",
                  "#ifdef __cplusplus", 'extern "C" {', "#endif", "",
                  f"#define {up}_ARENA_BYTES {self.arena_bytes()}",
                  f"#define {up}_WEIGHT_BYTES {self.p.weights_bytes}"]
        for _, macro, t in (*ins, *outs):
            lines += [f"#define {macro}_SIZE {t.size}", f"#define {macro}_SCALE {_f32(t.scale)}",
                      f"#define {macro}_ZERO_POINT ({t.zero_point})"]
        run, run_int8 = self.signatures()
        lines += ["", "/* Both return 0. */", run + ";", run_int8 + ";", "",
                  "#ifdef __cplusplus", "}", "#endif", "", f"#endif /* {up}_H */", ""]
        return "\n".join(lines)

    def source(self) -> str:
        for i, s in enumerate(self.p.steps):
            self.step(i, s)
        n, up = self.name, self.name.upper()
        ins, outs = self.io()
        run, run_int8 = self.signatures()
        off = self.plan.offsets
        head = [
            f"/* {n}.c: generated by sw2c from the int8 program '{_comment(self.p.name)}'.",
            " * Portable C99: int8/int32 arithmetic (64 bits only inside mbqm), no",
            " * allocation, no I/O, float only at the quantize/dequantize boundary. The",
            " * boundary is float32 arithmetic: do not build with -ffast-math. */",
            "#include <stdint.h>", f'#include "{n}.h"', "",
            "/* The activations: every tensor is ARENA + its offset from the memory plan. The",
            " * union aligns the arena to a 4-byte word. */",
            f"static union {{\n    int32_t align;\n    int8_t bytes[{up}_ARENA_BYTES];\n}} "
            f"{n}_arena;", f"#define ARENA ({n}_arena.bytes)", "",
            "/* The steps reach the arena through a volatile pointer, so that no kernel sees",
            " * its address as a compile-time constant: GCC 12.2 at -O2 deletes the call of a",
            " * kernel clone that IPA constant propagation specialized to a constant output",
            " * address (modref and pure-const lose the store; GCC 11 and 12 at -O3 are right).",
            " * One load per run. */",
            f"static int8_t *volatile {n}_arena_at = {n}_arena.bytes;", "",
            "/* ---- kernels ---- */", library(self.kernels), self.boundary(),
            "/* ---- constants: weights [N][K] or [taps][C], biases, tables, requantization"
            " ---- */", *self.statics,
            f"static void {n}_steps(void)", "{", f"    int8_t *const arena = {n}_arena_at;",
            "", "\n\n".join(self.calls), "}", ""]
        body = [run, "{", "    int32_t i;"]
        body += [f"    for (i = 0; i < {m}_SIZE; ++i)\n        {_elem(t, off)} = "
                 f"quantize{_wide(t)}({p}[i], {m}_SCALE, {m}_ZERO_POINT);" for p, m, t in ins]
        body.append(f"    {n}_steps();")
        body += [f"    for (i = 0; i < {m}_SIZE; ++i)\n        {p}[i] = "
                 f"dequantize{_wide(t)}({_elem(t, off)}, {m}_SCALE, {m}_ZERO_POINT);"
                 for p, m, t in outs]
        body += ["    return 0;", "}", "", run_int8, "{", "    int32_t i;"]
        body += [f"    for (i = 0; i < {m}_SIZE; ++i) {_elem(t, off)} = {p}[i];"
                 for p, m, t in ins]
        body.append(f"    {n}_steps();")
        body += [f"    for (i = 0; i < {m}_SIZE; ++i) {p}[i] = {_elem(t, off)};"
                 for p, m, t in outs]
        body += ["    return 0;", "}", ""]
        return "\n".join(head + body)


def _elem(t: QTensor, offsets: dict[str, int]) -> str:
    """Element i of an entry point's tensor in the arena (int16 codes through a cast)."""
    if t.bits == 8:
        return f"ARENA[{offsets[t.name]} + i]"
    return f"((int16_t *)&ARENA[{offsets[t.name]}])[i]"


def _wide(t: QTensor) -> str:
    """The suffix of the boundary function of t's codes."""
    return "16" if t.bits == 16 else ""


_Builder = Callable[..., str]
_BUILDERS: dict[Kind, _Builder] = {
    Kind.CONV: _Emitter.conv, Kind.DEPTHWISE: _Emitter.depthwise,
    Kind.SUM_POOL: _Emitter.pool, Kind.MAX_POOL: _Emitter.pool,
    Kind.ADD: _Emitter.add_sub, Kind.SUB: _Emitter.add_sub, Kind.MUL: _Emitter.mul,
    Kind.LUT: _Emitter.lut, Kind.SOFTMAX: _Emitter.softmax,
    Kind.TRANSPOSE: _Emitter.transpose, Kind.SLICE: _Emitter.slice, Kind.PAD: _Emitter.pad,
    Kind.CONCAT: _Emitter.concat, Kind.BATCH_MATMUL: _Emitter.matmul,
    Kind.CONST: _Emitter.load_const,
}
_BUILDERS.update(SEQUENCE_BUILDERS)  # embedding lookup, LayerNorm (c_sequence.py)
_SHARED = {Kind.ADD: "add_sub", Kind.SUB: "add_sub", Kind.SUM_POOL: "pool", Kind.MAX_POOL: "pool"}
_KERNEL = {k: _SHARED.get(k, k.value) for k in Kind}  # -> snippet
_NEEDS_REQUANT = frozenset({Kind.CONV, Kind.DEPTHWISE, Kind.SUM_POOL, Kind.ADD, Kind.SUB,
                            Kind.MUL, Kind.SOFTMAX, Kind.BATCH_MATMUL})


def emit_c(program: QProgram, plan: AsicPlan, name: str) -> tuple[str, str]:
    """The C99 source and header of ``program`` laid out by ``plan``: ``(<name>.c, <name>.h)``.

    ``name`` (a C identifier) prefixes the entry points ``<name>_run`` (float in/out) and
    ``<name>_run_int8`` (int8 codes in/out), the arena and the header's macros."""
    e = _Emitter(program, plan, name)
    source = e.source()
    return source, e.header()
