"""Targets are data: a TOML file describing the accelerator (see ``targets/*.toml``).

``--target asic`` picks ``DEFAULT``, ``asic:NAME`` a shipped file, ``asic:PATH.toml`` a user's.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import TargetError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TARGETS_DIR = Path(__file__).parent / "targets"
DEFAULT = "edge"


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    mac_rows: int
    mac_cols: int
    vector_lanes: int
    clock_mhz: float
    step_overhead_cycles: int
    sram_bytes: int
    weight_bytes: int
    e_mac: float  # energies in pJ
    e_vector_op: float
    e_sram_byte: float
    e_weight_byte: float
    path: str = ""
    # optional (older target files leave them out):
    weight_bytes_per_cycle: float | None = None  # weight memory bandwidth; None: unlimited
    sram_bytes_per_cycle: float | None = None  # activation SRAM bandwidth; None: unlimited
    weight_buffer_bytes: int = 0  # on-chip weight tile buffer; 0: two tiles (double buffer)
    weight_tile_load_cycles: int = 0  # shifting a tile into the array; 0: mac_rows
    vector_overlaps_mac: bool = False  # the vector unit requantizes while the array runs
    accumulator_bytes: int | None = None  # int32 partial sums; None: not priced
    e_accumulator_access: float = 0.0  # pJ per int32 partial-sum read or write
    # memory-mapped external RAM for activations that do not fit the SRAM (spilled: plan.py)
    external_bytes: int = 0  # 0: none
    external_bytes_per_cycle: float | None = None
    e_external_byte: float = 0.0  # pJ per byte read or written

    @property
    def tile_bytes(self) -> int:
        return self.mac_rows * self.mac_cols

    @property
    def tile_load_cycles(self) -> int:
        return self.weight_tile_load_cycles or self.mac_rows

    @property
    def weight_buffer(self) -> int:
        return self.weight_buffer_bytes or 2 * self.tile_bytes


def shipped() -> list[str]:
    return sorted(p.stem for p in TARGETS_DIR.glob("*.toml"))


def _field(doc: dict, section: str, key: str, kind: type, path: Path) -> float:
    try:
        value = doc[section][key]
    except (KeyError, TypeError):
        raise TargetError(f"target file {path} lacks [{section}] {key}") from None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0 or (
            kind is int and value != int(value)):
        raise TargetError(f"target file {path}: [{section}] {key} must be a positive "
                          f"{kind.__name__}, got {value!r}")
    return kind(value)


def _optional(doc: dict, section: str, key: str, kind: type, path: Path) -> Any:
    """An optional field: None when absent, else checked as ``_field`` does (bools too)."""
    if key not in doc.get(section, {}):
        return None
    if kind is bool:
        value = doc[section][key]
        if not isinstance(value, bool):
            raise TargetError(f"target file {path}: [{section}] {key} must be true or false, "
                              f"got {value!r}")
        return value
    return _field(doc, section, key, kind, path)


def load_target(spec: str | None = None) -> Target:
    """A target by shipped name (``tiny``, ``edge``) or by path to a TOML file."""
    spec = spec or DEFAULT
    if spec.endswith(".toml") or "/" in spec or os.sep in spec:  # a user's file
        path = Path(spec)
        if not path.is_file():
            what = "is not a file" if path.exists() else "was not found"
            rel = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
            raise TargetError(f"target file {path} {what}{rel}: give the path of a .toml "
                              f"target file, or a shipped target: {', '.join(shipped())}")
    else:
        path = TARGETS_DIR / f"{spec}.toml"
        if not path.is_file():
            raise TargetError(f"unknown asic target '{spec}': use one of "
                              f"{', '.join(shipped())} or the path of a .toml target file")
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise TargetError(f"cannot read target file {path}: {e}") from e
    c, m, e = "compute", "memory", "energy_pj"
    return Target(
        name=str(doc.get("name", path.stem)), description=str(doc.get("description", "")),
        mac_rows=_field(doc, c, "mac_rows", int, path),
        mac_cols=_field(doc, c, "mac_cols", int, path),
        vector_lanes=_field(doc, c, "vector_lanes", int, path),
        clock_mhz=_field(doc, c, "clock_mhz", float, path),
        step_overhead_cycles=_field(doc, c, "step_overhead_cycles", int, path),
        sram_bytes=_field(doc, m, "sram_bytes", int, path),
        weight_bytes=_field(doc, m, "weight_bytes", int, path),
        e_mac=_field(doc, e, "mac", float, path),
        e_vector_op=_field(doc, e, "vector_op", float, path),
        e_sram_byte=_field(doc, e, "sram_byte", float, path),
        e_weight_byte=_field(doc, e, "weight_byte", float, path),
        path=str(path),
        weight_bytes_per_cycle=_optional(doc, m, "weight_bytes_per_cycle", float, path),
        sram_bytes_per_cycle=_optional(doc, m, "sram_bytes_per_cycle", float, path),
        weight_buffer_bytes=_optional(doc, m, "weight_buffer_bytes", int, path) or 0,
        weight_tile_load_cycles=_optional(doc, c, "weight_tile_load_cycles", int, path) or 0,
        vector_overlaps_mac=bool(_optional(doc, c, "vector_overlaps_mac", bool, path)),
        accumulator_bytes=_optional(doc, m, "accumulator_bytes", int, path),
        e_accumulator_access=_optional(doc, e, "accumulator_access", float, path) or 0.0,
        external_bytes=_optional(doc, m, "external_bytes", int, path) or 0,
        external_bytes_per_cycle=_optional(doc, m, "external_bytes_per_cycle", float, path),
        e_external_byte=_optional(doc, e, "external_byte", float, path) or 0.0,
    )
