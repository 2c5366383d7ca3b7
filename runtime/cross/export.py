"""``Module.export(DIR)`` for a cross target: a static library for a firmware build.

Writes, for the int8 program ``<name>`` built for a cross target:

* ``lib<name>.a``: one object compiled from the C export with ``zig cc -c`` for the target's
  freestanding build (the kernels in ``.text``, the int8 weights as ``const`` data in
  ``.rodata``, the arena in ``.bss``), archived with ``zig ar``. The object is compiled from a
  relative path in the output directory and without debug information, so it records no path
  of the machine that built it, and it is plain C: no start-up code, no inline assembler
  directive that only one assembler accepts, no libc (the only undefined symbols a target may
  have are compiler-rt's, e.g. soft float on RV32IMAC; ``<name>.json`` lists them);
* ``<name>.h``: ``int <name>_run(const float *in0, ..., float *out0, ...)`` and
  ``int <name>_run_int8(const int8_t *..., int8_t *...)`` with the quantization constants;
* ``<name>.c``: the source the library was compiled from (to read, or to build with another
  compiler);
* ``<name>.json``: the compile report (arena bytes, instructions per inference measured in the
  emulator, the linked test program's sizes) and ``library``: the ``.text`` / ``.rodata`` /
  ``.data`` / ``.bss`` bytes of the library's objects, read with pyelftools.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from .errors import CrossCompileError, require
from .targets import Target
from .toolchain import CFLAGS, OPT, TIMEOUT, wasm_sizes, zig

# the budget for the whole int8 digits CNN program's code on a Cortex-M4 (TensorFlow
# Lite Micro's core runtime alone is about 16 KB on a Cortex-M3)
TEXT_BUDGET = 8 * 1024
# no debug information (it records the build directory) and no unwind tables: C kernels never
# unwind, and on Arm the tables reference the C++ personality routines (__aeabi_unwind_cpp_pr0)
# that a firmware without a C++ runtime does not have
LIB_FLAGS = ("-g0", "-fno-unwind-tables", "-fno-asynchronous-unwind-tables")


def _zig(args: list[str], cwd: Path, what: str) -> None:
    try:
        res = subprocess.run([*zig(), *args], cwd=cwd, capture_output=True, text=True,
                             timeout=TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CrossCompileError(f"cannot run zig to {what}: {e}") from e
    if res.returncode != 0:
        raise CrossCompileError(f"zig failed to {what} (exit {res.returncode}): "
                                f"{res.stderr.strip()[:1500]}")


def build_library(target: Target, directory: Path, name: str) -> Path:
    """Compile ``directory/<name>.c`` for ``target`` and archive it as ``lib<name>.a``.

    The command runs in ``directory`` on relative names: nothing in the object names the
    build machine's paths. ``ar`` runs in deterministic mode (no timestamps, uid or gid)."""
    obj, lib = f"{name}.o", f"lib{name}.a"
    cmd = ["cc", "-target", target.zig_target, f"-mcpu={target.zig_cpu}", OPT, *CFLAGS,
           *LIB_FLAGS, "-c", f"{name}.c", "-o", obj]
    _zig(cmd, directory, f"compile {name}.c for {target.name}")
    (directory / lib).unlink(missing_ok=True)  # ar would add to an old archive
    _zig(["ar", "rcsD", lib, obj], directory, f"archive {obj}")
    (directory / obj).unlink()
    return directory / lib


def _elf_object_sizes(data: bytes) -> tuple[dict[str, int], list[str]]:
    """.text (with .ARM.exidx), .rodata, .data, .bss bytes of one relocatable ELF object (a
    section per function or datum: ``.text.f`` counts as .text) and its undefined symbols."""
    import io

    from elftools.elf.elffile import ELFFile

    sizes = {".text": 0, ".rodata": 0, ".data": 0, ".bss": 0}
    elf = ELFFile(io.BytesIO(data))
    for sec in elf.iter_sections():
        if not sec["sh_flags"] & 0x2:  # SHF_ALLOC: not a symbol table, relocation or note
            continue
        kind = ".text" if sec.name.startswith(".ARM.exidx") else \
            next((k for k in (".text", ".rodata", ".srodata", ".data", ".sdata", ".bss",
                              ".sbss") if sec.name == k or sec.name.startswith(k + ".")), None)
        if kind is not None:
            key = {".srodata": ".rodata", ".sdata": ".data", ".sbss": ".bss"}.get(kind, kind)
            sizes[key] += sec["sh_size"]
    symtab = elf.get_section_by_name(".symtab")
    undefined = sorted({s.name for s in symtab.iter_symbols()
                        if s.name and s["st_shndx"] == "SHN_UNDEF"}) if symtab else []
    return sizes, undefined


def _members(path: Path) -> list[tuple[str, bytes]]:
    """The members of a System V / GNU ``ar`` archive (name, bytes), symbol table skipped."""
    data, pos, out = path.read_bytes(), 8, []
    if data[:8] != b"!<arch>\n":
        raise CrossCompileError(f"{path} is not an ar archive")
    while pos + 60 <= len(data):
        header = data[pos:pos + 60]
        name, size = header[:16].decode().strip(), int(header[48:58])
        body = data[pos + 60:pos + 60 + size]
        if name not in ("/", "//", "/SYM64/"):
            out.append((name.rstrip("/"), body))
        pos += 60 + size + (size & 1)
    return out


def library_sizes(target: Target, path: Path) -> dict[str, Any]:
    """Section bytes summed over the objects of the static library ``path`` and the symbols
    they leave undefined (wasm32: the code and data sections of its objects)."""
    if target.family == "wasm32":
        sizes: dict[str, Any] = {"code": 0, "data": 0}
        for i, (_, body) in enumerate(_members(path)):
            obj = path.with_name(f".{path.stem}_{i}.o")
            obj.write_bytes(body)
            for k, v in wasm_sizes(obj).items():
                sizes[k] += v
            obj.unlink()
        return {"file": path.name, **{f"{k}_bytes": v for k, v in sizes.items()}}
    require("elftools", "reading the sizes of a static library")
    total, undefined, defined = {".text": 0, ".rodata": 0, ".data": 0, ".bss": 0}, set(), set()
    for _, body in _members(path):
        sizes, undef = _elf_object_sizes(body)
        total = {k: total[k] + sizes[k] for k in total}
        undefined.update(undef)
        defined.update(_elf_defined(body))
    # a symbol one member defines for another (the fp32 code's weights) is not the firmware's
    return {"file": path.name, **{f"{k[1:]}_bytes": v for k, v in total.items()},
            "undefined_symbols": sorted(undefined - defined)}


def _elf_defined(data: bytes) -> set[str]:
    """The global symbols one relocatable ELF object defines."""
    import io

    from elftools.elf.elffile import ELFFile

    symtab = ELFFile(io.BytesIO(data)).get_section_by_name(".symtab")
    return {s.name for s in symtab.iter_symbols() if s.name and s["st_shndx"] != "SHN_UNDEF"
            and s["st_info"]["bind"] in ("STB_GLOBAL", "STB_WEAK")} if symtab else set()


def export_library(export: Any, report: dict[str, Any], directory: str | os.PathLike) -> str:
    """Write ``lib<name>.a``, ``<name>.h``, ``<name>.c`` and ``<name>.json`` for ``export`` (a
    ``CrossCExport``) into ``directory``; returns the library's path."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    name, target = export.name, export.target
    for suffix in (".c", ".h"):  # the exact files the emulated program was built from
        (out / f"{name}{suffix}").write_text((export.directory / f"{name}{suffix}").read_text())
    lib = build_library(target, out, name)
    info = library_sizes(target, lib)
    meta = {**report, "library": info, "header": f"{name}.h",
            "functions": [f"{name}_run", f"{name}_run_int8"],
            "sizes_note": f"library: the objects of lib{name}.a (kernels, weights, arena); "
                          "text_bytes, rodata_bytes, data_bytes, bss_bytes: the whole program "
                          "the emulator ran (the library and sw2c's start-up code, linked with "
                          "--gc-sections)"}
    if target.family == "cortex-m":
        meta["text_budget_bytes"] = TEXT_BUDGET
        meta["text_within_budget"] = bool(report.get("text_bytes", 0) <= TEXT_BUDGET and
                                          info["text_bytes"] <= TEXT_BUDGET)
    (out / f"{name}.json").write_text(json.dumps(meta, indent=1, default=str) + "\n")
    return str(lib)
