"""Which channels, and how repaired: the selection criteria and the least-squares refit, side by side.

On the Fashion-MNIST reference models (or a held-out family), at each budget (a fraction of the unpruned model's
*measured* ORT latency, 1 thread), two width plans are fixed first:
- uniform: the largest uniform width whose measured latency meets the budget (bisected);
- searched: latprune's search (l1 importance, screened fitness) under the shipped table.
Every criterion (l1, l2, bn_gamma, thinet, lasso; `slimming@L`: bn_gamma on the model after
`--sparsity-epochs` of Network Slimming's sparsity training at penalty L) then selects channels
for the *same* widths, with calibration batches drawn by each seed, and is scored on the Fashion-MNIST test split:
after AdaBN only, and after the least-squares refit then AdaBN. For each seed in
`--finetune-seeds` the same short fine-tune as tools/bench_search.py (cross-entropy,
`--finetune-steps`, that seed's batch order) follows each.
Wall seconds of selection and refit are recorded per run. Writes JSON and a PNG (atomically).

    .venv/bin/python tools/bench_methods.py --models resnet20_fmnist --torch-threads 1 \
        --out tools/results/bench_methods_resnet20_fmnist.json   (one process per model, both at once)

The shipped results ran slimming@0.3 (it zeroed every scale) and, for MobileNetV2-small, a
second run `--seeds 1 --criteria slimming@0.003,slimming@0.03 --plans-from` the first one's JSON
(bench_methods_slimming_*.json), with the same widths. They fine-tuned seed 0 only; seeds 1 and 2
were fine-tuned by a later run, `--first-seed 1 --seeds 2 --criteria l1 --plans-from`
the first (bench_methods_*_ft12.json), the other criteria by `--criteria l2,bn_gamma,thinet,lasso,slimming@0.03`
(`*_ft12b.json`); `--merge` puts the runs of a model into one summary (`*_merged.json`). A family held out from development (tools/heldout_fmnist.py,
trained on first use) runs with `--models shufflenet_v2_x0_5_fmnist --plans uniform`.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import compiler  # noqa: E402
import latency_tables  # noqa: E402
import targets  # noqa: E402
from bench_search import Meter, batches, finetune, tune_to_budget  # noqa: E402
from heldout_fmnist import bench_model  # noqa: E402
from compiler.core.atomic import atomic_path, atomic_write_text  # noqa: E402
from compiler.core.importance import scores, select  # noqa: E402
from compiler.core.reconstruct import reconstruct  # noqa: E402
from compiler.core.rewrite import apply  # noqa: E402
from compiler.data import fashion_mnist, split_train  # noqa: E402
from compiler.slimming import scale_summary, sparsity_train  # noqa: E402

SHIPPED = latency_tables.SHIPPED / "onnxruntime-cpu_amd-epyc-avx512_t1.json"
CRITERIA = "l1,l2,bn_gamma,thinet,lasso,slimming@0.03"


def widths_plans(model: torch.nn.Module, gm: Any, space: Any, x: torch.Tensor, meter: Meter,
                 fraction: float, val: Any, calib: Any, which: list[str]) -> dict[str, dict[str, Any]]:
    """The uniform widths that meet the measured budget and (when asked) the widths the search
    picks under the shipped table, which only knows the reference models' blocks."""
    plans: dict[str, dict[str, Any]] = {}
    _, meas = tune_to_budget(lambda r: compiler.rewrite(gm, space, space.uniform_widths(r)), meter, fraction)
    plans["uniform"] = {"widths": space.uniform_widths(meas["knob"]), **meas}
    if "searched" not in which:
        return plans
    found = compiler.search(model, x, latency_tables.load(SHIPPED), calib, val, budgets=[f"{fraction}x"],
                            screen_images=256, max_evaluations=60, seed=0, progress=False)
    w = found.best.widths
    plans["searched"] = {"widths": w, "predicted_ms": found.best.latency_ms,
                         **meter(compiler.rewrite(gm, space, w))}
    return plans


def calib_batches(x: torch.Tensor, y: torch.Tensor, seed: int, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`n` random training batches of 64: a seed's calibration set (selection, refit, AdaBN)."""
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:64 * n].split(64)
    return [(x[i], y[i]) for i in idx]


def run_one(gm: Any, space: Any, widths: dict[str, int], criterion: str, calib: Any, test: Any,
            train: tuple[torch.Tensor, torch.Tensor] | None, steps: int, seed: int) -> dict[str, Any]:
    """Select, AdaBN / refit + AdaBN, test top-1 (and fine-tuned with `seed`, when `train` is given)."""
    t0 = time.perf_counter()
    keep = select(space, widths, scores(gm, space, criterion, calib))
    select_s = time.perf_counter() - t0
    plain = compiler.adabn(apply(gm, space, keep), calib)
    refit = apply(gm, space, keep)
    t0 = time.perf_counter()
    layers = reconstruct(gm, refit, space, keep, calib)
    refit_s = time.perf_counter() - t0
    compiler.adabn(refit, calib)
    top1 = compiler.top1(test)
    row = {"select_s": round(select_s, 3), "refit_s": round(refit_s, 3), "adabn": top1(plain), "refit": top1(refit),
           "refitted_layers": sum(bool(r.get("refitted")) for r in layers), "refit_candidates": len(layers)}
    if train is not None:
        row["adabn_finetuned"] = top1(finetune(plain, *train, steps, seed=seed))
        row["refit_finetuned"] = top1(finetune(refit, *train, steps, seed=seed))
    return row


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard error over seeds per (model, budget, plan, criterion)."""
    out = []
    keys = sorted({(r["model"], r["budget"], r["plan"], r["criterion"]) for r in rows})
    for k in keys:
        rs = [r for r in rows if (r["model"], r["budget"], r["plan"], r["criterion"]) == k]
        s = dict(zip(("model", "budget", "plan", "criterion"), k))
        for m in ("adabn", "refit", "adabn_finetuned", "refit_finetuned"):
            v = np.array([r[m] for r in rs if m in r])
            if len(v):
                s[m] = {"mean": float(v.mean()), "se": float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else None,
                        "n": len(v)}
        s["select_s_median"] = float(np.median([r["select_s"] for r in rs]))
        s["refit_s_median"] = float(np.median([r["refit_s"] for r in rs]))
        out.append(s)
    return out


def merged(paths: list[Path]) -> dict[str, Any]:
    """The rows of several runs (e.g. seeds 1-2 fine-tuned by a later run), one per (model,
    budget, plan, criterion, seed): a later file adds its fields to an earlier file's row. Where
    both scored the same thing the values must agree (the runs are deterministic); the count of
    such checks is recorded."""
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    checked = 0
    for path in paths:
        for r in json.loads(path.read_text())["rows"]:
            key = (r["model"], r["budget"], r["plan"], r["criterion"], r["seed"])
            old = rows.setdefault(key, {})
            for m in ("adabn", "refit", "adabn_finetuned", "refit_finetuned"):
                if m in old and m in r:
                    if old[m] != r[m]:
                        raise SystemExit(f"{path}: {key} {m} = {r[m]}, another run gave {old[m]}")
                    checked += 1
            old.update(r)
    return {"merged": [str(p) for p in paths], "checked_equal": checked, "rows": list(rows.values())}


def plot(summary: list[dict[str, Any]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cases = sorted({(s["model"], s["budget"], s["plan"]) for s in summary})
    fig, axes = plt.subplots(1, len(cases), figsize=(3.2 * len(cases), 3.6), sharey=True, squeeze=False)
    for ax, case in zip(axes[0], cases):
        ss = [s for s in summary if (s["model"], s["budget"], s["plan"]) == case]
        pos = np.arange(len(ss))
        for off, m, label in ((-0.2, "adabn", "AdaBN"), (0.2, "refit", "refit + AdaBN")):
            ax.bar(pos + off, [s[m]["mean"] for s in ss], 0.4, yerr=[s[m]["se"] or 0 for s in ss], label=label)
        ax.set_xticks(pos, [s["criterion"] for s in ss], rotation=45)
        ax.set_title(f"{case[0].split('_fmnist')[0]}\n{case[1]} {case[2]}", fontsize=8)
    axes[0][0].set_ylabel("test top-1")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet20_fmnist,mobilenet_v2_small_fmnist")
    ap.add_argument("--budgets", default="0.5,0.35")
    ap.add_argument("--seeds", type=int, default=3, help="how many seeds, from --first-seed on")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--finetune-seeds", default="0,1,2", help="the seeds whose models are also fine-tuned")
    ap.add_argument("--calib-batches", type=int, default=8)
    ap.add_argument("--test-images", type=int, default=2000)
    ap.add_argument("--finetune-steps", type=int, default=60)
    ap.add_argument("--criteria", default=CRITERIA)
    ap.add_argument("--sparsity-epochs", type=float, default=0.25)
    ap.add_argument("--plans", default="uniform,searched", help="width plans; held-out models: uniform (the "
                    "shipped table has no blocks of theirs to search with)")
    ap.add_argument("--plans-from", type=Path, help="reuse the width plans (and their measurements) of an earlier run")
    ap.add_argument("--torch-threads", type=int, default=2)
    ap.add_argument("--merge", type=Path, nargs="+", help="only summarise the rows of these result files into --out")
    ap.add_argument("--out", type=Path, default=Path("tools/results/bench_methods.json"))
    args = ap.parse_args()
    if args.merge:
        result = merged(args.merge)
        result["summary"] = summarise(result["rows"])
        atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
        plot(result["summary"], args.out.with_suffix(".png"))
        return
    torch.set_num_threads(args.torch_threads)
    t_start = time.perf_counter()
    (xtr, ytr), (xval, yval) = split_train()
    xte, yte = fashion_mnist("test")
    test, val = batches(xte, yte, args.test_images), batches(xval, yval, 1000)
    x = torch.zeros(1, 1, 28, 28)
    target = targets.get("onnxruntime-cpu", threads=1)
    result: dict[str, Any] = {"host": platform.processor() or platform.machine(), "torch": torch.__version__,
                              "args": {k: str(v) for k, v in vars(args).items()}, "plans": {}, "rows": []}
    for name in args.models.split(","):
        model = bench_model(name)
        gm = compiler.lower(model, x)
        space = compiler.analyze(gm, channel_step=target.channel_step)
        meter = Meter(target, model, x)
        result.setdefault("unpruned_test_top1", {})[name] = compiler.top1(test)(model)
        graphs = {c: gm for c in args.criteria.split(",")}
        for c in graphs:
            if c.startswith("slimming@"):
                t0 = time.perf_counter()
                graphs[c] = sparsity_train(gm, batches(xtr, ytr, len(xtr), 64), args.sparsity_epochs,
                                           float(c.split("@")[1]), progress=False)
                result.setdefault("sparsity", {})[f"{name} {c}"] = {
                    "seconds": round(time.perf_counter() - t0, 1), "test_top1": compiler.top1(test)(graphs[c]),
                    **scale_summary(graphs[c])}
        for fraction in (float(b) for b in args.budgets.split(",")):
            budget = f"{fraction}x"
            plans = (json.loads(args.plans_from.read_text())["plans"][f"{name} {budget}"] if args.plans_from else
                     widths_plans(model, gm, space, x, meter, fraction, val, calib_batches(xtr, ytr, 0, args.calib_batches),
                                  args.plans.split(",")))
            result["plans"][f"{name} {budget}"] = plans
            for plan, p in plans.items():
                for seed in range(args.first_seed, args.first_seed + args.seeds):
                    calib = calib_batches(xtr, ytr, seed, args.calib_batches)
                    for criterion, graph in graphs.items():
                        row = {"model": name, "budget": budget, "plan": plan, "criterion": criterion, "seed": seed,
                               **run_one(graph, space, p["widths"], criterion.split("@")[0].replace("slimming", "bn_gamma"),
                                         calib, test,
                                         (xtr, ytr) if str(seed) in args.finetune_seeds.split(",") else None,
                                         args.finetune_steps, seed)}
                        result["rows"].append(row)
                        print(json.dumps(row), file=sys.stderr, flush=True)
    target.close()
    result["summary"] = summarise(result["rows"])
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    plot(result["summary"], args.out.with_suffix(".png"))
    print(json.dumps(result["summary"], indent=1))


if __name__ == "__main__":
    main()
