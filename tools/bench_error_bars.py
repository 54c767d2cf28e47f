"""Why the table's error bars cover fewer predictions than they claim: splits the gap measured
by tools/bench_latency_model.py into the host's drift and the bound itself. Per case and
pooled, on the channel step and off it, the share of variants within their stated error bar:
- as measured (predicted ms against measured ms, what the bar is meant to bound);
- drift removed: each variant's predicted share of the unpruned model against its measured
  share of the unpruned engine timed beside it (the shares carry the unpruned model's own
  prediction error, so this is not the fit's error alone);
and the drift itself (the unpruned engine measured beside each variant, against its
prediction), and what the profile's own bound (latency_tables.predict.error_bound over its
errors, before a busy profile's noise widens it) covered, with its width: on the step over
the case's leave-one-out errors, off it over the off-step checks' errors, read from the table
the benchmark profiled into (`--table`). Results made before 2026-12-06 hold only the largest
leave-one-out error, and the bound is that. Pure arithmetic on the benchmark's JSON (and
table); nothing is timed. Writes JSON atomically.

    .venv/bin/python tools/bench_error_bars.py tools/results/bench_latency_model_ort_heldout.json \
        --out tools/results/bench_error_bars_heldout.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from compiler.core.atomic import atomic_write_text  # noqa: E402
from latency_tables.predict import MIN_VARIANTS, stated_error  # noqa: E402


def _pct(a: float, b: float) -> float:
    return (a - b) / b * 100


def coverage(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Shares of `rows` (variants of one kind, with a stated bar) inside their bar, and inside
    their case's own bound where the rows carry it (`fit_bound`), both ways."""
    stated = np.array([r["stated_error_pct"] for r in rows])
    measured = np.abs([_pct(r["predicted_ms"], r["measured_ms"]) for r in rows])
    shares = np.abs([_pct(r["predicted_ratio"], r["measured_ratio"]) for r in rows])
    drift = np.array([_pct(r["predicted_ms"] / r["predicted_ratio"], r["unpruned_measured_ms"]) for r in rows])
    out = {"n": len(rows), "stated_error_pct_median": round(float(np.median(stated)), 2),
           "within_bar": round(float(np.mean(measured <= stated)), 3),
           "within_bar_drift_removed": round(float(np.mean(shares <= stated)), 3),
           "median_abs_err_pct": round(float(np.median(measured)), 2),
           "median_abs_err_drift_removed_pct": round(float(np.median(shares)), 2),
           "unpruned_drift_median_pct": round(float(np.median(drift)), 2)}
    if all("fit_bound" in r for r in rows):
        bound = np.array([r["fit_bound"] for r in rows])
        out |= {"fit_bound_median_pct": float(np.median(bound)),
                "within_fit_bound": round(float(np.mean(measured <= bound)), 3),
                "within_fit_bound_drift_removed": round(float(np.mean(shares <= bound)), 3)}
    return out


def fit_bound(case: dict[str, Any], on_step: bool, table: dict[str, Any] | None) -> float | None:
    """The case's profile's own 90% bound of one kind, before any noise widening."""
    record = next((m for m in (table or {}).get("models", {}).values() if m["name"] == case["case"]), None)
    if on_step:
        return stated_error(case["correction_fit_error_pct"], MIN_VARIANTS, "loo_abs", "loo_max_abs")
    off = record and record.get("off_step_error_pct")
    return stated_error(off, off["n"], "abs", "max_abs") if off else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bench", type=Path, help="a tools/bench_latency_model.py result")
    ap.add_argument("--table", type=Path, default=None, help="the table the benchmark profiled into")
    ap.add_argument("--out", type=Path, default=Path("build/bench_error_bars.json"))
    args = ap.parse_args()
    cases = json.loads(args.bench.read_text())["cases"]
    table = json.loads(args.table.read_text()) if args.table else None
    out: dict[str, Any] = {"source": args.bench.name, "cases": [], "pooled": {}}
    for on_step, kind in ((True, "on_step"), (False, "off_step")):
        pooled: list[dict[str, Any]] = []
        for case in cases:
            rows = [r for r in case["variants"] if r["on_step"] == on_step and np.isfinite(r["stated_error_pct"])]
            if not rows:
                continue
            bound = fit_bound(case, on_step, table)
            if bound is not None:
                rows = [r | {"fit_bound": bound} for r in rows]
            out["cases"].append({"case": case["case"], "kind": kind, **coverage(rows)})
            pooled += rows
        if pooled:
            out["pooled"][kind] = coverage(pooled)
    for c in out["cases"]:
        print(f"{c['kind']:8s} {c['case']:26s} bar {c['stated_error_pct_median']:6.1f}%  within "
              f"{c['within_bar']:.2f} (drift removed {c['within_bar_drift_removed']:.2f})  drift "
              f"{c['unpruned_drift_median_pct']:+.1f}%" + (f"; own bound {c['fit_bound_median_pct']:.1f}% within "
              f"{c['within_fit_bound']:.2f} (drift removed {c['within_fit_bound_drift_removed']:.2f})"
              if "fit_bound_median_pct" in c else ""), file=sys.stderr)
    atomic_write_text(args.out, json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
