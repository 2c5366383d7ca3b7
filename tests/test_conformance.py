"""The ONNX backend node tests of every supported op, compiled and run (see conformance.py)."""

from __future__ import annotations

import pytest
from sw2c.tests.conformance import KNOWN, node_cases, run_case, scope

CASES = [c for c in node_cases() if scope(c) is None]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_node(case):
    if case.name in KNOWN:
        pytest.xfail(KNOWN[case.name])
    run_case(case)


def test_scope_is_not_empty():
    assert len(CASES) > 300
