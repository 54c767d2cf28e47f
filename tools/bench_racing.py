"""What racing would buy the screened search: stop scoring a candidate on its first held-out
images once it is clearly below the score it must beat to matter. Estimated, not built.

Per reference model and budget set, one screened evolution (96 candidates, 256 images, seed 0,
the shipped ORT table) is run and its archive kept. Then, candidate by candidate in the order
they were scored, the floor is what it had to beat: the 6th-best screened score so far under
each budget it fits (6 = the parents a child is bred from, more than the 3 re-scored), the
lowest of those; none while fewer than 6 are scored there. Its per-image hits are drawn as
Bernoulli(its screened score) (an approximation: the real hits come from fixed images), and it
is stopped after 64, 128 or 192 images when the Wilson upper bound (z) of its accuracy so far
is under the floor. Reported: how many would stop, the share of eval images saved, how many of
those stopped had a screened score at or above the floor (wrongly stopped), and the speed-up
that share implies given the measured per-candidate split (rewrite, AdaBN, eval). Writes JSON
atomically.

    .venv/bin/python tools/bench_racing.py --out tools/results/bench_racing.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import compiler  # noqa: E402
import latency_tables  # noqa: E402
from compiler.core.atomic import atomic_write_text  # noqa: E402
from compiler.data import split_train  # noqa: E402
from compiler.models import reference  # noqa: E402
from bench_methods import SHIPPED, calib_batches  # noqa: E402
from bench_search import batches  # noqa: E402

CHECKS = (64, 128, 192)  # images seen when the race may stop a candidate (of 256)
FLOOR_RANK = 6


def wilson_upper(p: float, n: int, z: float) -> float:
    return (p + z * z / (2 * n) + z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / (1 + z * z / n)


def simulate(archive: list[dict], limits: list[float], z: float, rng: np.random.Generator) -> dict:
    saved, stopped, wrong = [], 0, 0
    for i, c in enumerate(archive):
        floors = [sorted((p["score"] for p in archive[:i] if p["latency_ms"] <= lim), reverse=True)
                  for lim in limits if c["latency_ms"] <= lim]
        if not floors or any(len(f) < FLOOR_RANK for f in floors):
            saved.append(0.0)
            continue
        floor = min(f[FLOOR_RANK - 1] for f in floors)
        hits = rng.random(256) < c["score"]
        share = 0.0
        for n in CHECKS:
            if wilson_upper(float(hits[:n].mean()), n, z) < floor:
                share, stopped, wrong = (256 - n) / 256, stopped + 1, wrong + (c["score"] >= floor)
                break
        saved.append(share)
    return {"stopped": stopped, "eval_images_saved": round(float(np.mean(saved)), 3), "wrongly_stopped": wrong}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet20_fmnist,mobilenet_v2_small_fmnist")
    ap.add_argument("--candidates", type=int, default=96)
    ap.add_argument("--z", default="2.0,2.5,3.0")
    ap.add_argument("--out", type=Path, default=Path("build/bench_racing.json"))
    args = ap.parse_args()
    table = latency_tables.load(SHIPPED)
    (xtr, ytr), (xval, yval) = split_train()
    calib, val = calib_batches(xtr, ytr, 0, 8), batches(xval, yval, 2000, 500)
    cases = {}
    for name in args.models.split(","):
        for budgets in (["0.5x"], ["0.5x", "0.35x"]):
            res = compiler.search(reference(name), torch.zeros(1, 1, 28, 28), table, calib, val, budgets=budgets,
                                  screen_images=256, max_evaluations=args.candidates, seed=0, progress=False)
            archive = [{"latency_ms": c.latency_ms, "score": c.score}
                       for c in sorted(res.archive, key=lambda c: c.evaluation)]
            limits = [r.limit_ms if r.limit_ms is not None else r.budget_ms for r in res.results]
            split = res.stats["seconds_per_candidate"]
            eval_share = split["eval"] / sum(split.values())
            races = {}
            for z in (float(v) for v in args.z.split(",")):
                r = simulate(archive, limits, z, np.random.default_rng(0))
                races[str(z)] = r | {"implied_speedup": round(1 / (1 - r["eval_images_saved"] * eval_share), 3)}
            key = f"{name} {','.join(budgets)}"
            cases[key] = {"candidates": len(archive), "seconds_per_candidate": split,
                          "candidates_per_minute": res.stats["candidates_per_minute"], "race": races}
            print(key, json.dumps(races), file=sys.stderr, flush=True)
    atomic_write_text(args.out, json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "cases": cases},
                                           indent=1) + "\n")


if __name__ == "__main__":
    main()
