"""EagleEye's adaptive BatchNorm: re-estimate BN statistics of a pruned model on a few
training batches, no gradients. Pruning shifts every downstream activation distribution,
so the old running statistics are stale; recalibrated, a candidate's accuracy predicts its
fine-tuned accuracy far better (EagleEye, Li et al. 2020)."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn as nn

from .errors import BadInputError
from .rules import module_rule



def adabn(model: nn.Module, batches: Iterable[Any], max_batches: int | None = None) -> nn.Module:
    """Reset every BatchNorm's running stats and re-estimate them as the exact average over
    the batches (momentum=None), with only the BN layers in train mode. In place; returns model."""
    bns = [m for m in model.modules() if (r := module_rule(m)) is not None and r.running_stats
           and m.track_running_stats]
    if not bns:
        return model
    was_training = model.training
    saved = [(m, m.momentum) for m in bns]
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches, not an exponential one
        m.train()
    seen = 0
    try:
        with torch.no_grad():
            for batch in batches:
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                if not isinstance(x, torch.Tensor):
                    raise BadInputError(f"AdaBN batches must be tensors or (input, label) pairs, got {type(x).__name__}")
                if not torch.isfinite(x).all():
                    raise BadInputError("an AdaBN batch contains NaN or infinite values; check the calibration data")
                model(x)
                seen += 1
                if max_batches is not None and seen >= max_batches:
                    break
    finally:
        for m, momentum in saved:
            m.momentum = momentum
        model.train(was_training)
    if seen == 0:
        raise BadInputError("AdaBN got no calibration batches; give at least one training batch")
    return model
