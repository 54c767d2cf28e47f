"""Small models for the CLI tests, loaded as `tests/cli_models.py:NAME`."""
from __future__ import annotations

import torch.nn as nn


def tiny() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)).eval()


def untraceable() -> nn.Module:
    class Gate(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    return nn.Sequential(nn.Conv2d(3, 8, 3), Gate()).eval()


def not_a_model() -> int:
    return 3


def small_fmnist() -> nn.Module:
    """A two-conv net for 1x28x28 images: small enough to profile on TVM inside a test."""
    return nn.Sequential(nn.Conv2d(1, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.Conv2d(32, 64, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)).eval()
