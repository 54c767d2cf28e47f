"""The channel step, measured: step_of on known staircases, probe_step on a device with one,
the probe-step command on real ONNX Runtime, and --channel-step through profile."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import compiler
import latency_tables
import targets
from cli_models import tiny
from helpers import latprune
from latency_tables.step import probe_step, step_of

COUNTS = list(range(32, 161))


def test_smooth_latency_has_no_step() -> None:
    assert step_of(COUNTS, [1e-3 * c * c for c in COUNTS]) == 1
    assert step_of(COUNTS, [2e-3 * c for c in COUNTS], work_exponent=1) == 1


@pytest.mark.parametrize("block", [8, 16, 32])
def test_a_device_that_pads_to_a_block_shows_it(block: int) -> None:
    padded = [1e-3 * (-(-c // block) * block) ** 2 for c in COUNTS]
    assert step_of(COUNTS, padded) == block


def test_slow_kernels_off_the_block_show_it_through_noise() -> None:
    """ORT's shape: counts off a multiple of 16 run on slower kernels (1.4x), timings +-4%."""
    rng = np.random.default_rng(0)
    ms = [1e-3 * c * c * (1 if c % 16 == 0 else 1.4) * rng.uniform(0.96, 1.04) for c in COUNTS]
    assert step_of(COUNTS, ms) == 16
    assert step_of(COUNTS, [1e-3 * c * c * rng.uniform(0.96, 1.04) for c in COUNTS]) == 1  # noise alone: none


def test_a_step_the_range_cannot_judge_is_not_claimed() -> None:
    padded = [1e-3 * (-(-c // 32) * 32) ** 2 for c in range(32, 97)]  # 32, 64, 96 on it, only 48 and 80 off
    assert step_of(range(32, 97), padded) == 16
    assert step_of(range(32, 161), [1e-3 * (-(-c // 32) * 32) ** 2 for c in range(32, 161)]) == 32


class Staircase(targets.Target):
    """A device whose dense convs pad channels to 16 and whose depthwise convs run counts off a
    multiple of 4 on a kernel 3x slower (as ORT's did here)."""

    name, channel_step = "staircase", 8

    def fingerprint(self) -> dict:
        return {"target": self.name}

    def build(self, model, example_inputs, out_dir=None) -> targets.Artifact:
        return targets.Artifact(self.name, model[0], ())

    def run(self, artifact, inputs=None):
        raise NotImplementedError

    def measure(self, artifact, timing=targets.Timing()) -> targets.LatencyStats:
        conv = artifact.handle
        c = conv.in_channels
        ms = 1e-3 * c * (1 if c % 4 == 0 else 3) if conv.groups > 1 else 1e-4 * (-(-c // 16) * 16) ** 2 * conv.kernel_size[0]
        return targets.LatencyStats(ms, ms, ms, 0.0, 10)


def test_probe_reports_each_block_and_takes_the_coarsest() -> None:
    lines: list[str] = []
    probe = probe_step(Staircase(), range(32, 97), size=4, progress=lines.append)
    assert probe["per_block"] == {"conv3x3": 16, "conv1x1": 16, "depthwise3x3": 4}
    assert probe["measured_step"] == 16 and probe["declared_step"] == 8
    assert [len(v) for v in probe["curves"].values()] == [65] * 3 and len(lines) == 3 * 65


@pytest.mark.slow  # CLI subprocesses
def test_probe_step_command_on_onnxruntime(tmp_path) -> None:
    out = tmp_path / "step.json"
    r = latprune("probe-step", "--channels", "40:44", "--size", "8", "--quiet", "--json", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    probe = json.loads(r.stdout)
    assert json.loads(out.read_text()) == probe
    assert probe["target"] == "onnxruntime-cpu" and probe["declared_step"] == targets.get("onnxruntime-cpu").channel_step
    assert {k: [c for c, _ in v] for k, v in probe["curves"].items()} == {k: [40, 41, 42, 43, 44] for k in
                                                                           ("conv3x3", "conv1x1", "depthwise3x3")}
    assert all(ms > 0 for v in probe["curves"].values() for _, ms in v) and probe["measured_step"] in (1, 2)
    for bad, phrase in ((["--channels", "9:3"], "FIRST < LAST"), (["--channels", "a"], "FIRST:LAST"),
                        (["--channel-step", "12"], "not a power of two")):
        r = latprune("probe-step", *bad)
        assert r.returncode == 2 and phrase in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_a_given_channel_step_is_the_tables_and_the_searchs(tmp_path) -> None:
    tgt = targets.get("onnxruntime-cpu", threads=1, channel_step=4)
    assert tgt.channel_step == 4 and tgt.declared_step == targets.get("onnxruntime-cpu").channel_step
    out, x = tmp_path / "t.json", torch.randn(1, 3, 16, 16)
    table = latency_tables.profile(tiny(), x, tgt, out=out, grid_points=2, variants=0, off_step_variants=0,
                                   progress=False)
    assert table.channel_step == 4
    space = compiler.analyze(compiler.lower(tiny(), x), channel_step=table.channel_step)
    assert all(v % 4 == 0 or v == g.size for g in space.prunable() for v in g.allowed())
    with pytest.raises(compiler.BadInputError, match="profiled at channel step 4 .* profile into another file"):
        latency_tables.profile(tiny(), x, targets.get("onnxruntime-cpu", threads=1), out=out, grid_points=2,
                               variants=0, off_step_variants=0, progress=False)
