"""Should a build pick its widths after the refit? The search ranks candidates by held-out top-1
after AdaBN alone, but a build then refits the pick (least squares) before AdaBN, and the
refit changes the ranking (README, "Channel selection and refit: measured").

For each model, budget (a fraction of the unpruned model's prediction under the shipped table)
and seed, one search (l1 importance, AdaBN fitness on 1,000 held-out images, that seed's 8
calibration batches) gives an archive; its `--top` best candidates under the search's limit,
by search score, are each rewritten, refitted and AdaBN-recalibrated as a build does, and
scored on the held-out images and on the test images. pick@k is the best refitted held-out
score among the top k (pick@1 is what a build keeps today); the distinct picks are also
fine-tuned (`--finetune-steps`, tools/bench_search.py's fine-tune). Writes JSON atomically.

    .venv/bin/python tools/bench_refit_pick.py --models resnet20_fmnist --seeds 0,1,2 \
        --out tools/results/bench_refit_pick_resnet20_fmnist.json
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import compiler  # noqa: E402
import latency_tables  # noqa: E402
from bench_methods import SHIPPED, calib_batches  # noqa: E402
from bench_search import batches, finetune  # noqa: E402
from compiler.core.api import repaired  # noqa: E402
from compiler.core.atomic import atomic_write_text  # noqa: E402
from compiler.core.importance import scores  # noqa: E402
from compiler.data import fashion_mnist, split_train  # noqa: E402
from compiler.models import reference  # noqa: E402


def one_case(name: str, fraction: float, seed: int, args: argparse.Namespace, data: dict[str, Any]) -> dict[str, Any]:
    x = torch.zeros(1, 1, 28, 28)
    model = reference(name).eval()
    table = latency_tables.load(SHIPPED)
    calib = calib_batches(*data["train"], seed, 8)
    t0 = time.perf_counter()
    res = compiler.search(model, x, table, calib, data["val"], budgets=[f"{fraction}x"],
                          max_evaluations=args.evaluations, seed=seed, progress=False)
    search_s = time.perf_counter() - t0
    best = res.best
    top = res.ranked()[:args.top]
    gm = compiler.lower(model, x)
    space = compiler.analyze(gm, channel_step=table.channel_step)
    unit = scores(gm, space, "l1", calib)
    val, test = compiler.top1(data["val"]), compiler.top1(data["test"])
    cands, models = [], []
    t0 = time.perf_counter()
    for rank, c in enumerate(top):
        m = repaired(gm, space, c.widths, unit, x, calib, seed=seed)[0]
        models.append(m)
        cands.append({"rank": rank, "predicted_ms": c.latency_ms, "adabn_val": c.score, "refit_val": val(m),
                      "refit_test": test(m)})
    refit_s = time.perf_counter() - t0
    picks: dict[str, Any] = {}
    for k in range(1, len(top) + 1):
        i = max(range(k), key=lambda j: (cands[j]["refit_val"], -j))
        picks[str(k)] = {"rank": i, "refit_test": cands[i]["refit_test"]}
    tuned: dict[int, float] = {}
    if args.finetune_steps:
        for i in sorted({p["rank"] for p in picks.values()}):
            tuned[i] = test(finetune(models[i], *data["train"], args.finetune_steps, seed=seed))
        for p in picks.values():
            p["finetuned_test"] = tuned[p["rank"]]
    return {"model": name, "budget": f"{fraction}x", "seed": seed, "budget_ms": best.budget_ms,
            "limit_ms": best.limit_ms, "candidates": len(res.archive), "search_s": round(search_s, 1),
            "refit_s_each": round(refit_s / max(len(top), 1), 2), "top": cands, "picks": picks}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet20_fmnist,mobilenet_v2_small_fmnist")
    ap.add_argument("--budgets", default="0.5,0.35")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--evaluations", type=int, default=60)
    ap.add_argument("--top", type=int, default=5, help="candidates refitted per search")
    ap.add_argument("--finetune-steps", type=int, default=60)
    ap.add_argument("--test-images", type=int, default=2000)
    ap.add_argument("--torch-threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.torch_threads)
    (xtr, ytr), (xval, yval) = split_train()
    xte, yte = fashion_mnist("test")
    data = {"train": (xtr, ytr), "val": batches(xval, yval, 1000), "test": batches(xte, yte, args.test_images)}
    rows = []
    for name in args.models.split(","):
        for fraction in (float(b) for b in args.budgets.split(",")):
            for seed in (int(s) for s in args.seeds.split(",")):
                rows.append(one_case(name, fraction, seed, args, data))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    atomic_write_text(args.out, json.dumps({"host": platform.processor() or platform.machine(),
                                            "torch": torch.__version__,
                                            "args": {k: str(v) for k, v in vars(args).items()},
                                            "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
