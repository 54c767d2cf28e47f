"""Search throughput: candidates per minute before and after screening and worker processes.

Per reference model, the same search (evolution, budget 0.5x of the shipped ORT table's
prediction, seed 0) runs under five settings, side by side and interleaved over `--reps`
repetitions so that a busy spell hits all of them:
- before: every candidate scored in full (AdaBN on 8 batches of 64, top-1 on 2,000 held-out
  images) in this process with torch's default threads: what a compile did before;
- screened: 2 AdaBN batches and 256 images per candidate (in `--screen-precision`), the 3 best
  re-scored in full, in this process with torch's default threads: what a compile does now;
- screened-1thread: the same on one torch thread (per core; what each worker gets);
- workers: full scores in `--workers` processes of one thread each;
- screened+workers.
Candidates per minute is wall time from the search's start to its last candidate (worker
start-up included, the final re-scoring not). Writes JSON atomically.

    .venv/bin/python tools/bench_throughput.py --out tools/results/bench_throughput.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import compiler  # noqa: E402
import latency_tables  # noqa: E402
from compiler.core.atomic import atomic_write_text  # noqa: E402
from compiler.data import split_train  # noqa: E402
from compiler.evaluate import PRECISIONS  # noqa: E402
from compiler.models import reference  # noqa: E402
from bench_methods import SHIPPED, calib_batches  # noqa: E402
from bench_search import batches  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet20_fmnist,mobilenet_v2_small_fmnist")
    ap.add_argument("--full-candidates", type=int, default=24, help="candidates per search scored in full")
    ap.add_argument("--screened-candidates", type=int, default=96, help="candidates per screened search")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--val-batch", type=int, default=500,
                    help="held-out images per batch (a compile scores in batches of --batch-size, 64)")
    ap.add_argument("--settings", default="before,screened,screened-1thread,workers,screened+workers",
                    help="which of the five to run (before is always the ratios' base)")
    ap.add_argument("--screen-precision", default="auto", choices=PRECISIONS, help="the screen's arithmetic")
    ap.add_argument("--out", type=Path, default=Path("build/bench_throughput.json"))
    args = ap.parse_args()
    default_threads = torch.get_num_threads()
    table = latency_tables.load(SHIPPED)
    (xtr, ytr), (xval, yval) = split_train()
    calib = calib_batches(xtr, ytr, 0, 8)
    val = batches(xval, yval, 2000, args.val_batch)
    # (screen images, worker processes, torch threads here; a worker always has one)
    settings = {"before": (0, 1, default_threads), "screened": (256, 1, default_threads),
                "screened-1thread": (256, 1, 1), "workers": (0, args.workers, 1),
                "screened+workers": (256, args.workers, 1)}
    settings = {k: v for k, v in settings.items() if k in args.settings.split(",")}
    runs: dict[str, dict[str, list[dict]]] = {m: {s: [] for s in settings} for m in args.models.split(",")}
    t0 = time.perf_counter()
    for rep in range(args.reps):
        for name in runs:
            model, x = reference(name), torch.zeros(1, 1, 28, 28)
            for setting, (screen, workers, threads) in settings.items():
                torch.set_num_threads(threads)
                res = compiler.search(model, x, table, calib, val, budgets=["0.5x"], screen_images=screen,
                                      max_evaluations=args.screened_candidates if screen else args.full_candidates,
                                      screen_precision=args.screen_precision, workers=workers, seed=0, progress=False)
                st = res.stats
                row = {k: st[k] for k in ("candidates", "candidates_per_minute", "search_seconds", "evaluations",
                                          "full_evaluations", "seconds_per_candidate")} | {
                    "torch_threads": torch.get_num_threads(), "workers": workers, "pick_full_score": res.best.score,
                    "screen": st["screen"]}
                runs[name][setting].append(row)
                print(f"rep {rep} {name} {setting}: {row['candidates_per_minute']} cand/min, "
                      f"pick {res.best.score:.4f}", file=sys.stderr, flush=True)
    summary = {}
    for name, by in runs.items():
        base = float(np.median([r["candidates_per_minute"] for r in by["before"]])) if by.get("before") else float("nan")
        summary[name] = {s: {"median_cand_per_min": float(np.median(v := [r["candidates_per_minute"] for r in rows])),
                             "min": min(v), "max": max(v), "x_before": round(float(np.median(v)) / base, 2)}
                         for s, rows in by.items()}
    result = {"host": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "default_torch_threads": default_threads, "args": {k: str(v) for k, v in vars(args).items()},
              "summary": summary, "runs": runs, "seconds": round(time.perf_counter() - t0, 1)}
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
