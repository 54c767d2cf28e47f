"""The channel step, measured rather than assumed.

Engines pad channels to their SIMD block or tensor-core tile, or run counts off it on slower
kernels, so latency against channel count is not smooth: on ORT with AVX-512 a 3x3 conv at
48 channels ran 0.29 ms and at 49 channels 0.41 ms. Each target declares a step (ORT with
AVX-512: 16); `probe_step` times a few representative blocks at every channel count in a
range, step 1, and finds the step in the curve: the largest power of two whose multiples do
markedly more work per ms than the counts half a step off them.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from targets import Target, Timing

from .profile import BLOCK_TIMING

CANDIDATES = (2, 4, 8, 16, 32, 64)
TOLERANCE = 0.05  # multiples of a step must cost this much less per unit of work than the counts between
MIN_COUNTS = 3  # of each kind, to judge a step: with two, one odd timing decided it (a 32 on ORT's depthwise)


def _conv3x3(c: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU())


def _conv1x1(c: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(c, c, 1), nn.ReLU())


def _depthwise3x3(c: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(c, c, 3, padding=1, groups=c), nn.ReLU())


# name -> (the block at c channels in and out, how its work grows with c: c^2 dense, c depthwise)
BLOCKS: dict[str, tuple[Callable[[int], nn.Module], int]] = {
    "conv3x3": (_conv3x3, 2), "conv1x1": (_conv1x1, 2), "depthwise3x3": (_depthwise3x3, 1)}


def step_of(counts: Sequence[int], ms: Sequence[float], work_exponent: int = 2, tolerance: float = TOLERANCE,
            candidates: Sequence[int] = CANDIDATES) -> int:
    """The largest candidate step s at which the device shows structure: the median time per
    unit of work (ms / c^work_exponent) at multiples of s is at least `tolerance` below that
    at the counts half a step off them (odd multiples of s/2). A device whose latency grows
    smoothly with channels shows none (step 1); one that runs counts off a block of 16 on
    slower kernels shows 16. A step with fewer than MIN_COUNTS counts of either kind in
    `counts` is not judged (32:96, the default range, judges up to 16; widen it for more)."""
    cost = {c: t / c ** work_exponent for c, t in zip(counts, ms)}
    step = 1
    for s in sorted(candidates):
        on = [v for c, v in cost.items() if c % s == 0]
        half = [v for c, v in cost.items() if c % s == s // 2]
        if min(len(on), len(half)) >= MIN_COUNTS and np.median(on) <= (1 - tolerance) * np.median(half):
            step = s
    return step


def probe_step(target: Target, counts: Sequence[int], size: int = 28, batch: int = 1,
               timing: Timing = BLOCK_TIMING, tolerance: float = TOLERANCE,
               progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Time each representative block (c -> c channels on a `size` x `size` input) at every
    count in `counts` on `target`; each block's step by `step_of`, and the device's: the
    largest of them, since a group narrower than a block's tread loses that block its fast
    kernel while the other blocks lose nothing by rounding up to it."""
    t0 = time.perf_counter()
    curves: dict[str, list[list[float]]] = {}
    for name, (make, _) in BLOCKS.items():
        target.measure(target.build(make(counts[0]).eval(), torch.randn(batch, counts[0], size, size)), timing)  # warm
        for c in counts:
            torch.manual_seed(0)
            engine = target.build(make(c).eval(), torch.randn(batch, c, size, size))
            curves.setdefault(name, []).append([c, target.measure(engine, timing).median_ms])
            if progress:
                progress(f"{name} at {c} channels: {curves[name][-1][1]:.4f} ms")
    steps = {name: step_of([int(c) for c, _ in rows], [ms for _, ms in rows], BLOCKS[name][1], tolerance)
             for name, rows in curves.items()}
    declared = target.declared_step or target.channel_step
    return {"target": target.name, "fingerprint": target.fingerprint(), "declared_step": declared,
            "measured_step": max(steps.values()), "per_block": steps, "input": [batch, size, size],
            "counts": [int(counts[0]), int(counts[-1])], "tolerance": tolerance, "timing": timing.to_dict(),
            "curves": curves, "seconds": round(time.perf_counter() - t0, 1)}
