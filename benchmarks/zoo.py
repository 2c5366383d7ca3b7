"""Benchmark models: exporter-style ONNX graphs with seeded random weights.

Every builder returns a checked `onnx.ModelProto` (float32, batch 1). Weights are drawn with
sensible scales (He-normal convolutions and linear layers, near-identity batch norms, small
gammas on the last batch norm of each residual branch) so activations stay O(1) through the
whole network, like in a trained model, rather than vanishing or exploding.

The hand-built models (`mlp`, `lenet`, `mobilenet_v2`, `mobilenet_v3`, `efficientnet`, `resnet`,
`resnet50`) are opset 17 and mimic what `torch.onnx.export` emits for the torchvision definitions
(Conv without bias before BatchNormalization, relu6 as Clip with constant min/max inputs, SiLU
as x * Sigmoid(x), HardSwish/HardSigmoid ops, squeeze-and-excite as GlobalAveragePool + two 1x1
Conv + gate + Mul, GlobalAveragePool + Flatten + Gemm head). Networks whose activations shrink
more than ReLU's get a little more gain (SILU_GAIN) and squeeze-excite gates start mostly open
(SE_GATE_BIAS). `light(name)` loads one of the "light" model-zoo graphs shipped in the onnx wheel
(real topologies, opset 9, whose weights are ConstantOfShape(0.02) stubs) and gives it random
weights with `randomize_weights`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from functools import partial

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # modern enough for initializers outside graph.input, old enough for any runtime

LIGHT_DIR = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")

RESIDUAL_GAMMA = (0.1, 0.3)  # gamma range of the batch norm that closes a residual branch
GAMMA = (0.5, 1.0)

# torchvision MobileNetV2 inverted residuals: (expansion t, channels c, repeats n, stride s)
MOBILENET_V2_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
    (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)


# --------------------------------------------------------------------------- initializers


def he_normal(rng: np.random.Generator, shape: Sequence[int], fan_in: int) -> np.ndarray:
    """He-normal weights: std sqrt(2 / fan_in) keeps the variance through conv/linear + relu."""
    w = rng.standard_normal(tuple(shape), dtype=np.float32)
    w *= np.float32(np.sqrt(2.0 / max(fan_in, 1)))
    return w


def small_normal(rng: np.random.Generator, shape: Sequence[int], std: float = 0.05) -> np.ndarray:
    """Small zero-mean values, for biases and shifts."""
    w = rng.standard_normal(tuple(shape), dtype=np.float32)
    w *= np.float32(std)
    return w


def uniform(rng: np.random.Generator, shape: Sequence[int], low: float, high: float) -> np.ndarray:
    """Uniform float32 values in [low, high)."""
    return rng.uniform(low, high, tuple(shape)).astype(np.float32)


def bn_params(
    rng: np.random.Generator, c: int, gamma: tuple[float, float] = GAMMA
) -> tuple[np.ndarray, ...]:
    """Near-identity inference batch norm parameters: (scale, bias, running mean, running var)."""
    return (
        uniform(rng, (c,), *gamma),
        small_normal(rng, (c,), 0.1),
        small_normal(rng, (c,), 0.1),
        uniform(rng, (c,), 0.5, 1.5),
    )


# --------------------------------------------------------------------------- graph builder


class GraphBuilder:
    """Accumulates nodes and initializers with torch.onnx-style names, then makes a model."""

    def __init__(self, name: str, seed: int) -> None:
        self.name = name
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self._counts: dict[str, int] = {}

    def weight(self, name: str, array: np.ndarray) -> str:
        """Add an initializer and return its name."""
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op: str, inputs: Sequence[str], scope: str = "", **attrs: object) -> str:
        """Add a single-output node named like the torch exporter does; return its output."""
        base = f"{scope}/{op}" if scope else f"/{op}"
        k = self._counts.get(base, 0)
        self._counts[base] = k + 1
        name = base if k == 0 else f"{base}_{k}"
        out = f"{name}_output_0"
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=name, **attrs))
        return out

    def conv(
        self, x: str, scope: str, cin: int, cout: int, k: int, *,
        stride: int = 1, pad: int | None = None, group: int = 1, bias: bool = False,
    ) -> str:
        """Conv2d with He-normal weights (optional bias), square kernel, 'same'-style padding."""
        pad = k // 2 if pad is None else pad
        fan_in = cin // group * k * k
        inputs = [self.weight(f"{scope}.weight", he_normal(self.rng, (cout, cin // group, k, k),
                                                           fan_in))]
        if bias:
            inputs.append(self.weight(f"{scope}.bias", small_normal(self.rng, (cout,))))
        return self.node("Conv", [x, *inputs], f"/{scope}", kernel_shape=[k, k],
                         strides=[stride, stride], pads=[pad] * 4, group=group,
                         dilations=[1, 1])

    def batchnorm(self, x: str, scope: str, c: int, gamma: tuple[float, float] = GAMMA) -> str:
        """Inference BatchNormalization with near-identity random statistics."""
        names = ("weight", "bias", "running_mean", "running_var")
        params = [self.weight(f"{scope}.{n}", a)
                  for n, a in zip(names, bn_params(self.rng, c, gamma), strict=True)]
        return self.node("BatchNormalization", [x, *params], f"/{scope}", epsilon=1e-5,
                         momentum=0.9)

    def relu(self, x: str, scope: str) -> str:
        """Relu."""
        return self.node("Relu", [x], f"/{scope}")

    def relu6(self, x: str, scope: str) -> str:
        """relu6 the way torch exports it: Clip with scalar min/max initializers."""
        lo = self._scalar("clip_min", 0.0)
        hi = self._scalar("clip_max", 6.0)
        return self.node("Clip", [x, lo, hi], f"/{scope}")

    def _scalar(self, name: str, value: float) -> str:
        """A shared scalar float initializer."""
        if not any(t.name == name for t in self.initializers):
            self.weight(name, np.array(value, dtype=np.float32))
        return name

    def max_pool(self, x: str, scope: str, k: int, stride: int, pad: int = 0) -> str:
        """MaxPool2d."""
        return self.node("MaxPool", [x], f"/{scope}", kernel_shape=[k, k],
                         strides=[stride, stride], pads=[pad] * 4)

    def add(self, a: str, b: str, scope: str) -> str:
        """Elementwise Add (residual)."""
        return self.node("Add", [a, b], f"/{scope}")

    def head(self, x: str, cin: int, classes: int, scope: str = "fc") -> str:
        """GlobalAveragePool + Flatten + Gemm classifier."""
        x = self.node("GlobalAveragePool", [x], "/avgpool")
        x = self.node("Flatten", [x], "", axis=1)
        return self.gemm(x, scope, cin, classes)

    def gemm(self, x: str, scope: str, fin: int, fout: int) -> str:
        """Linear layer as torch exports it: Gemm with transB=1."""
        w = self.weight(f"{scope}.weight", he_normal(self.rng, (fout, fin), fin))
        b = self.weight(f"{scope}.bias", small_normal(self.rng, (fout,)))
        return self.node("Gemm", [x, w, b], f"/{scope}", alpha=1.0, beta=1.0, transB=1)

    def model(self, input_shape: Sequence[int], x_in: str, y: str, y_shape: Sequence[int]
              ) -> onnx.ModelProto:
        """Close the graph: rename the ends to input/output, check and return the model."""
        self._rename(x_in, "input")
        self._rename(y, "output")
        graph = helper.make_graph(
            self.nodes, self.name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(input_shape))],
            [helper.make_tensor_value_info("output", TensorProto.FLOAT, list(y_shape))],
            initializer=self.initializers,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="sw2c.benchmarks.zoo")
        model.ir_version = IR_VERSION
        onnx.checker.check_model(model)
        return model

    def _rename(self, old: str, new: str) -> None:
        """Rename a tensor everywhere it appears as a node input or output."""
        for n in self.nodes:
            for seq in (n.input, n.output):
                for i, name in enumerate(seq):
                    if name == old:
                        seq[i] = new


# --------------------------------------------------------------------------- small models


def mlp(seed: int = 0) -> onnx.ModelProto:
    """Digits MLP 64-128-64-10 (Gemm + Relu), input [1, 64]."""
    g = GraphBuilder("mlp", seed)
    x = "x"
    sizes = (64, 128, 64, 10)
    for i, (fin, fout) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        x = g.gemm(x, f"fc{i + 1}", fin, fout)
        if i < len(sizes) - 2:
            x = g.relu(x, f"relu{i + 1}")
    return g.model([1, 64], "x", x, [1, 10])


def lenet(seed: int = 0) -> onnx.ModelProto:
    """LeNet-5 on [1, 1, 28, 28]: 2x (conv5x5 + relu + maxpool2), flatten, 3 Gemm layers."""
    g = GraphBuilder("lenet", seed)
    x = g.conv("x", "conv1", 1, 6, 5, pad=2, bias=True)     # 28x28
    x = g.max_pool(g.relu(x, "relu1"), "pool1", 2, 2)       # 14x14
    x = g.conv(x, "conv2", 6, 16, 5, pad=0, bias=True)      # 10x10
    x = g.max_pool(g.relu(x, "relu2"), "pool2", 2, 2)       # 5x5
    x = g.node("Flatten", [x], "", axis=1)
    x = g.relu(g.gemm(x, "fc1", 16 * 5 * 5, 120), "relu3")
    x = g.relu(g.gemm(x, "fc2", 120, 84), "relu4")
    x = g.gemm(x, "fc3", 84, 10)
    return g.model([1, 1, 28, 28], "x", x, [1, 10])


# --------------------------------------------------------------------------- MobileNetV2


def make_divisible(v: float, divisor: int = 8) -> int:
    """torchvision's channel rounding: nearest multiple of divisor, never below 90% of v."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def _project(g: GraphBuilder, x: str, y: str, scope: str, hidden: int, cin: int, cout: int,
             stride: int) -> str:
    """An inverted residual's end: 1x1 project + BN, plus the block's input when the shape is
    kept (that BN then starts small, like a trained residual branch's)."""
    y = g.conv(y, f"{scope}.project", hidden, cout, 1)
    residual = stride == 1 and cin == cout
    y = g.batchnorm(y, f"{scope}.project_bn", cout, RESIDUAL_GAMMA if residual else GAMMA)
    return g.add(x, y, scope) if residual else y


def inverted_residual(g: GraphBuilder, x: str, scope: str, cin: int, cout: int, stride: int,
                      expand: int) -> str:
    """MobileNetV2 block: 1x1 expand + BN + relu6, 3x3 depthwise + BN + relu6, 1x1 project + BN,
    plus a residual Add when the shape is preserved."""
    hidden = cin * expand
    y = x
    if expand != 1:
        y = g.conv(y, f"{scope}.expand", cin, hidden, 1)
        y = g.relu6(g.batchnorm(y, f"{scope}.expand_bn", hidden), f"{scope}.expand_relu")
    y = g.conv(y, f"{scope}.dw", hidden, hidden, 3, stride=stride, group=hidden)
    y = g.relu6(g.batchnorm(y, f"{scope}.dw_bn", hidden), f"{scope}.dw_relu")
    return _project(g, x, y, scope, hidden, cin, cout, stride)


def mobilenet_v2(
    seed: int = 0, *, width: float = 0.5, resolution: int = 64, classes: int = 100,
    last_channels: int = 1280,
    setting: Sequence[tuple[int, int, int, int]] = MOBILENET_V2_SETTING,
) -> onnx.ModelProto:
    """MobileNetV2 (torchvision layout) on [1, 3, resolution, resolution].

    The default (width 0.5, 64x64, 100 classes) is about 0.02 GFLOP.
    """
    g = GraphBuilder("mobilenet_v2", seed)
    c = make_divisible(32 * width)
    x = g.conv("x", "features.0", 3, c, 3, stride=2)
    x = g.relu6(g.batchnorm(x, "features.0.bn", c), "features.0.relu")
    block = 1
    for t, ch, n, s in setting:
        cout = make_divisible(ch * width)
        for i in range(n):
            x = inverted_residual(g, x, f"features.{block}", c, cout, s if i == 0 else 1, t)
            c = cout
            block += 1
    last = make_divisible(last_channels * max(1.0, width))
    x = g.conv(x, f"features.{block}", c, last, 1)
    x = g.relu6(g.batchnorm(x, f"features.{block}.bn", last), f"features.{block}.relu")
    x = g.head(x, last, classes, "classifier")
    return g.model([1, 3, resolution, resolution], "x", x, [1, classes])


# --------------------------------------------------------------------------- ResNets


def downsample(g: GraphBuilder, x: str, scope: str, cin: int, cout: int, stride: int) -> str:
    """1x1 strided projection shortcut + BN (identity when the shape is preserved)."""
    if stride == 1 and cin == cout:
        return x
    y = g.conv(x, f"{scope}.downsample.0", cin, cout, 1, stride=stride)
    return g.batchnorm(y, f"{scope}.downsample.1", cout)


def basic_block(g: GraphBuilder, x: str, scope: str, cin: int, cout: int, stride: int) -> str:
    """ResNet-18/34 block: two 3x3 conv + BN, relu, residual add, relu."""
    y = g.conv(x, f"{scope}.conv1", cin, cout, 3, stride=stride)
    y = g.relu(g.batchnorm(y, f"{scope}.bn1", cout), f"{scope}.relu")
    y = g.conv(y, f"{scope}.conv2", cout, cout, 3)
    y = g.batchnorm(y, f"{scope}.bn2", cout, RESIDUAL_GAMMA)
    y = g.add(y, downsample(g, x, scope, cin, cout, stride), scope)
    return g.relu(y, f"{scope}.relu_1")


def bottleneck(g: GraphBuilder, x: str, scope: str, cin: int, cout: int, stride: int) -> str:
    """ResNet-50 block (v1.5, stride on the 3x3): 1x1 reduce, 3x3, 1x1 expand x4, add, relu."""
    mid = cout // 4
    y = g.conv(x, f"{scope}.conv1", cin, mid, 1)
    y = g.relu(g.batchnorm(y, f"{scope}.bn1", mid), f"{scope}.relu")
    y = g.conv(y, f"{scope}.conv2", mid, mid, 3, stride=stride)
    y = g.relu(g.batchnorm(y, f"{scope}.bn2", mid), f"{scope}.relu_1")
    y = g.conv(y, f"{scope}.conv3", mid, cout, 1)
    y = g.batchnorm(y, f"{scope}.bn3", cout, RESIDUAL_GAMMA)
    y = g.add(y, downsample(g, x, scope, cin, cout, stride), scope)
    return g.relu(y, f"{scope}.relu_2")


def _resnet(
    name: str, block: Callable[..., str], depths: Sequence[int], widths: Sequence[int],
    seed: int, resolution: int, classes: int,
) -> onnx.ModelProto:
    """torchvision ResNet: 7x7/2 stem + BN + relu + 3x3/2 maxpool, 4 stages, GAP + Gemm."""
    g = GraphBuilder(name, seed)
    x = g.conv("x", "conv1", 3, 64, 7, stride=2)
    x = g.relu(g.batchnorm(x, "bn1", 64), "relu")
    x = g.max_pool(x, "maxpool", 3, 2, pad=1)
    c = 64
    for stage, (n, w) in enumerate(zip(depths, widths, strict=True)):
        for i in range(n):
            stride = 2 if i == 0 and stage > 0 else 1
            x = block(g, x, f"layer{stage + 1}.{i}", c, w, stride)
            c = w
    x = g.head(x, c, classes)
    return g.model([1, 3, resolution, resolution], "x", x, [1, classes])


def resnet(seed: int = 0, *, resolution: int = 112, classes: int = 1000) -> onnx.ModelProto:
    """ResNet-18 (basic blocks, 1x1 downsample shortcuts); about 0.9 GFLOP at 112x112."""
    return _resnet("resnet18", basic_block, (2, 2, 2, 2), (64, 128, 256, 512),
                   seed, resolution, classes)


def resnet50(seed: int = 0, *, resolution: int = 224, classes: int = 1000) -> onnx.ModelProto:
    """ResNet-50 (bottleneck blocks); about 8.2 GFLOP at 224x224, 25.6 M parameters."""
    return _resnet("resnet50", bottleneck, (3, 4, 6, 3), (256, 512, 1024, 2048),
                   seed, resolution, classes)


# --------------------------------------------------------------------------- squeeze-and-excite

SILU_GAIN = 1.2  # sqrt(E[relu(z)^2] / E[silu(z)^2]) for z ~ N(0, 1): He scale for SiLU nets
SE_GATE_BIAS = 2.0  # gates start mostly open (sigmoid(2) = 0.88), as in trained SE networks

# torchvision EfficientNet-B0 stages: (expansion, kernel, stride, channels in, out, repeats)
EFFICIENTNET_B0_SETTING: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1),
)

# torchvision MobileNetV3-Large bneck: (in, kernel, expanded, out, squeeze-excite, hardswish,
# stride)
MOBILENET_V3_LARGE_SETTING: tuple[tuple[int, int, int, int, bool, bool, int], ...] = (
    (16, 3, 16, 16, False, False, 1), (16, 3, 64, 24, False, False, 2),
    (24, 3, 72, 24, False, False, 1), (24, 5, 72, 40, True, False, 2),
    (40, 5, 120, 40, True, False, 1), (40, 5, 120, 40, True, False, 1),
    (40, 3, 240, 80, False, True, 2), (80, 3, 200, 80, False, True, 1),
    (80, 3, 184, 80, False, True, 1), (80, 3, 184, 80, False, True, 1),
    (80, 3, 480, 112, True, True, 1), (112, 3, 672, 112, True, True, 1),
    (112, 5, 672, 160, True, True, 2), (160, 5, 960, 160, True, True, 1),
    (160, 5, 960, 160, True, True, 1),
)


def scaled_conv(g: GraphBuilder, x: str, scope: str, cin: int, cout: int, k: int, *,
                stride: int = 1, group: int = 1, bias: bool = False, gain: float = 1.0,
                bias_mean: float = 0.0) -> str:
    """`GraphBuilder.conv` with the He-normal std times ``gain`` and biases around
    ``bias_mean``."""
    fan_in = cin // group * k * k
    w = he_normal(g.rng, (cout, cin // group, k, k), fan_in) * np.float32(gain)
    inputs = [g.weight(f"{scope}.weight", w)]
    if bias:
        inputs.append(g.weight(f"{scope}.bias",
                               small_normal(g.rng, (cout,)) + np.float32(bias_mean)))
    return g.node("Conv", [x, *inputs], f"/{scope}", kernel_shape=[k, k],
                  strides=[stride, stride], pads=[k // 2] * 4, group=group, dilations=[1, 1])


def silu(g: GraphBuilder, x: str, scope: str) -> str:
    """SiLU as torch.onnx exports it: x * Sigmoid(x)."""
    return g.node("Mul", [x, g.node("Sigmoid", [x], f"/{scope}")], f"/{scope}")


def hardswish(g: GraphBuilder, x: str, scope: str) -> str:
    """nn.Hardswish: the HardSwish op (opset 14+)."""
    return g.node("HardSwish", [x], f"/{scope}")


def hardsigmoid(g: GraphBuilder, x: str, scope: str) -> str:
    """nn.Hardsigmoid as torch.onnx exports it: HardSigmoid(alpha=1/6, beta=0.5)."""
    return g.node("HardSigmoid", [x], f"/{scope}", alpha=1.0 / 6.0, beta=0.5)


def squeeze_excite(g: GraphBuilder, x: str, scope: str, c: int, squeeze: int,
                   act: Callable[[GraphBuilder, str, str], str],
                   gate: Callable[[GraphBuilder, str, str], str]) -> str:
    """torchvision SqueezeExcitation: GlobalAveragePool -> 1x1 conv -> act -> 1x1 conv ->
    gate -> Mul with the input."""
    s = g.node("GlobalAveragePool", [x], f"/{scope}/avgpool")
    s = act(g, scaled_conv(g, s, f"{scope}.fc1", c, squeeze, 1, bias=True), f"{scope}.act")
    s = scaled_conv(g, s, f"{scope}.fc2", squeeze, c, 1, bias=True, bias_mean=SE_GATE_BIAS)
    return g.node("Mul", [x, gate(g, s, f"{scope}.gate")], f"/{scope}")


def _conv_bn_silu(g: GraphBuilder, x: str, scope: str, cin: int, cout: int, k: int,
                  stride: int = 1, group: int = 1) -> str:
    """Conv2dNormActivation with SiLU."""
    x = scaled_conv(g, x, f"{scope}.0", cin, cout, k, stride=stride, group=group,
                    gain=SILU_GAIN)
    return silu(g, g.batchnorm(x, f"{scope}.1", cout), f"{scope}.2")


def mbconv(g: GraphBuilder, x: str, scope: str, cin: int, cout: int, k: int, stride: int,
           expand: int) -> str:
    """EfficientNet MBConv: [1x1 expand + BN + SiLU], kxk depthwise + BN + SiLU, squeeze-excite
    (squeeze to cin / 4, SiLU, Sigmoid gate), 1x1 project + BN, residual when shapes match."""
    hidden = cin * expand
    y = x
    if expand != 1:
        y = _conv_bn_silu(g, y, f"{scope}.expand", cin, hidden, 1)
    y = _conv_bn_silu(g, y, f"{scope}.dw", hidden, hidden, k, stride, group=hidden)
    y = squeeze_excite(g, y, f"{scope}.se", hidden, max(1, cin // 4), silu,
                       lambda g, s, sc: g.node("Sigmoid", [s], f"/{sc}"))
    return _project(g, x, y, scope, hidden, cin, cout, stride)


def efficientnet(seed: int = 0, *, resolution: int = 224, classes: int = 1000
                 ) -> onnx.ModelProto:
    """EfficientNet-B0's topology (torchvision) on [1, 3, resolution, resolution]: MBConv blocks
    with SiLU (x * Sigmoid(x)) and squeeze-and-excite; about 0.8 GFLOP at 224x224, 5.3 M
    parameters."""
    g = GraphBuilder("efficientnet_b0", seed)
    x = _conv_bn_silu(g, "x", "features.0", 3, 32, 3, stride=2)
    block = 0
    for expand, k, stride, cin, cout, n in EFFICIENTNET_B0_SETTING:
        for i in range(n):
            x = mbconv(g, x, f"features.b{block}", cin if i == 0 else cout, cout, k,
                       stride if i == 0 else 1, expand)
            block += 1
    x = _conv_bn_silu(g, x, "features.8", 320, 1280, 1)
    x = g.head(x, 1280, classes, "classifier.1")
    return g.model([1, 3, resolution, resolution], "x", x, [1, classes])


def _conv_bn_act(g: GraphBuilder, x: str, scope: str, cin: int, cout: int, k: int,
                 stride: int = 1, group: int = 1, hs: bool = True) -> str:
    """Conv2dNormActivation with Hardswish (``hs``) or ReLU."""
    x = g.batchnorm(g.conv(x, f"{scope}.0", cin, cout, k, stride=stride, group=group),
                    f"{scope}.1", cout)
    return hardswish(g, x, f"{scope}.2") if hs else g.relu(x, f"{scope}.2")


def mobilenet_v3_block(g: GraphBuilder, x: str, scope: str, cin: int, k: int, hidden: int,
                       cout: int, se: bool, hs: bool, stride: int) -> str:
    """MobileNetV3 InvertedResidual: [1x1 expand], kxk depthwise, [squeeze-excite: ReLU,
    HardSigmoid gate, squeeze to hidden / 4 rounded to 8], 1x1 project + BN, residual."""
    y = x
    if hidden != cin:
        y = _conv_bn_act(g, y, f"{scope}.expand", cin, hidden, 1, hs=hs)
    y = _conv_bn_act(g, y, f"{scope}.dw", hidden, hidden, k, stride, group=hidden, hs=hs)
    if se:
        y = squeeze_excite(g, y, f"{scope}.se", hidden, make_divisible(hidden // 4),
                           lambda g, s, sc: g.relu(s, sc), hardsigmoid)
    return _project(g, x, y, scope, hidden, cin, cout, stride)


def mobilenet_v3(seed: int = 0, *, resolution: int = 224, classes: int = 1000
                 ) -> onnx.ModelProto:
    """MobileNetV3-Large's topology (torchvision) on [1, 3, resolution, resolution]: HardSwish
    and HardSigmoid ops as torch.onnx emits them at opset 17, squeeze-and-excite blocks;
    about 0.45 GFLOP at 224x224, 5.5 M parameters."""
    g = GraphBuilder("mobilenet_v3_large", seed)
    x = _conv_bn_act(g, "x", "features.0", 3, 16, 3, stride=2)
    for i, (cin, k, hidden, cout, se, hs, stride) in enumerate(MOBILENET_V3_LARGE_SETTING):
        x = mobilenet_v3_block(g, x, f"features.{i + 1}", cin, k, hidden, cout, se, hs, stride)
    x = _conv_bn_act(g, x, "features.16", 160, 960, 1)
    x = g.node("GlobalAveragePool", [x], "/avgpool")
    x = g.node("Flatten", [x], "", axis=1)
    x = hardswish(g, g.gemm(x, "classifier.0", 960, 1280), "classifier.1")
    x = g.gemm(x, "classifier.3", 1280, classes)
    return g.model([1, 3, resolution, resolution], "x", x, [1, classes])


# --------------------------------------------------------------------------- light models

SHAPE_OPS = frozenset({"Unsqueeze", "Squeeze", "Reshape", "Identity", "Flatten", "Transpose"})
LIGHT_NAMES = ("bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50",
               "shufflenet", "squeezenet", "vgg19", "zfnet512")


def light_path(name: str) -> str:
    """Path of `light_<name>.onnx` in the installed onnx wheel."""
    return os.path.join(LIGHT_DIR, f"light_{name}.onnx")


def light(name: str, seed: int = 0) -> onnx.ModelProto:
    """Load a light model-zoo graph from the onnx wheel and give it random weights."""
    return randomize_weights(onnx.load(light_path(name)), seed)


def randomize_weights(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """Return a copy of `model` with its float weights redrawn at role-appropriate scales.

    Weights are the float initializers (of more than one element) feeding Conv, Gemm, MatMul,
    BatchNormalization, or per-channel Mul/Add, and every ConstantOfShape(initializer) stub (as
    in the light models); other constants (Clip bounds, scalar factors) are kept. Initializers
    are taken out of graph.input (IR >= 4) so that runtimes may constant-fold them, and unused
    initializers are dropped.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    rng = np.random.default_rng(seed)
    consumers = _consumers(g)
    residual = _residual_batchnorms(g, consumers)
    stubs = _stub_shapes(g)
    weights = {**{t.name: tuple(t.dims) for t in g.initializer
                  if _is_weight(t, _role(t.name, consumers)[0])}, **stubs}
    nodes = [n for n in g.node if not (n.op_type == "ConstantOfShape" and n.output[0] in stubs)]
    kept = [t for t in g.initializer if t.name not in weights]
    del g.node[:], g.initializer[:]
    g.node.extend(nodes)
    g.initializer.extend(kept)
    for name, shape in weights.items():
        _append_tensor(g, name, _draw(rng, shape, *_role(name, consumers), residual))
    _prune_initializers(g)
    out.ir_version = max(out.ir_version, IR_VERSION)
    return out


WEIGHT_OPS = frozenset({"Conv", "Gemm", "MatMul", "BatchNormalization", "Mul", "Add"})


def _is_weight(t: TensorProto, op: str) -> bool:
    """True for a float initializer of more than one element that feeds a weight-taking op."""
    return (t.data_type == TensorProto.FLOAT and op in WEIGHT_OPS
            and int(np.prod(t.dims, dtype=np.int64)) > 1)


def _stub_shapes(g: onnx.GraphProto) -> dict[str, tuple[int, ...]]:
    """Output name -> shape of every ConstantOfShape(float value, shape initializer) node."""
    inits = {t.name: t for t in g.initializer}
    shapes = {}
    for n in g.node:
        if n.op_type == "ConstantOfShape" and n.input and n.input[0] in inits and all(
                a.t.data_type == TensorProto.FLOAT for a in n.attribute if a.name == "value"):
            shapes[n.output[0]] = tuple(int(d) for d in numpy_helper.to_array(inits[n.input[0]]))
    return shapes


def _append_tensor(g: onnx.GraphProto, name: str, array: np.ndarray) -> None:
    """Append a float32 initializer, writing its bytes straight into the graph (no proto copy)."""
    t = g.initializer.add()
    t.name = name
    t.data_type = TensorProto.FLOAT
    t.dims.extend(array.shape)
    t.raw_data = np.ascontiguousarray(array, dtype="<f4").tobytes()


def _prune_initializers(g: onnx.GraphProto) -> None:
    """Drop unused initializers and take all initializers out of graph.input."""
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    kept = [t for t in g.initializer if t.name in used]
    names = {t.name for t in kept}
    inputs = [i for i in g.input if i.name not in names and i.name in used]
    if len(kept) != len(g.initializer):
        del g.initializer[:]
        g.initializer.extend(kept)
    del g.input[:]
    g.input.extend(inputs)


def _consumers(g: onnx.GraphProto) -> dict[str, list[tuple[onnx.NodeProto, int]]]:
    """Map tensor name -> [(consumer node, input index)]; gives unnamed nodes a unique name."""
    out: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for k, n in enumerate(g.node):
        if not n.name:
            n.name = f"{n.op_type}_{k}"
        for i, name in enumerate(n.input):
            out.setdefault(name, []).append((n, i))
    return out


def _role(name: str, consumers: dict[str, list[tuple[onnx.NodeProto, int]]]
          ) -> tuple[str, int, onnx.NodeProto | None]:
    """(op type, input index, node) of the first real consumer, looking through shape ops."""
    seen = 0
    while name in consumers and seen < 8:
        node, idx = consumers[name][0]
        if node.op_type in SHAPE_OPS and idx == 0:
            name, seen = node.output[0], seen + 1
            continue
        return node.op_type, idx, node
    return "", -1, None


def _residual_batchnorms(g: onnx.GraphProto,
                         consumers: dict[str, list[tuple[onnx.NodeProto, int]]]) -> set[str]:
    """Names of BatchNormalization nodes whose output feeds a residual Add/Sum directly."""
    return {n.name for n in g.node if n.op_type == "BatchNormalization"
            and any(c.op_type in ("Add", "Sum") for c, _ in consumers.get(n.output[0], []))}


def _draw(rng: np.random.Generator, shape: tuple[int, ...], op: str, idx: int,
          node: onnx.NodeProto | None, residual: set[str]) -> np.ndarray:
    """Random values for one weight given the op input it feeds (and residual BN names)."""
    if op == "Conv" and idx == 1:
        return he_normal(rng, shape, int(np.prod(shape[1:])))
    if op in ("Gemm", "MatMul") and idx == 1:
        return he_normal(rng, shape, _matmul_fan_in(shape, op, node))
    if op == "BatchNormalization" and idx == 1:
        closes_branch = node is not None and node.name in residual
        return uniform(rng, shape, *(RESIDUAL_GAMMA if closes_branch else GAMMA))
    if op == "BatchNormalization" and idx == 4:
        return uniform(rng, shape, 0.5, 1.5)
    if op == "BatchNormalization" and idx in (2, 3):
        return small_normal(rng, shape, 0.1)
    if op == "Mul":
        return uniform(rng, shape, *GAMMA)
    return small_normal(rng, shape)


def _matmul_fan_in(shape: tuple[int, ...], op: str, node: onnx.NodeProto | None) -> int:
    """Reduction length of a Gemm/MatMul weight (respecting Gemm's transB)."""
    trans_b = op == "Gemm" and node is not None and any(
        a.name == "transB" and a.i for a in node.attribute)
    if trans_b:
        return shape[-1]
    return int(np.prod(shape)) // shape[-1] if len(shape) > 1 else shape[0]


# --------------------------------------------------------------------------- registry

ZOO: dict[str, Callable[[], onnx.ModelProto]] = {
    "mlp": mlp,
    "lenet": lenet,
    "mobilenet_v2": mobilenet_v2,
    "mobilenet_v3": mobilenet_v3,
    "efficientnet": efficientnet,
    "squeezenet": partial(light, "squeezenet"),
    "light_shufflenet": partial(light, "shufflenet"),
    "light_inception_v1": partial(light, "inception_v1"),
    "light_densenet121": partial(light, "densenet121"),
    "resnet18": resnet,
    "resnet50": resnet50,
    "vgg19": partial(light, "vgg19"),
}

# Too big for quick test runs (build time / memory / minutes of benchmarking).
LARGE = frozenset({"resnet50", "vgg19", "light_inception_v1", "light_densenet121"})

# The sequence and generative model families exported from PyTorch (examples/families/, the
# TorchScript exporter's files): transformers, recurrent nets, segmentation, recommendation.
FAMILIES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "examples", "families")
FAMILIES = ("bert_encoder", "gpt_decoder", "vit", "lstm_kws", "gru_kws", "unet", "vae_decoder",
            "dlrm", "hf_bert", "hf_gpt2", "hf_vit")


def family(name: str, exporter: str = "ts") -> onnx.ModelProto:
    """One of the committed PyTorch exports (``exporter``: "ts" or "dynamo")."""
    return onnx.load(os.path.join(FAMILIES_DIR, f"{name}.{exporter}.onnx"))


def available() -> list[str]:
    """Names accepted by `get`: the ZOO, the FAMILIES (and `<family>.dynamo`), plus
    `light_<name>` for every light model."""
    return [*ZOO, *FAMILIES, *(f"{f}.dynamo" for f in FAMILIES),
            *(f"light_{n}" for n in LIGHT_NAMES)]


def get(name: str) -> onnx.ModelProto:
    """Build a zoo model by name (see `available`)."""
    if name in ZOO:
        return ZOO[name]()
    base, _, exporter = name.partition(".")
    if base in FAMILIES and exporter in ("", "dynamo"):
        return family(base, exporter or "ts")
    if name.startswith("light_") and name[len("light_"):] in LIGHT_NAMES:
        return light(name[len("light_"):])
    raise KeyError(f"unknown model {name!r}; available: {', '.join(available())}")


def iter_models(names: Sequence[str] | None = None) -> Iterator[tuple[str, onnx.ModelProto]]:
    """Yield (name, model) pairs, building each model lazily."""
    for name in names if names is not None else list(ZOO):
        yield name, get(name)
