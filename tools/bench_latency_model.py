"""How well a latency table predicts measured end-to-end latency, and how badly FLOPs do.

For each case (model @ resolution x batch): profile the model into the target's table
(resuming/reusing it), then draw random Widths on the target's channel step, and for each
one predict, build and measure the whole pruned engine. Reports the share of variants within
+-5% / +-10%, median and p90 absolute error, Spearman rank correlation of predicted vs
measured and of MACs vs measured, the profiling time, and a noise floor: the unpruned model
re-measured beside every variant. Absolute errors include the machine's drift between
profiling and measuring; the relative figures (variant / unpruned, both measured side by
side, against predicted variant / predicted unpruned) do not. Also a few off-step variants (any channel count) to show the
staircase handling. Writes JSON after every case, atomically.

    .venv/bin/python tools/bench_latency_model.py --out tools/results/bench_latency_model.json
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import compiler  # noqa: E402
import latency_tables  # noqa: E402
import targets  # noqa: E402
from compiler.core.atomic import atomic_write_text  # noqa: E402
from compiler.models import mobilenet_v2_small, resnet20  # noqa: E402
from latency_tables.profile import MODEL_TIMING, OFF_STEP_VARIANTS, VARIANTS  # noqa: E402


def smallcnn() -> torch.nn.Module:
    """A small CIFAR-size CNN for the expensive-to-profile TVM targets."""
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.Conv2d(32, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


def make(name: str) -> torch.nn.Module:
    if name == "smallcnn":
        return smallcnn()
    if name == "resnet20":
        return resnet20()
    if name == "mobilenet_v2_small":
        return mobilenet_v2_small()
    import torchvision
    return getattr(torchvision.models, name)(weights=None)


def parse_case(case: str) -> tuple[str, int, int, int]:
    """'resnet18@224x16' -> (resnet18, 3 channels, 224, batch 16)."""
    name, rest = case.split("@")
    hw, batch = (rest.split("x") + ["1"])[:2]
    return name, (1 if name == "mobilenet_v2_small" else 3), int(hw), int(batch)


def summarise(pred: np.ndarray, meas: np.ndarray, mac: np.ndarray, stated: np.ndarray | None = None) -> dict:
    err = (pred - meas) / meas * 100
    known = stated[np.isfinite(stated)] if stated is not None else np.array([])
    covered = np.abs(err[np.isfinite(stated)]) <= known if known.size else np.array([])
    return {
        "stated_error_pct_median": float(np.median(known)) if known.size else None,
        "within_stated_error": float(np.mean(covered)) if known.size else None,
        "n": int(len(err)),
        "within_5pct": float(np.mean(np.abs(err) <= 5)),
        "within_10pct": float(np.mean(np.abs(err) <= 10)),
        "median_abs_err_pct": float(np.median(np.abs(err))),
        "p90_abs_err_pct": float(np.percentile(np.abs(err), 90)),
        "mean_signed_err_pct": float(np.mean(err)),
        "spearman_predicted_vs_measured": float(spearmanr(pred, meas).statistic),
        "spearman_macs_vs_measured": float(spearmanr(mac, meas).statistic),
    }


def penalty_only(table: latency_tables.LatencyTable) -> latency_tables.LatencyTable:
    """The table as before fallback-kernel grids: every off-step count priced as the next step
    up times its residue class's measured penalty."""
    t = copy.deepcopy(table)
    for e in t.entries.values():
        e.fast, e.slow_grid, e.slow = None, None, {}
    return t


def run_case(case: str, target: targets.Target, table_path: Path, n: int, n_off: int, seed: int,
             trials_note: str, grid_points: int, profile_variants: tuple[int, int]) -> dict:
    name, cin, hw, batch = parse_case(case)
    model = make(name).eval()
    x = torch.randn(batch, cin, hw, hw)
    t0 = time.perf_counter()
    table = latency_tables.profile(model, x, target, out=table_path, name=case, seed=seed,
                                   grid_points=grid_points, variants=profile_variants[0],
                                   off_step_variants=profile_variants[1])
    prof = table.last_profile
    gm = compiler.lower(model, x)
    rows = []
    noise = []
    full_pred = latency_tables.Predictor(table, gm, x)(None)
    before = penalty_only(table)
    full_engine = target.build(model, x)
    for multiple, count in ((target.channel_step, n), (1, n_off)):
        space = compiler.analyze(gm, channel_step=multiple)
        pred_fn = latency_tables.Predictor(table, gm, x, space=space)
        pred_before = latency_tables.Predictor(before, gm, x, space=space)
        rng = np.random.default_rng(seed + 1000 + multiple)
        plans = [space.random_widths(rng, 0.25, 1.0) for _ in range(count)]
        smalls = [compiler.rewrite(gm, space, w, "l1", x) for w in plans]
        if hasattr(target, "prepare"):
            target.prepare([(m, x) for m in smalls])  # TVM: tune every variant in one run
        for i, (widths, small) in enumerate(zip(plans, smalls)):
            engine = target.build(small, x)
            ref_stats, stats = target.measure_beside(engine, full_engine, MODEL_TIMING)  # drift cancels in ratios
            ref = ref_stats.median_ms
            noise.append(ref)
            p = pred_fn(widths)
            stated = pred_fn.error_pct(widths)
            rows.append({"on_step": multiple > 1, "predicted_ms": p, "measured_ms": stats.median_ms,
                         "predicted_ms_penalty_only": pred_before(widths),
                         "stated_error_pct": float("nan") if stated is None else stated,
                         "measured_p10_ms": stats.p10_ms, "measured_p90_ms": stats.p90_ms,
                         "unpruned_measured_ms": ref, "predicted_ratio": p / full_pred,
                         "measured_ratio": stats.median_ms / ref, "macs": compiler.macs(small, x)})
            print(f"{case} {'on' if multiple > 1 else 'off'}-step {i + 1}/{count}: predicted "
                  f"{rows[-1]['predicted_ms']:.3f} measured {stats.median_ms:.3f} ms", file=sys.stderr)
    on = [r for r in rows if r["on_step"]]
    off = [r for r in rows if not r["on_step"]]

    def arr(rs: list[dict], k: str) -> np.ndarray:
        return np.array([r[k] for r in rs], dtype=np.float64)

    full_model = table.models[latency_tables.Predictor(table, gm, x).key]
    return {
        "case": case, "model": name, "input": [batch, cin, hw, hw],
        "profile_seconds": round(prof.seconds, 1), "profile_points_measured": prof.measured_points,
        "profile_points_reused": prof.reused_points, "correction": full_model["correction"],
        "correction_fit_error_pct": full_model["fit_error_pct"],
        "on_step": summarise(arr(on, "predicted_ms"), arr(on, "measured_ms"), arr(on, "macs"),
                             arr(on, "stated_error_pct")),
        "off_step": summarise(arr(off, "predicted_ms"), arr(off, "measured_ms"), arr(off, "macs"),
                              arr(off, "stated_error_pct")) if off else None,
        "off_step_penalty_only": summarise(arr(off, "predicted_ms_penalty_only"), arr(off, "measured_ms"),
                                        arr(off, "macs")) if off else None,
        "on_step_relative": summarise(arr(on, "predicted_ratio"), arr(on, "measured_ratio"), arr(on, "macs")),
        "off_step_relative": summarise(arr(off, "predicted_ratio"), arr(off, "measured_ratio"), arr(off, "macs"))
        if off else None,
        "noise_floor": {"unpruned_median_ms": float(np.median(noise)),
                        "unpruned_p10_p90_ms": [float(np.percentile(noise, 10)), float(np.percentile(noise, 90))],
                        "spread_p10_p90_pct": float((np.percentile(noise, 90) - np.percentile(noise, 10))
                                                    / np.median(noise) * 100)},
        "seconds": round(time.perf_counter() - t0, 1), "variants": rows, "note": trials_note,
    }


def pooled(cases: list[dict]) -> dict:
    """Every variant of every case together, on-step and off-step apart."""
    out = {}
    for name, on_step, key in (("on_step", True, "predicted_ms"), ("off_step", False, "predicted_ms"),
                               ("off_step_penalty_only", False, "predicted_ms_penalty_only")):
        rows = [r for c in cases for r in c["variants"] if r["on_step"] == on_step]
        if rows:
            def col(k: str) -> np.ndarray:
                return np.array([r.get(k, np.nan) for r in rows], dtype=np.float64)
            out[name] = summarise(col(key), col("measured_ms"), col("macs"),
                                  col("stated_error_pct") if key == "predicted_ms" else None)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="onnxruntime-cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--trials", type=int, default=None, help="meta-schedule trials per block (tvm targets)")
    ap.add_argument("--cases", default="resnet20@32x1,resnet20@32x16,resnet18@224x1,mobilenet_v2@224x1,"
                                       "resnet18@224x16,mobilenet_v2@224x16")
    ap.add_argument("--variants", type=int, default=50)
    ap.add_argument("--off-step", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--grid-points", type=int, default=6)
    ap.add_argument("--profile-variants", type=int, default=VARIANTS, help="variants the correction is fit on")
    ap.add_argument("--profile-off-step-variants", type=int, default=OFF_STEP_VARIANTS,
                    help="off-step variants that check it")
    ap.add_argument("--table", type=Path, default=None, help="table file (default: build/tables/<target>.json)")
    ap.add_argument("--out", type=Path, default=Path("build/bench_latency_model.json"))
    args = ap.parse_args()
    opts = {"threads": args.threads} | ({"trials": args.trials} if args.trials is not None else {})
    if args.target.startswith("tvm"):
        opts["work_dir"] = str((args.table or Path("build/tables") / args.target).with_suffix(".tvmdb"))
    target = targets.get(args.target, **opts)
    table_path = args.table or Path("build/tables") / f"{args.target}-t{args.threads}.json"
    result = {"target": args.target, "fingerprint": target.fingerprint(), "python": platform.python_version(),
              "torch": torch.__version__, "variants_per_case": args.variants, "cases": []}
    if args.out.exists():
        prev = json.loads(args.out.read_text())
        if prev.get("fingerprint") == result["fingerprint"]:
            result["cases"] = prev.get("cases", [])
    done = {c["case"] for c in result["cases"]}
    for case in args.cases.split(","):
        if case in done:
            continue
        result["cases"].append(run_case(case, target, table_path, args.variants, args.off_step, args.seed,
                                        f"options {opts}", args.grid_points,
                                        (args.profile_variants, args.profile_off_step_variants)))
        result["overall"] = pooled(result["cases"])
        atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
        print(json.dumps({k: v for k, v in result["cases"][-1].items() if k != "variants"}, indent=1))


if __name__ == "__main__":
    main()
