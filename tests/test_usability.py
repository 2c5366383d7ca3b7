"""Rough edges a new user hits (issue 9, item 10): loading one export of several, messages in
the CLI's words, partial benchmark runs, output paths checked up front, `| head`, --join with
one model, empty inputs, --version and `python -m sw2c`, the documented API, internal errors."""

from __future__ import annotations

import inspect
import subprocess
import sys

import numpy as np
import pytest
import sw2c
from onnx import TensorProto, helper
from sw2c import cli
from sw2c.tests.test_cli import ASIC, DIGITS, MLP
from sw2c.tests.test_cli import sw2c as run_cli


def one_line_error(proc: subprocess.CompletedProcess, *words: str) -> str:
    """The single stderr line of a failed command, after checking it names ``words``."""
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sw2c: error: "), proc.stderr
    for word in words:
        assert word in lines[0]
    return lines[0]


# --- sw2c.load: pick one export by name or by file ------------------------------------------


@pytest.fixture(scope="module")
def two_exports(tmp_path_factory):
    """A directory holding two cpu exports (mlp and copy), as after two `sw2c -o` commands."""
    out = tmp_path_factory.mktemp("build")
    module = sw2c.compile(MLP, verify=False)
    module.export(out)
    sw2c.compile(MLP, verify=False, name="copy").export(out)
    return module, out


def test_load_lists_the_exports_and_how_to_pick_one(two_exports):
    _, out = two_exports
    with pytest.raises(sw2c.ModelError) as info:
        sw2c.load(out)
    message = str(info.value)
    assert "'copy', 'mlp'" in message and "name='copy'" in message
    with pytest.raises(sw2c.ModelError, match="no export named 'nope'.*'copy', 'mlp'"):
        sw2c.load(out, name="nope")


@pytest.mark.parametrize("how", ["name", "library", "json"])
def test_load_by_name_or_by_file(two_exports, how):
    module, out = two_exports
    loaded = {"name": lambda: sw2c.load(out, name="mlp"),
              "library": lambda: sw2c.load(out / "libmlp.so"),
              "json": lambda: sw2c.load(str(out / "mlp.json"))}[how]()
    x = np.random.default_rng(0).standard_normal((1, 64)).astype(np.float32)
    assert loaded.name == "mlp"
    np.testing.assert_array_equal(loaded(x), module(x))


@pytest.mark.filterwarnings("ignore:no calibration data")
def test_load_refuses_other_files_and_asic_source(two_exports, tmp_path):
    _, out = two_exports
    with pytest.raises(sw2c.ModelError, match="lib<name>.so or <name>.json"):
        sw2c.load(MLP)
    with pytest.raises(sw2c.ModelError, match="no such directory"):
        sw2c.load(tmp_path / "missing")
    asic = sw2c.compile(DIGITS, target="asic:tiny", input_shapes={"input": (1, 1, 8, 8)},
                        verify=False)
    asic.export(tmp_path)
    sw2c.compile(MLP, verify=False).export(tmp_path)
    with pytest.raises(sw2c.ModelError, match="holds C source for asic:tiny"):
        sw2c.load(tmp_path, name="digits_cnn")
    with pytest.raises(sw2c.ModelError, match="holds C source"):
        sw2c.load(tmp_path / "digits_cnn.c")
    assert sw2c.load(tmp_path, name="mlp").name == "mlp"


# --- the CLI speaks in options; the wrong-shape hint only when the model allows it -------------


def test_cli_dynamic_dim_warning_is_one_line_with_the_option():
    proc = run_cli("inspect", DIGITS, "--json")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [
        "sw2c: warning: input 'input' has dynamic dimension 0 ('N'): compiling for shape "
        "(1, 1, 8, 8), with 1 there; fix it with --input-shape input=1,1,8,8"]


def test_cli_errors_name_options_not_parameters():
    line = one_line_error(run_cli(MLP, "--input-shape", "input=1,2", "--no-verify"),
                          "--input-shape input=1,2 sets dim 1 to 2", "fixes it at 64")
    assert "input_shapes" not in line
    assert cli.cli_words("pass input_shapes={'x': (2, 3)} or input_shapes['x'] = [1, 2]") == (
        "pass --input-shape x=2,3 or --input-shape x=1,2")


def test_wrong_shape_hint_suggests_recompiling_only_for_dynamic_dims(tmp_path):
    with pytest.warns(UserWarning, match="dynamic"):
        digits = sw2c.compile(DIGITS, verify=False)  # dim 0 ('N') is dynamic
    with pytest.raises(sw2c.InputError,
                       match=r"recompile with input_shapes=\{'input': \(2, 1, 8, 8\)\}"):
        digits(np.zeros((2, 1, 8, 8), np.float32))
    with pytest.raises(sw2c.InputError, match="fixes dim 2 at 8") as info:
        digits(np.zeros((1, 1, 9, 8), np.float32))
    assert "recompile" not in str(info.value)
    mlp = sw2c.compile(MLP, verify=False)  # every dim static: recompiling would not help
    mlp.export(tmp_path)
    for module in (mlp, sw2c.load(tmp_path)):
        with pytest.raises(sw2c.InputError, match="fixes dim 0 at 1") as info:
            module(np.zeros((2, 64), np.float32))
        assert "recompile" not in str(info.value)
        with pytest.raises(sw2c.InputError, match="takes rank 2"):
            module(np.zeros((64,), np.float32))


# --- benchmarks: a partial run leaves the committed results alone ------------------------------


def test_partial_benchmark_run_does_not_overwrite_the_full_results(tmp_path, monkeypatch):
    from sw2c.benchmarks import run

    full, partial = tmp_path / "results", tmp_path / "results" / "partial"
    monkeypatch.setattr(run, "DEFAULT_OUT", full)
    monkeypatch.setattr(run, "PARTIAL_OUT", partial, raising=False)
    assert run.main(["--models", "mlp", "--threads", "1", "--min-seconds", "0.01", "--rounds",
                     "1", "--no-progress"]) == 0
    assert sorted(p.name for p in full.iterdir()) == ["partial"]
    assert (partial / "results.md").exists() and (partial / "results.json").exists()
    assert run.results_dir(None, complete=True) == full
    assert run.results_dir(tmp_path / "mine", complete=False) == tmp_path / "mine"


# --- output paths are checked before the compile -----------------------------------------------


def test_unwritable_outputs_fail_before_compiling(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    out = tmp_path / "out"
    proc = run_cli(DIGITS, *ASIC, "-o", str(out), "--emit-qdq", str(blocker / "q.onnx"))
    one_line_error(proc, "--emit-qdq", str(blocker / "q.onnx"), "is a file")
    assert not out.exists()  # nothing compiled or exported
    one_line_error(run_cli(MLP, "-o", str(blocker)), f"-o {blocker}", "not a directory")
    one_line_error(run_cli(MLP, "--emit-qdq", str(tmp_path / "q.onnx")), "--target asic")


def test_emit_qdq_creates_its_directory(tmp_path):
    qdq = tmp_path / "new" / "dir" / "q.onnx"
    proc = run_cli(DIGITS, *ASIC, "--no-verify", "-o", str(tmp_path / "out"), "--emit-qdq",
                   str(qdq))
    assert proc.returncode == 0, proc.stderr
    assert qdq.stat().st_size > 1000


# --- `sw2c ... | head` ---------------------------------------------------------------------------


def test_closed_stdout_exits_quietly_with_141():
    proc = subprocess.Popen([sys.executable, "-m", "sw2c.cli", "inspect", MLP],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # the reader is gone before sw2c writes anything, as `| head` that ends
    stderr = proc.stderr.read()
    assert proc.wait(timeout=300) == 141  # 128 + SIGPIPE, as a shell reports a piped tool
    assert stderr == ""


# --- --join / joins with one model --------------------------------------------------------------


def test_join_with_one_model_is_an_error(tmp_path):
    one_line_error(run_cli(MLP, "--join", "output=input", "-o", str(tmp_path)),
                   "--join", "two or more models")
    with pytest.raises(sw2c.Sw2cError, match="two or more models, got 1"):
        sw2c.compile(MLP, joins=[("output", "input")])


# --- empty inputs -----------------------------------------------------------------------------


def test_zero_size_inputs_are_refused(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [0, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [0, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "empty", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(sw2c.ModelError, match=r"input 'x' has shape \(0, 4\): dim 0 is zero"):
        sw2c.compile(model)
    one_line_error(run_cli(DIGITS, "--input-shape", "input=0,1,8,8", "-o", str(tmp_path)),
                   "input 'input'", "dim 0 is zero")


# --- --version, python -m sw2c, the documented API -----------------------------------------------


def test_version_and_python_m_sw2c():
    proc = subprocess.run([sys.executable, "-m", "sw2c", "--version"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout == f"sw2c {sw2c.__version__}\n"
    assert run_cli("inspect", "--version").stdout == proc.stdout
    proc = subprocess.run([sys.executable, "-m", "sw2c", "--no-such-flag"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("usage: sw2c")


@pytest.mark.parametrize("function", [sw2c.compile, sw2c.load])
def test_every_parameter_is_documented(function):
    doc = inspect.getdoc(function)
    for name in inspect.signature(function).parameters:
        assert f"{name}:" in doc or f"``{name}``" in doc, f"{function.__name__}: {name}"


# --- any failure is one line --------------------------------------------------------------------


def test_unexpected_exceptions_are_one_line_with_a_traceback_on_request(monkeypatch, capsys):
    def boom(args):
        raise KeyError("oops")

    monkeypatch.setattr(cli, "_compile", boom)
    monkeypatch.delenv("SW2C_TRACEBACK", raising=False)
    assert cli.main([MLP]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("sw2c: error: internal error: KeyError: 'oops'")
    assert "please report this" in err[0] and "SW2C_TRACEBACK=1" in err[0]
    monkeypatch.setenv("SW2C_TRACEBACK", "1")
    assert cli.main([MLP]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "in boom" in err
    assert err.splitlines()[-1].startswith("sw2c: error: internal error")


def test_wrapped_internal_errors_point_at_the_traceback(monkeypatch, capsys):
    def wrapped(args):
        try:
            raise IndexError("list index out of range")
        except IndexError as e:
            raise sw2c.CompileError("internal error while compiling: IndexError") from e

    monkeypatch.setattr(cli, "_compile", wrapped)
    monkeypatch.delenv("SW2C_TRACEBACK", raising=False)
    assert cli.main([MLP]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "SW2C_TRACEBACK=1" in err[0]


def test_compile_says_how_many_threads_ran(tmp_path):
    """--threads 2 on a model too small to split: the report says one thread ran, and why."""
    proc = run_cli(MLP, "-o", str(tmp_path), "--threads", "2", "--no-verify")
    assert proc.returncode == 0, proc.stderr
    assert "threads       1 (2 requested: no kernel is big enough to split)" in proc.stdout
