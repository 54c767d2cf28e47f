"""Issue 13: how many random on-step variants a profile needs for an honest, narrow bound.

Pure arithmetic on tables already profiled (nothing is timed): for each model whose record
holds at least `--pool` random variants beside the unpruned and smallest models, draw `k` of
them `--draws` times, fit the end-to-end correction on the unpruned model, the smallest and
those k (latency_tables.profile.fit_correction, as a profile with `--variants k` would), and
state its bound (latency_tables.predict.error_bound over the fit's leave-one-out errors).
Each bound is checked on the variants not drawn, each variant as its share of the unpruned
model timed beside it (drift cancels). The bound is the largest error up to 18 fitted
variants and the second largest from 19, so the counts either side of k = 17 show what that
step buys. The held-out variants were timed in the same profile, so this is coverage inside
one profile, not on Widths measured later. Writes JSON atomically.

    .venv/bin/python tools/bench_variant_count.py TABLE.json [...] --out tools/results/bench_variant_count.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import latency_tables  # noqa: E402
from compiler.core.atomic import atomic_write_text  # noqa: E402
from latency_tables.predict import design, error_bound  # noqa: E402
from latency_tables.profile import correction_data, fit_correction  # noqa: E402


def count_study(record: dict[str, Any], empty_ms: float, counts: list[int], pool: int, draws: int,
                seed: int) -> dict[int, dict[str, Any]]:
    """Per k: the stated bound (median, p10-p90 over draws), the mean share of undrawn variants
    inside it, and the median of their errors."""
    _, x, y = correction_data(record)
    rng = np.random.default_rng(seed)
    randoms = np.arange(2, 2 + pool)  # records start with the unpruned model and the smallest
    rows = {}
    for k in counts:
        bounds, covered, errors = [], [], []
        for _ in range(draws):
            drawn = rng.choice(randoms, size=k, replace=False)
            rest = np.setdiff1d(randoms, drawn)
            fit = np.r_[0, 1, drawn]
            coef, _, loo = fit_correction(x[fit], y[fit], empty_ms)
            bound = error_bound(loo)
            err = np.abs(design(x[rest]) @ coef - y[rest]) / y[rest] * 100
            bounds.append(bound)
            covered.append(float(np.mean(err <= bound)))
            errors.append(float(np.median(err)))
        rows[k] = {"bound_median_pct": round(float(np.median(bounds)), 2),
                   "bound_p10_p90_pct": [round(float(np.percentile(bounds, q)), 2) for q in (10, 90)],
                   "covered_mean": round(float(np.mean(covered)), 3),
                   "held_out_error_median_pct": round(float(np.median(errors)), 2)}
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tables", nargs="+", type=Path)
    ap.add_argument("--counts", default="10,12,14,17,20")
    ap.add_argument("--pool", type=int, default=24, help="random variants a record must hold")
    ap.add_argument("--draws", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("build/bench_variant_count.json"))
    args = ap.parse_args()
    counts = [int(k) for k in args.counts.split(",")]
    if max(counts) >= args.pool:
        ap.error(f"every count must leave variants to check on: below --pool {args.pool}")
    result: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "models": {}}
    for path in args.tables:
        table = latency_tables.load(path)  # validated: a corrupt or foreign file is a TableError naming it
        for record in table.models.values():
            if len(record["variants"]) < 2 + args.pool:
                continue
            rows = count_study(record, table.overhead_ms, counts, args.pool, args.draws, args.seed)
            result["models"][f"{path.name}:{record['name']}"] = rows
            for k, row in rows.items():
                print(record["name"], k, row, flush=True)
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
