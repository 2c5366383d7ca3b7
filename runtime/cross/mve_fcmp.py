"""LLVM workarounds for Cortex-M55 (MVE) float code (llvmlite 0.50's LLVM 22.1).

NaN lanes of float vector compares: qemu's mps3-an547 computes MVE's ``VCMP.F32``/``VPT.F32``
conditions LT and LE as NOT GE and NOT GT, i.e. true for an unordered (NaN) lane, like the
scalar condition codes after VCMP (that is the architecture's definition as far as we can
tell; it is what qemu implements), but LLVM's MVE lowering takes them as ordered: ``fcmp olt
x, 0`` becomes ``vcmp lt, q, zr`` and ``fcmp ugt x, 0`` the inverse of ``vpt le``, both wrong
for a NaN lane. So ``Relu(NaN)`` and ``Sigmoid(NaN)`` came out 0 instead of NaN on the M55;
ordered inputs were right.

A crash: LLVM aborts the process (an assertion in its MC layer) on a loop the vectorizer
tail-folds with MVE masked loads and stores around ``llvm.fptosi.sat`` (fuzz_cross seed 5058:
a Mul and a Cast to int32 of six floats). ``-enable-arm-maskedldst=false`` (ARM-only, set once
per process before the first M55 build) makes the vectorizer use a scalar remainder instead.

``nan_safe_compares(text)`` rewrites the optimized IR (after the vectorizers, which make vector
compares of their own) so that no NaN lane depends on the compare: every ``fcmp P <N x float>
a, b`` gets its NaN lanes fixed with integer tests, ``(bits & 0x7fffffff) > 0x7f800000`` -
false for an ordered predicate, true for an unordered one. MVE's integer compares are exact,
and nothing after this point folds the integer test back into a float compare.
"""

from __future__ import annotations

import re
from typing import Any

_FCMP = re.compile(r"^(\s*)(%[-\w.\"$]+) = fcmp ((?:[a-z]+ )*?)([a-z]+) (<(\d+) x float>) (.*)$")
_ABS_MASK, _INF_BITS = 0x7FFFFFFF, 0x7F800000
_FIXED = {"true", "false"}


def _split_operands(rest: str) -> tuple[str, str]:
    """``a, b`` of an fcmp (a constant vector holds commas inside ``<...>``)."""
    depth = 0
    for at, ch in enumerate(rest):
        if ch in "<[(":
            depth += 1
        elif ch in ">])":
            depth -= 1
        elif ch == "," and depth == 0:
            return rest[:at].strip(), rest[at + 1:].strip()
    raise ValueError(f"cannot split fcmp operands: {rest!r}")


def _splat(n: int, value: int) -> str:
    return "<" + ", ".join([f"i32 {value}"] * n) + ">"


def _rewrite(match: re.Match[str], k: int) -> list[str]:
    indent, name, flags, pred, vtype, lanes, rest = match.groups()
    n = int(lanes)
    a, b = _split_operands(rest)
    ivec, bvec, tag = f"<{n} x i32>", f"<{n} x i1>", f"%sw2c.nan.{k}"
    lines = [f"{indent}{tag}.cmp = fcmp {flags}{pred} {vtype} {a}, {b}"]
    tests = []
    for j, v in enumerate((a, b)):
        if v == "zeroinitializer":
            continue
        lines += [f"{indent}{tag}.bits{j} = bitcast {vtype} {v} to {ivec}",
                  f"{indent}{tag}.abs{j} = and {ivec} {tag}.bits{j}, {_splat(n, _ABS_MASK)}",
                  f"{indent}{tag}.nan{j} = icmp ugt {ivec} {tag}.abs{j}, "
                  f"{_splat(n, _INF_BITS)}"]
        tests.append(f"{tag}.nan{j}")
    if len(tests) == 2:
        lines.append(f"{indent}{tag}.nan = or {bvec} {tests[0]}, {tests[1]}")
        nan = f"{tag}.nan"
    elif tests:
        nan = tests[0]
    else:
        return [match.group(0)]
    true = "<" + ", ".join(["i1 true"] * n) + ">"
    if pred == "uno":
        lines = lines[1:] + [f"{indent}{name} = or {bvec} {nan}, {nan}"]
    elif pred == "ord":
        lines = lines[1:] + [f"{indent}{name} = xor {bvec} {nan}, {true}"]
    elif pred.startswith("u"):
        lines.append(f"{indent}{name} = or {bvec} {tag}.cmp, {nan}")
    else:
        lines += [f"{indent}{tag}.ok = xor {bvec} {nan}, {true}",
                  f"{indent}{name} = and {bvec} {tag}.cmp, {tag}.ok"]
    return lines


def nan_safe_compares(text: str) -> tuple[str, int]:
    """``text`` (LLVM IR) with every float-vector ``fcmp`` NaN-exact on MVE, and how many
    were rewritten."""
    out, k = [], 0
    for line in text.splitlines():
        m = _FCMP.match(line)
        if m is None or m.group(4) in _FIXED:
            out.append(line)
            continue
        out += _rewrite(m, k)
        k += 1
    return "\n".join(out) + "\n", k


_OPTIONS: list[str] = []


def _mve_llvm_options() -> None:
    """LLVM's command-line options for MVE code, set once per process (a second parse of the
    same option is an error): no masked loads and stores (the MC crash above)."""
    import llvmlite.binding as llvm

    if not _OPTIONS:
        _OPTIONS.append("-enable-arm-maskedldst=false")
        llvm.set_option("sw2c", _OPTIONS[0])


def uses_mve_float(target: Any) -> bool:
    """Whether code for ``target`` has MVE float vectors (the Cortex-M55)."""
    return "+mve.fp" in getattr(target, "features", ())


def optimized(module: Any, target: Any) -> tuple[Any, Any]:
    """(target machine, optimized module ref) of a generated module for ``target``; on an MVE
    target its float-vector compares made NaN-exact (``nan_safe_compares``)."""
    import llvmlite.binding as llvm

    from ...backends.cpu.llvm import optimize, target_machine

    if uses_mve_float(target):
        _mve_llvm_options()
    tm = target_machine(reloc="static", target=target)
    ref = optimize(module, tm)
    if uses_mve_float(target):
        text, _ = nan_safe_compares(str(ref))
        ref = llvm.parse_assembly(text)
        ref.verify()
    return tm, ref
