"""The `sw2c` command line: compile (default), `bench`, `inspect`."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .errors import AccuracyError, CompileError, Sw2cError

# Messages are written in the Python API's words; these rules say them in the CLI's options.
_CLI_WORDS = (
    (re.compile(r"input_shapes\['([^']*)'\] = \[([-\d, ]*)\]"),
     lambda m: f"--input-shape {m[1]}={_dims(m[2])}"),
    (re.compile(r"input_shapes=\{'([^']*)': \(([-\d, ]*)\)\}"),
     lambda m: f"--input-shape {m[1]}={_dims(m[2])}"),
    (re.compile(r"\binput_shapes\b"), lambda m: "--input-shape"),
    (re.compile(r"^threads must\b"), lambda m: "--threads must"),
)
TRACEBACK_ENV = "SW2C_TRACEBACK"


def _dims(text: str) -> str:
    return ",".join(d.strip() for d in text.split(",") if d.strip())


def cli_words(message: str) -> str:
    """``message`` (from the Python API) with its API parameters said as CLI options:
    ``input_shapes['x'] = [1, 3]`` becomes ``--input-shape x=1,3``."""
    for pattern, replace in _CLI_WORDS:
        message = pattern.sub(replace, message)
    return message


def _shape(text: str) -> tuple[str, tuple[int, ...]]:
    name, sep, dims = text.rpartition("=")
    try:
        shape = tuple(int(d) for d in dims.split(",")) if sep else ()
    except ValueError:
        shape = ()
    if not sep or not name or not shape or any(d < 0 for d in shape):
        raise argparse.ArgumentTypeError(f"expected NAME=D0,D1,..., got '{text}'")
    return name, shape


def _join(text: str) -> tuple[str, str]:
    out, sep, inp = text.partition("=")
    if not sep or not out or not inp:
        raise argparse.ArgumentTypeError(f"expected OUTPUT=INPUT, got '{text}'")
    return out, inp


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="+", metavar="MODEL.onnx")
    p.add_argument("--target", default="cpu",
                   help="cpu (default), asic (the default accelerator), asic:NAME (a shipped "
                   "target: tiny, edge, mcu) or asic:PATH.toml")
    p.add_argument("--calibration", metavar="FILE.npz",
                   help="asic: calibration inputs (arrays keyed by input name, samples stacked "
                   "along the batch axis)")
    p.add_argument("--input-shape", action="append", type=_shape, default=[],
                   metavar="NAME=D0,D1,...", help="fix the shape of a dynamic input")
    p.add_argument("--threads", type=int, default=None, help="threads (default: 1)")
    p.add_argument("--join", action="append", type=_join, default=[], metavar="OUT=IN",
                   help="with several models: feed output OUT into input IN")
    p.add_argument("--precision", default="fp32", choices=("fp32", "int8", "int16", "auto"),
                   help="int8 with --target cpu:NAME (cortex-m4, rv32imac, aarch64, wasm32 ...): "
                   "the int8 program built for that chip and run in an emulator; with --target "
                   "asic: int8 (default), int16 (int16 activations, int8 weights) or auto (per "
                   "layer, the cheapest that meets --min-sqnr-db)")
    p.add_argument("--winograd", default="auto", choices=("auto", "off", "2", "4"),
                   help="cpu: 3x3 convs through Winograd F(4x4,3x3) / F(2x2,3x3) (default: auto)")
    p.add_argument("--version", action="version", version=f"sw2c {__version__}")


def _compile_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sw2c", description="Compile ONNX models to native code (--target cpu) or to int8 "
        "kernels and C99 for a simulated accelerator (--target asic), with a static memory plan. "
        "Other commands: sw2c bench MODEL.onnx (latency vs onnxruntime), "
        "sw2c inspect MODEL.onnx (IR, kernels, memory plan).")
    _common(p)
    p.add_argument("-o", "--output", default="build", metavar="DIR",
                   help="where to write lib<name>.so (asic: <name>.c), <name>.h, <name>.json "
                   "(default: build)")
    p.add_argument("--name", help="symbol prefix of the exported library (default: file stem)")
    p.add_argument("--dump-ir", metavar="DIR", help="write the IR after every pass to DIR")
    p.add_argument("--no-verify", action="store_true", help="skip the onnxruntime cross-check")
    p.add_argument("--min-sqnr-db", type=float, default=10.0, metavar="DB",
                   help="asic: fail verification when an int8 output's SQNR against float is "
                   "under DB (default 10); with --precision auto, the budget each layer's "
                   "precision is chosen to meet")
    p.add_argument("--emit-qdq", metavar="FILE.onnx",
                   help="asic: also write the quantized model as QDQ ONNX (for onnxruntime)")
    return p


def _bench_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sw2c bench",
                                description="Median latency of sw2c vs onnxruntime, interleaved.")
    _common(p)
    p.add_argument("--seconds", type=float, default=3.0, help="time budget per engine")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--per-kernel", action="store_true",
                   help="cpu: time every kernel (profile build): median, GFLOP/s, %% of peak")
    p.add_argument("--top", type=int, metavar="N", help="--per-kernel: show the N slowest")
    return p


def _inspect_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sw2c inspect", description="Show the optimized IR, the kernels and the memory plan.")
    _common(p)
    p.add_argument("--plot", metavar="PLAN.png", help="draw the memory plan")
    p.add_argument("--json", action="store_true", help="print the plan as JSON (stable keys)")
    p.add_argument("--emit-onnx", metavar="FILE.onnx",
                   help="write the optimized graph as ONNX (kernels in the 'sw2c' domain)")
    return p


def _kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.2f} MiB"


def _print_report(r: dict[str, Any], model: str, files: Sequence[str]) -> None:
    lb = r["arena_lower_bound_bytes"]
    lines = [
        f"sw2c: compiled {model} for {r['target']} in {r['compile_seconds']:.2f} s",
        f"  kernels       {r['kernels']}",
        f"  compute       {r['flops'] / 1e9:.4f} GFLOP ({r['macs'] / 1e6:.2f} M MACs)",
        f"  arena         {_kib(r['arena_bytes'])} (lower bound {_kib(lb)}, "
        f"naive {_kib(r['arena_naive_bytes'])})",
        f"  weights       {_kib(r['weights_bytes'])}",
        f"  threads       {r['threads']}" + (
            f" ({r['threads_requested']} requested: no kernel is big enough to split)"
            if r.get("threads_requested", r["threads"]) != r["threads"] else ""),
    ]
    if "verification_error" in r:
        lines.append(f"  verified      max relative error {r['verification_error']:.1e} "
                     "vs onnxruntime")
    lines.append(f"  wrote         {', '.join(files)}")
    print("\n".join(lines))


def _print_asic_report(r: dict[str, Any], model: str, files: Sequence[str]) -> None:
    from .backends.asic.report import format_layers, format_totals

    lines = [f"sw2c: compiled {model} for {r['target']} ({r['target_description']}) in "
             f"{r['compile_seconds']:.2f} s", *format_totals(r)]
    if "verified_inputs" in r:
        from .runtime.verify import describe_oracles

        lines.append(f"  verified      {describe_oracles(r)}")
    lines.append(f"  wrote         {', '.join(files)}")
    print("\n".join(lines))
    print(format_layers(r["layers"]))


def _compile(args: argparse.Namespace) -> None:
    from . import compile as sw2c_compile

    module = sw2c_compile(args.models, target=args.target, input_shapes=dict(args.input_shape),
                          threads=args.threads, verify=not args.no_verify, name=args.name,
                          dump_ir=args.dump_ir, joins=args.join, calibration=args.calibration,
                          min_sqnr_db=args.min_sqnr_db, winograd=args.winograd,
                          precision=args.precision)
    if args.target.startswith("cpu:"):  # a cross target (runtime/cross)
        from .benchmarks.cross_bench import format_cross

        lib = module.export(args.output)  # lib<name>.a, <name>.h, <name>.c, <name>.json
        files = [lib, *(os.path.join(args.output, f"{module.name}{e}") for e in (".h", ".json"))]
        print(format_cross(module.report, files=files))
        return
    if args.target.startswith("asic"):
        files = [module.export(args.output), os.path.join(args.output, f"{module.name}.h")]
        if args.emit_qdq:
            import onnx

            from .backends.asic.qdq import to_qdq

            Path(args.emit_qdq).parent.mkdir(parents=True, exist_ok=True)
            onnx.save(to_qdq(module.program), args.emit_qdq)
            files.append(args.emit_qdq)
        _print_asic_report(module.report, " ".join(args.models), files)
        return
    lib = module.export(args.output)
    header = os.path.join(args.output, f"{module.name}.h")
    _print_report(module.report, " ".join(args.models), [lib, header])


def _bench(args: argparse.Namespace) -> None:
    from .benchmarks.bench import bench_asic, bench_model, format_asic_result, format_result

    if args.target.startswith("cpu:"):  # a cross target: instructions in the emulator
        from .benchmarks.cross_bench import bench_cross, format_cross

        result = bench_cross(args.models, target=args.target, precision=args.precision,
                             calibration=args.calibration, input_shapes=dict(args.input_shape))
        print(json.dumps(result, indent=1) if args.json else format_cross(result))
        return
    if args.target.startswith("asic"):
        if args.per_kernel:
            raise Sw2cError("--per-kernel times the kernels of target cpu; target asic "
                            "reports its layers with plain `sw2c bench`")
        result = bench_asic(args.models, target=args.target, calibration=args.calibration,
                            input_shapes=dict(args.input_shape), precision=args.precision)
        print(json.dumps(result, indent=1) if args.json else format_asic_result(result))
        return
    if args.per_kernel:
        from .benchmarks.per_kernel import bench_per_kernel, format_per_kernel

        result = bench_per_kernel(args.models, threads=args.threads or 1,
                                  input_shapes=dict(args.input_shape), seconds=args.seconds,
                                  winograd=args.winograd)
        print(json.dumps(result, indent=1) if args.json else format_per_kernel(result, args.top))
        return
    result = bench_model(args.models, target=args.target, threads=args.threads or 1,
                         input_shapes=dict(args.input_shape), seconds=args.seconds,
                         progress=not args.json and sys.stderr.isatty(), winograd=args.winograd)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(format_result(result))


def _inspect(args: argparse.Namespace) -> None:
    from . import compile as sw2c_compile
    from .runtime.inspect import format_inspection, kernel_table, plot_plan, to_onnx

    module = sw2c_compile(args.models, target=args.target, input_shapes=dict(args.input_shape),
                          threads=args.threads, verify=False, joins=args.join,
                          calibration=args.calibration, winograd=args.winograd)
    if args.plot:
        plot_plan(module.plan, args.plot, module.name)
    if args.target.startswith("asic"):
        _inspect_asic(args, module)
        return
    if args.emit_onnx:
        import onnx

        onnx.save(to_onnx(module.graph, module.plan), args.emit_onnx)
    if args.json:
        doc = {"model": module.name, **module.plan.as_json(),
               "kernels": kernel_table(module.graph, module.plan)}
        print(json.dumps(doc, indent=1, sort_keys=True))
    else:
        print(format_inspection(module.graph, module.plan))


def _inspect_asic(args: argparse.Namespace, module: Any) -> None:
    """The float IR the int8 program was lowered from, one line per kernel (with cycles and
    SQNR), the plan; --emit-onnx writes the QDQ model."""
    from .backends.asic.report import format_layers
    from .ir import format_graph

    if args.emit_onnx:
        import onnx

        from .backends.asic.qdq import to_qdq

        onnx.save(to_qdq(module.program), args.emit_onnx)
    if args.json:
        doc = {"model": module.name, **module.plan.as_json(), "kernels": module.report["layers"]}
        print(json.dumps(doc, indent=1, sort_keys=True))
        return
    plan = module.plan
    print(format_graph(module.graph))
    print(format_layers(module.report["layers"]))
    print(f"arena {plan.arena_bytes:,} bytes (lower bound {plan.lower_bound_bytes:,}, naive "
          f"{plan.naive_bytes:,}); buffers (offset, bytes, steps):")
    for b in sorted(plan.buffers, key=lambda b: (b.first, b.offset)):
        print(f"  {b.name:<40} {b.offset:>10,} {b.size:>10,}  {b.first}..{b.last}")


# (attribute, option, is a directory): the paths a command writes, checked before compiling
_OUTPUTS = (("output", "-o", True), ("dump_ir", "--dump-ir", True),
            ("emit_qdq", "--emit-qdq", False), ("plot", "--plot", False),
            ("emit_onnx", "--emit-onnx", False))


def _preflight(args: argparse.Namespace) -> None:
    """Fail in seconds, not after the whole compile: the options must fit together, and every
    path the command will write must be creatable (its nearest existing ancestor a writable
    directory) or a writable file or directory of the right kind."""
    if getattr(args, "emit_qdq", None) and not args.target.startswith("asic"):
        raise Sw2cError("--emit-qdq needs an int8 target: add --target asic")
    for attr, option, is_dir in _OUTPUTS:
        path = getattr(args, attr, None)
        if not path:
            continue
        p = Path(path).absolute()
        kind = "directory" if is_dir else "file"
        if p.exists() and p.is_dir() != is_dir:
            state = "is not a directory" if is_dir else "is a directory"
            raise Sw2cError(f"{option} {path}: {state}; give a {kind} path")
        existing = p if p.exists() else next(a for a in p.parents if a.exists())
        if not existing.is_dir() and existing != p:
            raise Sw2cError(f"{option} {path}: cannot create it, {existing} is a file; give a "
                            f"{kind} path whose parents are directories")
        if not os.access(existing, os.W_OK | (os.X_OK if existing.is_dir() else 0)):
            raise Sw2cError(f"{option} {path}: {existing} is not writable (permission denied); "
                            f"choose another {kind} or fix its permissions")


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """A warning as one line in the CLI's words (the API's has the caller's source line)."""
    kind = "" if issubclass(category, UserWarning) else f"{category.__name__}: "
    text = cli_words(str(message)).splitlines() or [""]
    print(f"sw2c: warning: {kind}{text[0]}", file=sys.stderr)


def _error_line(e: BaseException) -> str:
    """One line for the CLI: a sw2c error as it says, anything else as a bug to report."""
    if isinstance(e, Sw2cError):
        text = cli_words(str(e))
        cause = e.__cause__
        if isinstance(e, CompileError) and cause is not None and not isinstance(
                cause, (Sw2cError, OSError)):  # an internal error, wrapped to be reported
            text += f" (set {TRACEBACK_ENV}=1 to see the traceback)"
    elif isinstance(e, OSError) and e.filename is not None:
        text = f"{e.filename}: {e.strerror}"
    elif isinstance(e, OSError):
        text = str(e)
    else:
        text = (f"internal error: {type(e).__name__}: {e} -- a bug in sw2c, please report this "
                f"(set {TRACEBACK_ENV}=1 to see the traceback)")
    if isinstance(e, AccuracyError):  # its per-layer SQNR table says which layer lost it
        return f"sw2c: error: {text}"
    return f"sw2c: error: {text}".splitlines()[0]


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":
        args, run = _bench_parser().parse_args(argv[1:]), _bench
    elif argv and argv[0] == "inspect":
        args, run = _inspect_parser().parse_args(argv[1:]), _inspect
    else:
        args, run = _compile_parser().parse_args(argv), _compile
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            _preflight(args)
            run(args)
    except KeyboardInterrupt:
        print("sw2c: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        raise  # stdout's reader left: not an error to report (main exits quietly)
    except Exception as e:  # the one place that reports every failure, as one line
        if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
            traceback.print_exc()
        print(_error_line(e), file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `sw2c` command; returns the exit status: 0, 1 for an error (one line on
    stderr), 2 for a usage error, 130 when interrupted, 141 when stdout closes early."""
    try:
        try:
            return _main(argv)
        finally:
            sys.stdout.flush()  # a reader that left (`| head`) shows here, not at exit
    except BrokenPipeError:
        # as a process killed by SIGPIPE (128 + 13), and with nothing printed: point stdout at
        # /dev/null so the interpreter's last flush does not complain either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
