"""The float32 transcendentals (backends/cpu/math.py: branch-free polynomials, no libm call per
lane) against float64 numpy over the whole float32 range, through one-node ONNX models.

Each function is swept over every 4096th float32 bit pattern of both signs, the specials, and a
dense sample of the region where it is not trivially 0, 1, x or inf. Results that are normal
floats are measured in ulps; denormal results in absolute terms; inf, 0 and NaN results, and
every special input's result, must be numpy's exactly (sign of zero included).

Measured max error over every 1024th bit pattern plus the dense regions (this host, AVX-512
and FMA): exp 0.97 ulp, log 0.81, tanh 2.40, sigmoid 2.13, erf 1.26, softplus (log1p) 1.63,
elu (expm1) 0.90; denormal results within 1.05e-45 (0.75 of the smallest denormal).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import sw2c
from sw2c.tests.onnx_util import node_model, with_output_shapes
from sw2c.tests.ulp_util import SPECIALS, TINY, f64, sweep, ulps


def _sigmoid(x: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _elu(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x, np.expm1(x))


def _dense(lo: float, hi: float, n: int = 100_001) -> np.ndarray:
    return np.linspace(lo, hi, n, dtype=np.float32)


POWERS_OF_TWO = np.ldexp(np.float32(1), np.arange(-149, 128)).astype(np.float32)
# op: (float64 reference, dense regions, ulp bound, absolute bound on denormal results)
CASES = {
    "Exp": (np.exp, [_dense(-104.5, 89.0), _dense(-1, 1)], 1.0, 1.5e-45),
    "Log": (np.log, [_dense(0, 4), _dense(0.99, 1.01), POWERS_OF_TWO], 1.0, 0.0),
    "Tanh": (np.tanh, [_dense(-10, 10), _dense(-0.6, 0.6)], 2.5, 1.5e-45),
    "Sigmoid": (_sigmoid, [_dense(-104, 20), _dense(-2, 2)], 2.5, 1.5e-45),
    "Erf": (lambda x: f64(math.erf, x), [_dense(-4, 4)], 1.5, 1.5e-45),
    "Softplus": (lambda x: np.logaddexp(0.0, x), [_dense(-104, 20), _dense(-1, 1)], 2.0, 1.5e-45),
    "Elu": (_elu, [_dense(-20, 0), -np.logspace(-40, 1, 100_001).astype(np.float32)], 1.0,
            1.5e-45),
}


def _run(op: str, x: np.ndarray) -> np.ndarray:
    model = with_output_shapes(node_model(op, {"x": [x.size]}, opset=17), [x])
    return sw2c.compile(model, threads=1, verify=False).run({"x": x})["y0"]


@pytest.mark.parametrize("op", CASES)
def test_within_bound_over_whole_float32_range(op):
    ref_fn, dense, bound, denormal_bound = CASES[op]
    x = np.concatenate([sweep(12), *dense])
    got = _run(op, x)
    with np.errstate(all="ignore"):
        ref = ref_fn(x.astype(np.float64))
        want = ref.astype(np.float32)  # the correctly rounded float32 result
    nan = np.isnan(want)
    assert (np.isnan(got) == nan).all(), x[np.isnan(got) != nan][:5]
    exact = ~nan & ((want == 0) | np.isinf(want) | np.isin(x, SPECIALS[~np.isnan(SPECIALS)])
                    & (np.isinf(x) | (x == 0)))
    assert (got[exact].view(np.uint32) == want[exact].view(np.uint32)).all(), \
        list(zip(x[exact][got[exact] != want[exact]], got[exact][got[exact] != want[exact]]))
    normal = ~nan & ~exact & (np.abs(want) >= TINY)
    err = ulps(got[normal], ref[normal])
    assert err.max() <= bound, (err.max(), x[normal][err.argmax()])
    tiny = ~nan & ~exact & (np.abs(want) < TINY)
    if tiny.any():
        assert np.abs(got[tiny] - ref[tiny]).max() <= denormal_bound, x[tiny][
            np.abs(got[tiny] - ref[tiny]).argmax()]


def test_log_specials():
    """log(±0) = -inf, log(x < 0) = NaN, log(inf) = inf, NaN in NaN out, denormals finite."""
    x = np.float32([0.0, -0.0, -1.0, -np.inf, np.inf, np.nan, 1e-45, 1.0])
    got = _run("Log", x)
    assert got[:2].tolist() == [-np.inf, -np.inf] and np.isnan(got[[2, 3, 5]]).all()
    assert got[4] == np.inf and got[6] == np.float32(np.log(np.float64(x[6]))) and got[7] == 0.0
