"""How a GEMM is cut into the chunks a thread team shares: rows while there are plenty, else
columns (whole panels of B), each chunk's share of the answer against the interpreter."""

from __future__ import annotations

import numpy as np
import pytest
from sw2c.backends.cpu.blocking import blocking
from sw2c.backends.cpu.codegen import generate
from sw2c.backends.cpu.matmul import MIN_STRIPS, _parts, split_grid
from sw2c.driver import compile_graph
from sw2c.ir import Binary, Builder, Op, TensorType, Unary, Value, run
from sw2c.passes.pipeline import cpu_pipeline, run_pipeline
from sw2c.tests.ir_models import conv


@pytest.mark.parametrize("m,n,chunks", [(3136, 64, 8), (16, 512, 8), (1, 1000, 8), (49, 2048, 8),
                                        (196, 256, 8), (16, 64, 8), (7, 130, 12), (500, 3, 4)])
def test_grid_covers_the_output_once(m, n, chunks):
    bl = blocking()
    rows, cols = split_grid(m, n, chunks, bl)
    assert rows * cols == chunks
    cover = np.zeros((m, n), np.int64)
    parts = _parts(m, n, (rows, cols), bl.nr, bl.mr)
    for lo, h, c0, w in parts:
        assert c0 % bl.nr == 0  # a column part is whole panels of the packed B
        assert not h or m % rows == 0 or lo % bl.mr == 0  # else it starts on a whole strip
        cover[lo:lo + h, c0:c0 + max(w, 0)] += 1
    assert (cover == 1).all()
    assert len({h for _, h, _, _ in parts if h}) <= 2  # chunk shapes: few GEMMs to compile
    if cols > 1:  # columns are split only when the rows are too few to share
        assert m // (rows * 2) < MIN_STRIPS * bl.mr


def test_small_rows_split_the_columns():
    bl = blocking()
    assert split_grid(16, 512, 8, bl) == (1, 8)
    assert split_grid(3136, 512, 8, bl) == (8, 1)
    assert split_grid(16, 64, 8, bl) == (8, 1)  # one panel: nothing to split but rows


def _late_layer(hw: int, cin: int, cout: int, seed: int = 0):
    """A late ResNet stage: 3x3 conv + bias + relu + residual on a few pixels, then a dense
    head of many classes (rows 1, columns split)."""
    rng = np.random.default_rng(seed)
    b = Builder("late", [Value("x", TensorType((1, cin, hw, hw)))])
    w = rng.normal(0, (2 / (9 * cin)) ** 0.5, (cout, cin, 3, 3)).astype(np.float32)
    y = conv(b, "x", w, rng.normal(0, 0.1, cout).astype(np.float32))
    res = b.const(rng.standard_normal((1, cout, hw, hw)).astype(np.float32), "res")
    y = b.add(Op.UNARY, [b.add(Op.BINARY, [y, res], fn=Binary.ADD)], fn=Unary.RELU)
    flat = b.add(Op.RESHAPE, [y], shape=(1, cout * hw * hw))
    head = b.const(rng.normal(0, 0.05, (cout * hw * hw, 300)).astype(np.float32), "fc")
    logits = b.add(Op.BINARY, [b.add(Op.MATMUL, [flat, head]),
                               b.const(rng.normal(0, 0.1, (1, 300)).astype(np.float32))],
                   fn=Binary.ADD)
    return b.finish([y, logits])


@pytest.mark.parametrize("hw,cin,cout", [(4, 16, 300), (2, 8, 129), (7, 24, 200)])
def test_column_split_matches_the_interpreter(monkeypatch, hw, cin, cout):
    monkeypatch.setattr("sw2c.backends.cpu.codegen.MIN_PARALLEL_WORK", 0)
    graph = _late_layer(hw, cin, cout)
    x = np.random.default_rng(1).standard_normal((1, cin, hw, hw)).astype(np.float32)
    expect = run(graph, {"x": x})
    for threads in (2, 3):
        module = compile_graph(graph, "late", threads=threads)
        assert module.report["threads"] == threads
        got = module.run({"x": x})
        for name in graph.outputs:
            np.testing.assert_allclose(got[name], expect[name], rtol=1e-4, atol=1e-4,
                                       err_msg=f"{name} with {threads} threads")


@pytest.mark.parametrize("stride,hw", [(1, 4), (2, 14)])
def test_column_split_conv_builds_its_patches_once(monkeypatch, stride, hw):
    """A conv whose chunks split the columns reads one patch matrix, built (split by rows)
    in a step before it: the step is there, and the answer is the interpreter's."""
    monkeypatch.setattr("sw2c.backends.cpu.codegen.MIN_PARALLEL_WORK", 0)
    rng = np.random.default_rng(stride)
    cin, cout = 16, 300
    b = Builder("late", [Value("x", TensorType((1, cin, hw, hw)))])
    w = rng.normal(0, (2 / (9 * cin)) ** 0.5, (cout, cin, 3, 3)).astype(np.float32)
    graph = b.finish([conv(b, "x", w, rng.normal(0, 0.1, cout).astype(np.float32), stride)])
    program = generate(run_pipeline(graph, cpu_pipeline("off")), "late", threads=2)
    assert any(f.name.endswith(".patches") for f in program.module.functions)
    x = rng.standard_normal((1, cin, hw, hw)).astype(np.float32)
    got = compile_graph(graph, "late", threads=2, winograd="off").run({"x": x})
    np.testing.assert_allclose(got[graph.outputs[0]], run(graph, {"x": x})[graph.outputs[0]],
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kernel,c,hw", [(3, 8, 11), (9, 2, 10)])  # 9x9: generic im2col
@pytest.mark.parametrize("threads", [1, 2])
def test_patches_in_blocks_match_the_interpreter(monkeypatch, kernel, c, hw, threads):
    """A patch buffer far smaller than the patch matrix: im2col and the GEMM take the rows a
    block at a time (full blocks in a loop, then the rest), in every chunk."""
    monkeypatch.setattr("sw2c.backends.cpu.codegen.MIN_PARALLEL_WORK", 0)
    monkeypatch.setattr("sw2c.backends.cpu.matmul.PATCH_BYTES", 4 * kernel * kernel * c * 5)
    monkeypatch.setattr("sw2c.backends.cpu.matmul.MIN_BLOCK_STRIPS", 1)  # blocks of MR rows
    rng = np.random.default_rng(2)
    b = Builder("blocks", [Value("x", TensorType((1, c, hw, hw)))])
    w = rng.normal(0, 0.3, (40, c, kernel, kernel)).astype(np.float32)
    y = conv(b, "x", w, rng.normal(0, 0.1, 40).astype(np.float32), pad=kernel // 2)
    graph = b.finish([b.add(Op.UNARY, [y], fn=Unary.RELU)])
    x = rng.standard_normal((1, c, hw, hw)).astype(np.float32)
    module = compile_graph(graph, "blocks", threads=threads)
    np.testing.assert_allclose(module.run({"x": x})[graph.outputs[0]],
                               run(graph, {"x": x})[graph.outputs[0]], rtol=1e-4, atol=1e-4)
    # scratch holds a few blocks, not the whole patch matrix
    assert module.report["arena_bytes"] < 4 * hw * hw * kernel * kernel * c


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("n", [130, 300])
def test_run_time_right_hand_side_is_packed_per_chunk(monkeypatch, transposed, n):
    """Both operands activations (attention's scores, a Winograd transform): the chunks split
    the columns and each packs only its own panels of B (read through B^T's transpose)."""
    monkeypatch.setattr("sw2c.backends.cpu.codegen.MIN_PARALLEL_WORK", 0)
    b = Builder("rt", [Value("a", TensorType((37, 24))),
                       Value("b", TensorType((n, 24) if transposed else (24, n)))])
    rhs = b.add(Op.TRANSPOSE, ["b"], perm=(1, 0)) if transposed else "b"
    y = b.add(Op.UNARY, [b.add(Op.MATMUL, ["a", rhs])], fn=Unary.TANH)
    graph = b.finish([y])
    rng = np.random.default_rng(4)
    feeds = {v.name: rng.standard_normal(v.type.shape).astype(np.float32) for v in graph.inputs}
    want = run(graph, feeds)[graph.outputs[0]]
    for threads in (1, 2, 3):
        module = compile_graph(graph, "rt", threads=threads)
        assert module.report["threads"] == threads
        np.testing.assert_allclose(module.run(feeds)[graph.outputs[0]], want, rtol=1e-5,
                                   atol=1e-5, err_msg=f"{threads} threads")


def _batched(batch: int, m: int, k: int, n: int, seed: int = 5):
    """A batched GEMM by constant weights ([batch, m, k] @ [batch, k, n]) + a per-column bias,
    then ReLU: Winograd's middle step, with an epilogue."""
    rng = np.random.default_rng(seed)
    b = Builder("batched", [Value("a", TensorType((batch, m, k)))])
    w = b.const(rng.normal(0, 0.2, (batch, k, n)).astype(np.float32), "w")
    bias = b.const(rng.normal(0, 0.1, (n,)).astype(np.float32), "bias")
    y = b.add(Op.BINARY, [b.add(Op.MATMUL, ["a", w]), bias], fn=Binary.ADD)
    return b.finish([b.add(Op.UNARY, [y], fn=Unary.RELU)])


@pytest.mark.parametrize("batch,m,k,n,rows", [(36, 49, 64, 64, True), (16, 16, 256, 256, False),
                                              (4, 37, 8, 24, True)])
def test_a_batched_gemm_splits_rows_where_its_activations_outweigh_its_weights(
        monkeypatch, batch, m, k, n, rows):
    """Rows [lo, hi) of every batch per thread (equal shares: 49 rows -> 24 + 25, 37 -> 12,
    12, 13) when m (k + n) > k n, else one batch per chunk; both against the interpreter."""
    from sw2c.backends.cpu.codegen import _chunks, _is_const
    from sw2c.backends.cpu.matmul import splits_rows_across_batches

    monkeypatch.setattr("sw2c.backends.cpu.codegen.MIN_PARALLEL_WORK", 0)
    graph = _batched(batch, m, k, n)
    lowered = run_pipeline(graph, cpu_pipeline("off"))
    kernel = next(n for n in lowered.nodes if n.op is Op.KERNEL)
    assert splits_rows_across_batches(kernel, lambda i: _is_const(lowered, i)) == rows
    assert _chunks(kernel, 2, lowered) == (2 if rows else batch)
    a = np.random.default_rng(6).standard_normal((batch, m, k)).astype(np.float32)
    want = run(graph, {"a": a})[graph.outputs[0]]
    for threads in (2, 3):
        got = compile_graph(graph, "batched", threads=threads).run({"a": a})[graph.outputs[0]]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=f"{threads} threads")



def test_column_chunks_sum_as_the_whole_product_does():
    """A product cut into column chunks of different widths (64 + 16 of 80 columns) splits
    each row's reduction as the whole product would: two threads give the single thread's
    bits (a 16-column chunk summed with more accumulator sets differed by 1.7e-4)."""
    rng = np.random.default_rng(0)
    b = Builder("g", [Value("x", TensorType((6, 2048)))])
    w = b.const(rng.standard_normal((2048, 80)).astype(np.float32))
    graph = b.finish([b.add(Op.MATMUL, ["x", w])])
    x = rng.standard_normal((6, 2048)).astype(np.float32)
    one, two = (compile_graph(graph, f"cols{t}", threads=t) for t in (1, 2))
    assert two.report["threads"] == 2
    np.testing.assert_array_equal(one.run({"x": x})[graph.outputs[0]],
                                  two.run({"x": x})[graph.outputs[0]])
