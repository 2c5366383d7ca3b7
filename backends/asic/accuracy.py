"""The accuracy floor of ``verify=True`` on the asic target: the int8 program's outputs must
stay within ``min_sqnr_db`` of onnxruntime's float ones, else ``AccuracyError`` with the
per-layer SQNR table (``report["layers"]``, from ``build.layer_accuracy``), so the user sees
which layer lost the signal. Quantization loss is not a miscompile, but a model that verifies
while every output is wrong (a saturated constant, a dead range) must not pass silently."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ...errors import AccuracyError, InputError

DEFAULT_MIN_SQNR_DB = 10.0
TABLE_ROWS = 24  # layers shown in the error message (up to the culprit)


def check_min_sqnr(value: Any) -> float | None:
    """``min_sqnr_db`` as a float (None: no floor); InputError for anything else."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise InputError(f"min_sqnr_db must be a number of dB (or None to skip the accuracy "
                         f"check), got {value!r}")
    return float(value)


def _below(db: float | None, floor: float) -> bool:
    """Under the floor; a NaN SQNR (a float output that is itself infinite or NaN) counts."""
    return db is not None and not db >= floor


def culprit(layers: Sequence[Mapping[str, Any]], floor: float) -> int | None:
    """The index of the first layer (schedule order) whose output SQNR against float is under
    ``floor``: where the signal was lost; else the worst layer's; None without any SQNR."""
    measured = [i for i, r in enumerate(layers) if r.get("sqnr_db") is not None]
    for i in measured:
        if _below(layers[i]["sqnr_db"], floor):
            return i
    return min(measured, key=lambda i: layers[i]["sqnr_db"]) if measured else None


def _db(v: float | None) -> str:
    if v is None:
        return "-"
    return "exact" if v == math.inf else f"{v:.1f}"


def format_sqnr_table(layers: Sequence[Mapping[str, Any]], mark: int | None,
                      rows: int = TABLE_ROWS) -> str:
    """Kernel, kind and SQNR per layer, the culprit marked: every layer, or ``rows`` of them
    around the culprit."""
    first = 0 if mark is None else max(0, min(mark - rows // 2, len(layers) - rows))
    end = min(len(layers), first + rows)
    lines = [f"  {'kernel':<32} {'kind':<10} {'prec':<5} {'SQNR dB':>8}"]
    if first:
        lines.append(f"  ... {first} earlier layer(s)")
    for i in range(first, end):
        r = layers[i]
        flag = "  <- first under the floor" if i == mark else ""
        lines.append(f"  {str(r['name'])[:32]:<32} {r['kind']:<10} "
                     f"{r.get('precision', 'int8'):<5} {_db(r['sqnr_db']):>8}{flag}")
    if end < len(layers):
        lines.append(f"  ... {len(layers) - end} later layer(s)")
    return "\n".join(lines)


def enforce(report: dict[str, Any], outputs_db: Mapping[str, float], floor: float | None,
            samples: int) -> None:
    """Record ``floor`` in ``report``; raise AccuracyError when an output's SQNR is under it,
    naming the output, the first layer under it and the per-layer table."""
    if floor is None:
        return
    report["min_sqnr_db"] = floor
    low = {n: v for n, v in outputs_db.items() if _below(v, floor)}
    if not low:
        return
    layers = report.get("layers", [])
    mark = culprit(layers, floor)
    where = ""
    if mark is not None:
        r = layers[mark]
        where = (f"; the signal is lost at layer '{r['name']}' ({r['kind']}, "
                 f"{_db(r['sqnr_db'])} dB against float)")
    outs = ", ".join(f"'{n}' {_db(v)} dB" for n, v in low.items())
    error = AccuracyError(
        f"int8 output SQNR against onnxruntime's float32 is under min_sqnr_db={floor:g} dB: "
        f"{outs} (on {samples} calibration input(s)){where}. Per layer:\n"
        f"{format_sqnr_table(layers, mark)}\n"
        "Calibrate on representative inputs (calibration=, --calibration), check that layer's "
        "constants, or accept the loss with a lower min_sqnr_db (--min-sqnr-db) or "
        "verify=False (--no-verify)")
    error.report = report  # the compile report, per-layer rows included, for programs
    raise error
