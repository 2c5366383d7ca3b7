"""Layer/RMS/Group/Instance normalization, DepthToSpace/SpaceToDepth and Einsum: imported and
run on the IR interpreter against onnxruntime, a few compiled (verify=True checks the native
code against onnxruntime), and the attention products of two run-time tensors."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import sw2c
from onnx import helper
from sw2c import ir
from sw2c.errors import ModelError, UnsupportedOpError
from sw2c.frontend import import_model
from sw2c.passes.pipeline import run_pipeline, through
from sw2c.tests.conformance import node_cases
from sw2c.tests.onnx_util import check, make_model, node_model, session, with_output_shapes

RNG = np.random.default_rng(4321)


def rand(*shape: int) -> np.ndarray:
    return np.asarray(RNG.standard_normal(shape), np.float32)


def compiled(model: onnx.ModelProto, feeds: dict[str, np.ndarray], threads: int = 1,
             atol: float = 1e-5):
    """Compile (verify=True: checked against onnxruntime) and run on ``feeds``."""
    want = session(model).run(None, feeds)
    module = sw2c.compile(with_output_shapes(model, want), threads=threads, verify=True)
    got = module.run(feeds)
    for (name, _, _), w in zip(module.outputs, want):
        np.testing.assert_allclose(got[name], w, rtol=1e-4, atol=atol, err_msg=name)
    return module


# --- LayerNormalization / RMSNormalization --------------------------------------------------
@pytest.mark.parametrize("shape, axis, scale_shape, bias", [
    ([2, 3, 8], -1, [8], True), ([2, 3, 8], 1, [3, 8], True), ([2, 3, 8], 0, [2, 3, 8], False),
    ([4, 5], -2, [4, 5], True), ([2, 3, 4, 5], 2, [5], True), ([2, 7], -1, [1], False),
])
def test_layer_norm(shape, axis, scale_shape, bias):
    inits = {"s": rand(*scale_shape), **({"b": rand(*scale_shape)} if bias else {})}
    check(node_model("LayerNormalization", {"x": shape}, inits=inits, axis=axis))


def test_layer_norm_statistics_outputs():
    check(node_model("LayerNormalization", {"x": [2, 3, 8]}, n_out=3,
                     inits={"s": rand(3, 8), "b": rand(3, 8)}, axis=1, epsilon=1e-3))


def test_layer_norm_runtime_scale():
    check(node_model("LayerNormalization", {"x": [2, 3, 8], "s": [8], "b": [8]}))


def test_layer_norm_large_mean_is_stable():
    """Two-pass variance: 1000 + N(0, 1) keeps its variance to 1e-3 (E[x^2] - E[x]^2 in
    float32 would lose about 10%: x^2 ~ 1e6 sums with an ulp of 4)."""
    x = (np.float32(1e3) + rand(2, 64)).astype(np.float32)
    model = node_model("LayerNormalization", {"x": [2, 64]}, inits={"s": np.ones(64, np.float32)})
    graph = import_model(with_output_shapes(model, session(model).run(None, {"x": x})))
    got = ir.run(graph, {"x": x})["y0"]
    x64 = x.astype(np.float64)
    want = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)
    compiled(model, {"x": x}, atol=1e-3)  # a float32 mean of ~1000 is good to ~1e-4


def test_layer_norm_last_axis_is_one_row_kernel():
    """mean, variance and normalize + scale + bias, row by row in one kernel (two threads
    share the rows)."""
    model = node_model("LayerNormalization", {"x": [1, 16, 64]},
                       inits={"s": rand(64), "b": rand(64)})
    module = compiled(model, {"x": rand(1, 16, 64)}, threads=2)
    kernels = [n for n in module.graph.nodes if n.op is ir.Op.KERNEL]
    assert [k.attrs["kind"] for k in kernels] == ["rows"]


def test_layer_norm_stash_type_unsupported():
    model = node_model("LayerNormalization", {"x": [2, 8]}, inits={"s": rand(8)}, stash_type=11)
    with pytest.raises(UnsupportedOpError, match="stash_type=11"):
        import_model(with_output_shapes(model, [np.zeros((2, 8), np.float32)]))


@pytest.mark.parametrize("shape, axis, scale_shape, eps", [
    ([2, 3, 8], -1, [8], 1e-5), ([2, 3, 8], 1, [3, 8], 0.1), ([4, 5], 0, [4, 5], 1e-5),
])
def test_rms_norm(shape, axis, scale_shape, eps):
    check(node_model("RMSNormalization", {"x": shape}, inits={"s": rand(*scale_shape)},
                     opset=23, axis=axis, epsilon=eps))


# --- GroupNormalization / InstanceNormalization ----------------------------------------------
@pytest.mark.parametrize("opset", [18, 21])
@pytest.mark.parametrize("shape, groups", [([2, 6, 4, 4], 3), ([1, 4, 5], 1), ([2, 4, 3], 4)])
def test_group_norm(opset, shape, groups):
    n = groups if opset == 18 else shape[1]  # opset 18: per group; 21: per channel
    check(node_model("GroupNormalization", {"x": shape}, inits={"s": rand(n), "b": rand(n)},
                     opset=opset, num_groups=groups, epsilon=1e-3))


def test_group_norm_bad_groups():
    model = node_model("GroupNormalization", {"x": [1, 6, 4]},
                       inits={"s": rand(6), "b": rand(6)}, opset=21, num_groups=4)
    with pytest.raises(ModelError, match="num_groups 4"):
        import_model(with_output_shapes(model, [np.zeros((1, 6, 4), np.float32)]))


@pytest.mark.parametrize("opset", [7, 22])
@pytest.mark.parametrize("shape", [[2, 3, 4, 5], [1, 4, 6], [2, 2, 3, 2, 2]])
def test_instance_norm(opset, shape):
    c = shape[1]
    check(node_model("InstanceNormalization", {"x": shape}, inits={"s": rand(c), "b": rand(c)},
                     opset=opset, epsilon=1e-4))


# --- DepthToSpace / SpaceToDepth ---------------------------------------------------------------
@pytest.mark.parametrize("opset, mode", [(7, None), (11, "DCR"), (13, "CRD"), (13, "DCR")])
def test_depth_to_space(opset, mode):
    attrs = {"mode": mode} if mode else {}
    check(node_model("DepthToSpace", {"x": [2, 12, 3, 4]}, opset=opset, blocksize=2, **attrs))


@pytest.mark.parametrize("opset, mode", [(7, None), (13, None), (28, "DCR"), (28, "CRD")])
def test_space_to_depth(opset, mode):
    attrs = {"mode": mode} if mode else {}
    model = node_model("SpaceToDepth", {"x": [2, 3, 4, 6]}, opset=opset, blocksize=2, **attrs)
    check(model)


@pytest.mark.parametrize("op, shape, attrs, error, match", [
    ("DepthToSpace", [1, 8, 3], {"blocksize": 2}, UnsupportedOpError, "rank 3"),
    ("DepthToSpace", [1, 6, 3, 3], {"blocksize": 2}, ModelError, "multiple of blocksize"),
    ("SpaceToDepth", [1, 2, 3, 4], {"blocksize": 2}, ModelError, "multiple of blocksize"),
    ("SpaceToDepth", [1, 2, 4, 4], {"blocksize": 0}, ModelError, "blocksize 0"),
])
def test_space_depth_errors(op, shape, attrs, error, match):
    model = node_model(op, {"x": shape}, opset=13, **attrs)
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y0", 1, None))
    with pytest.raises(error, match=match):
        import_model(model)


def test_depth_to_space_compiled():
    compiled(node_model("DepthToSpace", {"x": [1, 8, 3, 5]}, opset=13, blocksize=2,
                        mode="CRD"), {"x": rand(1, 8, 3, 5)})


# --- Einsum ----------------------------------------------------------------------------------
EQUATIONS = [
    ("bhqd,bhkd->bhqk", [2, 3, 5, 4], [2, 3, 6, 4]),
    ("bhqk,bhkd->bhqd", [2, 3, 5, 6], [2, 3, 6, 4]),
    ("bij,bjk->bik", [2, 3, 4], [2, 4, 5]), ("ij,jk->ik", [3, 4], [4, 5]),
    ("bid,jd->bij", [2, 3, 4], [5, 4]), ("i,i->", [7], [7]), ("i,i", [7], [7]),
    ("ij,jk", [3, 4], [4, 5]), ("ij->ji", [3, 4]), ("ij->i", [3, 4]), ("ijk->", [2, 3, 4]),
    ("ii->i", [3, 3]), ("ii", [3, 3]), ("...ii->...i", [2, 3, 3]), ("iij,j->i", [3, 3, 4], [4]),
    ("b...d,bd->b...", [2, 3, 4, 5], [2, 5]), ("...ij,...jk->...ik", [2, 1, 3, 4], [1, 5, 4, 6]),
    ("ij,kl->ijkl", [2, 3], [4, 5]), ("i,j->ij", [3], [4]), ("ij,ij->ij", [3, 4], [3, 4]),
    ("abc,cd,de->abe", [2, 3, 4], [4, 5], [5, 6]), ("ij,j,k->ik", [3, 4], [4], [5]),
    ("ibnd,jbnd->bnij", [5, 2, 3, 4], [6, 2, 3, 4]),
    ("bnij,jbnd->ibnd", [2, 3, 5, 6], [6, 2, 3, 4]),
    ("bij, bkj -> bik", [2, 3, 4], [2, 5, 4]),
]


@pytest.mark.parametrize("eq, shapes", [(e[0], e[1:]) for e in EQUATIONS], ids=[e[0] for e in
                                                                                EQUATIONS])
def test_einsum(eq, shapes):
    names = [f"x{i}" for i in range(len(shapes))]
    check(make_model([helper.make_node("Einsum", names, ["y"], equation=eq)],
                     dict(zip(names, shapes)), ["y"], opset=12))


def test_einsum_constant_weight_folds_transpose():
    """'bid,jd->bij' with a constant [j, d]: the transpose folds, one rank-2 right operand."""
    model = make_model([helper.make_node("Einsum", ["x", "w"], ["y"], equation="bid,jd->bij")],
                       {"x": [2, 3, 4]}, ["y"], {"w": rand(5, 4)}, opset=12)
    graph = check(model)
    assert {n.op for n in graph.nodes} <= {ir.Op.CONST, ir.Op.RESHAPE, ir.Op.MATMUL}


@pytest.mark.parametrize("case", [c for c in node_cases() if c.name.startswith("test_einsum_")
                                  and "bfloat16" not in c.name], ids=lambda c: c.name)
def test_einsum_onnx_node_tests_in_float32(case):
    """The ONNX node tests are float64 (out of sw2c's scope): the same equations in float32."""
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    for vi in [*model.graph.input, *model.graph.output]:
        vi.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    inputs, outputs = case.data_sets[0]
    feeds = {vi.name: np.asarray(x, np.float32) for vi, x in zip(model.graph.input, inputs)}
    got = sw2c.compile(model, verify=False).run(feeds)
    for vi, want in zip(model.graph.output, outputs):
        np.testing.assert_allclose(got[vi.name], np.asarray(want, np.float32), rtol=1e-4,
                                   atol=1e-5)


@pytest.mark.parametrize("eq, error", [("ij,jk->ik", "2 operands"), ("ij->k", "names one"),
                                       ("ij->ii", "repeats"), ("i1->i", "bad einsum term")])
def test_einsum_errors(eq, error):
    model = make_model([helper.make_node("Einsum", ["x"], ["y"], equation=eq)], {"x": [3, 3]},
                       ["y"], opset=12)
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", 1, [3]))
    with pytest.raises(ModelError, match=error):
        import_model(model)


# --- attention: MatMul of two run-time tensors, compiled -------------------------------------
def attention(q: list[int], einsum: bool) -> onnx.ModelProto:
    """softmax(Q K^T * c) V over run-time Q, K, V of shape ``q`` (rank 3 or 4)."""
    rank = len(q)
    if einsum:
        h = "bhqd"[4 - rank:]
        first = helper.make_node("Einsum", ["q", "k"], ["s"],
                                 equation=f"{h},{h.replace('q', 'k')}->{h[:-1]}k")
        second = helper.make_node("Einsum", ["p", "v"], ["y"],
                                  equation=f"{h[:-1]}k,{h.replace('q', 'k')}->{h}")
        nodes = [first]
    else:
        perm = [*range(rank - 2), rank - 1, rank - 2]
        nodes = [helper.make_node("Transpose", ["k"], ["kt"], perm=perm),
                 helper.make_node("MatMul", ["q", "kt"], ["s"])]
        second = helper.make_node("MatMul", ["p", "v"], ["y"])
    nodes += [helper.make_node("Mul", ["s", "c"], ["s2"]),
              helper.make_node("Softmax", ["s2"], ["p"], axis=-1), second]
    return make_model(nodes, {"q": q, "k": q, "v": q}, ["y"],
                      {"c": np.array(q[-1] ** -0.5, np.float32)}, opset=13)


@pytest.mark.parametrize("shape", [[6, 9, 8], [2, 3, 17, 16], [1, 2, 40, 32]])
@pytest.mark.parametrize("einsum", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
def test_attention_compiled(shape, einsum, threads, monkeypatch):
    # these products are small: make the 2-thread runs split every kernel anyway
    monkeypatch.setattr("sw2c.backends.cpu.codegen.MIN_PARALLEL_WORK", 0)
    compiled(attention(shape, einsum), {k: rand(*shape) for k in "qkv"}, threads=threads)


@pytest.mark.parametrize("norm, opset", [("GroupNormalization", 21),
                                         ("InstanceNormalization", 17)])
def test_norm_between_convs_stays_channels_last(norm, opset):
    """conv -> norm -> relu -> conv: the per-channel statistics re-lay as free reshapes, so
    only the model's edges transpose (NCHW -> NHWC in, NHWC -> NCHW out)."""
    attrs = {"num_groups": 2} if norm == "GroupNormalization" else {}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node(norm, ["c", "s", "b"], ["n"], **attrs),
             helper.make_node("Relu", ["n"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["y"])]
    model = make_model(nodes, {"x": [1, 3, 10, 10]}, ["y"],
                       {"w1": rand(8, 3, 3, 3), "s": rand(8), "b": rand(8),
                        "w2": rand(4, 8, 1, 1)}, opset=opset)
    optimized = run_pipeline(import_model(with_output_shapes(
        model, session(model).run(None, {"x": rand(1, 3, 10, 10)}))), through("choose-layout"))
    assert sum(n.op is ir.Op.TRANSPOSE for n in optimized.nodes) == 2
    compiled(model, {"x": rand(1, 3, 10, 10)}, threads=2)
