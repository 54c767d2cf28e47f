"""Time lower / analyze / prune (rewrite) per model; write JSON with medians and spreads.

Goal (issue 2): analysing and pruning resnet50 under 2 s on these 2-core machines.

    python tools/bench_analyze.py --out build/bench_analyze.json [--models resnet50] [--repeats 7]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import compiler  # noqa: E402
from compiler.core.atomic import atomic_write_text  # noqa: E402


def stats(xs: list[float]) -> dict[str, float]:
    q = np.percentile(xs, [10, 25, 50, 75, 90])
    return {"median_s": round(statistics.median(xs), 4), "p10_s": round(q[0], 4), "p90_s": round(q[4], 4),
            "iqr_s": round(q[3] - q[1], 4), "runs": len(xs)}


def bench(name: str, size: int, repeats: int) -> dict:
    import torchvision

    model = torchvision.models.get_model(name, weights=None).eval()
    x = torch.randn(1, 3, size, size)
    times: dict[str, list[float]] = {"lower": [], "analyze": [], "rewrite": [], "rewrite_no_check": [],
                                     "analyze_and_prune": []}
    for _ in range(repeats):
        t0 = time.perf_counter()
        gm = compiler.lower(model, x)
        t1 = time.perf_counter()
        space = compiler.analyze(gm, channel_step=8)
        t2 = time.perf_counter()
        pruned = compiler.rewrite(gm, space, space.uniform_widths(0.5), example_inputs=x)
        t3 = time.perf_counter()
        compiler.rewrite(gm, space, space.uniform_widths(0.5))
        t4 = time.perf_counter()
        times["lower"].append(t1 - t0)
        times["analyze"].append(t2 - t1)
        times["rewrite"].append(t3 - t2)
        times["rewrite_no_check"].append(t4 - t3)
        times["analyze_and_prune"].append(t3 - t0)
    return {"model": name, "input": list(x.shape), "groups": len(space.groups),
            "params": sum(p.numel() for p in model.parameters()),
            "pruned_params": sum(p.numel() for p in pruned.parameters()),
            "stages": {k: stats(v) for k, v in times.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="build/bench_analyze.json")
    ap.add_argument("--models", default="resnet50,resnet18,mobilenet_v2,densenet121")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    rows = [bench(n, args.size, args.repeats) for n in args.models.split(",")]
    report = {"host": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                       "torch": torch.__version__},
              "note": "analyze_and_prune = lower (trace + shape propagation) + analyze + rewrite "
                      "(slicing + a checking shape propagation of the pruned graph)",
              "results": rows}
    atomic_write_text(args.out, json.dumps(report, indent=1))
    for r in rows:
        s = r["stages"]
        print(f"{r['model']:14s} " + "  ".join(f"{k} {v['median_s']:.3f}s (p10-p90 {v['p10_s']:.3f}-{v['p90_s']:.3f})"
                                              for k, v in s.items()))


if __name__ == "__main__":
    main()
