"""The integer reference over many feeds at once, for the ``auto`` precision search.

The search scores every candidate mix on dozens of calibration feeds; run one feed at a time,
a 200-step unrolled LSTM spends its time in numpy's per-call overhead. Here every tensor
carries a leading feed axis S, and each step runs once on all S feeds: the steps that only
touch their last axes (a matmul without a window, elementwise steps, tables over one table,
LayerNorm, a softmax over negative axes without a mask tensor, and every requantization) on
the stacked arrays, slices and transposes with the feed axis added to their indices, the
others (those with axis or window attributes) feed by feed through ``reference.run_step``.
The caller (precision.Search.run) checks every program's first feed against
``run_reference``: a faster path to the same codes, never a second definition.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .program import Kind, QProgram, QTensor, Step
from .reference import run_step, views_of

ELEMENTWISE = {Kind.ADD, Kind.SUB, Kind.MUL, Kind.BATCH_MATMUL, Kind.CONVERT,
               Kind.LAYERNORM}


def stacks(step: Step) -> bool:
    """Whether ``step`` runs on stacked feeds as it is (else feed by feed)."""
    if step.kind in ELEMENTWISE:
        return True
    if step.kind is Kind.CONV:
        return step.window is None
    if step.kind is Kind.LUT:
        return step.consts["table"].ndim == 1
    if step.kind is Kind.SOFTMAX:
        return len(step.inputs) == 1 and all(a < 0 for a in step.attrs["axes"])
    return False


def _with_feeds(t: QTensor, count: int) -> QTensor:
    return dataclasses.replace(t, shape=(count, *t.shape))


def run_batched(program: QProgram, qfeeds: list[np.ndarray]) -> dict[str, np.ndarray]:
    """``run_reference`` of every feed: ``qfeeds`` one array [S, *shape] per input; the
    outputs [S, *shape] by name."""
    count = len(qfeeds[0])
    wide = {n: _with_feeds(t, count) for n, t in program.tensors.items()}
    views = views_of(program)
    env: dict[str, np.ndarray] = {}

    def define(name: str, x: np.ndarray) -> None:
        env[name] = x
        for v in views.get(name, ()):
            define(v.name, x.reshape(count, *v.shape))

    for name, x in zip(program.inputs, qfeeds):
        define(name, np.asarray(x).reshape(count, *program.tensors[name].shape))
    for step in program.steps:
        xs = [env[i] for i in step.inputs]
        if step.kind is Kind.SLICE:  # reference.slice_, with the feed axis whole
            shape = program.tensors[step.output].shape
            idx = [np.arange(n) * st + s for s, st, n in
                   zip(step.attrs["starts"], step.attrs["steps"], shape)]
            y = xs[0][np.ix_(np.arange(count), *idx)]
        elif step.kind is Kind.TRANSPOSE:  # reference.transpose, the feed axis first
            perm = step.attrs["perm"]
            y = np.transpose(xs[0], (0, *(p % len(perm) + 1 for p in perm)))
        elif stacks(step):
            rank = len(program.tensors[step.output].shape)
            # a broadcast operand of lower rank: its axes right-aligned after the feed axis
            xs = [x.reshape(count, *[1] * (rank + 1 - x.ndim), *x.shape[1:]) for x in xs]
            y = run_step(step, xs, wide)
        else:
            y = np.stack([run_step(step, [x[k] for x in xs], program.tensors)
                          for k in range(count)])
        define(step.output, y)
    return {n: env[n] for n in program.outputs}

