"""The asic C export: the generated C99 gives the integer reference's bits, through both the
float entry point (quantize -> steps -> dequantize) and the int8 one; and ``verify=True`` uses
it as an independent oracle (a kernel bug the reference and the simulator share is caught)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import sw2c
from onnx import helper
from sw2c.backends.asic import reference
from sw2c.backends.asic.build import ASIC_PIPELINE
from sw2c.backends.asic.c_runner import CExport, find_compiler
from sw2c.backends.asic.calibrate import calibrate
from sw2c.backends.asic.emit_c import emit_c
from sw2c.backends.asic.fixed_point import dequantize
from sw2c.backends.asic.lower import quantize_graph
from sw2c.backends.asic.plan import IN_PLACE, plan_program
from sw2c.backends.asic.program import Kind, QProgram, QTensor, Requant, Step
from sw2c.backends.asic.reference import quantize_inputs, run_reference
from sw2c.frontend.importer import import_model
from sw2c.passes.pipeline import run_pipeline
from sw2c.tests.asic_models import DIGITS, digits_data
from sw2c.tests.onnx_util import make_model

CC, NO_CC = find_compiler()
pytestmark = pytest.mark.skipif(CC is None, reason=f"needs a C compiler ({NO_CC})")
CFLAGS = ["-std=c99", "-O2", "-Wall", "-Wextra", "-pedantic", "-Werror", "-shared", "-fPIC"]
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
Feeds = list[list[np.ndarray]]  # per run, one float array per program input
node = helper.make_node


def _weights(rng: np.random.Generator, *shape: int, scale: float = 0.3) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _program(model: onnx.ModelProto | Path, calib: list[dict[str, np.ndarray]] | None,
             seed: int, shapes: dict | None = None, bits: Callable | None = None
             ) -> tuple[QProgram, Feeds]:
    """Import, run the float passes, calibrate (on ``calib`` or random normals) and lower
    (at the precisions ``bits(regions)``, default int8); returns the program and a few random
    float feeds for it."""
    graph = run_pipeline(import_model(model, shapes), ASIC_PIPELINE)
    rng = np.random.default_rng(seed)

    def normal() -> list[np.ndarray]:
        return [rng.standard_normal(v.type.shape).astype(np.float32) for v in graph.inputs]

    if calib is None:
        calib = [dict(zip((v.name for v in graph.inputs), normal())) for _ in range(8)]
    program = quantize_graph(graph, lambda names: calibrate(graph, names, calib), bits)
    return program, [normal() for _ in range(3)]


def _all16(regions: list) -> dict[str, int]:
    return {r.output: 16 for r in regions}


def _alternate(regions: list) -> dict[str, int]:
    """Every other layer int16: CONVERT steps both ways between int8 and int16 kernels."""
    return {r.output: 16 if k % 2 else 8 for k, r in enumerate(regions)}


def digits() -> tuple[QProgram, Feeds]:
    """The shipped CNN: windowed convs, a max pool, a transpose and a dense layer."""
    d = np.load(EXAMPLES / "digits_data.npz")
    calib = d["calib_images"].astype(np.float32) * d["scale"]
    program, _ = _program(EXAMPLES / "digits_cnn.onnx", [{"input": x[None]} for x in calib], 0,
                          {"input": (1, 1, 8, 8)})
    test = d["test_images"].astype(np.float32) * d["scale"]
    return program, [[x[None]] for x in (*calib[:3], *test[:3])]


def windows(bits: Callable | None = None) -> tuple[QProgram, Feeds]:
    """Depthwise (stride 2, pads), average pool with pads not counted (per-position
    multipliers), max pool with pads, global average pool, a dilated strided conv with
    asymmetric pads, reductions over axes."""
    rng = np.random.default_rng(1)
    inits = {"wd": _weights(rng, 8, 1, 3, 3), "bd": _weights(rng, 8),
             "wc": _weights(rng, 4, 8, 3, 3), "bc": _weights(rng, 4),
             "ax1": np.array([1], np.int64), "ax2": np.array([2], np.int64)}
    nodes = [
        node("Conv", ["x", "wd", "bd"], ["d"], group=8, strides=[2, 2], pads=[1, 1, 1, 1]),
        node("Relu", ["d"], ["dr"]),
        node("AveragePool", ["dr"], ["a"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
             count_include_pad=0),
        node("MaxPool", ["a"], ["mp"], kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1]),
        node("GlobalAveragePool", ["a"], ["gap"]),
        node("Conv", ["x", "wc", "bc"], ["c"], dilations=[2, 2], pads=[2, 1, 2, 1],
             strides=[1, 2]),
        node("ReduceMax", ["c", "ax2"], ["rmax"], keepdims=1),
        node("ReduceMean", ["x", "ax1"], ["rmean"], keepdims=1),
    ]
    model = make_model(nodes, {"x": [1, 8, 9, 9]}, ["mp", "gap", "c", "rmax", "rmean"], inits,
                       opset=18)
    return _program(model, None, 1, bits=bits)


def elementwise(bits: Callable | None = None) -> tuple[QProgram, Feeds]:
    """Tables (sigmoid, per-channel affines along the last axis and along axis 1), ADD/SUB/MUL
    of two activations with broadcasting (ranks differ for one), softmax over the last axis
    and over axis 1, transpose, strided slice, pad, concat of inputs on different scales."""
    rng = np.random.default_rng(2)
    inits = {"k": (rng.random(8) + 0.5).astype(np.float32), "kb": _weights(rng, 8),
             "starts": np.array([0, 1, 0, 1], np.int64),
             "ends": np.array([1, 8, 4, 4], np.int64), "axes": np.arange(4, dtype=np.int64),
             "steps": np.array([1, 2, 1, 2], np.int64),
             "pads": np.array([0, 0, 1, 0, 0, 0, 0, 2], np.int64),
             "pv": np.array(0.25, np.float32),
             "k1": (rng.random((1, 4, 1, 1)) + 0.5).astype(np.float32),
             "kb1": _weights(rng, 1, 4, 1, 1)}
    nodes = [
        node("Sigmoid", ["x"], ["s"]),
        node("Add", ["s", "z"], ["a"]),
        node("Mul", ["a", "x"], ["m"]),
        node("Mul", ["m", "k"], ["c1"]),
        node("Add", ["c1", "kb"], ["c2"]),
        node("Sub", ["c2", "z"], ["sb"]),
        node("Transpose", ["sb"], ["t"], perm=[0, 3, 1, 2]),
        node("Slice", ["t", "starts", "ends", "axes", "steps"], ["sl"]),
        node("Pad", ["sl", "pads", "pv"], ["pd"]),
        node("Concat", ["x", "s"], ["cat"], axis=-1),
        node("Mul", ["x", "v"], ["mv"]),
        node("Mul", ["x", "k1"], ["e1"]),
        node("Add", ["e1", "kb1"], ["e2"]),
        node("Softmax", ["m"], ["sm1"], axis=-1),
        node("Softmax", ["x"], ["sm2"], axis=1),
    ]
    model = make_model(nodes, {"x": [1, 4, 4, 8], "z": [1, 1, 1, 8], "v": [4, 1, 8]},
                       ["pd", "cat", "mv", "e2", "sm1", "sm2"], inits)
    return _program(model, None, 2, bits=bits)


def conv_1d_3d() -> tuple[QProgram, Feeds]:
    """1-D and 3-D windows, a matmul over rank-3 rows, a Clip (requantization clamp)."""
    rng = np.random.default_rng(3)
    inits = {"w1": _weights(rng, 6, 4, 3), "b1": _weights(rng, 6), "wm": _weights(rng, 4, 5),
             "w3": _weights(rng, 3, 2, 2, 3, 3), "lo": np.array(-0.5, np.float32),
             "hi": np.array(0.5, np.float32)}
    nodes = [
        node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1], strides=[2]),
        node("Relu", ["c1"], ["r1"]),
        node("MaxPool", ["r1"], ["p1"], kernel_shape=[2], strides=[2]),
        node("MatMul", ["p1", "wm"], ["m"]),
        node("Clip", ["m", "lo", "hi"], ["y1"]),
        node("Conv", ["v", "w3"], ["c3"], pads=[0, 1, 1, 1, 1, 0]),
        node("MaxPool", ["c3"], ["y3"], kernel_shape=[2, 2, 2], strides=[1, 2, 2]),
    ]
    model = make_model(nodes, {"x": [1, 4, 16], "v": [1, 2, 4, 6, 6]}, ["y1", "y3"], inits)
    return _program(model, None, 3)


def fixed_point_edges() -> tuple[QProgram, Feeds]:
    """A hand-built program whose parameters stress the arithmetic: per-element multipliers
    over the whole int32 range and shifts over [-31, 30] (saturating left shifts, 31-bit
    right shifts), clamps, large left shifts in ADD/SUB, biases at the int32 limits."""
    rng = np.random.default_rng(4)

    def requant(shape: tuple[int, ...]) -> Requant:
        mult = rng.integers(0, 2**31, shape, dtype=np.int64)
        mult.flat[:3] = [0, 2**31 - 1, 2**30]
        shift = rng.integers(-31, 31, shape, dtype=np.int64)
        shift.flat[:4] = [-31, 30, 0, -1]
        return Requant(mult.astype(np.int32), shift.astype(np.int32), int(rng.integers(-20, 20)),
                       -100, 90)

    def t(name: str, shape: tuple[int, ...], zp: int) -> QTensor:
        return QTensor(name, shape, 0.05, zp)

    tensors = {q.name: q for q in (t("x", (4, 16), 3), t("u", (16,), -7), t("y", (4, 16), 1),
                                   t("z", (4, 16), -2), t("w", (4, 16), 0), t("c", (4, 8), 5))}
    bias = rng.integers(-2**31, 2**31, 8, dtype=np.int64)
    bias[:4] = [2**31 - 1, -2**31, 2**31 - 100, -2**31 + 100]
    steps = (
        Step(Kind.MUL, ("x", "x"), "y", "mul", requant=requant((4, 16))),
        Step(Kind.ADD, ("y", "x"), "z", "add", requant=requant((1,)),
             attrs={"left_shift": 24, "a": (2**31 - 1, 5), "b": (2**30 + 7, -31)}),
        Step(Kind.SUB, ("z", "u"), "w", "sub", requant=requant((16,)),
             attrs={"left_shift": 30, "a": (1234567890, 0), "b": (2**31 - 1, -3)}),
        Step(Kind.CONV, ("w",), "c", "dense", requant=requant((8,)),
             consts={"weights": rng.integers(-127, 128, (16, 8), dtype=np.int8),
                     "bias": bias.astype(np.int32)}),
    )
    program = QProgram("edges", tensors, ("x", "u"), ("y", "z", "w", "c"), steps)
    feeds = [[rng.standard_normal(s).astype(np.float32) * 5 for s in ((4, 16), (16,))]
             for _ in range(3)]
    return program, feeds


def attention(bits: Callable | None = None) -> tuple[QProgram, Feeds]:
    """Matmuls of two activations (broadcast batch axes, a scaled one), softmaxes with a
    constant causal mask (-inf and moderate entries), with a mask tensor, and without;
    constants loaded by CONST steps (a concatenated token, an added table over two axes, a
    multiplied one)."""
    rng = np.random.default_rng(5)
    mask = np.triu(np.full((5, 5), -np.inf, np.float32), 1)
    mask[4, 0] = -1.5
    inits = {"tok": _weights(rng, 1, 2, 1, 8), "pos": _weights(rng, 1, 1, 5, 8),
             "gain": (rng.random((1, 2, 5, 1)) + 0.5).astype(np.float32),
             "s": np.array(0.35, np.float32), "mask": mask[None, None]}
    nodes = [
        node("Concat", ["tok", "q"], ["qc"], axis=2),  # [1, 2, 5, 8]
        node("Add", ["qc", "pos"], ["qp"]),
        node("Mul", ["qp", "gain"], ["qg"]),
        node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),  # [1, 1, 8, 5]
        node("MatMul", ["qg", "kt"], ["sc"]),  # [1, 2, 5, 5]
        node("Mul", ["sc", "s"], ["ss"]),
        node("Add", ["ss", "mask"], ["sm"]),
        node("Softmax", ["sm"], ["p"], axis=-1),
        node("MatMul", ["p", "v"], ["ctx"]),  # [1, 2, 5, 6]
        node("Softmax", ["ctx"], ["p2"], axis=-1),
        node("Add", ["ss", "bias"], ["sb"]),  # a mask tensor [1, 1, 1, 5]
        node("Softmax", ["sb"], ["p3"], axis=-1),
    ]
    model = make_model(nodes, {"q": [1, 2, 4, 8], "k": [1, 1, 5, 8], "v": [2, 5, 6],
                               "bias": [1, 1, 1, 5]}, ["ctx", "p2", "p", "p3"], inits)
    return _program(model, None, 5, bits=bits)


def sequence(bits: Callable | None = None) -> tuple[QProgram, Feeds]:
    """An embedding lookup by token ids (negative ones wrap, the feeds' out-of-range codes
    clamp) plus a float input, then a LayerNorm over the last axis with per-channel gamma
    (some negative) and beta (backends/asic/sequence.py)."""
    rng = np.random.default_rng(6)
    gamma = (rng.random(16) + 0.5).astype(np.float32)
    gamma[::3] *= -1
    inits = {"table": _weights(rng, 100, 16, scale=1.0), "gamma": gamma,
             "beta": _weights(rng, 16)}
    nodes = [node("Gather", ["table", "ids"], ["e"], axis=0), node("Add", ["e", "x"], ["h"]),
             node("LayerNormalization", ["h", "gamma", "beta"], ["y"], axis=-1, epsilon=1e-5)]
    model = make_model(nodes, {"ids": [1, 6], "x": [1, 6, 16]}, ["y", "e"], inits)
    model.graph.input[0].type.tensor_type.elem_type = onnx.TensorProto.INT64
    calib = [{"ids": rng.integers(-100, 100, (1, 6)),
              "x": rng.standard_normal((1, 6, 16)).astype(np.float32)} for _ in range(8)]
    return _program(model, calib, 6, bits=bits)


PROGRAMS: dict[str, Callable[[], tuple[QProgram, Feeds]]] = {
    "digits": digits, "windows": windows, "elementwise": elementwise,
    "conv_1d_3d": conv_1d_3d, "edges": fixed_point_edges, "attention": attention,
    # int16 (16x8) kernels, alone and mixed with int8 ones through CONVERT steps
    "windows16": lambda: windows(_all16), "elementwise16": lambda: elementwise(_all16),
    "windows_mixed": lambda: windows(_alternate),
    "elementwise_mixed": lambda: elementwise(_alternate),
    "attention16": lambda: attention(_all16), "attention_mixed": lambda: attention(_alternate),
    "sequence": sequence, "sequence16": lambda: sequence(_all16),
}


@pytest.fixture(scope="module")
def built() -> Iterator[dict]:
    """Every program exported and compiled warning-free, each into its own library (the
    compilers run side by side)."""
    programs, libs = {}, {}
    for name, make in PROGRAMS.items():
        program, feeds = make()
        plan = plan_program(program)
        programs[name] = (program, plan, feeds)
        libs[name] = CExport(program, plan, name, CC, CFLAGS)
    try:
        for lib in libs.values():
            lib.wait()
            assert not lib.warnings, lib.warnings
        yield {"programs": programs, "libs": libs,
               "sources": {n: (lib.source, lib.header) for n, lib in libs.items()}}
    finally:
        for lib in libs.values():
            lib.close()


def _special(x: np.ndarray, t: QTensor, rng: np.random.Generator) -> np.ndarray:
    """x with NaN, infinities, out-of-range values, -0 and near-ties of the rounding."""
    x = x.copy().reshape(-1)
    ties = (rng.integers(-130, 130, x.size) + 0.5).astype(np.float32) * np.float32(t.scale)
    x[::2] = ties[::2]
    x[:6] = [np.nan, np.inf, -np.inf, -0.0, 1e30, -1e30][:x.size]
    return x


@pytest.mark.parametrize("name", PROGRAMS)
def test_c_matches_reference(built, name):
    program, _, feeds = built["programs"][name]
    lib = built["libs"][name]
    ins = [program.tensors[n] for n in program.inputs]
    outs = [program.tensors[n] for n in program.outputs]
    rng = np.random.default_rng(0)
    feeds = [*feeds, [_special(x, t, rng) for x, t in zip(feeds[0], ins)]]
    codes = [[rng.integers(-128, 128, t.shape, dtype=np.int8) for t in ins] for _ in range(2)]
    cases = [(f, quantize_inputs(program, f)) for f in feeds] + [(None, q) for q in codes]
    for floats, q in cases:
        want = run_reference(program, q)
        for t, g in zip(outs, lib.run_int8(q)):
            np.testing.assert_array_equal(g, want[t.name], err_msg=t.name)
        if floats is None:
            continue
        for t, g in zip(outs, lib.run(floats)):
            expect = dequantize(want[t.name], t.scale, t.zero_point)
            np.testing.assert_array_equal(g, expect, err_msg=t.name)


def test_every_kind_and_in_place_is_exercised(built):
    kinds = {s.kind for p, _, _ in built["programs"].values() for s in p.steps}
    assert kinds == set(Kind)
    program, plan, _ = built["programs"]["elementwise"]
    in_place = [s for s in program.steps if s.kind in IN_PLACE
                and any(plan.offsets[i] == plan.offsets[s.output] for i in s.inputs)]
    assert in_place, "the plan put no table/add/mul in place: the aliasing path is untested"


def _functions(code: str) -> dict[str, str]:
    """The C function definitions of generated code (each ends with a "}" in column 0)."""
    return {m[1]: m[0] for m in re.finditer(r"^(?:static )?\w+ \*?(\w+)\([^;{]*?\)\n\{.*?^\}",
                                             code, flags=re.S | re.M)}


def test_source_is_plain_c99(built):
    for name, (src, hdr) in built["sources"].items():
        code = re.sub(r"/\*.*?\*/", "", src, flags=re.S)  # comments may say anything
        for banned in ("malloc", "stdio", "printf", "double", "math.h", "#pragma"):
            assert banned not in code, (name, banned)
        # C99's _Pragma operator, for clang's loop hints on DSP cores only (c_kernels.py)
        assert all(p.startswith('_Pragma("clang loop ') for p in re.findall(r"_Pragma\(.*", code))
        funcs = _functions(code)
        assert {"mbqm", f"{name}_run", f"{name}_run_int8", f"{name}_steps"} <= set(funcs), (
            name, sorted(funcs))
        assert {"quantize", "quantize16"} & set(funcs), name
        assert {"dequantize", "dequantize16"} & set(funcs), name
        # 64-bit arithmetic only inside the requantization multiply (and in the convs' copy
        # of it, conv_mbqm, when the program has a conv); int16 programs: also in the 16x8
        # kernels' int64 accumulators, their int64 biases and their multiply (mbqm64); and
        # the integer LayerNorm's int64 variance, its square root and its epsilon
        wide = ("mbqm", "conv_mbqm", "mbqm_hi", "mbqm64", "rq_wide", "conv16", "depthwise16",
                "matmul16", "isqrt64", "layer_norm")  # mbqm_hi: depthwise's copy
        rest = re.sub(r"static const int64_t s\d+_bias\[[^;]*;", "", code)
        rest = re.sub(r"typedef struct \{[^}]*\} ln_t;|static const ln_t [^;]*;", "", rest)
        for f in wide:
            rest = rest.replace(funcs.get(f, "\0"), "")
        assert "int64_t" not in rest, name
        # float only at the boundary
        rest = code
        for f in ("quantize", "dequantize", "quantize16", "dequantize16", f"{name}_run"):
            rest = rest.replace(funcs.get(f, "\0"), "")
        assert not re.search(r"\bfloat\b", rest), name
        up = name.upper()
        for macro in ("ARENA_BYTES", "IN0_SCALE", "IN0_ZERO_POINT", "OUT0_SIZE"):
            assert f"#define {up}_{macro}" in hdr
        assert f"int {name}_run_int8(" in hdr and f"int {name}_run(" in hdr


def test_rejects_a_name_that_is_not_an_identifier(built):
    program, plan, _ = built["programs"]["edges"]
    with pytest.raises(ValueError, match="identifier"):
        emit_c(program, plan, "my-model")


def _digits_compile() -> sw2c.Module:
    return sw2c.compile(str(DIGITS), target="asic:tiny", input_shapes={"input": (1, 1, 8, 8)},
                        calibration=digits_data()["calib"][:64])


def test_verify_runs_the_c_export():
    c = _digits_compile().report["oracles"]["c"]
    assert c["ran"] and c["result"] == "bit-exact" and c["inputs"] >= 8, c


def test_verify_catches_a_kernel_bug_the_reference_and_simulator_share(monkeypatch):
    """Every requantized code one too high: the simulator runs the reference's kernels, so
    they agree; each step is within one code of onnxruntime's, so the QDQ oracle lets it
    pass (as it must: one code is its tolerance); only the C export, bit for bit, sees it."""
    right = reference.requantize

    def off_by_one(acc, multiplier, shift, zero_point, lo=-128, hi=127):
        return right(acc, multiplier, shift, zero_point + 1, lo, hi)

    monkeypatch.setattr(reference, "requantize", off_by_one)
    with pytest.raises(sw2c.VerificationError, match=r"output '\w+': the simulator differs "
                       r"from the C export .* in \d+ of \d+ element\(s\) on verification "
                       r"input \d+"):
        _digits_compile()
