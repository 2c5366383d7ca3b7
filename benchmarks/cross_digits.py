"""Instructions per inference of the digits CNN's int8 C export on every cross target.

    python -m sw2c.benchmarks.cross_digits

Builds the asic C export (``asic:edge``) with zig for each target, runs one test image in the
emulator and prints instructions per inference and per MAC, and the section sizes. These are
instructions executed (unicorn) or wasmtime fuel (about one per wasm operator), not cycles.
Needs ``pip install 'sw2c[cross]'``.
"""

from __future__ import annotations

import sw2c
from sw2c.runtime.cross import TARGETS
from sw2c.runtime.cross.asic_c import CrossCExport
from sw2c.runtime.cross.emulate import unavailable
from sw2c.tests.asic_models import DIGITS, digits_data


def main() -> None:
    """Print one row per target."""
    module = sw2c.compile(str(DIGITS), target="asic:edge", verify=False,
                          input_shapes={"input": (1, 1, 8, 8)},
                          calibration=digits_data()["calib"][:64])
    macs = module.report["macs"]
    q = module.quantize(digits_data()["test"][:1])
    print(f"digits CNN int8 C export, {macs:,} MACs per inference (instructions, not cycles)")
    print(f"{'target':<11} {'instr/inf':>10} {'instr/MAC':>9} {'.text':>6} {'.rodata':>7} "
          f"{'.bss':>5}  runtime")
    for name, target in TARGETS.items():
        with CrossCExport(module.program, module.plan, "digits", target) as c:
            s = c.binary.sizes
            text, ro, bss = (s.get(".text", s.get("code")), s.get(".rodata", s.get("data")),
                             s.get(".bss", 0))
            if unavailable(target):  # no emulator here (M55 without qemu-system-arm)
                print(f"{name:<11} {'-':>10} {'-':>9} {text:>6} {ro:>7} {bss:>5}  "
                      f"{c.binary.runtime} (no emulator: {unavailable(target)})")
                continue
            n = c.call_int8([q], count=True).instructions
            unit = {"wasmtime": " fuel", "qemu": " (qemu -icount)"}.get(target.emulator, "")
            print(f"{name:<11} {n:>10,} {n / macs:>9.1f} {text:>6} {ro:>7} {bss:>5}  "
                  f"{c.binary.runtime}{unit}")


if __name__ == "__main__":
    main()
