"""Split one LLVM module into parts that compile separately (in parallel, ``llvm.jit``).

A generated program is an entry that calls kernels, each kernel with the functions only it
calls (GEMM tiles, packing loops, its chunk table). Those groups are independent: each part
gets whole groups, balanced by a cost fitted on LLVM's compile times (``_cost``), so LLVM's
optimizations inside a kernel are the same as in one module. What a group shares with another
part (the entry's calls into it, a team's spin functions called by every runner) becomes a
hidden symbol: defined once, declared where it is called, resolved when the parts' objects
are linked (by the JIT or by ``export``), never exported from a shared library. Internal
helpers LLVM may inline, and constant tables, are copied into every part that uses them.
"""

from __future__ import annotations

import re
from collections import defaultdict

from llvmlite import ir

_REFERENCE = re.compile(r'@"([^"]+)"|@([-\w$.]+)')
SHARED_CALLERS = 3  # a function called by this many others is shared, not part of a group
DISPATCHER_CALLS = 16  # a function calling this many others dispatches: it stays in part 0


def _texts(module: ir.Module) -> dict[str, str]:
    """The IR text of each definition (rendering is most of the split's own time: once)."""
    return {f.name: str(f) for f in module.functions if f.blocks}


def _references(texts: dict[str, str]) -> dict[str, set[str]]:
    """Global names each definition's body refers to (calls, tables)."""
    return {name: {a or b for a, b in _REFERENCE.findall(text[text.index("{"):])}
            for name, text in texts.items()}


def _copyable(v: ir.GlobalValue) -> bool:
    """Defined in every part that uses it: an internal function LLVM may inline, an internal
    constant. (A noinline function is compiled once; a mutable global must be one object.)"""
    if v.linkage not in ("internal", "private"):
        return False
    if isinstance(v, ir.Function):
        return "noinline" not in v.attributes
    return v.global_constant


def _groups(module: ir.Module, refs: dict[str, set[str]]) -> list[set[str]]:
    """Definitions that must stay together: connected by calls, not through the part-0 roots
    (``_roots``), copyable functions or shared ones (SHARED_CALLERS callers: a team's spin
    loop, a GEMM tile of many layers; each of these is a group of its own)."""
    callers: dict[str, int] = defaultdict(int)
    for name, targets in refs.items():
        for t in targets - {name}:
            callers[t] += 1
    roots = _roots(module, refs, callers)
    movable = [n for n in refs if n not in roots and not _copyable(module.globals[n])]
    parent = {n: n for n in movable}

    def root(n: str) -> str:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for n in movable:
        for t in refs[n]:
            if t in parent and callers[t] < SHARED_CALLERS:
                parent[root(t)] = root(n)
    groups: dict[str, set[str]] = defaultdict(set)
    for n in movable:
        groups[root(n)].add(n)
    return list(groups.values())


def _roots(module: ir.Module, refs: dict[str, set[str]], callers: dict[str, int]) -> set[str]:
    """What stays in part 0: the functions called from outside (the entry, the team's worker
    loop: external and not called here) and dispatchers (calling DISPATCHER_CALLS functions
    or more: the entry calls every kernel, and would glue them all into one group)."""
    return {n for n, ts in refs.items()
            if (module.globals[n].linkage not in ("internal", "private") and not callers[n])
            or len(ts & refs.keys()) >= DISPATCHER_CALLS}


def _closure(names: set[str], refs: dict[str, set[str]], module: ir.Module) -> set[str]:
    """``names`` and the copyable globals they use, transitively."""
    out, todo = set(names), list(names)
    while todo:
        for t in refs.get(todo.pop(), ()):
            v = module.globals.get(t)
            if t not in out and v is not None and _copyable(v):
                out.add(t)
                todo.append(t)
    return out


_SCALAR_FLOAT = re.compile(r"= (?:fadd|fmul|fsub|fdiv|fcmp \w+) (?:\w+ )*float |call float @")


def _cost(f: ir.Function, text: str) -> int:
    """LLVM's work on ``f``, in instructions: a scalar float operation (a loop LLVM will
    vectorize) and a basic block cost about 12 and 9 instructions (fitted on the compile times
    of ResNet-50's, Inception's and EfficientNet's kernels, correlation 0.94)."""
    return (sum(len(b.instructions) for b in f.blocks) + 12 * len(_SCALAR_FLOAT.findall(text))
            + 9 * len(f.blocks))


def _declaration(v: ir.GlobalValue) -> str:
    scratch = ir.Module()
    if isinstance(v, ir.Function):
        d = ir.Function(scratch, v.ftype, v.name)
        d.linkage = v.linkage if v.linkage not in ("internal", "private") else "hidden"
    else:
        d = ir.GlobalVariable(scratch, v.value_type, v.name)
        d.linkage, d.align = "external", v.align
        d.storage_class = "hidden" if v.linkage in ("internal", "private") else ""
        d.global_constant = v.global_constant
    return str(d)


def split(module: ir.Module, parts: int) -> list[str]:
    """The LLVM IR text of up to ``parts`` modules that together define what ``module`` does;
    one text (``str(module)``) when there is nothing to balance."""
    if parts < 2 or module.metadata or module.namedmetadata:
        return [str(module)]
    texts = _texts(module)
    refs = _references(texts)
    g = module.globals
    cost = {n: _cost(g[n], text) for n, text in texts.items()}
    groups = sorted(_groups(module, refs), key=lambda s: -sum(cost[n] for n in s))
    grouped = set().union(*groups)
    owner: dict[str, int] = {}
    load = [0] * parts
    for name, v in g.items():  # the entry, mutable globals: part 0
        if name not in grouped and not _copyable(v) and (
                name in texts or getattr(v, "initializer", None) is not None):
            owner[name] = 0
            load[0] += cost.get(name, 0)
    for s in groups:  # largest first, to the lightest part
        p = load.index(min(load))
        for n in s:
            owner[n] = p
        load[p] += sum(cost[n] for n in s)
    used = sorted(set(owner.values()))
    if len(used) < 2:
        return [str(module)]
    # each part's definitions: its own and the copies of what they use
    mine = {p: _closure({n for n, q in owner.items() if q == p}, refs, module) for p in used}
    crossing = {t for p in used for n in mine[p] for t in refs.get(n, ())
                if owner.get(t, p) != p and g[t].linkage in ("internal", "private")}
    return [_render(module, texts, refs, mine[p], owner, crossing, p) for p in used]


def _hidden(text: str, v: ir.GlobalValue) -> str:
    """``v``'s definition with its internal linkage made hidden: one symbol, seen by the other
    parts, not outside the program."""
    if isinstance(v, ir.Function):
        return text.replace(f"define {v.linkage} ", "define hidden ", 1)
    return text.replace(f"= {v.linkage} ", "= hidden ", 1)


def _render(module: ir.Module, texts: dict[str, str], refs: dict[str, set[str]],
            mine: set[str], owner: dict[str, int], crossing: set[str], part: int) -> str:
    g = module.globals
    wanted = set(mine)
    for n in mine:
        wanted |= refs.get(n, set())
    lines = [f'; ModuleID = "{module.name}.{part}"', f'target triple = "{module.triple}"',
             f'target datalayout = "{module.data_layout}"', ""]
    lines += [t.get_declaration() for t in module.get_identified_types().values()]
    for name, v in g.items():
        if name in mine:
            text = texts.get(name) or str(v)
            lines.append(_hidden(text, v) if name in crossing else text)
        elif name in wanted:  # defined in another part, or outside (libm, intrinsics)
            lines.append(_declaration(v) if name in owner else str(v))
    return "\n".join(lines)
