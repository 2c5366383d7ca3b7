"""Cross targets: build sw2c's output for microcontrollers, AArch64 and wasm32 with the pip
``ziglang`` toolchain and run it in an instruction-set emulator (``unicorn``, ``wasmtime``; the
Cortex-M55 in the system package ``qemu-system-arm``). All optional: ``pip install
'sw2c[cross]'``; describing targets needs none of it."""

from .errors import CrossCompileError, EmulationError, MissingExtraError, UnknownTargetError
from .targets import TARGETS, Target, host, lookup, names

__all__ = ["TARGETS", "CrossCompileError", "EmulationError", "MissingExtraError", "Target",
           "UnknownTargetError", "host", "lookup", "names"]
