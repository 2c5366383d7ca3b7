"""The command line: compile + export + report, IR dumps, bench, inspect."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
MLP = os.path.join(EXAMPLES, "mlp.onnx")


def sw2c(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sw2c.cli", *args], capture_output=True,
                          text=True, timeout=300)


def test_compile_exports_and_reports(tmp_path):
    proc = sw2c(MLP, "--target", "cpu", "-o", str(tmp_path / "out"), "--dump-ir",
                str(tmp_path / "ir"))
    assert proc.returncode == 0, proc.stderr
    for word in ("kernels", "GFLOP", "arena", "lower bound", "weights", "verified"):
        assert word in proc.stdout
    assert sorted(os.listdir(tmp_path / "out")) == ["libmlp.so", "mlp.h", "mlp.json"]
    dumps = sorted(os.listdir(tmp_path / "ir"))
    assert dumps[0] == "00-input.txt" and any("fuse" in d for d in dumps)


def test_bench_json():
    proc = sw2c("bench", MLP, "--seconds", "0.2", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["sw2c"]["median"] > 0 and result["onnxruntime"]["median"] > 0
    assert result["ratio"] == pytest.approx(result["sw2c"]["median"] /
                                            result["onnxruntime"]["median"])


def test_inspect_json_plot_and_onnx(tmp_path):
    plot, emitted = tmp_path / "plan.png", tmp_path / "optimized.onnx"
    proc = sw2c("inspect", os.path.join(EXAMPLES, "mobilenet_tiny.onnx"), "--json", "--plot",
                str(plot), "--emit-onnx", str(emitted))
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["arena_bytes"] >= plan["arena_lower_bound_bytes"] > 0
    assert plan["kernels"] and all("ops" in k for k in plan["kernels"])
    assert plot.stat().st_size > 10_000
    header = plot.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", header[16:24]) == (1000, 500)  # 10 x 5 inches at 100 dpi
    import onnx

    model = onnx.load(str(emitted))
    onnx.checker.check_model(model)
    kernels = [n for n in model.graph.node if n.domain == "sw2c"]
    assert len(kernels) == len(plan["kernels"])


def test_bad_input_shape_is_a_usage_error():
    proc = sw2c(MLP, "--input-shape", "input=1,x")
    assert proc.returncode == 2 and "NAME=D0,D1" in proc.stderr


DIGITS = os.path.join(EXAMPLES, "digits_cnn.onnx")
DIGITS_CALIB = os.path.join(EXAMPLES, "digits_calibration.npz")
ASIC = ("--target", "asic:tiny", "--calibration", DIGITS_CALIB, "--input-shape",
        "input=1,1,8,8")


def test_asic_compile_writes_c_and_qdq_and_the_layer_table(tmp_path):
    """The README's fixed-point command."""
    proc = sw2c(DIGITS, *ASIC, "-o", str(tmp_path / "out"), "--emit-qdq",
                str(tmp_path / "q.onnx"))
    assert proc.returncode == 0, proc.stderr
    for word in ("cycles", "uJ per inference", "SRAM", "bit-exact", "SQNR", "conv1", "max_pool"):
        assert word in proc.stdout
    assert any(method in proc.stdout for method in ("minmax", "percentile", "mse"))
    assert sorted(os.listdir(tmp_path / "out")) == ["digits_cnn.c", "digits_cnn.h",
                                                    "digits_cnn.json"]
    assert (tmp_path / "q.onnx").stat().st_size > 1000


def test_asic_bench_and_inspect():
    proc = sw2c("bench", DIGITS, *ASIC, "--json")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["cycles"] > 0 and r["energy_uj"] > 0 and r["output_sqnr_db"]["logits"] > 30
    assert r["arena_lower_bound_bytes"] <= r["arena_bytes"] <= r["sram_bytes"]
    proc = sw2c("inspect", DIGITS, *ASIC, "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    # the flatten's transpose folded into the classifier's weights: no data movement left
    assert [k["kind"] for k in doc["kernels"]] == ["conv", "max_pool", "conv", "conv"]
    assert all(b["offset"] + b["bytes"] <= doc["arena_bytes"] for b in doc["buffers"])


def test_asic_errors_are_one_line():
    proc = sw2c(DIGITS, "--target", "asic:nope", "--input-shape", "input=1,1,8,8")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "unknown asic target 'nope'" in proc.stderr
    proc = sw2c(MLP, "--emit-qdq", "x.onnx")
    assert proc.returncode == 1 and "--target asic" in proc.stderr
