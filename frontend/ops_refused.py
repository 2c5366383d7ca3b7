"""Ops sw2c folds when their inputs are constants but refuses, with the reason, at run time.

(Constant inputs never reach these converters: the importer folds such nodes with the ONNX
reference implementation first.)
"""

from __future__ import annotations

from .convert import Ctx, Val, converter


@converter("Unique", "NonMaxSuppression")
def data_dependent_shape(cx: Ctx) -> Val:
    """The number of unique values / selected boxes is only known once the data is."""
    raise cx.unsupported("supported only when all its inputs are constants known at compile "
                         "time: its output shape depends on the values")


@converter("BitCast")
def bitcast(cx: Ctx) -> Val:
    """Reinterpreting bits needs a bit-level IR op, which sw2c has not (float16 is even
    computed in float32 between ops)."""
    raise cx.unsupported("supported only when its input is a constant known at compile "
                         "time: reinterpreting the bits of a run-time tensor is not supported")
