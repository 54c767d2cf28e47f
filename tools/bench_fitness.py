"""Cheap fitness vs full fitness: does a candidate scored on fewer images keep its rank?

For each reference model and budget, random candidates whose predicted latency falls in the
search's band (the shipped ORT table; for a held-out family, one profiled on first use) are scored the way a compile scores them (AdaBN on
`--calib-batches` training batches of 64, top-1 on `--eval-images` held-out images) and by each
cheaper setting (fewer AdaBN batches, fewer held-out images, bf16 arithmetic, the right label's
mean probability instead of top-1). Reported per
setting: Spearman rank correlation with the full score (per budget and pooled), whether the full score's best
candidate is in the cheap score's top 3, and seconds per candidate (medians over candidates,
measured in this run side by side). One torch thread.

    .venv/bin/python tools/bench_fitness.py --out tools/results/bench_fitness.json
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import latency_tables  # noqa: E402
from compiler.core.atomic import atomic_write_text  # noqa: E402
from compiler.core.groups import analyze  # noqa: E402
from compiler.core.importance import scores  # noqa: E402
from compiler.core.lower import lower  # noqa: E402
from compiler.data import split_train  # noqa: E402
from compiler.evaluate import Job, Screen, Top1, score, top1  # noqa: E402
from bench_strategies import add_table_args, table_for  # noqa: E402
from heldout_fmnist import bench_model  # noqa: E402


def candidates(space: Any, predict: Any, budget_ms: float, n: int, rng: np.random.Generator) -> list[dict]:
    """EagleEye-style random Widths with predicted latency in [0.9, 1.0] x budget, on the step."""
    groups = space.prunable()
    out, seen = [], set()
    for _ in range(200 * n):
        level = rng.uniform(0.1, 1.0)
        ratios = np.clip(rng.uniform(level - 0.3, level + 0.3, len(groups)), 0.0, 1.0)
        w = dict(space.full_widths())
        for g, r in zip(groups, ratios):
            allowed = np.array(g.allowed())
            w[g.id] = int(allowed[np.argmin(np.abs(allowed - r * g.size))])
        key = tuple(sorted(w.items()))
        if key not in seen and 0.9 * budget_ms <= predict(w) <= budget_ms:
            seen.add(key)
            out.append(w)
            if len(out) == n:
                break
    return out


class TrueClassProb(Top1):
    """The mean softmax probability of the right label: a smooth stand-in for top-1, measured as
    a screen metric (it moves with every image's confidence, not only at the decision boundary)."""

    def __call__(self, model: torch.nn.Module) -> float:
        model.eval()
        total, n = 0.0, 0
        with torch.no_grad():
            for x, y in self.batches:
                total += float(model(x).float().softmax(1).gather(1, y.view(-1, 1)).sum())
                n += len(y)
        return total / n


def true_class_prob(val: Any, max_images: int) -> TrueClassProb:
    return TrueClassProb(top1(val, max_images=max_images).batches)


def parse_setting(s: str) -> tuple[int, int, str, Any]:
    """'2x256' -> (2 AdaBN batches, 256 images, fp32, top-1); '2x256bf16' the same in bf16; a
    trailing 'p' scores by the mean probability of the right label instead of top-1."""
    m = re.fullmatch(r"(\d+)x(\d+)(bf16)?(p)?", s)
    if not m:
        raise SystemExit(f"bad setting {s!r}: ADABN_BATCHESxIMAGES, optionally followed by bf16, then p")
    return int(m[1]), int(m[2]), m[3] or "fp32", true_class_prob if m[4] else top1


def header(args: argparse.Namespace) -> dict[str, Any]:
    """The JSON's head: host, torch, the arguments; `models` to fill."""
    return {"host": platform.processor() or platform.machine(), "torch": torch.__version__,
            "args": vars(args) | {"out": str(args.out)}, "models": {}}


def reference_setup(name: str, args: argparse.Namespace) -> tuple[Any, Any, np.ndarray, Any, float]:
    """A model (reference or held out) lowered and analysed at its table's step: graph, space, L1
    unit scores, the table's predictor for it and its unpruned prediction."""
    x = torch.zeros(1, 1, 28, 28)
    model = bench_model(name)
    table = latency_tables.load(table_for(name, model, x, args))
    gm = lower(model, x)
    space = analyze(gm, channel_step=table.channel_step)
    predict = table.predictor(gm, x, space=space)
    return gm, space, scores(gm, space, "l1"), predict, predict(None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="resnet20_fmnist,mobilenet_v2_small_fmnist")
    p.add_argument("--budgets", default="0.5,0.35")
    p.add_argument("--candidates", type=int, default=24, help="per model and budget")
    p.add_argument("--calib-batches", type=int, default=8)
    p.add_argument("--eval-images", type=int, default=2000)
    p.add_argument("--settings", default="2x256,4x256,2x512,4x512", help="cheap settings: ADABN_BATCHESxIMAGES[bf16][p]")
    p.add_argument("--seed", type=int, default=0)
    add_table_args(p)
    p.add_argument("--out", type=Path, default=Path("tools/results/bench_fitness.json"))
    args = p.parse_args()
    torch.set_num_threads(1)
    (xt, _), (xv, yv) = split_train()
    g = torch.Generator().manual_seed(args.seed)
    calib = [xt[idx] for idx in torch.randperm(len(xt), generator=g)[:64 * args.calib_batches].split(64)]
    val = [(xv[i:i + 500], yv[i:i + 500]) for i in range(0, args.eval_images, 500)]
    settings = {"full": (args.calib_batches, args.eval_images, "fp32", top1)}
    settings.update({s: parse_setting(s) for s in args.settings.split(",")})
    metrics = {name: metric(val, max_images=n) for name, (_, n, _, metric) in settings.items()}
    result = header(args)
    rng = np.random.default_rng(args.seed)
    for name in args.models.split(","):
        gm, space, unit, predict, full_ms = reference_setup(name, args)
        jobs = {s: Job(gm, space, unit, calib, metrics["full"], Screen(metrics[s], nb, precision))
                for s, (nb, _, precision, _) in settings.items()}  # "full" is scored unscreened, as a compile does
        per_budget: dict[str, Any] = {}
        for b in (float(v) for v in args.budgets.split(",")):
            ws = candidates(space, predict, b * full_ms, args.candidates, rng)
            got: dict[str, list[float]] = {s: [] for s in settings}
            secs: dict[str, list[float]] = {s: [] for s in settings}
            for w in ws:
                for s, job in jobs.items():
                    value, seconds = score(job, w, screened=s != "full")
                    got[s].append(value)
                    secs[s].append(sum(seconds.values()))
            best = int(np.argmax(got["full"]))
            per_budget[f"{b}x"] = {"candidates": len(ws), "full_scores": got["full"], "settings": {
                s: {"spearman": float(spearmanr(got[s], got["full"]).statistic) if s != "full" else 1.0,
                    "full_best_in_top3": best in np.argsort(got[s])[::-1][:3].tolist(),
                    "seconds_per_candidate": float(np.median(secs[s])),
                    "seconds_p10_p90": [float(np.percentile(secs[s], 10)), float(np.percentile(secs[s], 90))],
                    "scores": got[s]} for s in settings}}
            print(name, f"{b}x", {s: round(v["spearman"], 3) for s, v in per_budget[f"{b}x"]["settings"].items()},
                  flush=True)
        result["models"][name] = per_budget
    result["pooled"] = _pooled(result["models"], settings)
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["pooled"], indent=1))


def _pooled(models: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """Per setting: mean Spearman over (model, budget), share of cases with the best in the top 3,
    and speed-up over the full score (ratio of median seconds, same run)."""
    cases = [c for m in models.values() for c in m.values()]
    return {s: {"mean_spearman": float(np.mean([c["settings"][s]["spearman"] for c in cases])),
                "min_spearman": float(np.min([c["settings"][s]["spearman"] for c in cases])),
                "best_in_top3": float(np.mean([c["settings"][s]["full_best_in_top3"] for c in cases])),
                "speedup": float(np.median([c["settings"]["full"]["seconds_per_candidate"]
                                            / c["settings"][s]["seconds_per_candidate"] for c in cases]))}
            for s in settings}


if __name__ == "__main__":
    main()
