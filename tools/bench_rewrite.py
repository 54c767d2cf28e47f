"""The rewrite pass's time per candidate: this tree's `compiler.core.rewrite.apply` beside the
one at a git revision (`--against`), on the same lowered graph, space, widths and keep mask.

Every candidate a search scores goes through one rewrite, and on a large model the copy it
starts from was most of it. The two versions run in turns, `--calls` calls each per round over
`--rounds` rounds, so that a busy spell on a shared host hits both; reports the median and
p10-p90 ms per call and the ratio of medians. Writes JSON atomically.

    .venv/bin/python tools/bench_rewrite.py --against 51d4114 --out tools/results/bench_rewrite.json
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
import torchvision

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import compiler  # noqa: E402
from compiler.core.atomic import atomic_write_text  # noqa: E402
from compiler.core.importance import l1, select  # noqa: E402
from compiler.models import reference  # noqa: E402


def at_revision(rev: str) -> ModuleType:
    """compiler/core/rewrite.py as it was at `rev`, imported beside this tree's (same package)."""
    source = subprocess.run(["git", "show", f"{rev}:compiler/core/rewrite.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "rewrite_at_rev.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("compiler.core.rewrite_at_rev", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def case(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    """A shipped reference model (…_fmnist, 28 x 28) or a torchvision model at 224 x 224."""
    if name.endswith("_fmnist"):
        return reference(name), torch.zeros(1, 1, 28, 28)
    return getattr(torchvision.models, name)(weights=None).eval(), torch.zeros(1, 3, 224, 224)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--against", required=True, help="git revision whose rewrite pass to compare with")
    ap.add_argument("--models", default="resnet20_fmnist,mobilenet_v2_small_fmnist,resnet50,mobilenet_v2")
    ap.add_argument("--ratio", type=float, default=0.5, help="uniform width ratio of the candidate")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=5, help="calls per version per round")
    ap.add_argument("--out", type=Path, default=Path("build/bench_rewrite.json"))
    args = ap.parse_args()
    versions = {"before": at_revision(args.against), "now": importlib.import_module("compiler.core.rewrite")}
    results = {}
    for name in args.models.split(","):
        model, x = case(name)
        gm = compiler.lower(model, x)
        space = compiler.analyze(gm, channel_step=8)
        keep = select(space, space.uniform_widths(args.ratio), l1(gm, space))
        ms: dict[str, list[float]] = {v: [] for v in versions}
        for _ in range(args.rounds):
            for v, module in versions.items():
                for _ in range(args.calls):
                    t = time.perf_counter()
                    module.apply(gm, space, keep)
                    ms[v].append((time.perf_counter() - t) * 1000)
        stats = {v: {"median_ms": round(float(np.median(s)), 2), "p10_ms": round(float(np.percentile(s, 10)), 2),
                     "p90_ms": round(float(np.percentile(s, 90)), 2)} for v, s in ms.items()}
        results[name] = {**stats, "now_over_before": round(stats["now"]["median_ms"] / stats["before"]["median_ms"], 3),
                         "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2)}
        print(name, json.dumps(results[name]), file=sys.stderr, flush=True)
    atomic_write_text(args.out, json.dumps({"host": platform.processor() or platform.machine(),
                                            "args": {k: str(v) for k, v in vars(args).items()},
                                            "torch_threads": torch.get_num_threads(), "results": results},
                                           indent=1) + "\n")


if __name__ == "__main__":
    main()
