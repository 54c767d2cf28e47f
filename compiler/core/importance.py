"""Pass 3: rank the units inside each group, and pick which ones a Widths keeps.

A unit's score is aggregated over every weight that touches it: producer filters (output
dim), consumer columns (input dim) and, for `bn_gamma`, the BatchNorm scales (Network
Slimming). `thinet` and `lasso` (compiler.core.selection) read calibration data instead: a
criterion with `needs_data = True` is called fn(gm, space, batches). Criteria are pluggable:
`register_importance(name, fn)` or pass a callable.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch.fx as fx

from .errors import BadInputError
from .rules import module_rule
from .selection import lasso_order, ranked, thinet_order
from .space import PruningSpace, Widths

Criterion = Callable[[fx.GraphModule, PruningSpace], np.ndarray]


def _weight_slices(gm: fx.GraphModule, space: PruningSpace):
    """Yield (place units, per-position weight slice matrix) for every module call whose rule
    names weight slices (conv, linear, or a user's registered op)."""
    for node in gm.graph.nodes:
        if node.op != "call_module" or (rule := module_rule(m := gm.get_submodule(node.target))) is None:
            continue
        src = node.args[0] if node.args else None
        in_place = space.places.get(src.name) if isinstance(src, fx.Node) else None
        yield from rule.weight_slices(m, node, space.places.get(node.name), in_place)


def _accumulate(space: PruningSpace, items) -> tuple[np.ndarray, np.ndarray]:
    score = np.zeros(space.total_units)
    touched = np.zeros(space.total_units, dtype=bool)
    for units, vals in items:
        real = units >= 0
        np.add.at(score, units[real], vals[real])
        touched[units[real]] = True
    return score, touched


def l1(gm: fx.GraphModule, space: PruningSpace) -> np.ndarray:
    """Sum of |w| over every weight slice of the unit (L1-norm filter pruning, grouped)."""
    return _accumulate(space, ((u, w.abs().sum(1).numpy()) for u, w in _weight_slices(gm, space)))[0]


def l2(gm: fx.GraphModule, space: PruningSpace) -> np.ndarray:
    """Sum of the L2 norms of the unit's weight slices."""
    return _accumulate(space, ((u, w.norm(dim=1).numpy()) for u, w in _weight_slices(gm, space)))[0]


def bn_gamma(gm: fx.GraphModule, space: PruningSpace) -> np.ndarray:
    """Network Slimming: |gamma| of the BatchNorms in the group; groups without a BN fall back to L1."""
    items = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or (rule := module_rule(m := gm.get_submodule(node.target))) is None:
            continue
        gamma, place = rule.scale(m), space.places.get(node.name)
        if gamma is not None and place is not None and place.dim == 1:
            items.append((place.units, gamma.numpy()))
    score, touched = _accumulate(space, items)
    fallback = l1(gm, space)
    for g in space.groups:
        sl = slice(g.unit_start, g.unit_start + g.units)
        if not touched[sl].any():
            score[sl] = fallback[sl]
    return score


def thinet(gm: fx.GraphModule, space: PruningSpace, batches: Iterable[Any]) -> np.ndarray:
    """ThiNet's greedy reconstruction-error order on calibration data (compiler.core.selection)."""
    return ranked(l1(gm, space), gm, space, batches, thinet_order)


def lasso(gm: fx.GraphModule, space: PruningSpace, batches: Iterable[Any]) -> np.ndarray:
    """LASSO channel selection's path order on calibration data (compiler.core.selection)."""
    return ranked(l1(gm, space), gm, space, batches, lasso_order)


thinet.needs_data = True
lasso.needs_data = True
IMPORTANCE: dict[str, Criterion] = {"l1": l1, "l2": l2, "bn_gamma": bn_gamma, "thinet": thinet, "lasso": lasso}


def register_importance(name: str, fn: Criterion) -> None:
    """Add a criterion: fn(gm, space) -> one score per unit (space.total_units), higher = keep;
    fn(gm, space, batches) when fn.needs_data is true."""
    IMPORTANCE[name] = fn


def needs_data(importance: str | Criterion) -> bool:
    fn = importance if callable(importance) else IMPORTANCE.get(importance)
    return bool(getattr(fn, "needs_data", False))


def scores(gm: fx.GraphModule, space: PruningSpace, importance: str | Criterion,
           batches: Iterable[Any] | None = None) -> np.ndarray:
    """One score per unit; `batches` (training batches) for a criterion that reads data."""
    fn = importance if callable(importance) else IMPORTANCE.get(importance)
    if fn is None:
        raise BadInputError(f"unknown importance {importance!r}; choose one of {sorted(IMPORTANCE)} or pass a callable")
    if getattr(fn, "needs_data", False):
        if batches is None:
            raise BadInputError(f"importance {importance!r} selects channels on calibration data: give training "
                                "batches (compile and search pass their calib_data; with prune/rewrite, compute "
                                f"compiler.importance_scores(gm, space, {importance!r}, batches) and pass those)")
        s = np.asarray(fn(gm, space, batches), dtype=np.float64)
    else:
        s = np.asarray(fn(gm, space), dtype=np.float64)
    if s.shape != (space.total_units,):
        raise BadInputError(f"importance {importance!r} returned shape {s.shape}, expected ({space.total_units},)")
    return s


def select(space: PruningSpace, widths: Widths, unit_scores: np.ndarray) -> np.ndarray:
    """Keep mask over all units: the top-scoring units of each group (ties: lower index).
    A grouped-conv group keeps the same number in each of its blocks."""
    keep = np.ones(space.total_units, dtype=bool)
    widths = space.resolve(widths)
    for g in space.groups:
        k = widths[g.id] // g.unit
        if not g.prunable or k >= g.units:  # a frozen group keeps all, however its units split
            continue
        sl = slice(g.unit_start, g.unit_start + g.units)
        s = unit_scores[sl]
        blocks = np.asarray(g.unit_blocks) if g.blocks > 1 else np.zeros(g.units, dtype=np.int64)
        per = k // g.blocks
        mask = np.zeros(g.units, dtype=bool)
        for b in range(g.blocks):
            idx = np.nonzero(blocks == b)[0]
            best = idx[np.lexsort((idx, -s[idx]))[:per]]
            mask[best] = True
        keep[sl] = mask
    return keep
