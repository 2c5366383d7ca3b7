"""Reading and validating an ONNX model: every failure is a ModelError naming the file."""

from __future__ import annotations

import os

import onnx

from ..errors import ModelError

ModelSource = onnx.ModelProto | str | os.PathLike


def describe(model: ModelSource) -> str:
    """How error messages name ``model``: its path, or its graph name for an in-memory proto."""
    if isinstance(model, onnx.ModelProto):
        return f"model '{model.graph.name}'" if model.graph.name else "the in-memory model"
    return f"'{os.fspath(model)}'"


def load_model(model: ModelSource) -> onnx.ModelProto:
    """Read ``model`` (a path or a ModelProto) and check it with the ONNX checker."""
    if isinstance(model, onnx.ModelProto):
        proto = model
    elif isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.exists(path):
            raise ModelError(f"model file '{path}' does not exist")
        if os.path.isdir(path):
            raise ModelError(f"model path '{path}' is a directory, not an ONNX file")
        try:
            proto = onnx.load(path)
        except Exception as e:  # protobuf DecodeError, OSError, missing external data, ...
            raise ModelError(f"cannot read '{path}' as an ONNX model: {e}") from e
    else:
        raise ModelError(f"expected an onnx.ModelProto or a path, got {type(model).__name__}")
    if not proto.HasField("graph") or not proto.opset_import:
        # protobuf parses many garbage files into an empty message
        raise ModelError(f"{describe(model)} is not an ONNX model (no graph or opset_import)")
    try:
        # a path lets the checker read the file itself (no 2 GB limit, external data found)
        onnx.checker.check_model(proto if isinstance(model, onnx.ModelProto) else path)
    except Exception as e:  # ValidationError, or a proto too large to serialize
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"{describe(model)} is not a valid ONNX model: {first}") from e
    return proto
