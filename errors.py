"""The exceptions a user of sw2c can see. Every user-caused failure is a ``Sw2cError``."""


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
