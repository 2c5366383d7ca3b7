"""LLVM plumbing shared by the CPU backend: the host target machine and JIT/object emission."""

from __future__ import annotations

from functools import lru_cache

import llvmlite.binding as llvm
from llvmlite import ir

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
def host_cpu() -> tuple[str, str]:
    """(cpu name, feature string) of the machine we run on."""
    _init()
    return llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()


def vector_lanes() -> int:
    """fp32 lanes of the widest vector register the host has (16 with AVX-512, 8 with AVX2)."""
    features = host_cpu()[1]
    if "+avx512f" in features:
        return 16
    if "+avx2" in features or "+avx" in features:
        return 8
    return 4


def target_machine(reloc: str = "default", opt: int = 3) -> llvm.TargetMachine:
    """A new host target machine (an MCJIT engine takes ownership of the one it is given)."""
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
    (llvmlite's declare_intrinsic does not know vectors)."""
    full = ".".join([name, *(_mangle(t) for t in overloads)])
    existing = module.globals.get(full)
    if existing is not None:
        return existing
    return ir.Function(module, ir.FunctionType(ret, args), full)


@lru_cache(maxsize=1)
def _data_layout() -> str:
    return str(target_machine().target_data)


def new_module(name: str) -> ir.Module:
    module = ir.Module(name=name)
    module.triple = llvm.get_process_triple()
    module.data_layout = _data_layout()
    return module


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


def emit_object(module: ir.Module) -> bytes:
    """A position-independent object file, for linking into a shared library."""
    tm = target_machine(reloc="pic")
    return tm.emit_object(optimize(module, tm))
