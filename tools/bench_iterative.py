"""One-shot vs iterative pruning through the whole compile pass, the same fine-tune budget for both.

On the Fashion-MNIST reference models, at each budget (a fraction of the unpruned model's
latency predicted by the shipped onnxruntime-cpu table), `compiler.compile` runs:
- one-shot: `steps=1`, then `finetune_epochs=E`;
- iterative: `steps=K`, `step_epochs=E/K` after each of the K-1 intermediate steps and
  `finetune_epochs=E/K` at the end: the same E epochs of KD fine-tuning in all;
- each also without any fine-tune (E=0: iterative then prunes in K steps with refit + AdaBN only).
Both use the defaults otherwise (l1 importance, refit on, screened evolution). Test top-1 on the
Fashion-MNIST test images, the engine's measured latency ratio (ORT, 1 thread, timed beside the
unpruned engine) and the build's wall seconds are recorded. Writes JSON (atomically).

    .venv/bin/python tools/bench_iterative.py --models resnet20_fmnist --torch-threads 1 \
        --out tools/results/bench_iterative_resnet20_fmnist.json

A held-out family (tools/heldout_fmnist.py, `--models shufflenet_v2_x0_5_fmnist`) has no blocks in
the shipped table: a table is profiled for it first (`--grid-points`, `--variants`) and its
budgets are fractions of that table's prediction.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import compiler  # noqa: E402
import targets  # noqa: E402
from bench_search import Meter, compile_bench_args, compile_bench_setup, profiled_table  # noqa: E402
from compiler.core.atomic import atomic_write_text  # noqa: E402
from heldout_fmnist import HELDOUT, bench_model  # noqa: E402
from latency_tables import SHIPPED  # noqa: E402

TABLE = SHIPPED / "onnxruntime-cpu_amd-epyc-avx512_t1.json"


def schedules(steps: int, epochs: float) -> dict[str, dict[str, Any]]:
    """The compared configurations, as compile options."""
    return {"one-shot": {"steps": 1, "finetune_epochs": epochs},
            f"iterative-{steps}": {"steps": steps, "step_epochs": epochs / steps, "finetune_epochs": epochs / steps},
            "one-shot, no fine-tune": {"steps": 1, "finetune_epochs": 0.0},
            f"iterative-{steps}, no fine-tune": {"steps": steps, "step_epochs": 0.0, "finetune_epochs": 0.0}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    compile_bench_args(ap)  # --epochs: KD fine-tune epochs in all, per configuration
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    data, test = compile_bench_setup(args)
    x = torch.zeros(1, 1, 28, 28)
    target = targets.get("onnxruntime-cpu", threads=1)
    rows: list[dict[str, Any]] = []
    profiled: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            model = bench_model(name)
            table = TABLE
            if name in HELDOUT:  # the shipped table has none of its blocks
                table = Path(tmp) / f"{name}.json"
                profiled[name] = profiled_table([model], x, target, table, args)
            meter = Meter(target, model, x)
            for fraction in args.budgets.split(","):
                for label, kw in schedules(args.steps, args.epochs).items():
                    t0 = time.perf_counter()
                    row = {"model": name, "budget": f"{fraction}x", "schedule": label, **kw}
                    try:
                        res = compiler.compile(model, x, target, f"{fraction}x", calib_data=data, table=str(table),
                                               out_dir=Path(tmp) / "out", cache_dir=Path(tmp) / "cache", force=True,
                                               max_evaluations=args.evaluations, screen_images=256, seed=args.seed,
                                               verify_engines=False, progress=False, **kw)
                    except compiler.InfeasibleBudgetError as exc:  # a result: a profiled table's floor is over it
                        rows.append({**row, "infeasible": str(exc)})
                        print(json.dumps(rows[-1]), flush=True)
                        continue
                    seconds = time.perf_counter() - t0
                    t = res.report["targets"][target.name]
                    rows.append({**row, "test_top1": test(res.model), "accuracy_val": t["accuracy"],
                                 "predicted_ms": t["predicted_ms"], "budget_ms": t["budget_ms"],
                                 "steps_report": t["steps"], "build_s": round(seconds, 1), **meter(res.model)})
                    print(json.dumps(rows[-1]), flush=True)
    target.close()
    atomic_write_text(args.out, json.dumps({"host": platform.processor() or platform.machine(),
                                            "torch": torch.__version__, "table": TABLE.name, "profile_s": profiled,
                                            "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows},
                                           indent=1) + "\n")


if __name__ == "__main__":
    main()
