"""Seeing what the compiler did: the kernels (ops fused, MACs, bytes moved), the memory plan as
text, JSON and a picture (buffers as rectangles: time across, arena offset up)."""

from __future__ import annotations

import os
from typing import Any

from ..errors import Sw2cError
from ..ir import Graph, Op, format_graph
from ..passes.cost import count_macs
from ..passes.memory_plan import MemoryPlan


def kernel_table(graph: Graph, plan: MemoryPlan) -> list[dict[str, Any]]:
    """One row per generated kernel, in execution order."""
    rows = []
    for node in graph.nodes:
        if node.op is not Op.KERNEL or node.name in plan.elided:
            continue
        body: Graph = node.attrs["body"]
        ops = [n.attrs["fn"].value if "fn" in n.attrs else n.op.value
               for n in body.nodes if n.op is not Op.CONST]
        rows.append({
            "kernel": node.name,
            "kind": node.attrs["kind"],
            "ops": ops,
            "macs": count_macs(body),
            "bytes_in": sum(graph.type_of(i).nbytes for i in node.inputs),
            "bytes_out": node.type.nbytes,
            "origin": node.origin,
        })
    return rows


def format_inspection(graph: Graph, plan: MemoryPlan) -> str:
    """The optimized IR, one line per kernel, and the memory plan."""
    lines = [format_graph(graph), "", "kernels:"]
    for i, r in enumerate(kernel_table(graph, plan)):
        lines.append(f"  k{i:<3} {r['kind']:<11} {'+'.join(r['ops']):<40} {r['macs']:>12,} MACs"
                     f"  in {r['bytes_in']:>10,} B  out {r['bytes_out']:>9,} B  ({r['origin']})")
    lines += ["", f"memory plan: arena {plan.arena_bytes:,} B, lower bound "
              f"{plan.lower_bound_bytes:,} B, naive {plan.naive_bytes:,} B"]
    for b in sorted(plan.buffers, key=lambda b: (b.offset, b.first)):
        lines.append(f"  [{b.offset:>10,} .. {b.offset + b.size:>10,})  steps {b.first:>3}-"
                     f"{b.last:<3} {b.name}")
    return "\n".join(lines)


def plot_plan(plan: MemoryPlan, path: str | os.PathLike, title: str = "memory plan") -> None:
    """Draw the plan: each buffer a rectangle over its live steps and its arena bytes; the
    lower bound and the arena size as horizontal lines."""
    try:
        import matplotlib
    except ImportError:
        raise Sw2cError("drawing the plan needs matplotlib: pip install matplotlib") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    fig, ax = plt.subplots(figsize=(10, 5), dpi=100)
    cmap = plt.get_cmap("tab20")
    kib = 1024
    for i, b in enumerate(sorted(plan.buffers, key=lambda b: b.first)):
        ax.add_patch(Rectangle((b.first - 0.45, b.offset / kib), b.last - b.first + 0.9,
                               b.size / kib, facecolor=cmap(i % 20), edgecolor="black",
                               linewidth=0.4, alpha=0.85))
    for i, (first, last) in enumerate(getattr(plan, "tiles", ())):  # asic patch-based tiling
        ax.axvspan(first - 0.5, last + 0.5, color="grey" if i % 2 else "silver", alpha=0.25,
                   zorder=0, label="patches (one band per tile)" if i == 0 else None)
    steps = max((b.last for b in plan.buffers), default=0) + 1
    ax.axhline(plan.arena_bytes / kib, color="black", linewidth=1,
               label=f"arena {plan.arena_bytes / kib:,.1f} KiB")
    ax.axhline(plan.lower_bound_bytes / kib, color="red", linestyle="--", linewidth=1,
               label=f"lower bound {plan.lower_bound_bytes / kib:,.1f} KiB")
    ax.set_xlim(-1, steps)
    ax.set_ylim(0, max(plan.arena_bytes, 1) / kib * 1.08)
    ax.set_xlabel("step (kernel)")
    ax.set_ylabel("arena offset (KiB)")
    ax.set_title(f"{title}: naive sum {plan.naive_bytes / kib:,.1f} KiB")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def to_onnx(graph: Graph, plan: MemoryPlan) -> Any:
    """The optimized graph as an ONNX model for Netron: one node per generated kernel in the
    `sw2c` domain (op type from its kind, the fused ops in an attribute), constants as
    initializers, reshapes as Reshape nodes. Documentation, not meant to be run."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    def info(name: str) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT,
                                             list(graph.type_of(name).shape))

    nodes, inits = [], []
    for node in graph.nodes:
        if node.op is Op.CONST:
            inits.append(numpy_helper.from_array(np.asarray(node.attrs["value"]), node.name))
        elif node.op is Op.RESHAPE:
            shape = f"{node.name}.shape"
            inits.append(numpy_helper.from_array(np.array(node.type.shape, np.int64), shape))
            nodes.append(helper.make_node("Reshape", [node.inputs[0], shape], [node.name]))
        elif node.op is Op.KERNEL and node.name not in plan.elided:
            body: Graph = node.attrs["body"]
            ops = "+".join(n.attrs["fn"].value if "fn" in n.attrs else n.op.value
                           for n in body.nodes if n.op is not Op.CONST)
            kind = node.attrs["kind"].capitalize() + "Kernel"
            nodes.append(helper.make_node(kind, list(node.inputs), [node.name], domain="sw2c",
                                          name=node.origin or node.name, ops=ops))
        elif node.op is Op.KERNEL:  # a concat its producers wrote in place
            nodes.append(helper.make_node("Concat", list(node.attrs["body"].nodes[-1].inputs),
                                          [node.name], axis=node.attrs["body"].nodes[-1]
                                          .attrs["axis"], name=node.origin or node.name))
    model_graph = helper.make_graph(nodes, graph.name, [info(v.name) for v in graph.inputs],
                                    [info(o) for o in graph.outputs], inits)
    return helper.make_model(model_graph, opset_imports=[helper.make_opsetid("", 17),
                                                          helper.make_opsetid("sw2c", 1)])
