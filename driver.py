"""The compiler driver: frontend -> passes -> backend -> runtime, with the report."""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from .backends.cpu.codegen import generate
from .backends.cpu.llvm import jit
from .errors import CompileError, ModelError, Sw2cError
from .frontend.limits import check_bytes
from .ir import Graph, Op
from .ir.buffers import aligned_buffer
from .passes.cost import count_flops, count_macs
from .passes.pipeline import cpu_pipeline, run_pipeline
from .passes.winograd import DEFAULT_MODE, check_mode
from .runtime.export import Native, c_name, check_library, export_program
from .runtime.module import Module
from .runtime.pool import team_code
from .runtime.verify import index_ranges, random_feeds, verify_module


def _model_name(model: Any, proto: Any, name: str | None) -> str:
    if name:
        return c_name(name)
    if isinstance(model, (str, os.PathLike)):
        return c_name(Path(model).stem)
    return c_name(proto.graph.name or "model")


def _threads(threads: int | None) -> int:
    if threads is None:
        return 1
    if not isinstance(threads, int) or not 1 <= threads <= 256:
        raise Sw2cError(f"threads must be an integer from 1 to 256, got {threads!r}")
    return threads


def _export(native: Native, module: weakref.ref, sig_in: list, sig_out: list,
            report: dict[str, Any], directory: str | os.PathLike) -> str:
    """Link the code the JIT ran (and its thread team) into lib<name>.so, then run the
    library's own `<name>_run` on the verification inputs: it must give the module's results."""
    lib = export_program(native, directory, sig_in, sig_out, report)
    check_library(lib, module(), random_feeds(module()))
    return lib


def _packed_weights(program: Any) -> np.ndarray:
    """The weights blob of ``program``, allocated and filled."""
    weights = aligned_buffer(program.weights.size)
    program.weights.write(weights)
    return weights


def compile_graph(graph: Graph, name: str, *, target: str = "cpu", threads: int | None = None,
                  dump_ir: str | os.PathLike | None = None,
                  started: float | None = None, profile: bool = False,
                  winograd: str = DEFAULT_MODE) -> Module:
    """IR graph -> passes -> LLVM -> a JIT-compiled Module with its report; with
    ``profile``, per-kernel cycle counters in ``module.profile`` (backends/cpu/profile.py)."""
    started = time.perf_counter() if started is None else started
    threads = requested = _threads(threads)
    optimized = run_pipeline(graph, cpu_pipeline(winograd), dump_dir=dump_ir)
    program = generate(optimized, name, threads, profile=profile)
    threads = program.threads  # small models run on one thread whatever was asked
    check_bytes(program.plan.arena_bytes, f"the arena of {name}")
    objects: list[bytes] = []  # the object code the JIT loads: export links it as it is
    # the weights are packed on a second core while LLVM compiles (both release the GIL):
    # VGG-19's 815 MB take about as long as its code
    with ThreadPoolExecutor(1) as pool:
        packing = pool.submit(_packed_weights, program)
        try:
            engine = jit(program.module, objects)
        except RuntimeError as e:  # LLVM rejected what we generated: our bug, said plainly
            raise CompileError(f"LLVM failed on the code generated for {name}: {e}") from e
        finally:
            weights = packing.result()
    plan = program.plan
    report: dict[str, Any] = {
        "name": name,
        "target": target,
        "threads": threads,
        "threads_requested": requested,
        "flops": count_flops(optimized),
        "macs": count_macs(optimized),
        "arena_bytes": plan.arena_bytes,
        "arena_lower_bound_bytes": plan.lower_bound_bytes,
        "arena_naive_bytes": plan.naive_bytes,
        "weights_bytes": program.weights.size,
        "kernels": sum(n.op is Op.KERNEL and n.name not in plan.elided for n in optimized.nodes),
    }
    sig_in = [(v.name, v.type.shape, v.type.dtype) for v in optimized.inputs]
    sig_out = [(o, optimized.type_of(o).shape, optimized.type_of(o).dtype)
               for o in optimized.outputs]
    symbol = engine.get_function_address
    module = Module(name, symbol(f"{name}_entry"), weights, plan.arena_bytes, sig_in, sig_out,
                    report, keepalive=[engine],
                    team=team_code(symbol, name, threads, program.sync_words),
                    argv=symbol(f"{name}_argv"))
    native = Native(name, tuple(objects), weights, plan.arena_bytes, threads, program.sync_words)
    # a weak reference: the module owns its exporter, which must not keep it (and its
    # worker threads) alive
    module._exporter = partial(_export, native, weakref.ref(module), sig_in, sig_out, report)
    module.graph, module.plan = optimized, plan  # for `sw2c inspect`
    if profile:
        from .backends.cpu.profile import KernelProfile

        module.profile = KernelProfile(engine, name, report["kernels"])
    report["compile_seconds"] = round(time.perf_counter() - started, 3)
    return module


def compile_asic(graph: Graph, name: str, *, spec: str | None, calibration: Any,
                 dump_ir: str | os.PathLike | None, started: float, precision: str = "int8",
                 min_sqnr_db: float | None = None) -> Module:
    """IR graph -> int8 program for the target described by ``spec`` -> a simulated Module.
    ``precision``: int8, int16 (16x8) or auto (per layer, to ``min_sqnr_db``)."""
    from .backends.asic.build import build
    from .backends.asic.report import layers, totals
    from .backends.asic.target import load_target
    from .runtime.simulator import SimulatedModule, Simulator

    for v in graph.inputs:  # the int8 pipeline quantizes float32 activations; integer
        # inputs (token ids, masks) are coded as they are (backends/asic/sequence.py)
        if v.type.dtype != "float32" and v.type.dtype not in ("int64", "int32"):
            raise ModelError(
                f"input '{v.name}' is {v.type.dtype}: target 'asic' compiles float32 inputs "
                "only (token ids, masks and other typed tensors run on target 'cpu')")
    b = build(graph, load_target(spec), calibration, dump_ir, precision, min_sqnr_db)
    report: dict[str, Any] = {"name": name, "threads": 1, "flops": count_flops(b.graph),
                              **totals(b), "layers": layers(b)}
    module = SimulatedModule(name, b.program, Simulator(b.program, b.plan, b.costs), report,
                             exporter=partial(_export_c, b, name, report),
                             dtypes={v.name: v.type.dtype for v in graph.inputs})
    module.input_ranges = index_ranges(graph)  # valid token ids, for random verify inputs
    module.graph, module.plan, module.build = b.graph, b.plan, b
    report["compile_seconds"] = round(time.perf_counter() - started, 3)
    return module


def _export_c(b: Any, name: str, report: dict[str, Any], directory: str | os.PathLike) -> str:
    """<name>.c, <name>.h and <name>.json: portable C99 that matches the simulator bit for bit."""
    import json

    from .backends.asic.emit_c import emit_c

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    source, header = emit_c(b.program, b.plan, name)
    (out / f"{name}.c").write_text(source)
    (out / f"{name}.h").write_text(header)
    (out / f"{name}.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    return str(out / f"{name}.c")


def compile_model(model: Any, *, target: str, input_shapes: Mapping[str, Sequence[int]] | None,
                  threads: int | None, calibration: Any, verify: bool, name: str | None,
                  dump_ir: str | os.PathLike | None, started: float,
                  joins: Sequence[tuple[str, str]] | None = None,
                  verify_inputs: Mapping[str, Any] | None = None,
                  profile: bool = False, min_sqnr_db: float | None = 10.0,
                  winograd: str = DEFAULT_MODE, precision: str = "fp32") -> Module:
    """The body of ``sw2c.compile``."""
    from .runtime.cross.compile import check_precision

    kind, _, spec = str(target).partition(":")
    if kind not in ("cpu", "asic"):
        raise Sw2cError(f"unknown target '{target}'; available targets: cpu, cpu:NAME (a "
                        "cross target), asic, asic:NAME (a shipped target), asic:PATH.toml")
    if kind == "asic":  # int8 (or the default word fp32), int16 or auto
        from .backends.asic.precision import check_precision as check_asic_precision

        asic_precision = check_asic_precision(precision, min_sqnr_db)
    else:
        check_precision(kind, spec, precision)
    if kind == "cpu" and spec:  # a cross target: a known name (the error lists them) first
        from .runtime.cross import lookup

        lookup(spec)
    winograd = check_mode(winograd)
    models = list(model) if isinstance(model, (list, tuple)) else [model]
    if not models:
        raise Sw2cError("no model given")
    if joins and len(models) < 2:
        raise Sw2cError(f"joins (--join) wire one model's outputs into the next one's inputs: "
                        f"they need two or more models, got {len(models)}")
    from .frontend import import_model, load_model
    from .frontend.importer import dynamic_dims
    from .frontend.join import join_models

    protos = [load_model(m) for m in models]
    proto = protos[0] if len(protos) == 1 else join_models(protos, joins)
    graph = import_model(proto, input_shapes)
    if kind == "cpu" and spec:  # runtime/cross: int8 C for a microcontroller, in an emulator
        from .runtime.cross.compile import compile_cross

        module = compile_cross(graph, _model_name(models[0], protos[0], name), target=spec,
                               precision=precision, calibration=calibration, verify=verify,
                               dump_ir=dump_ir, started=started, winograd=winograd,
                               threads=threads, model=models[0] if len(models) == 1 and isinstance(
                                   models[0], (str, os.PathLike)) else proto)
        module.report["dynamic_dims"] = dynamic_dims(proto)
        return module
    if kind == "asic":
        from .backends.asic.accuracy import check_min_sqnr

        floor = check_min_sqnr(min_sqnr_db)
        module = compile_asic(graph, _model_name(models[0], protos[0], name), spec=spec or None,
                              calibration=calibration, dump_ir=dump_ir, started=started,
                              precision=asic_precision, min_sqnr_db=floor)
        module.report["dynamic_dims"] = dynamic_dims(proto)  # for the wrong-shape hint
        if verify:
            from .runtime.verify import verify_asic

            verify_asic(module, models[0] if len(models) == 1 else proto, min_sqnr_db=floor)
        return module
    module = compile_graph(graph, _model_name(models[0], protos[0], name), target=target,
                           threads=threads, dump_ir=dump_ir, started=started,
                           profile=profile, winograd=winograd)
    module.report["dynamic_dims"] = dynamic_dims(proto)  # for the wrong-shape hint
    module.input_ranges = index_ranges(graph)  # valid ids, for random verification inputs
    if verify:
        # a path lets onnxruntime read external data itself (no 2 GB protobuf limit)
        one_path = len(models) == 1 and isinstance(models[0], (str, os.PathLike))
        module.report["verification_error"] = verify_module(
            module, models[0] if one_path else proto, feeds=verify_inputs)
    return module
