"""Issue 13: do more profiled variants make a model's error bars honest and narrow?

Per case (default: the development families, never the held-out ones), on this host's ONNX
Runtime: profile into a fresh table with `--few` random variants (12, the default until 2026-12-06),
then profile the same table again with `--many` (24, the default since; the second profile measures only the
added ones, so its time is their cost), then draw `--test` fresh on-step widths (a seed the
profile never used) and time each beside the unpruned engine. The correction is then refit on
the first variants (the record a `--few` profile leaves: the unpruned model, the smallest, the
first random ones) and on all of them, and each fit's bound is checked against each test
variant's error:
- bounds: the median rule tables used before 2026-12-06 (2.5x the median leave-one-out
  error, capped by the largest) and split conformal (latency_tables.predict.error_bound, the
  rule since: the ceil(0.9 (n + 1))-th smallest of n leave-one-out errors, for 14 variants
  the largest, for 26 the second largest); the table's noise floor left out;
- errors: as measured (predicted ms against the variant's ms, the host's drift since the
  profile included) and drift removed (predicted share of the unpruned model against the
  variant's share of the unpruned engine timed beside it).
Writes JSON atomically after every case.

    .venv/bin/python tools/bench_more_variants.py --out tools/results/bench_more_variants.json
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
sys.path.insert(0, str(Path(__file__).resolve().parent))
import compiler  # noqa: E402
import latency_tables  # noqa: E402
import targets  # noqa: E402
from bench_latency_model import make, parse_case  # noqa: E402
from compiler.core.atomic import atomic_write_text  # noqa: E402
from latency_tables.predict import corrected, error_bound  # noqa: E402
from latency_tables.profile import MODEL_TIMING, correction_data, fit_correction  # noqa: E402


def bounds(loo: np.ndarray) -> dict[str, float]:
    """Each rule's error bound (%) from a fit's leave-one-out errors."""
    return {"median_rule": float(min(2.5 * np.median(loo), np.max(loo))), "conformal": error_bound(loo)}


def judge(record: dict[str, Any], n: int, empty_ms: float, full: np.ndarray, rows: list[dict[str, Any]]) -> dict:
    """Refit the correction on the record's first `n` variants; each bound's coverage of the
    test rows, both ways of reading their error."""
    _, x, y = correction_data({"variants": record["variants"][:n]})
    coef, form, loo = fit_correction(x, y, empty_ms)
    feats = np.array([r["features"] for r in rows])
    pred = np.asarray(corrected(feats, coef))
    meas = np.array([r["measured_ms"] for r in rows])
    errors = {"as_measured": np.abs(pred / meas - 1) * 100,
              "drift_removed": np.abs((pred / float(corrected(full, coef))) /
                                      (meas / np.array([r["unpruned_beside_ms"] for r in rows])) - 1) * 100}
    out: dict[str, Any] = {"variants": n, "form": form, "loo_pct": np.round(loo, 3).tolist()}
    for rule, bound in bounds(loo).items():
        out[rule] = {"bound_pct": round(bound, 3),
                     **{f"within_{k}": round(float(np.mean(e <= bound)), 3) for k, e in errors.items()}}
    out["median_abs_err_pct"] = {k: round(float(np.median(e)), 3) for k, e in errors.items()}
    out["errors_pct"] = {k: np.round(e, 3).tolist() for k, e in errors.items()}
    return out


def run_case(case: str, target: targets.Target, table_path: Path, few: int, many: int, n_test: int,
             seed: int) -> dict[str, Any]:
    name, cin, hw, batch = parse_case(case)
    model = make(name).eval()
    x = torch.randn(batch, cin, hw, hw)
    spent = {}
    for label, count in (("few", few), ("added", many)):
        table = latency_tables.profile(model, x, target, out=table_path, name=case, seed=seed, variants=count,
                                       off_step_variants=0, progress=False)
        spent[label] = {"seconds": round(table.last_profile.seconds, 1),
                        "variants_measured": table.last_profile.measured_variants,
                        "points_measured": table.last_profile.measured_points}
    gm = compiler.lower(model, x)
    pred = latency_tables.Predictor(table, gm, x, space=compiler.analyze(gm, channel_step=target.channel_step))
    record = table.models[pred.key]
    full_engine = target.build(model, x)
    rng = np.random.default_rng(seed + 7919)  # not the profile's draws
    rows = []
    t0 = time.perf_counter()
    for i in range(n_test):
        widths = pred.space.random_widths(rng, 0.25, 1.0)
        engine = target.build(compiler.rewrite(gm, pred.space, widths, "l1", x), x)
        ref, stats = target.measure_beside(engine, full_engine, MODEL_TIMING)
        rows.append({"features": pred.features(widths).round(6).tolist(), "measured_ms": stats.median_ms,
                     "unpruned_beside_ms": ref.median_ms})
        print(f"{case} test {i + 1}/{n_test}: {stats.median_ms:.3f} ms", file=sys.stderr)
    full = pred.features(None)
    return {"case": case, "profile": spent, "test_seconds": round(time.perf_counter() - t0, 1),
            "fits": [judge(record, n + 2, table.overhead_ms, full, rows) for n in (few, many)], "test": rows}


def pooled(cases: list[dict[str, Any]]) -> dict[str, Any]:
    """Per fit size and rule, the share of every case's test variants inside their case's bound."""
    out: dict[str, Any] = {}
    for i, fit in enumerate(cases[0]["fits"]):
        for rule in ("median_rule", "conformal"):
            entry = {"bound_pct_per_case": [c["fits"][i][rule]["bound_pct"] for c in cases]}
            for kind in ("as_measured", "drift_removed"):
                inside = [e <= c["fits"][i][rule]["bound_pct"] for c in cases for e in c["fits"][i]["errors_pct"][kind]]
                entry[f"within_{kind}"] = round(float(np.mean(inside)), 3)
            out[f"{fit['variants']}_variants_{rule}"] = entry
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="resnet20@32x1,mobilenet_v2@96x1,resnet18@64x1")
    ap.add_argument("--few", type=int, default=12, help="random variants of the default profile until 2026-12-06")
    ap.add_argument("--many", type=int, default=24, help="random variants of the larger profile")
    ap.add_argument("--test", type=int, default=24, help="fresh on-step variants timed to check the bounds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--table", type=Path, default=Path("build/bench_more_variants_table.json"))
    ap.add_argument("--out", type=Path, default=Path("build/bench_more_variants.json"))
    args = ap.parse_args()
    if not 0 < args.few < args.many or args.test < 1:
        ap.error("needs 0 < --few < --many and --test >= 1")
    target = targets.get("onnxruntime-cpu", threads=1)
    result: dict[str, Any] = {"target": target.fingerprint(), "few": args.few, "many": args.many,
                              "test": args.test, "cases": []}
    for case in args.cases.split(","):
        result["cases"].append(run_case(case, target, args.table, args.few, args.many, args.test, args.seed))
        result["pooled"] = pooled(result["cases"])
        atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["pooled"], indent=1))


if __name__ == "__main__":
    main()
