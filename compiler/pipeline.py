"""The whole pass as one build step: lower -> analyze -> latency table (cached per target
fingerprint) -> search -> rewrite -> AdaBN -> optional KD fine-tune -> emit -> verify -> report.

Build-system behaviour: the same inputs and seed give the same outputs; a build key (a hash of
the model's graph and weights, input shapes, target fingerprints, budget, options and data)
makes an unchanged rebuild return at once from out_dir; tables and search scores live in a
cache folder, so an interrupted compile resumes; out_dir is staged beside itself and swapped
in whole, so it never holds a half-written build.
"""
from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
from filelock import FileLock, Timeout

import latency_tables
from latency_tables import LatencyTable
from latency_tables.predict import noise_warning
from latency_tables.profile import MODEL_TIMING, VARIANTS
from targets import Artifact, Take, Target, settle

from .core.adabn import adabn
from .core.api import keep_mask, repaired, rewrite
from .core.atomic import atomic_write_text, umask
from .core.budget import Budget, parse_budget, schedule
from .core.cost import macs, params
from .core.errors import BadInputError, BusyError, InfeasibleBudgetError, VerificationError
from .core.groups import analyze
from .core.hashing import digest, json_text
from .core.importance import needs_data, scores
from .core.lower import as_inputs, lower
from .core.masking import invariant_error
from .core.memory import check_fits
from .pruningnet import HIDDEN
from .core.reconstruct import reconstruct
from .core.rules import RewriteError
from .core.serialize import load
from .core.space import PruningSpace, Widths
from .dataspec import Data, check_labels
from .distill import finetune
from .emit import emit, verify
from .evaluate import EvalFn, Evaluator, materialize, score_of, top1
from .evolution import Candidate, SearchOptions, SearchResult, run_search, with_overrides
from .report import render
from .resolution import Resized, check_resolutions
from .slimming import scale_summary, sparsity_train

REPORT_SCHEMA = "latprune.report/1"
_PACKAGE = os.path.dirname(os.path.abspath(__file__))
OUT_MARKER = ".latprune-out"  # in every folder latprune builds: only such folders (or empty ones) are replaced


@dataclass(frozen=True)
class CompileOptions:
    """How compile() builds. Every field but those in NOT_KEYED is part of the build key.

    `verify_engines=False` emits without timing (a cross-compiled target with no device
    attached; the report's status is then "unverified"). `adabn_batches` training batches
    re-estimate BN statistics per candidate (fewer for big models). `shipped_tables=False`
    profiles afresh instead of starting from a shipped table measured on this very device.
    `memory_limit` ('auto', a size such as '16G', or None) refuses a build whose estimated
    footprint would not fit. `safety_margin` keeps predictions that much under the budget ('auto':
    the table's own validation error for the model, 0 without one). With a device attached, up to
    `confirm` of the best candidates are built and timed before one is kept (see _confirm_pass).
    `out_dir` is replaced only when latprune built it (or it is
    empty); concurrent builds into it queue on a lock (`wait=False`: BusyError at once).
    `check` asserts after the rewrite that the pruned model equals the masked original (on in
    tests); `dump_dir` receives the graph and pruning space after every pass. `importance` "thinet"
    and "lasso" select channels on calibration data; `reconstruct` refits, by least squares, the
    layers that read pruned channels before AdaBN (compiler.core.reconstruct); with it,
    `refit_candidates` K > 1 refits the search's K best candidates (by their AdaBN score) and
    keeps the best refitted one. `sparsity_epochs` > 0
    first trains the model with an L1 penalty `sparsity` on its BatchNorm scales (Network
    Slimming, compiler.slimming); importance "slimming" ranks by those scales and requires it.
    `steps` K > 1 prunes iteratively: K-1 intermediate budgets (geometric from the unpruned
    prediction to the budget), each searched, rewritten, refitted, AdaBN-recalibrated and
    fine-tuned for `step_epochs` (KD from the original) before the final search starts from it.
    `resolutions` (e.g. (24, 20)) also searches the model behind an input resize to each of
    them (compiler.resolution), one search per resolution, and keeps the best under the budget;
    with steps, the steps prune at the native resolution and the last search is the one that
    also tries the others. `workers` local processes (or the Ray cluster at `ray`) score search
    candidates in parallel without changing what is found (not part of the build key);
    evolution scores `generation` children at a time, so workers need it >= their number."""

    out_dir: str | Path = "build/latprune"
    cache_dir: str | Path | None = None
    finetune_epochs: float = 0.0
    strategy: str = "evolution"
    max_evaluations: int = 160
    generation: int = SearchOptions.generation
    seed: int = 0
    importance: str = "l1"
    reconstruct: bool = True
    refit_candidates: int = 1
    sparsity_epochs: float = 0.0
    sparsity: float = 0.03  # tools/bench_methods.py: 0.3 for a quarter epoch zeroed every scale
    steps: int = 1
    step_epochs: float = 0.1
    resolutions: tuple[int, ...] = ()
    tolerance: float = 0.03
    force: bool = False
    verify_engines: bool = True
    adabn_batches: int = 8
    screen_images: int = 256  # tools/bench_strategies.py: 160 screened beat 60 in full
    screen_precision: str = SearchOptions.screen_precision
    rescore: int = 3
    patience: int | None = None
    weights: str = SearchOptions.weights
    pruningnet_steps: int = SearchOptions.pruningnet_steps
    shipped_tables: bool = True
    memory_limit: str | int | None = "auto"
    safety_margin: float | str = "auto"
    confirm: int = 3
    workers: int = 1
    ray: str | None = None
    progress: bool = True
    wait: bool = True
    check: bool = False
    dump_dir: str | Path | None = None

    NOT_KEYED: ClassVar[frozenset[str]] = frozenset(
        {"out_dir", "cache_dir", "memory_limit", "progress", "wait", "check", "dump_dir", "workers", "ray"})

    def validate(self) -> None:
        for name, value in (("finetune_epochs", self.finetune_epochs), ("tolerance", self.tolerance),
                            ("sparsity_epochs", self.sparsity_epochs), ("sparsity", self.sparsity),
                            ("step_epochs", self.step_epochs)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise BadInputError(f"{name} must be a finite number >= 0, got {value!r}")
        if not (isinstance(self.steps, int) and not isinstance(self.steps, bool) and 1 <= self.steps <= 10):
            raise BadInputError(f"steps must be a whole number from 1 (one-shot) to 10, got {self.steps!r}")
        if not (isinstance(self.refit_candidates, int) and not isinstance(self.refit_candidates, bool)
                and 1 <= self.refit_candidates <= 20):
            raise BadInputError(f"refit_candidates must be a whole number from 1 to 20, got {self.refit_candidates!r}")
        if self.refit_candidates > 1 and not self.reconstruct:
            raise BadInputError("refit_candidates > 1 chooses among refitted candidates: it needs the refit "
                                "(leave out --no-reconstruct / reconstruct=False)")
        if self.importance == "slimming" and not self.sparsity_epochs > 0:
            raise BadInputError("importance 'slimming' ranks channels by BatchNorm scales after sparsity training: "
                                "give sparsity_epochs > 0 (CLI --sparsity-train EPOCHS), or use bn_gamma")
        self.search().validate()

    def criterion(self) -> str:
        """The importance criterion by its core name: Slimming ranks by BN scales (bn_gamma)."""
        return "bn_gamma" if self.importance == "slimming" else self.importance

    def keyed(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in self.NOT_KEYED}

    def search(self, channel_step: int | None = None) -> SearchOptions:
        return SearchOptions(strategy=self.strategy, channel_step=channel_step, importance=self.criterion(),
                             max_evaluations=self.max_evaluations, generation=self.generation, adabn_batches=self.adabn_batches,
                             screen_images=self.screen_images, screen_precision=self.screen_precision,
                             rescore=self.rescore, patience=self.patience,
                             weights=self.weights, pruningnet_steps=self.pruningnet_steps, seed=self.seed,
                             force=self.force, progress=self.progress, safety_margin=self.safety_margin,
                             workers=self.workers, ray=self.ray)


@dataclass
class CompileResult:
    model: fx.GraphModule  # the pruned model of the first target
    widths: dict[str, int]
    report: dict[str, Any]
    out_dir: Path


def default_cache_dir(out_dir: Path) -> Path:
    """Tables, search scores and TVM tuning databases: beside the build, shared by rebuilds."""
    return Path(os.path.abspath(out_dir)).with_name(".latprune-cache")


def _file_digest(table: Any) -> str | None:
    """A given table file's bytes, so that an edited table rebuilds (an object: its identity)."""
    if table is None:
        return None
    if isinstance(table, (str, Path)) and Path(table).is_file():
        return digest(Path(table).read_bytes())
    return str(table)


def model_digest(gm: fx.GraphModule) -> str:
    """The graph's code and every parameter and buffer, byte for byte."""
    return digest(gm.code, *(part for k, v in gm.state_dict().items() for part in (k, v)))


def _table_for(model: nn.Module, inputs: tuple[torch.Tensor, ...], target: Target, cache: Path,
               table: LatencyTable | str | Path | None, force: bool, shipped_tables: bool,
               progress: bool, resolutions: Sequence[int] = ()) -> tuple[LatencyTable, str]:
    if table is not None:
        t = latency_tables.load(table) if isinstance(table, (str, Path)) else table
        t.check_target(target.fingerprint(), force)
        return t, str(table) if isinstance(table, (str, Path)) else "given"
    step = {} if target.declared_step is None else {"channel_step": target.channel_step}  # a table per step
    path = cache / "tables" / f"{target.name}-{digest(json_text({**target.fingerprint(), **step}))}.json"
    if shipped_tables and not path.exists():  # start from a shipped table measured on this very device
        for shipped in latency_tables.shipped():
            t = latency_tables.load(shipped)
            if t.fingerprint == target.fingerprint() and t.channel_step == target.channel_step:
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_text(path, shipped.read_text())
                break
    # a build searches on the channel step only, so its table needs no off-step check variants
    for r in resolutions:  # each resolution's blocks (and the resize) into the same table
        latency_tables.profile(Resized(model, r), inputs, target, out=path, off_step_variants=0, progress=progress)
    return latency_tables.profile(model, inputs, target, out=path, off_step_variants=0, progress=progress), str(path)


def _check_out(out_dir: Path) -> None:
    """Refuse an OUT that latprune may not replace: a file, the working folder or one above it,
    or a folder with contents that carries no OUT_MARKER (latprune did not make it)."""
    resolved = out_dir.resolve()
    if resolved == Path.cwd().resolve() or resolved in Path.cwd().resolve().parents:
        raise BadInputError(f"--out {out_dir} is the current folder or one above it; give a folder of its own "
                            "for the build, e.g. build/model")
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise BadInputError(f"--out {out_dir} exists and is not a folder; latprune will not replace it. "
                            "Choose another path")
    if out_dir.is_dir() and not (out_dir / OUT_MARKER).is_file() and any(out_dir.iterdir()):
        raise BadInputError(f"--out {out_dir} holds files latprune did not write (no {OUT_MARKER} in it); latprune "
                            "replaces only folders it built, or empty ones. Choose a new or empty folder")


@contextlib.contextmanager
def _locked(out_dir: Path, wait: bool) -> Iterator[None]:
    """One build at a time per OUT: the second waits (or, with wait=False, fails fast)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out_dir.with_name(f".{out_dir.name}.lock")))
    try:
        lock.acquire(timeout=-1 if wait else 0)
    except Timeout:
        raise BusyError(f"another latprune build is writing {out_dir}; wait for it, or run again without "
                        "--no-wait to queue behind it") from None
    try:
        yield
    finally:
        lock.release()


def _stage(out_dir: Path) -> Path:
    """A staging folder beside OUT, unique to this build, marked as latprune's from the start.
    Staging folders left by a killed build (marked, same prefix) are removed: the lock is ours."""
    prefix = f".{out_dir.name}.staging-"
    for old in out_dir.parent.glob(prefix + "*"):
        if (old / OUT_MARKER).is_file():
            shutil.rmtree(old, ignore_errors=True)
    stage = Path(tempfile.mkdtemp(prefix=prefix, dir=out_dir.parent))
    os.chmod(stage, 0o777 & ~umask())
    (stage / OUT_MARKER).write_text(json.dumps({"written_by": "latprune", "schema": REPORT_SCHEMA}) + "\n")
    return stage


def _swap_in(stage: Path, out_dir: Path) -> None:
    """Replace OUT by the finished stage in two renames (under the lock, OUT is ours to move)."""
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        out_dir.rename(old / "out")
    stage.rename(out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _warn(report: dict[str, Any], message: str) -> None:
    """Into the report, and as a warning that points at the code that called compile()."""
    report["warnings"].append(message)
    level, frame = 1, sys._getframe()
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, stacklevel=level)


@dataclass
class BuildContext:
    """One build's state. Passes read what earlier passes left here and add their own part,
    so each thing (the lowered graph, a target's space, importance, table) is computed once."""

    model: nn.Module
    inputs: tuple[torch.Tensor, ...]
    spec: Budget
    data: Data
    metric: EvalFn
    options: CompileOptions
    cache: Path
    key: str
    report: dict[str, Any]
    gm: fx.GraphModule
    lowered: fx.GraphModule | None = None  # what every target starts from (after sparsity training)
    stage: Path = Path()
    base_score: float = 0.0
    failures: list[str] = field(default_factory=list)
    # per target, set by the passes in TARGET_PASSES order
    target: Target | None = None
    table_given: Any = None
    table: LatencyTable | None = None
    table_path: str = ""
    space: PruningSpace | None = None
    unit_scores: np.ndarray | None = None
    result: SearchResult | None = None
    pruned: fx.GraphModule | None = None
    accuracy: dict[str, float | None] = field(default_factory=dict)
    artifact: Artifact | None = None
    files: dict[str, str] = field(default_factory=dict)
    verification: dict[str, Any] = field(default_factory=dict)
    pruningnets: list[tuple[fx.GraphModule, PruningSpace, Any]] = field(default_factory=list)  # trained once each
    custom_metric: bool = False  # the user's eval_fn rather than top-1 on the held-out batches
    confirmed: list[dict[str, Any]] = field(default_factory=list)
    reconstructed: list[dict[str, Any]] | None = None
    adabn_only: float | None = None  # with reconstruct: the accuracy without it, as the uniform baseline is scored
    goal: Budget | None = None  # the final search's budget: the user's, in ms once steps have pruned before it
    full_ms: float | None = None  # the unpruned model's prediction, before any step
    sizes: dict[str, int] = field(default_factory=dict)  # each group's unpruned width
    steps: list[dict[str, Any]] = field(default_factory=list)
    native_predictor: Any = None  # with steps: the unpruned graph's predictor, which every step's graph is timed by
    calib: list[Any] | None = None
    resolutions: list[int] = field(default_factory=list)  # the allowed ones besides the native
    resolution: dict[str, Any] | None = None  # with resolutions: what each one's search found
    native_space: PruningSpace | None = None  # with resolutions: the native graph's space
    repaired: tuple[Widths, fx.GraphModule, list[dict[str, Any]] | None] | None = None  # a refit done while choosing
    refit_choice: list[dict[str, Any]] = field(default_factory=list)  # the candidates refitted to choose, if any
    unpruned: dict[str, Artifact] = field(default_factory=dict)  # for a budget such as 0.5x: the unpruned
    # model's engine of each kind that is judged beside it (Artifact.engine)
    scratch: tempfile.TemporaryDirectory | None = None  # outside OUT: an unpruned engine written to disk

    def share(self, like: Artifact) -> tuple[Artifact, float] | None:
        """For a budget relative to the unpruned model: that model's engine of the same kind as
        `like`, built once per target and kind, and the budget's share, so that confirm and
        verify time it beside each engine and judge the ratio (README, Budgets). A PyTorch
        target times candidates eagerly or in a CUDA graph but emits an AOTInductor package:
        for that one the unpruned model is written to disk as emit writes it. None for a
        budget in ms, and on targets that tune per model (TVM), whose unpruned engine would
        need its own tuning run; those judge the engine's time against the budget in ms."""
        if not self.spec.relative or hasattr(self.target, "prepare"):
            return None
        if not self.unpruned:  # the kind the target builds in memory, kept whichever is asked first
            ref = self.target.build(self.lowered, self.inputs)
            self.unpruned[ref.engine] = ref
        if like.engine not in self.unpruned:  # the emitted kind, written to disk as emit writes it
            self.scratch = self.scratch or tempfile.TemporaryDirectory(prefix="latprune-unpruned-")
            out = Path(self.scratch.name) / self.target.name
            self.unpruned[like.engine] = self.target.build(self.lowered, self.inputs, out_dir=out)
        return self.unpruned[like.engine], self.spec.value

    def calibration(self) -> list[Any]:
        """The first adabn_batches training batches: importance, search, steps and refit share them."""
        if self.calib is None:
            self.calib = materialize(self.data.train, self.options.adabn_batches, "calibration data")
        return self.calib


def compile(model: nn.Module, example_inputs: torch.Tensor | Sequence[torch.Tensor], target: Target | Sequence[Target],
            budget: str | float = "0.5x", *, calib_data: Data | Iterable[Any] | None = None,
            eval_fn: EvalFn | None = None, table: LatencyTable | str | Path | Sequence[Any] | None = None,
            options: CompileOptions | None = None, **overrides: Any) -> CompileResult:
    """Prune `model` to meet the budget on each target, emit and verify an engine per target.
    `target` is a Target or a list of them (one search each: widths differ per device);
    `calib_data` is a Data (training batches for AdaBN / fine-tuning, held-out batches for the
    search) or an iterable of batches (tensors or (input, label) pairs), which then needs
    `eval_fn`. `options` (or keyword overrides of its fields, e.g. out_dir=...) say how to
    build. Raises InfeasibleBudgetError (exit 3) or, after writing the report,
    VerificationError (exit 4) when an engine misses its budget or disagrees with PyTorch."""
    t_start = time.perf_counter()
    opt = with_overrides(options or CompileOptions(), overrides)
    opt.validate()
    targets_ = list(target) if isinstance(target, (list, tuple)) else [target]
    if calib_data is None:
        raise BadInputError("compile needs data: calibration batches for AdaBN and held-out batches for the search")
    data = calib_data if isinstance(calib_data, Data) else Data.from_batches(calib_data)
    if not data.val and eval_fn is None:
        raise BadInputError("calib_data given as plain batches has no held-out split to score candidates on: "
                            "pass eval_fn(model) -> float, or a compiler.dataspec.Data with held-out batches")
    if opt.finetune_epochs > 0 and not data.labelled():
        raise BadInputError("fine-tuning needs labelled (input, label) training batches; give labels or "
                            "finetune_epochs=0")
    if opt.steps > 1 and opt.step_epochs > 0 and not data.labelled():
        raise BadInputError("iterative pruning fine-tunes between steps on labelled (input, label) training "
                            "batches; give labels, or step_epochs=0 (CLI --step-epochs 0)")
    spec = parse_budget(budget)
    tables = list(table) if isinstance(table, (list, tuple)) else [table] * len(targets_)
    if len(tables) != len(targets_):
        raise BadInputError(f"{len(tables)} latency tables for {len(targets_)} targets: give one per target, "
                            "in --target order, or none (each target's table is profiled into the cache)")
    for t, tbl in zip(targets_, tables):
        if not t.can_measure and tbl is None and t.can_run:
            raise BadInputError(f"{t.name}'s device is emulated: timings there say nothing about a real board, so "
                                "it cannot be profiled on; give --table with a table measured on the board")
        if not t.can_measure and tbl is None:
            raise BadInputError(f"{t.name} has no device attached to profile on: give --rpc HOST:PORT (or "
                                "--rpc-tracker/--rpc-key), or --table with a table measured on the device")
        if not t.can_run and opt.verify_engines:
            raise BadInputError(f"{t.name} has no device attached to verify the engine on: give --rpc HOST:PORT "
                                "(or --rpc-tracker/--rpc-key), or --no-verify to emit the engine unmeasured")
    inputs = as_inputs(example_inputs)
    resolutions = check_resolutions(opt.resolutions, inputs)
    out_dir = Path(opt.out_dir)
    cache = Path(opt.cache_dir) if opt.cache_dir else default_cache_dir(out_dir)
    if cache.exists() and not cache.is_dir():
        raise BadInputError(f"cache folder {cache} exists and is not a folder; give --cache-dir a folder")
    _check_out(out_dir)
    if opt.dump_dir is not None:
        _check_out(Path(opt.dump_dir))
    model = model.eval()
    t0 = time.perf_counter()
    gm = lower(model, inputs)
    lowered_s = time.perf_counter() - t0
    check_fits(gm, opt.memory_limit, train_batch=len(data.train[0][0]), finetune=opt.finetune_epochs > 0 or opt.sparsity_epochs > 0
               or (opt.steps > 1 and opt.step_epochs > 0), workers=opt.workers,
               generator_width=HIDDEN if opt.weights == "pruningnet" else 0)
    check_labels(data, _classes(gm))
    key = digest(*(json_text(part) for part in (
        model_digest(gm), [list(t.shape) for t in inputs], [t.fingerprint() for t in targets_], spec.label,
        opt.keyed(), data.digest(), _fn_digest(eval_fn), [_file_digest(t) for t in tables], REPORT_SCHEMA)))
    with _locked(out_dir, opt.wait):
        _check_out(out_dir)  # another build may have changed OUT while we waited
        cached = _cached(out_dir, key)
        if cached is not None:
            return cached
        report: dict[str, Any] = {"schema": REPORT_SCHEMA, "build_key": key, "model": type(model).__name__,
                                  "inputs": [list(t.shape) for t in inputs], "seed": opt.seed, "budget": spec.label,
                                  "data": data.source, "targets": {}, "seconds": {"lower": lowered_s},
                                  "passes": [name for name, _ in TARGET_PASSES], "warnings": []}
        ctx = BuildContext(model, inputs, spec, data, eval_fn or top1(data.val), opt, cache, key, report, gm,
                           custom_metric=eval_fn is not None, resolutions=resolutions)
        _dump(ctx, "lower")
        _timed(ctx, "evaluate_original", _evaluate_original)
        _timed(ctx, "sparsity", _sparsity_pass)
        ctx.lowered = ctx.gm
        ctx.stage = _stage(out_dir)
        first: tuple[fx.GraphModule, Widths] | None = None
        try:
            for tgt, tbl in zip(targets_, tables):
                ctx.target, ctx.table_given = tgt, tbl
                for name, run in TARGET_PASSES:
                    _timed(ctx, name, run)
                first = first or (ctx.pruned, ctx.result.best.widths)
            report["seconds"]["total"] = time.perf_counter() - t_start
            report["status"] = _status(ctx, report)
            report["failures"] = ctx.failures
            atomic_write_text(ctx.stage / "report.json", json.dumps(report, indent=1, default=float) + "\n")
            atomic_write_text(ctx.stage / "report.html", render(report))
            _swap_in(ctx.stage, out_dir)
        finally:
            shutil.rmtree(ctx.stage, ignore_errors=True)  # a failed or interrupted build leaves nothing half-written
    if ctx.failures:
        raise VerificationError("verification failed: " + "; ".join(ctx.failures) + f" (see {out_dir / 'report.json'})")
    assert first is not None
    return CompileResult(first[0], first[1], report, out_dir)


# -- the passes --------------------------------------------------------------------------------
def _timed(ctx: BuildContext, name: str, run: Callable[[BuildContext], None]) -> None:
    """The instrument around every pass: its wall time into the report, then the dump."""
    t0 = time.perf_counter()
    run(ctx)
    label = f"{ctx.target.name}/{name}" if ctx.target is not None else name
    ctx.report["seconds"][label] = time.perf_counter() - t0
    _dump(ctx, name)


def _dump(ctx: BuildContext, name: str) -> None:
    """With dump_dir: the graph (pruned once there is one) and the space after pass `name`."""
    if ctx.options.dump_dir is None:
        return
    folder = Path(ctx.options.dump_dir) / (ctx.target.name if ctx.target is not None else "model")
    folder.mkdir(parents=True, exist_ok=True)
    (Path(ctx.options.dump_dir) / OUT_MARKER).touch()
    n = len(list(folder.glob("*.py")))
    gm = ctx.pruned if ctx.pruned is not None else ctx.gm
    atomic_write_text(folder / f"{n:02d}-{name}.py", "\n".join(f"# {line}" for line in repr(gm).splitlines()) + gm.code)
    if ctx.space is not None:
        atomic_write_text(folder / f"{n:02d}-{name}.space.json",
                          json.dumps({"summary": ctx.space.summary(), **ctx.space.to_dict()}, indent=1) + "\n")


def _evaluate_original(ctx: BuildContext) -> None:
    ctx.base_score = score_of(ctx.metric, ctx.model)


def _sparsity_pass(ctx: BuildContext) -> None:
    """With options.sparsity_epochs: Network Slimming's sparsity training of the lowered graph;
    every target's search and rewrite start from it (the original stays the fine-tune's teacher)."""
    o = ctx.options
    if o.sparsity_epochs <= 0:
        return
    before = scale_summary(ctx.gm)
    ctx.gm = sparsity_train(ctx.gm, ctx.data.train, o.sparsity_epochs, o.sparsity, seed=o.seed, progress=o.progress)
    ctx.report["sparsity"] = {"epochs": o.sparsity_epochs, "penalty": o.sparsity, "scales_before": before,
                              "scales_after": scale_summary(ctx.gm), "accuracy": score_of(ctx.metric, ctx.gm)}


def _table_pass(ctx: BuildContext) -> None:
    o = ctx.options
    ctx.pruned, ctx.space, ctx.unit_scores, ctx.confirmed, ctx.steps = None, None, None, [], []
    ctx.gm, ctx.goal, ctx.full_ms, ctx.native_predictor, ctx.resolution = ctx.lowered, ctx.spec, None, None, None
    ctx.native_space, ctx.repaired, ctx.refit_choice, ctx.unpruned = None, None, [], {}
    ctx.table, ctx.table_path = _table_for(ctx.model, ctx.inputs, ctx.target, ctx.cache, ctx.table_given, o.force,
                                           o.shipped_tables, o.progress, ctx.resolutions)


def _analyze_pass(ctx: BuildContext) -> None:
    ctx.space = analyze(ctx.gm, channel_step=ctx.target.channel_step)
    ctx.sizes = {g.id: g.size for g in ctx.space.groups}


def _importance_pass(ctx: BuildContext) -> None:
    o = ctx.options
    calib = ctx.calibration() if needs_data(o.criterion()) else None
    ctx.unit_scores = scores(ctx.gm, ctx.space, o.criterion(), calib)


class _AsNative:
    """A step's graph predicted as the unpruned graph at the same widths (pruning keeps group ids):
    the table's end-to-end correction and stated error are the unpruned model's, where the
    intermediate graph, unseen by the table, would get neither and be mispredicted."""

    def __init__(self, native: Any, space: PruningSpace) -> None:
        if {g.id for g in space.groups} != {g.id for g in native.space.groups}:
            raise RewriteError("a pruned graph's channel groups differ from the unpruned graph's; please report "
                               "this model to latprune (or build with steps=1)")
        self.native, self.space = native, space
        self.noise_pct = native.noise_pct

    def __call__(self, widths: Widths | None = None) -> float:
        return self.native(self.space.full_widths() if widths is None else widths)

    def error_pct(self, widths: Widths | None = None) -> float | None:
        return self.native.error_pct(self.space.full_widths() if widths is None else widths)


def _searched(ctx: BuildContext, budget: Budget, search: SearchOptions, scores_file: str,
              predictor: Any = None) -> tuple[SearchResult, Any]:
    """One search over ctx.gm and its space under `budget`, and the predictor it used: the one
    given, the table's for that graph, or after iterative steps the unpruned graph's (_AsNative)."""
    if predictor is None:
        predictor = _AsNative(ctx.native_predictor, ctx.space) if ctx.native_predictor is not None else \
            ctx.table.predictor(ctx.gm, ctx.inputs, ctx.target.fingerprint(), ctx.options.force, space=ctx.space)
    calib = ctx.calibration()
    trained = [n for g, s, n in ctx.pruningnets if g is ctx.gm and s is ctx.space]  # None: sliced weights
    if trained:
        net = trained[0]
    else:
        net = search.pruningnet(ctx.gm, ctx.space, ctx.unit_scores, ctx.data.train)
        ctx.pruningnets.append((ctx.gm, ctx.space, net))
    evaluator = Evaluator(ctx.gm, ctx.space, ctx.unit_scores, calib, ctx.metric, ctx.cache / "scores" / scores_file,
                          ctx.key, None if ctx.custom_metric else search.screen(ctx.data.val),
                          net)
    return run_search(ctx.space, evaluator, predictor, [budget], search, ctx.table.device), predictor


def _steps_pass(ctx: BuildContext) -> None:
    """With options.steps = K > 1, iterative pruning: K-1 intermediate budgets, geometric from the
    unpruned prediction down to the user's, each searched, rewritten, refitted (with
    reconstruct), AdaBN-recalibrated and fine-tuned for step_epochs by KD from the original. The
    last step is the ordinary search, refit and AdaBN that follow, on the graph the steps left.
    Every step's graph is timed as the unpruned one at its widths (_AsNative)."""
    o, tgt = ctx.options, ctx.target
    if o.steps <= 1:
        return
    ctx.native_predictor = ctx.table.predictor(ctx.gm, ctx.inputs, tgt.fingerprint(), o.force, space=ctx.space)
    ctx.full_ms = ctx.native_predictor(None)
    goal_ms = ctx.spec.ms(ctx.full_ms)
    search = o.search(tgt.channel_step)
    ctx.goal = Budget(goal_ms, relative=False)
    for k, budget_ms in enumerate(schedule(ctx.full_ms, goal_ms, o.steps)[:-1], 1):
        t0 = time.perf_counter()
        best = _searched(ctx, Budget(budget_ms, relative=False), search, f"{ctx.key}-{tgt.name}-step{k}.json")[0].best
        pruned = _repaired(ctx, best.widths, ctx.gm, ctx.space, ctx.unit_scores)[0]
        if o.step_epochs > 0:
            tuned = finetune(pruned, ctx.model, ctx.data.train, o.step_epochs, seed=o.seed + k, progress=o.progress)
            tuned.meta.update(pruned.meta)
            pruned = tuned
        ctx.steps.append({"step": k, "budget_ms": budget_ms, "predicted_ms": best.latency_ms,
                          "kept": round(sum(best.widths[g.id] for g in ctx.space.prunable())
                                        / max(sum(ctx.sizes[g.id] for g in ctx.space.prunable()), 1), 4),
                          "accuracy": score_of(ctx.metric, pruned), "seconds": time.perf_counter() - t0})
        ctx.gm = pruned
        ctx.space = analyze(ctx.gm, channel_step=tgt.channel_step)
        _importance_pass(ctx)


def _repaired(ctx: BuildContext, widths: Widths, gm: fx.GraphModule, space: PruningSpace,
              unit_scores: np.ndarray) -> tuple[fx.GraphModule, list[dict[str, Any]] | None]:
    """compiler.core.api.repaired with the build's calibration batches, refit option and seed."""
    return repaired(gm, space, widths, unit_scores, ctx.inputs, ctx.calibration(), ctx.options.reconstruct,
                    ctx.options.seed)


def _resized_original(ctx: BuildContext, r: int) -> _AsNative:
    """After iterative steps: ctx's graph (the stepped model behind a resize to r) timed as the
    original behind that resize, at its widths."""
    original = lower(Resized(ctx.lowered, r), ctx.inputs)
    space = analyze(original, channel_step=ctx.target.channel_step)
    return _AsNative(ctx.table.predictor(original, ctx.inputs, ctx.target.fingerprint(), ctx.options.force,
                                         space=space), ctx.space)


_Found = tuple[int | None, SearchResult, Any, tuple[fx.GraphModule, PruningSpace, np.ndarray]]


def _resolution_searches(ctx: BuildContext, search: SearchOptions) -> list[_Found]:
    """One search per resolution (the native one first) under the same budget in ms, from the
    native unpruned prediction: each feasible one's (resolution, result, predictor, graph);
    what each found goes to ctx.resolution["tried"] for the report. A resolution whose floor is
    over the budget is reported there and skipped. After iterative steps (ctx.native_predictor)
    the budget is the steps' and each resolution's graph is timed as the original behind that
    resize, at its widths."""
    native_gm = ctx.gm
    predictor = None
    if ctx.native_predictor is None:
        predictor = ctx.table.predictor(ctx.gm, ctx.inputs, ctx.target.fingerprint(), ctx.options.force,
                                        space=ctx.space)
        ctx.full_ms = predictor(None)
        ctx.goal = Budget(ctx.spec.ms(ctx.full_ms), relative=False)
    size = list(ctx.inputs[0].shape[-2:])
    found: list[_Found] = []
    tried: list[dict[str, Any]] = []
    for r in [None, *ctx.resolutions]:
        if r is not None:
            ctx.gm = lower(Resized(native_gm, r), ctx.inputs)
            ctx.space = analyze(ctx.gm, channel_step=ctx.target.channel_step)
            _importance_pass(ctx)
            predictor = None if ctx.native_predictor is None else _resized_original(ctx, r)
        try:
            res, predictor = _searched(ctx, ctx.goal, search, f"{ctx.key}-{ctx.target.name}-r{r or 'native'}.json",
                                       predictor)
        except InfeasibleBudgetError as exc:
            tried.append({"size": size if r is None else [r, r], "infeasible": str(exc)})
            continue
        tried.append({"size": size if r is None else [r, r], "full_ms": res.full_ms, "floor_ms": res.floor_ms,
                      "predicted_ms": res.best.latency_ms, "score": res.best.score})
        found.append((r, res, predictor, (ctx.gm, ctx.space, ctx.unit_scores)))
    if not found:
        raise InfeasibleBudgetError(f"latency budget {ctx.spec.label} = {ctx.goal.value:.4g} ms is below the smallest "
                                    f"reachable latency at every allowed resolution: " + "; ".join(
                                        t["infeasible"] for t in tried))
    ctx.resolution = {"native": size, "chosen": None, "tried": tried}
    return found


def _chosen(ctx: BuildContext, found: list[_Found]) -> tuple[SearchResult, Any]:
    """The search result a build keeps, and its predictor; ctx then holds its graph, space and
    importance. With reconstruct, when there is a choice (several resolutions, or
    refit_candidates K > 1), the K best candidates of each search by its own score are repaired
    as the build will deliver them (_repaired) and the best refitted score wins, its repair kept
    in ctx.repaired: after AdaBN alone the ranking is not the one after the refit
    (tools/bench_resolution.py, bench_refit_pick.py). Else the best search score (ties: the
    earlier search, the larger resolution). Each resolution's entry in ctx.resolution["tried"]
    gets its best refitted score. The uniform baseline stays the native one."""
    k, ctx.repaired = ctx.options.refit_candidates, None
    pick = max(range(len(found)), key=lambda i: (found[i][1].best.score, -i))
    kept: Candidate | None = None
    if ctx.options.reconstruct and (len(found) > 1 or k > 1):
        searched = [t for t in ctx.resolution["tried"] if "score" in t] if ctx.resolution else []
        pairs: list[tuple[dict[str, Any], Candidate]] = []
        best = -math.inf
        for i, (_, res, _, graph) in enumerate(found):
            for c in res.ranked()[:k]:
                pruned, layers = _repaired(ctx, c.widths, *graph)
                refit = score_of(ctx.metric, pruned)
                pairs.append(({**({"size": searched[i]["size"]} if searched else {}), "predicted_ms": c.latency_ms,
                               "score": c.full_score, "refit_score": refit}, c))
                if searched:
                    searched[i]["refit_score"] = max(searched[i].get("refit_score", -math.inf), refit)
                if refit > best:  # only the best repair so far is kept
                    best, pick, kept, ctx.repaired = refit, i, c, (c.widths, pruned, layers)
        ctx.refit_choice = [{**e, "kept": c is kept} for e, c in pairs]
    r, res, predictor, (ctx.gm, ctx.space, ctx.unit_scores) = found[pick]
    if kept is not None:
        res.results[0] = replace(res.best, widths=kept.widths, latency_ms=kept.latency_ms, score=kept.full_score)
    if r is not None and found[0][0] is None:
        res.results[0] = replace(res.best, uniform=found[0][1].best.uniform)
        ctx.native_space = found[0][3][1]
    if ctx.resolution is not None:
        ctx.resolution["chosen"] = ctx.resolution["native"] if r is None else [r, r]
    return res, predictor


def _search_pass(ctx: BuildContext) -> None:
    o, tgt = ctx.options, ctx.target
    search = o.search(tgt.channel_step)
    if o.screen_images and ctx.custom_metric:
        _warn(ctx.report, f"screen_images needs the held-out batches as the metric; with a custom eval_fn all "
                          f"{o.max_evaluations} candidates are scored in full: give fewer (max_evaluations, "
                          "--evaluations), or screen_images=0 to say so")
    if ctx.resolutions:
        found = _resolution_searches(ctx, search)
    else:
        res, predictor = _searched(ctx, ctx.goal, search, f"{ctx.key}-{tgt.name}.json")
        found = [(None, res, predictor, (ctx.gm, ctx.space, ctx.unit_scores))]
    ctx.result, predictor = _chosen(ctx, found)
    _search_warnings(ctx.report, tgt.name, ctx.spec.label, ctx.result, ctx.full_ms)
    best = ctx.result.best
    busy = noise_warning(f"this model (table {ctx.table_path or 'as given'})", predictor.noise_pct)
    if busy:
        _warn(ctx.report, f"{tgt.name}: {busy}")
    if o.safety_margin == "auto" and predictor.error_pct() is None:
        _warn(ctx.report, f"{tgt.name}: the latency table has too few measured variants of this model to state "
                          "its error, so no safety margin was set; profile the model (`latprune profile`, "
                          f"--variants {VARIANTS} by default) or give --safety-margin")
    if best.margin > 0 and best.limit_ms <= ctx.result.floor_ms:
        _warn(ctx.report, f"{tgt.name}: budget {ctx.spec.label} less the safety margin ({best.margin:.1%}) is "
                          "below the smallest reachable latency; searched at the floor, so the engine may miss "
                          "the budget")


def _confirm_pass(ctx: BuildContext) -> None:
    """The device has the last word. A search keeps the candidates the table predicts fastest
    for their score, so its pick leans toward ones the table under-predicts. With a device
    attached, the kept candidate and then the best others under the search's limit (by score)
    are built and timed in turn (one over budget is timed again before it is dropped:
    `settled`), and the first whose measured latency is within budget + tolerance is kept, its
    pruned model with it; if none is, the fastest measured one goes on and verification reports
    the miss. Measuring makes this pass the one step of a build that a seed does not fix
    (README, Determinism)."""
    o, tgt, best = ctx.options, ctx.target, ctx.result.best
    if not (o.verify_engines and tgt.can_measure and o.confirm > 0):
        return
    pool = sorted(ctx.result.ranked(), key=lambda c: c.widths != best.widths)[:o.confirm]  # the pick first
    tried: list[_Confirmed] = []
    for c in pool:
        pruned = rewrite(ctx.gm, ctx.space, c.widths, ctx.unit_scores, ctx.inputs)
        engine = tgt.build(pruned, ctx.inputs)
        unpruned = ctx.share(engine)
        limit = (best.budget_ms if unpruned is None else unpruned[1]) * (1 + o.tolerance)
        kept, taken = settle(tgt, engine, limit, MODEL_TIMING, None if unpruned is None else unpruned[0])
        tried.append(_Confirmed(c, pruned, engine.engine, kept, taken))
        if kept.value <= limit:
            break
    chosen = tried[-1] if tried[-1].kept.value <= limit else min(tried, key=lambda t: t.kept.value)
    ctx.pruned, c = chosen.pruned, chosen.candidate
    ctx.result.results[0] = replace(best, widths=c.widths, latency_ms=c.latency_ms, score=c.full_score)
    ctx.confirmed = [{"predicted_ms": t.candidate.latency_ms, "measured_ms": t.kept.engine.median_ms,
                      "engine": t.engine, "medians_ms": [k.engine.median_ms for k in t.taken],
                      "score": t.candidate.full_score,
                      **({} if t.kept.reference is None else {"shares": [k.value for k in t.taken]}),
                      "kept": t is chosen} for t in tried]


class _Confirmed(NamedTuple):
    """One candidate the confirm pass built and timed."""

    candidate: Candidate
    pruned: fx.GraphModule
    engine: str  # its engine's kind
    kept: Take  # the take that stands
    taken: list[Take]  # every take


def _rewrite_pass(ctx: BuildContext) -> None:
    """The kept widths, sliced; the confirm pass may have built them already."""
    if ctx.pruned is None:
        ctx.pruned = rewrite(ctx.gm, ctx.space, ctx.result.best.widths, ctx.unit_scores, ctx.inputs)


def _check_pass(ctx: BuildContext) -> None:
    """With options.check: the pruned model must equal the original with the pruned channels
    masked to zero (README, Architecture); a difference is a latprune bug, never the user's."""
    if not ctx.options.check:
        return
    keep = keep_mask(ctx.gm, ctx.space, ctx.result.best.widths, ctx.unit_scores)
    err = invariant_error(ctx.gm, ctx.pruned, ctx.space, keep, *ctx.inputs)
    if not err < CHECK_TOLERANCE:
        raise RewriteError(f"{ctx.target.name}: the pruned model differs from the masked original by {err:.3g} "
                           "(relative); please report this model to latprune")


def _reconstruct_pass(ctx: BuildContext) -> None:
    """With options.reconstruct: the least-squares refit, before AdaBN (the refit targets the
    original layer outputs, which the original BN statistics match); the one the resolution
    choice already made for these widths is reused. The accuracy after AdaBN alone is the
    search's own score of these widths (same calibration batches, same metric), so the report
    compares like with like to the uniform baseline, which the search scored the same way."""
    o, best = ctx.options, ctx.result.best
    ctx.reconstructed, ctx.adabn_only = None, None
    if not o.reconstruct:
        return
    ctx.adabn_only = best.score
    if ctx.repaired is not None and ctx.repaired[0] == best.widths:
        _, ctx.pruned, ctx.reconstructed = ctx.repaired
        return
    keep = keep_mask(ctx.gm, ctx.space, best.widths, ctx.unit_scores)
    ctx.reconstructed = reconstruct(ctx.gm, ctx.pruned, ctx.space, keep, ctx.calibration(), seed=o.seed)


def _adabn_pass(ctx: BuildContext) -> None:
    """AdaBN on the calibration batches, unless the graph is the resolution choice's refit,
    which had it already."""
    if ctx.repaired is None or ctx.pruned is not ctx.repaired[1]:
        adabn(ctx.pruned, ctx.calibration())
    score = score_of(ctx.metric, ctx.pruned)
    ctx.accuracy = {"original": ctx.base_score, "adabn": score if ctx.adabn_only is None else ctx.adabn_only,
                    "reconstructed": None if ctx.adabn_only is None else score, "finetuned": None}


def _finetune_pass(ctx: BuildContext) -> None:
    o = ctx.options
    if o.finetune_epochs > 0:
        tuned = finetune(ctx.pruned, ctx.model, ctx.data.train, o.finetune_epochs, seed=o.seed, progress=o.progress)
        tuned.meta.update(ctx.pruned.meta)
        ctx.pruned = tuned
        ctx.accuracy["finetuned"] = score_of(ctx.metric, ctx.pruned)


def _emit_pass(ctx: BuildContext) -> None:
    ctx.artifact, ctx.files, skipped = emit(ctx.pruned, ctx.inputs, ctx.target, ctx.stage / ctx.target.name)
    if skipped:
        _warn(ctx.report, f"{ctx.target.name}: no model.latprune written ({skipped}); the engine and ONNX are")


def _verify_pass(ctx: BuildContext) -> None:
    best = ctx.result.best
    if ctx.options.verify_engines:
        untimed = None if ctx.target.can_measure else "the device is emulated: latency there says nothing about " \
            "a real board, so only the outputs were checked"
        unpruned = None if untimed else ctx.share(ctx.artifact)
        ctx.verification = verify(ctx.pruned, ctx.inputs, ctx.target, ctx.artifact, best.budget_ms, best.latency_ms,
                                  ctx.options.tolerance, MODEL_TIMING, untimed, unpruned)
        ctx.failures += _failures(ctx.target.name, ctx.verification)
    else:
        ctx.verification = {"skipped": "emitted with verification off (--no-verify)", "budget_ms": best.budget_ms,
                            "predicted_ms": best.latency_ms}


def _report_pass(ctx: BuildContext) -> None:
    tgt, res, space, best, out_dir = ctx.target, ctx.result, ctx.space, ctx.result.best, Path(ctx.options.out_dir)
    native = ctx.native_space or space  # what the uniform baseline scaled
    ctx.report["targets"][tgt.name] = {
        "fingerprint": tgt.fingerprint(), "table": ctx.table_path, "budget": ctx.spec.label, "budget_ms": best.budget_ms,
        "full_ms": ctx.full_ms or res.full_ms, "floor_ms": res.floor_ms, "predicted_ms": best.latency_ms,
        "verify": ctx.verification, "safety_margin": best.margin, "search_limit_ms": best.limit_ms,
        "confirmed": ctx.confirmed, "steps": ctx.steps, "resolution": ctx.resolution,
        "refit_choice": ctx.refit_choice, "reconstruct": ctx.reconstructed,
        "accuracy": ctx.accuracy, "widths": best.widths,
        "groups": [{"id": g.id, "size": ctx.sizes.get(g.id, g.size), "kept": best.widths[g.id], "prunable": g.prunable,
                    "layers": list(dict.fromkeys(m.node for m in g.members))} for g in space.groups],  # graph order
        "uniform": None if best.uniform is None or ctx.steps else {  # with steps it would scale the last step's graph
            "predicted_ms": best.uniform.latency_ms, "adabn": best.uniform.full_score,
            "ratio": round(sum(best.uniform.widths[g.id] for g in native.prunable())
                           / max(sum(g.size for g in native.prunable()), 1), 4)},
        "params": {"original": params(ctx.model), "pruned": params(ctx.pruned)},
        "macs": {"original": macs(ctx.model, ctx.inputs), "pruned": macs(ctx.pruned, ctx.inputs)},
        "search": {"stats": res.stats, "archive": [[c.latency_ms, c.score] for c in res.archive],
                   "pareto": [[c.latency_ms, c.score] for c in res.pareto()]},
        "files": {k: str(out_dir / Path(v).relative_to(ctx.stage)) if Path(v).is_relative_to(ctx.stage) else v
                  for k, v in ctx.files.items()}}


CHECK_TOLERANCE = 1e-4  # relative to the output's scale; a slicing bug gives O(1)
TARGET_PASSES: list[tuple[str, Callable[[BuildContext], None]]] = [
    ("table", _table_pass), ("analyze", _analyze_pass), ("importance", _importance_pass), ("steps", _steps_pass),
    ("search", _search_pass),
    ("confirm", _confirm_pass), ("rewrite", _rewrite_pass), ("check", _check_pass),
    ("reconstruct", _reconstruct_pass), ("adabn", _adabn_pass),
    ("finetune", _finetune_pass), ("emit", _emit_pass), ("verify", _verify_pass), ("report", _report_pass)]


def _classes(gm: fx.GraphModule) -> int | None:
    """The class count of a classifier's (N, K) output; None for other heads."""
    out = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    meta = out.meta.get("tensor_meta") if isinstance(out, fx.Node) else None
    shape = getattr(meta, "shape", None)
    return int(shape[1]) if shape is not None and len(shape) == 2 else None


def _fn_digest(fn: EvalFn | None) -> str:
    """The evaluation function's identity and its module's source, so that editing it rebuilds."""
    if fn is None:
        return "top1"
    parts = [getattr(fn, "__module__", ""), getattr(fn, "__qualname__", type(fn).__name__)]
    try:
        parts.append(inspect.getsource(sys.modules[fn.__module__]))
    except (KeyError, TypeError, OSError, AttributeError):
        pass
    return digest(*parts)


def _search_warnings(report: dict[str, Any], target: str, budget: str, res: Any, full_ms: float | None) -> None:
    """Say so when the search had nothing to do or could not tell candidates apart."""
    best, full_ms = res.best, full_ms or res.full_ms
    if best.budget_ms >= full_ms:
        _warn(report, f"{target}: budget {budget} = {best.budget_ms:.4g} ms is at or above the unpruned model's "
                      f"predicted {full_ms:.4g} ms; nothing needs pruning (the model is kept whole where the "
                      "search finds nothing better)")
    scores = {c.score for c in res.archive}
    if len(res.archive) > 1 and len(scores) == 1:
        (only,) = scores
        _warn(report, f"{target}: every one of {len(res.archive)} candidates scored {only:.4g}, so the search could "
                      "not tell them apart. Likely causes: labels that do not match the model's head (e.g. a "
                      "1000-class head with 10-class data), an eval_fn that ignores the model, or too few "
                      "evaluation images (--eval-images)")


def _status(ctx: BuildContext, report: dict[str, Any]) -> str:
    """ok: every engine verified (latency and outputs); outputs_verified: some engine ran on an
    emulated device, so its latency was not measured; unverified: --no-verify."""
    if ctx.failures:
        return "verification_failed"
    if not ctx.options.verify_engines:
        return "unverified"
    return "outputs_verified" if any("not_timed" in t["verify"] for t in report["targets"].values()) else "ok"


def _failures(name: str, check: dict[str, Any]) -> list[str]:
    out = []
    if check["within_budget"] is False and "budget_share" in check:
        out.append(f"{name}: measured {check['measured_share']:.3g}x the unpruned engine timed beside it "
                   f"({check['measured_ms']:.4g} vs {check['unpruned_measured_ms']:.4g} ms), over the budget "
                   f"{check['budget_share']:g}x (+{check['tolerance']:.0%} for noise)")
    elif check["within_budget"] is False:
        out.append(f"{name}: measured {check['measured_ms']:.4g} ms is over the budget {check['budget_ms']:.4g} ms "
                   f"(+{check['tolerance']:.0%} for noise)")
    if not check["outputs_match"]:
        out.append(f"{name}: engine outputs differ from the pruned PyTorch model "
                   f"(max rel. error {check['output_max_rel_error']:.2e})")
    return out


def _cached(out_dir: Path, key: str) -> CompileResult | None:
    """The previous build's result when its key matches and its files are all there."""
    path = out_dir / "report.json"
    if not path.exists():
        return None
    try:
        report = json.loads(path.read_text())
        if report.get("build_key") != key or report.get("status") not in ("ok", "outputs_verified", "unverified"):
            return None
        files = [Path(f) for t in report["targets"].values() for f in t["files"].values()]
        first = next(iter(report["targets"].values()))
        pytorch = first["files"]["pytorch"]
    except (OSError, ValueError, AttributeError, TypeError, KeyError, StopIteration):
        return None  # not a report this latprune wrote, or no .latprune in it to return: rebuild
    if not all(f.exists() for f in files):
        return None
    report["cached"] = True
    return CompileResult(load(pytorch), first["widths"], report, out_dir)
