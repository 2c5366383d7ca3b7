"""The exceptions a user of sw2c can see. Every user-caused failure is a ``Sw2cError``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager


class Sw2cError(Exception):
    """Base class of every error sw2c raises on purpose."""


class ModelError(Sw2cError):
    """The model file or graph is unreadable, invalid, or outside what sw2c can compile."""


class UnsupportedOpError(ModelError):
    """An operator (type, domain, opset) that sw2c does not implement."""

    def __init__(self, op_type: str, domain: str, node: str, detail: str = "") -> None:
        where = f"node '{node}'" if node else "an unnamed node"
        dom = domain or "ai.onnx"
        msg = f"unsupported operator {dom}::{op_type} at {where}"
        super().__init__(msg + (f": {detail}" if detail else ""))
        self.op_type, self.domain, self.node = op_type, dom, node


class InputError(Sw2cError, ValueError):
    """A feed passed at run time does not match what the compiled module expects."""


class VerificationError(Sw2cError):
    """The compiled module disagrees with onnxruntime (a miscompile; please report it)."""


class CompileError(Sw2cError):
    """Code generation or linking failed."""


class TargetError(Sw2cError):
    """The model does not fit the chosen target (SRAM, weight memory), or the target file is
    unusable."""


class SimulationError(Sw2cError):
    """The simulated accelerator caught an access outside the memory plan (a compiler bug)."""


class AccuracyError(Sw2cError):
    """``verify=True`` on an int8 target: an output's SQNR against onnxruntime's float result
    falls below ``min_sqnr_db`` (quantization lost the model, not a miscompile). The message
    holds the per-layer SQNR table; ``report`` the compile report (``report["layers"]``)."""


class Sw2cWarning(UserWarning):
    """Base class of the warnings sw2c issues on purpose."""


class SaturationWarning(Sw2cWarning):
    """A constant of an int8 layer (bias, requantization multiplier, table) had to be
    saturated at compile time; the message names the layer (its ONNX node)."""


# --- the one funnel for unexpected exceptions -----------------------------------------------
# A raw Python exception escaping sw2c is a bug in sw2c, never the user's fault; it must still
# reach the user as a Sw2cError (the CLI prints one line) that says where it happened.

_INTERNAL = (ArithmeticError, AssertionError, AttributeError, LookupError, NotImplementedError,
             RecursionError, RuntimeError, TypeError, ValueError)


def check_choice(keyword: str, value: object, choices: Iterable[str]) -> str:
    """``str(value)`` if it is one of ``choices``, else a Sw2cError naming the keyword and
    listing them (a compile option such as ``winograd=`` or ``precision=``)."""
    choices = tuple(choices)
    if str(value) not in choices:
        raise Sw2cError(f"{keyword}={value!r}: expected one of "
                        f"{', '.join(repr(c) for c in choices)}")
    return str(value)


@contextmanager
def blame(where: str) -> Iterator[None]:
    """Mark an unexpected exception raised inside with ``where`` (a node or pass name); the
    innermost mark wins. Cheap enough to wrap each node of a loop."""
    try:
        yield
    except Sw2cError:
        raise
    except _INTERNAL as e:
        if not hasattr(e, "sw2c_where"):
            e.sw2c_where = where
        raise


@contextmanager
def internal_errors(task: str) -> Iterator[None]:
    """Turn an unexpected exception inside into a CompileError naming ``task``, the node or pass
    that ``blame`` recorded, the exception itself, and a request to report it."""
    try:
        yield
    except Sw2cError:
        raise
    except _INTERNAL as e:
        where = getattr(e, "sw2c_where", "")
        at = f" at {where}" if where else ""
        raise CompileError(f"internal error while {task}{at}: {type(e).__name__}: {e} -- a bug "
                           "in sw2c; please report it with the model") from e
