"""The `latprune` command: profile | inspect (compile arrives with the search).

Errors a user can cause print one line naming the cause and the fix, and exit with the
error's code (2 bad input, 3 infeasible budget, 4 verification failed); Ctrl-C exits 130
and leaves no half-written file (every artifact is written atomically).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .errors import BadInputError, LatpruneError


def _target_options(args: argparse.Namespace) -> dict[str, Any]:
    opts: dict[str, Any] = {"threads": args.threads}
    if args.target.startswith("tvm"):
        opts["trials"] = args.trials
        if args.rpc:
            opts["rpc"] = args.rpc
        if args.rpc_tracker:
            opts["rpc_tracker"], opts["rpc_key"] = args.rpc_tracker, args.rpc_key
    elif args.rpc or args.rpc_tracker:
        raise BadInputError(f"--rpc/--rpc-tracker only apply to TVM targets, not {args.target}")
    if args.target == "tensorrt":
        opts = {"precision": args.precision}
    return opts


def _add_target_args(p: argparse.ArgumentParser) -> None:
    import targets

    p.add_argument("--target", default="onnxruntime-cpu", choices=targets.NAMES)
    p.add_argument("--threads", type=int, default=1, help="intra-op threads the engine runs with (default 1)")
    p.add_argument("--trials", type=int, default=16, help="meta-schedule trials per block (TVM targets)")
    p.add_argument("--rpc", metavar="HOST:PORT", help="time on a TVM RPC server (TVM targets)")
    p.add_argument("--rpc-tracker", metavar="HOST:PORT", help="time on a free device of --rpc-key from this tracker")
    p.add_argument("--rpc-key", default="latprune", help="device key on the tracker")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16"], help="TensorRT precision")


def cmd_profile(args: argparse.Namespace) -> int:
    import latency_tables
    import targets

    from .modelspec import example_inputs, load_model

    model = load_model(args.model)
    inputs = example_inputs(args.input_shape)
    target = targets.get(args.target, **_target_options(args))
    try:
        table = latency_tables.profile(model, inputs, target, out=args.out, grid_points=args.grid_points,
                                       variants=args.variants, seed=args.seed, name=args.name or args.model,
                                       force=args.force, progress=not args.quiet, save_every_s=args.save_every)
    finally:
        target.close()
    s = table.last_profile
    report = {"table": str(args.out), "measured_points": s.measured_points, "reused_points": s.reused_points,
              "measured_variants": s.measured_variants, "seconds": round(s.seconds, 1),
              "entries": len(table.entries), "fingerprint": table.fingerprint}
    print(json.dumps(report, indent=1) if args.json else
          f"profiled {args.model} on {args.target}: {s.measured_points} points measured, {s.reused_points} reused, "
          f"{s.measured_variants} end-to-end variants, {s.seconds:.0f} s -> {args.out}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    import latency_tables

    table = latency_tables.load(args.table)
    s = table.summary()
    if args.json:
        print(json.dumps(s, indent=1))
        return 0
    print(f"latency table {args.table}")
    print("  fingerprint: " + ", ".join(f"{k}={v}" for k, v in s["fingerprint"].items()))
    print(f"  channel step: {s['step']}   per-call overhead subtracted: {s['overhead_ms']:.4f} ms")
    print(f"  timing: {json.dumps(s['timing']['blocks'])}")
    print(f"  entries: {s['entries']} blocks ({s['complete_entries']} complete), {s['points']} measured points")
    for key, grid in list(s["grids"].items())[: args.limit]:
        d = json.loads(key)
        op = d["ops"][0]["op"] if isinstance(d["ops"][0], dict) else d["ops"][0]
        print(f"    {d['kind']:6s} {str(op)[:48]:48s} in={d['inputs'][0]} grid={grid}")
    if len(s["grids"]) > args.limit:
        print(f"    ... {len(s['grids']) - args.limit} more (--limit)")
    for key, m in s["models"].items():
        print(f"  model {m['name']} [{key}]: {m['variants']} measured variants, correction {m.get('form')} "
              f"{m.get('coef')}, leave-one-out error median {m.get('loo_median_abs')}% max {m.get('loo_max_abs')}%")
    return 0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="latprune", description="Hardware-aware, latency-constrained channel pruning.")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("profile", help="measure a model's blocks on a target into a latency table")
    p.add_argument("model", help="package.module:factory, file.py:factory, or a torch.export.save .pt2 file")
    p.add_argument("--input-shape", action="append", required=True, help="e.g. 1,3,224,224 (repeat per input)")
    _add_target_args(p)
    p.add_argument("--out", type=Path, required=True, help="table file (extended and resumed if it exists)")
    p.add_argument("--grid-points", type=int, default=6, help="on-step grid points per channel dim")
    p.add_argument("--variants", type=int, default=12, help="random variants measured end to end for the correction")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", help="model name recorded in the table")
    p.add_argument("--force", action="store_true", help="use/overwrite a table of another fingerprint")
    p.add_argument("--save-every", type=float, default=5.0, metavar="SECONDS",
                   help="checkpoint the table this often (an interrupted profile resumes from it)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(fn=cmd_profile)

    p = sub.add_parser("inspect", help="summarise a latency table")
    p.add_argument("table", type=Path)
    p.add_argument("--limit", type=int, default=20, help="blocks to list")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_inspect)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except LatpruneError as exc:
        print(f"latprune: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("latprune: interrupted; finished work is saved and the next run resumes from it", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
