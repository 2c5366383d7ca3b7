"""Threads inside generated code: a team of ``size`` threads (fixed at compile time) runs every
kernel, each on its own slice of an axis, and meets at a spin barrier between kernels.

The runtime starts the threads (runtime/pool.py); generated code only splits and waits.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from llvmlite import ir

from .llvm import I32, I64
from .loops import Split, const

I32P = I32.as_pointer()


@dataclass(frozen=True)
class Team:
    """``tid``: this thread's index (an i64 SSA value); ``size``: threads; ``sync``: the
    barrier's two i32 words (arrivals, generation)."""

    tid: ir.Value
    size: int
    sync: ir.Value

    def bounds(self, b: ir.IRBuilder, n: int) -> tuple[ir.Value, ir.Value]:
        """This thread's half-open share [lo, hi) of ``n`` items."""
        if self.size == 1:
            return const(0), const(n)
        lo = b.udiv(b.mul(self.tid, const(n)), const(self.size))
        hi = b.udiv(b.mul(b.add(self.tid, const(1)), const(n)), const(self.size))
        return lo, hi

    @contextmanager
    def share(self, b: ir.IRBuilder, shape: Sequence[int],
              axes: Sequence[int] | None = None) -> Iterator[Split | None]:
        """Split the first of ``axes`` (default: all) that has more than one element; when
        none has, thread 0 alone runs the body, so no two threads write the same element."""
        axes = range(len(shape)) if axes is None else axes
        axis = next((a for a in axes if shape[a] > 1), None)
        if self.size == 1:
            yield None
        elif axis is None:
            with b.if_then(b.icmp_unsigned("==", self.tid, const(0))):
                yield None
        else:
            yield (axis, *self.bounds(b, shape[axis]))

    def barrier(self, b: ir.IRBuilder) -> None:
        if self.size > 1:
            b.call(barrier_function(b.module), [self.sync, const(self.size)])


def _pause(b: ir.IRBuilder) -> None:
    """The spin-wait hint (x86 `pause`), where the target has one."""
    if "x86" in b.module.triple:
        b.call(b.module.declare_intrinsic("llvm.x86.sse2.pause",
                                          fnty=ir.FunctionType(ir.VoidType(), [])), [])


YIELD_AFTER = 2000  # spins (~50 us) before a waiting thread gives its core away each round


def _wait(b: ir.IRBuilder, spins: ir.Value) -> None:
    """One round of waiting: `pause`, or once the wait is long, sched_yield(): on a machine
    with more runnable threads than cores, the thread we wait for may need our core."""
    module = b.module
    yield_fn = module.globals.get("sched_yield") or ir.Function(
        module, ir.FunctionType(I32, []), "sched_yield")
    with b.if_else(b.icmp_unsigned("<", spins, const(YIELD_AFTER))) as (short, long):
        with short:
            _pause(b)
        with long:
            b.call(yield_fn, [])


def emit_worker(module: ir.Module, entry: ir.Function, n_args: int) -> ir.Function:
    """`i64 <name>_worker(i64* mailbox, i32* sync, i64 tid, i64 seen, i64 spins)`: a worker
    thread's loop, all in native code so a busy worker never takes the GIL: spin until the
    mailbox's generation (word 0) moves past the last one seen, run the entry with the pointers
    in words 2.., and wait again. Returns the last generation seen after ``spins`` idle rounds
    (the runtime then parks the thread), or -1 when word 1 asks the worker to exit."""
    i64p = I64.as_pointer()
    fn = ir.Function(module, ir.FunctionType(I64, [i64p, I32P, I64, I64, I64]),
                     f"{entry.name.removesuffix('_entry')}_worker")
    mailbox, sync, tid, seen0, spins = fn.args
    b = ir.IRBuilder(fn.append_basic_block())
    pre = b.block
    wait, idle, timeout, run, work, gone = (fn.append_basic_block(n) for n in (
        "wait", "idle", "timeout", "run", "work", "exit"))
    b.branch(wait)
    b.position_at_end(wait)
    i = b.phi(I64)
    seen = b.phi(I64)
    i.add_incoming(const(0), pre)
    seen.add_incoming(seen0, pre)
    gen = b.load_atomic(mailbox, "acquire", 8)
    b.cbranch(b.icmp_signed("!=", gen, seen), run, idle)
    b.position_at_end(idle)
    _wait(b, i)
    nxt = b.add(i, const(1))
    i.add_incoming(nxt, b.block)
    seen.add_incoming(seen, b.block)
    b.cbranch(b.icmp_signed("<", nxt, spins), wait, timeout)
    b.position_at_end(timeout)
    b.ret(seen)
    b.position_at_end(run)
    leave = b.load(b.gep(mailbox, [const(1)]))
    b.cbranch(b.icmp_signed("!=", leave, const(0)), gone, work)
    b.position_at_end(gone)
    b.ret(const(-1))
    b.position_at_end(work)
    args = [b.inttoptr(b.load(b.gep(mailbox, [const(2 + j)])), t)
            for j, t in enumerate(entry.function_type.args[:n_args])]
    b.call(entry, [*args, sync, tid])
    i.add_incoming(const(0), work)
    seen.add_incoming(gen, work)
    b.branch(wait)
    return fn


def barrier_function(module: ir.Module) -> ir.Function:
    """`void sw2c_barrier(i32* sync, i64 n)`: a sense-reversing spin barrier for n threads."""
    existing = module.globals.get("sw2c_barrier")
    if existing is not None:
        return existing
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [I32P, I64]), "sw2c_barrier")
    fn.linkage = "internal"
    sync, n = fn.args
    b = ir.IRBuilder(fn.append_basic_block())
    count = sync
    gen_ptr = b.gep(sync, [ir.Constant(I32, 1)])
    gen = b.load_atomic(gen_ptr, "acquire", 4)
    arrived = b.atomic_rmw("add", count, ir.Constant(I32, 1), "acq_rel")
    last = b.icmp_unsigned("==", b.zext(arrived, I64), b.sub(n, const(1)))
    with b.if_else(last) as (then, otherwise):
        with then:
            b.store_atomic(ir.Constant(I32, 0), count, "monotonic", 4)
            b.atomic_rmw("add", gen_ptr, ir.Constant(I32, 1), "release")
        with otherwise:
            before = b.block
            spin = b.append_basic_block("spin")
            done = b.append_basic_block("spun")
            b.branch(spin)
            b.position_at_end(spin)
            i = b.phi(I64)
            i.add_incoming(const(0), before)
            _wait(b, i)
            i.add_incoming(b.add(i, const(1)), b.block)
            now = b.load_atomic(gen_ptr, "acquire", 4)
            b.cbranch(b.icmp_unsigned("==", now, gen), spin, done)
            b.position_at_end(done)
    b.ret_void()
    return fn
