"""Issue 13: do blocks timed several at a time beside one metronome price as blocks timed alone?

A profile times each block engine in turns with a fixed metronome engine (half the round each)
and scales it by the metronome's drift; that was about 40% of a ResNet-20 profile's time, half
of it the metronome's. `block_group` blocks can share the metronome's turns (targets.time_group),
so the metronome takes 1 / (k + 1) of the time instead of half. Per case, on this host's ONNX
Runtime: the blocks (no variants) are profiled four times into fresh tables, alone / grouped /
grouped / alone (ABBA, so drift over the run falls on both alike). Each pair of tables is then
compared point by point (the same grid) and by the block sums (fast plus fallback kernels,
Predictor.features) they give `--test` random Widths on the step and off it, as ratios around
their median: a fresh table's overall scale is its metronome's one timing, which the end-to-end
correction absorbs, so the shape is what counts. Grouping is harmless if tables timed the two
ways differ in shape no more than two tables timed the same way. Writes JSON atomically after
every case.

    .venv/bin/python tools/bench_block_group.py --group 4 --out tools/results/bench_block_group.json
"""
from __future__ import annotations

import argparse
import itertools
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


def spread(ratios: list[float]) -> dict[str, Any]:
    """How far ratios of one table's numbers to another's stray, in %: from 1, and from their own
    median (the shape: a table's overall scale follows the metronome's one timing when the table
    is started, and the end-to-end correction absorbs it)."""
    r = np.asarray(ratios)
    dev, shape = np.abs(r - 1) * 100, np.abs(r / np.median(r) - 1) * 100
    return {"n": int(r.size), "median_ratio": float(np.median(r)), "median_abs_pct": float(np.median(dev)),
            "shape_median_abs_pct": float(np.median(shape)), "shape_p90_abs_pct": float(np.percentile(shape, 90)),
            "shape_max_abs_pct": float(shape.max()), "ratios": [round(float(v), 5) for v in r]}


def compare(tables: list[latency_tables.LatencyTable], sums: dict[str, list[np.ndarray]], i: int,
            j: int) -> dict[str, Any]:
    """Table i against table j: every grid point's median, and the block sums of the test Widths."""
    a, b = tables[i], tables[j]
    points = [b.entries[k].points[p][0] / e.points[p][0] for k, e in a.entries.items() for p in e.points]
    slow = [b.entries[k].slow[p][0] / e.slow[p][0] for k, e in a.entries.items() for p in e.slow]
    return {"points": spread(points), "fallback_points": spread(slow) if slow else None,
            **{f"block_sum_{kind}": spread(list(s[j] / s[i])) for kind, s in sums.items()}}


def run_case(case: str, target: targets.Target, group: int, n_test: int, seed: int, grid_points: int,
             work: Path) -> dict[str, Any]:
    name, cin, hw, batch = parse_case(case)
    torch.manual_seed(seed)
    model = make(name).eval()
    x = torch.randn(batch, cin, hw, hw)
    order = [1, group, group, 1]
    tables, seconds = [], []
    for n, g in enumerate(order):
        t0 = time.perf_counter()
        tables.append(latency_tables.profile(model, x, target, out=work / f"{name}-{n}.json", name=case, seed=seed,
                                             grid_points=grid_points, variants=0, off_step_variants=0, block_group=g))
        seconds.append(round(time.perf_counter() - t0, 1))
        print(f"{case}: blocks {n + 1}/4, {g} at a time, took {seconds[-1]} s", file=sys.stderr, flush=True)
    gm = compiler.lower(model, x)
    sums: dict[str, list[np.ndarray]] = {}
    for kind, step in (("on_step", target.channel_step), ("off_step", 1)):
        space = compiler.analyze(gm, channel_step=step)
        rng = np.random.default_rng(seed + 3000 + step)
        widths = [space.random_widths(rng, 0.25, 1.0) for _ in range(n_test)]
        prices = [latency_tables.Predictor(t, gm, x, space=space) for t in tables]
        sums[kind] = [np.array([p.features(w)[[0, 3]].sum() for w in widths]) for p in prices]
    pairs = [{"tables": [i, j], "same_timing": order[i] == order[j], **compare(tables, sums, i, j)}
             for i, j in itertools.combinations(range(len(order)), 2)]
    return {"case": case, "grid_points": grid_points, "order_block_group": order, "block_profile_seconds": seconds,
            "grouped_over_alone_seconds": round((seconds[1] + seconds[2]) / (seconds[0] + seconds[3]), 3),
            "pairs": pairs, "summary": summary(pairs)}


def summary(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean of the pairs' median shape deviations (%) per measure, over the pairs timed the same
    way and over the pairs timed the two ways: grouping is harmless where the second is no larger
    than the first."""
    out: dict[str, Any] = {}
    for measure in ("points", "block_sum_on_step", "block_sum_off_step"):
        for same in (True, False):
            devs = [p[measure]["shape_median_abs_pct"] for p in pairs if p["same_timing"] == same]
            out.setdefault(measure, {})["same_timing" if same else "alone_vs_grouped"] = float(np.mean(devs))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="shufflenet_v2_x0_5@96,googlenet@96")
    ap.add_argument("--group", type=int, default=4, help="blocks timed at once beside the metronome")
    ap.add_argument("--test", type=int, default=24, help="random Widths priced, on the step and off it each")
    ap.add_argument("--grid-points", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("build/bench_block_group.json"))
    args = ap.parse_args()
    target = targets.get("onnxruntime-cpu", threads=args.threads)
    result: dict[str, Any] = {"target": target.name, "fingerprint": target.fingerprint(), "torch": torch.__version__,
                              "group": args.group, "cases": []}
    with tempfile.TemporaryDirectory() as work:
        for case in args.cases.split(","):
            result["cases"].append(run_case(case, target, args.group, args.test, args.seed, args.grid_points,
                                            Path(work)))
            atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
            c = result["cases"][-1]
            print(json.dumps({k: c[k] for k in ("case", "block_profile_seconds", "summary")}, indent=1), flush=True)


if __name__ == "__main__":
    main()
