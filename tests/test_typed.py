"""Integer and bool tensors end to end (issue 10): int64 ids and masks as graph inputs, embedding
lookups at run-time indices, comparisons, logic, Where and Cast, int and bool outputs;
compared with onnxruntime through sw2c.compile(verify=True), exported and loaded back."""

from __future__ import annotations

import ctypes
import subprocess

import numpy as np
import onnx
import pytest
import sw2c
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh
from sw2c.runtime.verify import reference_session

V, D, S = 50, 16, 8


def embedding_model() -> onnx.ModelProto:
    """Token + position embeddings, a padding mask turned into an additive bias, and int/bool
    outputs: what the front of a BERT-like encoder computes."""
    rng = np.random.default_rng(0)
    nodes = [
        h.make_node("Gather", ["table", "ids"], ["e"], name="embed"),
        h.make_node("Add", ["e", "pos"], ["x"]),
        h.make_node("Cast", ["mask"], ["mf"], to=T.FLOAT),
        h.make_node("Unsqueeze", ["mf", "ax"], ["m3"]),
        h.make_node("Mul", ["x", "m3"], ["y"]),
        h.make_node("Equal", ["mask", "zero"], ["pad"]),
        h.make_node("Where", ["pad", "ninf", "zf"], ["bias"]),
        h.make_node("Greater", ["ids", "ten"], ["big"]),
        h.make_node("Not", ["big"], ["small"]),
        h.make_node("And", ["small", "pad"], ["both"]),
        h.make_node("Cast", ["both"], ["si"], to=T.INT32),
        h.make_node("Sub", ["ids", "ten"], ["shifted"]),
        h.make_node("Div", ["shifted", "three"], ["q"]),
    ]
    inits = [nh.from_array(rng.standard_normal((V, D)).astype(np.float32), "table"),
             nh.from_array(rng.standard_normal((1, S, D)).astype(np.float32), "pos"),
             nh.from_array(np.array([2], np.int64), "ax"),
             nh.from_array(np.array(0, np.int64), "zero"),
             nh.from_array(np.array(-1e4, np.float32), "ninf"),
             nh.from_array(np.array(0, np.float32), "zf"),
             nh.from_array(np.array(10, np.int64), "ten"),
             nh.from_array(np.array(3, np.int64), "three")]
    inputs = [h.make_tensor_value_info("ids", T.INT64, [1, S]),
              h.make_tensor_value_info("mask", T.INT64, [1, S])]
    outputs = [h.make_tensor_value_info("y", T.FLOAT, [1, S, D]),
               h.make_tensor_value_info("bias", T.FLOAT, [1, S]),
               h.make_tensor_value_info("si", T.INT32, [1, S]),
               h.make_tensor_value_info("big", T.BOOL, [1, S]),
               h.make_tensor_value_info("q", T.INT64, [1, S])]
    graph = h.make_graph(nodes, "emb", inputs, outputs, inits)
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])


def feeds(seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"ids": rng.integers(0, V, (1, S)).astype(np.int64),
            "mask": np.array([[1] * 5 + [0] * 3], np.int64)}


def check(module: sw2c.Module, model: onnx.ModelProto, x: dict[str, np.ndarray]) -> None:
    got = module.run(x)
    for (name, _, dtype), want in zip(module.outputs, reference_session(model).run(None, x)):
        assert got[name].dtype == want.dtype == np.dtype(dtype), name
        np.testing.assert_allclose(got[name], want, rtol=1e-6, err_msg=name)


@pytest.mark.parametrize("threads", [1, 2])
def test_ids_masks_and_typed_outputs_match_onnxruntime(threads):
    m = embedding_model()
    module = sw2c.compile(m, threads=threads)  # verify=True draws ids below the table size
    assert module.input_ranges == {"ids": V}
    assert [d for _, _, d in module.inputs] == ["int64", "int64"]
    assert [d for _, _, d in module.outputs] == ["float32", "float32", "int32", "bool", "int64"]
    check(module, m, feeds())


def test_out_of_range_ids_are_clamped_never_read_outside():
    module = sw2c.compile(embedding_model(), verify=False)
    x = feeds()
    x["ids"][0, :3] = [10**12, -10**12, V]  # ONNX leaves these undefined
    y = module.run(x)["y"]
    want = sw2c.ir.run(module.graph, x)["y"]  # the interpreter clamps too
    np.testing.assert_array_equal(y, want)


def test_int_feeds_are_validated():
    module = sw2c.compile(embedding_model(), verify=False)
    x = feeds()
    with pytest.raises(sw2c.InputError, match="input 'ids' has dtype float32; this model takes "
                                              "int64"):
        module.run({**x, "ids": x["ids"].astype(np.float32)})
    with pytest.raises(sw2c.InputError, match="input 'mask'"):
        module(x["ids"], x["mask"][:, :4])


def test_verify_inputs_replace_the_random_ones():
    m = embedding_model()
    module = sw2c.compile(m, verify_inputs=feeds(3))
    assert module.report["verification_error"] == 0.0
    with pytest.raises(sw2c.InputError, match="verify_inputs lacks input 'mask'"):
        sw2c.compile(m, verify_inputs={"ids": feeds()["ids"]})


def test_a_wrong_int_output_is_caught(monkeypatch):
    from sw2c.backends.cpu import dtypes

    right = dtypes.emit_int_binary

    def off_by_one(b, fn, x, y, unsigned=False):
        out = right(b, fn, x, y, unsigned)
        return b.add(out, dtypes._splat_int(out.type, 1)) if fn.value == "div" else out

    monkeypatch.setattr(dtypes, "emit_int_binary", off_by_one)
    with pytest.raises(sw2c.VerificationError, match="output 'q' \\(int64\\) differs"):
        sw2c.compile(embedding_model())


def test_export_declares_c_types_and_runs(tmp_path):
    module = sw2c.compile(embedding_model(), verify=False, name="emb")
    module.export(tmp_path)
    header = (tmp_path / "emb.h").read_text()
    assert "int emb_run(const int64_t *ids, const int64_t *mask, float *y, float *bias, " \
           "int32_t *si, uint8_t *big, int64_t *q);" in header
    loaded = sw2c.load(tmp_path)
    x = feeds()
    for name, want in module.run(x).items():
        np.testing.assert_array_equal(loaded.run(x)[name], want)
    probe = tmp_path / "probe.c"  # the header compiles as C99 with the types it names
    probe.write_text('#include "emb.h"\nint main(void) { return 0; }\n')
    subprocess.run(["cc", "-std=c99", "-c", str(probe), "-o", str(tmp_path / "probe.o"),
                    f"-I{tmp_path}"], check=True)
    assert ctypes.CDLL(str(tmp_path / "libemb.so"))
