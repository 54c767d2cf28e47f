"""The `latprune` command: profile | inspect | compile | show.

Errors a user can cause print one line naming the cause and the fix, and exit with the
error's code (2 bad input, 3 infeasible budget, 4 verification failed, 5 output folder busy);
an OSError on a path the user gave is exit 2 too. Anything else is a bug in latprune: one line
and exit 1; `--debug` shows the traceback. Ctrl-C exits 130 and leaves no half-written file
(every artifact is written atomically).
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import traceback
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import latency_tables
import targets
from latency_tables.blocks import describe_key
from latency_tables.predict import noise_warning
from latency_tables.profile import OFF_STEP_VARIANTS, VARIANTS
from latency_tables.step import probe_step

from .core.atomic import atomic_write_text
from .core.errors import BadInputError, LatpruneError, VerificationError
from .core.importance import IMPORTANCE
from .core.serialize import load
from .data import FASHION_MNIST
from .dataspec import load_data, load_metric
from .evaluate import PRECISIONS
from .models import CHECKPOINTS
from .modelspec import example_inputs, load_model, parse_shape
from .evolution import STRATEGIES, WEIGHTS
from .pipeline import CompileOptions, compile as run_compile, default_cache_dir
from .report import resolutions
from .resolution import Resized, check_resolutions


def _number(kind: type, low: float, strict: bool = False) -> Any:
    """An argparse type: a finite `kind` >= low (> low when strict), else a one-line error."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not math.isfinite(value) or value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"{text} must be {'>' if strict else '>='} {low:g}")
        return value
    return parse


POSITIVE_INT, COUNT, NONNEG = _number(int, 1), _number(int, 0), _number(float, 0.0)
POSITIVE_FLOAT = _number(float, 0.0, strict=True)


def _sizes(text: str) -> tuple[int, ...]:
    """--resolutions: comma-separated image sizes of at least 8 pixels, e.g. 24,20."""
    try:
        sizes = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of sizes, e.g. 24,20") from None
    if any(s < 8 for s in sizes):
        raise argparse.ArgumentTypeError(f"{text!r}: every size must be at least 8 pixels")
    return sizes


def _step(text: str) -> int:
    value = POSITIVE_INT(text)
    if value & (value - 1):
        raise argparse.ArgumentTypeError(f"{text} is not a power of two (engines pad channels to 2, 4, 8, 16, ...)")
    return value


def _channels(text: str) -> range:
    try:
        first, last = (int(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not FIRST:LAST, e.g. 32:96") from None
    if not 1 <= first < last:
        raise argparse.ArgumentTypeError(f"{text!r}: need 1 <= FIRST < LAST")
    return range(first, last + 1)


def _margin(text: str) -> float | str:
    if text == "auto":
        return text
    value = NONNEG(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"{text} must be 'auto' or a share below 1, e.g. 0.05")
    return value


def _version() -> str:
    try:
        return version("latprune")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _target_options(args: argparse.Namespace, name: str | None = None) -> dict[str, Any]:
    name = name or args.target
    opts: dict[str, Any] = {"threads": args.threads}
    if name.startswith("tvm"):
        opts["trials"] = args.trials
        if args.rpc:
            opts["rpc"] = args.rpc
        if args.rpc_tracker:
            opts["rpc_tracker"], opts["rpc_key"] = args.rpc_tracker, args.rpc_key
        if args.rpc_timeout is not None:
            opts["rpc_timeout"] = args.rpc_timeout
    elif args.rpc or args.rpc_tracker or args.rpc_timeout is not None:
        raise BadInputError(f"--rpc/--rpc-tracker/--rpc-timeout only apply to TVM targets, not {name}")
    if name == "tensorrt":
        opts = {"precision": args.precision or "fp32"}
    elif name in ("cuda", "torch-cpu"):
        opts["precision"] = args.precision or ("fp16" if name == "cuda" else "fp32")
    elif args.precision:
        raise BadInputError(f"--precision applies to the tensorrt, cuda and torch-cpu targets, not {name}")
    if args.channel_step:
        opts["channel_step"] = args.channel_step
    return opts


def _add_target_args(p: argparse.ArgumentParser, multi: bool = False) -> None:
    if multi:
        p.add_argument("--target", action="append", choices=targets.NAMES,
                       help="repeat for several targets (default onnxruntime-cpu)")
    else:
        p.add_argument("--target", default="onnxruntime-cpu", choices=targets.NAMES)
    p.add_argument("--threads", type=POSITIVE_INT, default=1, help="intra-op threads the engine runs with (default 1)")
    p.add_argument("--trials", type=COUNT, default=16, help="meta-schedule trials per block (TVM targets)")
    p.add_argument("--memory-limit", default="auto", metavar="SIZE",
                   help="refuse a build estimated to need more memory (default auto: 90%% of what is free; "
                        "e.g. 16G, or none)")
    p.add_argument("--rpc", metavar="HOST:PORT", help="time on a TVM RPC server (TVM targets)")
    p.add_argument("--rpc-tracker", metavar="HOST:PORT", help="time on a free device of --rpc-key from this tracker")
    p.add_argument("--rpc-key", default="latprune", help="device key on the tracker")
    p.add_argument("--rpc-timeout", type=POSITIVE_FLOAT, metavar="SECONDS",
                   help="give up on a TVM RPC device that has not answered by then: for a session (the wait "
                        "for a busy board included) and for each call in it (default 600)")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16"],
                   help="tensorrt (default fp32), cuda (default fp16) and torch-cpu (default fp32) precision")
    p.add_argument("--channel-step", type=_step, metavar="N",
                   help="channel counts the search keeps, multiples of N (default: the target's declared step; "
                        "`latprune probe-step` measures it)")


def cmd_profile(args: argparse.Namespace) -> int:
    model = load_model(args.model)
    inputs = example_inputs(args.input_shape)
    target = targets.get(args.target, **_target_options(args))
    try:
        for r in check_resolutions(args.resolutions, inputs):
            latency_tables.profile(Resized(model, r), inputs, target, out=args.out, grid_points=args.grid_points,
                                   variants=args.variants, off_step_variants=args.off_step_variants, seed=args.seed,
                                   name=f"{args.name or args.model}@{r}", force=args.force, progress=not args.quiet,
                                   save_every_s=args.save_every, memory_limit=args.memory_limit)
        table = latency_tables.profile(model, inputs, target, out=args.out, grid_points=args.grid_points,
                                       variants=args.variants, off_step_variants=args.off_step_variants,
                                       seed=args.seed, name=args.name or args.model,
                                       force=args.force, progress=not args.quiet, save_every_s=args.save_every,
                                       memory_limit=args.memory_limit)
    finally:
        target.close()
    s = table.last_profile
    report = {"table": str(args.out), "measured_points": s.measured_points, "reused_points": s.reused_points,
              "measured_variants": s.measured_variants, "seconds": round(s.seconds, 1),
              "entries": len(table.entries), "fingerprint": table.fingerprint}
    print(json.dumps(report, indent=1) if args.json else
          f"profiled {args.model} on {args.target}: {s.measured_points} points measured, {s.reused_points} reused, "
          f"{s.measured_variants} end-to-end variants, {s.seconds:.0f} s -> {args.out}")
    return 0


def cmd_probe_step(args: argparse.Namespace) -> int:
    target = targets.get(args.target, **_target_options(args))
    try:
        say = None if args.quiet else (lambda line: print(f"  {line}", file=sys.stderr))
        probe = probe_step(target, args.channels, size=args.size, batch=args.batch, progress=say)
    finally:
        target.close()
    if args.out:
        atomic_write_text(args.out, json.dumps(probe, indent=1) + "\n")
    if args.json:
        print(json.dumps(probe, indent=1))
        return 0
    blocks = ", ".join(f"{k} {v}" for k, v in probe["per_block"].items())
    print(f"{args.target}: measured channel step {probe['measured_step']} ({blocks}); the target declares "
          f"{probe['declared_step']}. To use the measured one: --channel-step {probe['measured_step']} "
          "with profile and compile" + (f". Curves: {args.out}" if args.out else ""))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    table = latency_tables.load(args.table)
    s = table.summary()
    if args.json:
        print(json.dumps(s, indent=1))
        return 0
    print(f"latency table {args.table}")
    print("  fingerprint: " + ", ".join(f"{k}={v}" for k, v in s["fingerprint"].items()))
    print(f"  channel step: {s['step']}   per-call overhead subtracted: {s['overhead_ms']:.4f} ms")
    print(f"  timing: {json.dumps(s['timing']['blocks'])}")
    print(f"  entries: {s['entries']} blocks ({s['complete_entries']} complete), {s['points']} measured points")
    for key, grid in list(s["grids"].items())[: args.limit]:
        slow = s["fallback_grids"].get(key)
        print(f"    {describe_key(key):56s} grid={grid}" + (f" fallback kernels={slow}" if slow else ""))
    if len(s["grids"]) > args.limit:
        print(f"    ... {len(s['grids']) - args.limit} more (--limit)")
    for key, m in s["models"].items():
        print(f"  model {m['name']} [{key}]: {m['variants']} measured variants, correction {m.get('form')} "
              f"{m.get('coef')}, leave-one-out error median {m.get('loo_median_abs')}% max {m.get('loo_max_abs')}%"
              + (f", 90% bound {m['bound_pct']:.3g}%" if m["bound_pct"] is not None else ""))
        if m["noise_pct"] is not None:
            print("    profile noise: " + (noise_warning(m["name"], m["noise_pct"]) or
                                          f"the unpruned model's time spread by {m['noise_pct']:.1f}% (p10 to p90)"))
        off = m.get("off_step")
        scale = f", fallback kernels x{m['fallback_scale']}" if "fallback_scale" in m else ""
        bound = f", 90% bound {off['bound_pct']:.3g}%" if off and off["bound_pct"] is not None else ""
        print(f"    off the channel step: error median {off['median_abs']}% max {off['max_abs']}% over {off['n']} "
              f"variants{bound}{scale}" if off else "    off the channel step: no variants measured (profile again to add them)")
    return 0


def _deps(args: argparse.Namespace) -> list[str]:
    """Files a rebuild depends on: the model's source or .pt2, the data, a given table, --eval's module."""
    deps = []
    for spec in (args.model, args.eval):
        if not spec:
            continue
        mod = spec.partition(":")[0]
        if Path(mod).exists():
            deps.append(mod)
        else:
            try:
                f = getattr(importlib.import_module(mod), "__file__", None)
            except ImportError:
                f = None
            if f:
                deps.append(f)
    if Path(args.data).exists():
        deps.append(args.data)
    elif args.data == "fashion-mnist":
        deps += [str(p) for p in sorted(FASHION_MNIST.glob("*.gz"))]
    deps += [str(t) for t in args.table or []]
    if args.model.startswith("compiler.models:"):
        deps += [str(p) for p in sorted(CHECKPOINTS.glob("*.pt"))]
    return [str(Path(d).resolve()) for d in deps]


def cmd_compile(args: argparse.Namespace) -> int:
    model = load_model(args.model, seed=args.seed)
    inputs = example_inputs(args.input_shape)
    cache = args.cache_dir or default_cache_dir(args.out)
    tgts = [targets.get(name, **_target_options(args, name),
                        **({"work_dir": cache / "tvm_tuning" / name} if name.startswith("tvm") else {}))
            for name in (args.target or ["onnxruntime-cpu"])]  # first: a missing backend fails fast
    try:
        data = load_data(args.data, parse_shape(args.input_shape[0]), batch_size=args.batch_size, seed=args.seed,
                         max_val=args.eval_images)
        eval_fn = load_metric(args.eval)(data.val) if args.eval else None  # checked: a callable or exit 2
        options = CompileOptions(
            out_dir=args.out, cache_dir=cache, finetune_epochs=args.finetune_epochs, strategy=args.strategy,
            max_evaluations=args.evaluations, generation=args.generation, patience=args.patience, seed=args.seed,
            weights=args.weights, pruningnet_steps=args.pruningnet_steps,
            importance=args.importance, reconstruct=args.reconstruct, refit_candidates=args.refit_candidates,
            sparsity_epochs=args.sparsity_train,
            sparsity=args.sparsity, steps=args.steps, step_epochs=args.step_epochs, resolutions=args.resolutions,
            tolerance=args.tolerance, force=args.force, safety_margin=args.safety_margin, confirm=args.confirm,
            verify_engines=not args.no_verify, adabn_batches=args.adabn_batches,
            screen_images=args.screen_images, screen_precision=args.screen_precision, rescore=args.rescore,
            workers=args.workers, ray=args.ray,
            shipped_tables=not args.no_shipped_tables, memory_limit=args.memory_limit, progress=not args.quiet,
            wait=not args.no_wait, check=args.check, dump_dir=args.dump_dir)
        result = run_compile(model, inputs, tgts, args.budget, table=args.table, calib_data=data, eval_fn=eval_fn,
                             options=options)
    except VerificationError:  # the report was written: show what missed before the error line
        report = Path(args.out) / "report.json"
        if report.is_file():
            _print_report(json.loads(report.read_text()), args)
        raise
    finally:
        for t in tgts:
            t.close()
    if args.depfile:
        target = (Path(args.out) / "report.json").as_posix()
        atomic_write_text(args.depfile, f"{target}: " + " ".join(d.replace(" ", "\\ ") for d in _deps(args)) + "\n")
    _print_report(result.report, args)
    return 0


def _print_report(rep: dict[str, Any], args: argparse.Namespace) -> None:
    """report.json on stdout with --json, else the summary a person reads."""
    print(json.dumps(rep, indent=1, default=float) if args.json else summary(rep, Path(args.out)))


def _measured(v: dict[str, Any]) -> str:
    if "skipped" in v:
        return "not measured (--no-verify)"
    if "not_timed" in v:
        return f"not measured (emulated device); outputs {'match' if v['outputs_match'] else 'differ'}"
    share = f" ({v['measured_share']:.3g}x the unpruned engine timed beside it)" if "measured_share" in v else ""
    return f"measured {v['measured_ms']:.4g} ms{share}"


def summary(rep: dict[str, Any], out: Path) -> str:
    """What a person wants after a build: latency, size and accuracy per target, what the search
    bought over uniform scaling, and which layers were pruned."""
    lines = []
    if sp := rep.get("sparsity"):
        lines.append(f"sparsity training: {sp['epochs']} epochs at {sp['penalty']}: accuracy {sp['accuracy']:.4f}, "
                     f"BN scales under 1e-2 {sp['scales_before']['share_below_1e-2']:.1%} -> "
                     f"{sp['scales_after']['share_below_1e-2']:.1%}")
    for name, t in rep["targets"].items():
        v, acc = t["verify"], t["accuracy"]
        measured = _measured(v)
        margin = f" (searched under {t['search_limit_ms']:.4g} ms: {t['safety_margin']:.1%} safety margin)" \
            if t.get("safety_margin") else ""
        lines.append(f"{name}: budget {t['budget']} = {t['budget_ms']:.4g} ms{margin}; predicted {t['predicted_ms']:.4g} ms, "
                     f"{measured}; params {t['params']['pruned']:,}/{t['params']['original']:,}; accuracy "
                     f"{acc['original']:.4f} -> {acc['adabn']:.4f} (AdaBN)"
                     + (f" -> {acc['reconstructed']:.4f} (refitted)" if acc.get("reconstructed") is not None else "")
                     + (f" -> {acc['finetuned']:.4f} (fine-tuned)" if acc["finetuned"] is not None else ""))
        if res := t.get("resolution"):
            lines.append(f"  resolution {'x'.join(map(str, res['chosen']))} (native {'x'.join(map(str, res['native']))}): "
                         + resolutions(res))
        for s in t.get("steps", []):
            lines.append(f"  step {s['step']}: budget {s['budget_ms']:.4g} ms, predicted {s['predicted_ms']:.4g} ms, "
                         f"{s['kept']:.0%} of the channels kept, accuracy {s['accuracy']:.4f}")
        u = t.get("uniform")
        if u:
            lines.append(f"  uniform scaling at the same budget: {u['adabn']:.4f} after AdaBN (predicted "
                         f"{u['predicted_ms']:.4g} ms); searched: {acc['adabn']:.4f}")
        pruned = [g for g in t["groups"] if g["kept"] < g["size"]]
        lines.append(f"  pruned {len(pruned)} of {sum(g['prunable'] for g in t['groups'])} prunable channel groups:")
        lines += [f"    {g['id']}: {g['size']} -> {g['kept']}  ({', '.join(g.get('layers', [])[:4])}"
                  f"{', ...' if len(g.get('layers', [])) > 4 else ''})" for g in pruned]
        lines.append(f"  artifacts: {', '.join(f'{k}={p}' for k, p in t['files'].items())}")
    lines += [f"warning: {w}" for w in rep.get("warnings", [])]
    lines.append(f"report: {out / 'report.json'} and report.html" + (" (cached)" if rep.get("cached") else ""))
    return "\n".join(lines)


def cmd_show(args: argparse.Namespace) -> int:
    """What a .latprune file holds: inputs, groups and their widths, layers, parameters."""
    gm = load(args.file)
    info = gm.meta["latprune"]
    space, widths = info["space"], info["widths"]
    n_params = sum(p.numel() for p in gm.parameters())
    layers = [(n.target, type(gm.get_submodule(n.target)).__name__) for n in gm.graph.nodes if n.op == "call_module"]
    groups = [{"id": g.id, "size": g.size, "kept": widths.get(g.id, g.size), "prunable": g.prunable,
               "reason": g.reason} for g in space.groups]
    if args.json:
        print(json.dumps({"file": str(args.file), "inputs": gm.meta["example_shapes"], "params": n_params,
                          "groups": groups, "layers": [{"name": a, "type": b} for a, b in layers]}, indent=1))
        return 0
    print(f"pruned model {args.file}: inputs {gm.meta['example_shapes']}, {n_params:,} parameters, "
          f"{len(layers)} layers, {len(groups)} channel groups")
    for g in groups:
        state = f"{g['size']} -> {g['kept']}" if g["prunable"] else f"{g['size']} (frozen: {g['reason']})"
        print(f"  {g['id']}: {state}")
    return 0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="latprune", description="Hardware-aware, latency-constrained channel pruning.")
    ap.add_argument("--version", action="version", version=f"latprune {_version()}")
    ap.add_argument("--debug", action="store_true", help="show the traceback of any error")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("profile", help="measure a model's blocks on a target into a latency table")
    p.add_argument("model", help="package.module:factory, file.py:factory, or a torch.export.save .pt2 file")
    p.add_argument("--input-shape", action="append", required=True, help="e.g. 1,3,224,224 (repeat per input)")
    _add_target_args(p)
    p.add_argument("--out", type=Path, required=True, help="table file (extended and resumed if it exists)")
    p.add_argument("--grid-points", type=_number(int, 2), default=6, help="on-step grid points per channel dim")
    p.add_argument("--variants", type=COUNT, default=VARIANTS, help="random variants measured end to end for the correction")
    p.add_argument("--off-step-variants", type=COUNT, default=OFF_STEP_VARIANTS,
                   help="random variants at any channel counts, measured to state the error off the channel step")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resolutions", type=_sizes, default=(), metavar="R,R",
                   help="also profile the model behind an input resize to each of these sizes (compile --resolutions)")
    p.add_argument("--name", help="model name recorded in the table")
    p.add_argument("--force", action="store_true", help="use/overwrite a table of another fingerprint")
    p.add_argument("--save-every", type=POSITIVE_FLOAT, default=5.0, metavar="SECONDS",
                   help="checkpoint the table this often (an interrupted profile resumes from it)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(fn=cmd_profile)

    p = sub.add_parser("compile", help="prune a model to a latency budget, emit and verify engines")
    p.add_argument("model", help="package.module:factory, file.py:factory, or a torch.export.save .pt2 file")
    p.add_argument("--input-shape", action="append", required=True, help="e.g. 1,3,224,224")
    _add_target_args(p, multi=True)
    p.add_argument("--budget", default="0.5x", help="6ms, 0.5x or 50%% of the unpruned latency (default 0.5x)")
    p.add_argument("--data", required=True,
                   help="fashion-mnist, an ImageFolder folder, a .npz with x/y, or package.module:function")
    p.add_argument("--eval", help="package.module:function(val_batches) -> eval_fn (default top-1)")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=64, help="training batch size (AdaBN, fine-tune)")
    p.add_argument("--adabn-batches", type=POSITIVE_INT, default=8,
                   help="training batches that re-estimate BN statistics per candidate (default 8)")
    p.add_argument("--eval-images", type=POSITIVE_INT, default=2000, help="held-out images that score candidates (default 2000)")
    p.add_argument("--screen-images", type=COUNT, default=CompileOptions.screen_images,
                   help="score every candidate first on this many held-out images after AdaBN on 2 batches, and "
                        f"only the --rescore best on all of them (0: all in full; default {CompileOptions.screen_images})")
    p.add_argument("--screen-precision", choices=PRECISIONS, default=CompileOptions.screen_precision,
                   help="arithmetic of the screening score: auto (default) is bf16 where the CPU computes it "
                        "natively (AVX512-BF16, AMX), about 2x faster, else fp32; full scores are always fp32")
    p.add_argument("--rescore", type=POSITIVE_INT, default=CompileOptions.rescore,
                   help=f"candidates scored in full after screening (default {CompileOptions.rescore})")
    p.add_argument("--workers", type=POSITIVE_INT, default=CompileOptions.workers,
                   help="score search candidates in this many local processes, one thread each; the result does "
                        f"not depend on it (default {CompileOptions.workers}: in this process)")
    p.add_argument("--ray", metavar="ADDRESS",
                   help="score search candidates on a Ray cluster ('auto', ray://HOST:PORT, or 'local'), one actor "
                        "per CPU or --workers of them; needs pip install 'latprune[ray]'")
    p.add_argument("--out", type=Path, default=Path("build/latprune"))
    p.add_argument("--table", type=Path, action="append",
                   help="use this latency table (one per --target, in order; default: profile into the cache)")
    p.add_argument("--cache-dir", type=Path, help="tables and search scores (default: beside --out)")
    p.add_argument("--finetune-epochs", type=NONNEG, default=0.0, help="KD fine-tune from the original (default 0)")
    p.add_argument("--strategy", default="evolution", choices=list(STRATEGIES),
                   help="evolution (MetaPruning, default), random (EagleEye) or netadapt (greedy, one grid step at a time: a baseline)")
    p.add_argument("--importance", default=CompileOptions.importance, choices=sorted([*IMPORTANCE, "slimming"]),
                   help="which channels a width keeps: weight norms (l1, l2), BN scales (bn_gamma; slimming: after "
                        "--sparsity-train), or the next layer's output on calibration data (thinet, lasso); default l1")
    p.add_argument("--sparsity-train", type=NONNEG, default=0.0, metavar="EPOCHS",
                   help="Network Slimming: train first with an L1 penalty on BatchNorm scales (default 0: off)")
    p.add_argument("--sparsity", type=NONNEG, default=CompileOptions.sparsity, metavar="L",
                   help=f"the penalty's weight (default {CompileOptions.sparsity})")
    p.add_argument("--reconstruct", action=argparse.BooleanOptionalAction, default=CompileOptions.reconstruct,
                   help="refit the layers that read pruned channels by least squares before AdaBN (default on)")
    p.add_argument("--refit-candidates", type=POSITIVE_INT, default=CompileOptions.refit_candidates, metavar="K",
                   help="with the refit: refit the search's K best candidates and keep the best refitted one "
                        f"(default {CompileOptions.refit_candidates})")
    p.add_argument("--steps", type=POSITIVE_INT, default=CompileOptions.steps, metavar="K",
                   help="prune iteratively: K budgets from the unpruned latency down to --budget, each searched, "
                        "rewritten, repaired and fine-tuned (default 1: one shot)")
    p.add_argument("--step-epochs", type=NONNEG, default=CompileOptions.step_epochs, metavar="EPOCHS",
                   help=f"KD fine-tune after each step but the last (default {CompileOptions.step_epochs})")
    p.add_argument("--resolutions", type=_sizes, default=(), metavar="R,R",
                   help="also search the model at these input sizes (resized in the engine), e.g. 24,20; the best "
                        "under the budget wins (tables need these sizes: profile --resolutions)")
    p.add_argument("--evaluations", type=POSITIVE_INT, default=CompileOptions.max_evaluations,
                   help=f"candidates the search evaluates (default {CompileOptions.max_evaluations})")
    p.add_argument("--generation", type=POSITIVE_INT, default=CompileOptions.generation,
                   help="evolution scores this many children at a time, bred from the scores before them (1: each "
                        "child from every score before it); workers share a generation, so give at least --workers "
                        f"(default {CompileOptions.generation})")
    p.add_argument("--patience", type=POSITIVE_INT, metavar="N",
                   help="stop the search once no budget's best score has risen in N candidates (default: off; "
                        "runs to --evaluations)")
    p.add_argument("--weights", default=CompileOptions.weights, choices=list(WEIGHTS),
                   help="score candidates with the trained model's weights sliced to them (default, EagleEye) or "
                        "with weights a PruningNet generates for their widths (MetaPruning; trained first for "
                        "--pruningnet-steps steps on --data's training batches)")
    p.add_argument("--pruningnet-steps", type=POSITIVE_INT, default=CompileOptions.pruningnet_steps, metavar="N",
                   help=f"PruningNet training steps, one random width vector each (default "
                        f"{CompileOptions.pruningnet_steps})")
    p.add_argument("--tolerance", type=NONNEG, default=0.03, help="measured latency may exceed the budget by this share")
    p.add_argument("--confirm", type=COUNT, default=3, metavar="N",
                   help="build and time up to N of the best candidates on the device before keeping one (default 3)")
    p.add_argument("--safety-margin", type=_margin, default="auto", metavar="auto|SHARE",
                   help="keep predictions this share under the budget (default auto: the table's own "
                        "validation error for the model)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--depfile", type=Path, help="write a Make/Ninja depfile for out/report.json")
    p.add_argument("--dump-dir", type=Path, help="write the graph and pruning space after every pass here")
    p.add_argument("--check", action="store_true",
                   help="assert that the pruned model equals the masked original after the rewrite")
    p.add_argument("--force", action="store_true", help="use a table of another fingerprint")
    p.add_argument("--no-shipped-tables", action="store_true",
                   help="profile afresh instead of starting from a shipped table of this device")
    p.add_argument("--no-verify", action="store_true",
                   help="emit engines without timing them (a cross-compiled target with no device attached)")
    p.add_argument("--no-wait", action="store_true",
                   help="fail at once (exit 5) when another build is writing --out, instead of queueing")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print report.json to stdout (progress stays on stderr)")
    p.set_defaults(fn=cmd_compile)

    p = sub.add_parser("probe-step", help="measure the channel step a target's kernels want")
    _add_target_args(p)
    p.add_argument("--channels", type=_channels, default=range(32, 97), metavar="FIRST:LAST",
                   help="channel counts each block is timed at, step 1 (default 32:96)")
    p.add_argument("--size", type=POSITIVE_INT, default=28, help="input height and width of each block (default 28)")
    p.add_argument("--batch", type=POSITIVE_INT, default=1)
    p.add_argument("--out", type=Path, help="write the result, with every timing, as JSON")
    p.add_argument("--quiet", action="store_true", help="no per-count progress")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(fn=cmd_probe_step)

    p = sub.add_parser("inspect", help="summarise a latency table")
    p.add_argument("table", type=Path)
    p.add_argument("--limit", type=COUNT, default=20, help="blocks to list")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_inspect)

    p = sub.add_parser("show", help="summarise a pruned model file (model.latprune)")
    p.add_argument("file", type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_show)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    warnings.showwarning = lambda message, *_, **__: print(f"latprune: warning: {message}", file=sys.stderr)
    try:
        return args.fn(args)
    except LatpruneError as exc:
        return _fail(args, f"error: {exc}", exc.exit_code)
    except OSError as exc:  # a path the user gave: missing, a file where a folder belongs, no permission, disk full
        where = f" {exc.filename}" if exc.filename else ""
        return _fail(args, f"error: cannot use{where}: {exc.strerror or exc}", 2)
    except KeyboardInterrupt:
        print("latprune: interrupted; finished work is saved and the next run resumes from it", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug in latprune, not the user's mistake
        return _fail(args, f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
                           "(a bug in latprune; rerun with --debug for the traceback and report it)", 1)


def _fail(args: argparse.Namespace, message: str, code: int) -> int:
    if args.debug:
        traceback.print_exc()
    print(f"latprune: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
