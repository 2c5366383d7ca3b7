"""The matmul kernel: optional im2col prologue into scratch, run-time packing of a non-constant
right-hand side, then the register-blocked GEMM (gemm.py) with the elementwise epilogue fused
into its stores."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from ...ir import Graph, Node, Op
from .blocking import Blocking, blocking_of
from .expr import BodyEmitter, store, unravel
from .gemm import emit_gemm, emit_pack_b, packed_b_floats
from .gemv import emit_gemv, emit_narrow, gemv_fits
from .im2col import emit_im2col, fast_im2col
from .llvm import F32P, I64, intrinsic
from .loops import const, for_range, loop_nest
from .math import emit_binary, emit_unary, splat
from .team import Team


@dataclass(frozen=True)
class Matmul:
    """What a matmul kernel body computes, read off its nodes."""

    mm: Node
    window: Node | None  # im2col prologue, materialized into scratch
    chain: tuple[Node, ...]  # epilogue, in order
    b_transpose: Node | None = None  # B is this transpose (of its last two axes) of a tensor
    a_slice: Node | None = None  # A is these columns of a wider matrix (a group's channels)

    @property
    def b_source(self) -> str:
        """The body value the right-hand side is packed from."""
        return self.mm.inputs[1] if self.b_transpose is None else self.b_transpose.inputs[0]

    @staticmethod
    def of(body: Graph) -> Matmul:
        mm = next(n for n in body.nodes if n.op is Op.MATMUL)
        reshape = body.producer.get(mm.inputs[0])
        if reshape is not None and reshape.op is not Op.RESHAPE:
            reshape = None  # a lincomb's constant left operand
        window = body.producer.get(reshape.inputs[0]) if reshape is not None else None
        if window is not None and window.op is not Op.WINDOW:
            window = None
        chain = tuple(n for n in body.nodes[body.nodes.index(mm) + 1:])
        bt = body.producer.get(mm.inputs[1])
        sl = body.producer.get(mm.inputs[0])
        return Matmul(mm, window, chain, bt if bt is not None and bt.op is Op.TRANSPOSE else None,
                      sl if sl is not None and sl.op is Op.SLICE else None)

    def a_columns(self, body: Graph) -> tuple[str, int, int]:
        """(the value A is read from, its first element, its row stride): A itself, or the
        wider matrix that A is a column slice of."""
        k = body.type_of(self.mm.inputs[0]).shape[-1]
        if self.a_slice is None:
            return self.mm.inputs[0], 0, k
        return (self.a_slice.inputs[0], int(self.a_slice.attrs["starts"][-1]),
                body.type_of(self.a_slice.inputs[0]).shape[-1])

    def dims(self, body: Graph) -> tuple[int, int, int, int]:
        """(batch, m, k, n): a rank-2 right-hand side folds every leading dim of A into m."""
        a, bt = body.type_of(self.mm.inputs[0]).shape, body.type_of(self.mm.inputs[1]).shape
        k, n = bt[-2], bt[-1]
        if len(bt) == 2:
            return 1, int(np.prod(a[:-1])), k, n
        return int(np.prod(self.mm.type.shape[:-2])), a[-2], k, n


# micro-kernel strips (of MR rows) per chunk below which splitting the rows further costs
# more than it buys: every row part streams all of B from memory, so small-M GEMMs (late
# layers, dense heads) split the columns instead, each chunk reading its own share of B's panels
MIN_STRIPS = 8


def split_grid(m: int, n: int, chunks: int, bl: Blocking) -> tuple[int, int]:
    """(row parts, column parts) of a GEMM [m, n] cut into ``chunks`` pieces: rows while each
    part keeps MIN_STRIPS strips of them, then halves moved to the columns while panels are
    left to share."""
    rows, cols = chunks, 1
    panels = -(-n // bl.nr)
    while rows % 2 == 0 and m // rows < MIN_STRIPS * bl.mr and cols * 2 <= panels:
        rows, cols = rows // 2, cols * 2
    return rows, cols


def _parts(m: int, n: int, grid: tuple[int, int], nr: int,
           mr: int = 1) -> list[tuple[int, int, int, int]]:
    """(first row, rows, first column, columns) of each chunk of the grid, chunk order; the
    column cuts fall on the boundaries of ``nr``-column panels. The rows are shared equally
    when they can be, else every chunk but the last takes the same whole ``mr``-row strips:
    one or two chunk shapes and one partial strip, so fewer GEMM variants to compile."""
    rows, cols = grid
    panels, strips = -(-n // nr), -(-m // mr)
    # rows per chunk: an equal share, or whole strips with the last chunk short
    per = m // rows if m % rows == 0 else mr * -(-strips // rows)
    out = []
    for t in range(rows * cols):
        i, j = divmod(t, cols)
        lo, hi = min(m, per * i), min(m, per * (i + 1))
        c0, c1 = nr * (panels * j // cols), min(n, nr * (panels * (j + 1) // cols))
        out.append((lo, hi - lo, c0, c1 - c0))
    return out


# im2col runs in blocks of rows whose patches stay in cache while the GEMM reads them (about
# L2's quarter); a block keeps at least MIN_BLOCK_STRIPS strips of MR rows so re-reading B
# per block stays cheap
PATCH_BYTES = 256 << 10
MIN_BLOCK_STRIPS = 16


def _block_rows(rows: int, k: int, mr: int) -> int:
    """Rows of a chunk's patch matrix materialized at once (micro-kernels of ``mr`` rows)."""
    if rows * k * 4 <= PATCH_BYTES:
        return rows
    return min(rows, max(MIN_BLOCK_STRIPS * mr, PATCH_BYTES // (4 * k) // mr * mr))


def _patch_slots(parts: list[tuple[int, int, int, int]], k: int,
                 mr: int) -> list[tuple[int, int]]:
    """(offset in floats, rows per block) of each chunk's own patch buffer in scratch: chunks
    run at once on different threads, so none shares a buffer."""
    slots, offset = [], 0
    for _, rows, _, _ in parts:
        block = _block_rows(rows, k, mr) if rows else 0
        slots.append((offset, block))
        offset += block * k
    return slots


def scratch_bytes(node: Node, is_const: Callable[[str], bool], bl: Blocking,
                  chunks: int = 1) -> int:
    """Scratch of a matmul kernel split into ``chunks`` (blocked as ``bl``): a block of patch
    rows per chunk and the run-time packed right-hand side."""
    body: Graph = node.attrs["body"]
    mt = Matmul.of(body)
    batch, m, k, n = mt.dims(body)
    runtime_b = not _b_is_const(node, is_const)
    size = 0
    grid = _grid(body, mt, chunks, runtime_b, bl)
    if mt.window is not None and (batch > 1 or _shares_patches(mt, batch, grid)):
        size += body.type_of(mt.window.name).nbytes
    elif mt.window is not None:
        parts = _parts(m, n, grid, bl.nr, bl.mr)
        size += 4 * sum(block * k for _, block in _patch_slots(parts, k, bl.mr))
    if runtime_b:
        size += 4 * packed_b_floats(k, n, bl.nr) * _b_batches(body, mt)
    return size


def _shares_patches(mt: Matmul, batch: int, grid: tuple[int, int]) -> bool:
    """Whether the chunks of a conv read one patch matrix, built before them by a step of
    its own (emit_patches): when they split the columns, each would otherwise build the
    patches of all its rows (a 7x7 layer cut into 8 column chunks: 8 times the im2col)."""
    return mt.window is not None and batch == 1 and grid[1] > 1


def shares_patches(node: Node, is_const: Callable[[str], bool], bl: Blocking,
                   chunks: int) -> bool:
    """_shares_patches of a matmul kernel split into ``chunks``: the caller runs
    emit_patches, split over the team, before the kernel."""
    body: Graph = node.attrs["body"]
    mt = Matmul.of(body)
    grid = _grid(body, mt, chunks, not _b_is_const(node, is_const), bl)
    return _shares_patches(mt, mt.dims(body)[0], grid)


def emit_patches(b: ir.IRBuilder, node: Node, ptrs: dict[str, ir.Value], out: ir.Value,
                 scratch: ir.Value, team: Team) -> None:
    """This chunk's share of the rows of a conv's whole patch matrix, into the kernel's
    scratch (where emit_matmul reads it when _shares_patches)."""
    body: Graph = node.attrs["body"]
    mt = Matmul.of(body)
    _, m, _, _ = mt.dims(body)
    lo, hi = team.bounds(b, m)
    _im2col(b, body, mt.window, ptrs, b.bitcast(scratch, F32P), lo, hi)


def _b_is_const(node: Node, is_const: Callable[[str], bool]) -> bool:
    """Whether the kernel's B (the value it is packed from) is a constant of the graph."""
    body: Graph = node.attrs["body"]
    return is_const(node.inputs[body.inputs.index(body.values[Matmul.of(body).b_source])])


class ChainEpilogue:
    """The epilogue chain as vector code on a GEMM tile: per-column constants (bias, scale),
    per-row values, full tensors (residuals) and scalars, in the chain's order."""

    def __init__(self, body: Graph, mt: Matmul) -> None:
        self.body = body
        self.mt = mt
        out = mt.mm.type.shape
        self.operands: list[str] = []
        self.layout: dict[str, tuple[int, int]] = {}  # operand -> (row stride, column stride)
        for node in mt.chain:
            for i in node.inputs:
                if i in self.layout or self._scalar(i) is not None or body.producer.get(i) in \
                        (mt.mm, *mt.chain):
                    continue
                shape = body.type_of(i).shape
                shape = (1,) * (len(out) - len(shape)) + shape
                col = 1 if shape[-1] != 1 else 0
                row = 0 if all(d == 1 for d in shape[:-1]) else shape[-1]
                self.layout[i] = (row, col)
                self.operands.append(i)

    def swapped(self) -> ChainEpilogue:
        """This epilogue for the transposed C (a one-column C is a one-row C^T): each operand's
        row and column strides exchanged."""
        other = copy.copy(self)
        other.layout = {k: (col, row) for k, (row, col) in self.layout.items()}
        return other

    def _scalar(self, name: str) -> float | None:
        node = self.body.producer.get(name)
        if node is not None and node.op is Op.CONST:
            return float(np.asarray(node.attrs["value"]).reshape(-1)[0])
        return None

    def arg_types(self) -> list[ir.Type]:
        return [F32P] * len(self.operands)

    def emit(self, b: ir.IRBuilder, args: list[ir.Value], acc: ir.Value, row: ir.Value,
             col: ir.Value, lanes: int, mask: ir.Value | None) -> ir.Value:
        values = {self.mt.mm.name: acc}
        ptrs = dict(zip(self.operands, args))
        for node in self.mt.chain:
            xs = []
            for i in node.inputs:
                if i in values:
                    xs.append(values[i])
                elif (s := self._scalar(i)) is not None:
                    xs.append(splat(b, acc, s))
                else:
                    xs.append(self._load(b, ptrs[i], self.layout[i], acc, row, col, mask))
            if node.op is Op.UNARY:
                values[node.name] = emit_unary(b, node.attrs["fn"], node.attrs, xs[0])
            else:
                values[node.name] = emit_binary(b, node.attrs["fn"], *xs)
        return values[self.mt.chain[-1].name] if self.mt.chain else acc

    @staticmethod
    def _load(b: ir.IRBuilder, ptr: ir.Value, layout: tuple[int, int], like: ir.Value,
              row: ir.Value, col: ir.Value, mask: ir.Value | None) -> ir.Value:
        row_stride, col_stride = layout
        base = b.mul(row, const(row_stride))
        if col_stride == 0:
            return splat(b, like, b.load(b.gep(ptr, [base])))
        vptr = b.bitcast(b.gep(ptr, [b.add(base, col)]), like.type.as_pointer())
        if mask is None:
            return b.load(vptr, align=4)
        fn = intrinsic(b.module, "llvm.masked.load", [like.type, vptr.type], like.type,
                       [vptr.type, ir.IntType(32), mask.type, like.type])
        return b.call(fn, [vptr, ir.Constant(ir.IntType(32), 4), mask,
                           ir.Constant(like.type, None)])


def emit_matmul(b: ir.IRBuilder, node: Node, ptrs: dict[str, ir.Value], out: ir.Value,
                scratch: ir.Value, team: Team, packed: set[str], ldc: int | None = None) -> None:
    """``ldc``: the output's row stride when it is a column block of a wider (concat) buffer."""
    body: Graph = node.attrs["body"]
    mt = Matmul.of(body)
    batch, m, k, n = mt.dims(body)
    ldc = ldc or n
    lda = k  # the patch matrix's, or A's own (a_columns)
    cursor = b.bitcast(scratch, F32P)
    b_name = mt.mm.inputs[1]
    b_batches = _b_batches(body, mt)
    own_columns = _own_columns(body, mt, b_name not in packed)
    bl = blocking_of(b.module)
    grid = _grid(body, mt, team.size, b_name not in packed, bl)
    parts = _parts(m, n, grid, bl.nr, bl.mr)
    patches = cursor  # the chunks' patch blocks (im2col), before the packed B
    shared = _shares_patches(mt, batch, grid)  # built by emit_patches before this kernel
    if mt.window is not None and batch > 1:  # every batch's patches, each filled by its chunk
        a_ptr = patches
        cursor = b.gep(cursor, [const(batch * m * k)])
    elif shared:
        a_ptr = patches
        cursor = b.gep(cursor, [const(m * k)])
    elif mt.window is not None:
        slots = _patch_slots(parts, k, bl.mr)
        cursor = b.gep(cursor, [const(sum(block * k for _, block in slots))])
    else:
        a_source, a_first, lda = mt.a_columns(body)
        a_ptr = b.gep(ptrs[a_source], [const(a_first)]) if a_first else ptrs[a_source]
    panel = packed_b_floats(k, n, bl.nr)
    transposed = mt.b_transpose is not None  # a run-time B is packed through the transpose
    ldb = k if transposed else n
    if b_name in packed:
        b_ptr = ptrs[b_name]
    elif own_columns:  # each chunk packs the panels of its own columns (pack_columns below)
        b_ptr = cursor
    else:  # both operands are activations: pack every batch of the right-hand side now
        pack = emit_pack_b(b.module, f"{b.function.name}.pack", k=k, n=n, ldb=ldb,
                           transposed=transposed)
        with for_range(b, b_batches) as g:
            b.call(pack, [b.gep(ptrs[mt.b_source], [b.mul(g, const(k * n))]),
                          b.gep(cursor, [b.mul(g, const(panel))])])
        b_ptr = cursor
    epilogue = ChainEpilogue(body, mt)
    extra = [ptrs[i] for i in epilogue.operands]
    if batch > 1:
        a_off, b_off = _batch_offsets(body, mt)

        def batch_gemm(gemm: ir.Function, g: ir.Value, r0: ir.Value | None = None) -> None:
            """Rows from ``r0`` (default 0) of batch ``g``, as many as ``gemm`` computes."""
            r0 = const(0) if r0 is None else r0
            a_at = b.gep(a_ptr, [b.add(b.mul(a_off(b, g), const(m * lda)), b.mul(r0, const(lda)))])
            b_at = b.gep(b_ptr, [b.mul(b_off(b, g), const(panel))])
            c_at = b.gep(out, [b.add(b.mul(g, const(m * n)), b.mul(r0, const(n)))])
            at = [b.gep(p, [b.mul(r0, const(epilogue.layout[i][0]))])
                  for i, p in zip(epilogue.operands, extra)]
            b.call(gemm, [a_at, b_at, c_at, *at])

        if team.size > 1 and _rows_across_batches(body, mt, b_name in packed):
            _emit_row_chunk(b, body, mt, epilogue, team, lda, batch_gemm)
            return
        gemm = emit_gemm(b.module, f"{b.function.name}.gemm", m=m, k=k, n=n, lda=lda, ldc=n,
                         epilogue=epilogue)
        with team.share(b, (batch,)) as split, loop_nest(b, (batch,), split) as (g,):
            if mt.window is not None:
                r0 = b.mul(g, const(m))
                _im2col(b, body, mt.window, ptrs, patches, r0, b.add(r0, const(m)))
            batch_gemm(gemm, g)
        return
    variants: dict[tuple[int, int], ir.Function] = {}  # one GEMM per distinct block shape

    def gemm(a: ir.Value, r0: ir.Value, rows: int, c0: ir.Value, cols: int) -> None:
        """C[r0:r0 + rows, c0:c0 + cols] from A's rows at ``a`` (row stride lda)."""
        if (rows, cols) not in variants:
            variants[rows, cols] = _chunk_gemm(b, epilogue, f"{b.function.name}.c{rows}x{cols}",
                                               m=rows, k=k, n=cols, lda=lda, ldc=ldc,
                                               shared=team.size > 1, width=n)
        at = [b.gep(p, [b.add(b.mul(r0, const(epilogue.layout[i][0])),
                              b.mul(c0, const(epilogue.layout[i][1])))])
              for i, p in zip(epilogue.operands, extra)]
        c_at = b.gep(out, [b.add(b.mul(r0, const(ldc)), c0)])
        b.call(variants[rows, cols], [a, b.gep(b_ptr, [b.mul(c0, const(k))]), c_at, *at])

    packers: dict[int, ir.Function] = {}  # one packing function per distinct width

    def pack_columns(c0: ir.Value, cols: int) -> None:
        """Pack B's columns [c0, c0 + cols) into their panels (c0 is a panel boundary)."""
        if cols not in packers:
            packers[cols] = emit_pack_b(b.module, f"{b.function.name}.pack{cols}", k=k, n=cols,
                                        ldb=ldb, transposed=transposed)
        first = b.mul(c0, const(ldb)) if transposed else c0  # B^T is stored [n, k]
        b.call(packers[cols], [b.gep(ptrs[mt.b_source], [first]),
                               b.gep(b_ptr, [b.mul(c0, const(k))])])

    def chunk(lo: ir.Value, rows: int, c0: ir.Value, cols: int, slot: tuple[ir.Value, int]
              ) -> None:
        if own_columns:
            pack_columns(c0, cols)
        if mt.window is None or shared:
            gemm(b.gep(a_ptr, [b.mul(lo, const(lda))]), lo, rows, c0, cols)
            return
        offset, block = slot
        buffer = b.gep(patches, [offset])

        def one(r0: ir.Value, h: int) -> None:  # im2col of rows [r0, r0 + h), then their GEMM
            _im2col(b, body, mt.window, ptrs, b.gep(buffer, [b.neg(b.mul(r0, const(k)))]), r0,
                    b.add(r0, const(h)))
            gemm(buffer, r0, h, c0, cols)

        full, rest = divmod(rows, block)
        if full == 1:
            one(lo, block)
        elif full > 1:
            with for_range(b, full) as i:
                one(b.add(lo, b.mul(i, const(block))), block)
        if rest:
            one(b.add(lo, const(full * block)), rest)

    blocks = [0] * len(parts) if mt.window is None or shared else [block for _, block in slots]
    offsets = [0] * len(parts) if mt.window is None or shared else [off for off, _ in slots]
    if team.size == 1:
        lo, rows, c0, cols = parts[0]
        chunk(const(lo), rows, const(c0), cols, (const(offsets[0]), blocks[0]))
        return
    # chunks of one shape (rows, columns, patch block) share one body: its first row, first
    # column and patch slot come from a table indexed by the chunk, so the code grows with
    # the shapes (two or three), not with the chunks
    shapes = sorted({(rows, cols, block) for (_, rows, _, cols), block in zip(parts, blocks)
                     if rows and cols > 0})
    table = _chunk_table(b.module, f"{b.function.name}.chunks",
                         [(lo, c0, offset, shapes.index((rows, cols, block))
                           if rows and cols > 0 else -1)
                          for (lo, rows, c0, cols), block, offset in zip(parts, blocks, offsets)])
    lo, c0, offset, shape = (b.load(b.gep(table, [const(0), team.tid, const(f)]))
                             for f in range(4))
    for s, (rows, cols, block) in enumerate(shapes):
        with b.if_then(b.icmp_signed("==", shape, const(s))):
            chunk(lo, rows, c0, cols, (offset, block))


def _rows_across_batches(body: Graph, mt: Matmul, const_b: bool) -> bool:
    """Whether a batched GEMM splits its rows, each chunk running them in every batch, rather
    than its batches: when its activations (A and C) outweigh its constant weights. Winograd
    on a large map is the case: the transforms before and after it are cut by columns, that
    is by tiles, and its rows are tiles, so a thread reads the rows it transformed, still in
    its own core's cache (here, a 4 x 2048 transform reading what the other core wrote took
    38 us, 7.6 us at one thread); where the weights dominate, each thread reading all of
    them would cost more. ResNet-18-style at 2 threads: 7% faster with the shares of
    team.py, which keep each thread on the same tiles from kernel to kernel."""
    batch, m, k, n = mt.dims(body)
    return (batch > 1 and const_b and mt.window is None and _b_batches(body, mt) == batch
            and m * (k + n) > k * n)


def splits_rows_across_batches(node: Node, is_const: Callable[[str], bool]) -> bool:
    """_rows_across_batches of a matmul kernel: its chunks are one per thread."""
    body: Graph = node.attrs["body"]
    return _rows_across_batches(body, Matmul.of(body), _b_is_const(node, is_const))


def _emit_row_chunk(b: ir.IRBuilder, body: Graph, mt: Matmul, epilogue: ChainEpilogue,
                    team: Team, lda: int,
                    batch_gemm: Callable[[ir.Function, ir.Value, ir.Value], None]) -> None:
    """Chunk ``team.tid``: its equal share of the rows (``Team.bounds``) in every batch's GEMM,
    one GEMM per share size (the sizes differ by at most a row)."""
    batch, m, k, n = mt.dims(body)
    sizes = {m * (t + 1) // team.size - m * t // team.size for t in range(team.size)} - {0}
    lo, hi = team.bounds(b, m)
    for rows in sorted(sizes):
        gemm = emit_gemm(b.module, f"{b.function.name}.rows{rows}", m=rows, k=k, n=n, lda=lda,
                         ldc=n, epilogue=epilogue)
        with b.if_then(b.icmp_signed("==", b.sub(hi, lo), const(rows))), \
                for_range(b, batch) as g:
            batch_gemm(gemm, g, lo)


def _chunk_table(module: ir.Module, name: str, rows: list[tuple[int, ...]]) -> ir.GlobalVariable:
    """A constant [chunks x [fields x i64]] table in the module's read-only data."""
    row_t = ir.ArrayType(I64, len(rows[0]))
    table_t = ir.ArrayType(row_t, len(rows))
    table = ir.GlobalVariable(module, table_t, name)
    table.initializer = ir.Constant(table_t, [ir.Constant(row_t, list(r)) for r in rows])
    table.global_constant = True
    table.linkage = "internal"
    return table


def _im2col(b: ir.IRBuilder, body: Graph, window: Node, ptrs: dict[str, ir.Value],
            dst: ir.Value, lo: ir.Value, hi: ir.Value) -> None:
    """Rows [lo, hi) of the patch matrix, row r written at dst + r * width."""
    if fast_im2col(body, window):  # whole channel rows at a time
        emit_im2col(b, body, window, ptrs, dst, lo, hi)
        return
    wshape = window.type.shape  # [N, *O, *K, C]: rows are [N, *O]
    spatial = 1 + len(window.attrs["kernel"])
    emitter = BodyEmitter(b, body, ptrs)
    with for_range(b, hi, start=lo) as row, loop_nest(b, wshape[spatial:]) as rest:
        idx = unravel(b, row, wshape[:spatial]) + rest
        store(b, dst, idx, wshape, emitter.value(window.name, idx))


def _b_batches(body: Graph, mt: Matmul) -> int:
    """The matrices in the kernel's right-hand side (1 unless a batched B)."""
    return int(np.prod(body.type_of(mt.mm.inputs[1]).shape[:-2]))


def _own_columns(body: Graph, mt: Matmul, runtime_b: bool) -> bool:
    """Whether each chunk packs the panels of its own columns: a run-time B of one matrix,
    in an unbatched GEMM (two row parts would pack the same panels)."""
    return runtime_b and mt.dims(body)[0] == 1 and _b_batches(body, mt) == 1


def _grid(body: Graph, mt: Matmul, chunks: int, runtime_b: bool,
          bl: Blocking) -> tuple[int, int]:
    """How the chunks cut the GEMM: by batch when batched; by columns when each chunk packs
    its own columns (``_own_columns``); else rows, then columns (``split_grid``)."""
    batch, m, _, n = mt.dims(body)
    if batch > 1:
        return chunks, 1
    return (1, chunks) if _own_columns(body, mt, runtime_b) else split_grid(m, n, chunks, bl)


def can_split(node: Node, is_const: Callable[[str], bool], nr: int) -> bool:
    """Whether a team may share this matmul kernel: B is packed at compile time, or B is one
    matrix of at least two panels, whose columns the chunks pack for themselves."""
    body: Graph = node.attrs["body"]
    mt = Matmul.of(body)
    if _b_is_const(node, is_const):
        return True
    return _own_columns(body, mt, True) and -(-mt.dims(body)[3] // nr) >= 2


def _chunk_gemm(b: ir.IRBuilder, epilogue: ChainEpilogue, name: str, *, m: int, k: int, n: int,
                lda: int, ldc: int, shared: bool, width: int) -> ir.Function:
    """The GEMM of one chunk: a GEMV for one column, the narrow kernel for a few, else the
    register-blocked GEMM. A ``shared`` one (called by several chunks, or per patch block)
    is never inlined: LLVM would optimize its code once per call."""
    lanes = blocking_of(b.module).lanes
    if n == 1 and ldc == 1 and gemv_fits(k, 1, lanes):
        fn = emit_gemv(b.module, name, m=m, k=k, lda=lda, epilogue=epilogue.swapped())
    elif n > 1 and gemv_fits(k, n, lanes):
        fn = emit_narrow(b.module, name, m=m, k=k, n=n, lda=lda, ldc=ldc, epilogue=epilogue)
    else:
        fn = emit_gemm(b.module, name, m=m, k=k, n=n, lda=lda, ldc=ldc, epilogue=epilogue,
                       width=width)
    if shared:
        fn.attributes.add("noinline")
    return fn


def _batch_offsets(body: Graph, mt: Matmul):
    """Functions from the output batch index to the operands' (broadcast) batch indices."""
    out_batch = mt.mm.type.shape[:-2]

    def index_fn(name: str):
        shape = body.type_of(name).shape[:-2]
        shape = (1,) * (len(out_batch) - len(shape)) + shape

        def at(b: ir.IRBuilder, g: ir.Value) -> ir.Value:
            flat, stride, rest = const(0), 1, g
            for d_out, d in zip(reversed(out_batch), reversed(shape)):
                i = b.urem(rest, const(d_out))
                rest = b.udiv(rest, const(d_out))
                if d != 1:
                    flat = b.add(flat, b.mul(i, const(stride)))
                stride *= d
            return flat

        return at

    return index_fn(mt.mm.inputs[0]), index_fn(mt.mm.inputs[1])


__all__ = ["ChainEpilogue", "I64", "Matmul", "can_split", "emit_matmul", "emit_patches",
           "scratch_bytes", "shares_patches"]
