"""With vs without resolution as a knob, through the whole compile pass.

On the Fashion-MNIST reference models or a held-out family (tools/heldout_fmnist.py; 28 x 28
inputs), one latency table is profiled on this
machine for the model at its native size and behind an input resize to each of
`--resolutions` (`latprune profile --resolutions`; grid and variants below the defaults, to fit
the bench). At each budget (a fraction of the native unpruned model's predicted latency),
`compiler.compile` runs without and with `resolutions=...`, after refit + AdaBN and, separately,
after the same short KD fine-tune. Recorded: the resolution chosen and what each one's search
found, test top-1 on Fashion-MNIST test images (fed at 28 x 28; the engine resizes), the
engine's latency measured beside the unpruned engine (ORT, 1 thread) and each build's wall
seconds. Writes JSON (atomically).

    .venv/bin/python tools/bench_resolution.py --models resnet20_fmnist --torch-threads 1 \
        --out tools/results/bench_resolution_resnet20_fmnist.json
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
from heldout_fmnist import bench_model  # noqa: E402
from compiler.resolution import Resized  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    compile_bench_args(ap)
    ap.add_argument("--resolutions", default="24,20")
    args = ap.parse_args()
    sizes = tuple(int(r) for r in args.resolutions.split(","))
    data, test = compile_bench_setup(args)
    x = torch.zeros(1, 1, 28, 28)
    target = targets.get("onnxruntime-cpu", threads=1)
    rows: list[dict[str, Any]] = []
    profiled: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            model = bench_model(name)
            table = Path(tmp) / f"{name}.json"
            profiled[name] = profiled_table([*(Resized(model, r) for r in sizes), model], x, target, table, args)
            meter = Meter(target, model, x)
            for fraction in args.budgets.split(","):
                for epochs in (0.0, args.epochs):
                    for allowed in ((), sizes):
                        t0 = time.perf_counter()
                        row = {"model": name, "budget": f"{fraction}x", "resolutions": list(allowed),
                               "finetune_epochs": epochs}
                        try:
                            res = compiler.compile(model, x, target, f"{fraction}x", calib_data=data, table=str(table),
                                                   out_dir=Path(tmp) / "out", cache_dir=Path(tmp) / "cache",
                                                   max_evaluations=args.evaluations, screen_images=256,
                                                   seed=args.seed, finetune_epochs=epochs, resolutions=allowed,
                                                   verify_engines=False, progress=False)
                        except compiler.InfeasibleBudgetError as exc:  # a result: this budget needs another knob
                            rows.append({**row, "infeasible": str(exc)})
                            print(json.dumps(rows[-1]), flush=True)
                            continue
                        t = res.report["targets"][target.name]
                        rows.append({**row, "resolution": t["resolution"], "test_top1": test(res.model),
                                     "accuracy_val": t["accuracy"], "predicted_ms": t["predicted_ms"],
                                     "budget_ms": t["budget_ms"], "build_s": round(time.perf_counter() - t0, 1),
                                     **meter(res.model)})
                        print(json.dumps(rows[-1]), flush=True)
    target.close()
    atomic_write_text(args.out, json.dumps({"host": platform.processor() or platform.machine(),
                                            "torch": torch.__version__, "profile_s": profiled,
                                            "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows},
                                           indent=1) + "\n")


if __name__ == "__main__":
    main()
