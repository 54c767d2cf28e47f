"""Which fitness ranks candidates like their fine-tuned accuracy: PruningNet, AdaBN or stale BN?

For each reference model and budget, random candidates whose predicted latency falls in
[0.9, 1.0] x budget (the shipped ORT table) are scored on `--eval-images` held-out images by
three estimators, side by side:
- `sliced`: pretrained weights sliced to the candidate (L1 order), BN statistics left stale;
- `adabn`: the same after AdaBN on the calibration batches (EagleEye; the compile's default);
- `pruningnet`: weights from a PruningNet (compiler/pruningnet.py) trained once per model for
  `--pn-steps` steps, then AdaBN (MetaPruning).
Each candidate's truth is its test top-1 (Fashion-MNIST test images) after it is delivered as a
build delivers it (L1 slice, least-squares refit, AdaBN) and given the same `--finetune-steps`
SGD fine-tune. Reported: Spearman of each estimator with the truth per model and budget, and
whether the truth's best candidate is in the estimator's top 3 (what `rescore=3` re-scores);
seconds per candidate and the PruningNet's training time. JSON written atomically.

    .venv/bin/python tools/bench_estimators.py --out tools/results/bench_estimators.json
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
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fitness import candidates, header, reference_setup  # noqa: E402
from bench_search import accuracy, batches, finetune  # noqa: E402
from bench_strategies import add_table_args  # noqa: E402
from compiler.core.adabn import adabn  # noqa: E402
from compiler.core.api import repaired  # noqa: E402
from compiler.core.atomic import atomic_write_text  # noqa: E402
from compiler.core.importance import select  # noqa: E402
from compiler.core.rewrite import apply  # noqa: E402
from compiler.data import fashion_mnist, split_train  # noqa: E402
from compiler.evaluate import top1  # noqa: E402
from compiler.pruningnet import PruningNet  # noqa: E402

ESTIMATORS = ("sliced", "adabn", "pruningnet")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="resnet20_fmnist,mobilenet_v2_small_fmnist")
    p.add_argument("--budgets", default="0.5,0.35")
    p.add_argument("--candidates", type=int, default=16, help="per model and budget")
    p.add_argument("--calib-batches", type=int, default=8)
    p.add_argument("--eval-images", type=int, default=2000)
    p.add_argument("--test-images", type=int, default=10000)
    p.add_argument("--finetune-steps", type=int, default=60)
    p.add_argument("--pn-steps", type=int, default=400, help="PruningNet training steps (batches of 64)")
    p.add_argument("--pn-lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    add_table_args(p)
    p.add_argument("--torch-threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("tools/results/bench_estimators.json"))
    args = p.parse_args()
    torch.set_num_threads(args.torch_threads)
    (xtr, ytr), (xv, yv) = split_train()
    xte, yte = fashion_mnist("test")
    g = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(len(xtr), generator=g)
    calib = [(xtr[i], ytr[i]) for i in order[:64 * args.calib_batches].split(64)]
    train = [(xtr[i], ytr[i]) for i in order.split(64) if len(i) == 64]
    metric = top1(batches(xv, yv, args.eval_images))
    test = batches(xte, yte, args.test_images)
    result = header(args)
    rng = np.random.default_rng(args.seed)
    for name in args.models.split(","):
        gm, space, unit, predict, full_ms = reference_setup(name, args)
        x = torch.zeros(1, 1, 28, 28)
        pn = PruningNet(gm, space, unit)
        t0 = time.perf_counter()
        losses = pn.fit(train, args.pn_steps, seed=args.seed, lr=args.pn_lr)
        entry: dict[str, Any] = {"pruningnet": {"train_seconds": round(time.perf_counter() - t0, 1),
                                                "steps": args.pn_steps, "generator_params": sum(
                                                    q.numel() for q in pn.parameters()),
                                                "loss_first_last_20": [float(np.mean(losses[:20])),
                                                                       float(np.mean(losses[-20:]))]},
                                 "budgets": {}}
        print(name, entry["pruningnet"], flush=True)
        for b in (float(v) for v in args.budgets.split(",")):
            rows = []
            for i, w in enumerate(candidates(space, predict, b * full_ms, args.candidates, rng)):
                row: dict[str, Any] = {"widths": w, "predicted_ms": predict(w), "seconds": {}}
                t0 = time.perf_counter()
                sliced = apply(gm, space, select(space, space.resolve(w), unit))
                t1 = time.perf_counter()
                row["sliced"] = metric(sliced)
                t2 = time.perf_counter()
                row["adabn"] = metric(adabn(sliced, calib))
                t3 = time.perf_counter()
                row["pruningnet"] = metric(adabn(pn.model(w), calib))
                t4 = time.perf_counter()
                row["seconds"] = {"sliced": t2 - t0, "adabn": t1 - t0 + t3 - t2, "pruningnet": t4 - t3}
                delivered = repaired(gm, space, space.resolve(w), unit, x, calib)[0]
                row["truth"] = accuracy(finetune(delivered, xtr, ytr, args.finetune_steps, seed=args.seed + i), test)
                rows.append(row)
                print(name, f"{b}x", i, {k: round(row[k], 4) for k in (*ESTIMATORS, "truth")}, flush=True)
            entry["budgets"][f"{b}x"] = summary(rows) | {"rows": rows}
            print(name, f"{b}x", {k: v for k, v in entry["budgets"][f"{b}x"].items() if k != "rows"}, flush=True)
        result["models"][name] = entry
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per estimator: Spearman with the truth, the truth's best in its top 3, seconds per candidate."""
    truth = [r["truth"] for r in rows]
    best = int(np.argmax(truth))
    out = {}
    for e in ESTIMATORS:
        est = [r[e] for r in rows]
        out[e] = {"spearman": float(spearmanr(est, truth).statistic),
                  "truth_best_in_top3": best in np.argsort(est)[::-1][:3].tolist(),
                  "seconds_per_candidate": float(np.median([r["seconds"][e] for r in rows]))}
    return out


if __name__ == "__main__":
    main()
