"""Run a Cortex-M55 (Armv8.1-M, MVE) build in ``qemu-system-arm``'s ``mps3-an547`` board.

unicorn 2.1 models no Armv8.1-M core, so a target whose ``emulator`` is ``qemu`` runs in QEMU's
model of Arm's MPS3 AN547 FPGA image (a Cortex-M55 with MVE in the Corstone-300 subsystem), the
system package ``qemu-system-arm`` (Debian/Ubuntu: ``apt-get install qemu-system-arm``; not a pip
package, so without it ``Module.run`` raises ``EmulationError`` saying what to install).

Each boot makes the calls it was given: the program was linked (``toolchain.build``) with
``RUNNER``, a ``main`` that reads call records at the start of the target's ``io`` region
(QEMU's ``-device loader`` puts them there with the input arrays), calls the function through
a pointer with 16 word arguments (extra ones are harmless under the AAPCS: the caller pops
them), and writes the io region back to the host with semihosting (``SYS_OPEN`` /
``SYS_WRITE`` of ``sw2c_out.bin`` in qemu's working directory), then exits through
semihosting. A fault (HardFault and the configurable faults)
writes the stacked pc and the fault status registers instead and exits with a failure, which
becomes an ``EmulationError`` naming the function; an instruction cap stops a runaway loop and
qemu runs under a wall-clock timeout besides, so no call hangs. Many calls can share one boot
(``call_many``: a boot takes ~0.2 s, a digits CNN inference ~1 ms).

Counting: qemu runs with ``-icount shift=0`` (its virtual clock advances one nanosecond per
instruction executed) and the runner reads SysTick, clocked at the AN547's 32 MHz system clock,
around each call: instructions = ticks x 31.25, exact to about 32 instructions. SysTick's
exception also enforces the call's instruction cap (``emulate.CAP``, at most 2^24 ticks = 524 M
instructions) as unicorn's ``count=`` does. As with unicorn, instructions are not cycles.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .emulate import ALIGN, CAP, Call, _layout, _out_arrays
from .errors import EmulationError, require
from .targets import Target
from .toolchain import Binary

QEMU = "qemu-system-arm"
MACHINE = "mps3-an547"
INSTALL = ("install the system package qemu-system-arm (Debian/Ubuntu: apt-get install "
           "qemu-system-arm), which models the Cortex-M55 as the mps3-an547 board")
MAGIC, DONE, FAULT, CAPPED = 0x51433253, 0x454E4F44, 0x544C4146, 0x50504143  # S2CQ DONE ...
SYSCLK_HZ = 32_000_000  # the AN547's system clock, which drives SysTick's processor clock
SYSTICK_MAX = (1 << 24) - 1
INSTRUCTIONS_PER_TICK = 1e9 / SYSCLK_HZ  # with -icount shift=0: 31.25
SECONDS_PER_INSTRUCTION = 1 / 20e6  # a pessimistic qemu speed for the timeout
MIN_TIMEOUT = 30.0  # seconds: qemu boots in ~0.1 s; a loaded CI machine is slower
# the io region starts with a header (magic, calls, bytes to write back, then after a fault
# the stacked pc, CFSR and HFSR, and how many calls completed), then one record per call
# (function, MAX_ARGS arguments, result, SysTick before and after), then the arrays
_HEADER = struct.Struct("<8I")
MAX_ARGS = 16  # arrays per call: 4 in registers, the rest on the stack (extra ones unused)
_CALL = struct.Struct(f"<{1 + MAX_ARGS}IiII")
_OUT_NAME = "sw2c_out.bin"

RUNNER = r"""
/* sw2c's qemu runner for {name}: one call per boot (see runtime/cross/qemu.py). Generated. */
#include <stdint.h>

#define SW2C_IO {io:#x}u
#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define SCB_CFSR (*(volatile uint32_t *)0xE000ED28u)
#define SCB_HFSR (*(volatile uint32_t *)0xE000ED2Cu)

struct sw2c_call {{
    uint32_t function, args[{nargs}];
    int32_t result;
    uint32_t ticks_before, ticks_after;
}};

struct sw2c_calls {{
    uint32_t magic, count, out_bytes, fault_pc, cfsr, hfsr, done, reload;
    struct sw2c_call call[];
}};

typedef int (*sw2c_fn)({params});

static int sw2c_semihost(int op, const void *arg)
{{
    register int r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}}

/* SYS_EXIT: ADP_Stopped_ApplicationExit makes qemu exit 0, any other reason exits 1. */
static void sw2c_exit(int ok)
{{
    sw2c_semihost(0x18, (const void *)(ok ? 0x20026u : 0x20023u));
    for (;;) {{
    }}
}}

/* The io region (descriptor and buffers) to sw2c_out.bin in qemu's working directory. */
static int sw2c_write_back(volatile struct sw2c_calls *c)
{{
    static const char path[] = "{out}";
    uint32_t open[3] = {{(uint32_t)path, 5u /* "wb" */, sizeof path - 1}};
    int handle = sw2c_semihost(0x01, open);
    if (handle < 0)
        return 0;
    uint32_t write[3] = {{(uint32_t)handle, (uint32_t)c, c->out_bytes}};
    int left = sw2c_semihost(0x05, write);
    uint32_t close[1] = {{(uint32_t)handle}};
    sw2c_semihost(0x02, close);
    return left == 0;
}}

/* A fault, or SysTick's exception: the call ran past its instruction cap. */
static void sw2c_stop(const uint32_t *frame, uint32_t why)
{{
    volatile struct sw2c_calls *c = (volatile struct sw2c_calls *)SW2C_IO;
    c->magic = why;
    c->fault_pc = frame[6];
    c->cfsr = SCB_CFSR;
    c->hfsr = SCB_HFSR;
    c->out_bytes = sizeof(struct sw2c_calls);
    sw2c_write_back(c);
    sw2c_exit(0);
}}

void sw2c_fault_report(const uint32_t *frame)
{{
    sw2c_stop(frame, {fault:#x}u);
}}

void sw2c_cap_report(const uint32_t *frame)
{{
    sw2c_stop(frame, {capped:#x}u);
}}

/* The stacked frame is on the main stack (no RTOS here): pass it to the report. */
__attribute__((naked)) void sw2c_fault(void)
{{
    __asm__ volatile("mrs r0, msp\n  b sw2c_fault_report\n");
}}

__attribute__((naked)) void sw2c_capped(void)
{{
    __asm__ volatile("mrs r0, msp\n  b sw2c_cap_report\n");
}}

/* Vectors 2-15 (NMI, HardFault, MemManage, BusFault, UsageFault, SecureFault ..., SysTick
 * last), placed right after sw2c_vectors' stack pointer and reset entries by the linker
 * script. */
__attribute__((section(".vectors.faults"), used))
void (*const sw2c_fault_vectors[14])(void) = {{
    sw2c_fault, sw2c_fault, sw2c_fault, sw2c_fault, sw2c_fault, sw2c_fault, sw2c_fault,
    sw2c_fault, sw2c_fault, sw2c_fault, sw2c_fault, sw2c_fault, sw2c_fault, sw2c_capped}};

int main(void)
{{
    volatile struct sw2c_calls *c = (volatile struct sw2c_calls *)SW2C_IO;
    if (c->magic != {magic:#x}u)
        sw2c_exit(0);
    SYST_RVR = c->reload;
    SYST_CSR = 7u; /* enabled, processor clock, exception at 0: the instruction cap */
    for (uint32_t i = 0; i < c->count; i++) {{
        volatile struct sw2c_call *k = &c->call[i];
        sw2c_fn fn = (sw2c_fn)k->function;
        SYST_CVR = 0u; /* counts down from reload again */
        k->ticks_before = SYST_CVR;
        k->result = fn({call_args});
        k->ticks_after = SYST_CVR;
        c->done = i + 1;
    }}
    c->magic = {done:#x}u;
    sw2c_exit(sw2c_write_back(c));
    return 0;
}}
"""


def runner_source(target: Target) -> str:
    """The C ``main`` (and fault vectors) linked into a program that runs in qemu."""
    return RUNNER.format(name=target.name, io=target.region("io").base, out=_OUT_NAME,
                         magic=MAGIC, done=DONE, fault=FAULT, capped=CAPPED, nargs=MAX_ARGS,
                         params=", ".join(["uint32_t"] * MAX_ARGS),
                         call_args=", ".join(f"k->args[{i}]" for i in range(MAX_ARGS)))


def qemu_path() -> str | None:
    """``qemu-system-arm`` on PATH, or None."""
    return shutil.which(QEMU)


def unavailable(target: Target) -> str:
    """Why ``target``'s programs cannot run here ("" when they can)."""
    if qemu_path() is None:
        return (f"it runs in {QEMU} (machine {MACHINE}; unicorn 2.1 models no Cortex-M55), "
                f"which is not on PATH: {INSTALL}")
    return ""


class QemuEmulator:
    """A linked Cortex-M55 program, booted in qemu once per ``call`` (or batch of calls:
    ``call_many``)."""

    def __init__(self, binary: Binary) -> None:
        require("elftools", "loading an ELF")
        why = unavailable(binary.target)
        if why:
            raise EmulationError(f"cannot run code built for {binary.target.name}: {why}")
        self.target, self.binary = binary.target, binary
        self.qemu = qemu_path()
        self.io = binary.target.region("io")
        self.symbols = _symbols(binary.path)
        for needed in ("main", "sw2c_fault_vectors"):
            if needed not in self.symbols:
                raise EmulationError(f"{binary.path.name} was not linked with sw2c's qemu "
                                     f"runner (no {needed})")

    def call(self, symbol: str, inputs: Sequence[np.ndarray],
             outputs: Sequence[tuple[Sequence[int], Any]], count: bool = False,
             cap: int = CAP) -> Call:
        """``int symbol(in0, ..., out0, ...)`` (at most 16 arrays) in one qemu boot, like
        ``UnicornEmulator.call``: ``cap`` instructions (at most 524 M) before it counts as a
        hang."""
        return self.call_many(symbol, [inputs], outputs, count, cap)[0]

    def call_many(self, symbol: str, cases: Sequence[Sequence[np.ndarray]],
                  outputs: Sequence[tuple[Sequence[int], Any]], count: bool = False,
                  cap: int = CAP) -> list[Call]:
        """``call`` on each list of input arrays in ``cases``, all in one qemu boot (a boot
        takes ~0.1 s, one digits CNN inference a few ms); ``cap`` is per call."""
        if symbol not in self.symbols:
            raise EmulationError(f"{self.binary.path.name} has no function {symbol!r}")
        if len(cases) > 1 and self._bytes(cases, outputs) > self.io.size:  # boots in halves
            half = len(cases) // 2
            return [*self.call_many(symbol, cases[:half], outputs, count, cap),
                    *self.call_many(symbol, cases[half:], outputs, count, cap)]
        reload = min(SYSTICK_MAX, -(-cap // INSTRUCTIONS_PER_TICK))
        image, places = self._image(symbol, cases, outputs, int(reload))
        back = self._boot(image, symbol, cap * max(len(cases), 1))
        calls = []
        for k, (_, outs) in enumerate(places):
            *_, result, before, after = _CALL.unpack_from(back, _HEADER.size + k * _CALL.size)
            arrays = _out_arrays(outputs)
            for o, at in zip(arrays, outs):
                o[...] = np.frombuffer(back[at:at + o.nbytes], o.dtype).reshape(o.shape)
            # SysTick counts down from reload (0 when read before its first tick)
            ticks = (before - after) % (int(reload) + 1)
            calls.append(Call(arrays, result, round(ticks * INSTRUCTIONS_PER_TICK)
                              if count else None))
        return calls

    @staticmethod
    def _bytes(cases: Sequence[Sequence[np.ndarray]],
               outputs: Sequence[tuple[Sequence[int], Any]]) -> int:
        """About the io bytes a batch takes (its records, arrays and their alignment)."""
        out = sum(int(np.prod(shape)) * np.dtype(d).itemsize + ALIGN for shape, d in outputs)
        return _HEADER.size + ALIGN + sum(
            _CALL.size + out + sum(np.asarray(a).nbytes + ALIGN for a in case) for case in cases)

    def _image(self, symbol: str, cases: Sequence[Sequence[np.ndarray]],
               outputs: Sequence[tuple[Sequence[int], Any]], reload: int
               ) -> tuple[bytes, list[tuple[list[int], list[int]]]]:
        """The io region's bytes (header, call records, inputs, room for outputs) and, per
        call, the offsets of its inputs and outputs in it."""
        sizes = [int(np.prod(shape)) * np.dtype(d).itemsize for shape, d in outputs]
        head = _HEADER.size + len(cases) * _CALL.size
        at, places, records, data = -(-head // ALIGN) * ALIGN, [], [], []
        for inputs in cases:
            ins = [np.ascontiguousarray(a) for a in inputs]
            if len(ins) + len(sizes) > MAX_ARGS:
                raise EmulationError(f"{symbol} takes {len(ins) + len(sizes)} arrays; the "
                                     f"qemu runner passes at most {MAX_ARGS}")
            offsets = _layout(at, [a.nbytes for a in ins] + sizes)
            at = max([o + max(n, 1) for o, n in zip(offsets, [a.nbytes for a in ins] + sizes)],
                     default=at)
            places.append((offsets[:len(ins)], offsets[len(ins):]))
            records.append([self.io.base + o for o in offsets])
            data += list(zip(offsets, ins))
        if self.io.base + at > self.io.end:
            raise EmulationError(f"the buffers do not fit {self.target.name}'s io region")
        image = bytearray(at)
        _HEADER.pack_into(image, 0, MAGIC, len(cases), at, 0, 0, 0, 0, reload)
        for k, args in enumerate(records):
            _CALL.pack_into(image, _HEADER.size + k * _CALL.size, self.symbols[symbol] | 1,
                            *args, *[0] * (MAX_ARGS - len(args)), 0, 0, 0)
        for offset, a in data:
            image[offset:offset + a.nbytes] = a.tobytes()
        return bytes(image), places

    def _command(self, image: Path) -> list[str]:
        return [self.qemu, "-machine", MACHINE, "-nodefaults", "-display", "none",
                "-monitor", "none", "-serial", "none",
                "-semihosting-config", "enable=on,target=native",
                "-icount", "shift=0",  # 1 ns per instruction: SysTick counts them
                "-kernel", str(self.binary.path.resolve()),
                "-device", f"loader,file={image},addr={self.io.base:#x},force-raw=on"]

    def _boot(self, image: bytes, symbol: str, cap: int) -> bytes:
        """Run qemu once on ``image`` (the io region's start); the io region written back."""
        timeout = MIN_TIMEOUT + cap * SECONDS_PER_INSTRUCTION
        with tempfile.TemporaryDirectory(prefix="sw2c_qemu_") as tmp:
            work = Path(tmp)
            (work / "sw2c_in.bin").write_bytes(image)
            cmd = self._command(work / "sw2c_in.bin")
            try:
                res = subprocess.run(cmd, cwd=work, capture_output=True, text=True,
                                     timeout=timeout)
            except subprocess.TimeoutExpired:
                raise EmulationError(f"{self.target.name}: {symbol} did not return within "
                                     f"{timeout:.0f} s in {QEMU}") from None
            except OSError as e:
                raise EmulationError(f"cannot start {QEMU}: {e}") from e
            out = work / _OUT_NAME
            back = out.read_bytes() if out.exists() else b""
        return self._checked(back, res, symbol, len(image))

    def _checked(self, back: bytes, res: subprocess.CompletedProcess, symbol: str,
                 size: int) -> bytes:
        """``back`` if the call completed; else ``EmulationError`` saying what happened."""
        what = f"{self.target.name}: {symbol} in {QEMU}"
        head = _HEADER.unpack_from(back) if len(back) >= _HEADER.size else (None,) * 8
        if head[0] == CAPPED:
            raise EmulationError(f"{what}: no return within the instruction cap (call "
                                 f"{head[6] + 1} of {head[1]} stopped at pc={head[3]:#x}, "
                                 f"{self._where(head[3])})")
        if head[0] == FAULT:
            pc, cfsr, hfsr, done = head[3:7]
            raise EmulationError(f"{what}: the program faulted at pc={pc:#x} "
                                 f"({self._where(pc)}; CFSR={cfsr:#x}, HFSR={hfsr:#x}) in "
                                 f"call {done + 1} of {head[1]}")
        magic = head[0]
        if magic != DONE or len(back) != size or res.returncode != 0:
            log = (res.stderr or res.stdout).strip()[-800:]
            raise EmulationError(f"{what} did not complete (exit {res.returncode}, "
                                 f"{len(back)} of {size} bytes written back): {log}")
        return back

    def _where(self, pc: int) -> str:
        best = max(((a & ~1, n) for n, a in self.symbols.items() if (a & ~1) <= pc),
                   default=(0, "?"))
        return f"{best[1]}+{pc - best[0]:#x}"


def _symbols(path: Path) -> dict[str, int]:
    from elftools.elf.elffile import ELFFile

    with open(path, "rb") as f:
        symtab = ELFFile(f).get_section_by_name(".symtab")
        return {s.name: s["st_value"] for s in symtab.iter_symbols() if s.name} \
            if symtab else {}
