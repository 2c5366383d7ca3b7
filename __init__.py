"""sw2c: compile trained networks (ONNX) to native code with a constant memory plan.

    import sw2c
    module = sw2c.compile("model.onnx")        # verified against onnxruntime
    y = module(x)                               # or module.run({"input": x})
    module.export("build/")                     # libmodel.so + model.h
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import (
    AccuracyError,
    CompileError,
    InputError,
    ModelError,
    SaturationWarning,
    Sw2cError,
    Sw2cWarning,
    TargetError,
    UnsupportedOpError,
    VerificationError,
    internal_errors,
)
from .runtime.export import load
from .runtime.module import Module

__version__ = "0.1.0"

TARGETS = ("cpu", "asic")


def compile(model: Any, *, target: str = "cpu",
            input_shapes: Mapping[str, Sequence[int]] | None = None, threads: int | None = None,
            calibration: Any = None, verify: bool = True, name: str | None = None,
            dump_ir: str | os.PathLike | None = None,
            joins: Sequence[tuple[str, str]] | None = None,
            verify_inputs: Mapping[str, Any] | None = None, profile: bool = False,
            min_sqnr_db: float | None = 10.0, winograd: str = "auto",
            precision: str = "fp32") -> Module:
    """Compile an ONNX model for ``target`` and return a runnable ``Module``.

    Parameters:
        model: a path to an .onnx file or an ``onnx.ModelProto``; or a list of them, compiled
            as one program in which each model's outputs feed the next one's inputs.
        target: ``"cpu"`` (LLVM machine code for this CPU), or ``"asic"`` / ``"asic:NAME"``
            (a shipped target: tiny, edge) / ``"asic:PATH.toml"`` (int8 kernels for a
            simulated accelerator).
        input_shapes: input name -> shape, for inputs whose dims the model leaves dynamic
            (e.g. ``{"input": (1, 3, 224, 224)}``); a dynamic dim not given is 1, with a
            warning naming the input. Dims the model fixes cannot change.
        threads: the team size on cpu, 1 to 256 (default 1): kernels of 1M+ MACs are split
            into chunks the threads share; small models run on one thread whatever is asked.
            ``report["threads"]`` says how many ran; the exported library runs the same team.
        calibration: asic only, the sample inputs that set the int8 ranges: an array, a list
            of arrays or of dicts, a dict of arrays, or an .npz path (default: random inputs,
            with a warning).
        verify: run the result once on random inputs against onnxruntime and raise
            ``VerificationError`` if they disagree (rtol 1e-3); on asic the simulator must also
            equal the integer reference bit for bit, and the int8-vs-fp32 SQNR per output is
            reported; under ``min_sqnr_db`` it raises ``AccuracyError``.
        min_sqnr_db: asic with ``verify``: the lowest int8-vs-fp32 output SQNR (dB) accepted
            (default 10; None: no floor); the error shows the per-layer SQNR table.
        verify_inputs: input name -> array, the inputs ``verify`` runs on (cpu) instead of
            random ones: for integer inputs whose valid values sw2c cannot infer (it draws
            ids below the size of the table they index, and 0/1 for other integer and bool
            inputs, such as masks).
        name: the module's name: the symbol prefix and file stem of its exports
            (``lib<name>.so``, ``<name>_run``); default: the model file's stem, else the
            graph's name; made a C identifier.
        dump_ir: a directory to write the IR to after every pass.
        joins: with a list of models, ``[(output, input), ...]`` pairs saying which output of
            an earlier model feeds which input of the next (default: in order); needs two or
            more models.
        winograd: cpu only: 3x3 stride-1 convs of 32+ channels through Winograd F(4x4, 3x3)
            or F(2x2, 3x3): ``"auto"`` (default: m by output size), ``"off"``, ``"2"``,
            ``"4"``. Faster, at up to 4x the weights of those convs and float32 results that
            differ from a direct conv by ~1e-5 of the output's range.
        precision: ``"fp32"`` (default) or ``"int8"``: with ``target="cpu:NAME"`` (a cross
            target: cortex-m4, rv32imac, aarch64, wasm32 ...) the asic target's int8 program
            as C built for that chip and run in its emulator (``pip install 'sw2c[cross]'``);
            ``report`` gives instructions per inference (not cycles) and section sizes. With
            ``target="asic..."``: ``"int8"`` (the default), ``"int16"`` (int16 activations,
            int8 weights, 64-bit accumulators: TFLite's 16x8) or ``"auto"``: per layer the
            cheapest precision (energy from the target file) whose output SQNR on the
            calibration data meets ``min_sqnr_db`` (``report["layers"][i]["bits"]``).
        profile: cpu only: count cycles per kernel in ``module.profile`` (a
            ``KernelProfile``: ``reset()``, run, ``seconds()``); ``sw2c bench --per-kernel``.

    Raises ``ModelError`` / ``UnsupportedOpError`` for a model sw2c cannot compile,
    ``TargetError`` for one that does not fit the asic target, ``VerificationError`` for a
    disagreement with onnxruntime, ``CompileError`` for a failure in code generation (all
    ``Sw2cError``).
    """
    from .driver import compile_model

    with internal_errors("compiling the model"):
        return compile_model(model, target=target, input_shapes=input_shapes, threads=threads,
                             calibration=calibration, verify=verify, name=name, dump_ir=dump_ir,
                             started=time.perf_counter(), joins=joins,
                             verify_inputs=verify_inputs, profile=profile,
                             min_sqnr_db=min_sqnr_db, winograd=winograd,
                             precision=precision)


__all__ = [
    "AccuracyError", "CompileError", "InputError", "ModelError", "Module", "SaturationWarning",
    "Sw2cError", "Sw2cWarning", "TargetError", "UnsupportedOpError", "VerificationError",
    "__version__", "compile", "load",
]
