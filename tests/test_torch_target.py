"""The PyTorch targets: `torch-cpu` everywhere (it carries the GPU target's plumbing through CI),
`cuda` on a GPU (marked `gpu`, skipped with the reason elsewhere)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import compiler
import targets
from cli_models import tiny
from helpers import TINY_MODEL, TINY_SHAPE, latprune
from targets.base import Timing

QUICK = Timing(warmup=2, min_runs=10, min_seconds=0.05, max_rounds=1)


def reference(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(x).numpy()


def test_torch_cpu_runs_and_times_the_eager_model() -> None:
    model, x = tiny(), torch.randn(2, 3, 16, 16)
    tgt = targets.get("torch-cpu", threads=1)
    fp = tgt.fingerprint()
    assert fp["target"] == "torch-cpu" and fp["torch"] == torch.__version__ and fp["precision"] == "fp32"
    art = tgt.build(model, x)
    assert art.info["engine"] == "eager" and not art.files
    np.testing.assert_allclose(tgt.run(art)[0], reference(model, x), rtol=1e-4, atol=1e-5)
    stats = tgt.measure(art, QUICK)
    assert stats.median_ms > 0 and stats.runs >= 10
    with pytest.raises(targets.TargetError, match="precision"):
        targets.get("torch-cpu", precision="int8")


def test_cuda_without_a_gpu_is_a_clear_error_naming_the_way_out() -> None:
    """No `--table T --no-verify` escape as for an unattached ARM board: Inductor needs the GPU to
    generate the engine's kernels, so without one there is nothing to emit."""
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the cuda target is tested by the gpu-marked tests")
    with pytest.raises(targets.TargetUnavailable, match="needs an NVIDIA GPU.*torch-cpu"):
        targets.get("cuda")
    r = latprune("compile", TINY_MODEL, "--input-shape", TINY_SHAPE, "--data", "fashion-mnist", "--target", "cuda")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "needs an NVIDIA GPU" in r.stderr, r.stderr


SHAPE = "1,3,64,64"


@pytest.mark.slow
def test_compile_on_torch_cpu_end_to_end(tmp_path) -> None:
    """Profile a (coarse) table on torch-cpu, search, rewrite, emit the AOTInductor engine, verify
    it; the emitted model.pt2 loads and matches the pruned model with no model code. At 64x64:
    at 16x16 eager PyTorch is all per-op overhead and the smallest model is no faster."""
    rng = np.random.default_rng(0)
    data = tmp_path / "d.npz"
    np.savez(data, x=rng.standard_normal((64, 3, 64, 64)).astype(np.float32), y=rng.integers(0, 10, 64))
    out, table = tmp_path / "out", tmp_path / "t.json"
    r = latprune("profile", TINY_MODEL, "--input-shape", SHAPE, "--target", "torch-cpu", "--out", str(table),
                 "--grid-points", "2", "--variants", "2", "--off-step-variants", "0", "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    r = latprune("compile", TINY_MODEL, "--input-shape", SHAPE, "--data", str(data), "--target", "torch-cpu",
                 "--table", str(table), "--out", str(out), "--budget", "0.9x", "--evaluations", "3", "--confirm", "1",
                 "--tolerance", "1.0", "--safety-margin", "0", "--json", "--quiet", timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    t = json.loads(r.stdout)["targets"]["torch-cpu"]
    assert t["verify"]["outputs_match"] and t["verify"]["measured_ms"] > 0
    # the emitted AOTInductor package is judged against the unpruned model's package, not its eager run,
    # while confirm times candidates and the unpruned model eagerly, as the table was timed
    assert t["verify"]["engine"] == t["verify"]["unpruned_engine"] == "aotinductor"
    assert {c["engine"] for c in t["confirmed"]} == {"eager"}
    engine = out / "torch-cpu" / "model.pt2"
    assert t["files"]["engine"] == str(engine) and engine.is_file()
    assert not [p.name for p in engine.parent.iterdir() if p.name.startswith(".")]  # written atomically
    loaded = torch._inductor.aoti_load_package(str(engine))  # the engine runs without the model's Python code
    pruned = compiler.load(t["files"]["pytorch"])
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        np.testing.assert_allclose(loaded(x.contiguous(memory_format=torch.channels_last)).numpy(), pruned(x).numpy(),
                                   rtol=1e-4, atol=1e-5)
    r = latprune("compile", TINY_MODEL, "--input-shape", TINY_SHAPE, "--data", str(data), "--target", "onnxruntime-cpu",
                 "--precision", "fp16", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "--precision applies to" in r.stderr


@pytest.mark.gpu
def test_cuda_graph_engine_matches_pytorch_and_times_with_cuda_events(tmp_path) -> None:
    model, x = tiny(), torch.randn(1, 3, 16, 16)
    tgt = targets.get("cuda", precision="fp16")
    fp = tgt.fingerprint()
    assert fp["target"] == "cuda" and fp["cuda"] and fp["precision"] == "fp16"
    art = tgt.build(model, x)
    assert art.info["engine"] == "cuda-graph"
    np.testing.assert_allclose(tgt.run(art)[0], reference(model, x), rtol=2e-2, atol=2e-2)
    assert tgt.measure(art, QUICK).median_ms > 0
    emitted = tgt.build(model, x, out_dir=tmp_path)
    assert emitted.info["engine"] == "aotinductor"
    np.testing.assert_allclose(tgt.run(emitted)[0], reference(model, x), rtol=2e-2, atol=2e-2)
    pruned = compiler.prune(model, x, {"_0": 16}, channel_step=8)
    assert tgt.measure(tgt.build(pruned, x), QUICK).median_ms > 0
