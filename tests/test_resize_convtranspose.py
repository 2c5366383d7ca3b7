"""ConvTranspose, Resize and Upsample (frontend/ops_convtranspose.py, ops_resize.py): imported
and run on the IR interpreter against onnxruntime (or, where onnxruntime departs from the ONNX
spec, against ONNX's reference implementation), a few compiled end to end, and their refusals."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import sw2c
from onnx.reference import ReferenceEvaluator
from sw2c import ir
from sw2c.errors import ModelError, UnsupportedOpError
from sw2c.frontend import import_model
from sw2c.tests.onnx_util import check, node_model, random_feeds, session, with_output_shapes

RNG = np.random.default_rng(77)
EMPTY = np.zeros(0, np.float32)


def rand(*shape: int) -> np.ndarray:
    return np.asarray(RNG.standard_normal(shape), np.float32)


def check_reference(model, shape) -> None:
    """The imported IR against ONNX's reference implementation (the spec's own numbers)."""
    feeds = random_feeds(model, shapes={"x": shape})
    want = ReferenceEvaluator(model).run(None, feeds)
    graph = import_model(with_output_shapes(model, want))
    got = ir.run(graph, feeds)[graph.outputs[0]]
    np.testing.assert_allclose(got, want[0], rtol=1e-4, atol=1e-5)


# --- ConvTranspose --------------------------------------------------------------------------
CT_CASES = [  # rank, group, strides, dilations, kernel, output_padding, pads mode
    *itertools.product([1, 2], [1, 2], [1, 2, 3], [1, 2], [1, 3], [0, 1], ["pads", "valid"]),
    *((2, g, 2, 1, 2, 0, m) for g in (1, 2) for m in ("pads", "same_u", "same_l", "shape")),
    (3, 1, 2, 1, 2, 1, "pads"), (3, 2, 2, 1, 3, 0, "same_u"), (2, 1, 2, 1, 2, 1, "shape"),
]


def ct_model(rank, group, stride, dil, k, extra, mode, bias=True, c=4, m=6):
    spatial = [5, 4, 3][:rank]
    inits = {"w": rand(c, m // group, *[k, k + 1, k][:rank])}
    if bias:
        inits["b"] = rand(m)
    attrs = dict(group=group, strides=[stride] * rank, dilations=[dil] * rank)
    if extra:
        attrs["output_padding"] = [min(extra, stride - 1)] * rank
    if mode == "pads":
        attrs["pads"] = [1, 0, 2][:rank] + [0, 2, 1][:rank]
    elif mode == "shape":
        attrs["output_shape"] = [s * stride + 1 for s in spatial]
    elif mode != "none":
        attrs["auto_pad"] = {"valid": "VALID", "same_u": "SAME_UPPER", "same_l": "SAME_LOWER"}[mode]
    return node_model("ConvTranspose", {"x": [2, c, *spatial]}, inits=inits, opset=11, **attrs)


@pytest.mark.parametrize("case", CT_CASES, ids=str)
def test_conv_transpose(case):
    rank, group, stride, dil, k, extra, mode = case
    if mode == "pads" and (k - 1) * dil < 2:  # a pad may not exceed the dilated kernel
        mode = "none"
    check(ct_model(rank, group, stride, dil, k, extra, mode, bias=bool(extra)))


def test_conv_transpose_kernel_equal_stride_is_one_matmul():
    """The U-Net 2x2/2 upsampling layer: no zero insertion, no WINDOW."""
    model = node_model("ConvTranspose", {"x": [1, 4, 5, 3]}, inits={"w": rand(4, 6, 2, 2),
                       "b": rand(6)}, opset=11, strides=[2, 2], pads=[1, 0, 0, 1])
    graph = check(model)
    ops = [n.op for n in graph.nodes]
    assert ops.count(ir.Op.MATMUL) == 1 and ir.Op.WINDOW not in ops


def test_conv_transpose_same_with_small_kernel_is_refused():
    """kernel < stride under SAME: onnxruntime and the ONNX spec give different sizes."""
    with pytest.raises(UnsupportedOpError, match="auto_pad SAME_UPPER"):
        import_model(ct_model(1, 1, 3, 1, 1, 0, "same_u"))


# --- Resize -----------------------------------------------------------------------------------
COORDS = ["half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
          "asymmetric", "tf_crop_and_resize"]
RULES = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]
GEOMETRIES = [("scales", [1, 1, 2.0, 3.0]), ("scales", [1, 1, 0.5, 0.25]),
              ("scales", [1, 1, 0.6, 1.5]), ("sizes", [1, 3, 9, 3]), ("sizes", [1, 3, 3, 13])]


def resize_model(mode, coord, geometry, opset=19, shape=(1, 3, 6, 8), **attrs):
    kind, values = geometry
    roi = EMPTY
    if coord == "tf_crop_and_resize":
        roi = np.array([0, 0, 0.2, 0.1, 1, 1, 1.1, 0.8], np.float32)
        attrs["extrapolation_value"] = 2.5
    inits = {"roi": roi, "scales": np.array(values, np.float32) if kind == "scales" else EMPTY}
    if kind == "sizes":
        inits["sizes"] = np.array(values, np.int64)
    return node_model("Resize", {"x": list(shape)}, inits=inits, opset=opset, mode=mode,
                      coordinate_transformation_mode=coord, **attrs)


def spec_only(coord, geometry, shape=(1, 3, 6, 8)) -> bool:
    """Where onnxruntime departs from the spec: align_corners and tf_crop_and_resize divide by
    scale * size, which onnxruntime truncates first; half_pixel_symmetric's centre is size / 2,
    which onnxruntime halves in integers."""
    kind, values = geometry
    fractional = kind == "scales" and any(s * d % 1 for s, d in zip(values, shape))
    odd = kind == "scales" and any(d % 2 for d in shape)
    return (coord in ("align_corners", "tf_crop_and_resize") and fractional) or (
        coord == "half_pixel_symmetric" and (fractional or odd))


@pytest.mark.parametrize("mode, coord, geometry, rule", [
    *(("nearest", c, g, r) for c in COORDS for g in GEOMETRIES for r in RULES),
    *((m, c, g, None) for m in ("linear", "cubic") for c in COORDS for g in GEOMETRIES),
], ids=str)
def test_resize(mode, coord, geometry, rule):
    attrs = {"nearest_mode": rule} if rule else {}
    model = resize_model(mode, coord, geometry, **attrs)
    if spec_only(coord, geometry) or (coord == "tf_crop_and_resize" and mode == "nearest"):
        check_reference(model, [1, 3, 6, 8])  # (nearest: float32 ties at the crop's edge)
    else:
        check(model)


@pytest.mark.parametrize("opset", [11, 13, 18])
@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
def test_resize_opsets(opset, mode):
    check(resize_model(mode, "half_pixel", ("scales", [1, 1, 1.5, 2.0]), opset=opset))
    check(resize_model(mode, "asymmetric", ("sizes", [1, 3, 4, 11]), opset=opset))


def test_resize_pytorch_half_pixel_to_one_samples_the_first_element():
    """Found by the fuzzer: an output of length 1 samples x = 0 (the spec and onnxruntime;
    ONNX's reference takes -0.5, which matters for cubic)."""
    check(resize_model("cubic", "pytorch_half_pixel", ("sizes", [2, 3, 1, 9]), shape=(2, 3, 3, 1)))


@pytest.mark.parametrize("a, exclude", [(-0.5, 1), (-0.75, 0), (-0.5, 0)])
def test_resize_cubic_parameters(a, exclude):
    check(resize_model("cubic", "half_pixel", ("scales", [1, 1, 0.6, 1.75]), cubic_coeff_a=a,
                       exclude_outside=exclude))


@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("scales", [[1, 1, 0.5, 0.25], [1, 1, 2.0, 0.5]])
def test_resize_antialias(mode, scales):
    check(resize_model(mode, "half_pixel", ("scales", scales), shape=(1, 2, 12, 16),
                       antialias=1))


@pytest.mark.parametrize("policy", ["stretch", "not_larger", "not_smaller"])
def test_resize_axes_and_aspect_policy(policy):
    inits = {"roi": EMPTY, "scales": EMPTY, "sizes": np.array([9, 4], np.int64)}
    check(node_model("Resize", {"x": [1, 2, 6, 7]}, inits=inits, opset=19, mode="linear",
                     axes=[3, 2], keep_aspect_ratio_policy=policy))


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("scales", [[1.0, 1.0, 2.0, 3.0], [1.0, 1.0, 1.5, 2.5]])
def test_resize_10_and_upsample(mode, scales):
    s = np.array(scales, np.float32)
    check(node_model("Resize", {"x": [1, 2, 5, 7]}, inits={"s": s}, opset=10, mode=mode))
    check(node_model("Upsample", {"x": [1, 2, 5, 7]}, inits={"s": s}, opset=9, mode=mode))
    check(node_model("Upsample", {"x": [1, 2, 5, 7]}, opset=7, mode=mode, scales=scales))


@pytest.mark.parametrize("mode, shape, scales", [
    ("linear", (2, 3, 7), [1, 1, 1.5]), ("cubic", (3, 9), [0.5, 2.0]),
    ("nearest", (1, 2, 3, 4, 5), [1, 1, 2.0, 0.5, 1.5]),
    ("linear", (1, 2, 3, 4, 5), [1, 2, 2, 2, 2]),
])
def test_resize_any_rank(mode, shape, scales):
    """Any rank and any axis (onnxruntime's linear and cubic take 2-D or 4-D only: the
    reference decides)."""
    check_reference(node_model("Resize", {"x": list(shape)}, opset=13, mode=mode,
                               inits={"roi": EMPTY, "scales": np.array(scales, np.float32)}),
                    list(shape))


def test_resize_10_nearest_downsample():
    """Resize-10 rounds a downsampling nearest up (onnxruntime's 'simple' nearest mode)."""
    s = np.array([1, 1, 0.5, 0.4], np.float32)
    check(node_model("Resize", {"x": [1, 2, 6, 11]}, inits={"s": s}, opset=10))


def test_resize_nearest_is_an_exact_gather():
    """inf and NaN stay where they are: nearest copies, it never multiplies by zero."""
    model = resize_model("nearest", "asymmetric", ("scales", [1, 1, 1.5, 2.0]),
                         shape=(1, 1, 4, 4))
    x = rand(1, 1, 4, 4)
    x[0, 0, 1, 2], x[0, 0, 3, 0] = np.inf, np.nan
    graph = check(model, feeds={"x": x})
    assert ir.Op.MATMUL not in {n.op for n in graph.nodes}


def test_resize_nearest_with_a_long_period_gathers():
    """257 -> 1000 positions have no short period: one GATHER of constant indices."""
    graph = check(resize_model("nearest", "half_pixel", ("sizes", [1, 2, 3, 1000]),
                               shape=(1, 2, 3, 257)))
    assert ir.Op.GATHER in {n.op for n in graph.nodes}


def test_resize_too_large_is_refused_before_numpy_builds_it():
    with pytest.raises(ModelError, match="memory limit"):
        import_model(resize_model("linear", "half_pixel", ("sizes", [1, 3, 6, 10**11])))


def test_resize_refusals():
    with pytest.raises(UnsupportedOpError, match="antialias"):
        import_model(resize_model("nearest", "half_pixel", ("scales", [1, 1, 0.5, 0.5]),
                                  antialias=1))
    model = node_model("Resize", {"x": [1, 1, 4, 4], "s": [4]}, opset=13,
                       extra_inputs=[], mode="nearest")
    model.graph.node[0].input[:] = ["x", "", "s"]
    with pytest.raises(UnsupportedOpError, match="scales"):
        import_model(model)


# --- compiled end to end ------------------------------------------------------------------------
@pytest.mark.parametrize("model", [
    ct_model(2, 1, 2, 1, 3, 1, "pads"), ct_model(2, 2, 2, 1, 2, 0, "none"),
    ct_model(1, 2, 3, 2, 3, 0, "valid"),
    resize_model("nearest", "asymmetric", ("scales", [1, 1, 2.0, 2.0])),
    resize_model("nearest", "half_pixel", ("sizes", [1, 3, 9, 5])),
    resize_model("linear", "half_pixel", ("scales", [1, 1, 2.0, 2.0])),
    resize_model("cubic", "align_corners", ("sizes", [1, 3, 4, 12])),
    resize_model("nearest", "half_pixel", ("sizes", [1, 2, 3, 1000]), shape=(1, 2, 3, 257)),
], ids=["ct_pads", "ct_unet", "ct_1d_group", "nearest2x", "nearest_sizes", "linear2x", "cubic",
        "nearest_gather"])
def test_compiled(model):
    model = with_output_shapes(model, session(model).run(None, random_feeds(model)))
    sw2c.compile(model, verify=True)  # raises VerificationError on a mismatch with onnxruntime
