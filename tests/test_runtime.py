"""Module's run-time contract: feeds are validated before native code sees them; concurrent
callers are serialized; the thread team publishes runs safely, parks, wakes and closes."""

from __future__ import annotations

import faulthandler
import gc
import tempfile
import threading
import time
from collections.abc import Callable

import llvmlite.binding as llvm
import numpy as np
import onnx
import pytest
import sw2c
from llvmlite import ir
from sw2c.backends.cpu.team import emit_team
from sw2c.driver import compile_graph
from sw2c.ir import Builder, Graph, Op, TensorType, Unary, Value, run
from sw2c.tests.ir_models import residual_cnn


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


def chain(n: int = 64, depth: int = 2, seed: int = 0) -> Graph:
    """x -> (matmul by a constant, tanh) x depth: every intermediate lives in the arena."""
    rng = np.random.default_rng(seed)
    b = Builder("chain", [Value("x", TensorType((n, n)))])
    y = "x"
    for i in range(depth):
        w = b.const((rng.standard_normal((n, n)) / np.sqrt(n)).astype(np.float32), f"w{i}")
        y = b.add(Op.UNARY, [b.add(Op.MATMUL, [y, w])], fn=Unary.TANH)
    return b.finish([y])


def within(seconds: float, body: Callable[[], None]) -> None:
    """Run ``body`` on a daemon thread; fail with every thread's stack if it has not returned
    after ``seconds``. A hang in native code cannot be interrupted, so the stuck thread is left
    behind instead of blocking the test run."""
    raised: list[BaseException] = []

    def guarded() -> None:
        try:
            body()
        except BaseException as e:  # handed to the test's thread below
            raised.append(e)

    thread = threading.Thread(target=guarded, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        with tempfile.TemporaryFile("w+") as f:
            faulthandler.dump_traceback(f)
            f.seek(0)
            pytest.fail(f"still running after {seconds} s:\n{f.read()}")
    if raised:
        raise raised[0]


@pytest.mark.parametrize("threads", [1, 2])
def test_concurrent_callers_each_get_their_own_result(monkeypatch, threads):
    """Python threads calling one module at once share its arena (and team words): the
    module's lock must serialize them, or one caller's intermediates overwrite another's."""
    monkeypatch.setattr("sw2c.backends.cpu.codegen.MIN_PARALLEL_WORK", 0)  # split them all
    graph = chain()
    m = compile_graph(graph, "chain", threads=threads)
    assert m.report["arena_bytes"] > 0 and m.report["threads"] == threads
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((64, 64)).astype(np.float32) for _ in range(4)]
    expect = [m(x) for x in xs]
    wrong = []

    def work(k: int) -> None:
        for _ in range(150):
            if not np.array_equal(m(xs[k]), expect[k]):
                wrong.append(k)

    def race() -> None:
        callers = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in callers:
            t.start()
        for t in callers:
            t.join()

    within(120, race)
    assert not wrong, f"{len(wrong)} of 600 concurrent runs returned another run's result"


def wait_for(condition: Callable[[], bool], seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def test_thread_team_lifecycle(monkeypatch):
    """The team of runtime/pool.py over a thousand runs: every result equals the single
    thread's, with fresh feeds freed right after each run; workers that parked (idle past
    their spin budget) wake for the next run; close() while a worker spins ends every worker;
    runs after close() still compute (thread 0 takes every chunk)."""
    monkeypatch.setattr("sw2c.backends.cpu.codegen.MIN_PARALLEL_WORK", 20000)  # split + solo
    graph = residual_cnn(c=16, hw=24)
    one, two = compile_graph(graph, "one"), compile_graph(graph, "two", threads=2)
    assert two.report["threads"] == 2
    team = two._team
    rng = np.random.default_rng(0)
    wrong = []
    held: list[np.ndarray] = []  # every other run's buffers outlive the next run: consecutive
    # runs get different pointers, so a worker reading the last run's would be caught

    def check(module: sw2c.Module, i: int) -> None:
        x = rng.standard_normal((1, 3, 24, 24)).astype(np.float32)
        want = one(x)
        got = module.run({"x": x})["logits"]
        if not np.array_equal(got, want):
            wrong.append(i)
        held.clear()  # the last run's feed and output are freed right after this run
        if i % 2 == 0:
            held.extend((x, got))
        del x, got  # and odd runs' right after their own: no worker may touch them later
        if i % 256 == 0:
            gc.collect()

    def lifecycle() -> None:
        for i in range(1000):  # 3000 took 110 s on two busy cores: a spinning worker waits
            check(two, i)      # for a time slice; a race shows up long before
        team.spins = 64  # park after a short idle
        for i in range(10):
            assert wait_for(lambda: team.parked == 1), "the worker never parked"
            wakes = team.wakes
            check(two, i)
            assert wait_for(lambda w=wakes: team.wakes > w), "a parked worker missed a run"
        assert wait_for(lambda: team.parked == 1)
        team.spins = 1 << 30  # from its next wake on, it only spins
        wakes = team.wakes
        check(two, 0)
        assert wait_for(lambda: team.wakes > wakes)  # back in native code, spinning
        team.close()
        assert not any(t.is_alive() for t in team._threads)
        for i in range(50):
            check(two, i)

    within(120, lifecycle)
    assert not wrong, f"{len(wrong)} threaded runs differ from the single-thread result"


@pytest.mark.parametrize("triple,hint,asm", [
    ("x86_64-unknown-linux-gnu", "llvm.x86.sse2.pause", ["pause"]),
    ("aarch64-unknown-linux-gnu", "llvm.aarch64.hint", ["yield", "stlr", "ldar"]),
    ("armv7-unknown-linux-gnueabihf", "llvm.arm.hint", ["yield", "dmb"]),
    ("riscv64-unknown-linux-gnu", None, []),
])
def test_team_code_publishes_with_release_and_hints_per_isa(triple, hint, asm):
    """The generation word is published by a release store paired with the workers' acquire
    loads (stlr/ldar on AArch64, fences elsewhere), not by x86's store order, and the spin
    hint is the target's own: pause on x86, yield on Arm, none on RISC-V."""
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()
    module = ir.Module("m")
    module.triple = triple
    i64p = ir.IntType(64).as_pointer()
    entry = ir.Function(module, ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer()] * 3
                                                + [i64p, ir.IntType(64), ir.IntType(64)]),
                        "m_entry")
    ir.IRBuilder(entry.append_basic_block()).ret_void()
    emit_team(module, entry, 3, 5, threads=2)
    text = str(module)
    publish = text[text.index("define void @\"m_publish\""):]
    assert "release" in publish[:publish.index("\n}")]
    assert (hint in text) if hint else ("llvm.x86" not in text and ".hint" not in text)
    tm = llvm.Target.from_triple(triple).create_target_machine(opt=2)
    code = tm.emit_assembly(llvm.parse_assembly(text))
    for instruction in asm:
        assert instruction in code, f"{instruction} missing from the {triple} team code"


def test_bench_reports_the_threads_that_ran(monkeypatch, tmp_path):
    """`sw2c bench --threads 2` on a model too small to split: it ran on one thread, and its %
    of peak is of one core."""
    from sw2c.benchmarks import bench, harness

    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 8])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 8])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    path = tmp_path / "tiny.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]),
              path)
    stats = {"median": 1e-6, "p90": 1e-6, "mean": 1e-6, "min": 1e-6, "calls": 1}
    monkeypatch.setattr(bench, "measure", lambda *a, **k: {"sw2c": stats, "ort": stats,
                                                          "ratio": 1.0})
    r = bench.bench_model([str(path)], threads=2, seconds=0.01)
    assert r["threads"] == 1 and r["threads_requested"] == 2
    assert r["percent_of_peak"] == pytest.approx(harness.throughput(r["gflop"] * 1e9, 1e-6, 1)[1])
    assert "1 thread(s) (2 requested" in bench.format_result(r)


def test_a_thread_takes_its_own_share_of_chunks_first_then_the_rest():
    """``sw2c_grab_near``: 10 chunks in 3 shares ([0, 3), [3, 6), [6, 10)); thread 1 takes
    its share in order, then share 2's, then share 0's; another thread then finds what is
    left; a counter tagged by another run stops the thread (-2)."""
    import ctypes

    from sw2c.backends.cpu.llvm import jit, new_module
    from sw2c.backends.cpu.team import LOW, SLOT, grab_near_function

    module = new_module("grab")
    fn = grab_near_function(module)
    fn.linkage = "external"
    engine = jit(module)
    grab = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p, *[ctypes.c_int64] * 4)(
        engine.get_function_address("sw2c_grab_near"))
    tag = 7 << 32
    words = np.zeros(SLOT, np.int64)
    words[:3] = tag
    at = words.ctypes.data

    def take(tid: int, n: int) -> list[int]:
        return [grab(at, tag, 10, tid, 3) for _ in range(n)]

    assert take(1, 4) == [3, 4, 5, 6]
    assert take(2, 3) == [7, 8, 9]
    assert take(1, 4) == [0, 1, 2, -1]
    assert take(0, 1) == [-1] and (words[:3] & LOW).tolist() == [3, 3, 4]
    words[:3] = 8 << 32  # the next run's tags: this run's late thread stops
    assert grab(at, tag, 10, 0, 3) == -2
