"""AdaBN re-estimates BatchNorm statistics exactly and touches nothing else."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import compiler


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 4, 1), nn.BatchNorm2d(4))


def test_adabn_gives_the_exact_statistics_of_the_calibration_data() -> None:
    model = net().eval()
    batches = [torch.randn(16, 3, 8, 8) * 2 + 1 for _ in range(5)]
    weights = [p.clone() for p in model.parameters()]
    compiler.adabn(model, [(b, torch.zeros(16)) for b in batches])
    with torch.no_grad():
        feats = [model[0](b) for b in batches]
    # the equal-weight average of the per-batch statistics (BN's momentum=None cumulative average)
    mean = torch.stack([f.mean((0, 2, 3)) for f in feats]).mean(0)
    var = torch.stack([f.var((0, 2, 3), unbiased=True) for f in feats]).mean(0)
    torch.testing.assert_close(model[1].running_mean, mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model[1].running_var, var, rtol=1e-4, atol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))
    assert not model.training and not model[1].training and model[1].momentum == 0.1


def test_adabn_rejects_bad_batches() -> None:
    with pytest.raises(compiler.BadInputError, match="NaN"):
        compiler.adabn(net(), [torch.full((2, 3, 8, 8), float("nan"))])
    with pytest.raises(compiler.BadInputError, match="no calibration batches"):
        compiler.adabn(net(), [])
