"""Einsum, lowered to transposes, reshapes, batched MATMULs and sums.

Each operand gets one label per axis (a letter, or ``.i`` for the i-th axis an ellipsis
stands for, right-aligned across operands). Repeated labels within an operand take the
diagonal; a size-1 ellipsis axis against a larger one is dropped (it broadcasts); labels that
no later operand and not the output need are summed out. Operands then contract left to right,
two at a time, as one MATMUL: [batch, rows, contracted] @ [batch, contracted, columns] with
the operands transposed into that order (attention's 'bhqk,bhkd->bhqd' needs no transpose;
a constant operand's transpose folds at import).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from ..ir import Reduce
from .convert import Ctx, Val, converter, prod

Labels = list[str]
ELLIPSIS = "..."


def _term(cx: Ctx, term: str) -> list[str]:
    """'b...ij' -> ['b', '...', 'i', 'j']."""
    if not re.fullmatch(r"[a-zA-Z]*(\.\.\.)?[a-zA-Z]*", term):
        raise cx.error(f"bad einsum term '{term}'")
    head, _, tail = term.partition(ELLIPSIS)
    return [*head, ELLIPSIS, *tail] if ELLIPSIS in term else list(term)


def _expand(cx: Ctx, term: list[str], rank: int, ell: int) -> Labels:
    """Labels for each axis of an operand of ``rank`` (``ell``: the widest ellipsis)."""
    letters = len(term) - (ELLIPSIS in term)
    if ELLIPSIS not in term:
        if letters != rank:
            raise cx.error(f"term '{''.join(term)}' has {letters} labels for rank {rank}")
        return term
    own = rank - letters
    if own < 0:
        raise cx.error(f"term '{''.join(term)}' has more labels than rank {rank}")
    at = term.index(ELLIPSIS)
    return term[:at] + [f".{ell - own + i}" for i in range(own)] + term[at + 1:]


def parse(cx: Ctx, equation: str, ranks: Sequence[int]) -> tuple[list[Labels], Labels]:
    """The labels of every input axis and of the output's axes."""
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = [_term(cx, t) for t in lhs.split(",")]
    if len(terms) != len(ranks):
        raise cx.error(f"equation '{equation}' has {len(terms)} operands, the node "
                       f"{len(ranks)} inputs")
    ell = max((r - len(t) + 1 for t, r in zip(terms, ranks) if ELLIPSIS in t), default=0)
    labels = [_expand(cx, t, r, ell) for t, r in zip(terms, ranks)]
    dots = [f".{i}" for i in range(ell)]
    if arrow:
        out = _term(cx, rhs)
        if ELLIPSIS in out:
            at = out.index(ELLIPSIS)
            out = out[:at] + dots + out[at + 1:]
    else:  # implicit: the ellipsis axes, then the letters used once, in alphabetical order
        counts = Counter(a for t in terms for a in t if a != ELLIPSIS)
        out = dots + sorted(a for a, k in counts.items() if k == 1)
    known = {a for ls in labels for a in ls}
    if len(set(out)) != len(out) or not set(out) <= known:
        raise cx.error(f"output of '{equation}' repeats a label or names one no input has")
    return labels, out


def _diagonal(cx: Ctx, x: Val, labels: Labels) -> tuple[Val, Labels]:
    """Take the diagonal of every label repeated within one operand ('ii->i', '...ii->...i'):
    the two axes moved last and flattened, then every (n+1)-th element."""
    while len(set(labels)) != len(labels):
        a = next(a for a in labels if labels.count(a) > 1)
        i = labels.index(a)
        j = labels.index(a, i + 1)
        shape = cx.shape(x)
        if shape[i] != shape[j]:
            raise cx.error(f"label '{a}' has sizes {shape[i]} and {shape[j]}")
        rest = [k for k in range(len(labels)) if k not in (i, j)]
        n = shape[i]
        x = cx.reshape(cx.transpose(x, [*rest, i, j]), [*(shape[k] for k in rest), n * n])
        x = cx.slice(x, [0] * len(rest) + [0], [1] * len(rest) + [n + 1],
                     [*(shape[k] for k in rest), n])
        labels = [labels[k] for k in rest] + [a]
    return x, labels


def _sum_out(cx: Ctx, x: Val, labels: Labels, drop: set[str]) -> tuple[Val, Labels]:
    axes = [i for i, a in enumerate(labels) if a in drop]
    if not axes:
        return x, labels
    kept = [i for i in range(len(labels)) if i not in axes]
    shape = cx.shape(x)
    x = cx.reshape(cx.reduce(Reduce.SUM, x, axes), [shape[i] for i in kept])
    return x, [labels[i] for i in kept]


def _arrange(cx: Ctx, x: Val, labels: Labels, order: Labels, flat: Sequence[int]) -> Val:
    """``x`` transposed to ``order`` and reshaped to ``flat``."""
    return cx.reshape(cx.transpose(x, [labels.index(a) for a in order]), flat)


def _contract(cx: Ctx, a: tuple[Val, Labels], b: tuple[Val, Labels], keep: set[str],
              size: dict[str, int]) -> tuple[Val, Labels]:
    """One batched MATMUL over the labels shared by both operands and not kept."""
    (x, la), (y, lb) = a, b
    x, la = _sum_out(cx, x, la, set(la) - set(lb) - keep)
    y, lb = _sum_out(cx, y, lb, set(lb) - set(la) - keep)
    batch = [c for c in la if c in lb and c in keep]
    inner = [c for c in la if c in lb and c not in keep]
    rows = [c for c in la if c not in lb]
    cols = [c for c in lb if c not in la]
    m, k, n = (prod([size[c] for c in g]) for g in (rows, inner, cols))
    lead = [prod([size[c] for c in batch])] if batch else []
    z = cx.matmul(_arrange(cx, x, la, batch + rows + inner, [*lead, m, k]),
                  _arrange(cx, y, lb, batch + inner + cols, [*lead, k, n]))
    out = batch + rows + cols
    return cx.reshape(z, [size[c] for c in out]), out


@converter("Einsum", since=12)
def einsum(cx: Ctx) -> Val:
    xs = cx.present()
    if not xs:
        raise cx.error("needs at least one input")
    labels, out = parse(cx, str(cx.attr("equation", "")), [len(cx.shape(x)) for x in xs])
    ops = [_diagonal(cx, x, ls) for x, ls in zip(xs, labels)]
    size: dict[str, int] = {}
    for x, ls in ops:
        for a, d in zip(ls, cx.shape(x)):
            if size.get(a, 1) not in (1, d) and d != 1:
                raise cx.error(f"label '{a}' has sizes {size[a]} and {d}")
            size[a] = max(size.get(a, d), d)
    # a size-1 axis against a larger one broadcasts: drop it from that operand
    ops = [(cx.reshape(x, [d for c, d in zip(ls, cx.shape(x)) if d == size[c]]),
            [c for c, d in zip(ls, cx.shape(x)) if d == size[c]]) for x, ls in ops]
    acc = ops[0]
    for i, nxt in enumerate(ops[1:], start=2):
        keep = set(out).union(*(ls for _, ls in ops[i:]))
        acc = _contract(cx, acc, nxt, keep, size)
    x, ls = _sum_out(cx, *acc, set(acc[1]) - set(out))
    return cx.transpose(x, [ls.index(c) for c in out])
