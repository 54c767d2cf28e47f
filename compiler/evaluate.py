"""A search candidate's fitness: rewrite to its Widths, AdaBN, then the metric on held-out data.

The graph is lowered, analysed and scored for importance once; a candidate costs one
rewrite (a deep copy with sliced weights, no tracing), a few no-grad calibration batches
and one evaluation pass. Scores are cached by Widths, in memory and optionally on disk, so a
rerun with the same model, data and settings resumes instead of re-evaluating.
"""
from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable, Iterable
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

CACHE_SCHEMA = "latprune.scores/1"
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


def top1(data: Iterable[Any], max_batches: int | None = None) -> EvalFn:
    """An eval_fn: top-1 accuracy over (input, label) batches, held in memory once."""
    batches = materialize(data, max_batches, "evaluation data")
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
    """widths -> score (higher is better), with a cost split per stage and a score cache."""

    def __init__(self, gm: fx.GraphModule, space: PruningSpace, unit_scores: np.ndarray,
                 calib_batches: list[Any], eval_fn: EvalFn, cache_path: Path | None = None,
                 cache_key: str = "") -> None:
        self.gm, self.space, self.unit_scores = gm, space, unit_scores
        self.calib, self.eval_fn = calib_batches, eval_fn
        self.seconds = {"rewrite": 0.0, "adabn": 0.0, "eval": 0.0}
        self.evaluations = 0
        self.cache_hits = 0
        self.cache_path, self.cache_key = cache_path, cache_key
        self.scores: dict[str, float] = self._load_cache()

    def _load_cache(self) -> dict[str, float]:
        if self.cache_path is None or not self.cache_path.exists():
            return {}
        try:
            d = json.loads(self.cache_path.read_text())
            if d.get("schema") != CACHE_SCHEMA or d.get("key") != self.cache_key:
                return {}
            scores = {str(k): float(v) for k, v in d["scores"].items()}
            if all(math.isfinite(v) for v in scores.values()):
                return scores
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            pass
        warnings.warn(f"score cache {self.cache_path} is unreadable; it is rebuilt", stacklevel=2)
        return {}  # a cache is only an optimisation

    def save(self) -> None:
        if self.cache_path is not None:
            atomic_write_text(self.cache_path, json.dumps({"schema": CACHE_SCHEMA, "key": self.cache_key,
                                                           "scores": self.scores}) + "\n")

    def build(self, widths: Widths) -> fx.GraphModule:
        """The candidate model after rewrite and AdaBN."""
        t0 = time.perf_counter()
        model = apply(self.gm, self.space, select(self.space, widths, self.unit_scores))
        t1 = time.perf_counter()
        adabn(model, self.calib)
        self.seconds["rewrite"] += t1 - t0
        self.seconds["adabn"] += time.perf_counter() - t1
        return model

    def __call__(self, widths: Widths) -> float:
        key = widths_key(self.space, widths)
        if key in self.scores:
            self.cache_hits += 1
            return self.scores[key]
        model = self.build(widths)
        t0 = time.perf_counter()
        score = score_of(self.eval_fn, model)
        self.seconds["eval"] += time.perf_counter() - t0
        self.evaluations += 1
        self.scores[key] = score
        if self.evaluations % SAVE_EVERY == 0:
            self.save()  # an interrupted search loses at most SAVE_EVERY evaluations
        return score

    def stats(self) -> dict[str, Any]:
        n = max(self.evaluations, 1)
        total = sum(self.seconds.values())
        return {"evaluations": self.evaluations, "cache_hits": self.cache_hits,
                "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
                "seconds_per_candidate": {k: round(v / n, 4) for k, v in self.seconds.items()},
                "candidates_per_second": round(self.evaluations / total, 3) if total else None}
