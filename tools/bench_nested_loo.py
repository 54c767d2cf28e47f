"""How much choosing the correction's form flattered its leave-one-out errors, per model of a
table: the 90% error bound (latency_tables.predict.error_bound) from the chosen form's own
leave-one-out errors, as tables made before 2026-11-29 store them, against the whole rule's
(the form chosen again without the left-out variant, as `fit_correction` now reports). Pure
arithmetic on the variants a table stores; nothing is timed. Writes JSON atomically.

    .venv/bin/python tools/bench_nested_loo.py latency_tables/tables/*.json --out tools/results/bench_nested_loo.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import latency_tables  # noqa: E402
from compiler.core.atomic import atomic_write_text  # noqa: E402
from latency_tables.predict import design, error_bound  # noqa: E402
from latency_tables.profile import _FORMS, _rel_err, correction_data, fit_correction  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tables", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=Path("build/bench_nested_loo.json"))
    args = ap.parse_args()
    rows = []
    for path in args.tables:
        table = latency_tables.load(path)
        for record in table.models.values():
            variants = record.get("variants", [])
            if len(variants) < 3:
                continue
            _, x, y = correction_data(record)
            _, form, whole_rule = fit_correction(x, y, table.overhead_ms)
            own = np.array([_rel_err(design(x), y, _FORMS[form], i, table.overhead_ms) for i in range(len(y))])
            rows.append({"table": path.name, "model": record["name"], "variants": len(y), "form": form,
                         "bound_own_form_pct": round(error_bound(own), 3),
                         "bound_whole_rule_pct": round(error_bound(whole_rule), 3)})
            print(f"{path.name} {record['name']}: {rows[-1]['bound_own_form_pct']} -> "
                  f"{rows[-1]['bound_whole_rule_pct']}", file=sys.stderr)
    atomic_write_text(args.out, json.dumps({"models": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
