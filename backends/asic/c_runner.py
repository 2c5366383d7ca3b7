"""Build the C export of an int8 program with the machine's C compiler and call it.

The exported C (``emit_c``) is a second implementation of every kernel, written separately
from the numpy reference; compiled and run on the same int8 codes it is an independent oracle
for the simulator (``verify=True``), for the tests and for the fuzzer. This module is the one
place that finds the compiler, runs it and calls the library through ctypes.

``CExport(program, plan, name)`` writes ``<name>.c`` / ``<name>.h`` to a temporary directory
and starts ``cc`` in the background, so the caller can do other work while it compiles; the
first ``run_int8`` / ``run`` waits for it and loads the library.
"""

from __future__ import annotations

import ctypes
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import numpy as np

from ...errors import CompileError
from .emit_c import emit_c
from .plan import AsicPlan
from .program import QProgram

CFLAGS = ("-std=c99", "-O2", "-shared", "-fPIC")
_PROBE = "#include <stdint.h>\nint32_t sw2c_probe(int32_t x) { return x + 1; }\n"


def find_compiler() -> tuple[list[str] | None, str]:
    """The C compiler command (``$CC`` if set, else ``cc``), or None and why there is none."""
    env = os.environ.get("CC", "").strip()
    cmd = shlex.split(env) if env else ["cc"]
    path = shutil.which(cmd[0])
    if path is None:
        where = f"$CC={env!r} is not on PATH" if env else "no 'cc' on PATH and $CC is unset"
        return None, f"no C compiler: {where}"
    return [path, *cmd[1:]], ""


def compiler_works(cc: Sequence[str], flags: Sequence[str] = CFLAGS) -> str:
    """'' if ``cc`` builds a trivial C99 shared library, else its error: tells a broken or
    foreign toolchain (no libc headers, cross compiler) from C that sw2c got wrong."""
    with tempfile.TemporaryDirectory(prefix="sw2c_cc_probe_") as tmp:
        src = Path(tmp) / "probe.c"
        src.write_text(_PROBE)
        try:
            res = subprocess.run([*cc, *flags, "-o", str(Path(tmp) / "probe.so"), str(src)],
                                 capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            return str(e)
        return "" if res.returncode == 0 else (res.stderr.strip() or f"exit {res.returncode}")


class CExport:
    """``emit_c(program, plan, name)`` compiled by ``cc`` (a path, or a command as a list;
    ``find_compiler()`` if None) with ``flags`` into a shared library in a temporary
    directory, loaded with ctypes.

    Compilation starts on construction and runs in the background; ``wait()`` (called by
    ``run_int8`` and ``run``) raises ``CompileError`` with the compiler's message if it
    rejects the source. ``warnings`` holds what the compiler printed. Use as a context manager
    (or call ``close()``): it unloads the library and removes the directory, so a fuzzer can
    build thousands in one process."""

    def __init__(self, program: QProgram, plan: AsicPlan, name: str,
                 cc: str | Sequence[str] | None = None, flags: Sequence[str] = CFLAGS) -> None:
        if cc is None:
            cc, why = find_compiler()
            if cc is None:
                raise CompileError(why)
        self.program, self.name = program, name
        self.cc = [cc] if isinstance(cc, str) else list(cc)
        self.source, self.header = emit_c(program, plan, name)
        self.directory = Path(tempfile.mkdtemp(prefix="sw2c_c_"))
        src = self.directory / f"{name}.c"
        src.write_text(self.source)
        (self.directory / f"{name}.h").write_text(self.header)
        self.library = self.directory / f"lib{name}.so"
        self.warnings = ""
        self._dll: ctypes.CDLL | None = None
        try:
            self._process: subprocess.Popen | None = subprocess.Popen(
                [*self.cc, *flags, "-o", str(self.library), str(src)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        except OSError as e:
            self.close()
            raise CompileError(f"cannot run the C compiler {self.cc[0]}: {e}") from e

    def wait(self) -> ctypes.CDLL:
        """Wait for the compiler and load the library (once)."""
        if self._dll is not None:
            return self._dll
        if self._process is None:
            raise CompileError(f"the C export of {self.name} is closed")
        _, err = self._process.communicate()
        code, self._process = self._process.returncode, None
        self.warnings = err.strip()
        if code != 0:
            raise CompileError(f"{self.cc[0]} rejected the C export of {self.name} "
                               f"(exit {code}): {self.warnings[:800]}")
        self._dll = ctypes.CDLL(str(self.library))
        return self._dll

    def call(self, symbol: str, arrays: Sequence[np.ndarray]) -> None:
        """Call ``int symbol(void *, ...)`` on C-contiguous arrays; it must return 0."""
        fn = getattr(self.wait(), symbol)
        code = fn(*(ctypes.c_void_p(a.ctypes.data) for a in arrays))
        if code != 0:
            raise CompileError(f"{symbol} returned {code}")

    def _outputs(self, dtype: type | None) -> list[np.ndarray]:
        """Output arrays of ``dtype`` (None: each output's code type, int8 or int16)."""
        ts = [self.program.tensors[n] for n in self.program.outputs]
        return [np.empty(t.shape, dtype or t.dtype) for t in ts]

    def run_int8(self, qfeeds: Sequence[np.ndarray]) -> list[np.ndarray]:
        """``<name>_run_int8``: int8 codes in (one array per input), int8 codes out (int16
        for 16-bit tensors)."""
        ts = [self.program.tensors[n] for n in self.program.inputs]
        ins = [np.ascontiguousarray(q, t.dtype) for q, t in zip(qfeeds, ts)]
        outs = self._outputs(None)
        self.call(f"{self.name}_run_int8", [*ins, *outs])
        return outs

    def run(self, feeds: Sequence[np.ndarray]) -> list[np.ndarray]:
        """``<name>_run``: float32 in, quantized and dequantized by the C, float32 out."""
        ins = [np.ascontiguousarray(x, np.float32) for x in feeds]
        outs = self._outputs(np.float32)
        self.call(f"{self.name}_run", [*ins, *outs])
        return outs

    def close(self) -> None:
        """Stop the compiler if it still runs, unload the library, remove the directory."""
        if self._process is not None:
            self._process.kill()
            self._process.communicate()
            self._process = None
        if self._dll is not None:
            import _ctypes

            # unload now: a fuzzer loads thousands of libraries into one process
            unload = getattr(_ctypes, "dlclose", None) or _ctypes.FreeLibrary
            unload(self._dll._handle)
            self._dll = None
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> CExport:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
