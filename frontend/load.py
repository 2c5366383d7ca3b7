"""Reading and validating an ONNX model: every failure is a ModelError naming the file."""

from __future__ import annotations

import math
import os

import onnx
from google.protobuf.message import Message

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
        # the proto already read, not the path: the checker would read and parse the whole
        # file again (0.55 s of VGG-19's compile); the skeleton has no 2 GB limit either
        onnx.checker.check_model(_skeleton(proto))
    except Exception as e:  # ValidationError, or a proto too large to serialize
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"{describe(model)} is not a valid ONNX model: {first}") from e
    return proto


# Initializers of more elements than this reach the checker without their data: it would
# serialize the whole proto first (1.3 s for VGG-19's 548 MB), and it checks nothing of a large
# tensor that the importer does not check again when it reads the data (numpy_helper).
CHECKED_ELEMENTS = 1 << 16


def _copy_fields(src: Message, dst: Message, skip: str) -> None:
    for field, value in src.ListFields():
        if field.name == skip:
            continue
        if field.is_repeated:
            getattr(dst, field.name).extend(value)
        elif field.message_type is not None:
            getattr(dst, field.name).CopyFrom(value)
        else:
            setattr(dst, field.name, value)


def _skeleton(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto`` for the checker: large initializers keep their name and type, not their data."""
    if all(math.prod(t.dims) <= CHECKED_ELEMENTS for t in proto.graph.initializer):
        return proto
    model = onnx.ModelProto()
    _copy_fields(proto, model, skip="graph")
    _copy_fields(proto.graph, model.graph, skip="initializer")
    for t in proto.graph.initializer:
        if math.prod(t.dims) <= CHECKED_ELEMENTS:
            model.graph.initializer.append(t)
        else:
            model.graph.initializer.add(name=t.name, data_type=t.data_type, dims=[0])
    return model
