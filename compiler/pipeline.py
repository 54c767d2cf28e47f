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
import hashlib
import inspect
import json
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
from filelock import FileLock, Timeout

from .core.adabn import adabn
from .core.api import rewrite
from .core.atomic import atomic_write_text, umask
from .core.budget import parse_budget
from .core.cost import macs, params
from .dataspec import Data, check_labels
from .emit import emit, verify
from .core.errors import BadInputError, BusyError, VerificationError
from .evaluate import EvalFn, score_of, top1
from .distill import finetune
from .core.groups import analyze
from .core.lower import as_inputs, lower
from .core.memory import check_fits
from .report import render
from .evolution import search
from .core.serialize import load

REPORT_SCHEMA = "latprune.report/1"
OUT_MARKER = ".latprune-out"  # in every folder latprune builds: only such folders (or empty ones) are replaced


@dataclass(frozen=True)
class _Options:
    """compile()'s knobs that shape the build (all but `progress` are part of the build key)."""

    finetune_epochs: float
    strategy: str
    max_evaluations: int
    seed: int
    importance: str
    tolerance: float
    force: bool
    verify_engines: bool
    adabn_batches: int
    shipped_tables: bool
    progress: bool


@dataclass
class CompileResult:
    model: fx.GraphModule  # the pruned model of the first target
    widths: dict[str, int]
    report: dict[str, Any]
    out_dir: Path


def default_cache_dir(out_dir: Path) -> Path:
    """Tables, search scores and TVM tuning databases: beside the build, shared by rebuilds."""
    return Path(os.path.abspath(out_dir)).with_name(".latprune-cache")


def _digest(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()[:20]


def _file_digest(table: Any) -> str | None:
    """A given table file's bytes, so that an edited table rebuilds (an object: its identity)."""
    if table is None:
        return None
    if isinstance(table, (str, Path)) and Path(table).is_file():
        return hashlib.sha256(Path(table).read_bytes()).hexdigest()[:20]
    return str(table)


def model_digest(gm: fx.GraphModule) -> str:
    """The graph's code and every parameter and buffer, byte for byte."""
    h = hashlib.sha256(gm.code.encode())
    for k, v in gm.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


def _table_for(model: nn.Module, inputs: tuple[torch.Tensor, ...], target: Any, cache: Path,
               table: Any, force: bool, shipped_tables: bool, progress: bool) -> tuple[Any, str]:
    import latency_tables

    if table is not None:
        t = latency_tables.load(table) if isinstance(table, (str, Path)) else table
        t.check_target(target.fingerprint(), force)
        return t, str(table) if isinstance(table, (str, Path)) else "given"
    path = cache / "tables" / f"{target.name}-{_digest(target.fingerprint())}.json"
    if shipped_tables and not path.exists():  # start from a shipped table measured on this very device
        for shipped in latency_tables.shipped():
            if latency_tables.load(shipped).fingerprint == target.fingerprint():
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_text(path, shipped.read_text())
                break
    return latency_tables.profile(model, inputs, target, out=path, progress=progress), str(path)


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
    report["warnings"].append(message)
    warnings.warn(message, stacklevel=3)


def compile(model: nn.Module, example_inputs: torch.Tensor | Sequence[torch.Tensor], target: Any,
            budget: str | float = "0.5x", budget_ms: float | None = None, table: Any = None,
            calib_data: Data | Iterable[Any] | None = None, eval_fn: EvalFn | None = None,
            out_dir: str | Path = "build/latprune", finetune_epochs: float = 0.0, strategy: str = "evolution",
            max_evaluations: int = 60, seed: int = 0, importance: str = "l1", tolerance: float = 0.03,
            cache_dir: str | Path | None = None, force: bool = False, verify_engines: bool = True,
            adabn_batches: int = 8, shipped_tables: bool = True, progress: bool = True,
            memory_limit: str | int | None = "auto", wait: bool = True) -> CompileResult:
    """Prune `model` to meet the budget on each target, emit and verify an engine per target.
    `target` is a Target or a list of them (one search each: widths differ per device);
    `calib_data` is a Data (training batches for AdaBN / fine-tuning, held-out batches for the
    search) or an iterable of batches (tensors or (input, label) pairs), which then needs
    `eval_fn`. Raises InfeasibleBudgetError (exit 3) or, after writing the report,
    VerificationError (exit 4) when an engine misses its budget or disagrees with PyTorch.
    `verify_engines=False` emits without timing (a cross-compiled target with no device
    attached); the report's status is then "unverified". `adabn_batches` training batches
    re-estimate BN statistics per candidate (its cost scales with the model: fewer for big
    models); `shipped_tables=False` profiles afresh instead of starting from a shipped table
    measured on this very device. `memory_limit` ('auto', a size such as '16G', or None)
    refuses a build whose estimated footprint would not fit. `out_dir` is replaced only when
    latprune built it (or it is empty); concurrent builds into it queue on a lock (`wait=False`:
    BusyError at once)."""
    t_start = time.perf_counter()
    targets_ = list(target) if isinstance(target, (list, tuple)) else [target]
    if calib_data is None:
        raise BadInputError("compile needs data: calibration batches for AdaBN and held-out batches for the search")
    data = calib_data if isinstance(calib_data, Data) else Data.from_batches(calib_data)
    if not data.val and eval_fn is None:
        raise BadInputError("calib_data given as plain batches has no held-out split to score candidates on: "
                            "pass eval_fn(model) -> float, or a compiler.dataspec.Data with held-out batches")
    if finetune_epochs > 0 and not data.labelled():
        raise BadInputError("fine-tuning needs labelled (input, label) training batches; give labels or "
                            "finetune_epochs=0")
    for name, value, low in (("finetune_epochs", finetune_epochs, 0.0), ("tolerance", tolerance, 0.0)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= low):
            raise BadInputError(f"{name} must be a finite number >= {low:g}, got {value!r}")
    if max_evaluations < 1 or adabn_batches < 1:
        raise BadInputError(f"max_evaluations and adabn_batches must be >= 1 (got {max_evaluations}, {adabn_batches})")
    spec = parse_budget(budget_ms if budget_ms is not None else budget)
    tables = list(table) if isinstance(table, (list, tuple)) else [table] * len(targets_)
    if len(tables) != len(targets_):
        raise BadInputError(f"{len(tables)} latency tables for {len(targets_)} targets: give one per target, "
                            "in --target order, or none (each target's table is profiled into the cache)")
    for t, tbl in zip(targets_, tables):
        if not t.can_measure and tbl is None:
            raise BadInputError(f"{t.name} has no device attached to profile on: give --rpc HOST:PORT (or "
                                "--rpc-tracker/--rpc-key), or --table with a table measured on the device")
        if not t.can_measure and verify_engines:
            raise BadInputError(f"{t.name} has no device attached to verify the engine on: give --rpc HOST:PORT "
                                "(or --rpc-tracker/--rpc-key), or --no-verify to emit the engine unmeasured")
    inputs = as_inputs(example_inputs)
    out_dir = Path(out_dir)
    cache = Path(cache_dir) if cache_dir else default_cache_dir(out_dir)
    if cache.exists() and not cache.is_dir():
        raise BadInputError(f"cache folder {cache} exists and is not a folder; give --cache-dir a folder")
    _check_out(out_dir)
    model = model.eval()
    gm = lower(model, inputs)
    check_fits(gm, memory_limit, train_batch=len(data.train[0][0]), finetune=finetune_epochs > 0)
    check_labels(data, _classes(gm))
    opt = _Options(finetune_epochs, strategy, max_evaluations, seed, importance, tolerance, force, verify_engines,
                   adabn_batches, shipped_tables, progress)
    key = _digest(model_digest(gm), [list(t.shape) for t in inputs], [t.fingerprint() for t in targets_],
                  spec.label, [v for k, v in vars(opt).items() if k != "progress"], data.digest(),
                  _fn_digest(eval_fn), [_file_digest(t) for t in tables], REPORT_SCHEMA)
    with _locked(out_dir, wait):
        _check_out(out_dir)  # another build may have changed OUT while we waited
        cached = _cached(out_dir, key)
        if cached is not None:
            return cached
        metric = eval_fn or top1(data.val)
        seconds: dict[str, float] = {}
        report: dict[str, Any] = {"schema": REPORT_SCHEMA, "build_key": key, "model": type(model).__name__,
                                  "inputs": [list(t.shape) for t in inputs], "seed": seed, "budget": spec.label,
                                  "data": data.source, "targets": {}, "seconds": seconds, "warnings": []}
        t0 = time.perf_counter()
        base_score = score_of(metric, model)
        seconds["evaluate_original"] = time.perf_counter() - t0
        stage = _stage(out_dir)
        try:
            failures, first = _build(model, gm, inputs, targets_, spec, tables, data, metric, base_score, stage,
                                     out_dir, cache, key, report, opt)
            seconds["total"] = time.perf_counter() - t_start
            report["status"] = "verification_failed" if failures else "ok" if verify_engines else "unverified"
            report["failures"] = failures
            atomic_write_text(stage / "report.json", json.dumps(report, indent=1, default=float) + "\n")
            atomic_write_text(stage / "report.html", render(report))
            _swap_in(stage, out_dir)
        finally:
            shutil.rmtree(stage, ignore_errors=True)  # a failed or interrupted build leaves nothing half-written
    if failures:
        raise VerificationError("verification failed: " + "; ".join(failures) + f" (see {out_dir / 'report.json'})")
    return CompileResult(first[0], first[1], report, out_dir)


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
    return _digest(*parts)


def _build(model: nn.Module, gm: fx.GraphModule, inputs: tuple[torch.Tensor, ...], targets_: list[Any], spec: Any,
           tables: list[Any], calib_data: Data, metric: EvalFn, base_score: float, stage: Path, out_dir: Path, cache: Path,
           key: str, report: dict[str, Any], opt: _Options) -> tuple[list[str], tuple[fx.GraphModule, dict[str, int]]]:
    """Per target: table, search, rewrite + AdaBN (+ KD fine-tune), emit into `stage`, verify."""
    seconds = report["seconds"]
    failures: list[str] = []
    first: tuple[fx.GraphModule, dict[str, int]] | None = None
    for tgt, table in zip(targets_, tables):
        t0 = time.perf_counter()
        tbl, table_path = _table_for(model, inputs, tgt, cache, table, opt.force, opt.shipped_tables, opt.progress)
        t1 = time.perf_counter()
        res = search(model, inputs, tbl, calib_data.train, metric, budgets=[spec], strategy=opt.strategy,
                     channel_step=tgt.channel_step, importance=opt.importance, max_evaluations=opt.max_evaluations,
                     adabn_batches=opt.adabn_batches, seed=opt.seed, fingerprint=tgt.fingerprint(), force=opt.force,
                     progress=opt.progress, cache=cache / "scores" / f"{key}-{tgt.name}.json", cache_key=key)
        t2 = time.perf_counter()
        best = res.best
        space = analyze(gm, channel_step=tgt.channel_step)
        pruned = rewrite(gm, space, best.widths, opt.importance, inputs)
        adabn(pruned, calib_data.train, max_batches=opt.adabn_batches)
        acc = {"original": base_score, "adabn": score_of(metric, pruned), "finetuned": None}
        _search_warnings(report, tgt.name, spec.label, res)
        t3 = time.perf_counter()
        if opt.finetune_epochs > 0:
            tuned = finetune(pruned, model, calib_data.train, opt.finetune_epochs, seed=opt.seed, progress=opt.progress)
            tuned.meta.update(pruned.meta)
            pruned = tuned
            acc["finetuned"] = score_of(metric, pruned)
        t4 = time.perf_counter()
        artifact, files = emit(pruned, inputs, tgt, stage / tgt.name)
        t5 = time.perf_counter()
        if opt.verify_engines:
            from latency_tables.profile import MODEL_TIMING
            check = verify(pruned, inputs, tgt, artifact, best.budget_ms, best.latency_ms, opt.tolerance, MODEL_TIMING)
            failures += _failures(tgt.name, check)
        else:
            check = {"skipped": "emitted with verification off (--no-verify)", "budget_ms": best.budget_ms,
                     "predicted_ms": best.latency_ms}
        t6 = time.perf_counter()
        seconds.update({f"{tgt.name}/table": t1 - t0, f"{tgt.name}/search": t2 - t1, f"{tgt.name}/rewrite_adabn": t3 - t2,
                        f"{tgt.name}/finetune": t4 - t3, f"{tgt.name}/emit": t5 - t4, f"{tgt.name}/verify": t6 - t5})
        report["targets"][tgt.name] = {
            "fingerprint": tgt.fingerprint(), "table": table_path, "budget": spec.label, "budget_ms": best.budget_ms,
            "full_ms": res.full_ms, "floor_ms": res.floor_ms, "predicted_ms": best.latency_ms, "verify": check,
            "accuracy": acc, "widths": best.widths,
            "groups": [{"id": g.id, "size": g.size, "kept": best.widths[g.id], "prunable": g.prunable,
                        "layers": list(dict.fromkeys(m.node for m in g.members))} for g in space.groups],  # graph order
            "uniform": None if best.uniform is None else {
                "predicted_ms": best.uniform.latency_ms, "adabn": best.uniform.score,
                "ratio": round(sum(best.uniform.widths[g.id] for g in space.prunable())
                               / max(sum(g.size for g in space.prunable()), 1), 4)},
            "params": {"original": params(model), "pruned": params(pruned)},
            "macs": {"original": macs(model, inputs), "pruned": macs(pruned, inputs)},
            "search": {"stats": res.stats, "archive": [[c.latency_ms, c.score] for c in res.archive],
                       "pareto": [[c.latency_ms, c.score] for c in res.pareto()]},
            "files": {k: str(Path(out_dir) / Path(v).relative_to(stage)) if Path(v).is_relative_to(stage) else v
                      for k, v in files.items()}}
        first = first or (pruned, best.widths)
    assert first is not None
    return failures, first


def _search_warnings(report: dict[str, Any], target: str, budget: str, res: Any) -> None:
    """Say so when the search had nothing to do or could not tell candidates apart."""
    best = res.best
    if best.budget_ms >= res.full_ms:
        _warn(report, f"{target}: budget {budget} = {best.budget_ms:.4g} ms is at or above the unpruned model's "
                      f"predicted {res.full_ms:.4g} ms; nothing needs pruning (the model is kept whole where the "
                      "search finds nothing better)")
    scores = {c.score for c in res.archive}
    if len(res.archive) > 1 and len(scores) == 1:
        (only,) = scores
        _warn(report, f"{target}: every one of {len(res.archive)} candidates scored {only:.4g}, so the search could "
                      "not tell them apart. Likely causes: labels that do not match the model's head (e.g. a "
                      "1000-class head with 10-class data), an eval_fn that ignores the model, or too few "
                      "evaluation images (--eval-images)")


def _failures(name: str, check: dict[str, Any]) -> list[str]:
    out = []
    if not check["within_budget"]:
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
        if report.get("build_key") != key or report.get("status") not in ("ok", "unverified"):
            return None
        files = [Path(f) for t in report["targets"].values() for f in t["files"].values()]
        first = next(iter(report["targets"].values()))
    except (OSError, ValueError, AttributeError, TypeError, StopIteration):
        return None  # not a report this latprune wrote: rebuild
    if not all(f.exists() for f in files):
        return None
    report["cached"] = True
    return CompileResult(load(first["files"]["pytorch"]), first["widths"], report, out_dir)
