"""`verify=True`: run the compiled module once against onnxruntime on random inputs."""

from __future__ import annotations

import os

import numpy as np
import onnx

from ..errors import VerificationError
from .module import Module

RTOL = 1e-3


def reference_session(model: onnx.ModelProto | str | os.PathLike, threads: int = 1):
    """An onnxruntime session on ``model``; give a path for models over protobuf's 2 GB limit
    (onnxruntime then reads their external data itself)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else os.fspath(model)
    return ort.InferenceSession(source, so, providers=["CPUExecutionProvider"])


def random_feeds(module: Module, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {n: rng.standard_normal(s).astype(np.float32) for n, s, _ in module.inputs}


def relative_error(got: np.ndarray, ref: np.ndarray) -> float:
    """max |got - ref| / max(|ref|, tiny): a scale-free figure for reports."""
    scale = max(float(np.max(np.abs(ref), initial=0.0)), 1e-30)
    return float(np.max(np.abs(got.astype(np.float64) - ref), initial=0.0)) / scale


def verify_module(module: Module, model: onnx.ModelProto | str | os.PathLike,
                  seed: int = 0) -> float:
    """Compare with onnxruntime; raise VerificationError on disagreement. Returns the largest
    relative error over the outputs."""
    feeds = random_feeds(module, seed)
    ref = reference_session(model).run([n for n, _, _ in module.outputs], feeds)
    got = module.run(feeds)
    worst = 0.0
    for (name, _, _), r in zip(module.outputs, ref):
        r = np.asarray(r, dtype=np.float64)
        g = got[name]
        scale = float(np.max(np.abs(r), initial=0.0))
        ok = np.allclose(g, r, rtol=RTOL, atol=RTOL * max(scale, 1e-6), equal_nan=True)
        err = relative_error(g, r)
        worst = max(worst, err)
        if not ok:
            raise VerificationError(
                f"output '{name}' differs from onnxruntime (max relative error {err:.2e} > "
                f"{RTOL:g}): a miscompile — please report it with the model; "
                "compile with verify=False to bypass")
    return worst


def verify_asic(module, model: onnx.ModelProto | str | os.PathLike, samples: int = 8) -> None:
    """The asic target: the simulator must equal the integer reference bit for bit (else
    VerificationError); the int8 outputs' SQNR against onnxruntime's fp32 on the calibration
    feeds is reported, not raised (quantization error is not a miscompile)."""
    from ..backends.asic.build import Sqnr
    from ..backends.asic.reference import quantize_inputs, run_reference

    b = module.build
    p = b.program
    feeds = b.feeds[:samples] + [random_feeds(module, seed) for seed in range(2)]
    for i, feed in enumerate(feeds):
        q = quantize_inputs(p, [feed[n] for n in p.inputs])
        want = run_reference(p, q)
        got = module.run_int8(q)
        for name, g in zip(p.outputs, got):
            if not np.array_equal(g, want[name]):
                bad = int(np.sum(g != want[name]))
                raise VerificationError(
                    f"output '{name}': the simulator differs from the integer reference in "
                    f"{bad} element(s) on verification input {i}: a miscompile — please report "
                    "it with the model; compile with verify=False to bypass")
    session = reference_session(model)
    names = [n for n, _, _ in module.outputs]
    accuracy = Sqnr()
    for feed in b.feeds[:samples]:
        ref = session.run(names, {n: feed[n] for n, _, _ in module.inputs})
        got = module.run(feed)
        for n, r in zip(names, ref):
            accuracy.add(n, np.reshape(r, got[n].shape), got[n])
    module.report["verified_inputs"] = len(feeds)
    module.report["output_sqnr_db"] = accuracy.db()
