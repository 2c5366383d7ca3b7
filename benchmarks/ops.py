"""Single-op benchmark of the float32 transcendentals: sw2c against onnxruntime (MLAS/Eigen),
one thread each, interleaved in one process (harness.measure).

    python -m sw2c.benchmarks.ops [--seconds S] [--large] [--only Exp,Log] [--write]

Prints sw2c / onnxruntime median ratios (below 1: sw2c is faster); --write also writes
benchmarks/results/ops.md.
"""

from __future__ import annotations

import argparse
import math
import platform
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from .harness import format_seconds, measure, ort_session

SMALL, LARGE = (1, 96, 48, 48), (1, 64, 256, 256)
RESULTS = Path(__file__).parent / "results" / "ops.md"


def _model(nodes: list[onnx.NodeProto], shape: tuple[int, ...], opset: int) -> onnx.ModelProto:
    """float32 x -> nodes -> y of the same shape."""
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("x", "y")]
    graph = helper.make_graph(nodes, "op", [io[0]], [io[1]])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _one(op: str, opset: int = 17, **attrs) -> Callable[[tuple[int, ...]], onnx.ModelProto]:
    return lambda shape: _model([helper.make_node(op, ["x"], ["y"], **attrs)], shape, opset)


def _silu(shape: tuple[int, ...]) -> onnx.ModelProto:
    return _model([helper.make_node("Sigmoid", ["x"], ["s"]),
                   helper.make_node("Mul", ["x", "s"], ["y"])], shape, 17)


def _gelu_erf(shape: tuple[int, ...]) -> onnx.ModelProto:
    """0.5 x (1 + erf(x / sqrt 2)) as exported by PyTorch before opset 20."""
    c = [helper.make_tensor(n, TensorProto.FLOAT, [], [v])
         for n, v in (("r", math.sqrt(2)), ("one", 1.0), ("half", 0.5))]
    nodes = [helper.make_node("Div", ["x", "r"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
             helper.make_node("Add", ["e", "one"], ["a"]),
             helper.make_node("Mul", ["x", "a"], ["m"]),
             helper.make_node("Mul", ["m", "half"], ["y"])]
    model = _model(nodes, shape, 17)
    model.graph.initializer.extend(c)
    return model


# name -> (model of a shape, input transform): Log gets positive inputs
OPS: dict[str, tuple[Callable[[tuple[int, ...]], onnx.ModelProto], Callable | None]] = {
    "Exp": (_one("Exp"), None),
    "Log": (_one("Log"), lambda x: np.abs(x) + np.float32(1e-3)),
    "Tanh": (_one("Tanh"), None),
    "Sigmoid": (_one("Sigmoid"), None),
    "Erf": (_one("Erf"), None),
    "Softplus": (_one("Softplus"), None),
    "Mish": (_one("Mish", 18), None),
    "SiLU": (_silu, None),
    "Gelu (erf)": (_one("Gelu", 20), None),
    "Gelu (tanh)": (_one("Gelu", 20, approximate="tanh"), None),
    "Gelu (erf, opset 17 graph)": (_gelu_erf, None),
    "Softmax": (_one("Softmax", 17, axis=-1), None),
}


def bench_op(name: str, shape: tuple[int, ...], seconds: float) -> dict[str, float] | str:
    """Median seconds of sw2c and onnxruntime and their ratio, or why it could not run."""
    import sw2c

    make, transform = OPS[name]
    model = make(shape)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32) * 3
    x = transform(x) if transform else x
    try:
        session = ort_session(model, 1)
    except Exception as e:  # an old onnxruntime without the op (Gelu-20): nothing to compare
        return f"onnxruntime: {str(e).splitlines()[0][:60]}"
    module = sw2c.compile(model, threads=1, verify=False)
    want = session.run(["y"], {"x": x})[0]
    got = module(x)
    err = float(np.nanmax(np.abs(got - want)))
    t = measure(lambda: module(x), lambda: session.run(["y"], {"x": x}), min_seconds=seconds,
                rounds=6)
    return {"sw2c": t["sw2c"]["median"], "ort": t["ort"]["median"], "ratio": t["ratio"],
            "abs_err": err}


def table(results: dict[tuple[str, tuple[int, ...]], dict[str, float] | str]) -> str:
    """A markdown table of the results, one row per (op, shape)."""
    lines = ["| op | shape | sw2c | onnxruntime | sw2c / ort | max abs. diff |",
             "|---|---|---:|---:|---:|---:|"]
    for (name, shape), r in results.items():
        dims = "x".join(map(str, shape))
        if isinstance(r, str):
            lines.append(f"| {name} | {dims} | | | {r} | |")
            continue
        lines.append(f"| {name} | {dims} | {format_seconds(r['sw2c'])} | "
                     f"{format_seconds(r['ort'])} | {r['ratio']:.2f} | {r['abs_err']:.1e} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark, print the table, optionally write results/ops.md."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=1.0, help="timed seconds per engine and op")
    p.add_argument("--large", action="store_true", help=f"also {LARGE} (memory bound)")
    p.add_argument("--only", default="", help="comma-separated op names")
    p.add_argument("--write", action="store_true", help=f"write {RESULTS}")
    args = p.parse_args(argv)
    names = [n for n in OPS if not args.only or n in args.only.split(",")]
    shapes = [SMALL, LARGE] if args.large else [SMALL]
    results = {}
    for shape in shapes:
        for name in names:
            results[name, shape] = r = bench_op(name, shape, args.seconds)
            ratio = r if isinstance(r, str) else f"{r['ratio']:.2f}"
            print(f"{name:28s} {'x'.join(map(str, shape)):14s} {ratio}", flush=True)
    text = table(results)
    print(text)
    if args.write:
        RESULTS.write_text(
            "# Single-op float32 math: sw2c vs onnxruntime, 1 thread each\n\n"
            f"`python -m sw2c.benchmarks.ops{' --large' if args.large else ''} --write` on "
            f"{platform.processor() or platform.machine()}; medians of interleaved blocks "
            "(benchmarks/harness.py); ratio below 1: sw2c is faster.\n\n" + text + "\n")


if __name__ == "__main__":
    main()
