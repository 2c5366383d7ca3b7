"""Profile mode (backends/cpu/profile.py): the same results as a normal build, one set of
counters per kernel, all counting after a run; `sw2c bench --per-kernel` reports every kernel.
No timing is asserted."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import sw2c
from sw2c.benchmarks import zoo
from sw2c.benchmarks.per_kernel import bench_per_kernel, format_per_kernel


def _convnet() -> onnx.ModelProto:
    """Two 3x3 convs big enough (38 M MACs each) to be split across a team, a residual add."""
    g = zoo.GraphBuilder("convnet", 0)
    x = g.relu(g.batchnorm(g.conv("x", "conv1", 8, 64, 3), "bn1", 64), "relu1")
    y = g.relu(g.batchnorm(g.conv(x, "conv2", 64, 64, 3), "bn2", 64), "relu2")
    y = g.add(x, y, "block")
    y = g.head(y, 64, 10)
    return g.model([1, 8, 32, 32], "x", y, [1, 10])


@pytest.mark.parametrize("threads", [1, 2])
def test_profile_mode_matches_normal_mode_and_counts_every_kernel(threads: int) -> None:
    model = _convnet()
    x = np.random.default_rng(0).standard_normal((1, 8, 32, 32), dtype=np.float32)
    normal = sw2c.compile(model, threads=threads)
    profiled = sw2c.compile(model, threads=threads, profile=True, verify=True)
    assert not hasattr(normal, "profile")
    assert profiled.report["threads"] == threads  # the convs are split at threads=2
    profiled.profile.reset()
    assert (profiled.profile.cycles() == 0).all()
    np.testing.assert_array_equal(profiled(x), normal(x))
    cycles = profiled.profile.cycles()
    assert cycles.shape == (profiled.report["kernels"], 3)
    assert (cycles > 0).all()
    assert (cycles[:, 1] <= cycles[:, 2]).all()  # thread 0's chunks are part of all chunks
    assert (profiled.profile.seconds() > 0).all()
    assert profiled.profile.ticks_per_second > 0


def test_profile_counters_accumulate_until_reset() -> None:
    module = sw2c.compile(zoo.mlp(), profile=True, verify=False)
    x = np.ones((1, 64), np.float32)
    module.profile.reset()
    module(x)
    once = module.profile.cycles()
    module(x)
    assert (module.profile.cycles() > once).all()


def test_bench_per_kernel_reports_every_kernel(tmp_path) -> None:
    path = tmp_path / "convnet.onnx"
    onnx.save(_convnet(), path)
    r = bench_per_kernel([str(path)], seconds=0.05, winograd="off")  # one GEMM per conv
    assert r["runs"] >= 5 and len(r["kernels"]) == sw2c.compile(
        _convnet(), verify=False, winograd="off").report["kernels"]
    times = [k["seconds"] for k in r["kernels"]]
    assert times == sorted(times, reverse=True) and min(times) > 0
    conv = max(r["kernels"], key=lambda k: k["macs"])
    assert conv["macs"] == 64 * 64 * 9 * 32 * 32 and conv["gflops"] > 0
    text = format_per_kernel(r, top=2)
    assert "total: " in text and "more kernels" in text and "waiting" in text


def test_bench_per_kernel_takes_zoo_names() -> None:
    r = bench_per_kernel(["mlp"], seconds=0.01)
    assert {k["kind"] for k in r["kernels"]} == {"matmul"} and r["model"] == "mlp"


def test_cli_bench_per_kernel(capsys) -> None:
    from sw2c.cli import _main

    assert _main(["bench", "mlp", "--per-kernel", "--seconds", "0.01", "--top", "1"]) == 0
    out = capsys.readouterr().out
    assert "GFLOP/s" in out and "%peak" in out and "2 more kernels" in out
    assert _main(["bench", "mlp", "--per-kernel", "--target", "asic"]) == 1
    assert "--per-kernel" in capsys.readouterr().err
