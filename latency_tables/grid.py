"""Channel grids and staircase-aware interpolation over them.

Latency is a staircase in channel count: engines pad channels to their SIMD block (ORT's
NCHWc block is 8 on AVX2, 16 on AVX-512), so a count off the step runs on a slower path,
often slower than the next step up, and by how much depends on how far off it is (a count
that is a multiple of 4 may keep the fast kernel, padded; an odd one falls to a plain one).
A grid therefore holds only counts on the step (plus the full size), interpolation runs
between on-step points, and a count off the step is priced as the next step up times a
penalty measured for that block at an off-step count of the same residue class.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def grid_values(least: int, full: int, channel_step: int, points: int = 6) -> list[int]:
    """Up to `points` counts on the channel step from `least` to `full`, evenly spread, plus `full`."""
    q = channel_step
    if least >= full:
        return [full]
    first = max(q, -(-least // q) * q)
    aligned = list(range(first, full + 1, q))
    if len(aligned) > points:
        idx = np.unique(np.rint(np.linspace(0, len(aligned) - 1, points)).astype(int))
        aligned = [aligned[i] for i in idx]
    return sorted(set(aligned) | {full})


def off_step_probes(values: Sequence[int], step: int, structure: int = 1) -> list[int]:
    """The off-step counts measured to price a block's penalty, one per residue class (the
    counts' common divisor with the step: `residue_class`). Engines choose kernels by such
    divisibility (ONNX Runtime runs a conv on its blocked NCHWc kernels only when its input
    channels are a multiple of 4 or below its block; a depthwise conv only at multiples of 4),
    so one probe cannot price every off-step count. Each is a count the op can have (a
    multiple of `structure`, a grouped conv's group count), the one of its class nearest half
    a step below a middle on-step value; empty when none is off the step."""
    on = [v for v in values if v % step == 0 and v >= 2 * step]
    if not on:
        return []
    top = on[len(on) // 2]
    best: dict[int, int] = {}
    for v in range(top - 1, top - step, -1):
        if v % structure == 0 and v % step:
            c = residue_class(v, step)
            if c not in best or abs(v - (top - step // 2)) < abs(best[c] - (top - step // 2)):
                best[c] = v
    return [best[c] for c in sorted(best, reverse=True)]


def residue_class(v: int, step: int) -> int:
    """gcd(v, step): the divisibility an engine's kernel choice turns on (16 on the step)."""
    return math.gcd(int(v), int(step))


def step_class(v: int, step: int) -> int:
    """The class an engine's kernel choice is labelled by: 0 below the step, else
    residue_class (ORT: input channels below its block take the blocked kernels whatever
    their divisibility)."""
    return 0 if int(v) < step else residue_class(v, step)


def bracket(values: np.ndarray, v: float) -> tuple[int, int, float]:
    """Indices of the grid values around v and the weight of the upper one (linear;
    extrapolates below the grid, clamped at zero latency by the caller)."""
    n = len(values)
    if n == 1:
        return 0, 0, 0.0
    j = int(np.searchsorted(values, v))
    if j < n and values[j] == v:
        return j, j, 0.0
    if j == 0:
        j = 1
    if j >= n:
        raise ValueError(f"{v:g} is above the grid's largest value {values[-1]:g}")
    lo, hi = values[j - 1], values[j]
    return j - 1, j, float((v - lo) / (hi - lo))


def on_step(v: int, values: np.ndarray, step: int) -> tuple[int, bool]:
    """The count to look up for v, and whether v is off the step (and so pays the penalty).
    Counts in the grid are exact; off-step counts above the last step use the full size."""
    if v in values or v % step == 0:
        return v, False
    up = -(-v // step) * step
    if up > values[-1]:
        return v, False
    return up, True
