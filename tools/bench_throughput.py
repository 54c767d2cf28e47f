"""Search throughput: candidates per minute before and after screening and worker processes.

Per reference model, the same search (evolution, budget 0.5x of the shipped ORT table's
prediction, seed 0) runs under five settings, side by side and interleaved over `--reps`
repetitions so that a busy spell hits all of them:
- before: every candidate scored in full (AdaBN on 8 batches of 64, top-1 on 2,000 held-out
  images) in this process with torch's default threads: what a compile did before;
- screened: 2 AdaBN batches and 256 images per candidate (in `--screen-precision`), the 3 best
  re-scored in full, in this process with torch's default threads: what a compile does now;
- screened-1thread: the same on one torch thread (per core; what each worker gets);
- screened-1batch: screened with AdaBN on one calibration batch instead of two;
- workers: full scores in `--workers` processes of one thread each;
- screened+workers.
Candidates per minute is wall time from the search's start to its last candidate (worker
start-up included, the final re-scoring not). With `--other TREE` (a checkout of an older
commit, e.g. 639c2e2 from before issue 15) that tree's own `search()` also runs each
repetition in a subprocess, scoring `--full-candidates` in full with its own defaults on the
same data; its candidates per minute are wall time of the whole call (setup included), and
every setting's ratio to it is reported beside the ratio to "before". Writes JSON atomically.

    .venv/bin/python tools/bench_throughput.py --out tools/results/bench_throughput.json
    git worktree add /tmp/old 639c2e2
    .venv/bin/python tools/bench_throughput.py --settings screened --other /tmp/old --reps 3
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
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
from bench_profile_time import short_commit  # noqa: E402
from bench_search import batches  # noqa: E402

# run in the other tree (its code on PYTHONPATH): its search() on this run's data, timed whole
OTHER = """
import json, sys, time, torch
import compiler, latency_tables
from compiler.models import reference
name, n = sys.argv[1], int(sys.argv[3])
data = torch.load(sys.argv[2], weights_only=True)
table = latency_tables.load(latency_tables.SHIPPED / "onnxruntime-cpu_amd-epyc-avx512_t1.json")
t0 = time.perf_counter()
res = compiler.search(reference(name), torch.zeros(1, 1, 28, 28), table, data["calib"], data["val"],
                      budgets=["0.5x"], max_evaluations=n, seed=0, progress=False)
s = time.perf_counter() - t0
print(json.dumps({"candidates": n, "candidates_per_minute": round(60 * n / s, 2), "search_seconds": round(s, 3),
                  "torch_threads": torch.get_num_threads(), "pick_full_score": res.best.score}))
"""


def other_tree(tree: Path, name: str, data: Path, candidates: int) -> dict:
    """One search() of `tree`'s code in a subprocess (its own defaults, every candidate in full)."""
    run = subprocess.run([sys.executable, "-c", OTHER, name, str(data), str(candidates)], cwd=tree,
                         env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, text=True)
    if run.returncode:
        raise SystemExit(f"search in {tree} failed ({run.returncode}): {run.stderr[-2000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


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
                    help="which of the six to run (before, and --other, are the ratios' bases)")
    ap.add_argument("--screen-precision", default="auto", choices=PRECISIONS, help="the screen's arithmetic")
    ap.add_argument("--other", type=Path, help="an older checkout whose search() to time beside (e.g. 639c2e2)")
    ap.add_argument("--out", type=Path, default=Path("build/bench_throughput.json"))
    args = ap.parse_args()
    default_threads = torch.get_num_threads()
    table = latency_tables.load(SHIPPED)
    (xtr, ytr), (xval, yval) = split_train()
    calib = calib_batches(xtr, ytr, 0, 8)
    val = batches(xval, yval, 2000, args.val_batch)
    # (screen images, worker processes, torch threads here (a worker always has one), screen AdaBN batches)
    settings = {"before": (0, 1, default_threads, 2), "screened": (256, 1, default_threads, 2),
                "screened-1thread": (256, 1, 1, 2), "screened-1batch": (256, 1, default_threads, 1),
                "workers": (0, args.workers, 1, 2), "screened+workers": (256, args.workers, 1, 2)}
    settings = {k: v for k, v in settings.items() if k in args.settings.split(",")}
    labels = (["other"] if args.other else []) + list(settings)
    runs: dict[str, dict[str, list[dict]]] = {m: {s: [] for s in labels} for m in args.models.split(",")}
    other = args.other.resolve() if args.other else None
    tmp = tempfile.TemporaryDirectory()
    data = Path(tmp.name) / "data.pt"
    torch.save({"calib": calib, "val": val}, data)
    t0 = time.perf_counter()
    for rep in range(args.reps):
        for name in runs:
            if other:
                runs[name]["other"].append(row := other_tree(other, name, data, args.full_candidates))
                print(f"rep {rep} {name} other: {row['candidates_per_minute']} cand/min", file=sys.stderr, flush=True)
            model, x = reference(name), torch.zeros(1, 1, 28, 28)
            for setting, (screen, workers, threads, screen_batches) in settings.items():
                torch.set_num_threads(threads)
                res = compiler.search(model, x, table, calib, val, budgets=["0.5x"], screen_images=screen,
                                      max_evaluations=args.screened_candidates if screen else args.full_candidates,
                                      screen_precision=args.screen_precision, screen_adabn_batches=screen_batches,
                                      workers=workers, seed=0, progress=False)
                st = res.stats
                row = {k: st[k] for k in ("candidates", "candidates_per_minute", "search_seconds", "evaluations",
                                          "full_evaluations", "seconds_per_candidate")} | {
                    "torch_threads": torch.get_num_threads(), "workers": workers, "pick_full_score": res.best.score,
                    "screen": st["screen"]}
                runs[name][setting].append(row)
                print(f"rep {rep} {name} {setting}: {row['candidates_per_minute']} cand/min, "
                      f"pick {res.best.score:.4f}", file=sys.stderr, flush=True)
    tmp.cleanup()
    summary = {}
    for name, by in runs.items():
        base = {b: float(np.median([r["candidates_per_minute"] for r in by[b]])) for b in ("before", "other") if by.get(b)}
        summary[name] = {s: {"median_cand_per_min": float(np.median(v := [r["candidates_per_minute"] for r in rows])),
                             "min": min(v), "max": max(v)} | {f"x_{b}": round(float(np.median(v)) / m, 2)
                                                              for b, m in base.items()}
                         for s, rows in by.items()}
    result = {"host": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "other": None if other is None else {"tree": str(other), "commit": short_commit(other)},
              "default_torch_threads": default_threads, "args": {k: str(v) for k, v in vars(args).items()},
              "summary": summary, "runs": runs, "seconds": round(time.perf_counter() - t0, 1)}
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
