"""Threads inside generated code, scheduled by chunks.

A kernel worth splitting is cut into ``chunks`` pieces (a range of one axis each). Thread t
first takes the chunks of its own contiguous share (share t of the team's), in order, then
those left in the other shares, so the caller (thread 0) finishes alone whatever a descheduled
worker did not take: on a busy machine the team degrades to one thread instead of waiting for
a core. Consecutive kernels cut along the same axis give a thread the same part of the data,
still in its own core's cache (chunks handed out first-come crossed cores half the time).
Thread 0 then waits for the kernel's completion count and publishes progress; workers wait
for that progress before the next split kernel.

Every word is tagged with the run's generation in its upper 32 bits, so a worker still busy
with an old run never takes a chunk of the new one. A run starts with ``<name>_publish``: it
tags the words, then stores the generation into the mailbox with release order, which the
workers read with acquire loads, so they see the new run's words and pointers on every ISA.
Its callers are runtime/pool.py (in Python) and runtime/team.c (in an exported library).
Layout of the i64 ``sync`` words, one slot of SLOT words (a cache line) each, so a word one
thread polls never shares a line with a word the other writes: slot 0 progress (kernels
complete), then per kernel i: slot 1 + 2i the next chunk of each share (word r for share r,
up to SLOT shares), slot 2 + 2i chunks done. Layout of the mailbox: [0] generation, [1] exit
flag, [2..] the entry's pointer arguments.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from llvmlite import ir

from ...errors import CompileError
from .llvm import I32, I64, has_threads, target_of
from .loops import Split, const, for_range

I64P = I64.as_pointer()
LOW = (1 << 32) - 1
SLOT = 8  # i64 words per sync slot: 64 bytes


def sync_words(kernels: int) -> int:
    """The i64 words of a team's sync array for a program of ``kernels`` kernels."""
    return SLOT * (1 + 2 * kernels)


@dataclass(frozen=True)
class Team:
    """How one kernel is split: this call computes chunk ``tid`` (an i64 SSA value) of
    ``size`` chunks (known at compile time)."""

    tid: ir.Value
    size: int

    def bounds(self, b: ir.IRBuilder, n: int) -> tuple[ir.Value, ir.Value]:
        """This chunk's half-open share [lo, hi) of ``n`` items."""
        if self.size == 1:
            return const(0), const(n)
        lo = b.udiv(b.mul(self.tid, const(n)), const(self.size))
        hi = b.udiv(b.mul(b.add(self.tid, const(1)), const(n)), const(self.size))
        return lo, hi

    @contextmanager
    def share(self, b: ir.IRBuilder, shape: Sequence[int],
              axes: Sequence[int] | None = None) -> Iterator[Split | None]:
        """Split the first of ``axes`` (default: all) that has more than one element; when
        none has, chunk 0 alone runs the body, so no two chunks write the same element."""
        axes = range(len(shape)) if axes is None else axes
        axis = next((a for a in axes if shape[a] > 1), None)
        if self.size == 1:
            yield None
        elif axis is None:
            with b.if_then(b.icmp_unsigned("==", self.tid, const(0))):
                yield None
        else:
            yield (axis, *self.bounds(b, shape[axis]))


YIELD_AFTER = 2000  # spins (~50 us) before a waiting thread gives its core away each round


def spin_hint(triple: str) -> tuple[str, list[ir.Constant]] | None:
    """The spin-wait hint of a target triple's architecture as (intrinsic, arguments): x86
    `pause`, Arm `yield` (hint #1); None where there is none."""
    arch = triple.split("-", 1)[0]
    if arch in ("x86_64", "amd64", "i386", "i486", "i586", "i686"):
        return "llvm.x86.sse2.pause", []
    if arch.startswith(("aarch64", "arm64")):
        return "llvm.aarch64.hint", [ir.Constant(I32, 1)]
    if arch.startswith(("arm", "thumb")):
        return "llvm.arm.hint", [ir.Constant(I32, 1)]
    return None


def _pause(b: ir.IRBuilder) -> None:
    """The spin-wait hint of the module's target, if it has one."""
    hint = spin_hint(b.module.triple)
    if hint is not None:
        name, args = hint
        fn = b.module.globals.get(name) or ir.Function(
            b.module, ir.FunctionType(ir.VoidType(), [a.type for a in args]), name)
        b.call(fn, args)


def _wait(b: ir.IRBuilder, spins: ir.Value) -> None:
    """One round of waiting: the spin hint, or once the wait is long, sched_yield(): on a machine
    with more runnable threads than cores, the thread we wait for may need our core."""
    module = b.module
    yield_fn = module.globals.get("sched_yield") or ir.Function(
        module, ir.FunctionType(I32, []), "sched_yield")
    with b.if_else(b.icmp_unsigned("<", spins, const(YIELD_AFTER))) as (short, long):
        with short:
            _pause(b)
        with long:
            b.call(yield_fn, [])


@contextmanager
def _spin(b: ir.IRBuilder, word: ir.Value) -> Iterator[tuple[ir.Value, ir.Block]]:
    """A waiting loop on ``word``: the body gets (value, exit block) and branches to the exit
    or falls through to wait and read again."""
    fn = b.function
    head, done = fn.append_basic_block("spin"), fn.append_basic_block("spun")
    before = b.block
    b.branch(head)
    b.position_at_end(head)
    i = b.phi(I64)
    i.add_incoming(const(0), before)
    yield b.load_atomic(word, "acquire", 8), done
    _wait(b, i)
    i.add_incoming(b.add(i, const(1)), b.block)
    b.branch(head)
    b.position_at_end(done)


def _function(module: ir.Module, name: str, ret: ir.Type, args: list[ir.Type]) -> tuple:
    existing = module.globals.get(name)
    if existing is not None:
        return existing, None
    fn = ir.Function(module, ir.FunctionType(ret, args), name)
    fn.linkage = "internal"
    # called once per kernel of the entry: inlined, its loops would be optimized per call
    fn.attributes.add("noinline")
    fn.attributes.add("nounwind")
    return fn, ir.IRBuilder(fn.append_basic_block())


def grab_function(module: ir.Module) -> ir.Function:
    """`i64 sw2c_grab(i64* next, i64 tag, i64 chunks)`: the next chunk of this run, -1 when
    none is left, -2 when the counter belongs to another run (a late worker must stop)."""
    fn, b = _function(module, "sw2c_grab", I64, [I64P, I64, I64])
    if b is None:
        return fn
    word, tag, chunks = fn.args
    with _spin(b, word) as (v, _):  # a failed compare-and-swap reads again at once
        stale, gone, take = (fn.append_basic_block(n) for n in ("stale", "gone", "take"))
        ok_tag = b.icmp_unsigned("==", b.and_(v, const(~LOW)), tag)
        b.cbranch(ok_tag, take, stale)
        b.position_at_end(stale)
        b.ret(const(-2))
        b.position_at_end(take)
        index = b.and_(v, const(LOW))
        swap = fn.append_basic_block("swap")
        b.cbranch(b.icmp_unsigned(">=", index, chunks), gone, swap)
        b.position_at_end(gone)
        b.ret(const(-1))
        b.position_at_end(swap)
        pair = b.cmpxchg(word, v, b.add(v, const(1)), "acq_rel", "acquire")
        won = fn.append_basic_block("won")
        lost = fn.append_basic_block("lost")
        b.cbranch(b.extract_value(pair, 1), won, lost)
        b.position_at_end(won)
        b.ret(index)
        b.position_at_end(lost)
    b.unreachable()
    return fn


def grab_near_function(module: ir.Module) -> ir.Function:
    """`i64 sw2c_grab_near(i64* next, i64 tag, i64 chunks, i64 tid, i64 shares)`: the next
    chunk of this thread's share (share ``tid mod shares``, the words ``next[r]`` count each
    share's chunks taken), else of the following shares in turn; -1 when none is left, -2
    for another run's counters (as ``sw2c_grab``)."""
    fn, b = _function(module, "sw2c_grab_near", I64, [I64P, I64, I64, I64, I64])
    if b is None:
        return fn
    word, tag, chunks, tid, shares = fn.args
    grab = grab_function(module)
    with for_range(b, shares) as j:
        r = b.urem(b.add(tid, j), shares)
        lo = b.udiv(b.mul(r, chunks), shares)
        hi = b.udiv(b.mul(b.add(r, const(1)), chunks), shares)
        got = b.call(grab, [b.gep(word, [r]), tag, b.sub(hi, lo)])
        with b.if_then(b.icmp_signed("!=", got, const(-1))):
            with b.if_else(b.icmp_signed(">=", got, const(0))) as (taken, stale):
                with taken:
                    b.ret(b.add(lo, got))
                with stale:
                    b.ret(got)
            b.unreachable()
    b.ret(const(-1))
    return fn


def wait_function(module: ir.Module) -> ir.Function:
    """`i1 sw2c_wait(i64* word, i64 tag, i64 count)`: spin until the word's count reaches
    ``count``; false if it belongs to another run."""
    fn, b = _function(module, "sw2c_wait", ir.IntType(1), [I64P, I64, I64])
    if b is None:
        return fn
    word, tag, count = fn.args
    with _spin(b, word) as (v, _):
        stale, check, ready = (fn.append_basic_block(n) for n in ("stale", "check", "ready"))
        b.cbranch(b.icmp_unsigned("==", b.and_(v, const(~LOW)), tag), check, stale)
        b.position_at_end(stale)
        b.ret(ir.Constant(ir.IntType(1), 0))
        b.position_at_end(check)
        more = fn.append_basic_block("more")
        b.cbranch(b.icmp_unsigned(">=", b.and_(v, const(LOW)), count), ready, more)
        b.position_at_end(ready)
        b.ret(ir.Constant(ir.IntType(1), 1))
        b.position_at_end(more)
    b.unreachable()
    return fn


def shares(threads: int) -> int:
    """The contiguous shares a split kernel's chunks are cut into: one per thread, as many as
    a sync slot has words."""
    return max(1, min(threads, SLOT))


def emit_split_call(b: ir.IRBuilder, kernel: ir.Function, args: list[ir.Value],
                    sync: ir.Value, tid: ir.Value, tag: ir.Value, index: int,
                    chunks: int, threads: int) -> None:
    """Entry code for split kernel number ``index``: a call of the runner of its signature
    (below), and the end of this thread's run when the runner says the run is over for it:
    a branch to the entry's one return, so each kernel adds one block to the entry."""
    runner = _split_runner(b.module, kernel.function_type)
    go_on = b.call(runner, [kernel, *args, sync, tid, tag, const(index), const(chunks),
                            const(shares(threads))])
    on = b.append_basic_block(f"k{index}.done")
    b.cbranch(go_on, on, _run_over(b.function))
    b.position_at_end(on)


def _run_over(entry: ir.Function) -> ir.Block:
    """The entry's block that returns: where a late worker leaves the run."""
    over = next((blk for blk in entry.blocks if blk.name == "over"), None)
    if over is None:
        over = entry.append_basic_block("over")
        ir.IRBuilder(over).ret_void()
    return over


def _signature(kind: str, kernel_t: ir.FunctionType) -> str:
    """A name per kernel signature: runners take the kernel as a pointer, so that a model's
    hundreds of split kernels share a handful of runners instead of compiling one each."""
    return f"sw2c_{kind}." + ".".join(str(t).replace("*", "p") for t in kernel_t.args)


def _split_runner(module: ir.Module, kernel_t: ir.FunctionType) -> ir.Function:
    """`i1 sw2c_run.<sig>(<kernel>*, <kernel args>, i64* sync, i64 tid, i64 tag, i64 index,
    i64 chunks, i64 shares)`: take chunks of step ``index`` (``sw2c_grab_near``) until none
    is left; thread 0 then waits for every chunk and publishes progress ``index + 1``; false
    when this run is over for the calling thread (a late worker). A function of its own, not
    code in the entry: the entry of a model with hundreds of split kernels would hold
    hundreds of loops, and LLVM's loop passes grow faster than linearly with a function's
    loops (DenseNet-121 spent a fifth of its compile rotating them). The kernel is called
    through its pointer, once per chunk."""
    fn, b = _function(module, _signature("run", kernel_t), ir.IntType(1), [
        kernel_t.as_pointer(), *kernel_t.args[:-1], I64P, I64, I64, I64, I64, I64])
    if b is None:
        return fn
    kernel, *args, sync, tid, tag, index, chunks, n_shares = fn.args
    yes, no = ir.Constant(ir.IntType(1), 1), ir.Constant(ir.IntType(1), 0)
    word = b.gep(sync, [b.add(b.mul(index, const(2 * SLOT)), const(SLOT))])
    done = b.gep(sync, [b.add(b.mul(index, const(2 * SLOT)), const(2 * SLOT))])
    with b.if_then(b.icmp_unsigned("!=", tid, const(0))):  # workers: wait for the inputs
        ready = b.call(wait_function(module), [sync, tag, index])
        with b.if_then(b.not_(ready)):
            b.ret(no)
    head, work, out, late = (fn.append_basic_block(n) for n in ("grab", "chunk", "taken", "late"))
    b.branch(head)
    b.position_at_end(head)
    chunk = b.call(grab_near_function(module), [word, tag, chunks, tid, n_shares])
    # compares, not a switch: a jump table's absolute addresses do not relocate in MCJIT
    stop = fn.append_basic_block("stop")
    b.cbranch(b.icmp_signed(">=", chunk, const(0)), work, stop)
    b.position_at_end(stop)
    b.cbranch(b.icmp_signed("==", chunk, const(-1)), out, late)
    b.position_at_end(late)
    b.ret(no)
    b.position_at_end(work)
    b.call(kernel, [*args, chunk])
    b.atomic_rmw("add", done, const(1), "release")
    b.branch(head)
    b.position_at_end(out)
    with b.if_then(b.icmp_unsigned("==", tid, const(0))):
        b.call(wait_function(module), [done, tag, chunks])
        b.store_atomic(b.or_(tag, b.add(index, const(1))), sync, "release", 8)
    b.ret(yes)
    return fn


def emit_solo_call(b: ir.IRBuilder, kernel: ir.Function, args: list[ir.Value], sync: ir.Value,
                   tid: ir.Value, tag: ir.Value, index: int, team: bool) -> None:
    """Entry code for a kernel thread 0 runs alone (then publishes progress): in a team, a
    call of the solo runner of its signature, which keeps the entry one block per kernel."""
    if not team:
        b.call(kernel, [*args, const(0)])
        return
    b.call(_solo_runner(b.module, kernel.function_type),
           [kernel, *args, sync, tid, tag, const(index)])


def _solo_runner(module: ir.Module, kernel_t: ir.FunctionType) -> ir.Function:
    """`void sw2c_solo.<sig>(<kernel>*, <kernel args>, i64* sync, i64 tid, i64 tag, i64
    index)`: on thread 0, the kernel, then progress ``index + 1``; nothing on a worker."""
    fn, b = _function(module, _signature("solo", kernel_t), ir.VoidType(), [
        kernel_t.as_pointer(), *kernel_t.args[:-1], I64P, I64, I64, I64])
    if b is None:
        return fn
    kernel, *args, sync, tid, tag, index = fn.args
    with b.if_then(b.icmp_unsigned("==", tid, const(0))):
        b.call(kernel, [*args, const(0)])
        b.store_atomic(b.or_(tag, b.add(index, const(1))), sync, "release", 8)
    b.ret_void()
    return fn


def emit_team(module: ir.Module, entry: ir.Function, n_args: int, sync_words: int,
              threads: int) -> None:
    """The functions a team's runtime calls: `<name>_publish`, `<name>_mailbox_entry` and
    `<name>_worker` (see each emitter). A target without threads (a bare-metal core) has no
    team: the caller asks for one thread there, and a team is a CompileError, not code that
    calls sched_yield on a chip without an OS."""
    if not has_threads(module):
        raise CompileError(f"target {target_of(module).name} has no threads: compile it with "
                           "threads=1")
    name = entry.name.removesuffix("_entry")
    emit_publish(module, name, sync_words, threads)
    emit_worker(module, emit_mailbox_entry(module, entry, n_args))


def emit_publish(module: ir.Module, name: str, sync_words: int,
                 threads: int) -> ir.Function:
    """`void <name>_publish(i64* mailbox, i64* sync, i64 gen)`: start run ``gen``: tag the
    ``sync_words`` words with it (the first ``shares`` words of each slot: the counters),
    then release-store it into mailbox word 0. Whatever the caller wrote before (argument
    words, the exit flag) is visible to a worker whose acquire load sees ``gen``: the order
    does not rest on x86 keeping stores in order."""
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [I64P, I64P, I64]),
                     f"{name}_publish")
    mailbox, sync, gen = fn.args
    b = ir.IRBuilder(fn.append_basic_block())
    tag = b.shl(b.and_(gen, const(LOW)), const(32))
    with for_range(b, sync_words // SLOT) as i:  # atomic: a late worker may read them
        for r in range(shares(threads)):
            b.store_atomic(tag, b.gep(sync, [b.add(b.mul(i, const(SLOT)), const(r))]),
                           "monotonic", 8)
    b.store_atomic(gen, mailbox, "release", 8)
    b.ret_void()
    return fn


def emit_mailbox_entry(module: ir.Module, entry: ir.Function, n_args: int) -> ir.Function:
    """`void <name>_mailbox_entry(i64* mailbox, i64* sync, i64 tid, i64 gen)`: the entry with
    its ``n_args`` pointers read from mailbox words 2..: one signature for every model, which
    the worker loop and the exported library's thread 0 (runtime/team.c) call."""
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [I64P, I64P, I64, I64]),
                     f"{entry.name.removesuffix('_entry')}_mailbox_entry")
    mailbox, sync, tid, gen = fn.args
    b = ir.IRBuilder(fn.append_basic_block())
    # atomic loads: the next run's caller may already be rewriting these words; a worker that
    # reads them late runs with a stale generation, and the tags make it return at once
    args = [b.inttoptr(b.load_atomic(b.gep(mailbox, [const(2 + j)]), "monotonic", 8), t)
            for j, t in enumerate(entry.function_type.args[:n_args])]
    b.call(entry, [*args, sync, tid, gen])
    b.ret_void()
    return fn


def emit_worker(module: ir.Module, mailbox_entry: ir.Function) -> ir.Function:
    """`i64 <name>_worker(i64* mailbox, i64* sync, i64 tid, i64 seen, i64 spins)`: a worker
    thread's loop, all in native code so a busy worker never takes the GIL: spin until the
    mailbox's generation (word 0) moves past the last one seen, run the mailbox entry, and wait
    again. Returns the last generation seen after ``spins`` idle rounds (the runtime then
    parks the thread), or -1 when word 1 asks the worker to exit."""
    fn = ir.Function(module, ir.FunctionType(I64, [I64P, I64P, I64, I64, I64]),
                     f"{mailbox_entry.name.removesuffix('_mailbox_entry')}_worker")
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
    leave = b.load_atomic(b.gep(mailbox, [const(1)]), "monotonic", 8)
    b.cbranch(b.icmp_signed("!=", leave, const(0)), gone, work)
    b.position_at_end(gone)
    b.ret(const(-1))
    b.position_at_end(work)
    b.call(mailbox_entry, [mailbox, sync, tid, gen])
    i.add_incoming(const(0), work)
    seen.add_incoming(gen, work)
    b.branch(wait)
    return fn
