"""Budget adherence: does a compiled engine measure within its budget, with the default margin?

For each model@resolution (families outside the shipped tables) and each budget (0.7x, 0.5x,
0.35x of the unpruned model's latency), `compiler.compile` on onnxruntime-cpu with the
defaults a user gets (safety margin from the table's stated error, confirm pass, 3% tolerance;
the verdict is the engine's time over the unpruned engine's, timed beside it, and each row
also says whether its time alone met the budget in ms the search was given), from a table
that already holds the model (profile it first, e.g. with tools/bench_latency_model.py).
Models are randomly initialised torchvision ones and the data is Fashion-MNIST upscaled to 3
channels: only latency counts here, accuracy is chance level.
Writes JSON after every compile, atomically.

    .venv/bin/python tools/bench_adherence.py --table build/tables/heldout-ort.json \
        --cases mnasnet0_5@96x1,squeezenet1_1@96x1 --out build/bench_adherence.json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import compiler  # noqa: E402
import targets  # noqa: E402
from bench_latency_model import make, parse_case  # noqa: E402
from compiler.core.atomic import atomic_write_text  # noqa: E402
from compiler.data import split_train  # noqa: E402
from compiler.dataspec import load_data  # noqa: E402


def fmnist_npz(path: Path, hw: int, n: int) -> Path:
    """Fashion-MNIST at hw x hw, repeated to 3 channels, as the .npz that --data reads."""
    (xt, yt), (xv, yv) = split_train()

    def up(x: torch.Tensor) -> np.ndarray:
        return F.interpolate(x[:n], size=hw, mode="bilinear", align_corners=False).repeat(1, 3, 1, 1).numpy()

    np.savez(path, x=up(xt), y=yt[:n].numpy(), x_val=up(xv), y_val=yv[:n].numpy())
    return path


def one(case: str, budget: str, table: Path, work: Path, evaluations: int) -> dict[str, Any]:
    name, cin, hw, batch = parse_case(case)
    torch.manual_seed(0)
    model = make(name).eval()
    shape = (batch, cin, hw, hw)
    data = load_data(str(fmnist_npz(work / f"d{hw}.npz", hw, 64)), shape, batch_size=16, max_val=64)
    out = work / f"{case}-{budget}".replace("@", "_")
    t0 = time.perf_counter()
    try:
        compiler.compile(model, torch.zeros(shape), targets.get("onnxruntime-cpu", threads=1), budget,
                         calib_data=data, table=str(table), out_dir=out, cache_dir=work / "cache",
                         max_evaluations=evaluations, adabn_batches=2, progress=False)
    except compiler.VerificationError:
        pass  # the report is written; it says by how much
    except compiler.InfeasibleBudgetError as exc:  # refused up front, as it should be: nothing to measure
        return {"case": case, "budget": budget, "infeasible": str(exc), "seconds": round(time.perf_counter() - t0, 1)}
    t = json.loads((out / "report.json").read_text())["targets"]["onnxruntime-cpu"]
    v = t["verify"]
    return {"case": case, "budget": budget, "budget_ms": t["budget_ms"], "full_ms": t["full_ms"],
            "floor_ms": t["floor_ms"], "safety_margin": t["safety_margin"], "predicted_ms": t["predicted_ms"],
            "measured_ms": v["measured_ms"], "medians_ms": v["medians_ms"], "tolerance": v["tolerance"],
            "within_budget": v["within_budget"], "measured_over_budget_pct": (v["measured_ms"] / t["budget_ms"] - 1) * 100,
            "within_budget_ms": v["measured_ms"] <= t["budget_ms"] * (1 + v["tolerance"]),
            **{k: v[k] for k in ("budget_share", "measured_share", "shares", "unpruned_measured_ms") if k in v},
            "prediction_error_pct": v["prediction_error_pct"], "confirmed": t["confirmed"],
            "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", type=Path, required=True)
    ap.add_argument("--cases", default="mnasnet0_5@96x1,shufflenet_v2_x0_5@96x1,squeezenet1_1@96x1,googlenet@96x1")
    ap.add_argument("--budgets", default="0.7x,0.5x,0.35x")
    ap.add_argument("--evaluations", type=int, default=8)
    ap.add_argument("--out", type=Path, default=Path("build/bench_adherence.json"))
    args = ap.parse_args()
    rows: list[dict[str, Any]] = []
    device = targets.get("onnxruntime-cpu", threads=1).fingerprint()
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases.split(","):
            for budget in args.budgets.split(","):
                rows.append(one(case, budget, args.table, Path(tmp), args.evaluations))
                r = rows[-1]
                if "infeasible" in r:
                    print(f"{case} {budget}: refused, {r['infeasible']}", file=sys.stderr)
                    continue
                print(f"{case} {budget}: budget {r['budget_ms']:.3f} ms, predicted {r['predicted_ms']:.3f}, measured "
                      f"{r['measured_ms']:.3f} ({r['measured_over_budget_pct']:+.1f}% vs budget), "
                      f"{r['measured_share']:.3f}x the unpruned ({r['unpruned_measured_ms']:.3f} ms beside), "
                      f"{'ok' if r['within_budget'] else 'MISSED'}", file=sys.stderr)
                built = [x for x in rows if "infeasible" not in x]
                summary = {"compiles": len(built), "refused_infeasible": len(rows) - len(built),
                           "within_budget": sum(x["within_budget"] for x in built),
                           "within_budget_ms": sum(x["within_budget_ms"] for x in built),
                           "worst_over_budget_pct": max(x["measured_over_budget_pct"] for x in built),
                           "table": str(args.table), "target": device}
                atomic_write_text(args.out, json.dumps({"summary": summary, "compiles": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
