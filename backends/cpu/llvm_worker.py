"""LLVM's optimization pipeline as sw2c runs it, and a worker process that compiles one part
of a program (``partition.split``) to an object file.

Why a process: llvmlite serializes every LLVM call of a process behind one lock, so the parts
of a program compile at once only in processes of their own. This file imports nothing of
sw2c, so the worker, run as a script, starts in about 0.1 s:
stdin = one JSON line of target machine settings, then the LLVM IR text; stdout = the object.
"""

from __future__ import annotations

import json
import sys

import llvmlite.binding as llvm


def optimize_text(text: str, tm: llvm.TargetMachine, opt: int = 3) -> llvm.ModuleRef:
    """Parse, verify and optimize LLVM IR ``text`` for ``tm`` (O3, loop and SLP vectorizers
    on, no unrolling)."""
    ref = llvm.parse_assembly(text)
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


def main() -> None:
    head = sys.stdin.buffer.readline()
    args = json.loads(head)
    text = sys.stdin.buffer.read().decode()
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    opt = args.pop("opt")
    tm = llvm.Target.from_triple(args.pop("triple")).create_target_machine(opt=opt, **args)
    obj = tm.emit_object(optimize_text(text, tm, opt))
    sys.stdout.buffer.write(obj)


if __name__ == "__main__":
    main()
