"""Profiling time, side by side: `latprune profile` of this tree against another checkout.

Issue 13 asks that profiling a model stay within 1.5x of what it cost before the table work
(commit 639c2e2). Each tree's own CLI profiles the same models with its own defaults (what a
user pays) into a fresh table and a fresh cache, the trees interleaved over `--reps` rounds
so that a busy spell hits both; wall time, the points and variants measured are recorded per
run, and the ratio of medians per model. Writes JSON atomically after every run.

    git worktree add /tmp/old 639c2e2
    .venv/bin/python tools/bench_profile_time.py --other /tmp/old --out tools/results/bench_profile_time.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from compiler.core.atomic import atomic_write_text  # noqa: E402

CLI = "import sys; from compiler.cli import main; sys.exit(main())"


def short_commit(tree: Path) -> str:
    """The checkout's HEAD, short: which code a timing came from."""
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True).stdout.strip()


def profile_once(tree: Path, model: str, shape: str, work: Path) -> dict:
    """One `latprune profile` run of `tree`'s code, its own defaults, nothing reused."""
    cache = work / "cache"
    cache.mkdir(parents=True)
    out = work / "table.json"
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "PYTHONPATH": str(tree)}
    cmd = [sys.executable, "-c", CLI, "profile", model, "--input-shape", shape, "--out", str(out),
           "--threads", "1", "--quiet", "--json"]
    t0 = time.perf_counter()
    run = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if run.returncode:
        raise SystemExit(f"profile of {model} in {tree} failed ({run.returncode}): {run.stderr[-2000:]}")
    return {"wall_s": round(wall, 1), "result": json.loads(run.stdout)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--other", type=Path, required=True, help="the other checkout (e.g. a worktree at 639c2e2)")
    ap.add_argument("--models", default="compiler.models:resnet20=1,3,32,32",
                    help="factory=shape pairs, ';'-separated")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("build/bench_profile_time.json"))
    args = ap.parse_args()
    trees = {"this": ROOT, "other": args.other.resolve()}
    commits = {k: short_commit(t) for k, t in trees.items()}
    models = [m.split("=") for m in args.models.split(";")]
    runs: list[dict] = []
    for rep in range(args.reps):
        for model, shape in models:
            for label in (("other", "this") if rep % 2 == 0 else ("this", "other")):
                with tempfile.TemporaryDirectory() as tmp:
                    r = profile_once(trees[label], model, shape, Path(tmp))
                runs.append({"model": model, "shape": shape, "tree": label, "commit": commits[label], "rep": rep, **r})
                print(f"{model} {label} ({commits[label]}): {r['wall_s']} s", flush=True)
                atomic_write_text(args.out, json.dumps({
                    "host": runs[0]["result"]["fingerprint"]["device"], "cpus": os.cpu_count(),
                    "commits": commits, "summary": summarize(runs), "runs": runs}, indent=1) + "\n")


def summarize(runs: list[dict]) -> dict[str, dict]:
    """Per model timed in both trees: each tree's wall times (median, min, max) and the ratio of medians."""
    out: dict[str, dict] = {}
    for model in dict.fromkeys(r["model"] for r in runs):
        walls = {t: [r["wall_s"] for r in runs if r["model"] == model and r["tree"] == t] for t in ("this", "other")}
        if all(walls.values()):
            out[model] = {f"{t}_wall_s": {"median": float(np.median(w)), "min": min(w), "max": max(w)}
                          for t, w in walls.items()}
            out[model]["ratio_of_medians"] = round(float(np.median(walls["this"]) / np.median(walls["other"])), 2)
    return out

if __name__ == "__main__":
    main()
