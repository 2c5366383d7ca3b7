"""ONNX -> sw2c IR: ``load_model`` reads and checks a model, ``import_model`` converts it."""

from .importer import import_model
from .load import load_model

__all__ = ["import_model", "load_model"]
