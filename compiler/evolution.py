"""Pass 5: choose Widths under latency budgets: MetaPruning's evolution, EagleEye's random search,
or NetAdapt's greedy descent (a baseline to measure the other two against).

Genes are per-group indices into each group's allowed widths (multiples of the channel_step),
so every candidate lands on the hardware's channel steps. Latency comes from the table's
predictor (microseconds a candidate); fitness from the Evaluator (rewrite -> AdaBN -> metric).
Several budgets share one archive of evaluated candidates: one search, one result per budget.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
from tqdm import tqdm

from latency_tables import LatencyTable

from .core.budget import Budget, check_feasible, parse_budget
from .core.errors import BadInputError
from .evaluate import EvalFn, Evaluator, Screen, materialize, resolve_precision, top1, widths_key
from .workers import parallel
from .core.groups import analyze
from .core.importance import Criterion, scores
from .core.lower import lower
from .core.space import PruningSpace, Widths
from .pruningnet import PruningNet, trained

STRATEGIES = ("evolution", "random", "netadapt")
WEIGHTS = ("sliced", "pruningnet")  # what a candidate is scored with (tools/bench_estimators.py)
Batch = list[tuple[np.ndarray, str]]  # candidates' genes and origins, waiting to be scored together


@dataclass
class Candidate:
    """One evaluated Widths: predicted latency, score after AdaBN, and where it came from."""

    widths: Widths
    latency_ms: float
    score: float
    origin: str  # uniform | random | mutation | crossover | full
    evaluation: int  # order in which it was evaluated
    full_score: float | None = None  # the full score: = score without screening; when screening, only re-scored ones


def ranked(candidates: Iterable[Candidate], limit_ms: float) -> list[Candidate]:
    """The fully scored candidates under `limit_ms`, best first (full score, then the faster): the
    one order the search's pick, the build's refit choice and its device confirm share."""
    return sorted((c for c in candidates if c.latency_ms <= limit_ms and c.full_score is not None),
                  key=lambda c: (-c.full_score, c.latency_ms))


@dataclass
class BudgetResult:
    budget: str
    budget_ms: float
    widths: Widths
    latency_ms: float
    score: float
    uniform: Candidate | None = None  # uniform width scaling under the same budget: what the search must beat
    limit_ms: float | None = None  # what the search held predictions to: the budget less the safety margin
    margin: float = 0.0  # the safety margin used (a share of the prediction)


@dataclass
class SearchResult:
    """The best Widths per budget and the archive of every candidate seen."""

    results: list[BudgetResult]
    archive: list[Candidate]
    full_ms: float
    floor_ms: float
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def best(self) -> BudgetResult:
        return self.results[0]

    def ranked(self) -> list[Candidate]:
        """The archive's fully scored candidates under the first budget's limit, best first."""
        return ranked(self.archive, self.best.limit_ms if self.best.limit_ms is not None else self.best.budget_ms)

    def pareto(self) -> list[Candidate]:
        """Candidates no other candidate beats on both latency and score, fastest first."""
        front: list[Candidate] = []
        for c in sorted(self.archive, key=lambda c: (c.latency_ms, -c.score)):
            if not front or c.score > front[-1].score:
                front.append(c)
        return front

    def to_dict(self) -> dict[str, Any]:
        return {"results": [asdict(r) for r in self.results], "full_ms": self.full_ms, "floor_ms": self.floor_ms,
                "stats": self.stats, "archive": [asdict(c) for c in self.archive],
                "pareto": [c.evaluation for c in self.pareto()]}


class _Genes:
    """Genotype <-> Widths for the prunable groups of a space."""

    def __init__(self, space: PruningSpace) -> None:
        self.groups = space.prunable()
        if not self.groups:
            raise BadInputError("no channel group of this model can be pruned (see compiler.analyze(gm).summary()); "
                                 "nothing to search")
        self.allowed = [np.array(g.allowed()) for g in self.groups]
        self.top = np.array([len(a) - 1 for a in self.allowed])
        self.full = space.full_widths()

    def widths(self, genes: np.ndarray) -> Widths:
        w = dict(self.full)
        w.update({g.id: int(a[i]) for g, a, i in zip(self.groups, self.allowed, genes)})
        return w

    def ratio(self, r: float) -> np.ndarray:
        """Uniform width scaling: the allowed width nearest to r * size, per group."""
        return np.array([int(np.argmin(np.abs(a - r * g.size))) for g, a in zip(self.groups, self.allowed)])

    def random(self, rng: np.random.Generator) -> np.ndarray:
        """EagleEye-style random ratios: a random level, then per-group ratios scattered around it."""
        level = rng.uniform(0.1, 1.0)
        ratios = np.clip(rng.uniform(level - 0.3, level + 0.3, len(self.groups)), 0.0, 1.0)
        return np.array([int(np.argmin(np.abs(a - r * g.size))) for g, a, r in zip(self.groups, self.allowed, ratios)])


class _Search:
    def __init__(self, genes: _Genes, predict: Callable[[Widths], float], evaluate: Evaluator,
                 budgets: list[tuple[str, float]], rng: np.random.Generator, max_evaluations: int,
                 deadline: float | None, progress: bool, patience: int | None = None) -> None:
        self.g, self.predict, self.evaluate = genes, predict, evaluate
        self.budgets, self.rng = budgets, rng
        self.max_evaluations, self.deadline, self.patience = max_evaluations, deadline, patience
        self.last_gain = 0  # archive size when some budget's best score last rose
        self.archive: dict[str, Candidate] = {}
        self.uniforms: dict[float, np.ndarray | None] = {}
        self.bar = tqdm(total=max_evaluations, desc="search", disable=not progress, unit="cand", leave=False)

    def latency(self, genes: np.ndarray) -> float:
        return self.predict(self.g.widths(genes))

    def done(self) -> bool:
        return len(self.archive) >= self.max_evaluations or (self.deadline is not None and time.monotonic() > self.deadline) \
            or self.stalled()

    def stalled(self) -> bool:
        """No budget's best score has risen in the last `patience` candidates: the front stopped moving."""
        return self.patience is not None and len(self.archive) - self.last_gain >= self.patience

    def key(self, genes: np.ndarray) -> str:
        return widths_key(self.evaluate.space, self.g.widths(genes))

    def seen(self, genes: np.ndarray, batch: Sequence[tuple[np.ndarray, str]] = ()) -> bool:
        """Evaluated already, or waiting in `batch` to be."""
        key = self.key(genes)
        return key in self.archive or any(self.key(g) == key for g, _ in batch)

    def room(self, batch: Batch) -> bool:
        return len(self.archive) + len(batch) < self.max_evaluations

    def budget_for(self, batch: Batch) -> float:
        """Budgets take turns, one per candidate, counting those waiting in `batch`."""
        return self.budgets[(len(self.archive) + len(batch)) % len(self.budgets)][1]

    def add(self, batch: Batch) -> None:
        """Score a batch of new candidates together (in parallel when the evaluator has workers)
        and archive them in the batch's order."""
        widths = [self.g.widths(g) for g, _ in batch]
        before = self.best()
        for (genes, origin), w, score in zip(batch, widths, self.evaluate.many(widths)):
            self.archive[widths_key(self.evaluate.space, w)] = Candidate(
                w, self.latency(genes), score, origin, len(self.archive), None if self.evaluate.screen else score)
        after = self.best()
        if any(b is not None and (a is None or b.score > a.score) for a, b in zip(before.values(), after.values())):
            self.last_gain = len(self.archive)
        self.bar.update(len(batch))
        self.bar.set_postfix_str(" ".join(f"{k}:{b.score:.4f}" for k, b in after.items() if b) or "-")

    def repair(self, genes: np.ndarray, budget_ms: float, band: float = 0.0) -> np.ndarray | None:
        """Shrink random groups one step at a time (weighted by the latency each step saves)
        until the prediction meets the budget; None if even the floor would not. With `band`,
        then grow random groups while the prediction stays under the budget, until it is within
        `band` of it: a child far under its budget wastes the evaluation."""
        genes = genes.copy()
        lat = self.latency(genes)
        while lat > budget_ms:
            idx = np.nonzero(genes > 0)[0]
            if idx.size == 0:
                return None
            gains = []
            for i in idx:
                genes[i] -= 1
                gains.append(max(lat - self.latency(genes), 1e-9))
                genes[i] += 1
            genes[self.rng.choice(idx, p=np.array(gains) / np.sum(gains))] -= 1
            lat = self.latency(genes)
        open_ = list(np.nonzero(genes < self.g.top)[0])
        while band > 0 and lat < budget_ms * (1 - band) and open_:
            i = open_.pop(int(self.rng.integers(len(open_))))
            genes[i] += 1
            grown = self.latency(genes)
            if grown > budget_ms:
                genes[i] -= 1
            else:
                lat = grown
                if genes[i] < self.g.top[i]:
                    open_.append(i)
        return genes

    def best(self) -> dict[str, Candidate | None]:
        out: dict[str, Candidate | None] = {}
        for label, ms in self.budgets:
            ok = [c for c in self.archive.values() if c.latency_ms <= ms]
            out[label] = max(ok, key=lambda c: (c.score, -c.latency_ms)) if ok else None
        return out

    def uniform(self, ms: float) -> np.ndarray | None:
        """Uniform width scaling, the widest that meets the budget: the baseline to beat. Computed
        once per budget (the repair draws from the rng), so the seed and the reported baseline agree."""
        if ms not in self.uniforms:
            self.uniforms[ms] = self._uniform(ms)
        return self.uniforms[ms]

    def _uniform(self, ms: float) -> np.ndarray | None:
        lo, hi = 0.0, 1.0
        for _ in range(20):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if self.latency(self.g.ratio(mid)) <= ms else (lo, mid)
        genes = self.g.ratio(lo)
        return self.repair(genes, ms) if self.latency(genes) > ms else genes

    def seed_uniform(self) -> Batch:
        batch: Batch = []
        for _, ms in self.budgets:
            genes = self.uniform(ms)
            if genes is not None and self.room(batch) and not self.seen(genes, batch):
                batch.append((genes, "uniform"))
        return batch

    def uniform_baseline(self, ms: float) -> Candidate | None:
        """The uniform candidate for a budget, fully scored: from the archive, else evaluated now
        (outside it)."""
        genes = self.uniform(ms)
        if genes is None:
            return None
        w = self.g.widths(genes)
        c = self.archive.get(widths_key(self.evaluate.space, w)) or \
            Candidate(w, self.latency(genes), self.evaluate(w), "uniform", -1)
        if c.full_score is None:
            c.full_score = self.evaluate.full(w)
        return c

    def final(self, ms: float, rescore: int) -> Candidate | None:
        """The best candidate under `ms` by full score. When screening, the `rescore` best by
        screen score are scored in full first (together), and only they compete."""
        ok = [c for c in self.archive.values() if c.latency_ms <= ms]
        again = sorted(ok, key=lambda c: (-c.score, c.latency_ms))[:rescore if self.evaluate.screen else 0]
        for c, full in zip(again, self.evaluate.many([c.widths for c in again], full=True)):
            c.full_score = full
        top = ranked(ok, ms)
        return top[0] if top else None

    def sample_random(self, budget_ms: float, band: float, batch: Batch, tries: int = 2000) -> np.ndarray | None:
        """A random Widths, not yet seen, whose latency falls in [budget * (1 - band), budget]."""
        for _ in range(tries):
            genes = self.g.random(self.rng)
            if budget_ms * (1 - band) <= self.latency(genes) <= budget_ms and not self.seen(genes, batch):
                return genes
        return None

    def random_search(self, band: float, generation: int) -> None:
        """EagleEye: random Widths kept when they fall in a budget's band, budgets in turn, scored
        `generation` at a time (the draws do not depend on scores, so the batch size changes nothing)."""
        misses = 0
        while not self.done() and misses < 4 * len(self.budgets):
            batch: Batch = []
            while len(batch) < generation and self.room(batch) and misses < 4 * len(self.budgets):
                genes = self.sample_random(self.budget_for(batch), band, batch)
                if genes is None:
                    misses += 1
                else:
                    batch.append((genes, "random"))
            self.add(batch)

    def evolve(self, population: int, parents: int, mutation_prob: float, band: float, generation: int) -> None:
        """MetaPruning: seed with uniform scaling and random samples, then breed generations of
        `generation` children from the top-k of each budget (as the archive stood when the
        generation began) by mutation and crossover, repairing children that go over their
        budget. A generation is scored together, so workers can share it; generation=1 breeds
        each child from every score before it."""
        seeds = self.seed_uniform()
        while len(self.archive) + len(seeds) < population and self.room(seeds):
            genes = self.sample_random(self.budget_for(seeds), band, seeds)
            if genes is None:
                break
            seeds.append((genes, "random"))
        self.add(seeds)
        stale = 0
        while not self.done() and stale < 50:
            children: Batch = []
            while len(children) < generation and self.room(children) and stale < 50:
                child = self.child(self.budget_for(children), parents, mutation_prob, band)
                if child is None or self.seen(child[0], children):
                    stale += 1
                else:
                    children.append(child)
                    stale = 0
            self.add(children)

    def child(self, ms: float, parents: int, mutation_prob: float, band: float) -> tuple[np.ndarray, str] | None:
        """A child bred from the `parents` best under `ms`, repaired to fit it; None if none fits."""
        pool = sorted((c for c in self.archive.values() if c.latency_ms <= ms),
                      key=lambda c: (-c.score, c.latency_ms))[:parents]
        if not pool:
            return None
        genes_of = [self._genes(c.widths) for c in pool]
        if len(pool) > 1 and self.rng.random() < 0.5:
            a, b = self.rng.choice(len(pool), 2, replace=False)
            child, origin = np.where(self.rng.random(len(self.g.groups)) < 0.5, genes_of[a], genes_of[b]), "crossover"
        else:
            child, origin = self._mutate(genes_of[self.rng.integers(len(pool))], mutation_prob), "mutation"
        child = self.repair(child, ms, band)
        return None if child is None else (child, origin)

    def netadapt(self) -> None:
        """NetAdapt-style greedy descent: from the unpruned Widths, score dropping one grid step
        from each group (the proposals scored together), take the drop that loses the least
        score per ms of predicted latency it saves, and repeat until the tightest budget is met
        or the evaluations run out. Every proposal joins the archive, so each budget's pick is
        the best scored under it along the way. Uses no randomness."""
        genes = self.g.top.copy()
        if not self.seen(genes):
            self.add([(genes, "netadapt")])
        current = self.archive[self.key(genes)]
        tightest = min(ms for _, ms in self.budgets)
        while current.latency_ms > tightest and not self.done():
            proposals = []
            for i in np.nonzero(genes > 0)[0]:
                child = genes.copy()
                child[i] -= 1
                proposals.append(child)
            batch: Batch = []
            for child in proposals:
                if self.room(batch) and not self.seen(child, batch):
                    batch.append((child, "netadapt"))
            self.add(batch)
            step = self.cheapest_step(current, proposals)
            if step is None:
                return
            genes, current = step

    def cheapest_step(self, current: Candidate, proposals: list[np.ndarray]
                      ) -> tuple[np.ndarray, Candidate] | None:
        """The scored proposal that loses the least score per ms saved (ties: the one saving
        more); None when no scored proposal saves any predicted latency."""
        best: tuple[float, float, np.ndarray, Candidate] | None = None
        for child in proposals:
            c = self.archive.get(self.key(child))
            saved = current.latency_ms - c.latency_ms if c else 0.0
            if c is None or saved <= 0:
                continue
            rate = (current.score - c.score) / saved
            if best is None or (rate, -saved) < (best[0], -best[1]):
                best = (rate, saved, child, c)
        return None if best is None else (best[2], best[3])

    def _mutate(self, genes: np.ndarray, p: float) -> np.ndarray:
        child = genes.copy()
        hit = self.rng.random(len(child)) < p
        if not hit.any():
            hit[self.rng.integers(len(child))] = True
        steps = self.rng.choice([-2, -1, 1, 2], size=len(child))
        child[hit] = np.clip(child[hit] + steps[hit], 0, self.g.top[hit])
        return child

    def _genes(self, widths: Widths) -> np.ndarray:
        return np.array([int(np.searchsorted(a, widths[g.id])) for g, a in zip(self.g.groups, self.g.allowed)])


@dataclass(frozen=True)
class SearchOptions:
    """How the search runs. `channel_step` defaults to the table's. Evolution seeds `population`
    candidates, then breeds generations of `generation` children, each generation scored
    together (by `workers` local processes, or on the Ray cluster at `ray`; neither changes what
    is found). `iterations` counts generations of `population` candidates when given, at most
    `max_evaluations` candidates either way; `time_budget_s` only cuts it short, between
    generations. With
    `screen_images`, every candidate is scored on that many held-out images after AdaBN on
    `screen_adabn_batches` batches, in `screen_precision` ("auto": bf16 where the CPU computes it
    natively, else fp32), and the `rescore` best per budget are scored in full (fp32) before one
    is picked (tools/bench_fitness.py: how well the cheap score ranks). `patience` stops
    evolution or random search early once no budget's best score has risen in that many
    candidates (off by default: at 160 candidates evolution's front was still moving).
    `weights="pruningnet"` scores candidates with weights from a PruningNet trained first for
    `pruningnet_steps` steps on the labelled training batches (MetaPruning); the default,
    "sliced", scores the trained model's sliced weights (EagleEye)."""

    strategy: str = "evolution"
    channel_step: int | None = None
    importance: str | Criterion = "l1"
    max_evaluations: int = 100
    iterations: int | None = None
    time_budget_s: float | None = None
    population: int = 16
    generation: int = 1  # tools/bench_strategies.py: 1 was ahead of 8 on ResNet-20; workers need more
    parents: int = 6
    mutation_prob: float = 0.2
    band: float = 0.1
    adabn_batches: int = 8
    screen_images: int = 0
    screen_adabn_batches: int = 2
    screen_precision: str = "auto"
    rescore: int = 3
    patience: int | None = None
    weights: str = "sliced"
    pruningnet_steps: int = 300
    seed: int = 0
    force: bool = False
    progress: bool = True
    safety_margin: float | str = "auto"
    workers: int = 1
    ray: str | None = None

    def validate(self) -> None:
        m = self.safety_margin
        if not (m == "auto" or (isinstance(m, (int, float)) and not isinstance(m, bool) and 0 <= m < 1)):
            raise BadInputError(f"safety_margin must be 'auto' or a share in [0, 1), got {m!r}")
        if self.strategy not in STRATEGIES:
            raise BadInputError(f"unknown search strategy {self.strategy!r}; choose one of {STRATEGIES}")
        if self.patience is not None and (not isinstance(self.patience, int) or isinstance(self.patience, bool)
                                          or self.patience < 1 or self.strategy == "netadapt"):
            raise BadInputError(f"patience must be a whole number >= 1 (or None: off), for evolution or random "
                                f"(netadapt's best under the tightest budget only comes at its end); got "
                                f"{self.patience!r} with strategy {self.strategy!r}")
        resolve_precision(self.screen_precision)
        if self.weights not in WEIGHTS:
            raise BadInputError(f"unknown candidate weights {self.weights!r}; choose one of {WEIGHTS}")
        counts = {"max_evaluations": self.max_evaluations, "adabn_batches": self.adabn_batches,
                  "pruningnet_steps": self.pruningnet_steps,
                  "screen_adabn_batches": self.screen_adabn_batches, "rescore": self.rescore,
                  "population": self.population, "generation": self.generation, "workers": self.workers}
        low = {k: v for k, v in counts.items() if not (isinstance(v, int) and v >= 1)}
        if low or not (isinstance(self.screen_images, int) and self.screen_images >= 0):
            raise BadInputError(f"{low or {'screen_images': self.screen_images}}: these must be integers >= 1 "
                                "(screen_images >= 0; 0 scores every candidate in full)")

    def screen(self, val: Iterable[Any] | None) -> Screen | None:
        """The cheap first score on the first `screen_images` of the held-out batches `val`."""
        if not self.screen_images or val is None:
            return None
        return Screen(top1(val, max_images=self.screen_images), min(self.screen_adabn_batches, self.adabn_batches),
                      resolve_precision(self.screen_precision))

    def weights_key(self) -> str:
        """What a score cache key needs to tell PruningNet scores from sliced ones."""
        return "" if self.weights == "sliced" else f"|pruningnet{self.pruningnet_steps}"

    def pruningnet(self, gm: fx.GraphModule, space: PruningSpace, unit_scores: np.ndarray,
                   train: Iterable[Any]) -> PruningNet | None:
        """The trained PruningNet that scores candidates, when `weights` asks for one: fitted on
        the first `pruningnet_steps` batches of `train` (cycled when there are fewer)."""
        if self.weights != "pruningnet":
            return None
        batches = materialize(train, self.pruningnet_steps, "PruningNet training data")
        return trained(gm, space, unit_scores, batches, self.pruningnet_steps, self.seed, self.progress)

    def evaluations(self) -> int:
        if self.iterations is None:
            return self.max_evaluations
        return min(self.max_evaluations, self.population * (self.iterations + 1))


def _margin(setting: float | str, predictor: Callable[[Widths | None], float]) -> float:
    """The share a prediction may be low by. 'auto': the error bound the table states for this
    model (Predictor.error_pct, from its own leave-one-out validation), 0 where it has none."""
    if setting != "auto":
        return float(setting)
    error = getattr(predictor, "error_pct", lambda: None)()
    return error / 100 if error is not None else 0.0


def with_overrides(options: Any, overrides: dict[str, Any]) -> Any:
    """`options` with some fields replaced, naming an unknown one instead of a TypeError."""
    unknown = sorted(set(overrides) - {f.name for f in fields(options)})
    if unknown:
        raise BadInputError(f"unknown option(s) {unknown} for {type(options).__name__}; "
                            f"known: {sorted(f.name for f in fields(options))}")
    return replace(options, **overrides)


def search(model: nn.Module, example_inputs: torch.Tensor | Sequence[torch.Tensor], table: LatencyTable,
           calib_data: Iterable[Any], eval_fn: EvalFn | Iterable[Any], budgets: Sequence[str | float | Budget] = ("0.5x",),
           options: SearchOptions | None = None, *, fingerprint: dict[str, Any] | None = None,
           cache: str | Path | None = None, cache_key: str = "", **overrides: Any) -> SearchResult:
    """Per-group channel counts that maximise `eval_fn` (after AdaBN on `calib_data`) with
    predicted latency under each budget; `eval_fn` may also be held-out (input, label) batches,
    scored by top-1. `options` (or keyword overrides of its fields) say how the search runs.
    Deterministic for a seed. Screening (`screen_images`) needs `eval_fn` as batches."""
    opt = with_overrides(options or SearchOptions(), overrides)
    opt = replace(opt, channel_step=opt.channel_step or table.channel_step)
    opt.validate()
    t0 = time.perf_counter()
    gm = lower(model, example_inputs)
    space = analyze(gm, channel_step=opt.channel_step)
    if fingerprint is not None:
        table.check_target(fingerprint, opt.force)
    predictor = table.predictor(gm, example_inputs, space=space)
    if opt.screen_images and callable(eval_fn):
        raise BadInputError("screen_images scores candidates on a subset of held-out batches: give eval_fn as "
                            "(input, label) batches, or screen_images=0 with an eval function")
    calib = materialize(calib_data, opt.adabn_batches, "calibration data")
    unit = scores(gm, space, opt.importance, calib)
    evaluator = Evaluator(gm, space, unit, calib, eval_fn if callable(eval_fn) else top1(eval_fn),
                          Path(cache) if cache else None, cache_key + opt.weights_key(),
                          None if callable(eval_fn) else opt.screen(eval_fn),
                          opt.pruningnet(gm, space, unit, calib_data))
    return run_search(space, evaluator, predictor, budgets, opt, table.device, time.perf_counter() - t0)


def run_search(space: PruningSpace, evaluator: Evaluator, predictor: Callable[[Widths | None], float],
               budgets: Sequence[str | float | Budget], opt: SearchOptions, where: str,
               setup_s: float = 0.0) -> SearchResult:
    """The search over an analysed graph: what search() and the compile pipeline share, so a
    build lowers, analyses and scores importance once."""
    parsed = [parse_budget(b) for b in budgets]
    if not parsed:
        raise BadInputError("give at least one latency budget")
    t0 = time.perf_counter()
    genes = _Genes(space)
    full_ms = predictor(None)
    floor_ms = predictor(genes.widths(np.zeros(len(genes.groups), dtype=int)))
    labelled = [(b.label, b.ms(full_ms)) for b in parsed]
    check_feasible(dict(labelled), floor_ms, where, full_ms)
    margin = _margin(opt.safety_margin, predictor)
    limits = [(label, max(ms / (1 + margin), floor_ms)) for label, ms in labelled]
    rng = np.random.default_rng(opt.seed)
    deadline = time.monotonic() + opt.time_budget_s if opt.time_budget_s else None
    s = _Search(genes, predictor, evaluator, limits, rng, opt.evaluations(), deadline, opt.progress, opt.patience)
    try:
        with parallel(evaluator, opt.workers, opt.ray) as workers:
            if opt.strategy == "evolution":
                s.evolve(opt.population, opt.parents, opt.mutation_prob, opt.band, opt.generation)
            elif opt.strategy == "netadapt":
                s.netadapt()
            else:
                s.random_search(opt.band, opt.generation)
            searched_s = time.perf_counter() - t0
            best = {label: s.final(limit, opt.rescore) for label, limit in limits}
            missing = [label for label, c in best.items() if c is None]
            if missing:
                raise BadInputError(f"the search found no candidate under budget {missing} within {len(s.archive)} "
                                    "evaluations; allow more evaluations or a looser budget")
            results = [BudgetResult(label, ms, best[label].widths, best[label].latency_ms, best[label].full_score,
                                    s.uniform_baseline(limit), limit, margin)
                       for (label, ms), (_, limit) in zip(labelled, limits)]
    finally:
        s.bar.close()
        evaluator.save()  # with the full scores of the re-scored candidates and the baselines
    stats = {"strategy": opt.strategy, "seed": opt.seed, "channel_step": opt.channel_step, "workers": workers,
             "candidates": len(s.archive), "stopped_early": s.stalled(), "setup_seconds": round(setup_s, 3),
             "search_seconds": round(time.perf_counter() - t0, 3),
             "candidates_per_minute": round(60 * len(s.archive) / searched_s, 2) if searched_s else None,
             **evaluator.stats()}
    return SearchResult(results, sorted(s.archive.values(), key=lambda c: c.evaluation), full_ms, floor_ms, stats)
