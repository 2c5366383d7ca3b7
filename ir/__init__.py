"""The sw2c IR: a small set of typed, statically shaped ops around matmul."""

from .graph import Builder, Graph, Node, Value
from .interp import run
from .ops import Binary, Op, Reduce, Unary
from .printer import format_graph
from .shapes import ShapeError, broadcast, infer, keeps_last_axis
from .types import TensorType, type_of
from .verify import VerifyError, verify

__all__ = [
    "Binary", "Builder", "Graph", "Node", "Op", "Reduce", "ShapeError", "TensorType", "Unary",
    "Value", "VerifyError", "broadcast", "format_graph", "infer", "keeps_last_axis", "run",
    "type_of", "verify",
]
