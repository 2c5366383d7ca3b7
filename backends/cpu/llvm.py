"""LLVM plumbing shared by the CPU backend: target machines and JIT/object emission.

A target is a description (``runtime/cross/targets.Target``): triple, CPU, features, float
ABI. ``None`` (or the ``host`` description) is the machine sw2c runs on, asked of LLVM on first
use, never at import. A module made by ``new_module(name, target)`` carries its target, so the
code generators ask ``target_of(module)`` (math.py's AVX-512 check, team.py's threads) instead
of the host.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from functools import cache, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import llvmlite.binding as llvm
from llvmlite import ir

from .llvm_worker import optimize_text
from .partition import split

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


def prefetch(b: ir.IRBuilder, ptr: ir.Value) -> None:
    """A read prefetch of the cache line at the float pointer ``ptr`` into L1 (a hint: it never
    faults, whatever the address)."""
    fn = intrinsic(b.module, "llvm.prefetch", [F32P], ir.VoidType(), [F32P, I32, I32, I32])
    b.call(fn, [ptr, ir.Constant(I32, 0), ir.Constant(I32, 3), ir.Constant(I32, 1)])


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
    """Parse and optimize ``module`` for ``tm`` (``llvm_worker.optimize_text``)."""
    _init()
    return optimize_text(str(module), tm, opt)


PARALLEL_INSTRUCTIONS = 4000  # a program this large compiles in parts (~0.4 s of LLVM)
WORKER_TIMEOUT = 900  # seconds: a worker that takes longer is abandoned, its part compiled here


def _compile_cores() -> int:
    """Processes a compile may use: the cores this process may run on, or SW2C_COMPILE_JOBS;
    1 where the interpreter is embedded (``sys.executable`` is then not a Python to start)."""
    if not Path(sys.executable or "-").name.lower().startswith("python"):
        return 1
    jobs = os.environ.get("SW2C_COMPILE_JOBS", "")
    if jobs.isdigit() and int(jobs) >= 1:
        return int(jobs)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# runs llvm_worker.py as __main__ with neither its folder (backends/cpu has a math.py) nor the
# current directory on sys.path
_WORKER = "import runpy, sys; sys.path.pop(0); runpy.run_path(sys.argv[1], run_name='__main__')"


def _start_worker(text: str, tm_args: dict) -> tuple[subprocess.Popen, Future] | None:
    """A worker process compiling ``text`` (llvm_worker.py): the future holds its stdout.
    None if no process could be started."""
    try:
        proc = subprocess.Popen([sys.executable, "-c", _WORKER,
                                 str(Path(__file__).with_name("llvm_worker.py"))],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    except OSError:
        return None
    data = (json.dumps(tm_args) + "\n" + text).encode()
    pool = ThreadPoolExecutor(1)  # feeds and drains the pipes while this thread compiles
    future = pool.submit(proc.communicate, data, WORKER_TIMEOUT)
    pool.shutdown(wait=False)
    return proc, future


def _worker_object(worker: tuple[subprocess.Popen, Future] | None, text: str) -> bytes:
    """The worker's object file; compiled here instead if the worker failed (it could not
    start, died or timed out), so a worker never changes what compiles."""
    if worker is not None:
        proc, future = worker
        try:
            out, _ = future.result()
            if proc.returncode == 0 and out:
                return out
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
    tm = target_machine(reloc="pic")
    return tm.emit_object(optimize_text(text, tm))


def jit(module: ir.Module, objects: list[bytes] | None = None) -> llvm.ExecutionEngine:
    """Compile ``module`` in this process; keep the returned engine alive while calling it.
    A large module compiles in parts on the machine's cores (``partition.split``), the
    parts after the first in worker processes, and the JIT links their objects.
    Position-independent code: the JIT maps code anywhere in the address space, where the
    absolute 32-bit addresses of static code (jump tables) would not reach. The object files
    the JIT loaded are appended to ``objects`` when given: linked into a shared library, they
    are the very code that ran here, at no second compile."""
    tm = target_machine(reloc="pic")
    size = sum(len(b.instructions) for f in module.functions for b in f.blocks)
    parts = min(_compile_cores(), 4) if size >= PARALLEL_INSTRUCTIONS else 1
    texts = split(module, parts) if parts > 1 else [str(module)]
    cpu, feats = host_cpu()
    tm_args = {"triple": llvm.get_process_triple(), "cpu": cpu, "features": feats,
               "opt": 3, "reloc": "pic", "codemodel": "default"}
    workers = [_start_worker(text, tm_args) for text in texts[1:]]
    codes = [tm.emit_object(optimize_text(texts[0], tm))]  # while the workers compile theirs
    codes += [_worker_object(worker, text) for worker, text in zip(workers, texts[1:])]
    empty = llvm.parse_assembly(f'target triple = "{llvm.get_process_triple()}"')
    engine = llvm.create_mcjit_compiler(empty, tm)
    for code in codes:
        engine.add_object_file(llvm.ObjectFileRef.from_data(code))
    if objects is not None:
        objects += codes
    engine.finalize_object()
    return engine


def emit_object(module: ir.Module, reloc: str = "pic") -> bytes:
    """An object file of ``module`` for its target (``new_module``): position-independent by
    default, for linking into a shared library; ``reloc="static"`` for a firmware image."""
    tm = target_machine(reloc=reloc, target=target_of(module))
    return tm.emit_object(optimize(module, tm))
