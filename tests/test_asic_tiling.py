"""Patch-based tiling (backends/asic/tiling.py): a model whose activations exceed the SRAM
compiles with its early layers computed tile by tile, bit-exact with the untiled program; when
no tiling fits, the error gives the numbers."""

from __future__ import annotations

import dataclasses
from math import prod
from pathlib import Path

import numpy as np
import onnx
import pytest
import sw2c
from onnx import TensorProto, helper
from sw2c.backends.asic import tiling
from sw2c.backends.asic.c_runner import CExport, find_compiler
from sw2c.backends.asic.plan import plan_program, plan_spilled
from sw2c.backends.asic.program import Kind
from sw2c.backends.asic.reference import run_reference
from sw2c.backends.asic.report import format_totals
from sw2c.backends.asic.schedule import Cost, schedule
from sw2c.backends.asic.target import load_target
from sw2c.benchmarks import zoo
from sw2c.errors import TargetError
from sw2c.runtime.inspect import plot_plan
from sw2c.runtime.simulator import Simulator
from sw2c.tests.onnx_util import make_model

RNG = np.random.default_rng(14)


def small_cnn(seed: int = 0) -> onnx.ModelProto:
    """A 3x24x24 input through the layers tiling must carry patch by patch: a padded 3x3 conv,
    a stride-2 depthwise conv, a 1x1 conv, a residual add, an average pool whose divisors
    vary with the position (count_include_pad=0), a sigmoid table, a max pool; then a global
    pool and a dense layer, which stay untiled."""
    rng = np.random.default_rng(seed)

    def w(*shape: int, s: float = 0.3) -> np.ndarray:
        return (rng.standard_normal(shape) * s).astype(np.float32)

    inits = {"w1": w(16, 3, 3, 3), "b1": w(16), "wd": w(16, 1, 3, 3), "bd": w(16),
             "wp": w(16, 16, 1, 1), "bp": w(16), "wf": w(16, 10), "shape": np.array([1, 16])}
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        n("Relu", ["c1"], ["r1"]),
        n("Conv", ["r1", "wd", "bd"], ["d1"], group=16, strides=[2, 2], pads=[1, 1, 1, 1]),
        n("Relu", ["d1"], ["r2"]),
        n("Conv", ["r2", "wp", "bp"], ["p1"]),
        n("Add", ["p1", "r2"], ["s1"]),
        n("AveragePool", ["s1"], ["a1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
          count_include_pad=0),
        n("Sigmoid", ["a1"], ["g1"]),
        n("MaxPool", ["g1"], ["m1"], kernel_shape=[2, 2], strides=[2, 2]),
        n("GlobalAveragePool", ["m1"], ["gap"]),
        n("Reshape", ["gap", "shape"], ["flat"]),
        n("MatMul", ["flat", "wf"], ["y"]),
    ]
    model = make_model(nodes, {"x": [1, 3, 24, 24]}, ["y"], inits)
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10]))
    return model


def _target(tmp_path: Path, sram: int, external: bool = False) -> str:
    """asic:mcu with ``sram`` bytes of activation SRAM, and its external RAM if
    ``external``."""
    text = Path(load_target("mcu").path).read_text()
    assert "external_bytes = 8388608" in text
    if not external:
        text = text.replace("external_bytes = 8388608", "")
    path = tmp_path / f"mcu_{sram}_{external}.toml"
    path.write_text(text.replace("sram_bytes = 65536", f"sram_bytes = {sram}"))
    return f"asic:{path}"


@pytest.fixture(scope="module")
def roomy(small, tmp_path_factory):
    """The same model and calibration on a large SRAM: the untiled program."""
    tmp = tmp_path_factory.mktemp("roomy")
    return sw2c.compile(small_cnn(), target=_target(tmp, 1 << 20), verify=False,
                        calibration=small.build.feeds)


def _calibration(shape: tuple[int, ...], n: int = 4) -> np.ndarray:
    return RNG.standard_normal((n, *shape[1:])).astype(np.float32)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """The small CNN compiled for a 6 KiB SRAM (its untiled arena is about 14 KiB)."""
    tmp = tmp_path_factory.mktemp("tiling")
    return sw2c.compile(small_cnn(), target=_target(tmp, 6144), verify=False,
                        calibration=_calibration((1, 3, 24, 24), 8))


def test_small_model_is_tiled_to_fit_and_bit_exact(small):
    b = small.build
    t = b.tiling
    assert t is not None and t.arena_before > 6144 >= t.arena_after == b.plan.arena_bytes
    assert t.extra_macs > 0  # the halo is recomputed
    # (cycles can go either way: smaller patches recompute, but their partial sums fit the
    # accumulator where a whole layer's spill or run in chunks)
    assert t.extra_cycles == sum(b.costs, Cost()).cycles - t.cycles_before
    kinds = {s.kind for s in b.program.steps}
    assert {Kind.SLICE, Kind.CONCAT} <= kinds
    r = small.report
    assert r["tiling"]["arena_after_bytes"] == r["arena_bytes"] <= r["sram_bytes"] == 6144
    assert r["tiling"]["extra_macs"] == r["macs"] - t.macs_before
    assert "tiling" in "\n".join(format_totals(r))


def test_the_plan_shows_the_tiles(small, tmp_path):
    """Each tile's steps in the plan (its JSON and its picture); a tile's patch buffers but
    its piece of the output die before the next tile starts."""
    plan, t = small.plan, small.build.tiling
    assert plan.tiles == t.tile_steps and len(plan.tiles) == prod(t.grid)
    assert plan.as_json()["tiles"] == [list(s) for s in t.tile_steps]
    for (_, last), (first, _) in zip(plan.tiles, plan.tiles[1:]):
        assert last < first
    patch = [b for b in plan.buffers if "@t0_0" in b.name]  # all but its output die in it
    assert len(patch) > 1 and sum(b.last <= plan.tiles[0][1] for b in patch) == len(patch) - 1
    pytest.importorskip("matplotlib")
    plot_plan(plan, tmp_path / "plan.png", "tiled")
    assert (tmp_path / "plan.png").stat().st_size > 0


def test_small_model_tiles_agree_with_the_untiled_program(small, roomy):
    """Every output code equal to the untiled program's, on the simulator and (where a C
    compiler exists) the C export."""
    assert roomy.build.tiling is None
    x = RNG.integers(-128, 128, (6, 1, 3, 24, 24), dtype=np.int8)
    for q in x:
        want = roomy.run_int8(q)
        np.testing.assert_array_equal(small.run_int8(q)[0], want[0])
        np.testing.assert_array_equal(run_reference(small.program, [q])["y"], want[0])
    cc, _ = find_compiler()
    if cc is None:
        pytest.skip("no C compiler")
    with CExport(small.program, small.plan, "tiled") as lib:
        for q in x:
            np.testing.assert_array_equal(lib.run_int8([q])[0], small.run_int8(q)[0])


@pytest.mark.parametrize("grid", [(2, 1), (1, 3), (3, 2), (5, 4)])
def test_any_grid_is_bit_exact(roomy, grid):
    """The rewrite itself on uneven grids (tiles of different sizes, border and inner), over
    the longest run it can tile: every layer but the global pool and the dense one."""
    p = roomy.program
    run = next(r for e in reversed(range(len(p.steps))) if (r := tiling.tileable(p, 0, e)))
    assert {p.steps[i].kind for i in range(run.start, run.end + 1)} >= {
        Kind.TRANSPOSE, Kind.CONV, Kind.DEPTHWISE, Kind.ADD, Kind.SUM_POOL, Kind.LUT,
        Kind.MAX_POOL}
    tiled, spans = tiling.rewrite(p, run, grid)
    assert len(spans) == grid[0] * grid[1]
    plan = plan_program(tiled)
    sim = Simulator(tiled, plan, schedule(tiled, roomy.build.target))
    for q in RNG.integers(-128, 128, (3, 1, 3, 24, 24), dtype=np.int8):
        want = run_reference(p, [q])["y"]
        np.testing.assert_array_equal(run_reference(tiled, [q])["y"], want)
        np.testing.assert_array_equal(sim.run([q])[0][0], want)


def test_no_tiling_fits_says_how_many_bytes(tmp_path):
    with pytest.raises(TargetError, match=r"needs [\d,]+ bytes of SRAM .* has 1,024; the best "
                       r"patch-based tiling needs (at least )?[\d,]+ bytes"):
        sw2c.compile(small_cnn(), target=_target(tmp_path, 1024), verify=False,
                     calibration=_calibration((1, 3, 24, 24)))


def test_what_no_tiling_fits_spills_to_external_ram(small, roomy, tmp_path):
    """With external RAM, the buffers that stay over the SRAM move there: the on-chip part
    fits, the outputs are the untiled program's, the traffic is priced."""
    m = sw2c.compile(small_cnn(), target=_target(tmp_path, 1024, external=True),
                     verify=False, calibration=small.build.feeds)
    plan, r = m.plan, m.report
    assert plan.spilled and plan.sram_bytes <= 1024 == r["sram_bytes"]
    assert r["arena_bytes"] == plan.sram_bytes and plan.external_bytes > 0
    far = plan.external_tensors()
    assert all(plan.offsets[n] >= plan.external_base >= 1024 for n in far)
    total = sum(m.build.costs, Cost())
    assert total.ext_bytes == r["spill"]["traffic_bytes"] > 0
    assert "spilled" in "\n".join(format_totals(r))
    x = RNG.integers(-128, 128, (3, 1, 3, 24, 24), dtype=np.int8)
    for q in x:
        np.testing.assert_array_equal(m.run_int8(q)[0], roomy.run_int8(q)[0])
    # the same program and plan without the external port: fewer cycles, less energy
    near = schedule(m.program, m.build.target)
    assert sum(near, Cost()).cycles < total.cycles
    t = m.build.target
    assert sum(near, Cost()).energy_pj(t) < total.energy_pj(t)
    if find_compiler()[0] is not None:
        with CExport(m.program, plan, "spilled") as lib:
            for q in x:
                np.testing.assert_array_equal(lib.run_int8([q])[0], m.run_int8(q)[0])


def test_a_model_that_fits_is_not_tiled():
    m = sw2c.compile(small_cnn(), target="asic:mcu", verify=False,
                     calibration=_calibration((1, 3, 24, 24)))
    assert m.build.tiling is None and "tiling" not in m.report
    assert not any("@" in s.output for s in m.program.steps)


def test_mobilenet_v2_96_fits_64_kib_by_tiling():
    """The issue's case: MobileNetV2 1.0 at 96x96 (a 276,480-byte layer-by-layer arena) on the
    MCU-class part with 64 KiB of SRAM, bit-exact with the untiled program."""
    model = zoo.mobilenet_v2(width=1.0, resolution=96)
    calib = _calibration((1, 3, 96, 96), 2)
    m = sw2c.compile(model, target="asic:mcu", verify=False, calibration=calib)
    t = m.build.tiling
    assert t is not None and t.arena_before == 276_480
    assert m.report["arena_bytes"] <= 65_536 == m.report["sram_bytes"]
    assert m.report["tiling"]["extra_macs"] > 0 and m.report["tiling"]["extra_cycles"] > 0
    assert sum(m.build.costs, Cost()).macs == t.macs_after
    for x in RNG.integers(-128, 128, (2, 1, 3, 96, 96), dtype=np.int8):
        want = run_reference(t.untiled, [x])[t.untiled.outputs[0]]
        np.testing.assert_array_equal(m.run_int8(x)[0], want)


def _spill_only(untiled, target) -> Cost:
    """The untiled program with whole tensors spilled until it fits (largest first)."""
    far = plan_spilled(untiled, target.sram_bytes)
    return sum(schedule(untiled, target, far.external_tensors()), Cost())


def test_tiling_plus_spilling_when_no_tiling_fits(small, roomy, tmp_path):
    """2 KiB: no tiling fits, so runs are tiled (more than one) and what stays over (the
    runs' entries and exits, read once a patch) spills: less external traffic and fewer
    cycles than spilling the untiled program, the outputs the untiled program's on the
    simulator and the C export, the report naming both."""
    m = sw2c.compile(small_cnn(), target=_target(tmp_path, 2048, external=True),
                     verify=False, calibration=small.build.feeds)
    b, plan, r = m.build, m.plan, m.report
    t = b.tiling
    assert t is not None and t.more and plan.spilled and plan.sram_bytes <= 2048
    assert len(plan.tiles) == sum(prod(x.grid) for x in (t, *t.more))
    total = sum(b.costs, Cost())
    alone = _spill_only(t.untiled, b.target)
    assert 0 < total.ext_bytes < alone.ext_bytes and total.cycles < alone.cycles
    assert r["spill"]["traffic_bytes"] == total.ext_bytes and r["spill"]["extra_cycles"] > 0
    text = "\n".join(format_totals(r))
    assert "tiling" in text and "spilled" in text and len(r["tiling"]["more_runs"]) == len(t.more)
    x = RNG.integers(-128, 128, (3, 1, 3, 24, 24), dtype=np.int8)
    for q in x:
        np.testing.assert_array_equal(m.run_int8(q)[0], roomy.run_int8(q)[0])
    if find_compiler()[0] is not None:
        with CExport(m.program, plan, "tiled_spilled") as lib:
            for q in x:
                np.testing.assert_array_equal(lib.run_int8([q])[0], m.run_int8(q)[0])


def test_partial_sums_stay_on_chip_when_a_conv_output_spills(roomy):
    """A conv whose int32 partial sums overflow the accumulator writes them to the SRAM
    wherever its result lives: spilling the result moves its int8 bytes, not the sums.
    (With unlimited SRAM ports, spilling them is faster than passes of fewer rows.)"""
    p = roomy.program
    t = dataclasses.replace(roomy.build.target, sram_bytes_per_cycle=None)
    i, step = next((i, s) for i, s in enumerate(p.steps)
                   if s.kind is Kind.CONV and s.window is not None)
    near = schedule(p, t)[i]
    far = schedule(p, t, frozenset({step.output}))[i]
    out = p.tensors[step.output].nbytes
    assert near.psum_spill > 0 and near.sram_write == out + near.psum_spill
    assert far.ext_bytes == out and far.sram_write == near.sram_write - out


def test_resnet18_fits_the_mcu_part_by_tiling_and_spilling():
    """The zoo's ResNet-18-style model on asic:mcu: no patch-based tiling fits 64 KiB (the
    halo of its 3x3 convs spans most of the input), so residual blocks are tiled and the
    tensors that stay over move to the external RAM, their traffic in the cycles and energy:
    far less of it than spilling the untiled program's tensors whole."""
    m = sw2c.compile(zoo.resnet(), target="asic:mcu", verify=False,
                     calibration=_calibration((1, 3, 112, 112), 2))
    r, t = m.report, m.build.tiling
    assert t is not None and m.plan.spilled
    assert r["arena_bytes"] <= 65_536 and r["spill"]["traffic_bytes"] > 0
    alone = _spill_only(t.untiled, m.build.target)
    assert sum(m.build.costs, Cost()).ext_bytes * 4 < alone.ext_bytes
    x = RNG.integers(-128, 128, (1, 3, 112, 112), dtype=np.int8)
    p = t.untiled
    np.testing.assert_array_equal(m.run_int8(x)[0], run_reference(p, [x])[p.outputs[0]])


def _one_channel_pool_model() -> onnx.ModelProto:
    """Fuzzer seed 32923: a 1-channel conv then an average pool whose output the lowering
    writes straight into the graph's NCHW output (with one channel, [N, C, H, W] holds the
    bytes of [N, H, W, C]): its axes 1 and 2 are not the pool's rows and columns."""
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w"], ["c"], kernel_shape=[4, 1], strides=[3, 3], pads=[0, 0, 1, 0]),
        n("AveragePool", ["c"], ["y"], kernel_shape=[1, 4], strides=[2, 1],
          count_include_pad=0),
    ]
    inits = {"w": (np.random.default_rng(3).standard_normal((1, 4, 4, 1)) * 0.3
                   ).astype(np.float32)}
    model = make_model(nodes, {"x": [1, 4, 14, 12]}, ["y"], inits)
    model.graph.output[0].CopyFrom(
        helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 2, 1]))
    return model


def test_a_step_whose_output_is_not_laid_out_by_space_is_not_tiled():
    """Every run the analysis accepts, in every grid, is bit-exact with the untiled program
    (the pool writing NCHW used to be tiled along its channel axis: codes differed)."""
    model = _one_channel_pool_model()
    m = sw2c.compile(model, target="asic", verify=False,
                     calibration=_calibration((1, 4, 14, 12)))
    p = m.program
    assert p.tensors[p.outputs[0]].shape == (1, 1, 2, 1)
    n = len(p.steps)
    runs = [r for s in range(n) for e in range(s, n) if (r := tiling.tileable(p, s, e))]
    assert runs  # the conv alone still tiles
    x = RNG.integers(-128, 128, (3, 1, 4, 14, 12), dtype=np.int8)
    for run in runs:
        y = p.tensors[run.exit]
        for grid in np.ndindex(*(min(3, y.shape[a]) for a in run.axes[run.exit])):
            grid = tuple(g + 1 for g in grid)
            if prod(grid) == 1:
                continue
            try:
                tiled, _ = tiling.rewrite(p, run, grid)
            except tiling.Untileable:
                continue
            for q in x:
                np.testing.assert_array_equal(run_reference(tiled, [q])[p.outputs[0]],
                                              run_reference(p, [q])[p.outputs[0]],
                                              err_msg=f"steps {run.start}..{run.end} {grid}")
