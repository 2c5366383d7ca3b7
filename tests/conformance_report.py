"""docs/conformance.md: every ONNX node test of the suite through the harness of conformance.py
(sw2c, and with ``--onnxruntime`` onnxruntime as the reference), summarized and per op.

Run as `python -m sw2c.tests.conformance --write docs/conformance.md [--onnxruntime]`.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import os
import re
import sys
import time
import warnings
from collections.abc import Sequence

import onnx
from sw2c.tests.conformance import (
    BUGS,
    ERROR,
    HANG,
    KINDS,
    KNOWN,
    OUT,
    PASSED,
    RAW,
    SUPPORTED,
    TIMEOUT,
    Outcome,
    classify,
    node_cases,
    op_of,
    scope,
)

# a dtype in a refusal's message: the summary groups "input has dtype double" with "float16"
_DTYPE = re.compile(r"(\b(bool|u?int(8|16|32|64)|float(16|32|64)?|bfloat16|double|object)\b|<U\d+)")


def _one(job: tuple[int, str]) -> tuple[Outcome, float]:
    index, engine = job
    started = time.process_time()
    with warnings.catch_warnings():  # numpy's, from onnx's reference ops in some converters
        warnings.simplefilter("ignore")
        outcome = classify(node_cases()[index], engine)
    return outcome, time.process_time() - started


def survey(engine: str, jobs: int) -> tuple[list[Outcome], float]:
    """The Outcome of every test of the suite through ``engine``, on ``jobs`` worker processes
    (forked once the tests are loaded). A worker that dies (faulthandler's last resort against
    a hang in native code, or a crash) loses its test: counted as a hang. Also the seconds
    the tests took, summed over the workers (the run time on one core)."""
    cases = node_cases()
    context = multiprocessing.get_context("fork")
    with context.Pool(jobs) as pool:
        pending = [pool.apply_async(_one, ((i, engine),)) for i in range(len(cases))]
        out = []
        seconds = 0.0
        for i, result in enumerate(pending):
            # tests are handed out in order: when test i's turn comes it runs (or ran), and
            # no test outlives 2 * TIMEOUT
            try:
                outcome, took = result.get(timeout=2 * TIMEOUT + 30)
                out.append(outcome)
                seconds += took
            except multiprocessing.TimeoutError:
                out.append(Outcome(HANG, "worker died", "the worker process died (a hang in "
                                   "native code or a crash)"))
            if sys.stderr.isatty():
                print(f"\r{engine}: {i + 1}/{len(cases)}", end="", file=sys.stderr)
    return out, seconds


def _summary_reason(o: Outcome) -> str:
    if o.reason.startswith("unsupported "):
        return "unsupported operator (no converter, or an attribute/mode/input not implemented)"
    what, sep, rest = o.reason.partition(";")  # "...dtype X; sw2c compiles <the dtypes>"
    return _DTYPE.sub("<dtype>", what) + sep + rest


def _counts(outcomes: Sequence[Outcome]) -> collections.Counter:
    return collections.Counter(o.kind for o in outcomes)


def summary(name: str, outcomes: Sequence[Outcome]) -> str:
    """One line: passed N of total = x%, then every other kind's count (for onnxruntime, its
    exceptions are its refusals)."""
    n = _counts(outcomes)
    total = len(outcomes)
    kinds = [k for k in KINDS if k != PASSED and (name == "sw2c" or k != RAW)]
    label = {ERROR: "sw2c error" if name == "sw2c" else "error"}
    others = "; ".join(f"{label.get(kind, kind)} {n[kind]:,}" for kind in kinds)
    return (f"**{name}: passed {n[PASSED]:,} of {total:,} = {100 * n[PASSED] / total:.1f}%**; "
            f"{others}")


def _reason_table(outcomes: Sequence[Outcome]) -> list[str]:
    errors = [o for o in outcomes if o.kind == ERROR]
    ops = {o.reason.split(": ")[0] for o in errors if o.reason.startswith("unsupported ")}
    rows = collections.Counter(_summary_reason(o) for o in errors)
    lines = ["| sw2c error reason | tests |", "|---|---|"]
    for why, count in rows.most_common():
        note = f" — {len(ops)} ops" if why.startswith("unsupported operator") else ""
        lines.append(f"| {why}{note} | {count} |")
    gaps = collections.Counter(o.reason for o in outcomes if o.kind == OUT)
    lines += ["", "| out of harness (the data cannot be fed or compared) | tests |", "|---|---|"]
    lines += [f"| {why} | {count} |" for why, count in gaps.most_common()]
    return lines


def _cell(items: Sequence[str]) -> str:
    return "<br>".join(s.replace("|", "\\|") for s in items) or "—"


def op_table(outcomes: Sequence[Outcome], reference: Sequence[Outcome] | None) -> list[str]:
    """Per op of the suite: sw2c passed / tests; for the ops sw2c claims (SUPPORTED) the
    in-scope tests passed / in scope; onnxruntime's passes; and why the rest did not pass
    (by test name for claimed ops, counted for the others)."""
    cases = node_cases()
    by_op: dict[str, list[int]] = collections.defaultdict(list)
    for i, case in enumerate(cases):
        by_op[op_of(case)].append(i)
    ref_head = " onnxruntime |" if reference else ""
    lines = [f"| op | sw2c passed / tests | in scope: passed / must pass |{ref_head} "
             "not passed (reason) |", "|---|---|---|" + ("---|" if reference else "") + "---|"]
    for op in sorted(by_op, key=str.lower):
        idx = by_op[op]
        claimed = op in SUPPORTED
        passed = sum(outcomes[i].kind == PASSED for i in idx)
        in_scope = [i for i in idx if scope(cases[i]) is None]
        scope_cell = (f"{sum(outcomes[i].kind == PASSED for i in in_scope)} / {len(in_scope)}"
                      if claimed or in_scope else "—")
        why: dict[str, list[str]] = collections.defaultdict(list)
        for i in idx:
            o = outcomes[i]
            if o.kind != PASSED:
                label = o.kind if o.kind in (OUT, ERROR) else o.kind.upper()
                known = f" (KNOWN: {KNOWN[cases[i].name]})" if cases[i].name in KNOWN else ""
                why[f"{label}: {o.reason or o.detail}"].append(f"`{cases[i].name}`{known}")
        items = [f"{k}: {', '.join(v)}" if claimed or any(b.upper() in k for b in BUGS)
                 else f"{k} ×{len(v)}" for k, v in why.items()]
        ref = (f" {sum(reference[i].kind == PASSED for i in idx)} / {len(idx)} |"
               if reference else "")
        name = f"**{op}**" if claimed else op
        lines.append(f"| {name} | {passed} / {len(idx)} | {scope_cell} |{ref} {_cell(items)} |")
    return lines


def report(outcomes: Sequence[Outcome], reference: Sequence[Outcome] | None,
           seconds: float) -> str:
    """The whole of docs/conformance.md."""
    total = len(outcomes)
    flag = " --onnxruntime" if reference else ""
    head = [
        "# ONNX node-test conformance", "",
        "Generated by `python -m sw2c.tests.conformance --write docs/conformance.md"
        f"{flag}` (onnx " + onnx.__version__ + f"): all {total:,} node tests of "
        "`onnx.backend.test.loader.load_model_tests(kind='node')`, each compiled by sw2c "
        "(verify=False; every input of rank 1 or more fed at run time, ints included, 0-d "
        "inputs made initializers; where sw2c needs an int input at compile time (a shape, "
        "axes, a count) a second attempt makes every non-float input an initializer, as in an "
        "exported model), run on its data set and compared with its expected outputs (shape, "
        "dtype, and values within the test's tolerances, at least rtol 1e-3 and atol 1e-6; "
        "float16 outputs at least rtol 2^-8, four float16 ulps). A test is *passed*, "
        "*wrong* (outputs differ, or a result where the expected outputs have another dtype), "
        "a *sw2c error* (a Sw2cError: sw2c refuses, saying why), a *non-sw2c exception* (a "
        "bug), a *hang* (no answer in "
        f"{TIMEOUT} s), or *out of harness* (float8/int4/... data numpy cannot hold, "
        "sequences, optionals). `tests/test_conformance.py` fails on any wrong result, "
        "non-sw2c exception or hang over the whole suite, and requires every in-scope test "
        "(an op sw2c claims, in `SUPPORTED`, in the static scope of `scope()`) to pass.",
        "", summary("sw2c", outcomes) + f" ({seconds:.0f} s of one core for the whole suite)",
    ]
    if reference:
        head += ["", summary("onnxruntime, same harness", reference)]
    body = ["", "## sw2c errors and out-of-harness tests by reason", "",
            *_reason_table(outcomes), "", "## Per op", "",
            "Ops in **bold** are the ops sw2c claims (SUPPORTED); a test belongs to the op it "
            "tests (an `_expanded` test to the op it expands).", "",
            *op_table(outcomes, reference)]
    return "\n".join(head + body) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--write", help="write the markdown report to this file")
    p.add_argument("--onnxruntime", action="store_true",
                   help="also run onnxruntime through the same harness (the reference column)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="worker processes (default: one per core)")
    args = p.parse_args(argv)
    node_cases()  # loaded once, before the workers fork
    outcomes, seconds = survey("sw2c", args.jobs)
    reference = survey("onnxruntime", args.jobs)[0] if args.onnxruntime else None
    text = report(outcomes, reference, seconds)
    if args.write:
        with open(args.write, "w") as f:
            f.write(text)
    else:
        print(text)
    print("\n".join(line for line in text.splitlines() if line.startswith("**")),
          file=sys.stderr)
