"""Pass 7: emit a pruned model per target and verify the engine on the device.

Emits the reloadable pruned PyTorch model (`model.latprune`, see compiler.save), ONNX, and the
target's engine (ORT-optimised model, TVM library + params + its tuning database, TensorRT
plan). Verification times the engine where it runs (locally or over TVM RPC) and checks its
outputs against the pruned PyTorch model on the example inputs.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.fx as fx

from targets import Artifact, Target, Timing, settle

from .core.errors import ArtifactError
from .core.export import export_onnx
from .core.serialize import save

OUTPUT_RTOL = {"fp32": 1e-3, "fp16": 2e-2}


def emit(pruned: fx.GraphModule, inputs: tuple[torch.Tensor, ...], target: Target,
         out_dir: Path) -> tuple[Artifact, dict[str, str], str | None]:
    """Write every artifact for `target` under out_dir; returns (the loaded engine, files, why
    the .latprune file was left out or None). A model holding an op registered by the user is
    not saved as .latprune (its reader accepts latprune's built-in ops only); its engines are."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    try:
        save(pruned, out_dir / "model.latprune")
        files["pytorch"], skipped = out_dir / "model.latprune", None
    except ArtifactError as exc:
        skipped = str(exc)
    artifact = target.build(pruned, inputs, out_dir=out_dir)
    files.update(artifact.files)
    if "onnx" not in files:
        export_onnx(pruned, inputs, out_dir / "model.onnx")
        files["onnx"] = out_dir / "model.onnx"
    db = files.get("tuning_db")
    if db is not None and Path(db).is_dir() and Path(db).resolve() != (out_dir / "tuning_db").resolve():
        dest = out_dir / "tuning_db"
        tmp = out_dir / ".tuning_db.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(db, tmp)
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
        files["tuning_db"] = dest
    return artifact, {k: str(v) for k, v in files.items()}, skipped


def verify(pruned: fx.GraphModule, inputs: tuple[torch.Tensor, ...], target: Target, artifact: Artifact,
           budget_ms: float, predicted_ms: float, tolerance: float, timing: Timing,
           untimed: str | None = None, unpruned: tuple[Artifact, float] | None = None) -> dict[str, Any]:
    """Measure the engine and compare it to the budget (plus `tolerance` for noise), to the
    prediction, and its outputs to the pruned PyTorch model's. A measurement over the budget
    is taken again before it fails the build (`settled`); `medians_ms` lists every one. With
    `unpruned` (the unpruned model's engine and the budget as a share of its latency, for a
    budget such as 0.5x) each take times that engine first and the budget judges the ratio:
    host drift between the table's profile and now moves both. With `untimed` (why latency
    means nothing there, e.g. an emulated device) only the outputs."""
    with torch.no_grad():
        ref = pruned(*inputs)
    refs = [t.detach().numpy() for t in (ref if isinstance(ref, (tuple, list)) else (ref,))]
    outs = target.run(artifact)
    err = max(float(np.max(np.abs(o - r)) / max(float(np.max(np.abs(r))), 1e-12)) for o, r in zip(outs, refs))
    rtol = OUTPUT_RTOL.get(target.fingerprint().get("precision", "fp32"), 1e-3)
    check = {"budget_ms": budget_ms, "predicted_ms": predicted_ms, "tolerance": tolerance, "output_max_rel_error": err,
             "output_rtol": rtol, "outputs_match": err <= rtol and len(outs) == len(refs)}
    if untimed:
        return {**check, "not_timed": untimed, "within_budget": None}
    reference, share = unpruned if unpruned is not None else (None, None)
    limit = (budget_ms if share is None else share) * (1 + tolerance)
    kept, taken = settle(target, artifact, limit, timing, reference)
    stats, judged = kept.engine, {"engine": artifact.engine, "within_budget": kept.value <= limit}
    if reference is not None:
        judged |= {"budget_share": share, "measured_share": kept.value, "shares": [t.value for t in taken],
                   "unpruned_measured_ms": kept.reference.median_ms, "unpruned_engine": reference.engine}
    return {**check, "measured_ms": stats.median_ms, "measured_p10_ms": stats.p10_ms, "measured_p90_ms": stats.p90_ms,
            "medians_ms": [t.engine.median_ms for t in taken], "runs": stats.runs,
            "prediction_error_pct": (predicted_ms - stats.median_ms) / stats.median_ms * 100, **judged}
