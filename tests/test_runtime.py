"""Module's run-time contract: feeds are validated before native code sees them."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import sw2c
from sw2c.driver import compile_graph
from sw2c.ir import Builder, Op, TensorType, Unary, Value, run


@pytest.fixture(scope="module")
def module():
    b = Builder("two", [Value("a", TensorType((2, 3))), Value("b", TensorType((3,)))])
    y = b.add(Op.BINARY, ["a", "b"], fn=sw2c.ir.Binary.ADD, name="y")
    z = b.add(Op.UNARY, [y], fn=Unary.TANH, name="z")
    graph = b.finish([y, z])
    return graph, compile_graph(graph, "two")


def feeds():
    rng = np.random.default_rng(0)
    return {"a": rng.standard_normal((2, 3)).astype(np.float32),
            "b": rng.standard_normal(3).astype(np.float32)}


def test_signature_and_report(module):
    _, m = module
    assert m.inputs == [("a", (2, 3), "float32"), ("b", (3,), "float32")]
    assert m.outputs == [("y", (2, 3), "float32"), ("z", (2, 3), "float32")]
    for key in ("flops", "macs", "arena_bytes", "arena_lower_bound_bytes", "weights_bytes",
                "kernels", "compile_seconds"):
        assert key in m.report


def test_run_and_call_agree_with_the_interpreter(module):
    graph, m = module
    f = feeds()
    expect = run(graph, f)
    got = m.run(f)
    y, z = m(f["a"], f["b"])
    np.testing.assert_allclose(got["y"], expect["y"], rtol=1e-6)
    np.testing.assert_allclose(z, expect["z"], rtol=1e-6)
    np.testing.assert_array_equal(y, got["y"])


@pytest.mark.parametrize("change,match", [
    (lambda f: f.pop("b"), "missing input 'b'"),
    (lambda f: f.update(c=f["a"]), "unknown input 'c'"),
    (lambda f: f.update(a=f["a"].astype(np.float64)), "dtype float64"),
    (lambda f: f.update(a=f["a"].reshape(3, 2)), r"shape \(3, 2\)"),
    (lambda f: f.update(a=f["a"].tolist()), "numpy array"),
])
def test_bad_feeds_raise_input_error(module, change, match):
    _, m = module
    f = feeds()
    change(f)
    with pytest.raises(sw2c.InputError, match=match):
        m.run(f)


def test_input_error_is_a_value_error(module):
    _, m = module
    with pytest.raises(ValueError):
        m(np.zeros((2, 3), np.float32))


def test_non_contiguous_feeds_are_copied(module):
    graph, m = module
    f = feeds()
    wide = np.zeros((2, 6), np.float32)
    wide[:, ::2] = f["a"]
    f["a"] = wide[:, ::2]
    assert not f["a"].flags.c_contiguous
    np.testing.assert_allclose(m.run(f)["z"], run(graph, f)["z"], rtol=1e-6)


def test_concurrent_runs_are_serialized(module):
    graph, m = module
    f = feeds()
    expect = m.run(f)["z"]
    results = []

    def work():
        for _ in range(50):
            results.append(np.array_equal(m.run(f)["z"], expect))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(results) and len(results) == 200
