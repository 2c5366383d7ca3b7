"""The float32 asin, acos, atan, sinh, cosh, asinh, acosh and atanh that sw2c supplies to a
freestanding cross build (``runtime/cross/libm.py``: zig's compiler-rt has none of them, so a
model using them used to fail to link), checked against numpy's float64 results rounded to
float32: within a few ulp, and C99's special values (domain errors are NaN, atanh(+-1) is
+-inf, signed zeros kept, NaN and infinities where numpy has them).

Runs in unicorn (Cortex-M4 with its FPU; RV32IMAC in soft float) and, with qemu-system-arm,
on the Cortex-M55; skips without the ``cross`` extra."""

from __future__ import annotations

import os

import numpy as np
import pytest
import sw2c
from onnx import TensorProto, helper
from sw2c.tests.onnx_util import make_model

NUMPY = {"Asin": np.arcsin, "Acos": np.arccos, "Atan": np.arctan, "Sinh": np.sinh,
         "Cosh": np.cosh, "Asinh": np.arcsinh, "Acosh": np.arccosh, "Atanh": np.arctanh}
MAX_ULP = 4  # measured: 2 (asin, atan, atanh), 3 (sinh, cosh near overflow), 1 otherwise
N = 1024


def _model():
    ops = list(NUMPY)
    nodes = [helper.make_node(op, ["a"], [op.lower()]) for op in ops]
    model = make_model(nodes, {"a": [N]}, [op.lower() for op in ops])
    for out in model.graph.output:
        out.CopyFrom(helper.make_tensor_value_info(out.name, TensorProto.FLOAT, [N]))
    return model


def _inputs() -> np.ndarray:
    """Every function's interesting ranges: [-1, 1], up to sinh's overflow (89.4), huge
    magnitudes, the reductions' boundaries and the special values."""
    rng = np.random.default_rng(0)
    special = [0.0, -0.0, 1.0, -1.0, 0.5, -0.5, np.inf, -np.inf, np.nan, 1e-30, -1e-30, 89.0,
               89.4, -89.5, 4096.0, 4097.0, 0.99999994, -0.99999994, 1.0000001, 2.4142137,
               0.41421357, 1e-5, 3e38]
    xs = np.concatenate([special, rng.uniform(-1, 1, 400), rng.uniform(-95, 95, 300),
                         np.exp(rng.uniform(-30, 40, 300)) * rng.choice([-1, 1], 300)])
    return np.resize(xs, N).astype(np.float32)


@pytest.mark.parametrize("target", ("cortex-m4", "rv32imac", "cortex-m55"))
def test_supplied_functions_match_numpy(target):
    for module in ("ziglang", "elftools", "unicorn"):
        pytest.importorskip(module)
    if target == "cortex-m55":
        from sw2c.runtime.cross.qemu import qemu_path

        if qemu_path() is None:
            if os.environ.get("SW2C_REQUIRE_QEMU") == "1":
                pytest.fail("SW2C_REQUIRE_QEMU=1 but qemu-system-arm is not on PATH")
            pytest.skip("qemu-system-arm is not installed")
    module = sw2c.compile(_model(), target=f"cpu:{target}", verify=False)  # links: no gaps
    xs = _inputs()
    for (op, fn), got in zip(NUMPY.items(), module(xs)):
        with np.errstate(all="ignore"):
            want = fn(xs.astype(np.float64)).astype(np.float32)
        assert np.array_equal(np.isnan(got), np.isnan(want)), op
        inf = np.isinf(want)
        np.testing.assert_array_equal(got[inf], want[inf], err_msg=op)
        assert np.isfinite(got[np.isfinite(want)]).all(), op
        zero = (xs == 0) & ~np.isnan(want)
        np.testing.assert_array_equal(np.signbit(got[zero]), np.signbit(want[zero]), op)
        fin = np.isfinite(want)
        ulp = np.abs(got[fin].astype(np.float64) - want[fin]) / np.spacing(np.abs(want[fin]))
        assert ulp.max() <= MAX_ULP, (op, float(ulp.max()), xs[fin][np.argmax(ulp)])
