"""The op kinds of the sw2c IR: one enum, in groups, plus the elementwise function tables.

A network is matrix multiplies and thresholds: ``MATMUL`` is the only MAC-heavy op, ``WINDOW``
gathers conv/pool patches, and everything else is elementwise, a reduction or data layout.
"""

from __future__ import annotations

import enum


class Op(enum.Enum):
    # sources
    CONST = "const"  # attrs: value (np.ndarray)
    # compute
    MATMUL = "matmul"  # numpy matmul of two rank>=2 tensors, batch dims broadcast
    UNARY = "unary"  # attrs: fn (Unary), plus its UNARY_PARAMS (alpha, lo, hi, ...)
    BINARY = "binary"  # attrs: fn (Binary); numpy broadcasting
    CAST = "cast"  # attrs: to (dtype name); floats -> ints truncate and saturate, NaN -> 0
    WHERE = "where"  # (cond: bool, a, b) -> a where cond else b; numpy broadcasting
    REDUCE = "reduce"  # attrs: fn (Reduce), axes; keeps the reduced dims as size 1
    WINDOW = "window"  # [N, *S, C] -> [N, *O, *K, C]; attrs: kernel, strides, dilations, pads, pad
    # layout
    RESHAPE = "reshape"  # attrs: shape
    TRANSPOSE = "transpose"  # attrs: perm
    CONCAT = "concat"  # attrs: axis
    SLICE = "slice"  # attrs: starts, steps (one per axis); the output type gives the counts
    PAD = "pad"  # attrs: pads (begin per axis, then end per axis), value
    GATHER = "gather"  # (data, indices: int) attrs: axis; indices wrap once if negative and
    # are clamped into the axis, so generated code never reads outside ``data``
    # after fusion
    KERNEL = "kernel"  # attrs: body (Graph), kind (str); one generated function


ELEMENTWISE = frozenset({Op.UNARY, Op.BINARY, Op.CAST, Op.WHERE})
LAYOUT = frozenset({Op.RESHAPE, Op.TRANSPOSE, Op.CONCAT, Op.SLICE, Op.PAD})


class Unary(enum.Enum):
    RELU = "relu"
    LEAKY_RELU = "leaky_relu"  # alpha
    CLIP = "clip"  # lo, hi
    SIGMOID = "sigmoid"
    HARD_SIGMOID = "hard_sigmoid"  # alpha, beta
    HARD_SWISH = "hard_swish"
    TANH = "tanh"
    EXP = "exp"
    LOG = "log"
    SQRT = "sqrt"
    NEG = "neg"
    ABS = "abs"
    ERF = "erf"
    ELU = "elu"  # alpha: x if x > 0 else alpha * expm1(x)
    SOFTPLUS = "softplus"  # log(1 + exp(x)), without overflow or underflow to 0
    THRESHOLDED_RELU = "thresholded_relu"  # alpha: x if x > alpha else 0
    SHRINK = "shrink"  # lambd, bias: x - bias if x > lambd, x + bias if x < -lambd, else 0
    NOT = "not"  # logical on bool, bitwise on integers
    # float math through libm (correctly rounded or nearly), one kind per ONNX op
    SIN = "sin"
    COS = "cos"
    TAN = "tan"
    ASIN = "asin"
    ACOS = "acos"
    ATAN = "atan"
    SINH = "sinh"
    COSH = "cosh"
    ASINH = "asinh"
    ACOSH = "acosh"
    ATANH = "atanh"
    # rounding to an integral float (LLVM intrinsics; exact)
    FLOOR = "floor"
    CEIL = "ceil"
    ROUND = "round"  # half to even, as np.round and ONNX Round


class Binary(enum.Enum):
    ADD = "add"
    SUB = "sub"
    MUL = "mul"
    DIV = "div"
    MAX = "max"
    MIN = "min"
    POW = "pow"
    MOD = "mod"  # floats: C fmod (truncated quotient, the sign of the dividend; exact)
    # comparisons: any numeric type in, bool out
    EQ = "eq"
    LT = "lt"
    LE = "le"
    GT = "gt"
    GE = "ge"
    # logic on bools, bitwise on integers
    AND = "and"
    OR = "or"
    XOR = "xor"
    # integers only; a shift by the bit width or more gives 0 (never undefined)
    SHL = "shl"
    SHR = "shr"  # logical on unsigned types, arithmetic on signed ones


COMPARISONS = frozenset({Binary.EQ, Binary.LT, Binary.LE, Binary.GT, Binary.GE})
LOGIC = frozenset({Binary.AND, Binary.OR, Binary.XOR})
SHIFTS = frozenset({Binary.SHL, Binary.SHR})


class Reduce(enum.Enum):
    SUM = "sum"
    MAX = "max"
    MEAN = "mean"
    PROD = "prod"


UNARY_PARAMS: dict[Unary, tuple[str, ...]] = {
    Unary.LEAKY_RELU: ("alpha",),
    Unary.CLIP: ("lo", "hi"),
    Unary.HARD_SIGMOID: ("alpha", "beta"),
    Unary.ELU: ("alpha",),
    Unary.THRESHOLDED_RELU: ("alpha",),
    Unary.SHRINK: ("lambd", "bias"),
}
