"""The asic target's report: totals for the target and one row per kernel."""

from __future__ import annotations

from typing import Any

from .build import AsicBuild, layer_accuracy
from .lower import softmax_params
from .program import MAC_ARRAY, Kind
from .schedule import Cost, schedule


def totals(b: AsicBuild) -> dict[str, Any]:
    t = b.target
    total = sum(b.costs, Cost())
    return {
        "target": f"asic:{t.name}",
        "target_description": t.description,
        "cycles": total.cycles,
        "latency_us": round(total.cycles / t.clock_mhz, 3),
        "energy_uj": round(total.energy_pj(t) / 1e6, 4),
        "macs": total.macs,
        "arena_bytes": b.plan.sram_bytes,
        "arena_lower_bound_bytes": b.plan.lower_bound_bytes,
        "arena_naive_bytes": b.plan.naive_bytes,
        "sram_bytes": t.sram_bytes,
        "weights_bytes": b.program.weights_bytes,
        "weight_memory_bytes": t.weight_bytes,
        "kernels": len(b.program.steps),
        "int16_kernels": sum(b.program.tensors[s.output].bits == 16 for s in b.program.steps),
        "calibration_samples": len(b.feeds),
        **({"tiling": b.tiling.as_json()} if b.tiling else {}),
        **({"spill": spill_json(b, total)} if b.plan.spilled else {}),
    }


def spill_json(b: AsicBuild, total: Cost) -> dict[str, Any]:
    """What the plan moved to external RAM, the traffic it costs and the cycles that traffic
    adds (against the same program with every tensor on chip)."""
    t = b.target
    near = sum(schedule(b.program, t), Cost())
    return {"external_bytes": b.plan.external_bytes, "tensors": len(b.plan.spilled),
            "names": sorted(b.plan.spilled), "traffic_bytes": total.ext_bytes,
            "energy_uj": round(total.ext_bytes * t.e_external_byte / 1e6, 4),
            "extra_cycles": total.cycles - near.cycles}


def layers(b: AsicBuild) -> list[dict[str, Any]]:
    """Per kernel, in the static schedule's order: origin, kind, the unit it runs on, its start
    cycle, output scale/zero point, SQNR vs float, cycles, MACs, energy."""
    accuracy = layer_accuracy(b)
    rows = []
    start = 0
    for step, cost in zip(b.program.steps, b.costs):
        y = b.program.tensors[step.output]
        q = b.qparams.get(step.output)
        rows.append({
            "name": step.origin, "kind": step.kind.value, "output": y.name,
            "unit": "mac_array" if step.kind in MAC_ARRAY else "vector", "start_cycle": start,
            "shape": list(y.shape), "scale": y.scale, "zero_point": y.zero_point,
            "bits": y.bits, "precision": f"int{y.bits}",
            "calibration": softmax_params(q).method if q and step.kind is Kind.SOFTMAX
            else q.method if q else "constant" if step.kind is Kind.CONST else "inherited",
            "sqnr_db": accuracy.get(y.name), "cycles": cost.cycles, "macs": cost.macs,
            "energy_uj": round(cost.energy_pj(b.target) / 1e6, 5),
        })
        start += cost.cycles
    return rows


def format_layers(rows: list[dict[str, Any]]) -> str:
    head = f"{'kernel':<28} {'kind':<10} {'prec':<5} {'scale':>10} {'zp':>5} {'SQNR dB':>8} " \
           f"{'cycles':>10}" \
           f" {'MACs':>12} {'uJ':>9}  calibration"
    lines = [head]
    for r in rows:
        sq = "exact" if r["sqnr_db"] == float("inf") else (
            "-" if r["sqnr_db"] is None else f"{r['sqnr_db']:.1f}")
        lines.append(f"{r['name'][:28]:<28} {r['kind']:<10} {r.get('precision', 'int8'):<5} "
                     f"{r['scale']:>10.4g} "
                     f"{r['zero_point']:>5} {sq:>8} {r['cycles']:>10,} {r['macs']:>12,} "
                     f"{r['energy_uj']:>9.3f}  {r['calibration']}")
    return "\n".join(lines)


def format_totals(r: dict[str, Any]) -> list[str]:
    """The per-inference figures of a report (compile or bench), one line each."""
    lines = [
        f"  cycles        {r['cycles']:,} per inference = {r['latency_us']:,.1f} us "
        f"({r['macs'] / 1e6:.2f} M MACs, {r['kernels']} kernels)",
        f"  energy        {r['energy_uj']:.4g} uJ per inference",
        f"  arena         {r['arena_bytes']:,} bytes of {r['sram_bytes']:,} SRAM (lower bound "
        f"{r['arena_lower_bound_bytes']:,}, naive {r['arena_naive_bytes']:,})",
        f"  weights       {r['weights_bytes']:,} bytes of {r['weight_memory_bytes']:,} weight "
        "memory",
    ]
    if "tiling" in r:  # the recompute patch-based tiling costs (tiling.py)
        t = r["tiling"]
        lines.append(f"  tiling        {t['layers']} steps ({t['run'][0]} .. {t['run'][1]}) in "
                     f"{'x'.join(map(str, t['grid']))} patches: arena "
                     f"{t['arena_before_bytes']:,} -> {t['arena_after_bytes']:,} bytes; "
                     f"recompute {t['extra_macs']:+,} MACs ({t['extra_macs_pct']:+}%), "
                     f"{t['extra_cycles']:+,} cycles ({t['extra_cycles_pct']:+}%)"
                     + (f" over all {1 + len(t['more_runs'])} runs" if "more_runs" in t else ""))
        for m in t.get("more_runs", ()):  # tiling plus spilling: further runs (spill.py)
            lines.append(f"  and           {m['layers']} steps ({m['run'][0]} .. {m['run'][1]})"
                         f" in {'x'.join(map(str, m['grid']))} patches: "
                         f"{m['extra_macs']:+,} MACs, {m['extra_cycles']:+,} cycles")
    if "spill" in r:  # activations in external RAM (plan.plan_spilled)
        x = r["spill"]
        lines.append(f"  spilled       {x['tensors']} tensors to external RAM "
                     f"({x['external_bytes']:,} bytes): {x['traffic_bytes']:,} bytes moved, "
                     f"{x.get('extra_cycles', 0):+,} cycles, {x['energy_uj']:.4g} uJ")
    if "output_sqnr_db" in r:
        sq = ", ".join(f"{n} {v:.1f} dB" for n, v in r["output_sqnr_db"].items())
        wide = r.get("int16_kernels", 0)
        label = "int8" if not wide else "int16" if wide == r["kernels"] else "mixed"
        lines.append(f"  {label + ' vs fp32':<14}output SQNR {sq} ({r['calibration_samples']} "
                     "calibration samples)")
    return lines
