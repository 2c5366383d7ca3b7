"""The memory planner: buffers live at the same step never share bytes; the arena is at least
the lower bound and usually reaches it."""

from __future__ import annotations

import random

import pytest
from sw2c.driver import compile_graph
from sw2c.passes.memory_plan import ALIGN, Buffer, lower_bound, peak, place_buffers
from sw2c.tests.ir_models import residual_cnn


def assert_disjoint(placed: list[Buffer]) -> None:
    for i, a in enumerate(placed):
        assert a.offset >= 0 and a.offset % ALIGN == 0
        for b in placed[i + 1:]:
            if a.overlaps(b):
                assert a.offset + a.size <= b.offset or b.offset + b.size <= a.offset, (a, b)


@pytest.mark.parametrize("seed", range(30))
def test_random_lifetimes_are_packed_without_overlap(seed):
    rng = random.Random(seed)
    steps = rng.randint(1, 40)
    buffers = []
    for i in range(rng.randint(1, 60)):
        first = rng.randrange(steps)
        last = min(steps - 1, first + rng.choice([0, 0, 1, 2, 5, 20]))
        buffers.append(Buffer(f"b{i}", ALIGN * rng.randint(1, 1000), first, last))
    bound = lower_bound(buffers, steps)
    placed = place_buffers(buffers, bound)
    assert sorted(b.name for b in placed) == sorted(b.name for b in buffers)
    assert_disjoint(placed)
    assert bound <= peak(placed) <= sum(b.size for b in buffers)


def test_compiled_plan_reaches_the_lower_bound():
    module = compile_graph(residual_cnn(c=16, hw=24), "plan")
    plan = module.plan
    assert_disjoint(list(plan.buffers))
    assert plan.lower_bound_bytes <= plan.arena_bytes <= plan.naive_bytes
    assert plan.arena_bytes == plan.lower_bound_bytes
    report = module.report
    assert report["arena_bytes"] == plan.arena_bytes
