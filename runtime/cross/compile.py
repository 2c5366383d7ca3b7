"""``sw2c.compile(model, target="cpu:NAME", precision="int8")``: the asic target's int8 program
built for a microcontroller, AArch64 or wasm32 and run in its emulator.

The program is the one ``--target asic`` builds (same passes, calibration and quantizer, the
default asic target's memory plan), exported as C (``emit_c``), cross-compiled with zig and
loaded into unicorn / wasmtime. The module takes and gives floats like every sw2c module (the
C's quantize/dequantize boundary equals the simulator's), ``run_int8`` takes the codes, and
``report`` says what the chip runs: instructions per inference and per MAC (instructions,
not cycles), section sizes and the arena. fp32 (the default) is ``runtime.cross.fp32``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np

from ...errors import ModelError, Sw2cError, VerificationError, check_choice
from .errors import require
from .targets import Target, lookup

PRECISIONS = ("fp32", "int8")
NOTE = "instructions executed in the emulator, not cycles (wasm32: wasmtime fuel)"
VERIFY_SAMPLES = 8


def check_precision(kind: str, spec: str, precision: str) -> None:
    """Fail early on a precision the target cannot build: ``Sw2cError`` naming it."""
    check_choice("precision", precision, PRECISIONS)
    if kind == "cpu" and not spec and precision != "fp32":
        raise Sw2cError("precision='int8' on target 'cpu' (this machine) is not built: use "
                        "target='asic' for the simulated accelerator or target='cpu:NAME' "
                        "(e.g. cpu:cortex-m4) for a cross target")


def _neutral_asic() -> Any:
    """The default asic target with memory limits lifted: its plan lays out the arena, and
    the cross target's own RAM is checked after linking."""
    from ...backends.asic.target import load_target

    t = load_target(None)
    return dataclasses.replace(t, sram_bytes=1 << 62, weight_bytes=1 << 62)


class _EmulatorRunner:
    """What ``SimulatedModule`` calls to run the int8 program: here the cross-built C in the
    emulator (same ``run(qfeeds) -> (outputs, cost)`` as ``Simulator``)."""

    def __init__(self, export: Any) -> None:
        self.export = export

    def run(self, qfeeds: Sequence[np.ndarray]) -> tuple[list[np.ndarray], None]:
        return self.export.run_int8(list(qfeeds)), None


def _verify_cases(module: Any, feeds: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    """int8 inputs that verify checks: calibration feeds, random codes and all -128 / 127
    (every accumulator and requantization saturates somewhere)."""
    from ...backends.asic.reference import quantize_inputs

    p = module.program
    cases = [quantize_inputs(p, [f[n] for n in p.inputs]) for f in feeds[:VERIFY_SAMPLES]]
    rng = np.random.default_rng(13)
    shapes = [p.tensors[n].shape for n in p.inputs]
    cases += [[rng.integers(-128, 128, s, dtype=np.int8) for s in shapes] for _ in range(2)]
    cases += [[np.full(s, v, np.int8) for s in shapes] for v in (-128, 127)]
    return cases


def verify_cross(module: Any) -> int:
    """The emulator's int8 outputs must equal the simulator's bit for bit on the verify
    inputs; ``VerificationError`` names the first output that differs. Returns the count."""
    cases = _verify_cases(module, module.build.feeds)
    for k, (q, got) in enumerate(zip(cases, module.cross.run_int8_many(cases))):
        want, _ = module.reference.run(q)
        for name, w, g in zip(module.program.outputs, want, got):
            if not np.array_equal(w, g):
                bad = int(np.sum(w != g))
                raise VerificationError(
                    f"{module.name} on {module.target.name}: output '{name}' differs from the "
                    f"simulator in {bad} of {w.size} int8 codes on verify input {k}: the C "
                    "export miscompiles for this target")
    return len(cases)


def _measure(module: Any, q: list[np.ndarray], macs: int) -> dict[str, Any]:
    """Instructions of one inference (deterministic: the emulator counts, not times)."""
    n = module.cross.call_int8(q, count=True).instructions
    return {"instructions": n, "instructions_per_mac": round(n / max(macs, 1), 3),
            "instructions_note": NOTE}


def conv_stack_bytes(program: Any) -> int:
    """An upper bound on the stack the C export's conv kernel takes (c_kernels "conv": two
    patches, their 16-bit pairs, a padded input of at most 4 KB, accumulators) plus 1 KB for
    the calls around it."""
    from ...backends.asic.program import Kind

    need = 0
    for s in program.steps:
        if s.kind is Kind.CONV:
            kc, oc = s.consts["weights"].shape[0], s.consts["weights"].shape[1]
            need = max(need, 6 * kc + 4096 + 8 * (oc + 1) + 64)
    return need + 1024


def compile_cross(graph: Any, name: str, *, target: str, precision: str, calibration: Any,
                  verify: bool, dump_ir: str | os.PathLike | None, started: float,
                  model: Any = None, winograd: str | None = None,
                  threads: int | None = None) -> Any:
    """IR graph -> for cross target ``target`` (a name from ``runtime.cross.targets``) either
    the cpu backend's float code (fp32: ``runtime.cross.fp32``; ``model`` is what ``verify``
    checks it against) or the asic int8 program as C -> a module that runs it in the
    emulator."""
    t: Target = lookup(target)
    if t.family == "host":
        raise Sw2cError("target 'cpu:host' is this machine: use target='cpu'")
    check_choice("precision", precision, PRECISIONS)
    if threads not in (None, 1) and not t.threads:
        raise Sw2cError(f"threads={threads} on target 'cpu:{t.name}': its build runs on one "
                        "core without an operating system; leave threads unset (or 1)")
    require("ziglang", f"building for {t.name}")
    require("elftools", f"reading what was built for {t.name}")
    if precision == "fp32":
        from ...passes.winograd import DEFAULT_MODE
        from .fp32 import compile_fp32

        if verify and model is None:
            raise Sw2cError("verify=True on a cross target needs the model to check against")
        module = compile_fp32(graph, name, t, model=model, verify=verify, dump_ir=dump_ir,
                              winograd=winograd or DEFAULT_MODE)
        module.report["compile_seconds"] = round(time.perf_counter() - started, 3)
        return module
    for v in graph.inputs:
        if v.type.dtype != "float32":
            raise ModelError(f"input '{v.name}' is {v.type.dtype}: precision='int8' quantizes "
                             "float32 inputs only")
    from ...backends.asic.build import build
    from ...passes.cost import count_flops, count_macs
    from ..simulator import SimulatedModule, Simulator
    from .asic_c import CrossCExport

    b = build(graph, _neutral_asic(), calibration, dump_ir)
    export = CrossCExport(b.program, b.plan, name, t)
    stack = conv_stack_bytes(b.program)
    if stack > t.stack_bytes:
        raise Sw2cError(f"{name}'s convolutions need up to {stack:,} bytes of stack on "
                        f"{t.name}, which reserves {t.stack_bytes:,}: this model is too large "
                        "for the cross build yet")
    ram = t.region("ram").size if t.bare_metal else None
    if ram is not None and b.plan.arena_bytes + t.stack_bytes > ram:
        raise Sw2cError(f"{name} needs a {b.plan.arena_bytes:,}-byte arena; {t.name} has "
                        f"{ram:,} bytes of RAM")
    s = export.binary.sizes
    report: dict[str, Any] = {
        "name": name, "target": f"cpu:{t.name}", "target_description": t.description,
        "precision": "int8", "threads": 1, "flops": count_flops(b.graph),
        "macs": count_macs(b.graph), "arena_bytes": b.plan.arena_bytes,
        "weights_bytes": b.program.weights_bytes, "steps": len(b.program.steps),
        "text_bytes": s.get(".text", s.get("code", 0)),
        "rodata_bytes": s.get(".rodata", s.get("data", 0)),
        "data_bytes": s.get(".data", 0), "bss_bytes": s.get(".bss", 0),
        "runtime": export.binary.runtime, "emulator": t.emulator,
    }
    module = SimulatedModule(name, b.program, _EmulatorRunner(export), report,
                             exporter=partial(_export, export, report))
    module.graph, module.plan, module.build = b.graph, b.plan, b
    module.reference = Simulator(b.program, b.plan, b.costs)  # the bit-exact oracle
    module.cross, module.target = export, t  # the build (sizes, call counts), the chip
    from .emulate import unavailable

    why = unavailable(t)
    if not why:
        from ...backends.asic.reference import quantize_inputs

        first = quantize_inputs(b.program, [b.feeds[0][n] for n in b.program.inputs])
        report.update(_measure(module, first, report["macs"]))
        if verify:
            report["verified_inputs"] = verify_cross(module)
    else:
        report["instructions_note"] = f"not measured: {why}"
    report["compile_seconds"] = round(time.perf_counter() - started, 3)
    return module


def _export(export: Any, report: dict[str, Any], directory: str | os.PathLike) -> str:
    """lib<name>.a (for a firmware build), <name>.h, <name>.c and <name>.json: see
    ``runtime.cross.export``."""
    from .export import export_library

    return export_library(export, report, directory)
