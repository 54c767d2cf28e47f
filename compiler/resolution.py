"""Input resolution as a knob (YOLOv5 practice): fewer pixels buy latency without touching channels.

A model at resolution r is the model behind a bilinear resize of its input to r x r, in the
graph itself: the engine keeps the original's input shape, so the user's data, metric and
preprocessing are unchanged, and its latency includes the resize. Every allowed resolution
gets its own blocks in the latency table and its own search; the build keeps the best-scoring
candidate under the budget across them (compiler.pipeline, CompileOptions.resolutions).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .core.errors import BadInputError


class Resized(nn.Module):
    """`model` at `size`: its input resized (bilinear, no antialiasing) before it runs."""

    def __init__(self, model: nn.Module, size: int) -> None:
        super().__init__()
        self.model, self.size = model, (int(size), int(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(F.interpolate(x, size=self.size, mode="bilinear", align_corners=False))


def check_resolutions(resolutions: Sequence[int], inputs: Sequence[torch.Tensor]) -> list[int]:
    """The allowed resolutions other than the native one, largest first; refuses what cannot
    apply: more than one input, an input that is not an N x C x H x W image, or a size that is
    not a whole number from 8 up to the native size."""
    if not resolutions:
        return []
    if len(inputs) != 1 or inputs[0].dim() != 4:
        raise BadInputError("resolutions resize one N x C x H x W image input; this model takes "
                            f"{[list(t.shape) for t in inputs]}: leave resolutions out")
    native = max(inputs[0].shape[-2:])
    bad = [r for r in resolutions if isinstance(r, bool) or not isinstance(r, int) or not 8 <= r <= native]
    if bad:
        raise BadInputError(f"resolutions must be whole numbers from 8 to the input's size {native}; got {bad}")
    return sorted({r for r in resolutions if (r, r) != tuple(inputs[0].shape[-2:])}, reverse=True)
