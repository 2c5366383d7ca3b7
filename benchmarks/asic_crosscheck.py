"""Cross-check the asic cost model against the reference simulators: SCALE-Sim v3 and ZigZag.

    python -m sw2c.benchmarks.asic_crosscheck [--jobs 2] [--only scalesim|zigzag] [--resume]
    python -m sw2c.benchmarks.asic_crosscheck --table   # the README's table

Takes the GEMM shape (M = output pixels, K = kh*kw*cin, N = cout) of every layer the zoo's
ResNet-18-style and MobileNetV2-style models run on the MAC array, and runs each unique shape
through SCALE-Sim (weight stationary, on each shipped target's array) compute-bound and with
a weight bandwidth of 2, 4 and 8 bytes/cycle, and through ZigZag for its energy on each
shipped target's memory hierarchy. The simulators live in a virtual environment of their own
(``~/.cache/sw2c-xcheck``: SCALE-Sim 3.0.0 needs numpy < 2.3), made on first use from PyPI;
this file is also the worker that runs inside it (``--worker``, which imports no sw2c).
Writes ``results/asic_reference.json``, which ``tests/test_asic_crosscheck.py`` compares with
the schedule's figures. A run that fails or times out is recorded with its error, not
dropped. A full run takes about an hour on one core (SCALE-Sim simulates every cycle of the
largest ResNet layers on the 8x8 array, 1.4 M of them).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "asic_reference.json"
VENV = Path(os.environ.get("SW2C_XCHECK_VENV", Path.home() / ".cache" / "sw2c-xcheck"))
PINS = ("scalesim==3.0.0", "numpy<2.3", "zigzag-dse", "six")  # zigzag imports six undeclared
MODELS = ("resnet18", "mobilenet_v2")
TARGETS = ("tiny", "edge")
BANDWIDTHS = (None, 2, 4, 8)  # weight bytes per cycle; None: compute-bound
WIDE = 1024  # bytes/cycle for the activation buffers: never the bottleneck

# --------------------------------------------------------------------------- driver (sw2c side)


def layer_shapes() -> list[dict[str, Any]]:
    """Every MAC-array layer of the models as {model, layer, m, k, n}, from the int8 program
    the asic target builds (the GEMM shapes do not depend on the target)."""
    import warnings

    from ..backends.asic.build import build
    from ..backends.asic.program import Kind
    from ..backends.asic.target import load_target
    from ..frontend import import_model
    from . import zoo

    rows = []
    for name in MODELS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # random calibration inputs
            b = build(import_model(zoo.get(name)), load_target("edge"), None)
        for s in b.program.steps:
            if s.kind is Kind.CONV:
                k, n = s.consts["weights"].shape
                m = b.program.tensors[s.output].size // n
                rows.append({"model": name, "layer": s.origin, "m": m, "k": k, "n": n})
    return rows


def target_configs() -> dict[str, dict[str, Any]]:
    """What the simulators are told about each shipped target (from its TOML file)."""
    from ..backends.asic.target import load_target

    out = {}
    for name in TARGETS:
        t = load_target(name)
        out[name] = {
            "rows": t.mac_rows, "cols": t.mac_cols, "sram_bytes": t.sram_bytes,
            "weight_buffer_bytes": t.weight_buffer_bytes,
            "accumulator_bytes": t.accumulator_bytes,
            "energy_pj": {"mac": t.e_mac, "sram_byte": t.e_sram_byte,
                          "weight_byte": t.e_weight_byte,
                          "accumulator_access": t.e_accumulator_access},
        }
    return out


def ensure_venv() -> Path:
    """The simulators' own Python, installing them on first use."""
    py = VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    probe = subprocess.run([str(py), "-c", "import scalesim, zigzag.api"], capture_output=True)
    if probe.returncode:
        subprocess.run([str(py), "-m", "pip", "install", "-q", *PINS], check=True)
    return py


def versions(py: Path) -> dict[str, str]:
    code = ("import importlib.metadata as m, json; print(json.dumps({p: m.version(p) for p in "
            "('scalesim', 'zigzag-dse', 'numpy')}))")
    return json.loads(subprocess.run([str(py), "-c", code], capture_output=True, text=True,
                                     check=True).stdout)


def run_job(py: Path, job: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One simulator run in the venv; failures come back as {"error": ...}."""
    try:
        res = subprocess.run([str(py), str(Path(__file__)), "--worker", json.dumps(job)],
                             capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**job, "error": f"timed out after {timeout:.0f} s"}
    lines = res.stdout.strip().splitlines()
    if res.returncode or not lines:
        tail = (res.stderr.strip().splitlines() or ["no output"])[-1]
        return {**job, "error": tail[:300]}
    return {**job, **json.loads(lines[-1])}


def jobs_for(shapes: list[dict[str, Any]], cfgs: dict[str, Any],
             tools: tuple[str, ...]) -> list[dict[str, Any]]:
    unique = sorted({(s["m"], s["k"], s["n"]) for s in shapes})
    jobs = []
    for m, k, n in unique:
        for tname, cfg in cfgs.items():
            for bw in BANDWIDTHS if "scalesim" in tools else ():
                jobs.append({"tool": "scalesim", "target": tname, "m": m, "k": k, "n": n,
                             "weight_bytes_per_cycle": bw, "config": cfg})
            if "zigzag" in tools:
                jobs.append({"tool": "zigzag", "target": tname, "m": m, "k": k, "n": n,
                             "config": cfg})
    # compute-bound first, then cheapest first (simulated cycles ~ M * tiles), so a time
    # limit cuts the largest bandwidth runs
    return sorted(jobs, key=lambda j: (j.get("weight_bytes_per_cycle") is not None,
                                       (j["m"] + 3 * j["config"]["rows"]) * j["k"] * j["n"]
                                       / j["config"]["rows"] ** 2))


def _key(run: dict[str, Any]) -> tuple:
    return (run["tool"], run["target"], run["m"], run["k"], run["n"],
            run.get("weight_bytes_per_cycle"))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=1200.0, help="seconds per simulator run")
    ap.add_argument("--only", choices=("scalesim", "zigzag"),
                    help="run one tool, keeping the other's figures from the existing file")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--resume", action="store_true",
                    help="keep the figures already in --out, run only the missing ones")
    ap.add_argument("--table", action="store_true",
                    help="print the README's sw2c vs SCALE-Sim vs ZigZag table from --out")
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if args.table:
        print(table(json.loads(args.out.read_text())))
        return
    shapes, cfgs = layer_shapes(), target_configs()
    py = ensure_venv()
    tools = versions(py)
    run = (args.only,) if args.only else ("scalesim", "zigzag")
    jobs = jobs_for(shapes, cfgs, run)
    old = json.loads(args.out.read_text()) if args.out.exists() else {}
    results: list[dict[str, Any]] = []
    if args.resume:
        results = [r for tool in run for r in old.get(tool, []) if "error" not in r]
        have = {_key(r) for r in results}
        jobs = [j for j in jobs if _key(j) not in have]
    print(f"{len(shapes)} layers, {len(jobs)} simulator runs", flush=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        for r in pool.map(lambda j: run_job(py, j, args.timeout), jobs):
            r.pop("config")
            r["version"] = tools["scalesim" if r["tool"] == "scalesim" else "zigzag-dse"]
            results.append(r)
            print(json.dumps(r), flush=True)
            write(args.out, shapes, cfgs, tools, results, run, old)  # a partial run counts
    print(f"wrote {args.out}")


def write(out: Path, shapes: list, cfgs: dict, tools: dict, results: list, run: tuple,
          old: dict) -> None:
    doc = {
        "about": "Reference figures for tests/test_asic_crosscheck.py, written by "
                 "benchmarks/asic_crosscheck.py. Cycles: SCALE-Sim (weight stationary; "
                 "compute-bound: 'total_cycles'; with a weight bandwidth: "
                 "'total_cycles_incl_prefetch', the weights' initial fill included, with a "
                 "filter SRAM of 'filter_sram_kb' holding them all). "
                 "Energy: ZigZag, pJ per layer. Each run names its tool version.",
        "tools": tools, "targets": cfgs, "layers": shapes,
    }
    for tool in ("scalesim", "zigzag"):
        doc[tool] = [r for r in results if r["tool"] == tool] if tool in run else old.get(
            tool, [])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")


def sw2c_figures(run: dict[str, Any]) -> tuple[float, float]:
    """(sw2c's figure, the reference's) for one reference run: cycles of the GEMM as the
    schedule prices it on the target as the run saw it (the run's weight bandwidth and filter
    SRAM, wide activation ports), or energy (no requantization or biases, as ZigZag's GEMM)."""
    import dataclasses

    from ..backends.asic.schedule import gemm_cost
    from ..backends.asic.target import load_target

    t = dataclasses.replace(load_target(run["target"]), sram_bytes_per_cycle=None)
    m, k, n = run["m"], run["k"], run["n"]
    if run["tool"] == "zigzag":
        t = load_target(run["target"])
        return gemm_cost(m, k, n, t, requant=False).energy_pj(t), run["energy_pj"]
    bw = run["weight_bytes_per_cycle"]
    if bw is None:
        t = dataclasses.replace(t, weight_bytes_per_cycle=None)
        return gemm_cost(m, k, n, t).cycles, run["total_cycles"]
    t = dataclasses.replace(t, weight_bytes_per_cycle=float(bw),
                            weight_buffer_bytes=1024 * run["filter_sram_kb"])
    return gemm_cost(m, k, n, t).cycles, run["total_cycles_incl_prefetch"]


def table(doc: dict[str, Any]) -> str:
    """Per model and target: the layers' summed figures, sw2c / reference, and the worst
    layer's ratio (over the layers the reference has a figure for)."""
    lines = ["| model | target | figure | sw2c | reference | ratio | layers: worst ratio |",
             "|---|---|---|---:|---:|---:|---:|"]
    for model in MODELS:
        layers = [(s["m"], s["k"], s["n"]) for s in doc["layers"] if s["model"] == model]
        for target in TARGETS:
            for label, tool, bw in (("cycles, compute-bound", "scalesim", None),
                                    ("cycles, weights at 4 B/cycle", "scalesim", 4),
                                    ("cycles, weights at 2 B/cycle", "scalesim", 2),
                                    ("energy (uJ)", "zigzag", None)):
                runs = {(r["m"], r["k"], r["n"]): r for r in doc[tool] if "error" not in r
                        and r["target"] == target and r.get("weight_bytes_per_cycle") == bw}
                present = [shape for shape in layers if shape in runs]
                if not present:
                    continue
                if len(present) < len(layers):
                    label += f" ({len(present)} of {len(layers)} layers)"
                pairs = [sw2c_figures(runs[shape]) for shape in present]
                ours, ref = sum(p[0] for p in pairs), sum(p[1] for p in pairs)
                worst = max((p[0] / p[1] for p in pairs), key=lambda x: abs(x - 1))
                fmt = (lambda x: f"{x / 1e6:,.1f}") if tool == "zigzag" else (
                    lambda x: f"{x:,.0f}")
                lines.append(f"| {model} | {target} | {label} | {fmt(ours)} | {fmt(ref)} | "
                             f"{ours / ref:.3f} | {worst:.3f} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- worker (venv side)

SCALESIM_CFG = """[general]
run_name = {name}

[architecture_presets]
ArrayHeight : {rows}
ArrayWidth : {cols}
IfmapSramSzkB : {act_kb}
FilterSramSzkB : {weight_kb}
OfmapSramSzkB : {act_kb}
IfmapOffset : 0
FilterOffset : 10000000
OfmapOffset : 20000000
Bandwidth : {wide}
Dataflow : ws
ReadRequestBuffer : 32
WriteRequestBuffer : 32

[layout]
IfmapCustomLayout : False
IfmapSRAMBankBandwidth : {wide}
IfmapSRAMBankNum : 1
IfmapSRAMBankPort : 2
FilterCustomLayout : False
FilterSRAMBankBandwidth : {weight_bw}
FilterSRAMBankNum : 1
FilterSRAMBankPort : 2

[sparsity]
SparsitySupport : false
SparseRep : ellpack_block
OptimizedMapping : false
BlockSize : 8
RandomNumberGeneratorSeed : 40

[run_presets]
InterfaceBandwidth : {mode}
UseRamulatorTrace : False
"""


def worker(job: dict[str, Any]) -> dict[str, Any]:
    return scalesim_run(job) if job["tool"] == "scalesim" else zigzag_run(job)


def filter_kb(job: dict[str, Any]) -> int:
    """SCALE-Sim's filter SRAM: the target's weight buffer, or with a weight bandwidth, twice
    the layer's weights, so its initial prefetch loads them all. SCALE-Sim 3.0.0 thrashes when
    a layer's weights stream through a smaller buffer (its double-buffered read buffer refetches
    whole windows: (M, K, N) = (1, 1280, 100) at 2 bytes/cycle took 2,441,924 cycles for
    128,000 bytes), so the bandwidth runs check the fill-then-compute regime and
    ``tests/test_asic_crosscheck.py`` prices them with a buffer of the same size."""
    kb = max(1, job["config"]["weight_buffer_bytes"] // 1024)
    if job["weight_bytes_per_cycle"]:
        kb = max(kb, -(-2 * job["k"] * job["n"] // 1024))
    return kb


def scalesim_run(job: dict[str, Any]) -> dict[str, Any]:
    """SCALE-Sim on one GEMM. In USER mode SCALE-Sim 3.0.0 takes the ifmap and filter backing
    bandwidths from the layout section's bank bandwidths and the ofmap's from ``Bandwidth``:
    the activations get a wide port, the weights the bandwidth under test."""
    import contextlib
    import io

    from scalesim.scale_sim import scalesim

    cfg, bw = job["config"], job["weight_bytes_per_cycle"]
    with tempfile.TemporaryDirectory() as d:
        p = Path(d)
        (p / "run.cfg").write_text(SCALESIM_CFG.format(
            name="run", rows=cfg["rows"], cols=cfg["cols"], act_kb=cfg["sram_bytes"] // 1024,
            weight_kb=filter_kb(job), wide=WIDE,
            weight_bw=bw or WIDE, mode="USER" if bw else "CALC"))
        (p / "gemm.csv").write_text(f"Layer,M,N,K,\nl0,{job['m']},{job['n']},{job['k']},\n")
        (p / "layout.csv").write_text("Layer,\n")  # unused: no custom layout
        with contextlib.redirect_stdout(io.StringIO()):
            sim = scalesim(save_disk_space=True, verbose=False, config=str(p / "run.cfg"),
                           topology=str(p / "gemm.csv"), layout=str(p / "layout.csv"),
                           input_type_gemm=True)
            sim.run_scale(top_path=str(p / "out"))
        with open(p / "out" / "run" / "COMPUTE_REPORT.csv") as f:
            row = [c.strip() for c in list(csv.reader(f))[1]]
    return {"total_cycles": int(row[2]), "stall_cycles": int(row[3]),
            "total_cycles_incl_prefetch": int(row[1]), "filter_sram_kb": filter_kb(job)}


def _zz_port(name: str, kind: str, word: int, wide: int, alloc: list[str]) -> dict[str, Any]:
    return {"name": name, "type": kind, "bandwidth_min": word, "bandwidth_max": wide,
            "allocation": alloc}


def _zz_memory(bits: int, cost: float, operands: list[str], word: int, wide: int,
               served: list[str], reads: list[str], writes: list[str]) -> dict[str, Any]:
    """A ZigZag memory of ``bits``, ``cost`` pJ per ``word``-bit access, ``wide`` bits per
    cycle (wide enough to feed the array: ZigZag shrinks the spatial unrolling to what the
    ports sustain). ZigZag prices an access at the full port width, counted in words."""
    per = cost * wide / word
    return {"size": bits, "r_cost": per, "w_cost": per, "area": 0, "latency": 1,
            "operands": operands, "served_dimensions": served,
            "ports": [_zz_port("r_port_1", "read", word, wide, reads),
                      _zz_port("w_port_1", "write", word, wide, writes)]}


def zigzag_accelerator(cfg: dict[str, Any]) -> dict[str, Any]:
    """The target as ZigZag sees it: a rows x cols array (D1 reduces K, D2 spans N), a weight
    register per PE (not priced, as in sw2c), the accumulator for int32 partial sums, the
    activation SRAM for inputs and final outputs and the weight memory, at the target's
    energies per byte (per int32 access for the accumulator)."""
    e, r, c = cfg["energy_pj"], cfg["rows"], cfg["cols"]
    both = ["D1", "D2"]
    wide = 32 * max(r, c)
    mems = {
        "w_reg": _zz_memory(8, 0.0, ["I2"], 8, 8, [], ["I2, tl"], ["I2, fh"]),
        "accumulator": _zz_memory(8 * cfg["accumulator_bytes"], e["accumulator_access"],
                                  ["O"], 32, wide, both, ["O, tl", "O, th"], ["O, fh", "O, fl"]),
        "sram": _zz_memory(8 * cfg["sram_bytes"], e["sram_byte"], ["I1", "O"], 8, wide, both,
                           ["I1, tl", "O, tl", "O, th"], ["I1, fh", "O, fh", "O, fl"]),
        "weights": _zz_memory(8 << 30, e["weight_byte"], ["I2"], 8, 8 * r * c, both,
                              ["I2, tl"], ["I2, fh"]),
    }
    return {"name": "sw2c_target", "memories": mems, "operational_array": {
        "unit_energy": e["mac"], "unit_area": 1, "dimensions": both, "sizes": [r, c],
        "input_precision": [8, 8]}}


def zigzag_run(job: dict[str, Any]) -> dict[str, Any]:
    """ZigZag's minimal-energy mapping of one GEMM, K (C) on the array's rows and N (K) on
    its columns, M (B) in time; int8 operands, int32 partial sums, int8 outputs."""
    import contextlib
    import io
    import logging

    import yaml
    from zigzag.api import get_hardware_performance_zigzag

    logging.disable(logging.CRITICAL)
    cfg = job["config"]
    layer = [{"id": 0, "name": "gemm", "operator_type": "Gemm",
              "equation": "O[b][k]+=I[b][c]*W[c][k]", "loop_dims": ["B", "C", "K"],
              "loop_sizes": [job["m"], job["k"], job["n"]],
              "operand_precision": {"I": 8, "W": 8, "O": 32, "O_final": 8}}]
    mapping = [{"name": "default", "spatial_mapping": {"D1": [f"C, {cfg['rows']}"],
                                                       "D2": [f"K, {cfg['cols']}"]},
                "memory_operand_links": {"O": "O", "W": "I2", "I": "I1"}}]
    with tempfile.TemporaryDirectory() as d:
        p = Path(d)
        (p / "acc.yaml").write_text(yaml.safe_dump(zigzag_accelerator(cfg)))
        (p / "map.yaml").write_text(yaml.safe_dump(mapping))
        (p / "work.yaml").write_text(yaml.safe_dump(layer))
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(
                io.StringIO()):
            energy, latency, cmes = get_hardware_performance_zigzag(
                str(p / "work.yaml"), str(p / "acc.yaml"), str(p / "map.yaml"), opt="energy",
                dump_folder=str(p / "out"), loma_show_progress_bar=False)
    cme = cmes[0][1][0][0]  # the layer's own evaluation inside the summed one
    return {"energy_pj": float(energy), "mac_energy_pj": float(cme.mac_energy),
            "latency_cycles": float(latency), "spatial_mapping": str(cme.spatial_mapping),
            "temporal_mapping": str(cme.temporal_mapping),
            "memory_energy_pj": {str(k): [float(x) for x in v]
                                 for k, v in cme.mem_energy_breakdown.items()}}


if __name__ == "__main__":
    main()
