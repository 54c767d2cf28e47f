"""The public pruning entry points: analyse, choose units, rewrite, in one call."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.fx as fx

from .adabn import adabn
from .groups import analyze
from .importance import Criterion, scores, select
from .lower import as_inputs, lower
from .reconstruct import reconstruct
from .rewrite import apply
from .space import PruningSpace, Widths


def keep_mask(gm: fx.GraphModule, space: PruningSpace, widths: Widths | None,
              importance: str | Criterion | np.ndarray = "l1", calib_data: Iterable[Any] | None = None) -> np.ndarray:
    """Which units survive `widths` under `importance` (a criterion's name, a callable, or unit
    scores a caller already computed): the plan the rewrite applies. `calib_data`: training
    batches, for the criteria that select on data (thinet, lasso)."""
    resolved = space.resolve(widths)
    if resolved == space.full_widths():
        return np.ones(space.total_units, dtype=bool)
    unit_scores = importance if isinstance(importance, np.ndarray) else scores(gm, space, importance, calib_data)
    return select(space, resolved, unit_scores)


def rewrite(gm: fx.GraphModule, space: PruningSpace, widths: Widths | None,
            importance: str | Criterion | np.ndarray = "l1",
            example_inputs: torch.Tensor | Sequence[torch.Tensor] | None = None,
            calib_data: Iterable[Any] | None = None) -> fx.GraphModule:
    """Prune an already lowered and analysed graph; the result remembers its space and widths."""
    resolved = space.resolve(widths)
    keep = keep_mask(gm, space, resolved, importance, calib_data)
    inputs = as_inputs(example_inputs) if example_inputs is not None else None
    pruned = apply(gm, space, keep, inputs)
    pruned.meta["latprune"] = {"space": space, "widths": resolved}
    return pruned


def repaired(gm: fx.GraphModule, space: PruningSpace, widths: Widths, unit_scores: np.ndarray,
             example_inputs: torch.Tensor | Sequence[torch.Tensor], calib_data: Sequence[Any], refit: bool = True,
             seed: int = 0) -> tuple[fx.GraphModule, list[dict[str, Any]] | None]:
    """`gm` pruned to `widths` as a build delivers it before any fine-tune: rewritten,
    least-squares refitted (with `refit`; its per-layer records returned) and
    AdaBN-recalibrated on `calib_data`. One spelling for the build and the benchmarks that
    measure what a build delivers."""
    pruned = rewrite(gm, space, widths, unit_scores, example_inputs)
    layers = reconstruct(gm, pruned, space, keep_mask(gm, space, widths, unit_scores), calib_data,
                         seed=seed) if refit else None
    return adabn(pruned, calib_data), layers


def prune(model: torch.nn.Module, example_inputs: torch.Tensor | Sequence[torch.Tensor],
          widths: Widths | None, importance: str | Criterion = "l1", channel_step: int = 1,
          leaf_modules: Iterable[str | type] = (), calib_data: Iterable[Any] | None = None) -> fx.GraphModule:
    """A smaller model with physically sliced parameters. `widths` maps group ids to channels
    kept (clamped to each group's channel_step); None keeps everything. `calib_data`: training
    batches, for importance "thinet" or "lasso"."""
    gm = lower(model, example_inputs, leaf_modules)
    space = analyze(gm, channel_step=channel_step)
    return rewrite(gm, space, widths, importance, example_inputs, calib_data)
