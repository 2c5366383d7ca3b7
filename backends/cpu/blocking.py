"""The GEMM's register blocking for one target's vector unit: lanes per vector, registers,
and what they fix (panel width NR, micro-kernel rows MR). A value derived from the target a
module is made for (``llvm.target_of``), never from the host at import: the same compiler packs
64-column panels for an AVX-512 host and 4-column ones for a Cortex-M4's scalar FPU."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from llvmlite import ir

from .llvm import F32, target_of

if TYPE_CHECKING:
    from ...runtime.cross.targets import Target

KC = 256  # reduction block: the MR x KC strip of A (6 KiB on AVX-512) stays in L1
NC = 512  # columns per block of B: KC x NC floats (512 KiB) stay in L2 (1 MiB on Zen 5)
UNROLL = 4  # unroll of the reduction loop
CHAINS = 8  # independent FMA chains that hide the FMA latency (2 pipes x 4 cycles)
# The micro-kernel prefetches the packed B row this many reduction steps ahead (6 KiB on
# AVX-512). A GEMM with few rows (late layers, Winograd's batched products, FC heads) streams
# its weights from DRAM once, and the hardware prefetcher alone left it waiting on memory:
# ResNet-50 ran 0.93x the time at 1 thread with it (layer4's Winograd GEMMs 1.42 -> 0.84 ms),
# VGG-19 0.94x; 16 and 32 steps measured the same, 8 and 64 a little slower.
PREFETCH_STEPS = 24
LINE_BYTES = 64
I1 = ir.IntType(1)


@dataclass(frozen=True)
class Blocking:
    """``lanes`` float32 lanes per vector register, ``regs`` such registers; ``prefetch``:
    whether the micro-kernel prefetches B (a core with caches in front of DRAM)."""

    lanes: int
    regs: int
    prefetch: bool = False

    @property
    def v(self) -> int:
        """Vectors per row of a panel: on AVX-512, 6 rows x 4 vectors measured 3-10% faster
        than 14 rows x 2 vectors (fewer, wider B rows per step; no register spill)."""
        return 4 if self.regs >= 32 else 2

    @property
    def nr(self) -> int:
        """Columns per packed panel: 64 on AVX-512, 16 on AVX2, 4 on a scalar FPU."""
        return self.v * self.lanes

    @property
    def mr(self) -> int:
        """Rows of the main micro-kernel (accumulators + a B row + a broadcast): 6 on AVX-512."""
        return max(1, (self.regs - self.v - 1) // self.v)

    @property
    def vec(self) -> ir.VectorType:
        return ir.VectorType(F32, self.lanes)

    def mask(self, valid: int) -> ir.Constant | None:
        """The <lanes x i1> mask of the first ``valid`` lanes; None when the vector is full."""
        if valid >= self.lanes:
            return None
        return ir.Constant(ir.VectorType(I1, self.lanes),
                           [1] * valid + [0] * (self.lanes - valid))


@cache
def blocking(target: Target | None = None) -> Blocking:
    """The blocking of ``target`` (default: the host, asked of LLVM on first use)."""
    if target is None:
        from ...runtime.cross.targets import host

        target = host()
    # no float registers (soft float): the values live in integer registers, about 8 free;
    # microcontrollers and wasm have no data cache to prefetch into
    return Blocking(target.vector_lanes, target.vector_registers or 8,
                    prefetch=target.family not in ("cortex-m", "riscv32", "wasm32"))


def blocking_of(module: ir.Module) -> Blocking:
    """The blocking of the target ``module`` is made for."""
    return blocking(target_of(module))
