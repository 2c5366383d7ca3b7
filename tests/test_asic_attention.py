"""The asic target's attention core (issue 12): matmuls of two activations (scores Q.K^T and
context P.V, batched over heads), the integer softmax with an additive mask and a calibrated
output scale, constant operands of concat/add/mul (a class token, position embeddings).
Single- and multi-head blocks built with onnx.helper, and the ViT families: int8 SQNR against
onnxruntime's float, the C export against the simulator bit for bit, and a perturbed rounding
that those comparisons must catch."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import sw2c
from onnx import TensorProto, helper, numpy_helper
from sw2c.backends.asic import lower, reference
from sw2c.backends.asic.c_runner import CExport, find_compiler
from sw2c.backends.asic.fixed_point import multiply_by_quantized_multiplier
from sw2c.backends.asic.program import Kind
from sw2c.backends.asic.reference import quantize_inputs, run_reference
from sw2c.benchmarks import zoo

SEQ, DIM = 8, 16
# measured on these blocks: 24.8 dB (one head, one layer), 21.2 dB (two heads, two layers)
ATTENTION_SQNR_FLOOR_DB = 18.0
PROBABILITY_SQNR_FLOOR_DB = 25.0  # a masked softmax's output; measured 33.9 dB
HF_VIT_SQNR_FLOOR_DB = 18.0  # measured 25.2 dB (its LayerNorms and GELUs are tables too)
BERT_SQNR_FLOOR_DB = 24.0  # bert_encoder past its embedding lookup: measured 30.3 dB
CC, NO_CC = find_compiler()


def attention_model(heads: int, layers: int = 1, seed: int = 0) -> onnx.ModelProto:
    """x [1, SEQ, DIM] -> concat a class token -> + position embeddings -> ``layers`` blocks
    of causal self-attention (Q, K, V projections with biases, heads split by reshape and
    transpose, scores scaled by 1/sqrt(dh), an additive -1e4 mask, softmax, context, output
    projection, a residual add). No LayerNorm or GELU: those are other kernels' tests."""
    rng = np.random.default_rng(seed)
    s, dh = SEQ + 1, DIM // heads
    inits: dict[str, np.ndarray] = {}
    nodes: list[onnx.NodeProto] = []

    def const(name: str, value: np.ndarray) -> str:
        inits[name] = np.asarray(value)
        return name

    def weight(name: str, *shape: int, std: float) -> str:
        return const(name, (rng.standard_normal(shape) * std).astype(np.float32))

    def op(kind: str, ins: list[str], **attrs) -> str:
        out = f"{kind.lower()}{len(nodes)}"
        nodes.append(helper.make_node(kind, ins, [out], name=out, **attrs))
        return out

    x = op("Concat", [weight("cls", 1, 1, DIM, std=1.0), "x"], axis=1)
    x = op("Add", [x, weight("pos", 1, s, DIM, std=0.5)])
    const("mask", np.triu(np.full((s, s), -1e4, np.float32), 1)[None, None])
    const("scale", np.array(1 / np.sqrt(dh), np.float32))
    const("heads", np.array([1, s, heads, dh], np.int64))
    const("merged", np.array([1, s, DIM], np.int64))
    for layer in range(layers):
        def proj(n: str, perm: list[int], src: str = x, layer: int = layer) -> str:
            y = op("MatMul", [src, weight(f"w{n}{layer}", DIM, DIM, std=DIM ** -0.5)])
            y = op("Add", [y, weight(f"b{n}{layer}", DIM, std=0.1)])
            return op("Transpose", [op("Reshape", [y, "heads"])], perm=perm)

        q, k, v = proj("q", [0, 2, 1, 3]), proj("k", [0, 2, 3, 1]), proj("v", [0, 2, 1, 3])
        scores = op("Add", [op("Mul", [op("MatMul", [q, k]), "scale"]), "mask"])
        ctx = op("MatMul", [op("Softmax", [scores], axis=-1), v])
        ctx = op("Reshape", [op("Transpose", [ctx], perm=[0, 2, 1, 3]), "merged"])
        x = op("Add", [x, op("MatMul", [ctx, weight(f"wo{layer}", DIM, DIM,
                                                        std=DIM ** -0.5)])])
    nodes[-1].output[0] = "y"
    graph = helper.make_graph(
        nodes, f"attention{heads}x{layers}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, SEQ, DIM])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, s, DIM])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def sqnr_vs_float(module: sw2c.Module, model: onnx.ModelProto, xs: np.ndarray) -> float:
    """Output SQNR (dB) of the int8 module against onnxruntime's float model."""
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = model.graph.input[0].name
    signal = noise = 0.0
    for x in xs:
        want = sess.run(None, {name: x})[0].astype(np.float64)
        got = np.asarray(module(x), np.float64).reshape(want.shape)
        signal += float(np.sum(want ** 2))
        noise += float(np.sum((got - want) ** 2))
    return 10 * np.log10(signal / noise)


def inputs(seed: int, count: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, *shape)).astype(np.float32)


@pytest.fixture(scope="module", params=[(1, 1), (2, 2)], ids=["1head", "2heads_2layers"])
def block(request) -> tuple[onnx.ModelProto, sw2c.Module]:
    heads, layers = request.param
    model = attention_model(heads, layers)
    module = sw2c.compile(model, target="asic:edge", calibration=inputs(1, 32, (SEQ, DIM)),
                          verify=True)
    return model, module


def test_attention_block_compiles_to_integer_steps(block):
    model, module = block
    steps = module.program.steps
    kinds = [s.kind for s in steps]
    layers = int(model.graph.name.split("x")[-1])
    assert kinds.count(Kind.BATCH_MATMUL) == 2 * layers  # scores and context, per layer
    assert kinds.count(Kind.CONST) == 2  # the class token and the position embeddings
    softmax = [s for s in steps if s.kind is Kind.SOFTMAX]
    assert len(softmax) == layers and all("mask" in s.consts for s in softmax)
    oracles = module.report["oracles"]
    assert oracles["reference"]["result"] == "bit-exact"
    assert oracles["qdq"]["ran"] and oracles["qdq"]["max_codes_off"] <= 2, oracles["qdq"]
    if CC is not None:
        assert oracles["c"]["result"] == "bit-exact", oracles["c"]


def test_attention_steps_are_priced(block):
    """schedule.py: a matmul of two activations runs its batch x M x K x N MACs on the array
    (its right operand read from the SRAM, not the weight memory); a CONST step moves its
    bytes from the weight memory."""
    _, module = block
    p, costs = module.program, module.build.costs
    for step, cost in zip(p.steps, costs):
        y = p.tensors[step.output]
        if step.kind is Kind.BATCH_MATMUL:
            k = p.tensors[step.inputs[0]].shape[-1]
            assert cost.macs == y.size * k and cost.weight_read == 0 and cost.cycles > 0
        elif step.kind is Kind.CONST:
            assert cost.weight_read == y.size and cost.sram_write == y.size


def test_attention_block_int8_sqnr_against_float(block):
    model, module = block
    db = sqnr_vs_float(module, model, inputs(2, 24, (1, SEQ, DIM)))
    print(f"{model.graph.name}: int8 output SQNR vs float {db:.1f} dB")
    assert db >= ATTENTION_SQNR_FLOOR_DB, db


def test_masked_keys_get_exactly_zero_probability(block):
    """The causal mask's -1e4 entries: probability code = the zero point (0.0), every row."""
    _, module = block
    p = module.program
    step = next(s for s in p.steps if s.kind is Kind.SOFTMAX)
    codes = run_reference(p, quantize_inputs(p, [inputs(3, 1, (1, SEQ, DIM))[0]]),
                          keep=True)[step.output]
    y = p.tensors[step.output]
    upper = np.triu(np.ones(codes.shape[-2:], bool), 1)
    assert np.all(codes[..., upper] == y.zero_point)
    rows = (codes.astype(np.float64) - y.zero_point).sum(axis=-1) * y.scale
    assert np.abs(rows - 1).max() <= codes.shape[-1] * y.scale / 2  # each rounds by <= 1/2
    assert codes[..., 0, 0].min() == 127  # the first query sees one key: probability 1


def _c_mismatches(module: sw2c.Module, lib: CExport, cases: list[list[np.ndarray]]) -> int:
    """Codes where the simulator (the integer reference on the planned arena) and the C
    library disagree, over ``cases``."""
    return sum(int(np.sum(module.run_int8(q)[0] != lib.run_int8(q)[0])) for q in cases)


def _cases(module: sw2c.Module, seed: int) -> list[list[np.ndarray]]:
    p = module.program
    rng = np.random.default_rng(seed)
    real = [quantize_inputs(p, [x]) for x in inputs(seed, 12, (1, SEQ, DIM))]
    codes = [[rng.integers(-128, 128, (1, SEQ, DIM), dtype=np.int8)] for _ in range(12)]
    return real + codes


@pytest.mark.skipif(CC is None, reason=f"needs a C compiler ({NO_CC})")
def test_c_export_equals_the_simulator_bit_for_bit(block):
    _, module = block
    with CExport(module.program, module.plan, "attention", CC) as lib:
        assert _c_mismatches(module, lib, _cases(module, 4)) == 0


def _truncating_requantize(acc, multiplier, shift, zero_point, lo=-128, hi=127):
    """requantize with the rounding offset dropped (a floor instead of round-to-nearest)."""
    total = 31 - np.asarray(shift, np.int64)
    y = (np.clip(np.asarray(acc, np.int64), -2**31, 2**31 - 1)
         * np.asarray(multiplier, np.int64)) >> total
    return np.clip(y + zero_point, lo, hi).astype(np.int8)


def _coarse_softmax(step, x, tx):
    """reference.softmax with the division truncated to the output's 2^-8 (floor(256 e /
    total)) before the requantization would round it (the Q30 bits below that never move a
    code of a 1/256 output: there is no finer perturbation to catch)."""
    return (reference.softmax(step, x, tx) >> 22) << 22


@pytest.fixture(scope="module")
def probabilities() -> sw2c.Module:
    """Q [1, 2, 16, 8] . K^T [1, 2, 8, 16], scaled, + a causal mask, softmax: the attention
    probabilities as the output, where a one-code difference cannot hide."""
    rng = np.random.default_rng(9)
    mask = np.triu(np.full((16, 16), -np.inf, np.float32), 1)[None, None]
    nodes = [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["q", "kt"], ["s"]),
             helper.make_node("Mul", ["s", "scale"], ["ss"]),
             helper.make_node("Add", ["ss", "mask"], ["sm"]),
             helper.make_node("Softmax", ["sm"], ["p"], axis=-1)]
    shape = [1, 2, 16, 8]
    model = helper.make_model(helper.make_graph(
        nodes, "probabilities",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("q", "k")],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, [1, 2, 16, 16])],
        [numpy_helper.from_array(np.array(8 ** -0.5, np.float32), "scale"),
         numpy_helper.from_array(mask, "mask")]), opset_imports=[helper.make_opsetid("", 17)])
    calib = [{"q": x, "k": y} for x, y in rng.standard_normal((16, 2, *shape)).astype(
        np.float32)]
    return sw2c.compile(model, target="asic", calibration=calib)


@pytest.mark.skipif(CC is None, reason=f"needs a C compiler ({NO_CC})")
@pytest.mark.parametrize("where", ["requantize", "softmax"])
def test_a_perturbed_rounding_is_caught(probabilities, monkeypatch, where):
    """The C == simulator comparison can fail: the simulator with one rounding changed (the
    requantization's, or the softmax's division) disagrees with the C export."""
    module = probabilities
    p = module.program
    rng = np.random.default_rng(10)
    cases = [quantize_inputs(p, list(x)) for x in rng.standard_normal(
        (16, 2, 1, 2, 16, 8)).astype(np.float32)]
    with CExport(p, module.plan, "probabilities", CC) as lib:
        assert _c_mismatches(module, lib, cases) == 0
        if where == "requantize":
            monkeypatch.setattr(reference, "requantize", _truncating_requantize)
        else:
            monkeypatch.setitem(reference.UNARY_STEPS, Kind.SOFTMAX, _coarse_softmax)
        assert _c_mismatches(module, lib, cases) > 0


def padding_mask_model(fill: float) -> onnx.ModelProto:
    """BERT's padding mask as a tensor: keep [1, S] (1 = token, 0 = padding) -> (1 - keep) *
    fill -> [1, 1, 1, S], added to the scores [1, 2, S, S] before the softmax."""
    seq, shape = 12, [1, 2, 12, 8]
    nodes = [helper.make_node("Sub", ["one", "keep"], ["pad"]),
             helper.make_node("Mul", ["pad", "fill"], ["bias"]),
             helper.make_node("Reshape", ["bias", "bias_shape"], ["bias4"]),
             helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["q", "kt"], ["s"]),
             helper.make_node("Add", ["s", "bias4"], ["sm"]),
             helper.make_node("Softmax", ["sm"], ["p"], axis=-1)]
    inits = {"one": np.array(1.0, np.float32), "fill": np.array(fill, np.float32),
             "bias_shape": np.array([1, 1, 1, seq], np.int64)}
    return helper.make_model(helper.make_graph(
        nodes, "padding",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("q", "k")]
        + [helper.make_tensor_value_info("keep", TensorProto.FLOAT, [1, seq])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, [1, 2, seq, seq])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()]),
        opset_imports=[helper.make_opsetid("", 17)])


def _padding_feeds(seed: int, count: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(count):
        keep = np.ones((1, 12), np.float32)
        keep[0, rng.integers(4, 12):] = 0  # padded from a random position
        q, k = rng.standard_normal((2, 1, 2, 12, 8)).astype(np.float32)
        feeds.append({"q": q, "k": k, "keep": keep})
    return feeds


@pytest.mark.parametrize("fill", [-1e4, float(np.finfo(np.float32).min)])
def test_a_padding_mask_tensor_is_the_softmax_second_input(fill):
    """-1e4 (BERT) or float32's lowest (transformers): padded keys get probability 0 exactly,
    the rest matches float; C and QDQ agree with the simulator (verify=True)."""
    model = padding_mask_model(fill)
    module = sw2c.compile(model, target="asic", calibration=_padding_feeds(11, 16),
                          verify=True)
    (softmax,) = [s for s in module.program.steps if s.kind is Kind.SOFTMAX]
    assert len(softmax.inputs) == 2 and "mask_rescale" in softmax.attrs
    if CC is not None:
        assert module.report["oracles"]["c"]["result"] == "bit-exact"
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    signal = noise = 0.0
    for feed in _padding_feeds(12, 8):
        got, want = module.run(feed)["p"], sess.run(None, feed)[0]
        padded = np.broadcast_to(feed["keep"][0] == 0, got.shape)
        assert np.all(got[padded] == 0)
        signal += float(np.sum(want.astype(np.float64) ** 2))
        noise += float(np.sum((got - want).astype(np.float64) ** 2))
    db = 10 * np.log10(signal / noise)
    print(f"padding mask {fill:g}: probabilities' SQNR vs float {db:.1f} dB")
    assert db >= PROBABILITY_SQNR_FLOOR_DB, db


def test_truncating_helper_differs_from_the_definition():
    """The perturbation is a real one: it is not the single rounding of fixed_point."""
    acc = np.arange(-1000, 1000)
    exact = multiply_by_quantized_multiplier(acc, np.int32(1 << 30), np.int32(-3))
    assert np.any(_truncating_requantize(acc, 1 << 30, -3, 0, -2**31, 2**31 - 1)
                  != np.clip(exact, -128, 127))


def test_softmax_over_1000_classes_takes_a_calibrated_scale(monkeypatch):
    """A flat 1000-class softmax (largest probability ~0.06): the fixed 1/256 ties a third
    of the rows (benchmarks/asic_softmax_scale.py); the calibrated scale keeps the float's
    argmax. A probability beyond its range saturates at the top code, by design."""
    classes = 1000
    model = helper.make_model(helper.make_graph(
        [helper.make_node("Softmax", ["a"], ["p"], axis=-1)], "head",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, classes])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, [1, classes])]),
        opset_imports=[helper.make_opsetid("", 17)])
    xs = inputs(6, 96, (1, classes))
    module = sw2c.compile(model, target="asic", calibration=xs[:64])
    (step,) = module.program.steps
    y = module.program.tensors[step.output]
    assert y.scale < 1 / 256 / 4 and y.zero_point == -128
    want = np.exp(xs[64:] - xs[64:].max(axis=-1, keepdims=True))
    want /= want.sum(axis=-1, keepdims=True)
    got = np.stack([module(x) for x in xs[64:]])
    agree = np.mean(got.argmax(axis=-1) == want.argmax(axis=-1))
    assert agree >= 0.9, agree
    assert np.median(np.abs(got - want)) < y.scale
    with monkeypatch.context() as m:  # the same head at TFLite's fixed 1/256
        m.setattr(lower, "softmax_params", lambda q: lower.SOFTMAX_OUT)
        # (verify=True refuses it: 5.5 dB against float, under the default floor)
        fixed = sw2c.compile(model, target="asic", calibration=xs[:64], verify=False)
    top = np.stack([fixed(x) for x in xs[64:]])
    assert np.mean(top.argmax(axis=-1) == want.argmax(axis=-1)) < agree


def test_vit_family_compiles_with_verify_and_reports_sqnr():
    """The ViT family (transformers' ViTModel, tiny): class token by concat, position
    embeddings by a constant add, two attention layers; LayerNorm and GELU lowered by the
    existing tables and pools."""
    model = zoo.family("hf_vit")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = sw2c.compile(model, target="asic:edge", verify=True,
                              calibration=inputs(7, 16, (3, 32, 32)))
    kinds = {s.kind for s in module.program.steps}
    assert {Kind.BATCH_MATMUL, Kind.CONST, Kind.SOFTMAX} <= kinds
    db = sqnr_vs_float(module, model, inputs(8, 6, (1, 3, 32, 32)))
    print(f"hf_vit: int8 output SQNR vs float {db:.1f} dB")
    assert db >= HF_VIT_SQNR_FLOOR_DB, db


def past_the_embedding(family: str) -> onnx.ModelProto:
    """A family model whose token ids (int64, a table lookup this target has no kernel for)
    are cut off: the embedding Gather's output becomes a float input [1, 16, 32], and BERT's
    int64 attention mask its cast, a float keep-mask [1, 1, 1, 16]."""
    model = zoo.family(family)
    g = model.graph
    shapes = {"/tok/Gather_output_0": [1, 16, 32], "/Cast_output_0": [1, 1, 1, 16]}
    cut = [n for n in shapes if any(n in node.output for node in g.node)]
    have = set(cut) | {t.name for t in g.initializer}
    alive = []
    for node in g.node:  # the nodes computable from the new inputs, in order
        if node.output[0] not in cut and all(not i or i in have for i in node.input):
            alive.append(node)
            have.update(node.output)
    del g.node[:]
    g.node.extend(alive)
    del g.input[:]
    g.input.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, shapes[n]) for n in cut)
    return model


def test_bert_encoder_past_its_embedding_compiles_with_its_padding_mask():
    """The BERT-like family's two post-norm layers after the embedding: the padding mask
    ((1 - keep) * -1e4, a tensor) is each softmax's second input; verify=True (C, QDQ)."""
    model = past_the_embedding("bert_encoder")
    rng = np.random.default_rng(13)

    def feed() -> dict[str, np.ndarray]:
        keep = np.ones((1, 1, 1, 16), np.float32)
        keep[..., rng.integers(6, 16):] = 0
        return {"/tok/Gather_output_0": rng.standard_normal((1, 16, 32)).astype(np.float32),
                "/Cast_output_0": keep}

    module = sw2c.compile(model, target="asic:edge", calibration=[feed() for _ in range(16)],
                          verify=True)
    softmax = [s for s in module.program.steps if s.kind is Kind.SOFTMAX]
    assert len(softmax) == 2 and all(len(s.inputs) == 2 for s in softmax)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    signal = noise = 0.0
    for _ in range(6):
        f = feed()
        want = sess.run(None, f)[0].astype(np.float64)
        got = np.asarray(module.run(f)["output"], np.float64)
        signal += float(np.sum(want ** 2))
        noise += float(np.sum((got - want) ** 2))
    db = 10 * np.log10(signal / noise)
    print(f"bert_encoder past the embedding: int8 output SQNR vs float {db:.1f} dB")
    assert db >= BERT_SQNR_FLOOR_DB, db


def test_a_constant_mask_keeps_its_fractions_of_a_code(monkeypatch):
    """A constant added before an int8 softmax (a bias, a LayerNorm's offset) rarely falls on
    whole input codes; rounding it moved probabilities by 1-2 output codes (soak seed 31978).
    Its fractions are Q15 weights on exp: every probability within 0.6 codes of float's on
    the same input codes, C and QDQ agreeing (verify=True); without them, further."""
    rng = np.random.default_rng(7)
    mask = (rng.standard_normal(9) * 0.3).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "m"], ["z"]),
         helper.make_node("Softmax", ["z"], ["p"], axis=-1)], "fractional_mask",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 9])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, [1, 6, 9])],
        [numpy_helper.from_array(mask, "m")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    module = sw2c.compile(model, target="asic", calibration=inputs(5, 16, (1, 6, 9)),
                          verify=True)
    p = module.program
    (step,) = [s for s in p.steps if s.kind is Kind.SOFTMAX]
    assert "mask_weight" in step.consts
    x, y = p.tensors[step.inputs[0]], p.tensors[step.output]

    def worst() -> float:
        worst = 0.0
        for feed in inputs(6, 8, (1, 6, 9)):
            env = run_reference(p, quantize_inputs(p, [feed]), keep=True)
            z = (env[x.name].astype(np.float64) - x.zero_point) * x.scale + mask
            e = np.exp(z - z.max(axis=-1, keepdims=True))
            ideal = e / e.sum(axis=-1, keepdims=True) / y.scale + y.zero_point
            worst = max(worst, float(np.abs(env[y.name] - np.clip(ideal, -128, 127)).max()))
        return worst

    with_weights = worst()
    monkeypatch.delitem(step.consts, "mask_weight")
    print(f"worst step error: {with_weights:.2f} codes, {worst():.2f} rounded to whole codes")
    assert with_weights <= 0.6 < worst()
