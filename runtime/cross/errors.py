"""The errors of cross compilation and emulation; each is a ``Sw2cError`` naming what is at
fault."""

from __future__ import annotations

from ...errors import CompileError, Sw2cError, TargetError

EXTRA = "pip install 'sw2c[cross]'"


class UnknownTargetError(TargetError, ValueError):
    """A cross target name sw2c does not know; the message lists the known ones."""


class MissingExtraError(Sw2cError, ImportError):
    """An optional package of the ``cross`` extra (ziglang, unicorn, wasmtime, pyelftools) is
    not installed; the message says how to install it."""


class CrossCompileError(CompileError):
    """The cross toolchain rejected a source or could not link it for the target."""


class EmulationError(Sw2cError):
    """The emulated program faulted, hit the instruction cap, returned an error code, or the
    target has no emulator here."""


def require(module: str, what: str) -> None:
    """Raise ``MissingExtraError`` unless ``module`` can be imported (``what`` says why it is
    needed)."""
    from importlib.util import find_spec

    if find_spec(module) is None:
        raise MissingExtraError(f"{what} needs the Python package '{module}', which is not "
                                f"installed: {EXTRA}")
