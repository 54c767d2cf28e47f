"""Network Slimming's sparsity training (Liu et al., ICCV 2017), before the search.

Training with an L1 penalty on every BatchNorm scale drives the scales of channels the task
does not need toward zero; ranking units by |scale| afterwards (the `bn_gamma` criterion) then
prunes channels that were already contributing little. Here it fine-tunes the trained model
(SGD, cosine LR, cross-entropy plus `penalty` * sum |gamma|, the L1 term as its subgradient
added to the scales' gradients, as in the paper's code) for `epochs` passes over the training
batches; the search and the rewrite then work on the sparsity-trained model, and the report
says what it cost in accuracy.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .core.errors import BadInputError
from .core.rules import module_rule
from .dataspec import Batch
from .distill import sgd_fit


def _scales(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules()
            if (r := module_rule(m)) is not None and r.scale(m) is not None and isinstance(m.weight, nn.Parameter)]


def sparsity_train(model: nn.Module, train: list[Batch], epochs: float, penalty: float = 0.03, lr: float = 0.01,
                   seed: int = 0, progress: bool = True) -> nn.Module:
    """A copy of `model` trained with an L1 penalty on its BatchNorm scales (see module docstring)."""
    if not _scales(model):
        raise BadInputError("sparsity training penalises BatchNorm scales and this model has none; "
                            "use another importance (l1, thinet, lasso)")

    def l1_subgradient(m: nn.Module) -> None:
        with torch.no_grad():
            for s in _scales(m):
                if s.grad is not None:  # a BatchNorm the loss does not reach has none
                    s.grad.add_(penalty * torch.sign(s))

    return sgd_fit(model, train, epochs, lambda m, x, y: F.cross_entropy(m(x), y), lr, seed, "sparsity training",
                   progress, l1_subgradient)


def scale_summary(model: nn.Module) -> dict[str, float]:
    """How sparse the BatchNorm scales are: the share under 1e-2 and the median |gamma|."""
    v = torch.cat([s.detach().abs().flatten() for s in _scales(model)]).numpy()
    return {"scales": int(v.size), "share_below_1e-2": float(np.mean(v < 1e-2)), "median_abs": float(np.median(v))}
