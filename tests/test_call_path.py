"""The lean call path: `module(x)` and the zero-allocation `module.run_into(inputs, outputs)`
agree with each other and with onnxruntime, on one thread, on a team and after export/load;
every wrong output array is refused with an InputError naming the output."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import sw2c
from sw2c.benchmarks.zoo import mlp
from sw2c.driver import compile_graph
from sw2c.ir import Binary, Builder, Op, TensorType, Unary, Value
from sw2c.tests.ir_models import split_residual_cnn


@pytest.fixture(scope="module")
def digits():
    model = mlp()
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sw2c.compile(model), session


@pytest.fixture(scope="module")
def two_outputs():
    """Two inputs, two outputs, one of which is an input passed straight through."""
    b = Builder("pair", [Value("a", TensorType((2, 3))), Value("b", TensorType((3,)))])
    y = b.add(Op.BINARY, ["a", "b"], fn=Binary.ADD, name="y")
    z = b.add(Op.UNARY, [y], fn=Unary.TANH, name="z")
    return compile_graph(b.finish([z, "b"]), "pair")


@pytest.fixture(scope="module")
def team_module():
    return split_residual_cnn("callteam")


def x_of(module: sw2c.Module, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(d) for _, s, d in module.inputs]


def empty_outputs(module: sw2c.Module) -> list[np.ndarray]:
    return [np.empty(s, d) for _, s, d in module.outputs]


def test_run_into_matches_call_and_onnxruntime(digits):
    module, session = digits
    outs = empty_outputs(module)
    for seed in range(3):  # new inputs each time, the same output arrays
        xs = x_of(module, seed)
        got = module.run_into(xs, outs)
        assert got is outs
        want = module(*xs)
        np.testing.assert_array_equal(outs[0], want)
        ref = session.run(None, {module.inputs[0][0]: xs[0]})[0]
        np.testing.assert_allclose(outs[0], ref, rtol=1e-4, atol=1e-5)


def test_same_arrays_again_see_new_values(digits):
    module, _ = digits
    xs, outs = x_of(module, 1), empty_outputs(module)
    module.run_into(xs, outs)
    first = outs[0].copy()
    xs[0][...] = x_of(module, 2)[0]  # in place: the address is cached, the data is not
    module.run_into(xs, outs)
    np.testing.assert_array_equal(outs[0], module(*x_of(module, 2)))
    assert not np.array_equal(first, outs[0])


def test_call_returns_fresh_arrays(digits):
    module, _ = digits
    x = x_of(module)[0]
    a, b = module(x), module(x)
    assert a is not b and not np.shares_memory(a, b)
    a[...] = 0
    np.testing.assert_array_equal(module(x), b)


def test_inputs_that_need_a_copy(digits):
    module, _ = digits
    x = x_of(module)[0]
    want = module(x)
    wide = np.zeros((x.shape[0], x.shape[1] * 2), np.float32)
    wide[:, ::2] = x  # a strided view
    np.testing.assert_array_equal(module(wide[:, ::2]), want)
    raw = np.zeros(x.nbytes + 1, np.uint8)  # misaligned by one byte
    odd = raw[1:].view(np.float32).reshape(x.shape)
    odd[...] = x
    np.testing.assert_array_equal(module(odd), want)
    outs = empty_outputs(module)
    module.run_into([odd], outs)
    np.testing.assert_array_equal(outs[0], want)


def test_several_outputs_and_a_passed_through_input(two_outputs):
    module = two_outputs
    xs = x_of(module)
    z, b = module(*xs)
    np.testing.assert_allclose(z, np.tanh(xs[0] + xs[1]), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(b, xs[1])
    outs = empty_outputs(module)
    module.run_into(xs, outs)
    np.testing.assert_array_equal(outs[0], z)
    np.testing.assert_array_equal(outs[1], xs[1])
    module.run_into(xs, [outs[0], xs[1]])  # the passed-through input may be its own output
    np.testing.assert_array_equal(outs[0], z)


def bad_outputs(module: sw2c.Module) -> list[tuple[list, str]]:
    """(outputs, message) pairs, each wrong in one way for the first output."""
    name, shape, dtype = module.outputs[0]
    good = empty_outputs(module)
    ro = np.empty(shape, dtype)
    ro.flags.writeable = False
    wide = np.empty((*shape[:-1], shape[-1] * 2), dtype)
    raw = np.empty(int(np.prod(shape)) * np.dtype(dtype).itemsize + 1, np.uint8)
    odd = raw[1:].view(dtype).reshape(shape)
    return [
        ([np.empty(shape, np.float64), *good[1:]], f"output '{name}' has dtype float64"),
        ([np.empty((*shape, 1), dtype), *good[1:]], f"output '{name}' has shape"),
        ([wide[..., ::2], *good[1:]], f"output '{name}' must be a C-contiguous"),
        ([odd, *good[1:]], f"output '{name}' must be a C-contiguous, aligned"),
        ([ro, *good[1:]], f"output '{name}' is read-only"),
        ([[0.0] * 10, *good[1:]], f"output '{name}' must be a numpy array"),
        (good + [np.empty(shape, dtype)], "run_into got"),
        (good[:-1], "run_into got"),
    ]


@pytest.mark.parametrize("which", range(8))
def test_wrong_output_arrays_are_refused(digits, two_outputs, which):
    for module in (digits[0], two_outputs):
        outs, message = bad_outputs(module)[which]
        with pytest.raises(sw2c.InputError, match=message):
            module.run_into(x_of(module), outs)
        module.run_into(x_of(module), empty_outputs(module))  # still works afterwards


def test_outputs_sharing_memory_are_refused(two_outputs):
    module = two_outputs
    xs = x_of(module)
    with pytest.raises(sw2c.InputError, match="output 'z' shares memory with input 'a'"):
        module.run_into(xs, [xs[0], np.empty(3, np.float32)])
    big = np.empty(6 + 3, np.float32)
    with pytest.raises(sw2c.InputError, match="output 'b' shares memory with output 'z'"):
        module.run_into(xs, [big[:6].reshape(2, 3), big[3:6]])
    with pytest.raises(sw2c.InputError, match="run_into takes a list"):
        module.run_into(xs[0], empty_outputs(module))


def test_wrong_inputs_word_their_errors_as_call_does(digits):
    module, _ = digits
    name, shape, _ = module.inputs[0]
    outs = empty_outputs(module)
    for bad, message in [(np.zeros(shape, np.float64), f"input '{name}' has dtype float64"),
                         (np.zeros((3, 3), np.float32), f"input '{name}' has shape"),
                         ("x", f"input '{name}' must be a numpy array")]:
        with pytest.raises(sw2c.InputError, match=message):
            module.run_into([bad], outs)
        with pytest.raises(sw2c.InputError, match=message):
            module(bad)
    with pytest.raises(sw2c.InputError, match="takes 1 input"):
        module.run_into([], outs)


def test_team_module_both_paths(team_module):
    xs = x_of(team_module)
    want = team_module.run({team_module.inputs[0][0]: xs[0]})
    got = team_module(*xs)
    got = [got] if len(team_module.outputs) == 1 else list(got)
    outs = empty_outputs(team_module)
    team_module.run_into(xs, outs)
    for (name, _, _), g, o in zip(team_module.outputs, got, outs):
        np.testing.assert_array_equal(g, want[name])
        np.testing.assert_array_equal(o, want[name])


@pytest.mark.parametrize("threads", [1, 2])
def test_exported_and_loaded_both_paths(digits, team_module, tmp_path, threads):
    module = digits[0] if threads == 1 else team_module
    module.export(tmp_path)
    loaded = sw2c.load(tmp_path)
    assert loaded._native is not None or threads > 1  # the library has `<name>_argv`
    xs = x_of(module, 3)
    want = module(*xs)
    want = [want] if len(module.outputs) == 1 else list(want)
    got = loaded(*xs)
    got = [got] if len(module.outputs) == 1 else list(got)
    outs = empty_outputs(loaded)
    loaded.run_into(xs, outs)
    for w, g, o in zip(want, got, outs):
        np.testing.assert_array_equal(g, w)
        np.testing.assert_array_equal(o, w)


def test_library_without_argv_falls_back(digits, tmp_path):
    module = digits[0]
    module.export(tmp_path)
    loaded = sw2c.load(tmp_path)
    loaded._bind_words(None)  # as from a library exported before `<name>_argv` existed
    assert loaded._native is None
    xs = x_of(module, 4)
    outs = empty_outputs(loaded)
    loaded.run_into(xs, outs)
    np.testing.assert_array_equal(loaded(*xs), module(*xs))
    np.testing.assert_array_equal(outs[0], module(*xs))


@pytest.mark.filterwarnings("ignore:no calibration data")
def test_simulated_module_runs_into_too():
    module = sw2c.compile(mlp(), target="asic", verify=False)
    xs = x_of(module)
    outs = empty_outputs(module)
    module.run_into(xs, outs)
    np.testing.assert_array_equal(outs[0], module(*xs))
    with pytest.raises(sw2c.InputError, match="output 'output' has dtype float64"):
        module.run_into(xs, [np.empty(module.outputs[0][1], np.float64)])
