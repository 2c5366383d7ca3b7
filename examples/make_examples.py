"""Write the example models shipped with sw2c (run from anywhere):

    python examples/make_examples.py

- mobilenet_tiny.onnx: the zoo's MobileNetV2 at width 0.25, last conv 320, 10 classes, on
  [1, 3, 64, 64] (about 0.005 GFLOP; < 1 MB)
- mlp.onnx: the zoo's digits MLP 64-128-64-10 on [1, 64]
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import onnx
from sw2c.benchmarks import zoo

HERE = Path(__file__).resolve().parent
MAX_BYTES = 1 << 20


def mobilenet_tiny() -> onnx.ModelProto:
    """A small-width MobileNetV2 that fits in well under 1 MB."""
    return zoo.mobilenet_v2(width=0.25, last_channels=320, classes=10)


EXAMPLES: dict[str, Callable[[], onnx.ModelProto]] = {
    "mobilenet_tiny.onnx": mobilenet_tiny,
    "mlp.onnx": zoo.mlp,
}


def write(name: str, model: onnx.ModelProto, directory: Path = HERE) -> Path:
    """Check and save one model; refuse files of 1 MB or more."""
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    if len(data) >= MAX_BYTES:
        raise ValueError(f"{name} is {len(data)} bytes; examples must stay under 1 MB")
    path = directory / name
    path.write_bytes(data)
    return path


def main() -> int:
    """Write every example next to this script."""
    for name, build in EXAMPLES.items():
        path = write(name, build())
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
