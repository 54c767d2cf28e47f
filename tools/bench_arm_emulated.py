"""The tvm-aarch64 engine on an emulated board: output error against PyTorch, and what the check costs.

Brings up tools/arm_emulator.py's board, then for each model builds the aarch64 engine
(untuned), uploads and runs it under qemu, and records the max absolute and relative output
error against PyTorch on real Fashion-MNIST images, with the seconds each step took. Models:
the two trained reference models (a ResNet-20 and a depthwise MobileNetV2) and torchvision's
mobilenet_v3_small and shufflenet_v2 (hard-swish, SE, channel shuffle) at 64x64, untrained
with random BatchNorm statistics.

    .venv/bin/python tools/bench_arm_emulated.py --out tools/results/arm_emulated.json
"""
from __future__ import annotations

import argparse
import gc
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import targets  # noqa: E402
from compiler.core.atomic import atomic_write_text  # noqa: E402
from compiler.data import split_train  # noqa: E402
from compiler.models import reference  # noqa: E402

EMULATOR = [sys.executable, str(Path(__file__).with_name("arm_emulator.py"))]


def with_random_norms(model: torch.nn.Module) -> torch.nn.Module:
    """Untrained torchvision nets have identity BN statistics and near-zero outputs, which would
    hide an error; random statistics and affine terms give outputs of a trained net's scale."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            for t, lo, hi in ((m.running_mean, -0.5, 0.5), (m.running_var, 0.5, 2.0), (m.weight, 0.5, 1.5),
                              (m.bias, -0.5, 0.5)):
                t.data.uniform_(lo, hi)
    return model


def models() -> dict[str, tuple[torch.nn.Module, torch.Tensor]]:
    (_, _), (xv, _) = split_train()
    torch.manual_seed(0)
    rgb = torch.rand(1, 3, 64, 64)
    return {"resnet20_fmnist": (reference("resnet20_fmnist"), xv[:1]),
            "mobilenet_v2_small_fmnist": (reference("mobilenet_v2_small_fmnist"), xv[1:2]),
            "mobilenet_v3_small@64": (with_random_norms(torchvision.models.mobilenet_v3_small(num_classes=10)), rgb),
            "shufflenet_v2_x0_5@64": (with_random_norms(torchvision.models.shufflenet_v2_x0_5(num_classes=10)), rgb)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=9290)
    p.add_argument("--out", type=Path, default=Path("tools/results/arm_emulated.json"))
    args = p.parse_args()
    key = "latprune-bench-emu"
    t0 = time.perf_counter()
    subprocess.run([*EMULATOR, "up", "--port", str(args.port), "--key", key], check=True)
    up_s = time.perf_counter() - t0
    rows = {}
    try:
        for name, (model, x) in models().items():
            model = model.eval()
            with tempfile.TemporaryDirectory() as d:
                tgt = targets.get("tvm-aarch64", trials=0, rpc_tracker=f"127.0.0.1:{args.port}", rpc_key=key,
                                  work_dir=Path(d) / "db")
                t1 = time.perf_counter()
                art = tgt.build(model, x)  # compile, export, upload, load on the board
                t2 = time.perf_counter()
                out = tgt.run(art)[0]
                t3 = time.perf_counter()
                with torch.no_grad():
                    ref = model(x).numpy()
                err = float(np.abs(out - ref).max())
                rows[name] = {"input": list(x.shape), "output_max_abs": float(np.abs(ref).max()), "max_abs_error": err,
                              "max_rel_error": err / float(np.abs(ref).max()),
                              "same_top1": bool((out.argmax(-1) == ref.argmax(-1)).all()),
                              "build_upload_s": round(t2 - t1, 2), "run_s": round(t3 - t2, 3),
                              "fingerprint_emulated": tgt.fingerprint().get("emulated", False)}
                print(name, rows[name], flush=True)
                del art
                tgt.close()
                gc.collect()  # the board serves one session at a time: release this one now
    finally:
        subprocess.run([*EMULATOR, "down", "--port", str(args.port)], check=False)
    atomic_write_text(args.out, json.dumps({"host": platform.processor() or platform.machine(),
                                            "board_up_s": round(up_s, 1), "models": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
