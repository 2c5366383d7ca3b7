"""Element types in generated code, and the operations on non-float values.

A tensor of dtype ``d`` is stored as ``storage(d)`` and computed on as ``register(d)``: the two
differ only for bool (one byte in memory, as numpy keeps it; an ``i1`` in registers). The float
operations live in math.py; this file has the integer and bool ones, casts and ``where``, with
the IR interpreter's semantics (ir/interp.py): integer division truncates and never traps,
float -> int casts saturate (NaN -> 0), indices are clamped.
"""

from __future__ import annotations

from llvmlite import ir

from ...ir import Binary, Unary
from ...ir.types import FLOATS, UNSIGNED
from .llvm import intrinsic

I1 = ir.IntType(1)
_STORAGE: dict[str, ir.Type] = {
    "float32": ir.FloatType(), "float64": ir.DoubleType(), "float16": ir.HalfType(),
    **{f"{sign}int{bits}": ir.IntType(bits) for sign in ("", "u") for bits in (8, 16, 32, 64)},
    "bool": ir.IntType(8),
}


def itemsize(element: ir.Type) -> int:
    """Bytes of one element of an LLVM scalar type (the alignment of our loads and stores)."""
    if isinstance(element, ir.FloatType):
        return 4
    if isinstance(element, ir.DoubleType):
        return 8
    if isinstance(element, ir.HalfType):
        return 2
    return max(element.width // 8, 1)


def storage(dtype: str) -> ir.Type:
    """The LLVM type of one element of ``dtype`` in memory."""
    return _STORAGE[dtype]


def register(dtype: str) -> ir.Type:
    """The LLVM type of one element of ``dtype`` while computing."""
    return I1 if dtype == "bool" else _STORAGE[dtype]


def _lanes(like: ir.Type, element: ir.Type) -> ir.Type:
    return ir.VectorType(element, like.count) if isinstance(like, ir.VectorType) else element


def to_register(b: ir.IRBuilder, value: ir.Value, dtype: str) -> ir.Value:
    """A loaded element (or vector) in its computing type."""
    if dtype != "bool":
        return value
    return b.icmp_unsigned("!=", value, ir.Constant(value.type, None))


def to_storage(b: ir.IRBuilder, value: ir.Value, dtype: str) -> ir.Value:
    """A computed element (or vector) in its memory type."""
    if dtype != "bool":
        return value
    return b.zext(value, _lanes(value.type, storage("bool")))


def constant(dtype: str, value: float | int | bool, like: ir.Type | None = None) -> ir.Constant:
    """A constant of ``dtype`` (a vector one when ``like`` is a vector type)."""
    t = register(dtype)
    scalar = ir.Constant(t, float(value) if dtype in FLOATS else int(value))
    if isinstance(like, ir.VectorType):
        return ir.Constant(ir.VectorType(t, like.count), [scalar] * like.count)
    return scalar


_SIGNED = {Binary.LT: "<", Binary.LE: "<=", Binary.GT: ">", Binary.GE: ">=", Binary.EQ: "=="}


def emit_int_unary(b: ir.IRBuilder, fn: Unary, x: ir.Value) -> ir.Value:
    zero = ir.Constant(x.type, None)
    if fn is Unary.NOT:
        return b.xor(x, _splat_int(x.type, -1))  # all ones: an i1's 1
    if fn is Unary.NEG:
        return b.sub(zero, x)
    if fn is Unary.ABS:
        return b.select(b.icmp_signed("<", x, zero), b.sub(zero, x), x)
    if fn is Unary.RELU:
        return b.select(b.icmp_signed("<", x, zero), zero, x)
    raise NotImplementedError(f"{fn} on integers")


def emit_int_binary(b: ir.IRBuilder, fn: Binary, x: ir.Value, y: ir.Value,
                    unsigned: bool = False) -> ir.Value:
    """``fn`` on two integer (or bool) values of one type."""
    if fn in _SIGNED:
        cmp = b.icmp_unsigned if unsigned else b.icmp_signed
        return cmp(_SIGNED[fn], x, y)
    simple = {Binary.ADD: b.add, Binary.SUB: b.sub, Binary.MUL: b.mul, Binary.AND: b.and_,
              Binary.OR: b.or_, Binary.XOR: b.xor}
    if fn in simple:
        return simple[fn](x, y)
    if fn in (Binary.MAX, Binary.MIN):
        op = (">" if fn is Binary.MAX else "<")
        greater = b.icmp_unsigned(op, x, y) if unsigned else b.icmp_signed(op, x, y)
        return b.select(greater, x, y)
    if fn is Binary.DIV:
        return _div(b, x, y, unsigned)
    if fn in (Binary.SHL, Binary.SHR):
        return _shift(b, fn, x, y, unsigned)
    raise NotImplementedError(f"{fn} on integers")


def _div(b: ir.IRBuilder, x: ir.Value, y: ir.Value, unsigned: bool) -> ir.Value:
    """x / y truncated, 0 where y == 0, wrapping where x = MIN and y = -1: the divisor is
    replaced before the division, so it never traps."""
    zero = ir.Constant(y.type, None)
    one = _splat_int(y.type, 1)
    by_zero = b.icmp_unsigned("==", y, zero)
    if unsigned:
        return b.select(by_zero, zero, b.udiv(x, b.select(by_zero, one, y)))
    minus_one = _splat_int(y.type, -1)
    negate = b.icmp_signed("==", y, minus_one)
    safe = b.select(b.or_(by_zero, negate), one, y)
    q = b.sdiv(x, safe)
    return b.select(by_zero, zero, b.select(negate, b.sub(zero, x), q))


def _shift(b: ir.IRBuilder, fn: Binary, x: ir.Value, y: ir.Value, unsigned: bool) -> ir.Value:
    """x << y or x >> y (see ir.interp._shift for y outside [0, bits)). LLVM's shifts by
    that much are poison: an arithmetic shift takes bits - 1 instead (the sign fills the
    value), the others take 0 and are replaced by 0."""
    bits = x.type.element.width if isinstance(x.type, ir.VectorType) else x.type.width
    zero = ir.Constant(x.type, None)
    inside = b.icmp_unsigned("<", y, _splat_int(y.type, bits))  # negative y: huge unsigned
    if fn is Binary.SHR and not unsigned:
        return b.ashr(x, b.select(inside, y, _splat_int(y.type, bits - 1)))
    amount = b.select(inside, y, zero)
    shifted = b.shl(x, amount) if fn is Binary.SHL else b.lshr(x, amount)
    return b.select(inside, shifted, zero)


def _splat_int(t: ir.Type, value: int) -> ir.Constant:
    if isinstance(t, ir.VectorType):
        return ir.Constant(t, [ir.Constant(t.element, value)] * t.count)
    return ir.Constant(t, value)


def emit_float_compare(b: ir.IRBuilder, fn: Binary, x: ir.Value, y: ir.Value) -> ir.Value:
    """Ordered comparisons, as numpy: anything compared with NaN is false."""
    return b.fcmp_ordered(_SIGNED[fn], x, y)


def emit_cast(b: ir.IRBuilder, x: ir.Value, src: str, dst: str) -> ir.Value:
    """``x`` (in ``src``'s register type) as ``dst`` (see ir.interp.cast)."""
    to = _lanes(x.type, register(dst))
    if src == dst:
        return x
    if dst == "bool":
        zero = ir.Constant(x.type, None)
        if src in FLOATS:
            return b.fcmp_unordered("!=", x, zero)  # NaN is true, as numpy's bool(nan)
        return b.icmp_unsigned("!=", x, zero)
    if src in FLOATS and dst in FLOATS:
        wider = itemsize(storage(dst)) > itemsize(storage(src))
        return b.fpext(x, to) if wider else b.fptrunc(x, to)
    if src in FLOATS:  # saturating: an out-of-range float is never undefined behaviour
        name = "llvm.fptoui.sat" if dst in UNSIGNED else "llvm.fptosi.sat"
        return b.call(intrinsic(b.module, name, [to, x.type], to, [x.type]), [x])
    if dst in FLOATS:
        return b.uitofp(x, to) if src in UNSIGNED else b.sitofp(x, to)
    width, src_width = to.element.width if isinstance(to, ir.VectorType) else to.width, (
        x.type.element.width if isinstance(x.type, ir.VectorType) else x.type.width)
    if width < src_width:
        return b.trunc(x, to)
    if width == src_width:
        return x
    return b.zext(x, to) if src in UNSIGNED else b.sext(x, to)
