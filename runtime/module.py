"""`Module`: a compiled network behind one native call. Validates feeds, owns the arena."""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import InputError, internal_errors
from .pool import TeamCode, ThreadTeam

Signature = list[tuple[str, tuple[int, ...], str]]


def _address(array: np.ndarray) -> int:
    """The data pointer of a C-contiguous array (the buffer protocol is 3x faster than
    ``array.ctypes.data``, which stays the fallback for read-only or empty arrays)."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(array))
    except (TypeError, ValueError):
        return array.ctypes.data


def _aligned_buffer(nbytes: int) -> np.ndarray:
    """A zeroed uint8 buffer whose data starts on a 64-byte boundary."""
    raw = np.zeros(nbytes + 64, dtype=np.uint8)
    start = -raw.ctypes.data % 64
    return raw[start:start + nbytes]


class Module:
    """A compiled model. ``run(feeds)`` or ``module(*arrays)``; ``inputs``/``outputs`` list
    ``(name, shape, dtype)``; ``report`` holds the compile-time figures; ``export(dir)`` writes
    a shared library and C header; ``sw2c.load(dir)`` reads it back."""

    def __init__(self, name: str, entry: int, weights: np.ndarray | int, arena_bytes: int,
                 inputs: Signature, outputs: Signature, report: dict[str, Any],
                 keepalive: Sequence[Any] = (), exporter: Any = None,
                 team: TeamCode | None = None) -> None:
        self._describe(name, inputs, outputs, report, exporter)
        self._keepalive = list(keepalive)  # the JIT engine or the loaded library
        n = len(inputs) + len(outputs)
        # entry(weights, arena, inputs.., outputs.., team words, thread index, generation)
        self._fn = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * (3 + n), ctypes.c_int64,
                                    ctypes.c_int64)(entry)
        self._team = (ThreadTeam(self._fn, team, 2 + n, self._keepalive)
                      if team is not None else None)
        self._weights = weights
        self._weights_ptr = weights if isinstance(weights, int) else weights.ctypes.data
        self._arena = _aligned_buffer(max(arena_bytes, 64))
        self._arena_ptr = self._arena.ctypes.data

    def _describe(self, name: str, inputs: Signature, outputs: Signature,
                  report: dict[str, Any], exporter: Any) -> None:
        """What every module has, however it runs: signature, report, exporter."""
        self.name = name
        self.graph: Any = None  # the optimized IR and memory plan, when compiled in-process
        self.plan: Any = None
        self.inputs = inputs
        self.outputs = outputs
        self.report = report
        self._exporter = exporter
        self._lock = threading.Lock()  # one run at a time: the arena is shared
        self._input_index = {name: i for i, (name, _, _) in enumerate(inputs)}
        self._dtype = {name: np.dtype(dtype) for name, _, dtype in inputs}

    def _check(self, name: str, array: Any, shape: tuple[int, ...]) -> np.ndarray:
        dtype = self._dtype[name]
        if not isinstance(array, np.ndarray):
            raise InputError(f"input '{name}' must be a numpy array of {dtype}, got "
                             f"{type(array).__name__}")
        if array.dtype != dtype:
            raise InputError(f"input '{name}' has dtype {array.dtype}; this model takes {dtype} "
                             f"(use array.astype(np.{dtype}))")
        if array.shape != shape:
            raise InputError(f"input '{name}' has shape {array.shape}; the module was compiled "
                             f"for {shape}{self._shape_hint(name, array.shape, shape)}")
        if not array.flags.c_contiguous or not array.flags.aligned:
            array = np.ascontiguousarray(array)  # native code reads it densely
        return array

    def _shape_hint(self, name: str, got: tuple[int, ...], want: tuple[int, ...]) -> str:
        """What to do about a feed of the wrong shape: recompile for it only if the model leaves
        the differing dims dynamic (``report['dynamic_dims']``, absent from older exports)."""
        dynamic_dims = self.report.get("dynamic_dims")
        if not isinstance(dynamic_dims, dict) or name not in dynamic_dims:
            return ""
        dynamic = dynamic_dims[name]
        recompile = f" (recompile with input_shapes={{'{name}': {got}}})"
        if dynamic is None:  # the model declares no shape: any shape can be compiled
            return recompile
        if len(got) != len(want):
            return f"; the model takes rank {len(want)}"
        fixed = [i for i, (g, w) in enumerate(zip(got, want)) if g != w and i not in dynamic]
        return f"; the model fixes dim {fixed[0]} at {want[fixed[0]]}" if fixed else recompile

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run on ``feeds`` (input name -> array of the input's dtype); returns outputs by
        name."""
        if not isinstance(feeds, Mapping):
            raise InputError("feeds must be a dict mapping input names to arrays")
        unknown = [k for k in feeds if k not in self._input_index]
        if unknown:
            expected = ", ".join(n for n, _, _ in self.inputs)
            raise InputError(f"unknown input {unknown[0]!r}; the model's inputs are: {expected}")
        arrays = []
        for name, shape, _ in self.inputs:
            if name not in feeds:
                raise InputError(f"missing input '{name}' (shape {shape}, "
                                 f"{self._dtype[name]})")
            arrays.append(self._check(name, feeds[name], shape))
        return dict(zip((n for n, _, _ in self.outputs), self._call(arrays)))

    def _call(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        outs = [np.empty(shape, dtype) if name not in self._input_index
                else arrays[self._input_index[name]].copy() for name, shape, dtype in self.outputs]
        args = (self._weights_ptr, self._arena_ptr, *map(_address, arrays), *map(_address, outs))
        with self._lock:
            if self._team is None:
                self._fn(*args, None, 0, 0)
            else:
                self._team.run(args)
        return outs

    def __del__(self) -> None:
        team = getattr(self, "_team", None)
        if team is not None:
            team.close()

    def __call__(self, *arrays: np.ndarray) -> np.ndarray | tuple[np.ndarray, ...]:
        if len(arrays) != len(self.inputs):
            raise InputError(f"{self.name} takes {len(self.inputs)} input(s), got {len(arrays)}")
        checked = [self._check(n, a, s) for (n, s, _), a in zip(self.inputs, arrays)]
        outs = self._call(checked)
        return outs[0] if len(outs) == 1 else tuple(outs)

    def export(self, directory: str) -> str:
        """Write lib<name>.so, <name>.h and <name>.json to ``directory``; returns the .so path."""
        if self._exporter is None:
            raise InputError(f"module {self.name} was loaded from a library; it cannot be "
                             "exported again (copy its directory instead)")
        with internal_errors(f"exporting {self.name}"):
            return self._exporter(directory)

    def __repr__(self) -> str:
        ins = ", ".join(f"{n}{list(s)}" for n, s, _ in self.inputs)
        outs = ", ".join(f"{n}{list(s)}" for n, s, _ in self.outputs)
        return f"<sw2c.Module {self.name}({ins}) -> {outs}>"
