"""Shared test helpers: the CLI as a subprocess, realistic BN statistics, the masked-equivalence
check. Tests import from here (and from the model modules nets.py and cli_models.py), never
from each other; fixtures live in conftest.py."""
from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

import compiler
import latency_tables

TOL = 1e-4  # relative to the output scale; a slicing bug gives O(1)
ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = f"{Path(__file__).parent / 'cli_models.py'}:tiny"  # absolute: tests may run in a scratch folder
TINY_SHAPE = "1,3,16,16"
MODEL = "compiler.models:mobilenet_v2_small_fmnist"  # a trained reference model, for end-to-end builds
SHAPE = "1,1,28,28"
SHIPPED = latency_tables.SHIPPED / "onnxruntime-cpu_amd-epyc-avx512_t1.json"  # its shipped ORT table


def latprune(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the CLI as a user does, in a fresh interpreter."""
    return subprocess.run([sys.executable, "-m", "compiler.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)})


def default_sigint() -> None:
    """preexec_fn for a child that a test interrupts: a test run started in the background without
    job control (nohup, `cmd &` in a script) ignores SIGINT, and a child that inherited that
    would never see the test's Ctrl-C (Python installs its KeyboardInterrupt handler only when
    SIGINT is not ignored at start)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def latprune_async(*args: str) -> subprocess.Popen:
    """The CLI started in the background (concurrent builds, interruption)."""
    return subprocess.Popen([sys.executable, "-m", "compiler.cli", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            preexec_fn=default_sigint)


def randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics, so a dropped channel's BN bias would show in the output."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
        if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)) \
                and getattr(m, "affine", False):
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)
    return model.eval()


def random_widths(space: compiler.PruningSpace, rng: np.random.Generator) -> dict[str, int]:
    return {g.id: int(rng.integers(1, g.size + 1)) for g in space.prunable()}


def check_masked_equivalence(model: nn.Module, x: torch.Tensor, widths: dict[str, int] | None,
                             importance: str = "l1", gm=None, space=None) -> torch.nn.Module:
    """Prune and assert the pruned model equals the masked original. Returns the pruned model."""
    gm = gm if gm is not None else compiler.lower(model, x)
    space = space if space is not None else compiler.analyze(gm)
    pruned = compiler.rewrite(gm, space, widths, importance, example_inputs=x)
    keep = compiler.keep_mask(gm, space, widths, importance)
    err = compiler.invariant_error(gm, pruned, space, keep, x)
    assert err < TOL, f"pruned model differs from the masked original: relative error {err:.3g}"
    return pruned


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# A search case: ResNet-20 under the shipped ORT table (resnet20@32 is in it), with a cheap
# deterministic fitness, so that what a search test checks is the search, not a training run.
R20_X = torch.zeros(1, 3, 32, 32)
R20_CALIB = [torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(2)]


@functools.cache
def shipped_table() -> latency_tables.LatencyTable:
    return latency_tables.load(SHIPPED)


def r20() -> nn.Module:
    from compiler.models import resnet20
    torch.manual_seed(0)
    return resnet20().eval()


def kept_l1(m: nn.Module) -> float:
    """Sum of |weights| kept, divided by depth-weighted width: rewards keeping big filters
    and penalises late layers less, so the best Widths is neither uniform nor trivial."""
    convs = [c for c in m.modules() if isinstance(c, torch.nn.Conv2d)]
    return float(sum(c.weight.detach().abs().sum() * (1 + i / len(convs)) for i, c in enumerate(convs)))


def slow_kept_l1(m: nn.Module) -> float:
    """kept_l1, a quarter of a second late: a search that can be interrupted mid-generation."""
    time.sleep(0.25)
    return kept_l1(m)


def search_r20(eval_fn=kept_l1, **kw) -> compiler.SearchResult:
    args = dict(budgets=["0.75x"], max_evaluations=24, population=8, seed=0, progress=False) | kw
    return compiler.search(r20(), R20_X, shipped_table(), R20_CALIB, eval_fn, **args)
