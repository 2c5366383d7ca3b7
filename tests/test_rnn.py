"""LSTM, GRU and RNN against onnxruntime: every direction and layout, the optional inputs (B,
initial states as constants or run-time inputs, peepholes, constant sequence_lens), activation
lists with alpha/beta, clip, linear_before_reset, input_forget, any subset of the outputs; and
the lowering itself (one input projection, a few kernels per step)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import sw2c
from onnx import TensorProto, helper, numpy_helper
from sw2c.errors import ModelError, UnsupportedOpError
from sw2c.ir import Op
from sw2c.tests.onnx_util import session

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
RTOL, ATOL = 1e-3, 1e-4


def rnn_model(op: str, *, steps: int = 4, batch: int = 2, size: int = 5, hidden: int = 7,
              direction: str = "forward", layout: int = 0, bias: bool = True,
              h0: str | None = None, c0: str | None = None, peep: bool = False,
              lens: list[int] | None = None, outputs: tuple[int, ...] = (0, 1, 2),
              opset: int = 14, seed: int = 0, **attrs) -> tuple[onnx.ModelProto, dict]:
    """One ``op`` node; h0/c0 are None (absent), "const" (initializers) or "input" (fed at run
    time); W, R, B, P are initializers. Returns the model and its feeds."""
    rng = np.random.default_rng(seed)
    dirs = 2 if direction == "bidirectional" else 1
    g = GATES[op]
    c0 = c0 if op == "LSTM" else None

    def rand(*shape: int, scale: float = 0.4) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    xshape = [steps, batch, size] if layout == 0 else [batch, steps, size]
    sshape = [dirs, batch, hidden] if layout == 0 else [batch, dirs, hidden]
    yshape = [steps, dirs, batch, hidden] if layout == 0 else [batch, steps, dirs, hidden]
    inits = {"W": rand(dirs, g * hidden, size), "R": rand(dirs, g * hidden, hidden)}
    names = ["X", "W", "R", ""]
    if bias:
        inits["B"] = rand(dirs, 2 * g * hidden)
        names[3] = "B"
    feeds = {"X": rand(*xshape, scale=1.0)}
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, xshape)]
    names.append("")
    if lens is not None:
        inits["L"] = np.array(lens, np.int32)
        names[4] = "L"
    for name, how in (("H0", h0), ("C0", c0)):
        names.append("")
        if how is None:
            continue
        names[-1] = name
        value = rand(*sshape, scale=0.5)
        if how == "const":
            inits[name] = value
        else:
            feeds[name] = value
            inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, sshape))
    if peep:
        names.append("P")
        inits["P"] = rand(dirs, 3 * hidden)
    while names and names[-1] == "":
        names.pop()
    if op != "LSTM":
        outputs = tuple(o for o in outputs if o < 2)
    outs = ["Y", "Y_h", "Y_c"]
    node_outs = [outs[i] if i in outputs else "" for i in range(max(outputs) + 1)]
    if layout:
        attrs["layout"] = layout
    node = helper.make_node(op, names, node_outs, name="rnn", hidden_size=hidden,
                            direction=direction, **attrs)
    graph = helper.make_graph(
        [node], "t", inputs,
        [helper.make_tensor_value_info(outs[i], TensorProto.FLOAT, yshape if i == 0 else sshape)
         for i in outputs],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return model, feeds


def reference(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    """onnxruntime's outputs; it refuses layout=1, so that runs as the layout-0 twin with the
    batch and time (or direction) axes swapped around it."""
    node = model.graph.node[0]
    if not any(a.name == "layout" and a.i == 1 for a in node.attribute):
        return session(model).run(None, feeds)
    twin = onnx.ModelProto()
    twin.CopyFrom(model)
    tnode = twin.graph.node[0]
    next(a for a in tnode.attribute if a.name == "layout").i = 0
    swap = (1, 0, 2)
    for t in twin.graph.initializer:
        if t.name in ("H0", "C0"):
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).transpose(swap), t.name))
    for vi in list(twin.graph.input) + list(twin.graph.output):
        vi.type.tensor_type.ClearField("shape")
    outs = session(twin).run(None, {k: v.transpose(swap) for k, v in feeds.items()})
    return [o.transpose((2, 0, 1, 3) if o.ndim == 4 else swap) for o in outs]


def compare(model: onnx.ModelProto, feeds: dict) -> sw2c.Module:
    want = reference(model, feeds)
    module = sw2c.compile(model, verify=False, threads=1)
    got = module.run(feeds)
    for out, ref in zip(model.graph.output, want):
        np.testing.assert_allclose(got[out.name], ref, rtol=RTOL, atol=ATOL, err_msg=out.name)
    return module


@pytest.mark.parametrize("layout", [0, 1])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_directions_and_layouts(op, direction, layout):
    compare(*rnn_model(op, direction=direction, layout=layout, h0="input", c0="input"))


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("case", [
    dict(bias=False),
    dict(h0="const", c0="const"),
    dict(h0="input"),  # c0 absent: zeros
    dict(h0="const", c0="input", batch=3, hidden=17),
    dict(outputs=(0,)),
    dict(outputs=(1,)),
    dict(outputs=(2,)),
    dict(outputs=(0, 2), hidden=33, batch=3),
    dict(steps=1),
    dict(opset=7),
    dict(opset=22, batch=1, hidden=16),
], ids=str)
def test_optional_inputs_and_outputs(op, case):
    if op != "LSTM" and case.get("outputs") == (2,):
        pytest.skip("Y_c is LSTM's")
    compare(*rnn_model(op, **case))


@pytest.mark.parametrize("layout", [0, 1])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_sequence_lens(op, direction, layout):
    """Rows shorter than the sequence: Y zero past the end, the state held; the reverse
    direction starts at each row's own last step."""
    compare(*rnn_model(op, steps=5, batch=4, direction=direction, layout=layout,
                       lens=[5, 2, 3, 1], h0="input", c0="const"))


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_sequence_lens_all_full(op):
    compare(*rnn_model(op, lens=[4, 4], direction="reverse"))


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("case", [
    dict(peep=True),
    dict(peep=True, h0="input", c0="input", lens=[3, 4], layout=1),
    dict(input_forget=1),
    dict(input_forget=1, peep=True, clip=0.7),
    dict(clip=0.5, h0="input", c0="input"),
], ids=str)
def test_lstm_options(direction, case):
    compare(*rnn_model("LSTM", direction=direction, **case))


@pytest.mark.parametrize("lbr", [0, 1])
@pytest.mark.parametrize("case", [
    dict(),
    dict(h0="input", direction="bidirectional"),
    dict(bias=False, h0="const"),
    dict(clip=0.6, direction="reverse", lens=[2, 4]),
], ids=str)
def test_gru_linear_before_reset(lbr, case):
    compare(*rnn_model("GRU", linear_before_reset=lbr, **case))


ACTS = [  # (activation per gate function, alpha, beta)
    (["Relu"], [], []),
    (["Sigmoid"], [], []),
    (["Affine"], [0.7], [0.2]),
    (["LeakyRelu"], [0.3], []),
    (["LeakyRelu"], [], []),  # onnxruntime's default alpha 0.01
    (["ThresholdedRelu"], [0.1], []),
    (["ScaledTanh"], [1.5], [0.8]),
    (["HardSigmoid"], [0.3], [0.4]),
    (["HardSigmoid"], [], []),
    (["Elu"], [0.9], []),
    (["Softsign"], [], []),
    (["Softplus"], [], []),
]


@pytest.mark.parametrize("act", ACTS, ids=lambda a: a[0][0] + str(a[1] + a[2]))
def test_rnn_activations(act):
    names, alphas, betas = act
    attrs = {"activations": names * 2}
    if alphas:
        attrs["activation_alpha"] = alphas * 2
    if betas:
        attrs["activation_beta"] = betas * 2
    compare(*rnn_model("RNN", direction="bidirectional", h0="input", **attrs))


@pytest.mark.parametrize("op,acts,alphas,betas", [
    ("LSTM", ["HardSigmoid", "Tanh", "Softsign"], [0.25], [0.45]),
    ("LSTM", ["sigmoid", "relu", "elu"], [0.5], []),
    ("LSTM", ["Sigmoid", "Tanh", "Tanh", "HardSigmoid", "ScaledTanh", "Affine"],
     [0.2, 1.1, 0.5], [0.5, 0.9, 0.1]),
    ("GRU", ["Sigmoid", "Relu"], [], []),
    ("GRU", ["HardSigmoid", "LeakyRelu", "Sigmoid", "Softplus"], [0.2, 0.05], [0.5]),
    ("GRU", ["Sigmoid", "ThresholdedRelu"], [0.05], []),
])
def test_activation_lists(op, acts, alphas, betas):
    dirs = "bidirectional" if len(acts) == 2 * (3 if op == "LSTM" else 2) else "forward"
    attrs = {"activations": acts}
    if alphas:
        attrs["activation_alpha"] = alphas
    if betas:
        attrs["activation_beta"] = betas
    compare(*rnn_model(op, direction=dirs, h0="input", clip=2.0, **attrs))


def test_verify_true_with_run_time_weights():
    """W, R, B fed at run time (as the ONNX node tests do): the projection is still one
    matmul, the transposes run at run time; verify=True checks against onnxruntime."""
    model, _ = rnn_model("LSTM", direction="bidirectional", peep=True)
    inits = {t.name: t for t in model.graph.initializer}
    for name in ("W", "R", "B"):
        t = inits[name]
        model.graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, t.dims))
        model.graph.initializer.remove(t)
    sw2c.compile(model, verify=True)


def kernels(module: sw2c.Module) -> list:
    return [n for n in module.graph.nodes if n.op is Op.KERNEL]


@pytest.mark.parametrize("op,per_step", [("LSTM", 3), ("GRU", 2), ("RNN", 2)])
def test_lowering_one_projection_few_kernels_per_step(op, per_step):
    """One matmul projects every step's input; each later step is its recurrent matmul plus
    the fused gate math: LSTM 3 kernels (matmul, C, H), GRU and RNN 2."""
    steps = 6
    attrs = {"linear_before_reset": 1} if op == "GRU" else {}
    module = compare(*rnn_model(op, steps=steps, h0="input", outputs=(1,), **attrs))
    ks = kernels(module)
    big = [k for k in ks if k.attrs["kind"] == "matmul" and k.type.shape[0] == steps * 2]
    assert len(big) == 1  # the input projection of all the steps
    assert len(ks) <= 1 + per_step * steps + 1, [k.attrs["kind"] for k in ks]


def test_run_time_sequence_lens_is_refused():
    model, feeds = rnn_model("LSTM", lens=[4, 2])
    model.graph.initializer.remove(next(t for t in model.graph.initializer if t.name == "L"))
    model.graph.input.append(helper.make_tensor_value_info("L", TensorProto.INT32, [2]))
    with pytest.raises(UnsupportedOpError, match="sequence_lens"):
        sw2c.compile(model, verify=False)


@pytest.mark.parametrize("change,error", [
    (dict(activations=["Sigmoid", "Gelu", "Tanh"]), UnsupportedOpError),
    (dict(activations=["Sigmoid", "Tanh"]), ModelError),
    (dict(lens=[0, 2]), ModelError),
    (dict(lens=[5, 2]), ModelError),
    (dict(clip=-1.0), ModelError),
], ids=str)
def test_bad_attributes_raise_sw2c_errors(change, error):
    with pytest.raises(error, match="rnn"):
        sw2c.compile(rnn_model("LSTM", **change)[0], verify=False)


def test_bad_weight_shape_raises_model_error():
    model, _ = rnn_model("GRU")
    r = next(t for t in model.graph.initializer if t.name == "R")
    r.CopyFrom(numpy_helper.from_array(np.zeros((1, 21, 6), np.float32), "R"))
    with pytest.raises(ModelError, match="R has shape"):
        sw2c.compile(model, verify=False)


def test_too_long_sequence_is_refused():
    model, _ = rnn_model("RNN", steps=1100, direction="bidirectional", hidden=2, size=2)
    with pytest.raises(UnsupportedOpError, match="unrolls"):
        sw2c.compile(model, verify=False)


def test_steps_share_kernel_functions():
    """Every time step's kernels are the same code on other rows: the backend emits each
    once (backends/cpu/dedupe.py), so LLVM's work does not grow with the sequence."""
    from sw2c.backends.cpu.codegen import generate
    from sw2c.frontend import import_model
    from sw2c.passes.pipeline import run_pipeline

    counts = []
    for steps in (4, 12):
        model, feeds = rnn_model("LSTM", steps=steps, h0="input", c0="input")
        program = generate(run_pipeline(import_model(model)), "m", 1)
        kernels = [f for f in program.module.functions  # k<i>.<kind>, not their helpers
                   if not f.is_declaration and f.name.count(".") == 1]
        counts.append(len(kernels))
        compare(model, feeds)
    assert counts[0] == counts[1] == 5, counts  # projection, step matmul, C, H, concat
