"""Translate a fused, planned graph into one LLVM module: a function per kernel and an entry
`void <name>_entry(i8* weights, i8* arena, float* in0.., float* out0.., i64* sync, i64 tid,
i64 gen)` calling them in order with pointers fixed by the memory plan. Weights (matmul
operands pre-packed) go into a byte blob beside the code, never into the IR text."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from llvmlite import ir

from ...errors import blame
from ...ir import Graph, Node, Op
from ...passes.cost import count_macs
from ...passes.memory_plan import MemoryPlan, plan_memory
from ...passes.outputs import storage_root
from . import gemm
from .argv import emit_argv
from .blocking import Blocking, blocking
from .dedupe import fingerprint, shift_slices
from .kernels import emit_concat, emit_elementwise, emit_reduce, kernel_function
from .lincomb import emit_lincomb
from .llvm import F32P, I8P, I64, new_module
from .loops import const
from .matmul import (
    Matmul,
    can_split,
    emit_matmul,
    emit_patches,
    scratch_bytes,
    shares_patches,
    splits_rows_across_batches,
)
from .profile import Profiler
from .rows import emit_rows
from .team import I64P, LOW, Team, emit_solo_call, emit_split_call, emit_team, sync_words

if TYPE_CHECKING:
    from ...runtime.cross.targets import Target

ALIGN = 64


@dataclass(frozen=True)
class Program:
    """Everything the runtime needs: the module text-free of weights, the blob, the plan."""

    module: ir.Module
    weights: Weights
    plan: MemoryPlan
    graph: Graph
    threads: int  # the team the code runs on (1 when no kernel is worth splitting)
    sync_words: int  # i64 words the team shares (progress, then per kernel: next, done)


class Weights:
    """The weights blob's layout: each (constant, layout) once, 64-byte aligned. The arrays
    are kept, not copied, until ``write`` puts them (packed where a GEMM reads them packed,
    in the target's panels of ``nr`` columns) into the runtime's buffer: VGG-19 carries
    548 MB, and each copy of it costs a second."""

    def __init__(self, nr: int) -> None:
        self.nr = nr
        self.parts: list[tuple[int, np.ndarray, bool]] = []  # (offset, array, packed)
        self.size = 0
        self.offsets: dict[tuple[str, str], int] = {}

    def add(self, key: tuple[str, str], data: np.ndarray, packed: bool = False) -> int:
        """The offset of ``data`` (as gemm.pack_b lays it out when ``packed``) in the blob."""
        if key not in self.offsets:
            self.offsets[key] = self.size
            self.parts.append((self.size, data, packed))
            nbytes = 4 * _packed_floats(data, self.nr) if packed else data.nbytes
            self.size += -(-nbytes // ALIGN) * ALIGN
        return self.offsets[key]

    def write(self, out: np.ndarray) -> None:
        """Fill ``out`` (uint8, ``size`` bytes, zeroed: the padding stays 0)."""
        for offset, data, packed in self.parts:
            if packed:  # offsets are 64-byte aligned, so float32 views line up
                size = 4 * _packed_floats(data, self.nr)
                gemm.pack_b(data, self.nr, out[offset:offset + size].view(np.float32))
            else:
                out[offset:offset + data.nbytes].view(data.dtype)[:] = data.ravel()


def _packed_floats(b: np.ndarray, nr: int) -> int:
    """float32 elements of gemm.pack_b(b, nr): one panel set per batch of [k, n] matrices."""
    k, n = b.shape[-2:]
    return gemm.packed_b_floats(k, n, nr) * (b.size // max(k * n, 1))


def _packed_inputs(node: Node) -> set[str]:
    """Kernel input names (body-side) that the kernel reads as a packed GEMM operand."""
    if node.attrs["kind"] != "matmul":
        return set()
    return {Matmul.of(node.attrs["body"]).mm.inputs[1]}


def _is_const(graph: Graph, name: str) -> bool:
    return graph.const(storage_root(graph, name)) is not None


def _packed_consts(node: Node, graph: Graph) -> set[str]:
    """The packed GEMM operands (body-side names) that are constants: packed at compile time."""
    wanted = _packed_inputs(node)
    return {inner.name for outer, inner in zip(node.inputs, node.attrs["body"].inputs)
            if inner.name in wanted and _is_const(graph, outer)}


# work below which one thread runs a kernel: output elements plus MACs / MACS_PER_ELEMENT (two
# vector FMAs do 32 MACs in the time an elementwise kernel moves an element or so), so an
# elementwise kernel of 16k elements is split, a GEMM from about 512k MACs (LeNet: none)
MIN_PARALLEL_WORK = 1 << 14
MACS_PER_ELEMENT = 32
CHUNKS_PER_THREAD = 4  # a split kernel's chunks: enough for the team to balance its load


# a batched matmul of up to this many batches (Winograd's 16 or 36 transform positions) takes
# one batch per chunk: the last chunk to finish is then 1/36 of the kernel, not 5/36
MAX_BATCH_CHUNKS = 64


def _chunks(node: Node, threads: int, graph: Graph) -> int:
    """The chunks a split kernel is cut into: CHUNKS_PER_THREAD per thread, one per batch, or
    one per thread for a batched GEMM split by rows (matmul.splits_rows_across_batches)."""
    chunks = CHUNKS_PER_THREAD * threads
    if node.attrs["kind"] == "matmul":
        if splits_rows_across_batches(node, lambda i: _is_const(graph, i)):
            return threads
        body: Graph = node.attrs["body"]
        batch = Matmul.of(body).dims(body)[0]
        if chunks < batch <= MAX_BATCH_CHUNKS:
            return batch
    return chunks


def _parallel(node: Node, graph: Graph, bl: Blocking) -> bool:
    """Worth splitting: enough work to pay for handing out chunks, and no step that every
    chunk would need first (a run-time right-hand side is split only where each chunk can
    pack its own columns: matmul.can_split)."""
    if node.attrs["kind"] == "matmul" and not can_split(node, lambda i: _is_const(graph, i),
                                                        bl.nr):
        return False
    work = count_macs(node.attrs["body"]) // MACS_PER_ELEMENT + node.type.size
    return work >= MIN_PARALLEL_WORK


def generate(graph: Graph, name: str = "sw2c", threads: int = 1,
             profile: bool = False, target: Target | None = None) -> Program:
    """Plan memory and emit the module for ``graph`` (after the pass pipeline), for a team of
    ``threads`` threads that each call the entry with their index and the run's generation.
    Big kernels are split into chunks the team takes (team.py); small ones run on thread 0.
    ``profile`` adds per-kernel cycle counters (profile.py)."""
    bl = blocking(target)
    split = {k.name: threads > 1 and _parallel(k, graph, bl)
             for k in graph.nodes if k.op is Op.KERNEL}
    plan = plan_memory(graph, lambda k: scratch_bytes(
        k, lambda i: _is_const(graph, i), bl, _chunks(k, threads, graph) if split[k.name] else 1)
        if k.attrs["kind"] == "matmul" else 0)
    kernels = [n for n in graph.nodes if n.op is Op.KERNEL and n.name not in plan.elided]
    parallel = [split[k.name] for k in kernels]
    if not any(parallel):
        threads, parallel = 1, [False] * len(kernels)
    module = new_module(name, target)  # target: a runtime/cross description, None = host
    n_in, n_out = len(graph.inputs), len(graph.outputs)
    entry_t = ir.FunctionType(ir.VoidType(),
                              [I8P, I8P] + [F32P] * (n_in + n_out) + [I64P, I64, I64])
    entry = ir.Function(module, entry_t, f"{name}_entry")
    entry.attributes.add("nounwind")
    b = ir.IRBuilder(entry.append_basic_block())
    weights_arg, arena_arg = entry.args[:2]
    ins, outs = entry.args[2:2 + n_in], entry.args[2 + n_in:2 + n_in + n_out]
    sync, tid, gen = entry.args[-3:]  # team words, this thread, the run's generation
    tag = b.shl(b.and_(gen, const(LOW)), const(32))
    weights = Weights(bl.nr)
    profiler = Profiler(module, name, len(kernels)) if profile else None

    def pointer(value: str, packed: bool) -> ir.Value:
        region, where = plan.regions[value]
        if region == "input":
            return ins[where]
        if region == "output":
            return outs[where]
        if region == "arena":
            return b.bitcast(b.gep(arena_arg, [const(where)]), F32P)
        root = storage_root(graph, value)
        data = graph.const(root)
        # packed: one panel set per batch of the right-hand side
        off = weights.add((root, "packed" if packed else "raw"), data, packed)
        return b.bitcast(b.gep(weights_arg, [const(off)]), F32P)

    emitted: dict[Hashable, ir.Function] = {}  # identical kernels share one function
    step = 0  # the team's steps so far: one per kernel, two for a conv that shares patches
    for index, node in enumerate(kernels):
        body: Graph = node.attrs["body"]
        packed = _packed_consts(node, graph)
        noalias, ldc = node.name not in plan.in_place, plan.row_stride.get(node.name)
        chunks = _chunks(node, threads, graph) if parallel[index] else 1
        shifted, offsets = shift_slices(node)
        key = fingerprint(shifted, packed, chunks, ldc, noalias)
        fn = emitted.get(key) if key is not None else None
        if fn is None:
            fn = kernel_function(module, f"k{index}.{node.attrs['kind']}", node, noalias=noalias)
            with blame(f"kernel '{node.name}' (from node '{node.origin}')"):
                _emit_kernel(fn, shifted, packed, chunks, ldc)
            if key is not None:
                emitted[key] = fn
        args = [pointer(node.name, False)]
        for outer, inner, offset in zip(node.inputs, body.inputs, offsets):
            ptr = pointer(outer, inner.name in packed)
            args.append(b.gep(ptr, [const(offset)]) if offset else ptr)
        scratch = plan.scratch.get(node.name)
        args.append(b.gep(arena_arg, [const(scratch)]) if scratch is not None
                    else ir.Constant(I8P, None))
        started = profiler.start(b) if profiler else None
        if parallel[index] and node.attrs["kind"] == "matmul" and shares_patches(
                node, lambda i: _is_const(graph, i), bl, chunks):
            patches = emitted.get((key, "patches")) if key is not None else None
            if patches is None:
                patches = _patches_function(module, f"k{index}.patches", shifted, noalias,
                                            chunks)
                if key is not None:
                    emitted[key, "patches"] = patches
            emit_split_call(b, patches, args, sync, tid, tag, step, chunks, threads)
            step += 1
        if parallel[index]:
            if profiler:  # time each chunk too
                fn, args = profiler.wrap(fn, args, tid, index)
            emit_split_call(b, fn, args, sync, tid, tag, step, chunks, threads)
        else:
            emit_solo_call(b, fn, args, sync, tid, tag, step, team=threads > 1)
        step += 1
        if profiler:
            profiler.stop(b, started, tid, index)
    b.ret_void()
    words = sync_words(step)
    if threads > 1:
        emit_team(module, entry, 2 + n_in + n_out, words, threads)
    emit_argv(module, entry)  # the one-pointer call of runtime/module.py
    return Program(module, weights, plan, graph, threads, words)


def _patches_function(module: ir.Module, name: str, node: Node, noalias: bool,
                      chunks: int) -> ir.Function:
    """The step before a conv whose chunks share one patch matrix: chunk t of ``chunks``
    builds its share of the rows (matmul.emit_patches)."""
    fn = kernel_function(module, name, node, noalias=noalias)
    b = ir.IRBuilder(fn.append_basic_block())
    ptrs = {v.name: arg for v, arg in zip(node.attrs["body"].inputs, fn.args[1:-2])}
    with blame(f"kernel '{node.name}' (from node '{node.origin}')"):
        emit_patches(b, node, ptrs, fn.args[0], fn.args[-2], Team(fn.args[-1], chunks))
    b.ret_void()
    return fn


def _emit_kernel(fn: ir.Function, node: Node, packed: set[str], chunks: int,
                 ldc: int | None) -> None:
    body: Graph = node.attrs["body"]
    b = ir.IRBuilder(fn.append_basic_block())
    out, scratch, chunk = fn.args[0], fn.args[-2], fn.args[-1]
    ptrs = {v.name: arg for v, arg in zip(body.inputs, fn.args[1:-2])}
    team = Team(chunk, chunks)
    kind = node.attrs["kind"]
    if kind == "matmul":
        emit_matmul(b, node, ptrs, out, scratch, team, packed, ldc)
    else:
        EMITTERS[kind](b, node, ptrs, out, scratch, team)
    b.ret_void()


EMITTERS = {"reduce": emit_reduce, "rows": emit_rows, "concat": emit_concat,
            "elementwise": emit_elementwise, "lincomb": emit_lincomb}
