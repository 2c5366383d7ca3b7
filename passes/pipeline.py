"""The pass pipeline: named Graph -> Graph passes, the IR verified after each, optionally dumped."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from ..errors import blame
from ..ir import Graph, format_graph, verify
from .dead_code import eliminate_dead_code
from .flatten_order import fold_flatten_order
from .fold_affine import fold_affine
from .fold_constants import fold_constants
from .fuse import fuse
from .layout import choose_layout
from .legalize_types import legalize_types
from .outputs import materialize_outputs
from .row_reciprocal import row_reciprocal
from .split_groups import split_groups
from .winograd import DEFAULT_MODE, winograd


@dataclass(frozen=True)
class Pass:
    name: str
    run: Callable[[Graph], Graph]


def cpu_pipeline(winograd_mode: str = DEFAULT_MODE) -> tuple[Pass, ...]:
    """The cpu target's passes; ``winograd_mode`` as passes/winograd.py's MODES."""
    return (
        Pass("legalize-types", legalize_types),
        Pass("fold-constants", fold_constants),
        Pass("choose-layout", choose_layout),
        Pass("split-groups", split_groups),
        Pass("flatten-order", fold_flatten_order),
        Pass("fold-affine", fold_affine),
        Pass("dead-code", eliminate_dead_code),
        Pass("row-reciprocal", row_reciprocal),
        Pass("winograd", partial(winograd, mode=winograd_mode)),
        Pass("fuse", fuse),
        Pass("materialize-outputs", materialize_outputs),
    )


CPU_PIPELINE = cpu_pipeline()


def through(name: str, passes: Sequence[Pass] = CPU_PIPELINE) -> tuple[Pass, ...]:
    """The passes up to and including the one called ``name`` (to test a prefix)."""
    names = [p.name for p in passes]
    return tuple(passes[: names.index(name) + 1])


def run_pipeline(graph: Graph, passes: Sequence[Pass] = CPU_PIPELINE,
                 dump_dir: str | os.PathLike | None = None) -> Graph:
    """Run ``passes`` in order, verifying the IR before and after each one.

    With ``dump_dir`` (or the SW2C_DUMP_IR environment variable) the IR is written after every
    pass as ``NN-name.txt``.
    """
    dump_dir = dump_dir or os.environ.get("SW2C_DUMP_IR")
    out = Path(dump_dir) if dump_dir else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "00-input.txt").write_text(format_graph(graph) + "\n")
    verify(graph)
    for i, p in enumerate(passes, 1):
        with blame(f"pass '{p.name}'"):
            graph = verify(p.run(graph))
        if out is not None:
            (out / f"{i:02d}-{p.name}.txt").write_text(format_graph(graph) + "\n")
    return graph
