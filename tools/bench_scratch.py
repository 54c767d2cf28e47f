"""Inherited weights vs training from scratch ("Rethinking the value of network pruning", Liu et al. 2019).

For each width plan in a tools/bench_methods.py result (same model, budget and widths), the
pruned architecture is re-initialised (every module's reset_parameters) and trained with the
reference models' own recipe (tools/train_reference.py: SGD + Nesterov, one-cycle LR, shifts
and flips) for the same total epochs the inherited model has seen: the original's training
epochs plus the bench's fine-tune steps (Scratch-E). Its Fashion-MNIST test top-1, on the same
test images, stands beside the inherited numbers of that result (l1 selection, seed 0): after
refit + AdaBN, and after refit + the short fine-tune. Wall seconds of each training are kept.

    .venv/bin/python tools/bench_scratch.py --methods tools/results/bench_methods_resnet20_fmnist.json \
        --plans searched --out tools/results/bench_scratch_resnet20_fmnist.json
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import compiler  # noqa: E402
from bench_search import batches  # noqa: E402
from compiler.core.atomic import atomic_write_text  # noqa: E402
from compiler.data import fashion_mnist, split_train  # noqa: E402
from compiler.models import reference  # noqa: E402
from compiler.models import CHECKPOINTS  # noqa: E402
from train_reference import train  # noqa: E402


def architecture(name: str, widths: dict[str, int]) -> torch.nn.Module:
    """The pruned architecture of `name` at `widths`, every parameter and BN statistic reset."""
    model = reference(name)
    x = torch.randn(1, 1, 28, 28)
    gm = compiler.lower(model, x)
    space = compiler.analyze(gm, channel_step=1)
    pruned = compiler.rewrite(gm, space, widths)
    for m in pruned.modules():
        if m is not pruned and hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return pruned


def inherited(methods: dict[str, Any], model: str, budget: str, plan: str) -> dict[str, Any]:
    row = next(r for r in methods["rows"] if (r["model"], r["budget"], r["plan"], r["criterion"], r["seed"])
               == (model, budget, plan, "l1", 0))
    return {k: row.get(k) for k in ("adabn", "refit", "adabn_finetuned", "refit_finetuned")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", type=Path, required=True, help="a tools/bench_methods.py result")
    ap.add_argument("--plans", default="searched", help="which of its width plans (uniform,searched)")
    ap.add_argument("--budgets", default=None, help="which of its budgets (default: all)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--torch-threads", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    methods = json.loads(args.methods.read_text())
    (xtr, ytr), _ = split_train()
    xte, yte = fashion_mnist("test")
    test = compiler.top1(batches(xte, yte, int(methods["args"]["test_images"])))
    ft_steps = int(methods["args"]["finetune_steps"])
    rows = []
    for case, plans in methods["plans"].items():
        model, budget = case.split(" ")
        if args.budgets and budget.rstrip("x") not in args.budgets.split(","):
            continue
        meta = torch.load(CHECKPOINTS / f"{model}.pt", weights_only=True)["meta"]
        steps = meta["epochs"] * (len(xtr) // args.batch) + ft_steps
        for plan in args.plans.split(","):
            torch.manual_seed(args.seed)
            net = architecture(model, plans[plan]["widths"])
            seconds = train(net, xtr, ytr, steps, args.batch, args.lr, args.seed, f"scratch {model} {budget} {plan}")
            rows.append({"model": model, "budget": budget, "plan": plan, "scratch_steps": steps,
                         "scratch_epochs": round(steps / (len(xtr) // args.batch), 3), "scratch_s": round(seconds, 1),
                         "scratch": test(net.eval()), "inherited": inherited(methods, model, budget, plan),
                         "unpruned": methods["unpruned_test_top1"][model]})
            print(json.dumps(rows[-1]), flush=True)
    atomic_write_text(args.out, json.dumps({"host": platform.machine(), "torch": torch.__version__,
                                            "args": {k: str(v) for k, v in vars(args).items()},
                                            "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
