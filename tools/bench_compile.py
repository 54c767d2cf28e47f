"""`latprune compile` wall time per stage and peak memory, cold and warm, as a build step runs it.

Each run is the CLI in a subprocess (its peak RSS comes from wait4), on onnxruntime-cpu:
- cold: an empty cache and --no-shipped-tables, so the latency table is profiled first;
- warm: the table cached, the search's score cache emptied, a fresh output folder: what a
  build with a changed model or budget pays;
- rebuild: the warm command again, unchanged: served from the build key.
Cases: resnet18 at 224x224 (torchvision's, 10 classes, randomly initialised under the build
seed: no pretrained weights are reachable offline, so its accuracy is chance level and only
the times count; its data is Fashion-MNIST upscaled to 224 and repeated to 3 channels), and
the trained reference model on Fashion-MNIST. Writes JSON atomically.

    .venv/bin/python tools/bench_compile.py --out tools/results/bench_compile.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from compiler.core.atomic import atomic_write_text  # noqa: E402
from compiler.data import split_train  # noqa: E402


def resnet18_10() -> torch.nn.Module:
    """torchvision's ResNet-18 with a 10-class head (the CLI loads it as tools/bench_compile.py:resnet18_10)."""
    import torchvision

    return torchvision.models.resnet18(num_classes=10)


def fmnist_224(path: Path, n_train: int, n_val: int) -> Path:
    """Fashion-MNIST images upscaled to 3x224x224, as the .npz that --data reads."""
    (xt, yt), (xv, yv) = split_train()

    def up(x: torch.Tensor) -> np.ndarray:
        return F.interpolate(x, size=224, mode="bilinear", align_corners=False).repeat(1, 3, 1, 1).numpy()

    np.savez(path, x=up(xt[:n_train]), y=yt[:n_train].numpy(), x_val=up(xv[:n_val]), y_val=yv[:n_val].numpy())
    return path


def run(args: list[str]) -> dict[str, Any]:
    """One `latprune compile --json` in a subprocess: wall time, peak RSS, the report."""
    with tempfile.TemporaryFile("w+") as out_f, tempfile.TemporaryFile("w+") as err_f:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "compiler.cli", "compile", *args, "--json", "--quiet"],
                                cwd=ROOT, stdout=out_f, stderr=err_f, env={**os.environ, "PYTHONPATH": str(ROOT)})
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS
        wall = time.perf_counter() - t0
        code = os.waitstatus_to_exitcode(status)
        out_f.seek(0)
        err_f.seek(0)
        out, err = out_f.read(), err_f.read()
    peak_mb = usage.ru_maxrss / 1024
    if code != 0:
        return {"exit_code": code, "wall_s": wall, "stderr_tail": err[-2000:]}
    rep = json.loads(out)
    (name, t), = rep["targets"].items()
    v = t["verify"]
    return {"exit_code": 0, "wall_s": round(wall, 2), "peak_rss_mb": round(peak_mb, 1),
            "cached": bool(rep.get("cached")),
            # a cached rebuild's report holds the original build's stage times: not this run's
            "stages_s": None if rep.get("cached") else {k.split("/")[-1]: round(s, 2) for k, s in rep["seconds"].items()},
            "startup_data_lowering_s": None if rep.get("cached") else round(wall - rep["seconds"]["total"], 2),
            "search": {k: t["search"]["stats"].get(k) for k in ("candidates", "evaluations", "cache_hits",
                                                                 "candidates_per_second")},
            "budget_ms": t["budget_ms"], "predicted_ms": t["predicted_ms"], "measured_ms": v["measured_ms"],
            "measured_p10_p90_ms": [v["measured_p10_ms"], v["measured_p90_ms"]], "within_budget": v["within_budget"],
            "outputs_match": v["outputs_match"], "accuracy": t["accuracy"],
            "params": t["params"], "macs": t["macs"]}


def case(name: str, cli: list[str], work: Path) -> dict[str, Any]:
    cache = work / f"{name}-cache"
    shutil.rmtree(cache, ignore_errors=True)
    res: dict[str, Any] = {"command": ["latprune", "compile", *cli]}
    print(f"{name}: cold", file=sys.stderr, flush=True)
    res["cold"] = run([*cli, "--out", str(work / f"{name}-cold"), "--cache-dir", str(cache), "--no-shipped-tables"])
    shutil.rmtree(cache / "scores", ignore_errors=True)
    print(f"{name}: warm", file=sys.stderr, flush=True)
    warm_out = str(work / f"{name}-warm")
    res["warm"] = run([*cli, "--out", warm_out, "--cache-dir", str(cache), "--no-shipped-tables"])
    print(f"{name}: rebuild", file=sys.stderr, flush=True)
    res["rebuild"] = run([*cli, "--out", warm_out, "--cache-dir", str(cache), "--no-shipped-tables"])
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("build/bench_compile.json"))
    ap.add_argument("--budget", default="0.5x")
    ap.add_argument("--r18-evaluations", type=int, default=16)
    ap.add_argument("--r18-images", type=int, default=128, help="training and held-out images at 224")
    ap.add_argument("--ref-model", default="resnet20_fmnist")
    ap.add_argument("--ref-evaluations", type=int, default=60)
    ap.add_argument("--skip-resnet18", action="store_true")
    ap.add_argument("--skip-reference", action="store_true")
    args = ap.parse_args()
    result: dict[str, Any] = {"host": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                                       "torch": torch.__version__}, "budget": args.budget, "cases": {}}
    with tempfile.TemporaryDirectory(prefix="bench_compile_") as tmp:
        work = Path(tmp)
        ref = ["compiler.models:" + args.ref_model, "--input-shape", "1,1,28,28", "--data", "fashion-mnist",
               "--budget", args.budget, "--evaluations", str(args.ref_evaluations)]
        if not args.skip_reference:
            result["cases"][args.ref_model] = case(args.ref_model, ref, work)
        if not args.skip_resnet18:
            data = fmnist_224(work / "fmnist224.npz", args.r18_images, args.r18_images)
            r18 = ["tools/bench_compile.py:resnet18_10", "--input-shape", "1,3,224,224", "--data", str(data),
                   "--budget", args.budget, "--evaluations", str(args.r18_evaluations), "--batch-size", "32",
                   "--adabn-batches", "4", "--eval-images", str(args.r18_images)]
            result["cases"]["resnet18@224"] = case("resnet18", r18, work)
    goals = {}
    if "resnet18@224" in result["cases"]:
        r = result["cases"]["resnet18@224"]
        goals = {"resnet18_cold_under_600s": r["cold"].get("wall_s", 1e9) < 600,
                 "resnet18_warm_under_120s": r["warm"].get("wall_s", 1e9) < 120}
    goals["every_engine_within_budget"] = all(run_.get("within_budget", False) for c in result["cases"].values()
                                              for run_ in (c["cold"], c["warm"]))
    result["goals"] = goals
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    print(json.dumps(goals), file=sys.stderr)


if __name__ == "__main__":
    main()
