"""Latency-constrained search on a trained reference model, against the baselines, on real data.

For budgets (fractions of the unpruned model's latency on onnxruntime-cpu, 1 thread):
- the searched model (evolution, AdaBN fitness on the held-out split), uniform width scaling
  and Torch-Pruning 1.6.1 (L1 magnitude, uniform and global, channels rounded to the target's
  step) each tuned to the largest model whose *measured* latency meets the budget;
- for each: measured latency (beside the unpruned engine), test top-1 after AdaBN and after
  the same short fine-tune (plain cross-entropy, cosine LR);
- EagleEye's check: Spearman correlation between held-out accuracy before fine-tuning and
  after a short fine-tune over random candidates, with AdaBN and without (stale BN stats);
- evolution vs random search at equal evaluations over several seeds;
- candidates per second and the rewrite / AdaBN / eval cost split.
Writes JSON (atomically) and a PNG plot (accuracy vs measured latency).

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python tools/bench_search.py --model resnet20_fmnist --out tools/results/bench_search_resnet20.json
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy.stats import spearmanr
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import compiler  # noqa: E402
import latency_tables  # noqa: E402
import targets  # noqa: E402
from compiler.core.atomic import atomic_path, atomic_write_text  # noqa: E402
from compiler.data import fashion_mnist, split_train  # noqa: E402
from compiler.models import REFERENCE, reference  # noqa: E402
from latency_tables.profile import MODEL_TIMING  # noqa: E402

Batches = list[tuple[torch.Tensor, torch.Tensor]]


def batches(x: torch.Tensor, y: torch.Tensor, n: int, size: int = 500) -> Batches:
    return [(x[i:i + size], y[i:i + size]) for i in range(0, min(n, len(x)), size)]


def compile_bench_args(ap: argparse.ArgumentParser) -> None:
    """The flags every whole-compile bench (bench_iterative, bench_resolution) shares."""
    ap.add_argument("--models", default="resnet20_fmnist,mobilenet_v2_small_fmnist")
    ap.add_argument("--budgets", default="0.5,0.35")
    ap.add_argument("--epochs", type=float, default=0.3, help="KD fine-tune epochs of the fine-tuned runs")
    ap.add_argument("--evaluations", type=int, default=30, help="candidates per search")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--test-images", type=int, default=2000)
    ap.add_argument("--torch-threads", type=int, default=1)
    ap.add_argument("--grid-points", type=int, default=3, help="when a bench profiles its own table")
    ap.add_argument("--variants", type=int, default=6, help="when a bench profiles its own table")
    ap.add_argument("--out", type=Path, required=True)


def profiled_table(models: list[nn.Module], x: torch.Tensor, target: Any, out: Path,
                   args: argparse.Namespace) -> float:
    """Profile `models` into one table at `out` (--grid-points, --variants, no off-step
    variants): for models the shipped table has no blocks of. Returns the wall seconds."""
    t0 = time.perf_counter()
    for m in models:
        latency_tables.profile(m, x, target, out=out, grid_points=args.grid_points, variants=args.variants,
                               off_step_variants=0, progress=False)
    return round(time.perf_counter() - t0, 1)


def compile_bench_setup(args: argparse.Namespace) -> tuple[Any, Callable[[nn.Module], float]]:
    """A build's data (Fashion-MNIST train in batches of 64, 1,000 held-out images) and top-1 on
    the first --test-images test images, with torch held to --torch-threads."""
    from compiler.dataspec import Data

    torch.set_num_threads(args.torch_threads)
    (xtr, ytr), (xval, yval) = split_train()
    xte, yte = fashion_mnist("test")
    data = Data(train=batches(xtr, ytr, len(xtr), 64), val=batches(xval, yval, 1000), source="fashion-mnist")
    return data, compiler.top1(batches(xte, yte, args.test_images))


def finetune(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, seed: int,
             lr: float = 0.02, batch: int = 128) -> nn.Module:
    """The short fine-tune every method gets: SGD + momentum, cosine LR, cross-entropy."""
    model = copy.deepcopy(model).train()
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=g)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


class Meter:
    """Measured latency of an engine, with the unpruned engine timed beside it (drift cancels)."""

    def __init__(self, target: targets.Target, model: nn.Module, x: torch.Tensor) -> None:
        self.target, self.x = target, x
        self.base = target.build(model, x)

    def __call__(self, model: nn.Module) -> dict[str, float]:
        t = targets.take(self.target, self.target.build(model, self.x), MODEL_TIMING, reference=self.base)
        return {"measured_ms": t.engine.median_ms, "measured_p10_ms": t.engine.p10_ms,
                "measured_p90_ms": t.engine.p90_ms, "unpruned_beside_ms": t.reference.median_ms, "measured_ratio": t.value}


def tp_prune(model: nn.Module, x: torch.Tensor, ratio: float, global_pruning: bool, step: int) -> nn.Module:
    import torch_pruning as tp

    m = copy.deepcopy(model).eval()
    fc = [mod for mod in m.modules() if isinstance(mod, nn.Linear)]
    pruner = tp.pruner.MagnitudePruner(m, x, importance=tp.importance.MagnitudeImportance(p=1),
                                       pruning_ratio=ratio, global_pruning=global_pruning,
                                       ignored_layers=fc, round_to=step)
    pruner.step()
    return m


def tune_to_budget(make: Callable[[float], nn.Module], meter: Meter, fraction: float, steps: int = 7
                   ) -> tuple[nn.Module, dict[str, Any]]:
    """Bisect a method's knob (keep ratio; 1 = unpruned) for the largest model whose measured
    latency ratio meets the budget fraction."""
    lo, hi = 0.0, 1.0
    best: tuple[nn.Module, dict[str, Any]] | None = None
    for _ in range(steps):
        mid = (lo + hi) / 2
        model = make(mid)
        m = meter(model) | {"knob": mid}
        if m["measured_ratio"] <= fraction:
            lo, best = mid, (model, m)
        else:
            hi = mid
    if best is None:
        model = make(0.02)
        best = (model, meter(model) | {"knob": 0.02, "over_budget": True})
    return best


def accuracy(model: nn.Module, data: Batches) -> float:
    return compiler.top1(data)(model)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=sorted(REFERENCE), default="resnet20_fmnist")
    ap.add_argument("--budgets", default="0.7x,0.5x,0.35x")
    ap.add_argument("--evaluations", type=int, default=60, help="candidates per search run")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--population", type=int, default=12, help="evolution's seed population (all budgets)")
    ap.add_argument("--eval-images", type=int, default=1000, help="held-out images scoring each candidate")
    ap.add_argument("--test-images", type=int, default=10000)
    ap.add_argument("--calib-batches", type=int, default=8)
    ap.add_argument("--calib-batch-size", type=int, default=64)
    ap.add_argument("--finetune-steps", type=int, default=150)
    ap.add_argument("--eagleeye-candidates", type=int, default=30)
    ap.add_argument("--eagleeye-steps", type=int, default=40)
    ap.add_argument("--torch-threads", type=int, default=2)
    ap.add_argument("--table", type=Path, default=Path("build/tables/onnxruntime-cpu-t1.json"))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--keep-eagleeye", action="store_true",
                    help="reuse the EagleEye check of an existing --out (it does not depend on the search)")
    args = ap.parse_args()
    torch.set_num_threads(args.torch_threads)
    out = args.out or Path(f"build/bench_search_{args.model}.json")
    t_start = time.perf_counter()

    model = reference(args.model)
    x = torch.zeros(1, 1, 28, 28)
    (xtr, ytr), (xval, yval) = split_train()
    xte, yte = fashion_mnist("test")
    g = torch.Generator().manual_seed(0)
    pick = torch.randperm(len(xtr), generator=g)[:args.calib_batches * args.calib_batch_size]
    calib = [(xtr[i], ytr[i]) for i in pick.split(args.calib_batch_size)]
    val = batches(xval, yval, args.eval_images)
    test = batches(xte, yte, args.test_images)
    fitness = compiler.top1(val)

    target = targets.get("onnxruntime-cpu", threads=1)
    t0 = time.perf_counter()
    table = latency_tables.profile(model, x, target, out=args.table, name=f"{args.model}@28x1")
    profile_s = time.perf_counter() - t0
    budgets = args.budgets.split(",")
    result: dict[str, Any] = {
        "model": args.model, "fingerprint": target.fingerprint(), "python": platform.python_version(),
        "torch": torch.__version__, "args": {k: str(v) for k, v in vars(args).items()},
        "profile_seconds": round(profile_s, 1), "unpruned_test_top1": accuracy(model, test)}

    # evolution vs random at equal evaluations, over seeds; all budgets share each run's archive
    runs: dict[str, list[compiler.SearchResult]] = {"evolution": [], "random": []}
    for seed in range(args.seeds):
        for strategy in runs:
            runs[strategy].append(compiler.search(model, x, table, calib, fitness, budgets=budgets,
                                                  strategy=strategy, max_evaluations=args.evaluations,
                                                  population=args.population, seed=seed, progress=False))
            r = runs[strategy][-1]
            print(f"{strategy} seed {seed}: " + ", ".join(f"{b.budget} {b.score:.4f}" for b in r.results),
                  file=sys.stderr)
    result["strategies"] = {
        s: {"per_seed": [{b.budget: b.score for b in r.results} for r in rs],
            "mean": {b: float(np.mean([next(x.score for x in r.results if x.budget == b) for r in rs]))
                     for b in budgets},
            "stats": [r.stats for r in rs]} for s, rs in runs.items()}
    main_run = runs["evolution"][0]
    result["search"] = {"full_ms": main_run.full_ms, "floor_ms": main_run.floor_ms, "stats": main_run.stats,
                        "archive": [{"latency_ms": c.latency_ms, "score": c.score, "origin": c.origin}
                                    for c in main_run.archive]}

    # each method at each budget, tuned to the measured budget, then AdaBN and fine-tune
    meter = Meter(target, model, x)
    gm = compiler.lower(model, x)
    space = compiler.analyze(gm, channel_step=table.channel_step)
    rows = []
    for b in tqdm(main_run.results, desc="methods x budgets"):
        frac = compiler.parse_budget(b.budget).value
        searched = compiler.rewrite(gm, space, b.widths)
        methods: dict[str, tuple[nn.Module, dict[str, Any]]] = {
            "latprune": (searched, meter(searched) | {"predicted_ms": b.latency_ms}),
            "uniform": tune_to_budget(lambda r: compiler.rewrite(gm, space, space.uniform_widths(r)), meter, frac),
            "torch_pruning_uniform": tune_to_budget(lambda r: tp_prune(model, x, 1 - r, False, table.channel_step), meter, frac),
            "torch_pruning_global": tune_to_budget(lambda r: tp_prune(model, x, 1 - r, True, table.channel_step), meter, frac),
        }
        for name, (m, meas) in methods.items():
            m = compiler.adabn(copy.deepcopy(m), calib)
            tuned = finetune(m, xtr, ytr, args.finetune_steps, seed=0)
            rows.append({"budget": b.budget, "budget_fraction": frac, "budget_ms": b.budget_ms, "method": name,
                         **meas, "within_budget_3pct": meas["measured_ratio"] <= frac * 1.03,
                         "params": compiler.params(m), "macs": compiler.macs(m, x),
                         "test_top1_adabn": accuracy(m, test), "test_top1_finetuned": accuracy(tuned, test)})
            print(json.dumps(rows[-1]), file=sys.stderr)
    result["methods"] = rows

    # EagleEye's check: does accuracy before fine-tuning rank candidates like accuracy after?
    prev = json.loads(out.read_text()) if args.keep_eagleeye and out.exists() else {}
    if "eagleeye" in prev:
        result["eagleeye"] = prev["eagleeye"]
    else:
        result["eagleeye"] = eagleeye(args, gm, space, table, x, main_run, budgets, calib, val, xtr, ytr)
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    atomic_write_text(out, json.dumps(result, indent=1) + "\n")
    plot(result, out.with_suffix(".png"))
    print(json.dumps({k: v for k, v in result.items() if k not in ("search",)}, indent=1)[:6000])


def eagleeye(args: argparse.Namespace, gm: Any, space: Any, table: Any, x: torch.Tensor, main_run: Any,
             budgets: list[str], calib: Batches, val: Batches, xtr: torch.Tensor, ytr: torch.Tensor) -> dict[str, Any]:
    """Random candidates near the middle budget: held-out accuracy without AdaBN (stale BN
    statistics), with AdaBN, and after a short fine-tune; Spearman of each against the last."""
    rng = np.random.default_rng(7)
    mid = budgets[len(budgets) // 2]
    mid_ms = next(r.budget_ms for r in main_run.results if r.budget == mid)
    cands = []
    predict = table.predictor(gm, x, space=space)
    while len(cands) < args.eagleeye_candidates:
        w = space.random_widths(rng, 0.2, 1.0)
        if 0.8 * mid_ms <= predict(w) <= 1.2 * mid_ms:
            cands.append(w)
    ee = []
    for i, w in enumerate(tqdm(cands, desc="EagleEye candidates")):
        pruned = compiler.rewrite(gm, space, w)
        stale = accuracy(pruned, val)
        recal = compiler.adabn(copy.deepcopy(pruned), calib)
        ee.append({"without_adabn": stale, "adabn": accuracy(recal, val),
                   "finetuned": accuracy(finetune(recal, xtr, ytr, args.eagleeye_steps, seed=i), val)})
    tuned = [e["finetuned"] for e in ee]
    return {"budget": mid, "candidates": len(ee), "finetune_steps": args.eagleeye_steps,
            "spearman_adabn_vs_finetuned": float(spearmanr([e["adabn"] for e in ee], tuned)[0]),
            "spearman_without_adabn_vs_finetuned": float(spearmanr([e["without_adabn"] for e in ee], tuned)[0]),
            "rows": ee}


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, key, title in ((axes[0], "test_top1_adabn", "after AdaBN"), (axes[1], "test_top1_finetuned",
                                                                          "after the short fine-tune")):
        for method in dict.fromkeys(r["method"] for r in result["methods"]):
            rs = sorted((r for r in result["methods"] if r["method"] == method), key=lambda r: r["measured_ratio"])
            ax.plot([r["measured_ratio"] for r in rs], [r[key] for r in rs], "o-", label=method)
        for frac in {r["budget_fraction"] for r in result["methods"]}:
            ax.axvline(frac, color="grey", lw=0.6, ls=":")
        ax.set_title(f"{result['model']}: test top-1 {title}")
        ax.set_xlabel("measured latency / unpruned (onnxruntime-cpu, 1 thread)")
    axes[0].set_ylabel("top-1")
    axes[0].legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


if __name__ == "__main__":
    main()
