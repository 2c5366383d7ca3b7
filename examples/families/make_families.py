"""Write the model-family test set (issue 10): small models of each family sw2c must compile,
exported from PyTorch with random weights and fixed seeds.

torch, transformers and onnxscript are NOT dependencies of sw2c: run this script from a
separate virtual environment; the .onnx files it writes are committed, so the test suite
(tests/test_families.py) needs no torch::

    python3 -m venv /tmp/torchenv
    /tmp/torchenv/bin/pip install torch transformers onnx onnxscript onnxruntime numpy
    /tmp/torchenv/bin/python examples/families/make_families.py

For each family it writes, next to this script:

- ``<family>.ts.onnx``: torch.onnx.export(..., dynamo=False) (the TorchScript exporter)
- ``<family>.dynamo.onnx``: torch.onnx.export(..., dynamo=True)
- ``<family>.npz``: one sample of valid inputs (token ids below the vocabulary size, 0/1
  attention masks with padding at the end), keyed by input name (both exporters use the
  forward() argument names)
- ``families.json``: the manifest -- per model its family, exporter, file, inputs (name,
  dtype, shape, valid range) and outputs; per failed export the exporter's own error

Every model is exported at opset 17 with static shapes (batch 1 except DLRM's batch 4, fixed
sequence length), as a user compiling ahead of time for one shape would. Hugging Face models
are built from tiny configs (random weights; nothing is downloaded from any hub).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import sys
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn
from torch.nn import functional as F

HERE = Path(__file__).resolve().parent
OPSET = 17
MAX_BYTES = 2 << 20  # per model file: the whole set stays a few MB
SEQ = 16  # tokens per sequence
VOCAB = 128
PAD_FROM = 11  # the attention masks mark tokens 11.. as padding


# --- hand-written models ------------------------------------------------------------------
class Attention(nn.Module):
    """Multi-head self-attention with an additive mask (0 keep, large negative drop)."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads, self.dh = heads, d // heads
        self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, self.dh).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.dh) + bias
        return self.out((scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """A transformer layer: post-norm (BERT) or pre-norm (GPT, ViT), exact erf GELU."""

    def __init__(self, d: int, heads: int, pre_norm: bool) -> None:
        super().__init__()
        self.pre_norm = pre_norm
        self.attn = Attention(d, heads)
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.attn(self.ln1(x), bias)
            return x + self.mlp(self.ln2(x))
        x = self.ln1(x + self.attn(x, bias))
        return self.ln2(x + self.mlp(x))


class BertEncoder(nn.Module):
    """Token + position embeddings, 2 post-norm layers; the padding mask becomes an additive
    bias (1 - mask) * -10000 as in BERT."""

    def __init__(self, d: int = 32, heads: int = 4, layers: int = 2) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(VOCAB, d), nn.Embedding(SEQ, d)
        self.ln = nn.LayerNorm(d)
        self.blocks = nn.ModuleList(Block(d, heads, pre_norm=False) for _ in range(layers))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(input_ids.shape[1])
        x = self.ln(self.tok(input_ids) + self.pos(pos))
        bias = (1.0 - attention_mask[:, None, None, :].float()) * -10000.0
        for block in self.blocks:
            x = block(x, bias)
        return x


class GptDecoder(nn.Module):
    """Pre-norm decoder with a causal mask (masked_fill with -inf) and a tied LM head."""

    def __init__(self, d: int = 32, heads: int = 4, layers: int = 2) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(VOCAB, d), nn.Embedding(SEQ, d)
        self.blocks = nn.ModuleList(Block(d, heads, pre_norm=True) for _ in range(layers))
        self.ln = nn.LayerNorm(d)
        self.register_buffer("causal", torch.tril(torch.ones(SEQ, SEQ, dtype=torch.bool)))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        t = input_ids.shape[1]
        x = self.tok(input_ids) + self.pos(torch.arange(t))
        bias = torch.zeros(t, t).masked_fill(~self.causal[:t, :t], float("-inf"))
        for block in self.blocks:
            x = block(x, bias)
        return self.ln(x) @ self.tok.weight.T


class VisionTransformer(nn.Module):
    """Patch embedding by a strided Conv, class token, learned positions, 2 pre-norm layers."""

    def __init__(self, d: int = 32, heads: int = 4, layers: int = 2, patch: int = 8,
                 image: int = 32, classes: int = 10) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, d, patch, stride=patch)
        self.cls = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, d) * 0.02)
        self.blocks = nn.ModuleList(Block(d, heads, pre_norm=True) for _ in range(layers))
        self.ln, self.head = nn.LayerNorm(d), nn.Linear(d, classes)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.embed(pixel_values).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        bias = torch.zeros(())
        for block in self.blocks:
            x = block(x, bias)
        return self.head(self.ln(x[:, 0]))


class KeywordSpotter(nn.Module):
    """A recurrent keyword spotter on 49 frames of 10 MFCCs (the Speech Commands setting):
    2 stacked layers, classify the last step into 12 keywords."""

    def __init__(self, cell: type[nn.RNNBase], hidden: int = 32, classes: int = 12) -> None:
        super().__init__()
        self.rnn = cell(10, hidden, num_layers=2, batch_first=True)
        self.fc = nn.Linear(hidden, classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(features)
        return self.fc(out[:, -1])


def conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())


class UNet(nn.Module):
    """Two-level U-Net: max-pool down, ConvTranspose up at the lower level and bilinear Resize
    up at the upper one, skip connections by Concat, a per-pixel 2-class head."""

    def __init__(self, c: int = 8, classes: int = 2) -> None:
        super().__init__()
        self.enc1, self.enc2, self.mid = conv_block(3, c), conv_block(c, 2 * c), conv_block(
            2 * c, 4 * c)
        self.up2 = nn.ConvTranspose2d(4 * c, 2 * c, 2, stride=2)
        self.dec2 = conv_block(4 * c, 2 * c)
        self.dec1 = conv_block(3 * c, c)
        self.head = nn.Conv2d(c, classes, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(image)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        m = self.mid(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(m), e2], 1))
        up = F.interpolate(d2, scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.head(self.dec1(torch.cat([up, e1], 1)))


class VaeDecoder(nn.Module):
    """A VAE decoder: latent -> Linear -> 4x4 feature map -> three stride-2 ConvTranspose
    (with BatchNorm, LeakyReLU) and a nearest 2x Upsample -> 1x64x64 sigmoid image."""

    def __init__(self, latent: int = 16, c: int = 32) -> None:
        super().__init__()
        self.c = c
        self.fc = nn.Linear(latent, c * 16)

        def up(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1),
                                 nn.BatchNorm2d(cout), nn.LeakyReLU(0.2))

        self.net = nn.Sequential(up(c, c), up(c, c // 2), up(c // 2, c // 4),
                                 nn.Upsample(scale_factor=2, mode="nearest"),
                                 nn.Conv2d(c // 4, 1, 3, padding=1), nn.Sigmoid())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(z).reshape(-1, self.c, 4, 4))


DLRM_TABLES = (50, 40, 30, 20)  # rows per embedding table
DLRM_BATCH = 4


class Dlrm(nn.Module):
    """DLRM: bottom MLP on 13 dense features, one id per sparse feature into each embedding
    table, pairwise dot-product interaction (upper triangle), top MLP, click probability."""

    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.bottom = nn.Sequential(nn.Linear(13, 32), nn.ReLU(), nn.Linear(32, d), nn.ReLU())
        self.tables = nn.ModuleList(nn.Embedding(n, d) for n in DLRM_TABLES)
        f = len(DLRM_TABLES) + 1
        self.register_buffer("pairs", torch.triu_indices(f, f, offset=1))
        self.top = nn.Sequential(nn.Linear(d + f * (f - 1) // 2, 32), nn.ReLU(), nn.Linear(32, 1),
                                 nn.Sigmoid())

    def forward(self, dense: torch.Tensor, sparse_ids: torch.Tensor) -> torch.Tensor:
        x = self.bottom(dense)
        feats = torch.stack([x] + [t(sparse_ids[:, i]) for i, t in enumerate(self.tables)], 1)
        dots = feats @ feats.transpose(1, 2)
        inter = dots[:, self.pairs[0], self.pairs[1]]
        return self.top(torch.cat([x, inter], 1))


# --- Hugging Face models from tiny configs ------------------------------------------------
class HfBert(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        from transformers import BertConfig, BertModel

        self.model = BertModel(BertConfig(
            vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=64, attn_implementation="eager"),
            add_pooling_layer=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


class HfGpt2(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        from transformers import GPT2Config, GPT2Model

        self.model = GPT2Model(GPT2Config(
            vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=2, n_positions=64, bos_token_id=0,
            eos_token_id=0,
            attn_implementation="eager"))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # with the mask passed, as a user batching padded prompts does (without it
        # transformers' packed-sequence check needs aten::diff, which TorchScript cannot export)
        return self.model(input_ids=input_ids, attention_mask=attention_mask,
                          use_cache=False).last_hidden_state


class HfVit(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        from transformers import ViTConfig, ViTModel

        self.model = ViTModel(ViTConfig(
            image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
            num_attention_heads=2, intermediate_size=64, attn_implementation="eager"),
            add_pooling_layer=False)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).last_hidden_state


# --- the set ------------------------------------------------------------------------------
@dataclass
class Input:
    """One model input: its sample and the range of values that are valid for it."""

    name: str
    sample: np.ndarray
    valid: list[float]  # [low, high] inclusive


@dataclass
class Family:
    name: str
    kind: str  # what the family stands for, for the report
    build: Callable[[], nn.Module]
    inputs: Callable[[np.random.Generator], list[Input]]
    outputs: list[str] = field(default_factory=lambda: ["output"])


def ids(rng: np.random.Generator, name: str = "input_ids", high: int = VOCAB) -> Input:
    return Input(name, rng.integers(0, high, (1, SEQ), dtype=np.int64), [0, high - 1])


def padding_mask() -> Input:
    mask = np.ones((1, SEQ), np.int64)
    mask[:, PAD_FROM:] = 0
    return Input("attention_mask", mask, [0, 1])


def floats(rng: np.random.Generator, name: str, shape: tuple[int, ...],
           low: float = -1.0, high: float = 1.0) -> Input:
    return Input(name, rng.uniform(low, high, shape).astype(np.float32), [low, high])


def dlrm_inputs(rng: np.random.Generator) -> list[Input]:
    """Dense features in [0, 1]; ids valid for every table (below the smallest one's rows)."""
    rows = min(DLRM_TABLES)
    sparse = rng.integers(0, rows, (DLRM_BATCH, len(DLRM_TABLES)), dtype=np.int64)
    return [floats(rng, "dense", (DLRM_BATCH, 13), 0.0, 1.0),
            Input("sparse_ids", sparse, [0, rows - 1])]


FAMILIES = [
    Family("bert_encoder", "BERT-like encoder, padding mask", BertEncoder,
           lambda rng: [ids(rng), padding_mask()]),
    Family("gpt_decoder", "GPT-like decoder, causal mask", GptDecoder, lambda rng: [ids(rng)]),
    Family("vit", "vision transformer", VisionTransformer,
           lambda rng: [floats(rng, "pixel_values", (1, 3, 32, 32))]),
    Family("lstm_kws", "LSTM keyword spotter", lambda: KeywordSpotter(nn.LSTM),
           lambda rng: [floats(rng, "features", (1, 49, 10))]),
    Family("gru_kws", "GRU keyword spotter", lambda: KeywordSpotter(nn.GRU),
           lambda rng: [floats(rng, "features", (1, 49, 10))]),
    Family("unet", "U-Net, ConvTranspose and Resize", UNet,
           lambda rng: [floats(rng, "image", (1, 3, 32, 32))]),
    Family("vae_decoder", "VAE decoder", VaeDecoder,
           lambda rng: [floats(rng, "z", (1, 16), -2.0, 2.0)]),
    Family("dlrm", "DLRM, embedding tables", Dlrm, dlrm_inputs),
    Family("hf_bert", "transformers BertModel (tiny config)", HfBert,
           lambda rng: [ids(rng), padding_mask()]),
    Family("hf_gpt2", "transformers GPT2Model (tiny config)", HfGpt2,
           lambda rng: [ids(rng), padding_mask()]),
    Family("hf_vit", "transformers ViTModel (tiny config)", HfVit,
           lambda rng: [floats(rng, "pixel_values", (1, 3, 32, 32))]),
]

EXPORTERS = ("ts", "dynamo")
DYNAMO_OPSET = 18  # what the dynamo exporter builds before converting down to OPSET


def export(module: nn.Module, args: tuple[torch.Tensor, ...], fam: Family, exporter: str,
           path: Path, opset: int = OPSET) -> None:
    """Export at ``opset`` into one self-contained file; the exporters' chatter is swallowed."""
    names = [i.name for i in fam.inputs(np.random.default_rng(0))]
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), \
            contextlib.redirect_stderr(sink):
        warnings.simplefilter("ignore")
        if exporter == "ts":
            torch.onnx.export(module, args, str(path), dynamo=False, opset_version=opset,
                              input_names=names, output_names=fam.outputs,
                              do_constant_folding=True)
            return
        program = torch.onnx.export(module, args, dynamo=True, opset_version=opset,
                                    input_names=names, output_names=fam.outputs,
                                    verbose=False)
        program.optimize()
        onnx.save(program.model_proto, str(path))


def value_info(vi: onnx.ValueInfoProto) -> dict:
    tt = vi.type.tensor_type
    return {"name": vi.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name,
            "shape": [d.dim_value if d.HasField("dim_value") else d.dim_param
                      for d in tt.shape.dim]}


def check_runs(path: Path, feeds: dict[str, np.ndarray], want: list[np.ndarray]) -> None:
    """The exported file must load, pass the checker and agree with PyTorch on onnxruntime:
    a file that does not is the exporter's failure, not a test of sw2c."""
    import onnxruntime as ort

    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-4)


def make(fam: Family, manifest: dict) -> None:
    torch.manual_seed(0)
    module = fam.build().eval()
    inputs = fam.inputs(np.random.default_rng(0))
    feeds = {i.name: i.sample for i in inputs}
    np.savez(HERE / f"{fam.name}.npz", **feeds)
    args = tuple(torch.from_numpy(i.sample) for i in inputs)
    with torch.no_grad():
        out = module(*args)
    want = [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]
    for exporter in EXPORTERS:
        path = HERE / f"{fam.name}.{exporter}.onnx"
        path.unlink(missing_ok=True)
        opset = OPSET
        try:
            with torch.no_grad():
                export(module, args, fam, exporter, path)
            try:
                check_runs(path, feeds, want)
            except onnx.checker.ValidationError:
                if exporter != "dynamo":
                    raise
                # the dynamo exporter builds opset 18 and down-converts; where the result is
                # not a valid opset-17 model (GPT2: Split keeps num_outputs), take its own 18
                opset = DYNAMO_OPSET
                with torch.no_grad():
                    export(module, args, fam, exporter, path, opset)
                check_runs(path, feeds, want)
            size = path.stat().st_size
            if size > MAX_BYTES:
                raise ValueError(f"{path.name} is {size} bytes, over {MAX_BYTES}")
        except Exception as e:  # the exporter's (or its output's) failure: record it
            path.unlink(missing_ok=True)
            first = (str(e).strip().splitlines() or [""])[0][:300]
            manifest["export_failures"].append({"family": fam.name, "exporter": exporter,
                                                "error": f"{type(e).__name__}: {first}"})
            print(f"  {fam.name} [{exporter}]: EXPORT FAILED {type(e).__name__}: {first}")
            if "-v" in sys.argv:
                traceback.print_exc()
            continue
        model = onnx.load(str(path))
        valid = {i.name: i.valid for i in inputs}
        ins = [value_info(vi) | {"valid": valid[vi.name]} for vi in model.graph.input]
        manifest["models"].append({
            "name": f"{fam.name}.{exporter}", "family": fam.name, "kind": fam.kind,
            "exporter": exporter, "file": path.name, "inputs_file": f"{fam.name}.npz",
            "opset": opset, "bytes": size, "inputs": ins,
            "outputs": [value_info(vi) for vi in model.graph.output]})
        print(f"  {path.name}: {size / 1024:.0f} KiB, {len(model.graph.node)} nodes")


def main() -> int:
    """Write every family next to this script; ``-v`` prints export tracebacks."""
    torch.set_num_threads(1)
    manifest: dict = {"generator": "examples/families/make_families.py",
                      "torch": torch.__version__, "opset": OPSET, "models": [],
                      "export_failures": []}
    for package in ("transformers", "onnxscript"):
        with contextlib.suppress(ImportError):
            manifest[package] = __import__(package).__version__
    only = [a for a in sys.argv[1:] if not a.startswith("-")]
    for fam in FAMILIES:
        if not only or fam.name in only:
            print(fam.name)
            make(fam, manifest)
    if only:  # merge into the existing manifest
        old = json.loads((HERE / "families.json").read_text())
        keep = [m for m in old["models"] if m["family"] not in only]
        fails = [f for f in old["export_failures"] if f["family"] not in only]
        manifest["models"] = sorted(keep + manifest["models"], key=lambda m: m["name"])
        manifest["export_failures"] = fails + manifest["export_failures"]
    (HERE / "families.json").write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum(m["bytes"] for m in manifest["models"])
    print(f"{len(manifest['models'])} models ({total / 1024:.0f} KiB), "
          f"{len(manifest['export_failures'])} export failures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
