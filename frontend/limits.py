"""The memory limit: a model may not make sw2c allocate more than this for one tensor or for
its arena. Sizes are checked from shapes *before* anything is allocated, so a hostile model
declaring a 2**60-byte tensor is refused at once instead of exhausting the machine."""

from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

from ..errors import ModelError

DEFAULT_LIMIT = 16 << 30  # bytes; SW2C_MEMORY_LIMIT overrides it
SMALL = 1 << 10  # constant inputs up to this many elements are given to shape inference


def memory_limit() -> int:
    """Bytes allowed for one tensor (and for the arena): SW2C_MEMORY_LIMIT, else 16 GiB."""
    text = os.environ.get("SW2C_MEMORY_LIMIT", "")
    try:
        return int(text) if text else DEFAULT_LIMIT
    except ValueError:
        raise ModelError(f"SW2C_MEMORY_LIMIT must be a number of bytes, got '{text}'") from None


def check_bytes(nbytes: int, what: str) -> None:
    """Refuse ``what`` if it would take more than the memory limit."""
    limit = memory_limit()
    if nbytes > limit:
        raise ModelError(f"{what} would need {nbytes:,} bytes, over the memory limit of "
                         f"{limit:,} bytes (set SW2C_MEMORY_LIMIT to allow more)")


def predicted_bytes(node: onnx.NodeProto, inputs: dict[str, np.ndarray], opset: int) -> int:
    """The bytes a node of constant inputs will produce, from ONNX shape inference (0 when
    it cannot tell): sizes that depend on input *values* (ConstantOfShape, Expand, Tile,
    Range, Pad) are known before the node is evaluated."""
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, node.domain)
        types = {k: helper.make_tensor_type_proto(helper.np_dtype_to_tensor_dtype(v.dtype),
                                                  v.shape) for k, v in inputs.items()}
        data = {k: numpy_helper.from_array(v, k) for k, v in inputs.items() if v.size <= SMALL}
        outs = shape_inference.infer_node_outputs(schema, node, types, data)
    except Exception:  # unknown op or inference failure: the evaluator decides
        return 0
    total = 0
    for t in outs.values():
        tt = t.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in tt.shape.dim]
        size = helper.tensor_dtype_to_np_dtype(tt.elem_type).itemsize if tt.elem_type else 4
        total += int(np.prod(dims, dtype=object)) * size
    return total
