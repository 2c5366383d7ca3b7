"""``sw2c.compile(model, target="cpu:NAME")`` with the default ``precision="fp32"``: the cpu
backend's float code compiled for a cross target and run in its emulator.

The graph goes through the same pass pipeline and code generator as the host ``cpu`` target,
with the module made for the target's description (triple, data layout, CPU, features, float
ABI: ``backends/cpu/llvm.py``), then:

* the code: the generated module plus ``int <name>_run(in.., out..)``, which calls the entry
  with the weights and a static arena (``.bss``), compiled to an object by LLVM's target
  machine for that chip (``llvm.fma`` becomes ``llvm.fmuladd`` where the chip has no fused
  multiply-add, so no soft ``fmaf`` call per MAC);
* the weights: the packed blob as one ``const`` array in ``.rodata`` of a second object (LLVM
  IR written here: no assembler directive, no file path);
* a test program linking both with sw2c's start-up code (``toolchain.build``), run in unicorn
  or wasmtime (``emulate.py``), which counts instructions (wasm32: fuel) per inference.

* where the code calls a C math function compiler-rt lacks (``fmaximumf``, ``fminimumf``,
  ``roundevenf``, ``powf``): a third object defining it (weak).

``export(DIR)`` archives the objects as ``lib<name>.a`` with ``<name>.h`` (the host
export's header: ``int <name>_run(const float *in0, ..., float *out0, ...)``) and
``<name>.json``.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from llvmlite import ir

from ...errors import CompileError, Sw2cError
from .emulate import CAP, Call, EmulatedBuild, unavailable
from .errors import CrossCompileError, EmulationError
from .libm import FUNCTIONS as LIBM_FUNCTIONS
from .libm import emit as emit_libm
from .mve_fcmp import optimized
from .targets import Target
from .toolchain import Binary, build

NOTE = "instructions executed in the emulator, not cycles (wasm32: wasmtime fuel)"
CAP_PER_MAC = 1000  # a run's instruction cap per MAC, for models too big for emulate.CAP


def _add_run(module: ir.Module, name: str, arena_bytes: int, weights_bytes: int,
             n_in: int, n_out: int) -> None:
    """``int <name>_run(in.., out..)`` in ``module``: the entry with ``<name>_weights`` (defined
    in the weights object) and a static arena; the entry and the one-pointer ``_argv`` call
    (for the host runtime) become internal, so only ``_run`` is left to link against."""
    from ...backends.cpu.llvm import F32P, I8P, I32, I64

    i8 = ir.IntType(8)
    arena_t = ir.ArrayType(i8, max(arena_bytes, 64))
    arena = ir.GlobalVariable(module, arena_t, f"{name}_arena")
    arena.initializer = ir.Constant(arena_t, None)
    arena.linkage = "internal"
    arena.align = 64
    weights = ir.GlobalVariable(module, ir.ArrayType(i8, max(weights_bytes, 1)),
                                f"{name}_weights")
    weights.global_constant = True
    weights.align = 64
    entry = module.get_global(f"{name}_entry")
    module.get_global(f"{name}_argv").linkage = "internal"
    entry.linkage = "internal"
    run = ir.Function(module, ir.FunctionType(I32, [F32P] * (n_in + n_out)), f"{name}_run")
    run.attributes.add("nounwind")
    b = ir.IRBuilder(run.append_basic_block())
    b.call(entry, [b.bitcast(weights, I8P), b.bitcast(arena, I8P), *run.args,
                   ir.Constant(I64.as_pointer(), None), ir.Constant(I64, 0), ir.Constant(I64, 0)])
    b.ret(ir.Constant(I32, 0))


# What LLVM lowers to a C library call that zig's compiler-rt (which has fminf, sqrtf, fmodf,
# floorf, expf ...) lacks: C23's fmaximumf / fminimumf (llvm.maximum / llvm.minimum on soft
# float), roundevenf (llvm.roundeven without VRINTN: Cortex-M4's FPv4, soft float) and powf
# (Pow, LRN). sw2c defines them in a third object when the code calls them, weak: a C
# library's own wins. (Also missing, not yet supplied: asinf, acosf, atanf, sinhf, coshf and
# the inverse hyperbolics, tanhf / erff on float64: such a model is a CrossCompileError.)


def _ordered_key(b: ir.IRBuilder, bits: ir.Value) -> ir.Value:
    """A float's bits as an i32 that orders like the float (sign-magnitude to two's
    complement: negatives have their magnitude bits flipped, so -0 sorts below +0)."""
    i32 = bits.type
    flipped = b.xor(bits, ir.Constant(i32, 0x7FFFFFFF))
    return b.select(b.icmp_signed("<", bits, ir.Constant(i32, 0)), flipped, bits)


def _is_nan(b: ir.IRBuilder, bits: ir.Value) -> ir.Value:
    i32 = bits.type
    return b.icmp_unsigned(">", b.and_(bits, ir.Constant(i32, 0x7FFFFFFF)),
                           ir.Constant(i32, 0x7F800000))


def _libm_function(module: ir.Module, name: str) -> tuple[ir.IRBuilder, ir.Function]:
    f32 = ir.FloatType()
    args = [f32, f32] if name != "roundevenf" else [f32]
    fn = ir.Function(module, ir.FunctionType(f32, args), name)
    fn.linkage = "weak"
    return ir.IRBuilder(fn.append_basic_block()), fn


def _emit_minmax(module: ir.Module, name: str) -> None:
    """fmaximumf / fminimumf with integer operations only (nothing in them becomes a call
    again): a NaN argument is returned, -0 < +0."""
    b, fn = _libm_function(module, name)
    i32 = ir.IntType(32)
    x, y = fn.args
    xi, yi = b.bitcast(x, i32), b.bitcast(y, i32)
    op = ">" if name == "fmaximumf" else "<"
    pick = b.select(b.icmp_signed(op, _ordered_key(b, xi), _ordered_key(b, yi)), x, y)
    b.ret(b.select(_is_nan(b, xi), x, b.select(_is_nan(b, yi), y, pick)))


def _emit_roundeven(module: ir.Module, name: str) -> None:
    """roundevenf: |x| < 2**23 rounds to an integer, ties to even, by adding and subtracting
    2**23 (the float addition rounds to nearest even), sign kept (-0.4 -> -0); larger
    magnitudes, infinities and NaNs are already integers (or NaN) and come back as they are."""
    from ...backends.cpu.llvm import intrinsic

    b, fn = _libm_function(module, name)
    f32 = ir.FloatType()
    (x,) = fn.args
    fabs = intrinsic(module, "llvm.fabs", [f32], f32, [f32])
    copysign = intrinsic(module, "llvm.copysign", [f32], f32, [f32, f32])
    a = b.call(fabs, [x])
    two23 = ir.Constant(f32, float(1 << 23))
    r = b.call(copysign, [b.fsub(b.fadd(a, two23), two23), x])
    b.ret(b.select(b.fcmp_ordered("<", a, two23), r, x))


def _emit_powf(module: ir.Module, name: str) -> None:
    """powf (Pow, LRN's power) as exp(y log|x|) with the cpu backend's own float32 log and exp
    (branch-free polynomials, about 1 ulp each; no call, no double: unicorn's Cortex-M7 has no
    double-precision unit): relative error about |y log x| * 2**-24 more, within 1e-5 for any
    result float32 can hold. C99's special cases, where the formula alone would give a NaN or
    the wrong sign: y = 0 or x = 1 give 1 (even for a NaN), x = -1 with an infinite y gives
    1, a negative x with an odd integer y negates the result, a finite negative x with a
    finite non-integer y is NaN."""
    from ...backends.cpu.llvm import intrinsic
    from ...backends.cpu.math import _exp, _log

    b, fn = _libm_function(module, name)
    f32 = ir.FloatType()
    x, y = fn.args

    def call(op: str, *args: ir.Value) -> ir.Value:
        return b.call(intrinsic(module, op, [f32], f32, [f32] * len(args)), list(args))

    ax = call("llvm.fabs", x)
    mag = _exp(b, b.fmul(y, _log(b, ax)))
    half = b.fmul(y, ir.Constant(f32, 0.5))
    integer = b.fcmp_ordered("==", call("llvm.trunc", y), y)  # false for inf, NaN
    odd = b.and_(integer, b.fcmp_ordered("!=", call("llvm.trunc", half), half))
    negative = b.fcmp_ordered("<", x, ir.Constant(f32, 0.0))  # -0 is not
    signed = b.select(odd, call("llvm.copysign", mag, x), mag)
    finite_y = b.fcmp_ordered("<", call("llvm.fabs", y), ir.Constant(f32, math.inf))
    finite_x = b.fcmp_ordered("<", ax, ir.Constant(f32, math.inf))
    bad = b.and_(b.and_(negative, finite_x), b.and_(finite_y, b.not_(integer)))
    r = b.select(bad, ir.Constant(f32, math.nan), signed)
    one = ir.Constant(f32, 1.0)
    unit = b.or_(b.fcmp_ordered("==", x, one),
                 b.and_(b.fcmp_ordered("==", x, ir.Constant(f32, -1.0)), b.not_(finite_y)))
    r = b.select(b.or_(unit, b.fcmp_ordered("==", y, ir.Constant(f32, 0.0))), one, r)
    b.ret(r)


_LIBM_GAPS = {"fmaximumf": _emit_minmax, "fminimumf": _emit_minmax,
              "roundevenf": _emit_roundeven, "powf": _emit_powf,
              **{name: emit_libm for name in LIBM_FUNCTIONS}}  # asinf ... atanhf: libm.py


def _wasm_imports(obj: bytes) -> set[str]:
    """The functions a wasm object file imports: its undefined symbols (the import section,
    id 2: module name, field name, kind, then a kind-dependent description)."""
    from .toolchain import _leb

    def name(pos: int) -> tuple[str, int]:
        n, pos = _leb(obj, pos)
        return obj[pos:pos + n].decode(), pos + n

    def limits(pos: int) -> int:
        flags = obj[pos]
        _, pos = _leb(obj, pos + 1)
        return _leb(obj, pos)[1] if flags & 1 else pos

    found: set[str] = set()
    pos = 8
    while pos < len(obj):
        kind, (size, pos) = obj[pos], _leb(obj, pos + 1)
        end = pos + size
        if kind == 2:
            count, pos = _leb(obj, pos)
            for _ in range(count):
                _, pos = name(pos)
                field, pos = name(pos)
                what, pos = obj[pos], pos + 1
                if what == 0:  # a function: its type index
                    found.add(field)
                    pos = _leb(obj, pos)[1]
                elif what == 1:  # a table: reference type, limits
                    pos = limits(pos + 1)
                elif what == 2:  # a memory: limits
                    pos = limits(pos)
                elif what == 3:  # a global: value type, mutability
                    pos += 2
                else:  # a tag: attribute, type index
                    pos = _leb(obj, pos + 1)[1]
        pos = end
    return found


def undefined_symbols(obj: bytes, target: Target) -> set[str]:
    """The symbols an object file leaves undefined (ELF; wasm32: the functions it
    imports)."""
    if target.family == "wasm32":
        return _wasm_imports(obj)
    import io

    from elftools.elf.elffile import ELFFile

    symtab = ELFFile(io.BytesIO(obj)).get_section_by_name(".symtab")
    return {s.name for s in symtab.iter_symbols()
            if s.name and s["st_shndx"] == "SHN_UNDEF"} if symtab else set()


def libm_object(name: str, target: Target, needed: set[str]) -> bytes | None:
    """An object defining the functions of ``needed`` that compiler-rt lacks (None if none
    is needed)."""
    from ...backends.cpu.llvm import emit_object, new_module

    gaps = needed & set(_LIBM_GAPS)
    if not gaps:
        return None
    while True:  # until what the object calls is in it too (powf's exp rounds: roundevenf)
        module = new_module(f"{name}_libm", target)
        for fn in sorted(gaps):
            _LIBM_GAPS[fn](module, fn)
        obj = emit_object(module, reloc="static")
        more = undefined_symbols(obj, target) & set(_LIBM_GAPS) - gaps
        if not more:
            return obj
        gaps |= more


def _escaped(data: np.ndarray) -> str:
    """``data`` (uint8) as the body of an LLVM ``c"..."`` string: every byte ``\\XX`` (fast
    for megabytes, unlike a loop over bytes)."""
    hexed = np.frombuffer(data.tobytes().hex().upper().encode(), np.uint8).reshape(-1, 2)
    out = np.empty((len(hexed), 3), np.uint8)
    out[:, 0] = ord("\\")
    out[:, 1:] = hexed
    return out.tobytes().decode()


def weights_object(name: str, blob: np.ndarray, target: Target) -> bytes:
    """An object file for ``target`` defining ``const uint8_t <name>_weights[]`` (64-byte
    aligned, in .rodata) with the bytes of ``blob``."""
    import llvmlite.binding as llvm

    from ...backends.cpu.llvm import new_module, target_machine

    head = new_module(f"{name}_weights", target)
    data = blob if blob.size else np.zeros(1, np.uint8)
    text = (f'target triple = "{head.triple}"\ntarget datalayout = "{head.data_layout}"\n'
            f'@"{name}_weights" = constant [{data.size} x i8] c"{_escaped(data)}", align 64\n')
    ref = llvm.parse_assembly(text)
    ref.verify()
    return target_machine(target=target).emit_object(ref)


def _check_fits(name: str, target: Target, weights: int, arena: int) -> None:
    """A ``Sw2cError`` before linking when the weights cannot fit the part's flash or the
    arena and stack its RAM (the linker would say so less plainly)."""
    if not target.bare_metal:
        return
    flash, ram = target.region("flash").size, target.region("ram").size
    if weights > flash:
        raise Sw2cError(f"{name}'s weights take {weights:,} bytes; {target.name} has "
                        f"{flash:,} bytes of flash")
    if arena + target.stack_bytes > ram:
        raise Sw2cError(f"{name} needs a {arena:,}-byte arena and a {target.stack_bytes:,}-"
                        f"byte stack; {target.name} has {ram:,} bytes of RAM")


class Fp32Build(EmulatedBuild):
    """The float program of ``graph`` built for ``target`` in ``directory`` (a new temporary
    one if None): ``objects`` are the code (``<name>.o``), the weights (``<name>_weights.o``)
    and, if needed, math functions (``<name>_libm.o``); ``binary`` the linked test program;
    the emulator starts on the first call, so a target without one (Cortex-M55) still builds
    and reports its size."""

    def __init__(self, graph: Any, name: str, target: Target, winograd: str,
                 dump_ir: str | os.PathLike | None = None,
                 directory: str | os.PathLike | None = None) -> None:
        from ...backends.cpu.codegen import generate
        from ...ir.buffers import aligned_buffer
        from ...passes.cost import count_macs
        from ...passes.pipeline import cpu_pipeline, run_pipeline

        self.name, self.target = name, target
        self.graph = run_pipeline(graph, cpu_pipeline(winograd), dump_dir=dump_ir)
        self.macs = count_macs(self.graph)
        program = generate(self.graph, name, 1, target=target)  # no threads on these chips
        self.program = program
        self.inputs = [(v.name, v.type.shape, v.type.dtype) for v in self.graph.inputs]
        self.outputs = [(o, self.graph.type_of(o).shape, self.graph.type_of(o).dtype)
                        for o in self.graph.outputs]
        _check_fits(name, target, program.weights.size, program.plan.arena_bytes)
        _add_run(program.module, name, program.plan.arena_bytes, program.weights.size,
                 len(self.inputs), len(self.outputs))
        self._open_directory(target.name, directory)
        try:
            tm, ref = optimized(program.module, target)  # NaN-exact compares on MVE
            code = tm.emit_object(ref)
        except RuntimeError as e:  # LLVM rejected what we generated: our bug, said plainly
            raise CompileError(f"LLVM failed on the code generated for {name} on "
                               f"{target.name}: {e}") from e
        blob = aligned_buffer(program.weights.size)
        program.weights.write(blob)
        self.code = self.directory / f"{name}.o"
        self.code.write_bytes(code)
        self.weights = self.directory / f"{name}_weights.o"
        self.weights.write_bytes(weights_object(name, blob, target))
        self.objects = [self.code, self.weights]
        libm = libm_object(name, target, undefined_symbols(code, target))
        if libm is not None:
            self.objects.append(self.directory / f"{name}_libm.o")
            self.objects[-1].write_bytes(libm)
        try:
            self.binary: Binary = build(target, [], [f"{name}_run"],
                                        objects=self.objects,
                                        directory=self.directory, name=name)
        except CrossCompileError as e:
            missing = re.findall(r"undefined symbol: (\w+)", str(e))
            if not missing:
                raise
            raise CrossCompileError(
                f"{name} on {target.name} calls {', '.join(sorted(set(missing)))}, which a "
                "freestanding build has no library for (compiler-rt has no C math library): "
                "the model uses an operator sw2c lowers to a libm call on this target") from e

    def call(self, arrays: Sequence[np.ndarray], count: bool = False,
             cap: int | None = None) -> Call:
        """``<name>_run`` on ``arrays`` (one per input, of its dtype) in the emulator; ``cap``
        (instructions before it counts as a hang) defaults to ``CAP`` or, for a big model,
        ``CAP_PER_MAC`` per MAC (soft float takes ~150 instructions per MAC)."""
        ins = [np.ascontiguousarray(a, np.dtype(d)) for a, (_, _, d) in zip(arrays, self.inputs)]
        result = self.emulator.call(f"{self.name}_run", ins,
                                    [(s, np.dtype(d)) for _, s, d in self.outputs],
                                    count=count, cap=cap or max(CAP, CAP_PER_MAC * self.macs))
        if result.returned != 0:
            raise EmulationError(f"{self.name} on {self.target.name} returned {result.returned}")
        return result


def export_fp32(fp32: Fp32Build, report: dict[str, Any], directory: str | os.PathLike) -> str:
    """``lib<name>.a`` (the objects linked into the emulated program: code, weights, math
    functions if any), ``<name>.h`` and ``<name>.json`` in ``directory``; returns the
    library's path."""
    from ..export import _header
    from .export import _zig, library_sizes

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    name, target = fp32.name, fp32.target
    members = [path.name for path in fp32.objects]
    for path in fp32.objects:
        shutil.copyfile(path, out / path.name)
    lib = out / f"lib{name}.a"
    lib.unlink(missing_ok=True)  # ar would add to an old archive
    try:  # relative names in the output directory, deterministic mode: no path, no date
        _zig(["ar", "rcsD", lib.name, *members], out, f"archive {name}'s objects")
    finally:
        for member in members:
            (out / member).unlink(missing_ok=True)
    (out / f"{name}.h").write_text(_header(name, fp32.inputs, fp32.outputs, report))
    meta = {**report, "library": library_sizes(target, lib), "header": f"{name}.h",
            "functions": [f"{name}_run"], "inputs": fp32.inputs, "outputs": fp32.outputs,
            "sizes_note": f"library: the objects of lib{name}.a (code, weights, arena); "
                          "text_bytes, rodata_bytes, data_bytes, bss_bytes: the whole program "
                          "the emulator ran (the library and sw2c's start-up code)"}
    (out / f"{name}.json").write_text(json.dumps(meta, indent=1, default=str) + "\n")
    return str(lib)


def _module_class() -> type:
    """``CrossModule``, made on first use: runtime.module imports nothing of runtime.cross."""
    from ..module import Module

    class CrossModule(Module):
        """A float model built for a cross target: ``run`` / ``module(x)`` / ``run_into``
        execute ``<name>_run`` in the target's emulator (``EmulationError`` where there is
        none, e.g. Cortex-M55); ``cross`` is the build (objects, linked program, sizes);
        ``export(DIR)`` writes ``lib<name>.a``, ``<name>.h`` and ``<name>.json``."""

        def __init__(self, fp32: Fp32Build, report: dict[str, Any], exporter: Any) -> None:
            self._describe(fp32.name, fp32.inputs, fp32.outputs, report, exporter)
            self.cross, self.target = fp32, fp32.target

        def _call(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
            with self._lock:
                return self.cross.call(arrays).outputs

        def __repr__(self) -> str:
            return super().__repr__().replace("<sw2c.Module",
                                              f"<sw2c.Module[{self.report['target']}]")

    return CrossModule


_CROSS_MODULE: list[type] = []


def compile_fp32(graph: Any, name: str, target: Target, *, model: Any, verify: bool,
                 dump_ir: str | os.PathLike | None, winograd: str) -> Any:
    """IR graph -> the cpu backend's float code for ``target`` -> a module that runs it in the
    emulator, with instructions per inference measured on one random input and, with
    ``verify``, the outputs checked against onnxruntime as on the host (``verify_module``)."""
    from functools import partial

    from ...passes.cost import count_flops
    from ..verify import index_ranges, random_feeds, verify_module

    fp32 = Fp32Build(graph, name, target, winograd, dump_ir)
    s, plan = fp32.binary.sizes, fp32.program.plan
    report: dict[str, Any] = {
        "name": name, "target": f"cpu:{target.name}", "target_description": target.description,
        "precision": "fp32", "threads": 1, "flops": count_flops(fp32.graph),
        "macs": fp32.macs, "arena_bytes": plan.arena_bytes,
        "weights_bytes": fp32.program.weights.size,
        "text_bytes": s.get(".text", s.get("code", 0)),
        "rodata_bytes": s.get(".rodata", s.get("data", 0)),
        "data_bytes": s.get(".data", 0), "bss_bytes": s.get(".bss", 0),
        "runtime": fp32.binary.runtime, "emulator": target.emulator,
        "vector_lanes_generated": _generated_lanes(fp32.program.module),
    }
    if not _CROSS_MODULE:
        _CROSS_MODULE.append(_module_class())
    module = _CROSS_MODULE[0](fp32, report, partial(export_fp32, fp32, report))
    module.graph, module.plan = fp32.graph, plan
    module.input_ranges = index_ranges(graph)
    why = unavailable(target)
    if why:
        report["instructions_note"] = f"not measured: {why}"
        return module
    feeds = random_feeds(module)
    n = fp32.call([feeds[i] for i, _, _ in fp32.inputs], count=True).instructions
    report.update({"instructions": n,
                   "instructions_per_mac": round(n / max(report["macs"], 1), 3),
                   "instructions_note": NOTE})
    if verify:
        report["verification_error"] = verify_module(module, model)
    return module


def _generated_lanes(module: ir.Module) -> int:
    """The widest float vector in the generated code (the GEMM panels still take the host's
    width: LLVM splits wider vectors into the target's registers)."""
    found = [int(m) for m in re.findall(r"<(\d+) x float>", str(module))]
    return max(found, default=1)
