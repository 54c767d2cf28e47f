"""Evolution (MetaPruning) vs random sampling (EagleEye) as the number of evaluations grows.

One search run per strategy and seed with all budgets sharing its evaluations; the archive is
in evaluation order and neither strategy looks at max_evaluations except to stop, so the best
held-out score (after AdaBN) within each budget after the first n candidates is exactly what a
run of n evaluations returns. Writes JSON (best-so-far curves, means over seeds at checkpoints)
and a PNG, atomically. Predicted latency from the shipped ORT table: no timing here.

    .venv/bin/python tools/bench_strategies.py --model mobilenet_v2_small_fmnist --evaluations 100
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
from compiler.core.atomic import atomic_path, atomic_write_text  # noqa: E402
from compiler.data import split_train  # noqa: E402
from compiler.models import REFERENCE, reference  # noqa: E402

STRATEGIES = ("evolution", "random")


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
        for s, colour in zip(STRATEGIES, ("C0", "C1")):
            curves = np.array([[np.nan if v is None else v for v in run[b]] for run in result["curves"][s]])
            n = np.arange(1, curves.shape[1] + 1)
            ax.plot(n, np.nanmean(curves, axis=0), color=colour, label=f"{s} (mean of {len(curves)} seeds)")
            ax.fill_between(n, np.nanmin(curves, axis=0), np.nanmax(curves, axis=0), color=colour, alpha=0.15)
        ax.set_title(f"{result['model']} at {b}")
        ax.set_xlabel("evaluations")
        ax.set_ylabel("best held-out top-1 after AdaBN")
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=sorted(REFERENCE), default="mobilenet_v2_small_fmnist")
    ap.add_argument("--budgets", default="0.7x,0.5x,0.35x")
    ap.add_argument("--evaluations", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--population", type=int, default=12)
    ap.add_argument("--eval-images", type=int, default=1000)
    ap.add_argument("--torch-threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.torch_threads)
    out = args.out or Path(f"build/bench_strategies_{args.model}.json")
    model, x = reference(args.model), torch.zeros(1, 1, 28, 28)
    (xtr, ytr), (xval, yval) = split_train()
    pick = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(0))[:8 * 64]
    calib = [(xtr[i], ytr[i]) for i in pick.split(64)]
    fitness = compiler.top1([(xval[:args.eval_images], yval[:args.eval_images])])
    table = latency_tables.load(latency_tables.SHIPPED / "onnxruntime-cpu_amd-epyc-avx512_t1.json")
    budgets = args.budgets.split(",")
    t0 = time.perf_counter()
    curves: dict[str, list[dict[str, list[float | None]]]] = {s: [] for s in STRATEGIES}
    for seed in range(args.seeds):
        for s in STRATEGIES:
            run = compiler.search(model, x, table, calib, fitness, budgets=budgets, strategy=s,
                                  max_evaluations=args.evaluations, population=args.population, seed=seed,
                                  progress=False)
            curves[s].append(best_so_far(run))
            print(f"{s} seed {seed}: " + ", ".join(f"{b} {c[-1]:.4f}" for b, c in curves[s][-1].items()),
                  file=sys.stderr, flush=True)
    checkpoints = sorted({n for n in (10, 20, 30, 50, 75, 100, 150, 200) if n <= args.evaluations}
                         | {args.evaluations})
    summary = {s: {b: {n: float(np.mean([run[b][n - 1] for run in curves[s] if run[b][n - 1] is not None]))
                       for n in checkpoints} for b in budgets} for s in STRATEGIES}
    result = {"model": args.model, "args": {k: str(v) for k, v in vars(args).items()}, "budgets": budgets,
              "mean_best_at": summary, "curves": curves, "seconds": round(time.perf_counter() - t0, 1)}
    atomic_write_text(out, json.dumps(result, indent=1) + "\n")
    plot(result, out.with_suffix(".png"))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
