"""Differential fuzzing: random ONNX graphs through sw2c and onnxruntime (benchmarks/fuzz.py).

The seeded sweep runs in chunks so a failure names its seeds; reproduce one with
``python -m sw2c.benchmarks.fuzz --count 1 --seed SEED`` (it also minimizes and saves it).
"""

from __future__ import annotations

import os
import signal
from functools import cache

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from sw2c.benchmarks import fuzz

SEEDS = 400
CHUNK = 25
CHUNKS = range(0, SEEDS, CHUNK)


@cache
def sw2c_missing() -> str | None:
    """Why sw2c cannot compile yet (a part still being written), or None when it can."""
    import sw2c

    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node], "relu", [helper.make_tensor_value_info("x", 1, [1, 2])],
                              [helper.make_tensor_value_info("y", 1, [1, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    try:
        sw2c.compile(model, verify=False)
    except ImportError as e:
        return f"sw2c is not importable yet: {e}"
    return None


def seeds(start: int) -> range:
    return range(start, min(start + CHUNK, SEEDS))


@pytest.mark.parametrize("start", CHUNKS)
def test_generated_models_are_valid(start: int) -> None:
    """random_model checks the ONNX checker and shape inference; onnxruntime must run it too,
    with the declared output shapes and finite values."""
    for seed in seeds(start):
        model = fuzz.random_model(seed)
        assert 3 <= sum(n.op_type != "Constant" for n in model.graph.node) <= 30, seed
        fuzz.reference(model, fuzz.random_feeds(model, seed))


def test_generator_is_deterministic() -> None:
    for seed in (0, 7, 123):
        a, b = fuzz.random_model(seed), fuzz.random_model(seed)
        assert a.SerializeToString() == b.SerializeToString()
    assert fuzz.random_model(1).SerializeToString() != fuzz.random_model(2).SerializeToString()


def test_generator_covers_every_op() -> None:
    seen = {n.op_type for seed in range(SEEDS) for n in fuzz.random_model(seed).graph.node}
    assert set(fuzz.GENERATORS) <= seen, sorted(set(fuzz.GENERATORS) - seen)


@pytest.mark.parametrize("start", CHUNKS)
def test_sw2c_matches_onnxruntime(start: int) -> None:
    if (reason := sw2c_missing()) is not None:
        pytest.skip(reason)
    failures = {seed: f for seed in seeds(start) if (f := fuzz.check_seed(seed)) is not None}
    assert not failures, "\n".join(f"seed {seed}: {f.kind}: {f.message}"
                                   for seed, f in failures.items())


SAVED = sorted(fuzz.FAILURE_DIR.glob("*.onnx"), key=lambda p: p.stem)


@pytest.mark.parametrize("path", SAVED, ids=[p.stem for p in SAVED])
def test_saved_reproducers_pass(path) -> None:
    """The minimized failures a soak saved (benchmarks/fuzz_failures/) pass once fixed."""
    if (reason := sw2c_missing()) is not None:
        pytest.skip(reason)
    seed = int(path.stem) if path.stem.isdigit() else 0
    failure = fuzz.check(onnx.load(path), seed, threads=fuzz.case_threads(seed))
    assert failure is None, f"{path}: {failure.kind}: {failure.message}"


def _has_softmax(model: onnx.ModelProto, seed: int) -> fuzz.Failure | None:
    """A stand-in bug: 'sw2c fails on every graph with a Softmax' (onnxruntime must run it)."""
    fuzz.reference(model, fuzz.random_feeds(model, seed))
    if any(n.op_type == "Softmax" for n in model.graph.node):
        return fuzz.Failure("mismatch", "softmax")
    return None


def test_shrink_finds_the_one_failing_node() -> None:
    shrunk = 0
    for seed in range(100):
        model = fuzz.random_model(seed)
        live = fuzz.to_model(fuzz.prune(fuzz.Parts.of(model)))  # a Softmax reaching an output
        if len(model.graph.node) < 8 or _has_softmax(live, seed) is None:
            continue
        small = fuzz.shrink(model, "mismatch", seed=seed, check_fn=_has_softmax)
        assert [n.op_type for n in small.graph.node] == ["Softmax"], seed
        assert len(small.graph.input) == 1 and len(small.graph.output) == 1
        onnx.checker.check_model(small, full_check=True)
        shrunk += 1
    assert shrunk >= 3


def test_shrink_keeps_an_unshrinkable_model() -> None:
    model = fuzz.random_model(5)
    same = fuzz.shrink(model, "crash", check_fn=lambda m, s: None)
    assert same.SerializeToString() == model.SerializeToString()


def test_isolated_check_survives_a_dying_process() -> None:
    """The soak's child process: a segfault or a hang is an answer, and the next case runs."""
    worker = fuzz.Isolated(timeout=60)
    try:
        assert worker.ask(("seed", 1))[0] in ("ok", *fuzz.KINDS)
        os.kill(worker.proc.pid, signal.SIGSEGV)
        worker.proc.join()
        assert worker.ask(("seed", 2))[:3] == ("crash", "the process died (SIGSEGV)", "SIGSEGV")
        assert worker.ask(("seed", 3), timeout=1e-3)[0] == "hang"
        assert worker.ask(("seed", 3))[0] != "hang"
    finally:
        worker.close()


def _model(nodes: list, inputs: dict, outputs: list[str]) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "m", [helper.make_tensor_value_info(k, TensorProto.FLOAT, v)
                     for k, v in inputs.items()],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_shrink_reduces_input_sizes() -> None:
    model = _model([helper.make_node("Relu", ["x"], ["y"])], {"x": [2, 3, 8, 8]}, ["y"])

    def relu_fails(m: onnx.ModelProto, seed: int) -> fuzz.Failure | None:
        return fuzz.Failure("crash", "boom", "KeyError")

    small = fuzz.shrink(fuzz.to_model(fuzz.Parts.of(model)), fuzz.Failure("crash", "", "KeyError"),
                        check_fn=relu_fails)
    assert [d.dim_value for d in small.graph.input[0].type.tensor_type.shape.dim] == [1, 1, 1, 1]


def test_compare_tolerances() -> None:
    ref = np.array([100.0, 0.0, -3.0], np.float32)
    assert fuzz.compare("y", ref + np.float32(0.09), ref) is None  # atol = 1e-3 * 100
    assert "differ" in fuzz.compare("y", ref + np.array([0, 0.2, 0], np.float32), ref)
    assert "shape" in fuzz.compare("y", ref[:2], ref)
    assert "differ" in fuzz.compare("y", np.array([np.nan, 0, -3], np.float32), ref)


def test_failure_signature_groups_alike_messages() -> None:
    a = fuzz.Failure("crash", "KeyError: 't12' at node 'n3_Conv' (7 of 9)", "KeyError")
    b = fuzz.Failure("crash", "KeyError: 't40' at node 'n1_Conv' (2 of 3)", "KeyError")
    assert a.signature() == b.signature()
    assert a.same_as(b) and not a.same_as(fuzz.Failure("mismatch", "x"))


def test_generator_makes_typed_graphs() -> None:
    """Int64/int32/bool inputs (ids, masks), int and bool outputs, run-time ids (negative ones
    too), the masked-softmax idiom with -inf and GELU written with Erf all occur."""
    inputs, outputs, ops = set(), set(), set()
    negative_ids = masked = gelu = False
    for seed in range(SEEDS):
        model = fuzz.random_model(seed)
        g = model.graph
        inputs |= {vi.type.tensor_type.elem_type for vi in g.input}
        outputs |= {vi.type.tensor_type.elem_type for vi in g.output}
        ops |= {n.op_type for n in g.node}
        made = {o: n for n in g.node for o in n.output}
        consts = {t.name: onnx.numpy_helper.to_array(t) for t in g.initializer}
        for n in g.node:
            if n.op_type == "Gather" and n.input[1] in made and \
                    made[n.input[1]].op_type == "Sub":
                negative_ids = True
            if n.op_type == "Softmax" and n.input[0] in made and \
                    made[n.input[0]].op_type == "Where":
                masked |= any(np.isneginf(consts[i]).any() for i in made[n.input[0]].input
                              if i in consts)
            gelu |= n.op_type == "Mul" and any(  # x * 0.5 * (Erf(...) + 1)
                i in made and made[i].op_type == "Add" and
                any(j in made and made[j].op_type == "Erf" for j in made[i].input)
                for i in n.input)
    assert {TensorProto.INT64, TensorProto.INT32, TensorProto.BOOL} <= inputs
    assert {TensorProto.INT64, TensorProto.INT32, TensorProto.BOOL} <= outputs
    assert set(fuzz.TYPED_OPS) <= ops
    assert negative_ids and masked and gelu


def test_typed_feeds_are_valid_ids() -> None:
    """The feeds of an embedding lookup come from sw2c's index_ranges: ids below the table."""
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, [4, 50])
    table = onnx.numpy_helper.from_array(np.ones((7, 3), np.float32), "table")
    graph = helper.make_graph([helper.make_node("Gather", ["table", "ids"], ["y"])], "g", [ids],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=[table])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    feeds = fuzz.random_feeds(model, 3)
    assert feeds["ids"].dtype == np.int64 and feeds["ids"].shape == (4, 50)
    assert feeds["ids"].min() == 0 and feeds["ids"].max() == 6


def test_compare_ints_exactly() -> None:
    ref = np.array([1000, -3, 7], np.int64)
    assert fuzz.compare("y", ref.copy(), ref) is None
    assert "differ" in fuzz.compare("y", ref + np.array([0, 1, 0]), ref)  # no tolerance
    assert "dtype" in fuzz.compare("y", ref.astype(np.int32), ref)
    mask = np.array([True, False])
    assert fuzz.compare("m", mask.copy(), mask) is None
    assert "differ" in fuzz.compare("m", ~mask, mask)


def test_shrink_keeps_int_and_bool_tensors_typed() -> None:
    """Cutting a node whose inputs are ids or masks makes int/bool graph inputs, not float."""
    def has_gather(model: onnx.ModelProto, seed: int) -> fuzz.Failure | None:
        fuzz.reference(model, fuzz.random_feeds(model, seed))
        if any(n.op_type in ("Gather", "Xor") for n in model.graph.node):
            return fuzz.Failure("mismatch", "gather")
        return None

    shrunk = 0
    for seed in range(60):
        model = fuzz.random_model(seed)
        if not any(n.op_type in ("Gather", "Xor") for n in model.graph.node):
            continue
        small = fuzz.shrink(model, "mismatch", seed=seed, check_fn=has_gather)
        if len(small.graph.node) == 1:
            onnx.checker.check_model(small, full_check=True)
            shrunk += 1
    assert shrunk >= 3
