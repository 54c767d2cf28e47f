"""Evolution (MetaPruning) vs random sampling (EagleEye): the best found as evaluations grow,
and the pick a search returns.

Arms are strategies, evolution with a generation size (`evolution/8`: generations of 8
children scored together, as workers need; `evolution/1`: each child bred from every score
before it, the default; `evolution/1/p32`: with a seed population of 32; `evolution/1/e60/s0`:
60 evaluations, none screened, where the others take `--evaluations` and `--screen-images`).
One search per arm and seed with all budgets sharing its evaluations, scored by `--workers`
processes (which change only its wall time, recorded per run). The archive is in evaluation order and
no arm looks at max_evaluations except to stop, so the best search score within each budget
after the first n candidates is what a run of n evaluations would have found. The pick is the
search's result: the best full score among the re-scored top candidates; it is also scored on
`--test-images` of Fashion-MNIST's test set after the same AdaBN (the held-out score chose it,
so it is biased upwards, the more the more candidates were scored in full). Writes JSON
(curves, picks, wall times, means and standard deviations over seeds) and a PNG, atomically.
Predicted latency from the shipped ORT table: no timing here. A held-out family
(tools/heldout_fmnist.py, e.g. `--model shufflenet_v2_x0_5_fmnist`), which that table has no
blocks of, gets a table profiled here on first use (build/tables/), then reused.

    .venv/bin/python tools/bench_strategies.py --model mobilenet_v2_small_fmnist --evaluations 200
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import compiler  # noqa: E402
import latency_tables  # noqa: E402
import targets  # noqa: E402
from compiler.core.atomic import atomic_path, atomic_write_text  # noqa: E402
from compiler.core.importance import scores  # noqa: E402
from compiler.data import fashion_mnist, split_train  # noqa: E402
from compiler.evaluate import PRECISIONS, Job, score  # noqa: E402
from compiler.models import REFERENCE  # noqa: E402
from bench_methods import SHIPPED, calib_batches  # noqa: E402
from bench_search import batches, profiled_table  # noqa: E402
from heldout_fmnist import HELDOUT, bench_model  # noqa: E402


ARM_KEYS = {"p": "population", "e": "max_evaluations", "s": "screen_images"}


def arm_options(arm: str) -> dict[str, Any]:
    """'evolution/8' -> strategy and generation size; 'evolution/1/p32' -> also a seed
    population of 32 (else --population); 'evolution/1/e60/s0' -> 60 evaluations scored in full
    (else --evaluations and --screen-images); 'random' -> strategy."""
    strategy, *rest = arm.split("/")
    options: dict[str, Any] = {"strategy": strategy}
    for part in rest:
        options |= {ARM_KEYS[part[0]]: int(part[1:])} if part[0] in ARM_KEYS else {"generation": int(part)}
    return options


def add_table_args(ap: argparse.ArgumentParser) -> None:
    """The options table_for reads: how a held-out model's table is profiled on first use."""
    ap.add_argument("--grid-points", type=int, default=3, help="when a held-out model's table is profiled here")
    ap.add_argument("--variants", type=int, default=6, help="when a held-out model's table is profiled here")


def table_for(model_name: str, model: torch.nn.Module, x: torch.Tensor, args: argparse.Namespace) -> Path:
    """The shipped table for a reference model; for a held-out family (whose blocks it lacks),
    one profiled here on first use (build/tables/, --grid-points, --variants) and reused."""
    if model_name not in HELDOUT:
        return SHIPPED
    path = Path(f"build/tables/strategies_{model_name}.json")
    if not path.exists():
        seconds = profiled_table([model], x, targets.get("onnxruntime-cpu", threads=1), path, args)
        print(f"profiled {path} in {seconds} s", file=sys.stderr)
    return path


def best_so_far(run: compiler.SearchResult) -> dict[str, list[float | None]]:
    """Per budget: the best score among the first n candidates that fit it, for n = 1..N."""
    curves = {}
    for b in run.results:
        best, curve = None, []
        for c in run.archive:
            if c.latency_ms <= b.budget_ms and (best is None or c.score > best):
                best = c.score
            curve.append(best)
        curves[b.budget] = curve
    return curves


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = result["budgets"]
    fig, axes = plt.subplots(1, len(budgets), figsize=(4.2 * len(budgets), 3.4))
    for ax, b in zip(np.atleast_1d(axes), budgets):
        for i, s in enumerate(result["arms"]):
            colour = f"C{i}"
            curves = np.array([[np.nan if v is None else v for v in run[b]] for run in result["curves"][s]])
            n = np.arange(1, curves.shape[1] + 1)
            ax.plot(n, np.nanmean(curves, axis=0), color=colour, label=f"{s} (mean of {len(curves)} seeds)")
            ax.fill_between(n, np.nanmin(curves, axis=0), np.nanmax(curves, axis=0), color=colour, alpha=0.15)
        ax.set_title(f"{result['model']} at {b}")
        ax.set_xlabel("evaluations")
        ax.set_ylabel("best search score (held-out top-1 after AdaBN)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=sorted([*REFERENCE, *HELDOUT]), default="mobilenet_v2_small_fmnist")
    ap.add_argument("--budgets", default="0.5x,0.35x")
    ap.add_argument("--arms", default="evolution/8,evolution/1,random")
    ap.add_argument("--evaluations", type=int, default=200)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--population", type=int, default=16)
    ap.add_argument("--eval-images", type=int, default=2000)
    ap.add_argument("--screen-images", type=int, default=256)
    ap.add_argument("--screen-precision", default="auto", choices=PRECISIONS, help="the screen's arithmetic")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--torch-threads", type=int, default=1)
    ap.add_argument("--test-images", type=int, default=10000)
    add_table_args(ap)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.torch_threads)
    out = args.out or Path(f"build/bench_strategies_{args.model}.json")
    model, x = bench_model(args.model), torch.zeros(1, 1, 28, 28)
    (xtr, ytr), (xval, yval) = split_train()
    calib = calib_batches(xtr, ytr, 0, 8)
    val = batches(xval, yval, args.eval_images)
    table = latency_tables.load(table_for(args.model, model, x, args))
    budgets, arms = args.budgets.split(","), args.arms.split(",")
    xte, yte = fashion_mnist("test")
    test = batches(xte, yte, args.test_images, 1000)
    gm = compiler.lower(model, x)
    space = compiler.analyze(gm, channel_step=table.channel_step)
    test_job = Job(gm, space, scores(gm, space, "l1", calib), calib, compiler.top1(test), None)
    tests: dict[str, list[dict[str, float]]] = {a: [] for a in arms}
    t0 = time.perf_counter()
    curves: dict[str, list[dict[str, list[float | None]]]] = {a: [] for a in arms}
    picks: dict[str, list[dict[str, float]]] = {a: [] for a in arms}
    walls: dict[str, list[float]] = {a: [] for a in arms}
    defaults = {"population": args.population, "max_evaluations": args.evaluations, "screen_images": args.screen_images}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for a in arms:
            started = time.perf_counter()
            run = compiler.search(model, x, table, calib, val, budgets=budgets,
                                  screen_precision=args.screen_precision, workers=args.workers, seed=seed,
                                  progress=False, **(defaults | arm_options(a)))
            walls[a].append(round(time.perf_counter() - started, 1))
            curves[a].append(best_so_far(run))
            picks[a].append({r.budget: r.score for r in run.results})
            tests[a].append({r.budget: score(test_job, r.widths, False)[0] for r in run.results})
            print(f"{a} seed {seed} ({walls[a][-1]} s): " + ", ".join(
                f"{b} best {c[-1]:.4f} pick {picks[a][-1][b]:.4f} test {tests[a][-1][b]:.4f}"
                for b, c in curves[a][-1].items()),
                file=sys.stderr, flush=True)
    lengths = {len(run[b]) for a in arms for run in curves[a] for b in budgets}  # each arm's own count
    checkpoints = sorted({n for n in (10, 20, 30, 50, 75, 100, 150, 200, 300, 400) if n <= max(lengths)} | lengths)
    summary = {a: {b: {n: float(np.mean([run[b][n - 1] for run in curves[a] if run[b][n - 1] is not None]))
                       for n in checkpoints if n <= min(len(run[b]) for run in curves[a])} for b in budgets}
               for a in arms}
    pick_stats = {a: {b: {"mean": float(np.mean(v := [p[b] for p in picks[a]])), "sd": float(np.std(v, ddof=1))
                          if len(v) > 1 else None, "min": min(v), "max": max(v)} for b in budgets} for a in arms}
    test_stats = {a: {b: {"mean": float(np.mean(v := [p[b] for p in tests[a]])), "sd": float(np.std(v, ddof=1))
                          if len(v) > 1 else None} for b in budgets} for a in arms}
    wall = {a: {"median_s": float(np.median(walls[a])), "min_s": min(walls[a]), "max_s": max(walls[a])} for a in arms}
    result = {"model": args.model, "args": {k: str(v) for k, v in vars(args).items()}, "budgets": budgets,
              "arms": arms, "pick_full_score": pick_stats, "pick_test_top1": test_stats, "wall": wall, "mean_best_at": summary,
              "curves": curves, "picks": picks, "tests": tests, "walls": walls, "seconds": round(time.perf_counter() - t0, 1)}
    atomic_write_text(out, json.dumps(result, indent=1) + "\n")
    plot(result, out.with_suffix(".png"))
    print(json.dumps({"pick_full_score": pick_stats, "pick_test_top1": test_stats, "wall": wall}, indent=1))


if __name__ == "__main__":
    main()
