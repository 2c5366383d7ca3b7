"""The model families of issue 10 -- BERT-like and GPT-like transformers, ViT, LSTM and GRU
keyword spotters, U-Net, VAE decoder, DLRM, and Hugging Face BertModel / GPT2Model / ViTModel
-- exported from PyTorch by both exporters (examples/families/make_families.py; the .onnx
files are committed, so no torch here). Each compiles for the cpu target with verify=True and
must match onnxruntime on its saved, valid inputs (token ids inside the vocabulary, 0/1 masks).

A model that sw2c cannot compile yet is in ``XFAIL`` with the error it raises today; the mark
is strict, so the test fails as soon as the model works and the entry must be removed.

The table for a report (model, exporter, result)::

    python -m sw2c.tests.test_families
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import sw2c
from sw2c.errors import Sw2cError

FAMILIES = Path(__file__).resolve().parent.parent / "examples" / "families"
MANIFEST = json.loads((FAMILIES / "families.json").read_text())
MODELS = {m["name"]: m for m in MANIFEST["models"]}
RTOL = 1e-3  # as verify=True: relative to the largest |reference| of each output
MAX_BYTES, MAX_TOTAL = 2 << 20, 15 << 20

# name -> the error sw2c raises on it today (class: first words of the message)
XFAIL: dict[str, str] = {}


def reference(entry: dict, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    session = ort.InferenceSession(str(FAMILIES / entry["file"]), so,
                                   providers=["CPUExecutionProvider"])
    return dict(zip((o.name for o in session.get_outputs()), session.run(None, feeds)))


def compile_and_compare(entry: dict) -> None:
    """Compile ``entry`` with verify=True, run it on the saved inputs, compare with
    onnxruntime; raises the Sw2cError of a model sw2c refuses, AssertionError on a mismatch."""
    with np.load(FAMILIES / entry["inputs_file"]) as data:
        feeds = {i["name"]: data[i["name"]] for i in entry["inputs"]}
    shapes = {i["name"]: i["shape"] for i in entry["inputs"]}
    module = sw2c.compile(str(FAMILIES / entry["file"]), target="cpu", verify=True,
                          input_shapes=shapes)
    got, want = module.run(feeds), reference(entry, feeds)
    for name, ref in want.items():
        scale = max(float(np.max(np.abs(ref), initial=0.0)), 1e-6)
        np.testing.assert_allclose(got[name], ref, rtol=RTOL, atol=RTOL * scale,
                                   err_msg=f"{entry['name']}: output '{name}'")


def cases():
    for name in MODELS:
        marks = ([pytest.mark.xfail(strict=True, raises=Sw2cError, reason=XFAIL[name])]
                 if name in XFAIL else [])
        yield pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("name", cases())
def test_family_matches_onnxruntime(name):
    compile_and_compare(MODELS[name])


def test_xfail_names_committed_models():
    assert not set(XFAIL) - set(MODELS)


def test_manifest_covers_every_family_and_file():
    """Each family x exporter is a committed model or a recorded export failure, every .onnx
    in the folder is in the manifest, and the set stays small."""
    failed = {(f["family"], f["exporter"]) for f in MANIFEST["export_failures"]}
    exported = {(m["family"], m["exporter"]) for m in MODELS.values()}
    families = {m["family"] for m in MODELS.values()} | {f for f, _ in failed}
    assert not exported & failed
    assert exported | failed == {(f, e) for f in families for e in ("ts", "dynamo")}
    files = {p.name for p in FAMILIES.glob("*.onnx")}
    assert files == {m["file"] for m in MODELS.values()}
    sizes = [(FAMILIES / f).stat().st_size for f in files]
    assert max(sizes) < MAX_BYTES and sum(sizes) < MAX_TOTAL
    for m in MODELS.values():
        with np.load(FAMILIES / m["inputs_file"]) as data:
            for i in m["inputs"]:
                x = data[i["name"]]
                assert list(x.shape) == i["shape"] and str(x.dtype) == i["dtype"]
                assert i["valid"][0] <= x.min() and x.max() <= i["valid"][1]


def outcome(entry: dict) -> str:
    """'ok', or the error as 'Class: message' (first line)."""
    try:
        compile_and_compare(entry)
    except (Sw2cError, AssertionError) as e:
        first = (str(e).strip().splitlines() or [""])[0]
        return f"{type(e).__name__}: {first}"
    return "ok"


def main() -> int:
    """Print model, exporter, result for every committed model and each export failure;
    ``--xfail`` prints the XFAIL table for today's results instead."""
    import warnings

    warnings.simplefilter("ignore")
    rows = [(m["family"], m["exporter"], outcome(m)) for m in MODELS.values()]
    if "--xfail" in sys.argv:
        print("XFAIL = {")
        for (_, _, res), name in zip(rows, MODELS):
            if res != "ok":
                print(f"    {name!r}: {res[:80]!r},")
        print("}")
        return 0
    rows += [(f["family"], f["exporter"], f"export failed: {f['error']}")
             for f in MANIFEST["export_failures"]]
    width = max(len(r[0]) for r in rows)
    for fam, exp, res in sorted(rows):
        print(f"{fam:<{width}}  {exp:<6}  {res}")
    ok = sum(r[2] == "ok" for r in rows)
    print(f"{ok} of {len(rows)} ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
