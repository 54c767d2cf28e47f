"""Prune every torchvision classification model to ~50% of each group; write JSON.

Per model: traced / analysed / pruned / masked-equivalence invariant holds / exported to
ONNX and matching in ONNX Runtime, with the reason for each failure and the stage times.
Each model runs in its own subprocess (with a time limit), so one crash costs one row.

    python tools/coverage_zoo.py --out build/coverage_zoo.json [--models resnet18,vgg11] [--no-onnx]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIZES = {"vit": 224, "maxvit": 224}  # fixed-resolution models; the rest run at 96x96


def run_one(name: str, onnx: bool) -> dict:
    """Runs in a child process: every stage of the pass on one model."""
    import torch
    import torchvision

    import compiler
    from compiler.core.export import onnx_max_error

    row: dict = {"model": name}
    t = time.perf_counter()
    size = next((s for k, s in SIZES.items() if name.startswith(k)), 96)
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval()
    with torch.no_grad():  # non-trivial BN statistics, so a wrong slice shows in the output
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
        for pname, p in model.named_parameters():  # ConvNeXt's 1e-6 init would hide its blocks
            if pname.endswith("layer_scale"):
                p.uniform_(0.5, 1.5)
    x = torch.randn(1, 3, size, size)
    row.update(input=list(x.shape), params=sum(p.numel() for p in model.parameters()))
    stage = "trace"
    try:
        gm = compiler.lower(model, x)
        row["traced"] = True
        stage = "analyze"
        t0 = time.perf_counter()
        space = compiler.analyze(gm)
        row.update(analyzed=True, analyze_s=round(time.perf_counter() - t0, 3), **space.summary())
        if not space.prunable():
            raise RuntimeError("no prunable group")
        stage = "prune"
        widths = space.uniform_widths(0.5)
        t0 = time.perf_counter()
        pruned = compiler.rewrite(gm, space, widths, example_inputs=x)
        row.update(pruned=True, rewrite_s=round(time.perf_counter() - t0, 3),
                   pruned_params=sum(p.numel() for p in pruned.parameters()))
        stage = "invariant"
        keep = compiler.keep_mask(gm, space, widths)
        err = compiler.invariant_error(gm, pruned, space, keep, x)
        row.update(invariant_error=err, invariant_holds=err < 1e-4)
        if onnx:
            stage = "onnx"
            with tempfile.TemporaryDirectory() as d:
                compiler.export_onnx(pruned, x, Path(d) / "m.onnx")
                onnx_err = onnx_max_error(Path(d) / "m.onnx", pruned, x)
            row.update(onnx_exported=True, onnx_error=onnx_err, onnx_matches=onnx_err < 1e-3)
    except Exception as exc:  # the row records why; the zoo goes on
        row["failed_stage"] = stage
        row["reason"] = f"{type(exc).__name__}: {str(exc)[:600]}"
    row["total_s"] = round(time.perf_counter() - t, 2)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="build/coverage_zoo.json")
    ap.add_argument("--models", help="comma-separated names (default: every classification model)")
    ap.add_argument("--no-onnx", action="store_true", help="skip the ONNX export stage")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per model")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_one(args.child, not args.no_onnx)))
        return

    import torchvision

    names = args.models.split(",") if args.models else torchvision.models.list_models(module=torchvision.models)
    rows = []
    for name in tqdm(names, desc="coverage zoo", unit="model"):
        cmd = [sys.executable, __file__, "--child", name] + (["--no-onnx"] if args.no_onnx else [])
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            lines = res.stdout.strip().splitlines()
            row = json.loads(lines[-1]) if res.returncode == 0 and lines else {
                "model": name, "failed_stage": "crash",
                "reason": f"exit {res.returncode}: {res.stderr.strip().splitlines()[-1] if res.stderr.strip() else ''}"}
        except subprocess.TimeoutExpired:
            row = {"model": name, "failed_stage": "timeout", "reason": f"over {args.timeout} s"}
        rows.append(row)
        write(args.out, rows, args.no_onnx, done=len(rows) == len(names))
        tqdm.write(f"{name:24s} " + ("ok" if row.get("invariant_holds") and (args.no_onnx or row.get("onnx_matches"))
                                    else f"FAIL {row.get('failed_stage', 'invariant')}: {row.get('reason', row.get('invariant_error'))}"))
    print(json.dumps(write(args.out, rows, args.no_onnx, done=True)))


def write(out: str, rows: list[dict], no_onnx: bool, done: bool) -> dict:
    """Rewrite the JSON after every model, so an interrupted zoo still leaves its rows."""
    from compiler.core.atomic import atomic_write_text

    def count(key: str) -> int:
        return sum(1 for r in rows if r.get(key))

    summary = {"complete": done, "models": len(rows), "traced": count("traced"), "pruned": count("pruned"),
               "invariant_holds": count("invariant_holds")}
    if not no_onnx:
        summary.update(onnx_exported=count("onnx_exported"), onnx_matches=count("onnx_matches"))
    atomic_write_text(out, json.dumps({"summary": summary, "results": rows}, indent=1))
    return summary


if __name__ == "__main__":
    main()
