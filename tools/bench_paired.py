"""Timing a pruned engine beside the unpruned one: one after the other, or in turns.

A relative budget (0.5x), the profile's correction and the latency benchmarks all judge an
engine by its time over the unpruned engine's, timed beside it. On a shared host busy spells
last many calls; timed one after the other, a spell can land in one engine's timing only.
This measures, for a few random pruned variants of each case, that ratio `--repeats` times
by several protocols (their order rotating from repeat to repeat), spread over minutes:
sequential (the unpruned engine, then the variant: what latprune did before), in turns of 1 or
of 4 timed calls, each turn after an untimed one (targets.time_pair; 4 is its default), and
(`--protocols`) in turns of any length, or all the variants at once in turns with one unpruned
engine ('group turns of N': targets.time_group, as a profile can time them). It reports how much the
ratio varies between repeats (p10-p90 and max-min, % of its median) and its median per
protocol, with the unpruned engine's own spread over the same time as the noise it had to
cancel. Writes JSON.

    .venv/bin/python tools/bench_paired.py --out tools/results/bench_paired.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import compiler  # noqa: E402
import targets  # noqa: E402
from compiler.core.atomic import atomic_write_text  # noqa: E402
from latency_tables.profile import MODEL_TIMING  # noqa: E402
from bench_latency_model import make, parse_case  # noqa: E402


def spread(values: list[float]) -> dict[str, float]:
    """p10-p90 and max-min of repeated values, % of their median."""
    p10, p50, p90 = np.percentile(values, [10, 50, 90])
    return {"p10_p90_pct": float((p90 - p10) / p50 * 100), "max_min_pct": float((max(values) - min(values)) / p50 * 100)}


def timed(target: targets.Target, protocol: str, full: targets.Artifact,
          engines: list[targets.Artifact]) -> list[tuple[targets.LatencyStats, targets.LatencyStats]]:
    """(the unpruned engine's stats, the variant's) for every variant by one protocol:
    'sequential', 'turns of N' (time_pair, each variant on its own beside the unpruned engine) or
    'group turns of N' (time_group: all the variants at once beside one unpruned engine)."""
    if protocol == "sequential":
        return [(target.measure(full, MODEL_TIMING), target.measure(eng, MODEL_TIMING)) for eng in engines]
    turn = int(protocol.split()[-1])
    if protocol.startswith("group "):
        return targets.time_group(lambda: target.run(full), [(lambda e=e: target.run(e)) for e in engines],
                                  MODEL_TIMING, turn=turn)
    return [targets.time_pair(lambda: target.run(full), lambda e=eng: target.run(e), MODEL_TIMING, turn=turn)
            for eng in engines]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="shufflenet_v2_x0_5@96x1,resnet20@32x1")
    ap.add_argument("--variants", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--protocols", default="sequential,turns of 1,turns of 4",
                    help="comma-separated: sequential, 'turns of N', 'group turns of N' (all variants at once)")
    ap.add_argument("--out", type=Path, default=Path("build/bench_paired.json"))
    args = ap.parse_args()
    target = targets.get("onnxruntime-cpu", threads=1)
    result = {"target": "onnxruntime-cpu", "fingerprint": target.fingerprint(), "timing": MODEL_TIMING.to_dict(),
              "args": {k: str(v) for k, v in vars(args).items()}, "cases": []}
    for case in args.cases.split(","):
        name, cin, hw, batch = parse_case(case)
        model, x = make(name).eval(), torch.randn(batch, cin, hw, hw)
        gm = compiler.lower(model, x)
        space = compiler.analyze(gm, channel_step=target.channel_step)
        rng = np.random.default_rng(args.seed)
        full = target.build(gm, x)
        engines = [target.build(compiler.rewrite(gm, space, space.random_widths(rng, 0.25, 1.0), "l1", x), x)
                   for _ in range(args.variants)]
        protocols = args.protocols.split(",")
        ratios: dict[str, list[list[float]]] = {p: [[] for _ in engines] for p in protocols}
        unpruned = []
        t0 = time.perf_counter()
        for rep in range(args.repeats):
            for k in range(len(protocols)):
                protocol = protocols[(rep + k) % len(protocols)]
                for i, (ref, st) in enumerate(timed(target, protocol, full, engines)):
                    ratios[protocol][i].append(st.median_ms / ref.median_ms)
                    unpruned.append(ref.median_ms)
            print(f"{case} repeat {rep + 1}/{args.repeats}", file=sys.stderr, flush=True)
        per = {p: [spread(r) for r in rs] for p, rs in ratios.items()}
        row = {"case": case, "seconds": round(time.perf_counter() - t0, 1), "unpruned_ms_spread": spread(unpruned),
               "unpruned_median_ms": float(np.median(unpruned)),
               "median_over_variants": {p: {k: float(np.median([s[k] for s in v])) for k in v[0]} for p, v in per.items()},
               "median_ratio": {p: [float(np.median(r)) for r in rs] for p, rs in ratios.items()},
               "ratios": ratios}
        result["cases"].append(row)
        print(json.dumps({k: row[k] for k in ("case", "unpruned_ms_spread", "median_over_variants")}), flush=True)
        atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
