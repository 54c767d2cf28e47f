"""Pass 3: rank the units inside each group, and pick which ones a Widths keeps.

A unit's score is aggregated over every weight that touches it: producer filters (output
dim), consumer columns (input dim) and, for `bn_gamma`, the BatchNorm scales (Network
Slimming). Criteria are pluggable: `register_importance(name, fn)` or pass a callable.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn

from .errors import BadInputError
from .propagate import CONV, CONV_T
from .space import PruningSpace, Widths

Criterion = Callable[[fx.GraphModule, PruningSpace], np.ndarray]
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _weight_slices(gm: fx.GraphModule, space: PruningSpace):
    """Yield (place units, per-position weight slice matrix) for every weighted module call."""
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        m = gm.get_submodule(node.target)
        w = getattr(m, "weight", None)
        if not isinstance(w, torch.Tensor) or not isinstance(m, CONV + CONV_T + (nn.Linear,)):
            continue
        w = w.detach().float()
        out_place = space.places.get(node.name)
        src = node.args[0]
        in_place = space.places.get(src.name) if isinstance(src, fx.Node) else None
        is_t = isinstance(m, CONV_T)
        out_dim = out_place.dim if out_place else None
        want_out = len(node.meta["tensor_meta"].shape) - 1 if isinstance(m, nn.Linear) else 1
        if out_place is not None and out_dim == want_out:
            per_out = (w.transpose(0, 1) if is_t else w).flatten(1)
            yield out_place.units, per_out
        if in_place is None or getattr(m, "groups", 1) == getattr(m, "in_channels", 0) > 1:
            continue  # depthwise: the input and output are one unit; counted above
        want_in = len(src.meta["tensor_meta"].shape) - 1 if isinstance(m, nn.Linear) else 1
        if in_place.dim != want_in:
            continue
        groups = getattr(m, "groups", 1)
        if is_t or groups == 1:
            per_in = (w if is_t else w.transpose(0, 1)).flatten(1)
        else:  # grouped: input position p feeds the filters of block p // (in / groups)
            opg, ipg = w.shape[0] // groups, w.shape[1]
            blocks = w.reshape(groups, opg, ipg, -1).permute(0, 2, 1, 3)
            per_in = blocks.reshape(groups * ipg, -1)
        yield in_place.units, per_in


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
        if node.op == "call_module" and isinstance(m := gm.get_submodule(node.target), _BN) and m.affine:
            place = space.places.get(node.name)
            if place is not None and place.dim == 1:
                items.append((place.units, m.weight.detach().abs().numpy()))
    score, touched = _accumulate(space, items)
    fallback = l1(gm, space)
    for g in space.groups:
        sl = slice(g.unit_start, g.unit_start + g.units)
        if not touched[sl].any():
            score[sl] = fallback[sl]
    return score


IMPORTANCE: dict[str, Criterion] = {"l1": l1, "l2": l2, "bn_gamma": bn_gamma}


def register_importance(name: str, fn: Criterion) -> None:
    """Add a criterion: fn(gm, space) -> one score per unit (space.total_units), higher = keep."""
    IMPORTANCE[name] = fn


def scores(gm: fx.GraphModule, space: PruningSpace, importance: str | Criterion) -> np.ndarray:
    fn = importance if callable(importance) else IMPORTANCE.get(importance)
    if fn is None:
        raise BadInputError(f"unknown importance {importance!r}; choose one of {sorted(IMPORTANCE)} or pass a callable")
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
        if k >= g.units:
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
