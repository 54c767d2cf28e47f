"""Predicting a graph's latency from a table: sum of its blocks, then the model's correction.

The blocks are looked up at the channel counts a Widths gives every place (no rewrite),
so one prediction costs microseconds per block and a search can afford thousands.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.fx as fx

from compiler.core import analyze, lower
from compiler.core.hashing import digest, json_text
from compiler.core.space import PruningSpace, Widths

from .blocks import BlockUse, PlaceCounter, extract
from .errors import TableError

if TYPE_CHECKING:
    from .table import LatencyTable


def model_key(uses: list[BlockUse]) -> str:
    """Identity of a graph for its end-to-end correction: its blocks, in order, and their places."""
    return digest(json_text([[u.key, u.places, u.fixed] for u in uses]), length=16)


COVERAGE = 0.9  # the share of predictions an error bound is meant to hold
MIN_VARIANTS = 6  # on the step: the unpruned model and >= 5 random variants (profile measures 19, and 9 off it)
NOISY_PCT = 15.0  # profile noise (below) above which a table's error bars take the noise in


def error_bound(errors: Sequence[float]) -> float:
    """A bound meant to hold COVERAGE of predictions, from n errors measured on variants the fit
    did not see (leave-one-out on the step, the off-step checks off it): split conformal, the
    ceil(COVERAGE (n + 1))-th smallest, so the largest for n < 19 and the second largest for
    26. A new prediction whose error is exchangeable with these lands within it with chance at
    least k / (n + 1), whatever their spread. The rule before, 2.5x the median (a normal
    spread's 90th percentile), covered 75% of fresh variants on the development families and
    62% on held-out ones: these errors have a heavier tail than a normal spread."""
    e = np.sort(np.asarray(errors, dtype=np.float64))
    k = min(math.ceil(COVERAGE * (len(e) + 1)), len(e))
    return float(e[k - 1])


def stated_error(evidence: dict[str, Any] | None, n: int, key: str, largest: str) -> float | None:
    """error_bound over a record's stored errors (`key`); None with fewer than MIN_VARIANTS of
    them (leave-one-out over three points says nothing). A record written before the errors were
    kept (2026-12-06) has only their median and `largest`, never below error_bound's pick."""
    if evidence is None or n < MIN_VARIANTS:
        return None
    return error_bound(evidence.get(key) or [evidence[largest]])


def profile_noise_pct(record: dict[str, Any]) -> float | None:
    """How busy the machine was while a model was profiled: the spread (p10 to p90, % of the
    median) of the unpruned model's time, measured beside each end-to-end variant. Variants are
    judged against it, so drift cancels in the correction's fit and its leave-one-out errors;
    the block timings have nothing beside them and carry it whole. Quiet profiles here spread
    by 2-11%; profiles on a 2-core host whose neighbours slowed it spread by 42-54%, and their
    predictions then missed by a median of 10-33% with leave-one-out errors of 3.5-20%. None
    with fewer than MIN_VARIANTS such timings."""
    beside = [v["unpruned_beside_ms"] for v in record.get("variants", []) + record.get("off_step", [])
              if "unpruned_beside_ms" in v]
    if len(beside) < MIN_VARIANTS:
        return None
    p10, p50, p90 = np.percentile(beside, [10, 50, 90])
    return float((p90 - p10) / p50 * 100)


def noisy(noise_pct: float | None) -> bool:
    """Whether a profile's noise (profile_noise_pct) is too much for its block timings to be trusted."""
    return noise_pct is not None and noise_pct > NOISY_PCT


def noise_warning(name: str, noise_pct: float | None) -> str | None:
    """The warning for a model profiled on a busy machine, or None for a quiet profile."""
    if not noisy(noise_pct):
        return None
    return (f"the machine was busy while {name} was profiled: the unpruned model's time varied by "
            f"{noise_pct:.0f}% (p10 to p90; a quiet profile stays under {NOISY_PCT:.0f}%), so its block timings "
            f"carry that noise and predictions can be off by about half of it (error bars widened to "
            f"{noise_pct / 2:.0f}%); profile it again into a new table on a quiet machine (nothing else "
            "running, e.g. `taskset -c 1 latprune profile ...`)")


class Predictor:
    """widths -> predicted ms for one graph under one table."""

    def __init__(self, table: LatencyTable, model: torch.nn.Module | fx.GraphModule, example_inputs: Any,
                 space: PruningSpace | None = None) -> None:
        gm = model if isinstance(model, fx.GraphModule) and space is not None else lower(model, example_inputs)
        self.space = space if space is not None else analyze(gm)
        _, self.uses = extract(gm, self.space, table.fuses)
        self.counter = PlaceCounter(self.space)
        self.key = model_key(self.uses)
        missing = sorted({u.key for u in self.uses if u.key not in table.entries})
        if missing:
            raise TableError(f"the latency table has no entry for {len(missing)} block(s) of this model, "
                             f"e.g. {missing[0][:160]}; profile this model on this target "
                             "(`latprune profile`, it extends and resumes the table)")
        compiled = {k: table.entries[k].compile(table.overhead_ms) for k in {u.key for u in self.uses}}
        self._look = [(compiled[u.key], [self.counter.row[p] if p else None for p in u.places], u.fixed)
                      for u in self.uses]
        corr = table.models.get(self.key, {}).get("correction")
        self.corrected = corr is not None
        self.coef = np.array(corr["coef"] if corr else [1.0, 0.0, 0.0], dtype=np.float64)
        self.fallback_scale = float(corr.get("fallback_scale", 1.0)) if corr else 1.0
        self.fit_error_pct = table.models.get(self.key, {}).get("fit_error_pct")
        self.variants = len(table.models.get(self.key, {}).get("variants", []))
        self.off_step_error_pct = table.models.get(self.key, {}).get("off_step_error_pct")
        self.noise_pct = profile_noise_pct(table.models.get(self.key, {}))
        self.channel_step = table.channel_step
        self.overhead_ms = table.overhead_ms

    def _values(self, widths: Widths | None) -> list[list[int]]:
        counts = self.counter.counts(self.counter.vector(self.space.resolve(widths)))
        return [[int(counts[r]) if r is not None else f for r, f in zip(rows, fixed)] for _, rows, fixed in self._look]

    def priced(self, widths: Widths | None = None) -> list[tuple[float, bool]]:
        """Per-use (block latency in ms, whether on the engine's fallback kernels) at these
        widths, in graph order."""
        return self._priced(self._values(widths))

    def _priced(self, counts: list[list[int]]) -> list[tuple[float, bool]]:
        out = []
        for (fn, _, _), values in zip(self._look, counts):
            try:
                out.append(fn.price(values))
            except ValueError as exc:
                raise TableError(f"channel counts {values} fall outside the table's grid ({exc}); "
                                 "profile this model to extend it") from None
        return out

    def blocks_ms(self, widths: Widths | None = None) -> list[float]:
        """Per-use block latency (ms) at these widths, in graph order."""
        return [ms for ms, _ in self.priced(widths)]

    def features(self, widths: Widths | None = None) -> np.ndarray:
        """[sum of block ms on the fast kernels, weights in MB (fp32), 1, sum on the fallback
        kernels]. The end-to-end correction is fit on the first three: isolated blocks run with
        their weights in cache where a whole graph streams them from memory, and an isolated
        blocked-layout block pays the reorders into and out of its layout that a chain of them
        does not. A block on the fallback kernels has no reorders and is measured to cost in
        the graph what it costs alone (MobileNetV2 at 96 px, 35 plain convs: 1.67 ms in the
        graph, 1.69 ms alone), so it enters the prediction as it is."""
        counts = self._values(widths)  # once: this runs for every candidate of a search
        mb = sum(u.weights(v) for u, v in zip(self.uses, counts)) * 4 / 2**20
        priced = self._priced(counts)
        return np.array([sum(ms for ms, slow in priced if not slow), mb, 1.0,
                         sum(ms for ms, slow in priced if slow)])

    def error_pct(self, widths: Widths | None = None) -> float | None:
        """How far off a prediction for these widths may be, in %: meant as a 90% bound
        (error_bound, split conformal). On the channel step it is taken over the leave-one-out
        errors of this model's end-to-end correction; off it (engines change kernels and insert
        layout reorders there), over the errors of the off-step variants profile measured to
        check it. For a model profiled on a busy machine (noise over NOISY_PCT), at least half
        the noise. None where the table has no such evidence: fewer than MIN_VARIANTS measured
        variants of that kind."""
        bound = self.bound_pct(widths)
        if bound is None or not noisy(self.noise_pct):
            return bound
        return max(bound, self.noise_pct / 2)

    def bound_pct(self, widths: Widths | None = None) -> float | None:
        """error_pct before a busy profile's noise widens it: the bound the profile's own
        errors give, which tools/bench_variant_timing.py checks against fresh variants."""
        if not self.corrected:
            return None
        resolved = self.space.resolve(widths)
        off = any(w % self.channel_step and w != g.size for g in self.space.groups if (w := resolved[g.id]) is not None)
        if off:
            e = self.off_step_error_pct
            return stated_error(e, e["n"] if e else 0, "abs", "max_abs")
        return stated_error(self.fit_error_pct, self.variants, "loo_abs", "loo_max_abs")

    def __call__(self, widths: Widths | None = None) -> float:
        """Predicted ms; refused below the engine's empty run, which no engine beats: a linear
        correction with a negative offset, taken far below the variants it was fitted on, can
        otherwise return a small or negative number with full confidence. A correction with a
        negative coefficient other than the offset (older versions fitted them) is refused: it
        predicts wider widths faster, which the search would seek out."""
        if np.delete(self.coef, 2).min() < 0:  # all but the offset
            raise TableError(f"this model's end-to-end correction in the latency table has a negative "
                             f"block-sum, weight or squared coefficient ({self.coef.tolist()}): it predicts wider widths "
                             "faster. Older latprune versions fitted such corrections; profile this model again "
                             "(`latprune profile`: it keeps the measured variants and refits them)")
        ms = corrected(self.features(widths), self.coef, self.fallback_scale)
        if not ms >= self.overhead_ms:
            raise TableError(f"the table predicts {ms:.4f} ms for these widths, below an empty engine run "
                             f"({self.overhead_ms:.4f} ms): they lie far below the variants this model's "
                             "correction was fitted on; profile this model again (`latprune profile`) with "
                             "widths this small among its variants")
        return ms


def corrected(features: np.ndarray, coef: np.ndarray, fallback_scale: float = 1.0) -> np.ndarray | float:
    """Predicted ms from features (one row or many; rows written before the fallback-kernel sum
    existed have three columns): the correction over the first three and the block sum
    squared (`coef` [block sum, weight MB, 1, block sum squared]; three long before the squared
    form existed), plus the fourth feature scaled as the model's off-step variants measured it
    (profile.fit_fallback)."""
    f, c = np.asarray(features, dtype=np.float64), np.asarray(coef, dtype=np.float64)
    out = design(f)[..., :len(c)] @ c + (fallback_scale * f[..., 3] if f.shape[-1] > 3 else 0.0)
    return float(out) if np.ndim(out) == 0 else out


def design(x: np.ndarray) -> np.ndarray:
    """The correction's features [block sum, weight MB, 1, block sum squared] from the first
    three (rows or one row)."""
    x = np.asarray(x, dtype=np.float64)
    return np.concatenate([x[..., :3], x[..., :1] ** 2], axis=-1)
