"""``sw2c bench MODEL --target cpu:NAME [--precision int8]``: instructions per inference and per
MAC in the emulator (instructions, not cycles: unicorn has no timing model), section sizes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def bench_cross(models: Sequence[str], *, target: str, precision: str, calibration: Any,
                input_shapes: Mapping[str, Sequence[int]]) -> dict[str, Any]:
    """Compile for the cross target (verified against the simulator) and return its report:
    ``instructions`` of one inference is deterministic, so one run measures it."""
    import sw2c

    module = sw2c.compile(list(models), target=target, precision=precision,
                          calibration=calibration, input_shapes=dict(input_shapes) or None)
    return dict(module.report)


def format_cross(r: Mapping[str, Any], files: Sequence[str] = ()) -> str:
    """The report of a cross-target module as the CLI prints it."""
    lines = [f"sw2c: {r['name']} for {r['target']} ({r['target_description']}), "
             f"{r['precision']}, {r['macs']:,} MACs"]
    if "instructions" in r:
        lines.append(f"  instructions  {r['instructions']:,} per inference, "
                     f"{r['instructions_per_mac']:.2f} per MAC ({r['instructions_note']})")
    else:
        lines.append(f"  instructions  not measured: {r.get('instructions_note', '')}")
    lines.append(f"  sizes         .text {r['text_bytes']:,} B, .rodata {r['rodata_bytes']:,} B, "
                 f".bss {r['bss_bytes']:,} B (arena {r['arena_bytes']:,} B)")
    if "verified_inputs" in r:
        lines.append(f"  verified      int8 outputs equal the simulator's bit for bit on "
                     f"{r['verified_inputs']} inputs")
    if "verification_error" in r:  # fp32: checked against onnxruntime as on the host
        lines.append(f"  verified      fp32 outputs match onnxruntime (max relative error "
                     f"{r['verification_error']:.2e})")
    if files:
        lines.append(f"  wrote         {', '.join(files)}")
    return "\n".join(lines)
