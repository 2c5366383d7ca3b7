"""The asic cost model against the reference simulators' figures (SCALE-Sim v3 cycles, ZigZag
energy) on every MAC-array layer of the zoo's ResNet-18-style and MobileNetV2-style models.

The figures are data: ``benchmarks/results/asic_reference.json``, written by
``benchmarks/asic_crosscheck.py`` (which runs the simulators in a virtual environment of its
own). A change to ``schedule.py`` that drifts from them fails here; no simulator runs.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from sw2c.backends.asic.schedule import gemm_cost
from sw2c.backends.asic.target import Target, load_target
from sw2c.errors import TargetError

REF = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "asic_reference.json"
COMPUTE_TOL, BANDWIDTH_TOL, ENERGY_TOL = 0.05, 0.10, 0.10


@pytest.fixture(scope="module")
def ref() -> dict[str, Any]:
    return json.loads(REF.read_text())


def _as_run(r: dict[str, Any]) -> Target:
    """The shipped target as the reference run saw it: the run's weight bandwidth and filter
    SRAM, and (as the runner gives SCALE-Sim's ifmap/ofmap buffers) unlimited SRAM ports."""
    t = dataclasses.replace(load_target(r["target"]), sram_bytes_per_cycle=None)
    if r.get("weight_bytes_per_cycle") is None:
        return dataclasses.replace(t, weight_bytes_per_cycle=None)
    return dataclasses.replace(t, weight_bytes_per_cycle=float(r["weight_bytes_per_cycle"]),
                               weight_buffer_bytes=1024 * r["filter_sram_kb"])


def _cycles(r: dict[str, Any]) -> tuple[int, int]:
    """(sw2c, SCALE-Sim) cycles of one run: the GEMM as the schedule prices it (requantization
    included, overlapped as the target says; no per-step overhead, which SCALE-Sim lacks)."""
    ours = gemm_cost(r["m"], r["k"], r["n"], _as_run(r)).cycles
    theirs = r["total_cycles"] if r["weight_bytes_per_cycle"] is None else \
        r["total_cycles_incl_prefetch"]
    return ours, theirs


def _outside(runs: list[dict[str, Any]], tol: float, figures: Any) -> list[str]:
    bad = []
    for r in runs:
        ours, theirs = figures(r)
        if abs(ours / theirs - 1) > tol:
            bad.append(f"{r['target']} M={r['m']} K={r['k']} N={r['n']} "
                       f"bw={r.get('weight_bytes_per_cycle')}: sw2c {ours:,.0f} vs {theirs:,.0f}"
                       f" ({ours / theirs:.3f}x)")
    return bad


def _ok(ref: dict[str, Any], tool: str) -> list[dict[str, Any]]:
    return [r for r in ref[tool] if "error" not in r]


def test_every_layer_of_both_models_has_a_compute_bound_reference(ref):
    shapes = {(s["m"], s["k"], s["n"]) for s in ref["layers"]}
    assert {s["model"] for s in ref["layers"]} == {"resnet18", "mobilenet_v2"}
    for target in ("tiny", "edge"):
        have = {(r["m"], r["k"], r["n"]) for r in _ok(ref, "scalesim")
                if r["target"] == target and r["weight_bytes_per_cycle"] is None}
        assert shapes <= have, f"{target}: no SCALE-Sim figure for {sorted(shapes - have)}"


def test_the_reference_targets_are_the_shipped_ones(ref):
    for name, cfg in ref["targets"].items():
        t = load_target(name)
        assert (cfg["rows"], cfg["cols"]) == (t.mac_rows, t.mac_cols)
        assert cfg["accumulator_bytes"] == t.accumulator_bytes
        assert cfg["energy_pj"]["accumulator_access"] == t.e_accumulator_access


def test_compute_bound_cycles_match_scalesim(ref):
    runs = [r for r in _ok(ref, "scalesim") if r["weight_bytes_per_cycle"] is None]
    assert runs
    bad = _outside(runs, COMPUTE_TOL, _cycles)
    assert not bad, "outside 5% of SCALE-Sim:\n" + "\n".join(bad)


def test_weight_bandwidth_cycles_match_scalesim(ref):
    runs = [r for r in _ok(ref, "scalesim") if r["weight_bytes_per_cycle"] is not None]
    assert {r["weight_bytes_per_cycle"] for r in runs} == {2, 4, 8}
    bad = _outside(runs, BANDWIDTH_TOL, _cycles)
    assert not bad, "outside 10% of SCALE-Sim:\n" + "\n".join(bad)


def test_energy_matches_zigzag(ref):
    runs = _ok(ref, "zigzag")
    if not runs:
        pytest.skip("no ZigZag figures in the reference file")

    def energy(r: dict[str, Any]) -> tuple[float, float]:
        t = load_target(r["target"])  # the same GEMM: no requantization, no biases
        return gemm_cost(r["m"], r["k"], r["n"], t, requant=False).energy_pj(t), r["energy_pj"]

    spills = [r for r in runs if _spills(r)]
    assert spills, "no reference layer overflows an accumulator: the chunked order is untested"
    bad = _outside(runs, ENERGY_TOL, energy)
    assert not bad, "outside 10% of ZigZag:\n" + "\n".join(bad)


def _spills(r: dict[str, Any]) -> bool:
    t = load_target(r["target"])
    return r["k"] > t.mac_rows and r["m"] * t.mac_cols * 4 > (t.accumulator_bytes or 0)


# --------------------------------------------------------------------------- the model itself


def test_weight_bandwidth_turns_into_cycles():
    t = load_target("edge")  # the classifier of ResNet-18: 512 KB of weights, one row
    fast = gemm_cost(1, 512, 1000, dataclasses.replace(t, weight_bytes_per_cycle=None))
    slow = gemm_cost(1, 512, 1000, dataclasses.replace(t, weight_bytes_per_cycle=2.0))
    assert fast.cycles == 32 * 63 * (1 + 2 * 16 + 16 - 2) - 1  # SCALE-Sim's count
    assert slow.cycles >= 512 * 1000 // 2  # every weight byte crosses the 2 B/cycle port


def test_requantization_overlaps_the_array_only_where_the_target_says():
    t = dataclasses.replace(load_target("edge"), weight_bytes_per_cycle=None)
    apart = dataclasses.replace(t, vector_overlaps_mac=False)
    m, k, n = 1024, 16, 96
    assert gemm_cost(m, k, n, t).cycles == gemm_cost(m, k, n, t, requant=False).cycles
    assert gemm_cost(m, k, n, apart).cycles == \
        gemm_cost(m, k, n, t, requant=False).cycles + m * n // t.vector_lanes


def test_partial_sums_spill_to_sram_when_the_accumulator_is_too_small():
    t = load_target("edge")
    fits = gemm_cost(196, 576, 128, t)
    small = dataclasses.replace(t, accumulator_bytes=1024)
    spills = gemm_cost(196, 576, 128, small)  # chunks of 16 rows would load 13x the tiles
    assert fits.acc_bytes == spills.acc_bytes == 2 * 196 * 128 + 8 * 196 * 36 * 128
    assert spills.sram_write - fits.sram_write == spills.psum_spill == 4 * 196 * 35 * 128
    assert fits.psum_spill == 0 and spills.energy_pj(t) > fits.energy_pj(t)


def test_overflowing_partial_sums_take_the_faster_order():
    """tiny's first layers: 1024 rows x 8 columns of int32 sums overflow its 8 KiB
    accumulator. Through its 16 B/cycle SRAM port, spilling them costs more cycles than
    four passes of 256 rows re-reading the weights (ZigZag's order), and more energy; with
    unlimited ports (SCALE-Sim's view), the one pass is faster."""
    t = load_target("tiny")
    m, k, n = 1024, 16, 8
    chunked = gemm_cost(m, k, n, t, requant=False)
    assert chunked.psum_spill == 0 and chunked.weight_read == 4 * k * n
    assert chunked.cycles >= 4 * (2 * (256 + t.tile_load_cycles + 8 + 8 - 2) - 1)
    wide = dataclasses.replace(t, sram_bytes_per_cycle=None, weight_bytes_per_cycle=None)
    one_pass = gemm_cost(m, k, n, wide, requant=False)
    assert one_pass.psum_spill == 4 * m * n and one_pass.weight_read == k * n
    assert one_pass.cycles == 2 * (m + t.tile_load_cycles + 8 + 8 - 2) - 1 < chunked.cycles
    spilled_here = dataclasses.replace(one_pass, cycles=0)
    assert chunked.energy_pj(t) < spilled_here.energy_pj(t)


def test_older_target_files_without_the_new_fields_still_load(tmp_path):
    old = tmp_path / "old.toml"
    lines = [ln for ln in Path(load_target("edge").path).read_text().splitlines()
             if not ln.startswith(("weight_bytes_per_cycle", "sram_bytes_per_cycle",
                                   "weight_buffer_bytes", "accumulator", "vector_overlaps",
                                   "weight_tile_load"))]
    old.write_text("\n".join(lines))
    t = load_target(str(old))
    assert t.weight_bytes_per_cycle is None and t.accumulator_bytes is None
    assert t.tile_load_cycles == t.mac_rows and t.weight_buffer == 2 * 16 * 16
    assert not t.vector_overlaps_mac and gemm_cost(16, 32, 32, t).acc_bytes == 0
    bad = tmp_path / "bad.toml"
    bad.write_text(Path(load_target("edge").path).read_text().replace(
        "vector_overlaps_mac = true", "vector_overlaps_mac = 1"))
    with pytest.raises(TargetError, match="vector_overlaps_mac must be true or false"):
        load_target(str(bad))
