"""Every ONNX backend node test of the suite, through the harness of conformance.py: none may
give a wrong result, raise a non-sw2c exception or hang, in scope or not; and every in-scope test
(an op in SUPPORTED, in the static scope) must pass."""

from __future__ import annotations

import copy
import time

import numpy as np
import pytest
from sw2c.errors import CompileError, UnsupportedOpError
from sw2c.tests.conformance import (
    BUGS,
    ENGINES,
    ERROR,
    HANG,
    KNOWN,
    PASSED,
    RAW,
    WRONG,
    Hang,
    classify,
    deadline,
    node_cases,
    scope,
)

CASES = node_cases()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_node(case):
    outcome = classify(case)
    assert outcome.kind not in BUGS, f"{case.name}: {outcome.kind}: {outcome.detail}"
    if scope(case) is None and outcome.kind != PASSED:
        if case.name in KNOWN:
            pytest.xfail(KNOWN[case.name])
        pytest.fail(f"{case.name} is in scope: {outcome.kind}: {outcome.detail}")


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_known_failures_still_fail(name):
    """A KNOWN entry that passes again is stale: remove it, so the test guards the op."""
    case = next(c for c in CASES if c.name == name)
    assert classify(case).kind != PASSED, f"{name} passes now; drop it from KNOWN"


def test_the_whole_suite_runs():
    assert len(CASES) > 1800
    assert sum(scope(c) is None for c in CASES) > 300


# --- the harness itself: each kind of outcome is recognized -----------------------------------


def _abs_case():
    return next(c for c in CASES if c.name == "test_abs")


def _run_raising(error: BaseException):
    def run(model, feeds):
        raise error
    return run


def test_a_wrong_result_is_caught():
    case = copy.copy(_abs_case())
    inputs, outputs = case.data_sets[0]
    case.data_sets = [(inputs, [outputs[0] + 1])]
    assert classify(case).kind == WRONG
    case.data_sets = [(inputs, [outputs[0].astype(np.float64)])]  # a result of another dtype
    assert classify(case).kind == WRONG


def test_errors_are_told_apart(monkeypatch):
    case = _abs_case()
    internal = CompileError("internal error while compiling: TypeError")
    internal.__cause__ = TypeError("boom")
    for error, kind in [(TypeError("boom"), RAW), (internal, RAW), (Hang("slow"), HANG),
                        (UnsupportedOpError("Abs", "", "n", "mode x"), ERROR)]:
        monkeypatch.setitem(ENGINES, "sw2c", _run_raising(error))
        assert classify(case).kind == kind, error
    assert classify(case).reason == "unsupported ai.onnx::Abs: mode x"


def test_deadline_stops_a_hang():
    started = time.monotonic()
    with pytest.raises(Hang), deadline(0.2):
        while time.monotonic() - started < 10:  # without the deadline: no Hang
            pass
