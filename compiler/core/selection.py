"""Data-driven channel selection: ThiNet and LASSO, as importance criteria.

Both judge a unit by what its removal does to the *next* layers' outputs on calibration data
(compiler.core.contributions), not by its own weights. The originals select per layer for one
target width; here each yields one ranking per group, computed once on the unpruned model, so
every candidate of the search (any width) selects from the same ranking:

- `thinet` (Luo et al. 2017): greedily remove the unit whose removal, together with those
  already removed, changes the consumers' sampled outputs least; a unit's score is how late
  it goes.
- `lasso` (He et al. 2017): regress the consumers' outputs on the units' contributions with an
  L1 penalty on the unit coefficients (the LASSO path, scikit-learn's LARS); a unit's score
  is how large a penalty it survives. Pair it with `reconstruct` (compiler.core.reconstruct)
  for the paper's least-squares refit of the consumers.

Groups that no conv or linear reads (see contributions.py) keep a fallback ranking (L1:
compiler.core.importance registers `thinet` and `lasso` on top of this module).
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch.fx as fx
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import lars_path

from .contributions import unit_contributions
from .space import PruningSpace


def thinet_order(z: np.ndarray) -> np.ndarray:
    """Scores 0..U-1: the greedy removal order (0 goes first). With the Gram matrix G, the
    error of removing T plus u is |r|^2 + 2 (Z^T r)_u + G_uu, and Z^T r moves by a column of G."""
    g = z.T @ z
    u = len(g)
    zr, removed = np.zeros(u), np.zeros(u, dtype=bool)
    score = np.empty(u)
    for step in range(u):
        cost = np.where(removed, np.inf, 2 * zr + np.diag(g))
        pick = int(np.argmin(cost))  # ties: lower index goes first
        removed[pick], score[pick] = True, step
        zr += g[:, pick]
    return score


def lasso_order(z: np.ndarray) -> np.ndarray:
    """Scores: the units ranked by the largest penalty from which on they stay in the LASSO
    fit of the full output; ties (never in the fit) by their contribution's norm."""
    y = z.sum(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # collinear units: the path is still valid
        alphas, _, coefs = lars_path(z, y, method="lasso")
    nz = coefs != 0
    stays = np.full(len(z.T), -1.0)
    for u in range(len(stays)):
        off = np.nonzero(~nz[u])[0]
        first = off[-1] + 1 if len(off) else 0  # nonzero from this step of the path to its end
        if first < len(alphas):
            stays[u] = alphas[first]
    order = np.lexsort((np.linalg.norm(z, axis=0), stays))  # ascending: least important first
    score = np.empty(len(stays))
    score[order] = np.arange(len(stays))
    return score


def ranked(fallback: np.ndarray, gm: fx.GraphModule, space: PruningSpace, batches: Iterable[Any],
           order: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Unit scores: `order` of each group's contributions, `fallback` for groups no consumer reads."""
    score = fallback.copy()
    z = unit_contributions(gm, space, batches)
    for g in space.prunable():
        if g.id in z:
            score[g.unit_start:g.unit_start + g.units] = order(z[g.id])  # compared within a group only
    return score
