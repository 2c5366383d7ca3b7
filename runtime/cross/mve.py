"""Check that code built for the Cortex-M55 uses Helium (MVE): count its vector instructions.

Running in qemu shows that the M55 build computes the right numbers; this shows that it does
so with MVE, i.e. that the compiler was told about the vector unit and used it (a build for
plain Armv8.1-M would also run correctly). An MVE instruction is one with a ``q`` register
operand (``vldrb.s16 q0, [r1]``, ``vfma.f32 q2, q0, q1``, ``vmlava.s32 r0, q1, q2``); the
scalar FPU's ``s``/``d`` registers and the predication (``vpt``, ``vpst``) are not counted.

The listing comes from ``llvm-objdump`` on the linked ELF where one is on PATH (Debian's
``llvm`` package: what the program really contains), else from the compiler itself: ``zig cc
-S`` for the int8 C, LLVM's assembly for the fp32 module (what the linked objects were made
from, with the same flags).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from .errors import CrossCompileError
from .targets import Target
from .toolchain import CFLAGS, OPT, TIMEOUT, zig

_Q_OPERAND = re.compile(r"(?<![\w.])q[0-7]\b")
_OBJDUMPS = ("llvm-objdump", *(f"llvm-objdump-{v}" for v in range(20, 13, -1)))


def objdump() -> str | None:
    """An ``llvm-objdump`` on PATH (any version that knows Armv8.1-M), or None."""
    for name in _OBJDUMPS:
        found = shutil.which(name)
        if found:
            return found
    return None


def mve_instructions(listing: str) -> Counter[str]:
    """Mnemonic -> count of the instructions with a ``q`` register operand in an assembly or
    disassembly listing (``mnemonic<TAB>operands`` per instruction, as LLVM prints both)."""
    found: Counter[str] = Counter()
    for line in listing.splitlines():
        fields = [f.strip() for f in line.split("\t")]
        for at, field in enumerate(fields[:-1]):  # disassembly: address+bytes, then mnemonic
            if re.fullmatch(r"v[a-z0-9.]+", field) and _Q_OPERAND.search(fields[at + 1]):
                found[field] += 1
                break
    return found


def disassemble(path: str | Path, target: Target) -> str:
    """The disassembly of a linked ELF for ``target`` (``llvm-objdump``);
    ``CrossCompileError`` if there is no llvm-objdump on PATH or it fails."""
    tool = objdump()
    if tool is None:
        raise CrossCompileError("disassembling needs llvm-objdump on PATH (Debian/Ubuntu: "
                                "apt-get install llvm)")
    features = ",".join(f for f in target.features)
    res = subprocess.run([tool, "-d", f"--triple={target.triple}", f"--mcpu={target.cpu}",
                          f"--mattr={features}", str(path)], capture_output=True, text=True,
                         timeout=TIMEOUT)
    if res.returncode != 0:
        raise CrossCompileError(f"llvm-objdump failed on {path}: {res.stderr.strip()[:800]}")
    return res.stdout


def c_assembly(source: str | Path, target: Target) -> str:
    """The assembly ``zig cc`` makes of one C file for ``target`` (the build's flags)."""
    with tempfile.TemporaryDirectory(prefix="sw2c_asm_") as tmp:
        out = Path(tmp) / "out.s"  # zig cc writes nothing to "-o -"
        cmd = [*zig(), "cc", "-target", target.zig_target, f"-mcpu={target.zig_cpu}", OPT,
               *CFLAGS, "-S", str(source), "-o", str(out)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
        if res.returncode != 0:
            raise CrossCompileError(f"zig cc -S failed on {source}: "
                                    f"{res.stderr.strip()[:800]}")
        return out.read_text(errors="replace")  # .ascii data may hold any byte


def llvm_assembly(module: Any) -> str:
    """The assembly LLVM makes of a generated fp32 module for its target."""
    from ...backends.cpu.llvm import target_of
    from .mve_fcmp import optimized

    tm, ref = optimized(module, target_of(module))  # as Fp32Build compiles it
    return tm.emit_assembly(ref)


def build_mve_instructions(build: Any) -> Counter[str]:
    """The MVE instructions of a cross build (``CrossCExport`` or ``Fp32Build``): from its
    linked ELF with llvm-objdump if there is one, else from the compiler's assembly."""
    if objdump() is not None:
        return mve_instructions(disassemble(build.binary.path, build.target))
    if hasattr(build, "program") and hasattr(build.program, "module"):  # fp32: LLVM
        return mve_instructions(llvm_assembly(build.program.module))
    return mve_instructions(c_assembly(build.directory / f"{build.name}.c", build.target))
