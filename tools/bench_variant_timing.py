"""Issue 13: does a profile time its end-to-end variants longer than their fit needs?

A profile's variants (24 on the step, 9 off it, plus the unpruned and smallest models) are each
timed in turns beside the unpruned model, `min_seconds` per engine per round for up to
`max_rounds` rounds; that was 61% of a ResNet-20 profile's time. Per case, on this host's ONNX
Runtime: profile the blocks once into a fresh table (no variants), copy it once per variant
timing to compare (`--timings`, e.g. 1.0x3 = 1 s a round, 3 rounds at most; 1.0x3g5 = the same,
five variants at a time in turns with one unpruned engine: targets.time_group), and profile each
copy's variants with its timing (the blocks are all reused, so the copies differ in their
variants alone, and each profile's wall time is their cost). The timings take turns going
first from case to case. Then `--test` fresh on-step and off-step Widths (seeds the profile
never used) are each timed once beside the unpruned engine with the compile's own timing
(MODEL_TIMING) and priced by every copy: relative error (predicted share of the unpruned model
against the measured share beside it: drift cancels) and in ms, and how often each copy's
stated error bar held. Writes JSON atomically after every case.

    .venv/bin/python tools/bench_variant_timing.py --cases googlenet@96 --out tools/results/bench_variant_timing.json
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import tempfile
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
from latency_tables.predict import profile_noise_pct  # noqa: E402
from latency_tables.profile import MODEL_TIMING  # noqa: E402
from targets.base import Timing  # noqa: E402


def parse_timing(spec: str) -> tuple[Timing, int]:
    """'0.5x3' -> (MODEL_TIMING with 0.5 s a round and at most 3 rounds, variants timed one at
    a time beside the unpruned model); '1.0x3g5' -> (1 s x 3, five at a time: time_group)."""
    timing, _, group = spec.partition("g")
    seconds, rounds = timing.split("x")
    return dataclasses.replace(MODEL_TIMING, min_seconds=float(seconds), max_rounds=int(rounds)), int(group or 1)


def score(rows: list[dict[str, Any]], label: str) -> dict[str, Any]:
    """Shares within +-5% / +-10% and median error, relative and in ms, and how often the
    stated error bar and the profile's own bound (Predictor.bound_pct: before a busy profile's
    noise widens it) held (relative), for one copy's prices of `rows`."""
    rel = np.array([abs(r[label]["ratio"] / r["measured_ratio"] - 1) * 100 for r in rows])
    ms = np.array([abs(r[label]["ms"] / r["measured_ms"] - 1) * 100 for r in rows])

    def held(key: str) -> tuple[float | None, float | None]:
        bars = [(e, r[label][key]) for e, r in zip(rel, rows) if r[label][key] is not None]
        return ((float(np.median([b for _, b in bars])), float(np.mean([e <= b for e, b in bars]))) if bars
                else (None, None))
    (stated, within_stated), (own, within_own) = held("stated_pct"), held("bound_pct")
    return {"n": len(rows), "relative_within_5pct": float(np.mean(rel <= 5)),
            "relative_within_10pct": float(np.mean(rel <= 10)), "relative_median_abs_err_pct": float(np.median(rel)),
            "ms_within_10pct": float(np.mean(ms <= 10)), "ms_median_abs_err_pct": float(np.median(ms)),
            "stated_bar_median_pct": stated, "within_stated_bar": within_stated,
            "own_bound_pct": own, "within_own_bound": within_own}


def scores(rows: list[dict[str, Any]], timings: list[str]) -> dict[str, Any]:
    """score() per timing, on the step and off it."""
    return {kind: {s: score([r for r in rows if r["on_step"] == on], s) for s in timings}
            for kind, on in (("on_step", True), ("off_step", False))}


def run_case(case: str, target: targets.Target, timings: list[str], first: int, n_test: int, seed: int,
             grid_points: int, work: Path) -> dict[str, Any]:
    name, cin, hw, batch = parse_case(case)
    torch.manual_seed(seed)
    model = make(name).eval()
    x = torch.randn(batch, cin, hw, hw)
    base_path = work / f"{name}-blocks.json"
    t0 = time.perf_counter()
    base = latency_tables.profile(model, x, target, out=base_path, name=case, seed=seed, grid_points=grid_points,
                                  variants=0, off_step_variants=0)
    blocks_s = time.perf_counter() - t0
    gm = compiler.lower(model, x)
    key = latency_tables.Predictor(base, gm, x).key
    order = timings[first:] + timings[:first]
    tables, variant_s = {}, {}
    for spec in order:
        fresh = copy.deepcopy(base)
        fresh.models[key]["variants"], fresh.models[key]["off_step"] = [], []
        path = work / f"{name}-{spec}.json"
        fresh.save(path)
        t1 = time.perf_counter()
        timing, group = parse_timing(spec)
        tables[spec] = latency_tables.profile(model, x, target, out=path, name=case, seed=seed, grid_points=grid_points,
                                              model_timing=timing, variant_group=group)
        variant_s[spec] = round(time.perf_counter() - t1, 1)
        print(f"{case}: variants at {spec} took {variant_s[spec]} s", file=sys.stderr, flush=True)

    full_engine = target.build(model, x)
    rows: list[dict[str, Any]] = []
    for step, count in ((target.channel_step, n_test), (1, n_test)):
        space = compiler.analyze(gm, channel_step=step)
        prices = {s: latency_tables.Predictor(t, gm, x, space=space) for s, t in tables.items()}
        rng = np.random.default_rng(seed + 2000 + step)
        for i in range(count):
            widths = space.random_widths(rng, 0.25, 1.0)
            engine = target.build(compiler.rewrite(gm, space, widths, "l1", x), x)
            ref, stats = target.measure_beside(engine, full_engine, MODEL_TIMING)
            row: dict[str, Any] = {"on_step": step > 1, "measured_ms": stats.median_ms,
                                   "unpruned_beside_ms": ref.median_ms, "measured_ratio": stats.median_ms / ref.median_ms}
            for s, p in prices.items():
                ms = p(widths)
                row[s] = {"ms": ms, "ratio": ms / p(None), "stated_pct": p.error_pct(widths),
                          "bound_pct": p.bound_pct(widths)}
            rows.append(row)
            print(f"{case} {'on' if step > 1 else 'off'}-step {i + 1}/{count}: measured ratio "
                  f"{row['measured_ratio']:.3f}, predicted " +
                  ", ".join(f"{s} {row[s]['ratio']:.3f}" for s in timings), file=sys.stderr, flush=True)
    refs = np.array([r["unpruned_beside_ms"] for r in rows])
    fit = {s: {k: tables[s].models[key].get(k) for k in ("fit_error_pct", "off_step_error_pct")}
           | {"noise_pct": profile_noise_pct(tables[s].models[key])} for s in timings}
    return {"case": case, "grid_points": grid_points, "blocks_profile_seconds": round(blocks_s, 1),
            "timings": {s: dataclasses.asdict(parse_timing(s)[0]) | {"group": parse_timing(s)[1]} for s in timings}, "went_first": order[0],
            "variant_profile_seconds": variant_s,
            "fit": fit, **scores(rows, timings),
            "noise_floor_p10_p90_pct": float((np.percentile(refs, 90) - np.percentile(refs, 10)) / np.median(refs) * 100),
            "rows": rows}


def pooled(cases: list[dict[str, Any]], timings: list[str]) -> dict[str, Any]:
    """Every case's test variants together, per timing, on and off the step apart."""
    return scores([r for c in cases for r in c["rows"]], timings) | {
        "variant_profile_seconds_total": {s: round(sum(c["variant_profile_seconds"][s] for c in cases), 1)
                                          for s in timings}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="googlenet@96,shufflenet_v2_x0_5@96,efficientnet_b0@96")
    ap.add_argument("--timings", default="1.0x3,0.5x3", help="variant timings to compare: seconds a round x rounds, "
                    "then gN to time N variants at once beside the unpruned model (1.0x3g5)")
    ap.add_argument("--test", type=int, default=12, help="fresh test Widths per case, on the step and off it each")
    ap.add_argument("--grid-points", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("build/bench_variant_timing.json"))
    args = ap.parse_args()
    timings = args.timings.split(",")
    target = targets.get("onnxruntime-cpu", threads=args.threads)
    result: dict[str, Any] = {"target": target.name, "fingerprint": target.fingerprint(), "torch": torch.__version__,
                              "test_widths_per_kind": args.test, "cases": []}
    with tempfile.TemporaryDirectory() as work:
        for i, case in enumerate(args.cases.split(",")):
            result["cases"].append(run_case(case, target, timings, i % len(timings), args.test, args.seed,
                                            args.grid_points, Path(work)))
            result["overall"] = pooled(result["cases"], timings)
            atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
            print(json.dumps({k: v for k, v in result["cases"][-1].items() if k != "rows"}, indent=1), flush=True)


if __name__ == "__main__":
    main()
