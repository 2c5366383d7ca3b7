"""ShuffleNet's building blocks on the cpu target: grouped pointwise convs become one GEMM per
group reading its channels in place and writing its columns of the concat, with the batch norm
and activation as each GEMM's epilogue; the channel shuffle is one transpose of the innermost
axes. Each pass is checked by the interpreter before and after; models against onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import sw2c
from onnx import TensorProto, helper
from sw2c.frontend import import_model
from sw2c.ir import Op, run, verify
from sw2c.passes.pipeline import CPU_PIPELINE, run_pipeline, through
from sw2c.passes.split_groups import split_groups

RNG = np.random.default_rng(0)


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return helper.make_tensor(name, TensorProto.FLOAT, array.shape, array.ravel())


def shuffle_unit(c: int = 24, groups: int = 4, hw: int = 9, relu: bool = True) -> onnx.ModelProto:
    """stem 3x3 conv, grouped 1x1 conv + BN (+ relu), channel shuffle, depthwise 3x3, grouped
    1x1 conv."""
    inits = [_init("w0", RNG.normal(0, 0.1, (c, c, 3, 3)).astype(np.float32)),
             _init("w1", RNG.normal(0, 0.3, (c, c // groups, 1, 1)).astype(np.float32)),
             _init("b1", RNG.normal(0, 0.1, c).astype(np.float32)),
             _init("scale", RNG.uniform(0.5, 1.5, c).astype(np.float32)),
             _init("shift", RNG.normal(0, 0.1, c).astype(np.float32)),
             _init("mean", RNG.normal(0, 0.1, c).astype(np.float32)),
             _init("var", RNG.uniform(0.5, 1.5, c).astype(np.float32)),
             _init("dw", RNG.normal(0, 0.3, (c, 1, 3, 3)).astype(np.float32)),
             _init("w2", RNG.normal(0, 0.3, (c, c // groups, 1, 1)).astype(np.float32)),
             helper.make_tensor("split", TensorProto.INT64, [5], [1, groups, c // groups, hw, hw]),
             helper.make_tensor("merge", TensorProto.INT64, [4], [1, c, hw, hw])]
    nodes = [helper.make_node("Conv", ["x", "w0"], ["stem"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["stem", "w1", "b1"], ["c1"], group=groups),
             helper.make_node("BatchNormalization", ["c1", "scale", "shift", "mean", "var"],
                              ["bn"]),
             helper.make_node("Relu" if relu else "Identity", ["bn"], ["r"]),
             helper.make_node("Reshape", ["r", "split"], ["s5"]),
             helper.make_node("Transpose", ["s5"], ["t5"], perm=[0, 2, 1, 3, 4]),
             helper.make_node("Reshape", ["t5", "merge"], ["shuffled"]),
             helper.make_node("Conv", ["shuffled", "dw"], ["d"], group=c, pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["d", "w2"], ["y"], group=groups)]
    graph = helper.make_graph(
        nodes, "shuffle_unit", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                              [1, c, hw, hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, hw, hw])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _kinds(module: sw2c.Module) -> list[tuple[str, list[str]]]:
    return [(n.attrs["kind"], [m.op.name for m in n.attrs["body"].nodes])
            for n in module.graph.nodes if n.op is Op.KERNEL and n.name not in module.plan.elided]


@pytest.mark.parametrize("relu", [True, False])
def test_split_groups_keeps_the_meaning(relu):
    graph = run_pipeline(import_model(shuffle_unit(relu=relu)), through("choose-layout"))
    feeds = {"x": RNG.standard_normal((1, 24, 9, 9)).astype(np.float32)}
    after = verify(split_groups(graph))
    np.testing.assert_allclose(run(after, feeds)["y"], run(graph, feeds)["y"], rtol=1e-5,
                               atol=1e-5)
    assert sum(n.op is Op.MATMUL for n in after.nodes) == 1 + 8  # the stem; 4 groups, twice
    assert not any(n.op is Op.MATMUL and n.type.rank == 3 for n in after.nodes)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("c,groups,hw", [(24, 4, 9), (36, 3, 7), (16, 2, 5)])
def test_shuffle_unit_matches_onnxruntime(monkeypatch, threads, c, groups, hw):
    monkeypatch.setattr("sw2c.backends.cpu.codegen.MIN_PARALLEL_WORK", 0)
    module = sw2c.compile(shuffle_unit(c, groups, hw), threads=threads, verify=True,
                          winograd="off")  # the stem stays one GEMM
    kinds = _kinds(module)
    # each group's GEMM reads its slice in place and has the BN and relu as its epilogue
    assert sum(k == "matmul" for k, _ in kinds) == 1 + 2 * groups
    assert all(ops[0] == "SLICE" for k, ops in kinds[1:] if k == "matmul")
    # left: the shuffle (one transpose of the innermost axes), the depthwise conv and the
    # model output's transpose back to NCHW
    assert [k for k, _ in kinds if k != "matmul"] == ["elementwise", "reduce", "elementwise"]


def test_pipeline_runs_split_groups_before_folding_the_affine_ops():
    names = [p.name for p in CPU_PIPELINE]
    assert names.index("choose-layout") < names.index("split-groups") < names.index("fold-affine")
