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
    CompileError,
    InputError,
    ModelError,
    Sw2cError,
    UnsupportedOpError,
    VerificationError,
)
from .runtime.export import load
from .runtime.module import Module

__version__ = "0.1.0"

TARGETS = ("cpu", "asic")


def compile(model: Any, *, target: str = "cpu",
            input_shapes: Mapping[str, Sequence[int]] | None = None, threads: int | None = None,
            calibration: Any = None, verify: bool = True, name: str | None = None,
            dump_ir: str | os.PathLike | None = None,
            joins: Sequence[tuple[str, str]] | None = None) -> Module:
    """Compile an ONNX model (path or ModelProto), or a list of them joined into one program
    (each model's outputs feed the next one's inputs, or as ``joins=[(out, in)]`` say), for
    ``target``.

    ``target`` is ``"cpu"`` (LLVM machine code for this CPU) or ``"asic"`` / ``"asic:NAME"`` /
    ``"asic:PATH.toml"`` (int8 kernels for a simulated accelerator; ``calibration`` gives the
    sample inputs: an array, a list of arrays or dicts, a dict, or an .npz path).
    ``input_shapes`` fixes dynamic dims (default 1, with a warning); ``verify`` runs the result
    once against onnxruntime on random inputs and raises VerificationError on disagreement (on
    asic: the simulator must equal the integer reference bit for bit, and the int8-vs-fp32
    SQNR per output is reported); ``dump_ir`` writes the IR after every pass to that directory.
    """
    from .driver import compile_model

    return compile_model(model, target=target, input_shapes=input_shapes, threads=threads,
                         calibration=calibration, verify=verify, name=name, dump_ir=dump_ir,
                         started=time.perf_counter(), joins=joins)


__all__ = [
    "CompileError", "InputError", "ModelError", "Module", "Sw2cError", "UnsupportedOpError",
    "VerificationError", "__version__", "compile", "load",
]
