"""Differential fuzzing of sw2c's cross targets (``target="cpu:NAME"``) on fuzz.py's graphs.

Each seed is one case: a precision (``seed % 2``: fp32, int8) and a cross target (the next
bits of the seed pick one of ``TARGETS``, or of ``--target``'s). The graph is compiled for that
chip, linked with zig and run in its emulator (unicorn, wasmtime; qemu-system-arm for
``--target cortex-m55``), then:

* fp32: the graph is ``fuzz.random_model(seed)``; the emulator's outputs on
  ``fuzz.random_feeds(seed)`` must equal onnxruntime's within ``verify``'s tolerance (rtol
  1e-3 of the largest finite output; NaN where onnxruntime has NaN, its payload and sign not
  compared; ints and bools exactly);
* int8: the graph is ``fuzz.random_model(seed, fuzz_asic.ASIC_WEIGHTS)`` (biased toward what
  the int8 program lowers; float inputs: not fuzz_asic's token-id models), calibrated on
  fuzz_asic's feeds; the emulated C's int8 codes must equal the simulator's bit for bit on
  the quantized test feed, seeded random codes and all -128 / all 127 (every requantization
  saturates somewhere), and its float entry (``<name>_run``: the C's quantize / dequantize
  boundary) must give the simulator's dequantized outputs exactly, on the test feed and on a
  saturating one.

Outcomes that are not failures: "ok" and "skipped" (an op or a size the int8 program does not
take, a model too big for the chip's flash, RAM or stack). The shrinker, the child-process
isolation and the soak are fuzz.py's. The command line::

    python -m sw2c.benchmarks.fuzz_cross --count 400 [--seed 0] [--target cortex-m4 ...]
        [--precision fp32|int8] [--minutes 20]
    python -m sw2c.benchmarks.fuzz_cross --replay benchmarks/fuzz_failures_cross/123.onnx

Minimized failures are saved to ``benchmarks/fuzz_failures_cross/``; their message starts with
the case's target and precision (``[cortex-m4 fp32]``); replay with the soak's ``--target`` /
``--precision`` flags, which decide what a seed is.
"""

from __future__ import annotations

import re
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import onnx

from . import fuzz, fuzz_asic
from .fuzz import Failure

FAILURE_DIR = Path(__file__).resolve().parent / "fuzz_failures_cross"
# the targets with a pip emulator (unicorn, wasmtime); the Cortex-M55 runs in qemu-system-arm,
# a system package: --target cortex-m55 where it is installed
TARGETS = ("cortex-m4", "cortex-m7", "cortex-m33", "rv32imac", "rv32imafc", "aarch64",
           "wasm32")
CHOICES = (*TARGETS, "cortex-m55")
PRECISIONS = ("fp32", "int8")
SATURATING = 3e4  # an input value far outside any calibrated range: quantizes to -128 / 127

# mismatch: the emulator disagrees with onnxruntime (fp32) or the simulator (int8); the rest
# as in fuzz.py
KINDS = ("mismatch", fuzz.RAW, "crash", "unsupported", "error", "hang", "generator")
BENIGN = ("ok", "skipped")

# a Sw2cError that says the model is too big for the chip (not a bug: fuzz graphs reach 50k
# elements per tensor, Cortex-M parts have 256 KB of RAM)
_TOO_BIG = re.compile(r"bytes of (flash|RAM)|bytes of stack|too large for the cross build")


def case(seed: int, targets: Sequence[str] = TARGETS,
         precisions: Sequence[str] = PRECISIONS) -> tuple[str, str]:
    """The (target, precision) of case ``seed``: every target meets every precision."""
    precision = precisions[seed % len(precisions)]
    return targets[(seed // len(precisions)) % len(targets)], precision


def cross_model(seed: int, targets: Sequence[str] = TARGETS,
                precisions: Sequence[str] = PRECISIONS) -> onnx.ModelProto:
    """The graph of case ``seed``: fuzz.py's for fp32, fuzz_asic.py's float-input graphs for
    int8 (not its token-id sequence models: the cross int8 build quantizes float32 inputs
    only)."""
    _, precision = case(seed, targets, precisions)
    if precision == "int8":
        return fuzz.random_model(seed, fuzz_asic.ASIC_WEIGHTS)
    return fuzz.random_model(seed)


def _one_threaded(seed: int) -> int:
    return 1  # the cross builds run on one core


# --------------------------------------------------------------------------- fp32


def within_verify_tolerance(name: str, got: np.ndarray, ref: np.ndarray) -> str | None:
    """Why ``got`` is not ``ref`` within ``verify``'s tolerance (floats: rtol 1e-3 and atol
    1e-3 of the largest finite output, NaN where ``ref`` has NaN; ints and bools: exactly),
    or None."""
    from sw2c.runtime.verify import RTOL, finite_scale, relative_error

    got = np.asarray(got)
    if got.shape != ref.shape:
        return f"output '{name}': shape {got.shape}, onnxruntime {ref.shape}"
    if not np.issubdtype(ref.dtype, np.floating):
        bad = int(np.sum(got != ref))
        return f"output '{name}' ({ref.dtype}): {bad} element(s) differ" if bad else None
    r = ref.astype(np.float64)
    if np.allclose(got, r, rtol=RTOL, atol=RTOL * max(finite_scale(r), 1e-6), equal_nan=True):
        return None
    return (f"output '{name}' differs from onnxruntime (max relative error "
            f"{relative_error(got, r):.2e} > {RTOL:g})")


def check_fp32(model: onnx.ModelProto, seed: int, target: str) -> Failure | None:
    """The fp32 build for ``target`` in its emulator against onnxruntime (see the module
    doc); raises GeneratorError when onnxruntime cannot run the model. The oracle is
    fuzz.py's (onnxruntime without graph rewrites): its optimized session, which
    ``verify=True`` uses, computes LayerNormalization's InvStdDev output per row when
    axis=1 (onnxruntime 1.32: shape [1, 4, 1] for [1, 1, 1]), a false mismatch here."""
    import sw2c

    feeds = fuzz.random_feeds(model, seed)
    ref = fuzz.reference(model, feeds)  # a model onnxruntime rejects: the generator's fault
    got = sw2c.compile(model, target=f"cpu:{target}", verify=False).run(feeds)
    problems = [within_verify_tolerance(n, got[n], r) if n in got else f"output '{n}' missing"
                for n, r in ref.items()]
    problems = [p for p in problems if p]
    return Failure("mismatch", "; ".join(problems), "fp32") if problems else None


# --------------------------------------------------------------------------- int8


def int8_cases(program, feeds: dict[str, np.ndarray], seed: int) -> list[list[np.ndarray]]:
    """The int8 inputs compared: the quantized test feed, random codes, all -128, all 127."""
    from sw2c.backends.asic.reference import quantize_inputs

    shapes = [program.tensors[n].shape for n in program.inputs]
    rng = np.random.default_rng(seed)
    return [quantize_inputs(program, [feeds[n] for n in program.inputs]),
            [rng.integers(-128, 128, s, dtype=np.int8) for s in shapes],
            *([np.full(s, v, np.int8) for s in shapes] for v in (-128, 127))]


def _differs(what: str, names: Sequence[str], want: Sequence[np.ndarray],
             got: Sequence[np.ndarray]) -> str | None:
    """Where ``got`` differs from ``want`` (bit for bit), or None."""
    for name, w, g in zip(names, want, got):
        g = np.asarray(g).reshape(w.shape)
        bad = w.view(np.uint8) != g.view(np.uint8) if w.dtype == np.int8 else \
            w.view(np.uint32) != g.astype(np.float32).view(np.uint32)
        if bad.any():
            i = tuple(int(j) for j in np.argwhere(bad)[0])
            return (f"{what}: output '{name}' {w.shape}: {int(bad.sum())}/{w.size} differ "
                    f"from the simulator; first at {i}: emulator {g[i]!r}, simulator {w[i]!r}")
    return None


def check_int8(model: onnx.ModelProto, seed: int, target: str) -> Failure | None:
    """The int8 build for ``target`` in its emulator against the simulator, bit for bit (see
    the module doc)."""
    import sw2c
    from sw2c.backends.asic.reference import quantize_inputs

    feeds = fuzz.random_feeds(model, seed)
    fuzz.reference(model, feeds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # overflow in quantize of huge values, by design
        module = sw2c.compile(model, target=f"cpu:{target}", precision="int8", verify=False,
                              calibration=fuzz_asic.calibration_feeds(model, seed))
        p = module.program
        for k, q in enumerate(int8_cases(p, feeds, seed)):
            want, _ = module.reference.run(q)
            what = ("quantized test feed", "random codes", "all -128", "all 127")[k]
            if (why := _differs(f"int8 {what}", p.outputs, want, module.cross.run_int8(q))):
                return Failure("mismatch", why, "int8")
        huge = {n: np.full_like(x, SATURATING) for n, x in feeds.items()}
        for what, f in (("test feed", feeds), ("saturating feed", huge)):
            floats = [f[n] for n in p.inputs]
            want, _ = module.reference.run(quantize_inputs(p, floats))
            want = [module.dequantize(w, n) for n, w in zip(p.outputs, want)]
            if (why := _differs(f"float entry, {what}", p.outputs, want,
                                module.cross.run(floats))):
                return Failure("mismatch", why, "float entry")
    return None


# --------------------------------------------------------------------------- the check


def classify(model: onnx.ModelProto, seed: int, *, threads: int = 1,
             targets: Sequence[str] = TARGETS, precisions: Sequence[str] = PRECISIONS
             ) -> Failure | None:
    """Case ``seed``'s check of ``model`` (its target and precision from ``case``): None when
    it passes, a Failure of kind "skipped" when the int8 program does not take an op or the
    model does not fit the chip, else the failure. ``threads`` is ignored (the soak passes
    it). Raises GeneratorError when onnxruntime cannot run the model."""
    import sw2c
    from sw2c.errors import TargetError

    target, precision = case(seed, targets, precisions)
    tag = f"[{target} {precision}] "
    try:
        check = check_int8 if precision == "int8" else check_fp32
        failure = check(model, seed, target)
    except fuzz.GeneratorError:
        raise
    except Exception as e:  # noqa: BLE001 (anything but a Sw2cError is a compiler bug)
        if (raw := fuzz.raw_exception(e)) is not None:
            failure = fuzz.raw_failure(raw, f"{target} {precision}")
        elif precision == "int8" and isinstance(e, (sw2c.UnsupportedOpError, TargetError)):
            failure = Failure("skipped", str(e), fuzz_asic._skip_label(model, e))
        elif type(e) is sw2c.Sw2cError and _TOO_BIG.search(str(e)):
            failure = Failure("skipped", str(e), "size")
        elif isinstance(e, sw2c.UnsupportedOpError):
            failure = Failure("unsupported", str(e), type(e).__name__)
        else:
            failure = Failure("error", str(e), type(e).__name__)
    if failure is not None:
        failure.message = tag + failure.message
    return failure


def check_cross(model: onnx.ModelProto, seed: int, **kw) -> Failure | None:
    """``classify``, with its benign outcomes (a skip) as None."""
    failure = classify(model, seed, **kw)
    return None if failure is None or failure.kind in BENIGN else failure


def mode(targets: Sequence[str] = TARGETS, precisions: Sequence[str] = PRECISIONS
         ) -> fuzz.Mode:
    """The soak's mode over ``targets`` x ``precisions`` (partials of module-level
    functions: picklable into the spawned child)."""
    kw = {"targets": tuple(targets), "precisions": tuple(precisions)}
    return fuzz.Mode("sw2c.benchmarks.fuzz_cross", partial(cross_model, **kw),
                     partial(classify, **kw), _one_threaded, KINDS, BENIGN)


# --------------------------------------------------------------------------- soak


@dataclass
class CrossSoak(fuzz.Soak):
    """fuzz.Soak, also counting outcomes per target and precision."""

    mode: fuzz.Mode = field(default_factory=mode)
    per_case: dict = field(default_factory=dict)

    def record(self, seed: int, answer: tuple, worker: fuzz.Isolated) -> None:
        kw = self.mode.model.keywords
        key = case(seed, kw["targets"], kw["precisions"])
        with self.lock:
            counts = self.per_case.setdefault(key, {})
            counts[answer[0]] = counts.get(answer[0], 0) + 1
        super().record(seed, answer, worker)


def print_summary(soak: CrossSoak, done: int, seconds: float) -> None:
    """fuzz.py's summary, then the outcomes per target and precision."""
    fuzz.print_summary(soak, done, seconds)
    print("\nper target and precision:")
    for (target, precision), counts in sorted(soak.per_case.items()):
        print(f"  {target:10s} {precision}: " + ", ".join(f"{k} {n}"
                                                         for k, n in sorted(counts.items())))


def replay(path: Path, seed: int, targets: Sequence[str], precisions: Sequence[str]) -> int:
    """Re-check a saved case; 1 when it still fails."""
    model = onnx.load(path)
    failure = classify(model, seed, targets=targets, precisions=precisions)
    print(onnx.printer.to_text(model.graph))
    target, precision = case(seed, targets, precisions)
    print(f"seed {seed} ({target} {precision}): " +
          (f"{failure.kind}: {failure.message}" if failure else "ok"))
    return 1 if failure is not None and failure.kind not in BENIGN else 0


def _split_options(argv: Sequence[str] | None) -> tuple[list[str], list[str], list[str]]:
    """--target / --precision (repeatable) taken out of ``argv``; the rest is fuzz.py's."""
    import argparse

    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--target", action="append", choices=CHOICES,
                   type=lambda name: name.removeprefix("cpu:"))
    p.add_argument("--precision", action="append", choices=PRECISIONS)
    known, rest = p.parse_known_args(argv)
    return known.target or list(TARGETS), known.precision or list(PRECISIONS), rest


def main(argv: Sequence[str] | None = None) -> int:
    targets, precisions, rest = _split_options(sys.argv[1:] if argv is None else argv)
    the_mode = mode(targets, precisions)
    doc = __doc__ + "\nAlso: --target NAME (repeatable; default every target with an " \
        "emulator), --precision fp32|int8 (repeatable)."
    args = fuzz.parse_args(rest, the_mode, doc, FAILURE_DIR)
    if args.replay is not None:
        seed = int(args.replay.stem) if args.replay.stem.isdigit() else args.seed
        return replay(args.replay, seed, targets, precisions)
    return fuzz.soak_main(args, CrossSoak(args.out, args.shrink_limit, the_mode),
                          print_summary)


if __name__ == "__main__":
    # the importable module's main: the mode pickled into the child processes must name
    # sw2c.benchmarks.fuzz_cross's functions, not __main__'s
    from sw2c.benchmarks.fuzz_cross import main as _main

    sys.exit(_main())
