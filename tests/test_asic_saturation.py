"""No silent loss on the asic target (issue 12): a bias too large for int32 is avoided by
growing that channel's weight scale (as TFLite's converter does), a saturation that cannot be
avoided warns naming the layer, and ``verify=True`` fails when an output's SQNR against
onnxruntime is under ``min_sqnr_db``, naming the layer where the signal is lost."""

from __future__ import annotations

import warnings
from functools import cache

import numpy as np
import onnx
import pytest
import sw2c
from onnx import helper
from sw2c.backends.asic.accuracy import culprit, format_sqnr_table
from sw2c.backends.asic.lower import BIAS_LIMIT
from sw2c.benchmarks import fuzz
from sw2c.cli import main
from sw2c.tests.onnx_util import make_model, session

n = helper.make_node
CALIB = np.random.default_rng(1).standard_normal((16, 3, 12, 12)).astype(np.float32)


def lite(weight_scale: float = 1.0, bias_scale: float = 0.05, gain: float | None = None,
         dead: slice = slice(None)) -> onnx.ModelProto:
    """An EfficientNet-lite-style net: stem conv, ReLU6, depthwise, ReLU6, global average pool,
    then the dense classifier 'classifier'. The classifier's weights in channels ``dead`` are
    scaled by ``weight_scale`` (a folded batch norm whose scale is ~0: its bias dominates);
    ``bias_scale`` sets the classifier's biases; ``gain`` puts a constant Mul after it (the
    bias divided by it, so the folded int32 bias is huge and the float output unchanged)."""
    rng = np.random.default_rng(0)

    def w(*shape: int, s: float) -> np.ndarray:
        return (rng.standard_normal(shape) * s).astype(np.float32)

    wf, bf = w(10, 16, s=0.3), w(10, s=bias_scale)
    wf[dead] *= np.float32(weight_scale)
    inits = {"w1": w(16, 3, 3, 3, s=0.3), "b1": w(16, s=0.1), "wd": w(16, 1, 3, 3, s=0.3),
             "bd": w(16, s=0.1), "wf": wf, "bf": bf if gain is None else bf / np.float32(gain)}
    nodes = [n("Conv", ["x", "w1", "b1"], ["c1"], name="stem", pads=[1, 1, 1, 1],
               strides=[2, 2]),
             n("Clip", ["c1", "lo", "hi"], ["r1"], name="relu6_1"),
             n("Conv", ["r1", "wd", "bd"], ["d1"], name="depthwise", group=16, pads=[1, 1, 1, 1]),
             n("Clip", ["d1", "lo", "hi"], ["r2"], name="relu6_2"),
             n("GlobalAveragePool", ["r2"], ["g"], name="gap"),
             n("Flatten", ["g"], ["f"], name="flatten"),
             n("Gemm", ["f", "wf", "bf"], ["y" if gain is None else "z"], name="classifier",
               transB=1)]
    inits.update(lo=np.float32(0), hi=np.float32(6))
    if gain is not None:
        inits["gain"] = np.float32(gain)
        nodes.append(n("Mul", ["z", "gain"], ["y"], name="bn_scale"))
    return fuzz.to_model(fuzz.Parts.of(make_model(nodes, {"x": [1, 3, 12, 12]}, ["y"], inits)))


def compiled(model: onnx.ModelProto, **kw) -> sw2c.Module:
    return sw2c.compile(model, target="asic:edge", calibration=CALIB, **kw)


@cache
def lite_module(config: str = "normal", which: int = 0) -> sw2c.Module:
    """``lite`` compiled with verify=True (its default SQNR floor), once per test run: the
    normal model, or LARGE[config]'s large-bias (``which`` 0) or reference (1) model."""
    return compiled(lite(**LARGE[config][which]) if config != "normal" else lite())


def classifier(module: sw2c.Module):
    return next(s for s in module.program.steps if s.origin == "classifier")


# config -> (the large-bias model's arguments, the same model's without a bias that could
# overflow: the dead channels' weights exactly zero, or the biases normal)
LARGE = {
    # the issue's model: weights ~0 next to biases of about +-0.05 (all-zero outputs before)
    "tiny_weights": ({"weight_scale": 1e-9}, {}),
    "half_dead": ({"weight_scale": 1e-10, "dead": slice(0, 5)},
                  {"weight_scale": 0.0, "dead": slice(0, 5)}),
    "huge_biases": ({"bias_scale": 1e6}, {}),
    "folded_scale": ({"gain": 1e-7}, {}),  # the int32 bias is offset / gain; same float model
}


@pytest.mark.parametrize("config", sorted(LARGE))
def test_large_biases_run_as_well_as_normal_ones_or_fail_naming_the_layer(config):
    large, normal = LARGE[config]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", sw2c.SaturationWarning)  # avoided, not saturated
            module = lite_module(config)
    except sw2c.AccuracyError as e:
        assert "'classifier'" in str(e)
        return
    assert np.any(module(CALIB[:1]) != 0)
    reference = lite_module(*((config, 1) if normal else ("normal",)))
    reference = reference.report["output_sqnr_db"]["y"]
    assert module.report["output_sqnr_db"]["y"] >= reference - 1.0
    bias = classifier(module).consts["bias"].astype(np.int64)
    assert np.abs(bias).max() <= BIAS_LIMIT  # room left for the products in int32


def test_rescaling_leaves_channels_whose_bias_fits_untouched():
    normal, mixed = lite_module(), lite_module("half_dead")
    a, b = classifier(normal), classifier(mixed)
    np.testing.assert_array_equal(a.consts["weights"][:, 5:], b.consts["weights"][:, 5:])
    np.testing.assert_array_equal(a.consts["bias"][5:], b.consts["bias"][5:])
    assert not np.any(b.consts["weights"][:, :5])  # ~1e-10 weights next to the bias: code 0


def test_the_issue_model_no_longer_outputs_zeros():
    """Float gives about +-0.05; the clipped biases gave exactly 0 (SQNR 0.0 dB)."""
    model, module = lite(weight_scale=1e-9), lite_module("tiny_weights")
    x = CALIB[:1]
    (want,) = session(model).run(None, {"x": x})
    np.testing.assert_allclose(module(x).reshape(want.shape), want, atol=2 * np.abs(want).max()
                               / 255)


def test_min_sqnr_db_that_int8_cannot_meet_raises_naming_a_layer():
    with pytest.raises(sw2c.AccuracyError) as info:
        compiled(lite(), min_sqnr_db=80)
    text = str(info.value)
    rows = info.value.report["layers"]
    first = culprit(rows, 80)
    assert f"layer '{rows[first]['name']}'" in text and "min_sqnr_db=80" in text
    assert all(r["name"] in text for r in rows)  # the per-layer table
    assert "SQNR dB" in text and "<- first under the floor" in text


def test_a_met_floor_passes_and_the_report_says_it():
    assert lite_module().report["min_sqnr_db"] == 10.0


def lossy_concat() -> onnx.ModelProto:
    """A branch 10^6 times smaller than the one it is concatenated with: int8 keeps one scale
    per tensor, so the small branch's codes are all zero."""
    nodes = [n("Mul", ["x", "k1"], ["a"], name="small"), n("Mul", ["x", "k2"], ["b"], name="large"),
             n("Concat", ["a", "b"], ["c"], name="concat", axis=1),
             n("Slice", ["c", "st", "en", "ax"], ["y"], name="take_small")]
    inits = {"k1": np.float32(1e-3), "k2": np.float32(1e3), "st": np.array([0]),
             "en": np.array([8]), "ax": np.array([1])}
    return fuzz.to_model(fuzz.Parts.of(make_model(nodes, {"x": [1, 8]}, ["y"], inits)))


def test_default_floor_catches_an_output_lost_to_a_shared_scale():
    calib = np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32)
    with pytest.raises(sw2c.AccuracyError, match="'take_small'"):
        sw2c.compile(lossy_concat(), target="asic", calibration=calib)
    module = sw2c.compile(lossy_concat(), target="asic", calibration=calib, min_sqnr_db=None)
    assert module.report["output_sqnr_db"]["y"] < 10  # measured and reported, not raised
    assert "min_sqnr_db" not in module.report


@pytest.mark.parametrize("bad", ["ten", float("nan"), True])
def test_min_sqnr_db_must_be_a_number(bad):
    with pytest.raises(sw2c.InputError, match="min_sqnr_db"):
        compiled(lite(), min_sqnr_db=bad)


def inf_bias() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    b = np.zeros(4, np.float32)
    b[1] = np.inf
    nodes = [n("Gemm", ["x", "w", "b"], ["y"], name="dense", transB=1)]
    inits = {"w": rng.standard_normal((4, 8)).astype(np.float32), "b": b}
    return fuzz.to_model(fuzz.Parts.of(make_model(nodes, {"x": [1, 8]}, ["y"], inits)))


def test_a_bias_no_scale_can_hold_warns_naming_the_layer_and_fails_verify():
    calib = np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32)
    with pytest.warns(sw2c.SaturationWarning, match="layer 'dense'.*bias"):
        sw2c.compile(inf_bias(), target="asic", calibration=calib, verify=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sw2c.SaturationWarning)
        with pytest.raises(sw2c.AccuracyError, match="'dense'"):
            sw2c.compile(inf_bias(), target="asic", calibration=calib)


def test_sqnr_table_marks_the_first_layer_under_the_floor():
    rows = [{"name": f"l{i}", "kind": "conv", "sqnr_db": v}
            for i, v in enumerate([40.0, None, 30.0, 4.0, 2.0, float("inf")])]
    assert culprit(rows, 10) == 3
    assert culprit(rows, 1) == 4  # none under: the worst
    table = format_sqnr_table(rows, 3, rows=3)
    assert "l3" in table and "first under the floor" in table and "earlier" in table
    assert "l0" not in table


def test_cli_min_sqnr_db(tmp_path, capsys):
    path = tmp_path / "lite.onnx"
    onnx.save(lite(), path)
    np.savez(tmp_path / "calib.npz", x=CALIB)
    args = [str(path), "--target", "asic:edge", "--calibration", str(tmp_path / "calib.npz"),
            "-o", str(tmp_path / "out")]
    assert main([*args, "--min-sqnr-db", "80"]) == 1
    err = capsys.readouterr().err
    assert "min_sqnr_db=80" in err and "<- first under the floor" in err  # the whole table
