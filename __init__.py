"""sw2c: compile trained networks (ONNX) to native code with a constant memory plan."""

from .errors import (
    CompileError,
    InputError,
    ModelError,
    Sw2cError,
    UnsupportedOpError,
    VerificationError,
)

__version__ = "0.1.0"

__all__ = [
    "CompileError", "InputError", "ModelError", "Sw2cError", "UnsupportedOpError",
    "VerificationError", "__version__",
]
