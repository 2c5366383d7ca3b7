"""A large program compiles in parts, in worker processes (backends/cpu/partition.py,
llvm.jit): the parts define every function once, the linked code is the one-module code's
bit for bit, export links all the parts, and a worker that fails changes nothing."""

from __future__ import annotations

import re

import llvmlite.binding as llvm
import numpy as np
import pytest
import sw2c
from sw2c.backends.cpu import llvm as cpu_llvm
from sw2c.backends.cpu.codegen import generate
from sw2c.backends.cpu.partition import split
from sw2c.driver import compile_graph
from sw2c.passes.pipeline import cpu_pipeline, run_pipeline
from sw2c.runtime.export import check_library
from sw2c.tests.ir_models import residual_cnn, split_residual_cnn

DEFINED = re.compile(r'^define (?:(internal|private|hidden) )?[^@]*@"?([^"(]+)', re.M)
HIDDEN_DECLARED = re.compile(r'^declare hidden [^@]*@"?([^"(]+)', re.M)


def _program(threads: int, profile: bool, monkeypatch):
    monkeypatch.setattr("sw2c.backends.cpu.codegen.MIN_PARALLEL_WORK", 20000)
    graph = run_pipeline(residual_cnn(c=16, hw=24), cpu_pipeline())
    return generate(graph, "parts", threads, profile=profile)


def _definitions(text: str) -> dict[str, str]:
    return {name: (linkage or "").strip() for linkage, name in DEFINED.findall(text)}


@pytest.mark.parametrize("threads, profile", [(1, False), (2, False), (2, True)])
def test_parts_define_each_function_once(threads, profile, monkeypatch):
    """Profile mode wraps each chunk in an inlinable (copied) function that calls its kernel:
    the kernel must then be visible to every part the copy lands in."""
    module = _program(threads, profile, monkeypatch).module
    for parts in (2, 3, 4):
        _check_parts(module, split(module, parts), parts)


def _check_parts(module, texts: list[str], parts: int) -> None:
    assert 2 <= len(texts) <= parts
    whole = _definitions(str(module))
    seen: dict[str, int] = {}
    for text in texts:
        llvm.parse_assembly(text).verify()  # each part is a module on its own
        for name, linkage in _definitions(text).items():
            seen[name] = seen.get(name, 0) + 1
            # what another part calls is hidden: never exported from a shared library
            assert linkage != "" or whole[name] == "", name
    assert set(seen) == set(whole)
    for text in texts:  # what a part declares hidden, another part defines hidden
        hidden = {n for other in texts if other is not text
                  for n, linkage in _definitions(other).items() if linkage == "hidden"}
        assert set(HIDDEN_DECLARED.findall(text)) <= hidden
    copied = {n for n, k in seen.items() if k > 1}
    assert all(whole[n] == "internal" for n in copied)  # only inlinable helpers are copied


@pytest.fixture
def in_parts(monkeypatch):
    monkeypatch.setattr(cpu_llvm, "PARALLEL_INSTRUCTIONS", 0)
    monkeypatch.setattr(cpu_llvm, "_compile_cores", lambda: 2)


def _outputs(module, seed=0):
    x = np.random.default_rng(seed).standard_normal((1, 3, 24, 24)).astype(np.float32)
    return module(x)


def test_parts_run_bit_for_bit_like_one_module(monkeypatch):
    whole = split_residual_cnn("whole")
    objects = []
    monkeypatch.setattr(cpu_llvm, "PARALLEL_INSTRUCTIONS", 0)
    monkeypatch.setattr(cpu_llvm, "_compile_cores", lambda: 2)
    jit = cpu_llvm.jit
    monkeypatch.setattr("sw2c.driver.jit", lambda m, objs: jit(m, objects) and jit(m, objs))
    parted = split_residual_cnn("parted")
    assert len(objects) == 2
    for seed in range(3):
        np.testing.assert_array_equal(_outputs(parted, seed), _outputs(whole, seed))


def test_export_links_every_part(in_parts, tmp_path):
    module = split_residual_cnn("parted")
    lib = module.export(tmp_path)
    x = np.random.default_rng(1).standard_normal((1, 3, 24, 24)).astype(np.float32)
    check_library(lib, module, {module.inputs[0][0]: x})
    loaded = sw2c.load(tmp_path)
    np.testing.assert_array_equal(loaded(x), module(x))


def test_a_worker_that_cannot_start_changes_nothing(in_parts, monkeypatch):
    x = np.random.default_rng(2).standard_normal((1, 3, 10, 10)).astype(np.float32)
    expected = compile_graph(residual_cnn(), "ref")(x)
    started = []
    monkeypatch.setattr(cpu_llvm.sys, "executable", "/nonexistent/python")
    monkeypatch.setattr(cpu_llvm, "_compile_cores", lambda: 2)
    real = cpu_llvm._start_worker
    monkeypatch.setattr(cpu_llvm, "_start_worker",
                        lambda *a: started.append(real(*a)) or started[-1])
    module = compile_graph(residual_cnn(), "fallback")
    assert started == [None]  # the part compiled here instead
    np.testing.assert_array_equal(module(x), expected)


def test_compile_jobs_are_the_users_to_limit(monkeypatch):
    monkeypatch.setenv("SW2C_COMPILE_JOBS", "1")
    assert cpu_llvm._compile_cores() == 1
    monkeypatch.setenv("SW2C_COMPILE_JOBS", "3")
    assert cpu_llvm._compile_cores() == 3
    monkeypatch.setattr(cpu_llvm.sys, "executable", "/usr/bin/uwsgi")  # an embedding program
    assert cpu_llvm._compile_cores() == 1
