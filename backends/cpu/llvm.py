"""LLVM plumbing shared by the CPU backend: target machines and JIT/object emission.

A target is a description (``runtime/cross/targets.Target``): triple, CPU, features, float
ABI. ``None`` (or the ``host`` description) is the machine sw2c runs on, asked of LLVM on first
use, never at import. A module made by ``new_module(name, target)`` carries its target, so the
code generators ask ``target_of(module)`` (math.py's AVX-512 check, team.py's threads) instead
of the host.
"""

from __future__ import annotations

from functools import cache, lru_cache
from typing import TYPE_CHECKING

import llvmlite.binding as llvm
from llvmlite import ir

if TYPE_CHECKING:
    from ...runtime.cross.targets import Target

F32 = ir.FloatType()
I64 = ir.IntType(64)
I32 = ir.IntType(32)
I8 = ir.IntType(8)
F32P = F32.as_pointer()
I8P = I8.as_pointer()


@lru_cache(maxsize=1)
def _init() -> None:
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()


@lru_cache(maxsize=1)
def _init_all() -> None:
    """Every backend LLVM was built with (Arm, AArch64, RISC-V, WebAssembly ...): cross
    targets only, the host needs just its own."""
    _init()
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()


def is_host(target: Target | None) -> bool:
    """True for the machine we run on (``None`` or the ``host`` description)."""
    return target is None or target.family == "host"


@lru_cache(maxsize=1)
def host_cpu() -> tuple[str, str]:
    """(cpu name, feature string) of the machine we run on."""
    _init()
    return llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()


def features(target: Target | None = None) -> str:
    """The LLVM feature string of ``target`` (default the host)."""
    return host_cpu()[1] if is_host(target) else target.feature_string


def _abi_name(target: Target) -> str:
    """The float ABI's name where LLVM wants one beside the triple (RISC-V: ilp32 passes
    floats in integer registers, ilp32f in float ones); '' where the triple says it (Arm's
    eabihf, AArch64, wasm32)."""
    if target.family == "riscv32":
        return "ilp32f" if target.float_abi == "hard" else "ilp32"
    return ""


def target_machine(reloc: str = "default", opt: int = 3,
                   target: Target | None = None) -> llvm.TargetMachine:
    """A new target machine for ``target`` (default the host; an MCJIT engine takes ownership
    of the one it is given)."""
    if not is_host(target):
        _init_all()
        return llvm.Target.from_triple(target.triple).create_target_machine(
            cpu=target.cpu, features=target.feature_string, opt=opt,
            reloc="static" if reloc == "default" else reloc, codemodel="default",
            abiname=_abi_name(target))
    _init()
    cpu, features = host_cpu()
    target = llvm.Target.from_default_triple()
    return target.create_target_machine(cpu=cpu, features=features, opt=opt, reloc=reloc,
                                        codemodel="default")


def _mangle(t: ir.Type) -> str:
    if isinstance(t, ir.VectorType):
        return f"v{t.count}{_mangle(t.element)}"
    if isinstance(t, ir.PointerType):
        return "p0"
    return {"float": "f32", "double": "f64"}.get(str(t), str(t))


def intrinsic(module: ir.Module, name: str, overloads: list[ir.Type], ret: ir.Type,
              args: list[ir.Type]) -> ir.Function:
    """Declare an overloaded LLVM intrinsic, mangling scalar, vector and pointer types
    (llvmlite's declare_intrinsic does not know vectors). Where the target has no fused
    multiply-add (soft float, wasm32 without relaxed SIMD), LLVM would lower llvm.fma to a
    call of the C library's fmaf per MAC: llvm.fmuladd is declared instead, which fuses
    where the hardware can and is a multiply and an add elsewhere."""
    if name == "llvm.fma" and not has_fma(module):
        name = "llvm.fmuladd"
    full = ".".join([name, *(_mangle(t) for t in overloads)])
    existing = module.globals.get(full)
    if existing is not None:
        return existing
    return ir.Function(module, ir.FunctionType(ret, args), full)


@cache
def _data_layout(target: Target | None = None) -> str:
    return str(target_machine(target=target).target_data)


def new_module(name: str, target: Target | None = None) -> ir.Module:
    """An empty module for ``target`` (default the host): its triple and data layout, and the
    description itself for ``target_of``."""
    module = ir.Module(name=name)
    module.triple = llvm.get_process_triple() if is_host(target) else target.triple
    module.data_layout = _data_layout(None if is_host(target) else target)
    module.sw2c_target = None if is_host(target) else target
    return module


def target_of(module: ir.Module) -> Target | None:
    """The target ``module`` was made for (``new_module``); None for the host."""
    return getattr(module, "sw2c_target", None)


def module_features(module: ir.Module) -> str:
    """The LLVM feature string of ``module``'s target."""
    return features(target_of(module))


def has_threads(module: ir.Module) -> bool:
    """Whether ``module``'s target runs threads (the host does; a bare-metal core does not)."""
    target = target_of(module)
    return is_host(target) or target.threads


def has_fma(module: ir.Module) -> bool:
    """Whether ``module``'s target has a fused multiply-add instruction."""
    target = target_of(module)
    return is_host(target) or getattr(target, "has_fma", True)


def optimize(module: ir.Module, tm: llvm.TargetMachine, opt: int = 3) -> llvm.ModuleRef:
    """Parse and optimize ``module`` for ``tm`` (O3, loop and SLP vectorizers on, no
    unrolling)."""
    _init()
    ref = llvm.parse_assembly(str(module))
    ref.verify()
    pto = llvm.create_pipeline_tuning_options(speed_level=opt)
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    # the generators unroll what pays (GEMM micro-kernels, small windows); LLVM's own
    # unroller multiplied compile time by 5 on ShuffleNet for ~10% of run time
    pto.loop_unrolling = False
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(ref, pb)
    return ref


def jit(module: ir.Module, objects: list[bytes] | None = None) -> llvm.ExecutionEngine:
    """Compile ``module`` in this process; keep the returned engine alive while calling it.
    Position-independent code: the JIT maps code anywhere in the address space, where the
    absolute 32-bit addresses of static code (jump tables) would not reach. The object file
    the JIT loaded is appended to ``objects`` when given: linked into a shared library, it is
    the very code that ran here, at no second compile."""
    tm = target_machine(reloc="pic")
    ref = optimize(module, tm)
    engine = llvm.create_mcjit_compiler(ref, tm)
    if objects is not None:
        engine.set_object_cache(lambda _, obj: objects.append(bytes(obj)))
    engine.finalize_object()
    return engine


def emit_object(module: ir.Module, reloc: str = "pic") -> bytes:
    """An object file of ``module`` for its target (``new_module``): position-independent by
    default, for linking into a shared library; ``reloc="static"`` for a firmware image."""
    tm = target_machine(reloc=reloc, target=target_of(module))
    return tm.emit_object(optimize(module, tm))
