"""Final accuracy at equal measured latency: latprune's search against the baselines, seeds.

For each reference model and budget (fractions of the unpruned engine's latency on
onnxruntime-cpu, 1 thread, measured beside it):
- latprune: evolution (generation 1, `--evaluations` screened candidates, the best
  `rescore` per budget scored in full), one search per seed, delivered as a build delivers
  it: L1 selection, least-squares refit, AdaBN; also the same widths without the refit
  ("latprune_slice"), which isolates what the search chose from how the layers are repaired;
- netadapt: the greedy descent (`strategy="netadapt"`, same fitness and screen), sliced;
- uniform width scaling, Torch-Pruning uniform and global (L1 magnitude, rounded to the
  table's channel step): each tuned to the largest model whose *measured* latency meets the
  budget, sliced;
each AdaBN-recalibrated on the same 8 training batches, then given the same short fine-tune
(SGD, cosine LR, cross-entropy) with the seed, and scored on Fashion-MNIST's test set.
Searches predict latency with the shipped ORT table; as in a build's confirm pass, a search's
pick and then its next best (3 at most) are measured until one is within budget + 3%. The
deterministic methods (netadapt, uniform, Torch-Pruning) are pruned once; their seeds differ
only in the fine-tune. `--weights pruningnet` has latprune's searches score candidates with a
PruningNet trained per search on 300 training batches; `--no-baselines` runs latprune only.
Writes JSON (rows, mean and standard error per model, budget and
method) atomically; the log prints each row as it is made.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python tools/bench_final.py --models resnet20_fmnist --out tools/results/bench_final.json
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import compiler  # noqa: E402
import latency_tables  # noqa: E402
import targets  # noqa: E402
from bench_methods import SHIPPED, calib_batches  # noqa: E402
from bench_search import Meter, accuracy, batches, finetune, tp_prune, tune_to_budget  # noqa: E402
from compiler.core.api import repaired  # noqa: E402
from compiler.core.atomic import atomic_write_text  # noqa: E402
from compiler.core.importance import scores  # noqa: E402
from compiler.data import fashion_mnist, split_train  # noqa: E402
from compiler.evolution import ranked  # noqa: E402
from compiler.models import REFERENCE, reference  # noqa: E402


def searched(model: torch.nn.Module, x: torch.Tensor, table: Any, calib: Any, val: Any, budgets: list[str],
             args: argparse.Namespace, strategy: str, seed: int, evaluations: int) -> compiler.SearchResult:
    return compiler.search(model, x, table, calib, val, budgets=budgets, strategy=strategy,
                           max_evaluations=evaluations, screen_images=args.screen_images, seed=seed, progress=False,
                           weights=args.weights if strategy == "evolution" else "sliced")


def confirmed(gm: Any, space: Any, archive: list[Any], pick: Any, fraction: float, meter: Meter
              ) -> tuple[dict[str, int], dict[str, Any]]:
    """As a build's confirm pass does: the search's pick, then the next best under its limit (3
    at most), each built and measured; the first within budget + 3% is kept, else the fastest."""
    pool = sorted(ranked(archive, pick.limit_ms), key=lambda c: c.widths != pick.widths)[:3]
    tried = []
    for c in pool:
        meas = meter(compiler.rewrite(gm, space, c.widths)) | {"predicted_ms": c.latency_ms, "confirm_rank": len(tried)}
        tried.append((c.widths, meas))
        if meas["measured_ratio"] <= fraction * 1.03:
            return tried[-1]
    return min(tried, key=lambda t: t[1]["measured_ratio"])


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard error over seeds per (model, budget, method)."""
    out = []
    for key in sorted({(r["model"], r["budget"], r["method"]) for r in rows}):
        rs = [r for r in rows if (r["model"], r["budget"], r["method"]) == key]
        ft = np.array([r["test_top1_finetuned"] for r in rs])
        out.append({"model": key[0], "budget": key[1], "method": key[2], "seeds": len(rs),
                    "finetuned_mean": round(float(ft.mean()), 4),
                    "finetuned_se": round(float(ft.std(ddof=1) / np.sqrt(len(ft))), 4) if len(ft) > 1 else None,
                    "adabn_mean": round(float(np.mean([r["test_top1_adabn"] for r in rs])), 4),
                    "measured_ratio_mean": round(float(np.mean([r["measured_ratio"] for r in rs])), 3),
                    "within_budget_3pct": all(r["within_budget_3pct"] for r in rs)})
    return out


def bench_model(name: str, args: argparse.Namespace, rows: list[dict[str, Any]], log: dict[str, Any]) -> None:
    model, x = reference(name), torch.zeros(1, 1, 28, 28)
    (xtr, ytr), (xval, yval) = split_train()
    xte, yte = fashion_mnist("test")
    calib, val, test = calib_batches(xtr, ytr, 0, 8), batches(xval, yval, args.eval_images), \
        batches(xte, yte, args.test_images)
    fractions = [float(b) for b in args.budgets.split(",")]
    labels = [f"{f}x" for f in fractions]
    meter = Meter(targets.get("onnxruntime-cpu", threads=1), model, x)
    gm = compiler.lower(model, x)
    table = latency_tables.load(SHIPPED)
    step = table.channel_step
    space = compiler.analyze(gm, channel_step=step)
    unit = scores(gm, space, "l1", calib)

    # a PruningNet trains on 300 batches; their first 8 are `calib`, which AdaBN uses as before
    train = calib_batches(xtr, ytr, 0, 300) if args.weights == "pruningnet" else calib
    fixed: dict[tuple[str, str], tuple[torch.nn.Module, dict[str, Any]]] = {}
    log[name] = {}
    if not args.no_baselines:
        t0 = time.perf_counter()
        greedy = searched(model, x, table, calib, val, labels, args, "netadapt", 0, args.netadapt_evaluations)
        log[name]["netadapt"] = {"seconds": round(time.perf_counter() - t0, 1), "candidates": len(greedy.archive)}
        print(f"{name} netadapt: {len(greedy.archive)} candidates, {log[name]['netadapt']['seconds']} s",
              file=sys.stderr)
    for frac, label, g in zip(fractions, labels, [] if args.no_baselines else greedy.results):
        widths, meas = confirmed(gm, space, greedy.archive, g, frac, meter)
        fixed[(label, "netadapt")] = (compiler.rewrite(gm, space, widths), meas)
        fixed[(label, "uniform")] = tune_to_budget(lambda r: compiler.rewrite(gm, space, space.uniform_widths(r)),
                                                   meter, frac)
        fixed[(label, "torch_pruning_uniform")] = tune_to_budget(lambda r: tp_prune(model, x, 1 - r, False, step),
                                                                 meter, frac)
        fixed[(label, "torch_pruning_global")] = tune_to_budget(lambda r: tp_prune(model, x, 1 - r, True, step),
                                                                meter, frac)
    adabned = {k: (compiler.adabn(copy.deepcopy(m), calib), meas) for k, (m, meas) in fixed.items()}

    for seed in range(args.first_seed, args.first_seed + args.seeds):
        t0 = time.perf_counter()
        found = searched(model, x, table, train, val, labels, args, "evolution", seed, args.evaluations)
        log[name][f"search_seed{seed}_seconds"] = round(time.perf_counter() - t0, 1)
        per_seed = dict(adabned)
        for frac, label, b in zip(fractions, labels, found.results):
            widths, meas = confirmed(gm, space, found.archive, b, frac, meter)
            per_seed[(label, "latprune_slice")] = (compiler.adabn(compiler.rewrite(gm, space, widths), calib), meas)
            per_seed[(label, "latprune")] = (repaired(gm, space, widths, unit, x, calib)[0], meas)
        for (label, method), (m, meas) in sorted(per_seed.items()):
            frac = float(label[:-1])
            tuned = finetune(m, xtr, ytr, args.finetune_steps, seed=seed)
            rows.append({"model": name, "budget": label, "method": method, "seed": seed, **meas,
                         "within_budget_3pct": meas["measured_ratio"] <= frac * 1.03,
                         "params": compiler.params(m), "macs": compiler.macs(m, x),
                         "test_top1_adabn": accuracy(m, test), "test_top1_finetuned": accuracy(tuned, test)})
            print(json.dumps(rows[-1]), file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet20_fmnist,mobilenet_v2_small_fmnist")
    ap.add_argument("--budgets", default="0.5,0.35")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--evaluations", type=int, default=160, help="candidates per latprune search")
    ap.add_argument("--netadapt-evaluations", type=int, default=3000, help="cap on the greedy descent's candidates")
    ap.add_argument("--screen-images", type=int, default=256)
    ap.add_argument("--weights", default="sliced", choices=["sliced", "pruningnet"],
                    help="what latprune's searches score candidates with (the baselines always slice)")
    ap.add_argument("--no-baselines", action="store_true", help="latprune's searches only")
    ap.add_argument("--eval-images", type=int, default=2000)
    ap.add_argument("--test-images", type=int, default=10000)
    ap.add_argument("--finetune-steps", type=int, default=60)
    ap.add_argument("--torch-threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("build/bench_final.json"))
    args = ap.parse_args()
    for name in args.models.split(","):
        if name not in REFERENCE:
            ap.error(f"unknown model {name!r}; choose from {sorted(REFERENCE)}")
    torch.set_num_threads(args.torch_threads)
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    log: dict[str, Any] = {}
    for name in args.models.split(","):
        bench_model(name, args, rows, log)
    result = {"args": {k: str(v) for k, v in vars(args).items()}, "python": platform.python_version(),
              "torch": torch.__version__, "host": platform.processor() or platform.machine(),
              "seconds": round(time.perf_counter() - t0, 1), "timings": log,
              "summary": summarise(rows), "rows": rows}
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    for s in result["summary"]:
        print(json.dumps(s))


if __name__ == "__main__":
    main()
