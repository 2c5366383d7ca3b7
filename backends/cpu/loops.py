"""Counted loops for ir.IRBuilder: ``with for_range(b, n) as i:`` emits a phi-based loop."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from llvmlite import ir

from .llvm import I64


def const(n: int) -> ir.Constant:
    return ir.Constant(I64, n)


@contextmanager
def for_range(b: ir.IRBuilder, stop: int | ir.Value, start: int | ir.Value = 0,
              step: int = 1) -> Iterator[ir.Value]:
    """Loop an i64 index from start to stop (exclusive); the body is emitted inside ``with``."""
    start = const(start) if isinstance(start, int) else start
    stop = const(stop) if isinstance(stop, int) else stop
    pre = b.block
    head = b.append_basic_block("loop.head")
    body = b.append_basic_block("loop.body")
    end = b.append_basic_block("loop.end")
    b.branch(head)
    b.position_at_end(head)
    i = b.phi(I64, "i")
    i.add_incoming(start, pre)
    b.cbranch(b.icmp_signed("<", i, stop), body, end)
    b.position_at_end(body)
    yield i
    nxt = b.add(i, const(step), flags=("nsw",))
    i.add_incoming(nxt, b.block)
    b.branch(head)
    b.position_at_end(end)


Split = tuple[int, ir.Value, ir.Value]  # (axis, lo, hi): run only [lo, hi) of that axis


@contextmanager
def loop_nest(b: ir.IRBuilder, shape: Sequence[int], split: Split | None = None,
              axis: int = 0) -> Iterator[list[ir.Value]]:
    """Nested loops over ``shape`` (last axis innermost); yields one index per axis. With
    ``split``, one axis runs over a sub-range only (this thread's share)."""
    if not shape:
        yield []
        return
    if split is not None and split[0] == axis:
        loop = for_range(b, split[2], start=split[1])
    else:
        loop = for_range(b, shape[0])
    with loop as i, loop_nest(b, shape[1:], split, axis + 1) as rest:
        yield [i, *rest]
