"""`Module`: a compiled network behind one native call. Validates feeds, owns the arena."""

from __future__ import annotations

import ctypes
import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import InputError, internal_errors
from ..ir.buffers import aligned_buffer
from .pool import TeamCode, ThreadTeam

Signature = list[tuple[str, tuple[int, ...], str]]


def _address(array: np.ndarray) -> int:
    """The data pointer of a C-contiguous array (the buffer protocol is 3x faster than
    ``array.ctypes.data``, which stays the fallback for read-only or empty arrays)."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(array))
    except (TypeError, ValueError):
        return array.ctypes.data


SMALL_FLOPS = 1_000_000  # below this a call keeps the GIL (it lasts a few microseconds)
OWN_OUTPUT_BYTES = 1 << 16  # module(x) copies outputs up to this size out of its own buffers

Spec = tuple[str, tuple[int, ...], np.dtype, tuple[int, ...]]


def _spec(name: str, shape: tuple[int, ...], dtype: str) -> Spec:
    """(name, shape, dtype, C-contiguous strides) of an input or output."""
    dt, strides = np.dtype(dtype), []
    step = dt.itemsize
    for dim in reversed(shape):  # numpy's own rule; any mismatch only takes the slow path
        strides.insert(0, step)
        step *= dim
    return name, tuple(shape), dt, tuple(strides)


class Module:
    """A compiled model. ``run(feeds)``, ``module(*arrays)`` or, allocating nothing,
    ``run_into(inputs, outputs)``; ``inputs``/``outputs`` list
    ``(name, shape, dtype)``; ``report`` holds the compile-time figures; ``export(dir)`` writes
    a shared library and C header; ``sw2c.load(dir)`` reads it back."""

    def __init__(self, name: str, entry: int, weights: np.ndarray | int, arena_bytes: int,
                 inputs: Signature, outputs: Signature, report: dict[str, Any],
                 keepalive: Sequence[Any] = (), exporter: Any = None,
                 team: TeamCode | None = None, argv: int | None = None) -> None:
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
        self._arena = aligned_buffer(max(arena_bytes, 64))
        self._arena_ptr = self._arena.ctypes.data
        self._bind_words(argv if argv and team is None else None)

    def _bind_words(self, argv: int | None) -> None:
        """The lean call's state: one array of the entry's words (weights, arena, inputs..,
        outputs.., sync, tid, gen) of which a call rewrites only the pointers that changed, and
        `<name>_argv` (backends/cpu/argv.py) that takes it as its one argument. Without that
        symbol (a library exported before it existed) or with a team, the words are spread
        over the entry's own arguments."""
        n = len(self.inputs) + len(self.outputs)
        self._words = (ctypes.c_int64 * (n + 5))(self._weights_ptr, self._arena_ptr)
        self._words_ptr = ctypes.c_void_p(ctypes.addressof(self._words))
        # the array whose address each pointer word holds now, weakly: a hit skips _address
        self._bound: list[Any] = [None] * n
        # a small model's call is shorter than releasing and retaking the GIL
        small = self.report.get("flops", SMALL_FLOPS) < SMALL_FLOPS
        proto = ctypes.PYFUNCTYPE if small else ctypes.CFUNCTYPE
        self._native = proto(None, ctypes.c_void_p)(argv) if argv else None
        # module(x) writes small outputs into buffers of its own and returns copies (cheaper
        # than allocating, then finding the address of, a fresh array every call)
        own = sum(int(np.prod(s)) * np.dtype(d).itemsize for _, s, d in self.outputs)
        self._results = ([np.empty(s, d) for _, s, d in self.outputs] if own <= OWN_OUTPUT_BYTES
                         else None)

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
        # what the positional path compares, computed once: (name, shape, dtype, strides)
        self._in_specs = tuple(_spec(n, s, d) for n, s, d in inputs)
        self._out_specs = tuple(_spec(n, s, d) for n, s, d in outputs)
        # output j is a copy of input i (the model passes an input through): (j, i) pairs
        self._aliases = tuple((j, self._input_index[n]) for j, (n, _, _) in enumerate(outputs)
                              if n in self._input_index)
        self._words: Any = None  # no native entry (the simulated asic module)

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

    def _call(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One run on checked inputs; returns new output arrays."""
        results = self._results
        outs = results if results is not None else [np.empty(s, d) for _, s, d, _ in
                                                     self._out_specs]
        with self._lock:
            self._run(arrays, outs)
            return [o.copy() for o in outs] if results is not None else outs

    def _run(self, arrays: Sequence[np.ndarray], outs: Sequence[np.ndarray],
             check: bool = False) -> None:
        """Point the words at ``arrays`` and ``outs`` (checked, C-contiguous; the caller holds
        the lock) and make the native call. ``check``: the caller's outputs, whose overlap
        with the inputs is checked whenever an array is new."""
        words, bound, n_in, changed = self._words, self._bound, len(arrays), False
        copies = []  # aligned copies of misaligned inputs, alive until the call returns
        for i, a in enumerate((*arrays, *outs)):
            ref = bound[i]
            if ref is None or ref() is not a:  # an array's data pointer is fixed for its life
                address = _address(a)
                if address % a.dtype.alignment:  # an input viewing odd bytes: read a copy
                    a = a.copy()
                    copies.append(a)
                    address = _address(a)
                words[2 + i] = address
                bound[i] = weakref.ref(a)
                changed = True
        if changed and check:
            try:
                self._check_overlap(arrays, outs)
            except InputError:
                bound[:] = [None] * len(bound)  # unchecked: the next call binds afresh
                raise
        for j, i in self._aliases:  # an output that is an input is a copy of it
            if outs[j] is not arrays[i]:
                np.copyto(outs[j], arrays[i])
        if self._native is not None:
            self._native(self._words_ptr)
        elif self._team is not None:
            self._team.run(words[:2 + n_in + len(outs)])
        else:
            self._fn(*words[:2 + n_in + len(outs)], None, 0, 0)

    def __del__(self) -> None:
        team = getattr(self, "_team", None)
        if team is not None:
            team.close()

    def _inputs(self, arrays: Sequence[Any]) -> Sequence[np.ndarray]:
        """``arrays`` checked against the inputs, positionally: the cheapest tests that accept
        exactly what ``_check`` accepts, which handles (and words the error of) the rest."""
        if len(arrays) != len(self._in_specs):
            raise InputError(f"{self.name} takes {len(self._in_specs)} input(s), got "
                             f"{len(arrays)}")
        checked = arrays
        for i, (name, shape, dtype, strides) in enumerate(self._in_specs):
            a = arrays[i]
            if (type(a) is not np.ndarray or (a.dtype is not dtype and a.dtype != dtype)
                    or a.shape != shape or a.strides != strides):
                b = self._check(name, a, shape)
                if b is not a:
                    checked = list(checked) if checked is arrays else checked
                    checked[i] = b
        return checked

    def __call__(self, *arrays: np.ndarray) -> np.ndarray | tuple[np.ndarray, ...]:
        """Run on one array per input, in order; returns the output (a tuple for several)."""
        outs = self._call(self._inputs(arrays))
        return outs[0] if len(outs) == 1 else tuple(outs)

    def run_into(self, inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray]
                 ) -> Sequence[np.ndarray]:
        """Run on ``inputs`` (one array per input, in order, as ``module(*inputs)``) writing
        the results into ``outputs`` (one array per output, in order, each C-contiguous,
        writeable, of the output's shape and dtype, sharing no memory with an input or another
        output); returns ``outputs``. No array is allocated when the inputs are C-contiguous
        and aligned (others are copied first), and a call with the same arrays as the one
        before reuses their addresses: the fastest way to run a small model in a loop. A wrong
        output array raises InputError naming the output."""
        if not isinstance(inputs, (list, tuple)) or not isinstance(outputs, (list, tuple)):
            raise InputError(f"run_into takes a list of input arrays and a list of output "
                             f"arrays, got {type(inputs).__name__} and {type(outputs).__name__}")
        arrays = self._inputs(inputs)
        specs = self._out_specs
        if len(outputs) != len(specs):
            raise InputError(f"{self.name} writes {len(specs)} output(s) "
                             f"({', '.join(s[0] for s in specs)}); run_into got "
                             f"{len(outputs)} output array(s)")
        for i, (name, shape, dtype, strides) in enumerate(specs):
            o = outputs[i]
            if (type(o) is not np.ndarray or o.dtype is not dtype or o.shape != shape
                    or o.strides != strides or not o.flags.writeable):
                self._check_output(name, o, shape, dtype)
        if self._words is None:  # no native entry: run, then copy
            for o, r in zip(outputs, self._call(arrays)):
                np.copyto(o, r)
            return outputs
        with self._lock:
            self._run(arrays, outputs, check=True)
        return outputs

    def _check_output(self, name: str, o: Any, shape: tuple[int, ...], dtype: np.dtype) -> None:
        """Raise InputError saying what is wrong with the array given for output ``name``."""
        if not isinstance(o, np.ndarray):
            raise InputError(f"output '{name}' must be a numpy array of {dtype}, got "
                             f"{type(o).__name__}")
        if o.dtype != dtype:
            raise InputError(f"output '{name}' has dtype {o.dtype}; this model writes {dtype} "
                             f"(allocate it with np.empty({shape}, np.{dtype}))")
        if o.shape != shape:
            raise InputError(f"output '{name}' has shape {o.shape}; this model writes {shape}")
        if not o.flags.c_contiguous or not o.flags.aligned:
            raise InputError(f"output '{name}' must be a C-contiguous, aligned array (native "
                             "code writes it densely); np.empty gives one")
        if not o.flags.writeable:
            raise InputError(f"output '{name}' is read-only")

    def _check_overlap(self, arrays: Sequence[np.ndarray], outs: Sequence[np.ndarray]) -> None:
        """Raise InputError when an output array is misaligned or shares memory with an input
        or another output (the native code would read what it already wrote); an output that
        is an input of the model may be that input's very array."""
        aliases = set(self._aliases)
        for j, o in enumerate(outs):
            name = self._out_specs[j][0]
            if _address(o) % o.dtype.alignment:
                raise InputError(f"output '{name}' must be a C-contiguous, aligned array "
                                 "(native code writes it densely); np.empty gives one")
            others = [(f"input '{s[0]}'", a, i) for i, (s, a) in
                      enumerate(zip(self._in_specs, arrays))]
            others += [(f"output '{self._out_specs[k][0]}'", outs[k], None) for k in range(j)]
            for what, a, i in others:
                if a is o and (j, i) in aliases:
                    continue
                if np.may_share_memory(o, a):  # dense arrays: bounds overlap = memory overlap
                    raise InputError(f"output '{name}' shares memory with {what}; pass an "
                                     "array of its own")

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
