"""Digits read as sequences (issue 12): each 8x8 image is 8 rows of 8 pixels, read by a small
transformer encoder, an LSTM or a GRU, then a dense readout to the 10 classes. Trained by
backpropagation (examples/train_digits_sequence.py, torch and scikit-learn's digits); the
committed .onnx files are what the tests load, so the suite needs neither.
"""

from __future__ import annotations

import numpy as np
import onnx

from .asic_models import EXAMPLES, digits_data

ROWS = COLS = 8


TRAINED_KINDS = ("transformer", "lstm", "gru")


def trained_file(kind: str) -> onnx.ModelProto:
    """The committed ``examples/digits_<kind>.onnx`` ("transformer", "lstm" or "gru"): trained
    by backpropagation (examples/train_digits_sequence.py, torch) on the 1,437 labeled
    training images of the split digits_data.npz holds out; rows [1, 8, 8] -> logits
    [1, 10]."""
    return onnx.load(EXAMPLES / f"digits_{kind}.onnx")


def digits_rows() -> dict[str, np.ndarray]:
    """calib [256, 8, 8] (the shipped calibration images), test [360, 8, 8] (held out) and
    its labels [360]; float32 pixels in [0, 1]."""
    d = digits_data()
    return {"calib": d["calib"].reshape(-1, ROWS, COLS),
            "test": d["test"].reshape(-1, ROWS, COLS), "labels": d["labels"]}
