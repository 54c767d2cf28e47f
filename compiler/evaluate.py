"""A search candidate's fitness: rewrite to its Widths, AdaBN, then the metric on held-out data.

The graph is lowered, analysed and scored for importance once; a candidate costs one
rewrite (a deep copy with sliced weights, no tracing), a few no-grad calibration batches
and one evaluation pass. With a `Screen`, every candidate is first scored cheaply (fewer
AdaBN batches, a subset of the held-out images) and only those the search asks for again
(`full`) get the full score. Scores are cached by Widths, in memory and optionally on disk,
so a rerun with the same model, data and settings resumes instead of re-evaluating. With a
PruningNet (compiler.pruningnet, MetaPruning) a candidate's weights are generated for its
widths instead of sliced from the trained model; AdaBN and the metric follow as before.
"""
from __future__ import annotations

import contextlib
import json
import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

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
from .data import labelled
from .pruningnet import PruningNet

CACHE_SCHEMA = "latprune.scores/2"
SAVE_EVERY = 4
# images per forward when scoring: at 28x28, 256-image batches ran 1.3x (ResNet-20) and 2.3x
# (MobileNetV2-small) slower than 64-image ones on one core (activations outgrow the cache)
EVAL_CHUNK = 64
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


def top1(data: Iterable[Any], max_batches: int | None = None, max_images: int | None = None) -> Top1:
    """An eval_fn: top-1 accuracy over (input, label) batches (the first `max_images` images of
    them, when given), held in memory once."""
    batches = materialize(data, max_batches, "evaluation data")
    if max_images is not None:
        batches = _first_images(batches, max_images)
    for b in batches:
        if not labelled(b):
            raise BadInputError("evaluation data must yield (input, label) tensor pairs")
        if not torch.isfinite(b[0]).all():
            raise BadInputError("evaluation data contains NaN or infinite inputs")
    return Top1([(x[i:i + EVAL_CHUNK], y[i:i + EVAL_CHUNK]) for x, y in batches for i in range(0, len(y), EVAL_CHUNK)])


class Top1:
    """Top-1 accuracy over batches held in memory: a class rather than a closure, so that it can
    be sent to worker processes."""

    def __init__(self, batches: list[Any]) -> None:
        self.batches = batches

    def __call__(self, model: nn.Module) -> float:
        model.eval()
        hits = total = 0
        with torch.no_grad():
            for x, y in self.batches:
                hits += int((model(x).argmax(1) == y).sum())
                total += len(y)
        return hits / total


def _first_images(batches: list[Any], n: int) -> list[Any]:
    out, have = [], 0
    for b in batches:
        if have >= n:
            break
        take = b if not isinstance(b, (tuple, list)) else type(b)(t[:n - have] for t in b)
        out.append(take)
        have += len(take[0] if isinstance(take, (tuple, list)) else take)
    return out


PRECISIONS = ("auto", "fp32", "bf16")


def native_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic of its own (AVX512-BF16 or AMX), where oneDNN's bf16
    convolutions run about twice as fast as fp32 (ResNet-20 screen, AMD EPYC: AdaBN 200 -> 107 ms,
    256 images 362 -> 189 ms); elsewhere bf16 is emulated and slower."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def resolve_precision(precision: str) -> str:
    """'auto' -> bf16 where the CPU computes it natively, else fp32; 'fp32' / 'bf16' as given."""
    if precision not in PRECISIONS:
        raise BadInputError(f"unknown screen precision {precision!r}; choose one of {PRECISIONS}")
    if precision == "auto":
        return "bf16" if native_bf16() else "fp32"
    return precision


def computing_in(precision: str) -> contextlib.AbstractContextManager[Any]:
    """The context a screened candidate's AdaBN and metric run in: bf16 autocast (convolutions and
    matmuls in bf16, BatchNorm statistics kept in fp32), or nothing for fp32."""
    return torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()


@dataclass(frozen=True)
class Screen:
    """The cheap first score: `adabn_batches` calibration batches (the first of the full ones)
    and `metric` on a subset of the held-out data, computed in `precision` (fp32 or bf16; the
    full score is always fp32). tools/bench_fitness.py measures how well it keeps the full
    score's ranking."""

    metric: EvalFn
    adabn_batches: int
    precision: str = "fp32"

    def key(self) -> str:
        """What a score cache key needs to tell these screened scores from others (fp32: nothing,
        so caches written before bf16 screens stay valid)."""
        return "" if self.precision == "fp32" else f"|screen-{self.precision}"


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


@dataclass(frozen=True)
class Job:
    """Everything scoring a candidate needs, and nothing else: what a worker receives once."""

    gm: fx.GraphModule
    space: PruningSpace
    unit_scores: np.ndarray
    calib: list[Any]
    metric: EvalFn
    screen: Screen | None
    pruningnet: PruningNet | None = None  # candidates get its generated weights instead of sliced ones


Seconds = dict[str, float]


def score(job: Job, widths: Widths, screened: bool) -> tuple[float, Seconds]:
    """One candidate's score (rewrite, AdaBN, metric) and the seconds each stage took: the
    screen's cheap score when `screened`, else the full one."""
    cheap = job.screen if screened else None
    metric, batches = (cheap.metric, cheap.adabn_batches) if cheap else (job.metric, None)
    t0 = time.perf_counter()
    model = job.pruningnet.model(widths) if job.pruningnet is not None else \
        apply(job.gm, job.space, select(job.space, widths, job.unit_scores))
    if all(p.dim() != 5 for p in model.parameters()):  # 3-D convs have no channels_last
        model = model.to(memory_format=torch.channels_last)  # CPU convs: AdaBN 1.3-1.8x, eval 1.1-1.3x faster
    t1 = time.perf_counter()
    with computing_in(cheap.precision if cheap else "fp32"):
        adabn(model, job.calib, max_batches=batches)
        t2 = time.perf_counter()
        value = score_of(metric, model)
    return value, {"rewrite": t1 - t0, "adabn": t2 - t1, "eval": time.perf_counter() - t2}


class Pool(Protocol):
    """Scores candidates elsewhere (compiler.workers): results as they finish, by submission index."""

    def imap(self, items: list[tuple[Widths, bool]]) -> Iterator[tuple[int, tuple[float, Seconds]]]: ...


class Evaluator:
    """widths -> score (higher is better), with a cost split per stage and a score cache. With a
    `screen`, calling it gives the cheap score and `full()` the full one; without, both are the
    full score. With a `pool`, `many` scores a batch in parallel; what it returns does not
    depend on the pool."""

    def __init__(self, gm: fx.GraphModule, space: PruningSpace, unit_scores: np.ndarray,
                 calib_batches: list[Any], eval_fn: EvalFn, cache_path: Path | None = None,
                 cache_key: str = "", screen: Screen | None = None, pruningnet: PruningNet | None = None) -> None:
        self.gm, self.space, self.unit_scores, self.pruningnet = gm, space, unit_scores, pruningnet
        self.calib, self.eval_fn, self.screen = calib_batches, eval_fn, screen
        self.pool: Pool | None = None
        self.seconds = {"rewrite": 0.0, "adabn": 0.0, "eval": 0.0}
        self.evaluations = self.full_evaluations = 0
        self.cache_hits = 0
        self.cache_path, self.cache_key = cache_path, cache_key + (screen.key() if screen else "")
        self.scores, full = self._load_cache()  # scores: what the search ranks by
        self.full_scores = full if screen is not None else self.scores

    def job(self) -> Job:
        return Job(self.gm, self.space, self.unit_scores, self.calib, self.eval_fn, self.screen, self.pruningnet)

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

    def __call__(self, widths: Widths) -> float:
        """The search's score: the screen's when screening, else the full one."""
        return self.many([widths])[0]

    def full(self, widths: Widths) -> float:
        """The full score: every calibration batch, the whole held-out metric."""
        return self.many([widths], full=True)[0]

    def many(self, batch: Sequence[Widths], full: bool = False) -> list[float]:
        """Scores of a batch of candidates, in order: the search's (screened unless `full`). Those
        not cached are scored together, in the pool when there is one; each score is cached as it
        finishes, so an interrupted batch keeps what it finished."""
        screened = self.screen is not None and not full
        store = self.scores if screened else self.full_scores
        keys = [widths_key(self.space, w) for w in batch]
        todo = {k: w for k, w in zip(keys, batch) if k not in store}
        self.cache_hits += sum(k in store for k in keys) if screened or self.screen is None else 0
        items = [(w, screened) for w in todo.values()]
        job = self.job()
        results = self.pool.imap(items) if self.pool is not None else \
            ((i, score(job, w, s)) for i, (w, s) in enumerate(items))
        names = list(todo)
        for i, (value, seconds) in results:
            store[names[i]] = value
            for stage, t in seconds.items():
                self.seconds[stage] += t
            self.evaluations += screened or self.screen is None
            self.full_evaluations += not screened
            self._checkpoint()
        return [store[k] for k in keys]

    def _checkpoint(self) -> None:
        if (self.evaluations + self.full_evaluations) % SAVE_EVERY == 0:
            self.save()  # an interrupted search loses at most SAVE_EVERY evaluations

    def stats(self) -> dict[str, Any]:
        n = max(self.evaluations, 1)
        total = sum(self.seconds.values())
        return {"evaluations": self.evaluations, "full_evaluations": self.full_evaluations,
                "cache_hits": self.cache_hits, "screen": None if self.screen is None else
                {"adabn_batches": self.screen.adabn_batches, "precision": self.screen.precision},
                "weights": "sliced" if self.pruningnet is None else "pruningnet",
                "pruningnet_train_s": None if self.pruningnet is None else round(self.pruningnet.train_seconds, 2),
                "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
                "seconds_per_candidate": {k: round(v / n, 4) for k, v in self.seconds.items()},
                "candidates_per_second": round(self.evaluations / total, 3) if total else None}
