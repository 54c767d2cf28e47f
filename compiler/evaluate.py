"""A search candidate's fitness: rewrite to its Widths, AdaBN, then the metric on held-out data.

The graph is lowered, analysed and scored for importance once; a candidate costs one
rewrite (a deep copy with sliced weights, no tracing), a few no-grad calibration batches
and one evaluation pass. With a `Screen`, every candidate is first scored cheaply (fewer
AdaBN batches, a subset of the held-out images) and only those the search asks for again
(`full`) get the full score. Scores are cached by Widths, in memory and optionally on disk,
so a rerun with the same model, data and settings resumes instead of re-evaluating.
"""
from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn

from .core.adabn import adabn
from .core.atomic import atomic_write_text
from .core.errors import BadInputError
from .core.importance import select
from .core.rewrite import apply
from .core.space import PruningSpace, Widths

CACHE_SCHEMA = "latprune.scores/2"
SAVE_EVERY = 4
EvalFn = Callable[[nn.Module], float]


def materialize(data: Iterable[Any], max_batches: int | None, what: str) -> list[Any]:
    """The first batches of `data` as a list, so every candidate sees the very same batches."""
    out = []
    try:
        for batch in data:
            out.append(batch)
            if max_batches is not None and len(out) >= max_batches:
                break
    except TypeError:
        raise BadInputError(f"{what} must be an iterable of batches, got {type(data).__name__}") from None
    if not out:
        raise BadInputError(f"{what} yielded no batches")
    return out


def top1(data: Iterable[Any], max_batches: int | None = None, max_images: int | None = None) -> EvalFn:
    """An eval_fn: top-1 accuracy over (input, label) batches (the first `max_images` images of
    them, when given), held in memory once."""
    batches = materialize(data, max_batches, "evaluation data")
    if max_images is not None:
        batches = _first_images(batches, max_images)
    for b in batches:
        if not (isinstance(b, (tuple, list)) and len(b) == 2 and all(isinstance(t, torch.Tensor) for t in b)):
            raise BadInputError("evaluation data must yield (input, label) tensor pairs")
        if not torch.isfinite(b[0]).all():
            raise BadInputError("evaluation data contains NaN or infinite inputs")

    def metric(model: nn.Module) -> float:
        model.eval()
        hits = total = 0
        with torch.no_grad():
            for x, y in batches:
                hits += int((model(x).argmax(1) == y).sum())
                total += len(y)
        return hits / total

    return metric


def _first_images(batches: list[Any], n: int) -> list[Any]:
    out, have = [], 0
    for b in batches:
        if have >= n:
            break
        take = b if not isinstance(b, (tuple, list)) else type(b)(t[:n - have] for t in b)
        out.append(take)
        have += len(take[0] if isinstance(take, (tuple, list)) else take)
    return out


@dataclass(frozen=True)
class Screen:
    """The cheap first score: `adabn_batches` calibration batches (the first of the full ones)
    and `metric` on a subset of the held-out data. tools/bench_fitness.py measures how well
    it keeps the full score's ranking."""

    metric: EvalFn
    adabn_batches: int


def score_of(eval_fn: EvalFn, model: nn.Module) -> float:
    """eval_fn(model) as a finite float, or a BadInputError saying what it returned instead."""
    value = eval_fn(model)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise BadInputError(f"eval_fn returned a {type(value).__name__} ({str(value)[:40]!r}); it must return a "
                            "number, higher is better")
    if not math.isfinite(float(value)):
        raise BadInputError(f"eval_fn returned {value}; it must return a finite number (check the evaluation "
                            "data for NaN)")
    return float(value)


def widths_key(space: PruningSpace, widths: Widths) -> str:
    return ",".join(str(widths[g.id]) for g in space.groups)


class Evaluator:
    """widths -> score (higher is better), with a cost split per stage and a score cache. With a
    `screen`, calling it gives the cheap score and `full()` the full one; without, both are the
    full score."""

    def __init__(self, gm: fx.GraphModule, space: PruningSpace, unit_scores: np.ndarray,
                 calib_batches: list[Any], eval_fn: EvalFn, cache_path: Path | None = None,
                 cache_key: str = "", screen: Screen | None = None) -> None:
        self.gm, self.space, self.unit_scores = gm, space, unit_scores
        self.calib, self.eval_fn, self.screen = calib_batches, eval_fn, screen
        self.seconds = {"rewrite": 0.0, "adabn": 0.0, "eval": 0.0}
        self.evaluations = self.full_evaluations = 0
        self.cache_hits = 0
        self.cache_path, self.cache_key = cache_path, cache_key
        self.scores, full = self._load_cache()  # scores: what the search ranks by
        self.full_scores = full if screen is not None else self.scores

    def _load_cache(self) -> tuple[dict[str, float], dict[str, float]]:
        if self.cache_path is None or not self.cache_path.exists():
            return {}, {}
        try:
            d = json.loads(self.cache_path.read_text())
            if d.get("schema") != CACHE_SCHEMA or d.get("key") != self.cache_key:
                return {}, {}
            scores, full = ({str(k): float(v) for k, v in d[part].items()} for part in ("scores", "full"))
            if all(math.isfinite(v) for v in (*scores.values(), *full.values())):
                return scores, full
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            pass
        warnings.warn(f"score cache {self.cache_path} is unreadable; it is rebuilt", stacklevel=2)
        return {}, {}  # a cache is only an optimisation

    def save(self) -> None:
        if self.cache_path is not None:
            atomic_write_text(self.cache_path, json.dumps({"schema": CACHE_SCHEMA, "key": self.cache_key,
                                                           "scores": self.scores,
                                                           "full": self.full_scores if self.screen else {}}) + "\n")

    def build(self, widths: Widths, adabn_batches: int | None = None) -> fx.GraphModule:
        """The candidate model after rewrite and AdaBN (on the first `adabn_batches` batches)."""
        t0 = time.perf_counter()
        model = apply(self.gm, self.space, select(self.space, widths, self.unit_scores))
        t1 = time.perf_counter()
        adabn(model, self.calib, max_batches=adabn_batches)
        self.seconds["rewrite"] += t1 - t0
        self.seconds["adabn"] += time.perf_counter() - t1
        return model

    def __call__(self, widths: Widths) -> float:
        """The search's score: the screen's when screening, else the full one."""
        if self.screen is None:
            return self.full(widths)
        key = widths_key(self.space, widths)
        if key not in self.scores:
            self.scores[key] = self._score(widths, self.screen.metric, self.screen.adabn_batches)
            self.evaluations += 1
            self._checkpoint()
        else:
            self.cache_hits += 1
        return self.scores[key]

    def full(self, widths: Widths) -> float:
        """The full score: every calibration batch, the whole held-out metric."""
        key = widths_key(self.space, widths)
        if key not in self.full_scores:
            self.full_scores[key] = self._score(widths, self.eval_fn, None)
            self.full_evaluations += 1
            if self.screen is None:
                self.evaluations += 1
            self._checkpoint()
        elif self.screen is None:
            self.cache_hits += 1
        return self.full_scores[key]

    def _score(self, widths: Widths, metric: EvalFn, adabn_batches: int | None) -> float:
        model = self.build(widths, adabn_batches)
        t0 = time.perf_counter()
        score = score_of(metric, model)
        self.seconds["eval"] += time.perf_counter() - t0
        return score

    def _checkpoint(self) -> None:
        if (self.evaluations + self.full_evaluations) % SAVE_EVERY == 0:
            self.save()  # an interrupted search loses at most SAVE_EVERY evaluations

    def stats(self) -> dict[str, Any]:
        n = max(self.evaluations, 1)
        total = sum(self.seconds.values())
        return {"evaluations": self.evaluations, "full_evaluations": self.full_evaluations,
                "cache_hits": self.cache_hits, "screen": None if self.screen is None else
                {"adabn_batches": self.screen.adabn_batches},
                "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
                "seconds_per_candidate": {k: round(v / n, 4) for k, v in self.seconds.items()},
                "candidates_per_second": round(self.evaluations / total, 3) if total else None}
