"""The latency tables shipped in latency_tables/tables/ are valid, complete and usable."""
from __future__ import annotations


import pytest
import torch
import torchvision

import compiler
import latency_tables
from compiler.models import mobilenet_v2_small, reference, resnet20

TABLES = latency_tables.shipped()
MODELS = {"resnet20": resnet20, "resnet18": lambda: torchvision.models.resnet18(weights=None),
          "mobilenet_v2": lambda: torchvision.models.mobilenet_v2(weights=None),
          "mobilenet_v2_small": mobilenet_v2_small,
          "resnet20_fmnist": lambda: reference("resnet20_fmnist", trained=False),
          "mobilenet_v2_small_fmnist": lambda: reference("mobilenet_v2_small_fmnist", trained=False)}


def test_tables_are_shipped() -> None:
    assert TABLES, "no latency table is shipped in latency_tables/tables/"


@pytest.mark.parametrize("path", TABLES, ids=[p.name for p in TABLES])
def test_shipped_table_predicts_its_models(path) -> None:
    table = latency_tables.load(path)  # checksum, schema and version checked
    assert all(not e.missing() for e in table.entries.values())
    # profiled with today's profiler: each block's kernel families read from the engine, and
    # each model's off-step variants measured, so off-step widths are priced and carry an error
    assert all(e.fast is not None for e in table.entries.values())
    assert table.fingerprint["target"] and table.fingerprint["device"]
    for record in table.models.values():
        name, hw_batch = record["name"].split("@")
        model = MODELS[name]().eval()
        x = torch.zeros(record["inputs"][0])
        pred = table.predictor(model, x)
        assert pred.corrected, f"{record['name']}: the table has no end-to-end correction for it"
        assert record["off_step_error_pct"]["n"] >= 6, record["name"]
        # profiled before the errors were kept: the bound is the largest, which inspect shows
        assert pred.error_pct() == record["fit_error_pct"]["loo_max_abs"] == table.summary()["models"][pred.key]["bound_pct"]
        full = pred(None)
        measured = record["variants"][0]["measured"]["median_ms"]
        assert abs(full - measured) / measured < 0.15, (record["name"], full, measured)
        space = compiler.analyze(compiler.lower(model, x), channel_step=table.channel_step)
        assert pred(space.uniform_widths(0.5)) < full
