"""The ONNX backend node tests, run through sw2c: scope rules, preparation and the pass table.

`python -m sw2c.tests.conformance [--write docs/conformance.md]` prints (or writes) the table
of every supported op: node tests passed / in scope, and the reason for every exclusion.
"""

from __future__ import annotations

import argparse
import collections
import warnings
from functools import cache

import numpy as np
import onnx
from onnx import numpy_helper

# ONNX ops sw2c compiles (beyond these, Shape/Gather/Cast/... fold when their inputs are constant)
SUPPORTED = frozenset("""
Abs Add AveragePool BatchNormalization CastLike Clip Concat Constant ConstantOfShape Conv Div
Dropout Exp Expand Flatten Gather Gemm GlobalAveragePool GlobalMaxPool HardSigmoid HardSwish
Identity LRN LeakyRelu Log LogSoftmax MatMul Max MaxPool Mean Min Mul Neg PRelu Pad Pow
Reciprocal ReduceL1 ReduceL2 ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceSum
ReduceSumSquare Relu Reshape Sigmoid Slice Softmax Split Sqrt Squeeze Sub Sum Tanh Tile Transpose
Unsqueeze
""".split())
# may appear in a test's graph when they fold to constants at compile time
FOLDABLE = frozenset("Shape Size Cast Range Equal Where".split())

# in-scope tests we knowingly fail, with the reason (kept empty unless a reason is real)
KNOWN: dict[str, str] = {}


@cache
def node_cases() -> tuple:
    from onnx.backend.test.loader import load_model_tests

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tuple(load_model_tests(kind="node"))


def op_of(case) -> str:
    """The op a node test is about: its node's, for a one-node test; else the longest supported
    op named at the start of the test's name (`test_softmax_..._expanded` -> Softmax); else
    its first node that is not a Constant."""
    if len(case.model.graph.node) == 1:
        return case.model.graph.node[0].op_type
    name = case.name.removeprefix("test_").lower()
    named = [op for op in SUPPORTED if name == op.lower() or name.startswith(op.lower() + "_")]
    if named:
        return max(named, key=len)
    ops = [n.op_type for n in case.model.graph.node]
    return next((op for op in ops if op != "Constant"), ops[0])


def _data(case) -> tuple[list, list]:
    inputs, outputs = case.data_sets[0]
    return [_array(x) for x in inputs], [_array(x) for x in outputs]


def _array(x):
    return np.asarray(x) if isinstance(x, np.generic) else x


def scope(case) -> str | None:
    """None when sw2c must pass ``case``, else the reason it is outside the fp32 static scope."""
    graph = case.model.graph
    ops = {n.op_type for n in graph.node}
    if any(n.domain not in ("", "ai.onnx") for n in graph.node):
        return "non-default domain"
    if not ops <= SUPPORTED | FOLDABLE or not ops & SUPPORTED:
        return "uses ops sw2c does not implement: " + ", ".join(sorted(ops - SUPPORTED - FOLDABLE))
    if not case.data_sets:
        return "no data set"
    inputs, outputs = _data(case)
    if any(isinstance(x, onnx.TensorProto) for x in inputs + outputs):
        return "a data type numpy cannot hold (float8, int4, ...)"
    if any(not isinstance(x, np.ndarray) for x in inputs + outputs):
        return "sequence or optional values"
    if any(o.dtype != np.float32 for o in outputs):
        return "non-fp32 output"
    float_inputs = [x for x in inputs if x.dtype.kind == "f"]
    if any(x.dtype != np.float32 for x in float_inputs):
        return "non-fp32 input data"
    if any(x.size == 0 for x in float_inputs) and all(o.size == 0 for o in outputs):
        return "empty input and only empty outputs: nothing to compute, which sw2c refuses"
    for node in graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Cast" and attrs.get("to") == onnx.TensorProto.DOUBLE:
            return "float64 arithmetic inside the graph"
        if node.op_type == "BatchNormalization" and attrs.get("training_mode", 0):
            return "training mode"
        if node.op_type == "Dropout" and len(node.input) > 2 and node.input[2]:
            names = [vi.name for vi in graph.input]
            if node.input[2] in names and bool(inputs[names.index(node.input[2])]):
                return "training mode"
        used = [o for o in node.output if o]
        if node.op_type in ("MaxPool", "Dropout", "BatchNormalization") and len(used) > 1:
            return f"{node.op_type}'s optional extra outputs"
    return None


def prepare(case) -> tuple[onnx.ModelProto, dict[str, np.ndarray], list[np.ndarray]]:
    """The model with its parameter inputs (non-float: shapes, axes, pads; 0-d floats: clip
    bounds, dropout ratio) made initializers, as they are in a real exported model, plus the
    float feeds and the expected outputs."""
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    inputs, outputs = _data(case)
    feeds = {}
    keep = []
    for vi, x in zip(list(model.graph.input), inputs):
        if x.dtype.kind == "f" and x.ndim > 0:
            feeds[vi.name] = x
            keep.append(vi)
        else:
            model.graph.initializer.append(numpy_helper.from_array(x, vi.name))
    del model.graph.input[:]
    model.graph.input.extend(keep)
    return model, feeds, list(outputs)


def run_case(case) -> None:
    """Compile and run ``case``; raise AssertionError on a mismatch."""
    import sw2c

    model, feeds, expected = prepare(case)
    module = sw2c.compile(model, verify=False,
                          input_shapes={k: v.shape for k, v in feeds.items()})
    got = module.run(feeds)
    for (name, _, _), want in zip(module.outputs, expected):
        np.testing.assert_allclose(got[name], want, rtol=max(case.rtol, 1e-3),
                                   atol=max(case.atol, 1e-6), err_msg=f"{case.name}: {name}")


def table() -> str:
    """Markdown: per supported op, node tests passed / in scope, and every exclusion."""
    passed: dict[str, int] = collections.Counter()
    total: dict[str, int] = collections.Counter()
    excluded: dict[str, list[str]] = collections.defaultdict(list)
    failures: dict[str, list[str]] = collections.defaultdict(list)
    for case in node_cases():
        op = op_of(case)
        if op not in SUPPORTED:
            continue
        reason = scope(case)
        if reason is not None:
            excluded[op].append(f"`{case.name}`: {reason}")
            continue
        total[op] += 1
        try:
            run_case(case)
            passed[op] += 1
        except Exception as e:  # the table reports it; the pytest run fails on it
            failures[op].append(f"`{case.name}`: {str(e).splitlines()[0][:120]}")
    lines = ["| op | passed / in scope | excluded (reason) |", "|---|---|---|"]
    for op in sorted(SUPPORTED):
        ex = "<br>".join(excluded[op] + [f"FAILS {f}" for f in failures[op]]) or "—"
        lines.append(f"| {op} | {passed[op]} / {total[op]} | {ex} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--write", help="write the markdown table to this file")
    args = p.parse_args()
    text = ("# ONNX node-test conformance\n\nGenerated by `python -m sw2c.tests.conformance "
            "--write docs/conformance.md`.\n\n" + table() + "\n")
    if args.write:
        with open(args.write, "w") as f:
            f.write(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
