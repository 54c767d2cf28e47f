"""Profiling on the real embedded target (ONNX Runtime), prediction, and the block view of a graph."""
from __future__ import annotations

import itertools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

import compiler
import latency_tables
import targets
from cli_models import small_fmnist, tiny
from helpers import latprune
from compiler.core.errors import BadInputError
from compiler.models import resnet20
from latency_tables.blocks import PlaceCounter, extract
from latency_tables.grid import step_class
from latency_tables.predict import NOISY_PCT, error_bound, noise_warning
from latency_tables.profile import _paced, contradiction, fit_model
from latency_tables.table import LatencyTable, TableError
from targets.base import Artifact, Target, Timing

QUICK_BLOCK = Timing(warmup=3, min_runs=10, min_seconds=0.05, max_rounds=2)
QUICK_MODEL = Timing(warmup=3, min_runs=20, min_seconds=0.2, max_rounds=2)


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    x = torch.randn(1, 3, 16, 16)
    tgt = targets.get("onnxruntime-cpu", threads=1)
    path = tmp_path_factory.mktemp("tables") / "ort.json"
    table = latency_tables.profile(tiny(), x, tgt, out=path, grid_points=3, variants=1, off_step_variants=2,
                                   progress=False, block_timing=QUICK_BLOCK, model_timing=QUICK_MODEL)
    return table, path, x, tgt


def test_profile_measures_every_block_and_fits_a_correction(profiled) -> None:
    table, path, x, tgt = profiled
    assert table.last_profile.measured_points > 0
    assert all(not e.missing() for e in table.entries.values())
    assert len(table.entries) >= 3  # two conv blocks (conv+BN+ReLU fused), pool, linear
    model = next(iter(table.models.values()))
    assert len(model["variants"]) == 3 and model["correction"]["form"] in ("scale", "scale+offset",
                                                                          "scale+weights+offset")
    # the unpruned model, a random one and the smallest reachable one; off-step ones check the
    # correction without entering it
    assert len(model["off_step"]) == 2 and model["off_step_error_pct"]["n"] == 2
    assert 0 <= model["off_step_error_pct"]["median_abs"] <= model["off_step_error_pct"]["max_abs"]
    assert latency_tables.load(path).summary()["points"] == table.summary()["points"]


def test_prediction_of_a_width_the_correction_never_saw_is_close_to_its_measurement(profiled) -> None:
    """The unpruned, a random and the smallest model were fitted on; the width checked here was
    not: the first unfitted one of the 16 on-step combinations, beside the smallest, where the
    empty engine run weighs most (a scale through the origin, before the scale-only form took
    that run as its offset, put it 17-36% low against the unpruned model; CI saw 36%).
    A 30 us model on a shared host drifts by tens of percent between the profile and now (CI saw
    1.44x), so the claim is checked side by side: the held-out width against the unpruned model,
    both timed now in turns (Target.measure_beside, as the profile times its variants), the middle
    of 3 ratios, must keep the time ratio the table predicts. Timed one after the other, a busy
    spell landed in one of them (CI once timed the held-out width at 0.035, 0.051 and 0.051 ms).
    The absolute prediction is only held to 2x here; tools/bench_latency_model.py measures it on
    real models."""
    table, _, x, tgt = profiled
    model = tiny()
    gm = compiler.lower(model, x)
    space = compiler.analyze(gm, channel_step=tgt.channel_step)
    pred = table.predictor(model, x)
    fitted = [v["features"] for m in table.models.values() for v in m["variants"]]
    groups = space.prunable()
    held_out = next(w for combo in itertools.product(*(g.allowed() for g in groups))
                    if pred.features(w := dict(zip((g.id for g in groups), combo))).round(6).tolist() not in fitted)
    full = space.uniform_widths(1.0)
    engines = {k: tgt.build(compiler.rewrite(gm, space, w, example_inputs=x), x) for k, w in
               (("held_out", held_out), ("full", full))}
    pairs = sorted((tgt.measure_beside(engines["held_out"], engines["full"], QUICK_MODEL) for _ in range(3)),
                   key=lambda p: p[1].median_ms / p[0].median_ms)
    full_stats, held_stats = pairs[1]  # the middle ratio of 3
    measured = {"held_out": held_stats.median_ms, "full": full_stats.median_ms}
    predicted = {"held_out": pred(held_out), "full": pred(full)}
    ratio_error = (predicted["held_out"] / predicted["full"]) / (measured["held_out"] / measured["full"]) - 1
    assert abs(ratio_error) < 0.3, (predicted, measured)
    assert 0.5 < predicted["held_out"] / measured["held_out"] < 2, (predicted, measured)
    assert table.predict(model, x, space.uniform_widths(0.25)) < table.predict(model, x)  # fewer channels, less time


def test_resumed_profile_reuses_every_point(profiled) -> None:
    table, path, x, tgt = profiled
    again = latency_tables.profile(tiny(), x, tgt, out=path, grid_points=3, variants=1, off_step_variants=2,
                                   progress=False, block_timing=QUICK_BLOCK, model_timing=QUICK_MODEL)
    assert again.last_profile.measured_points == 0 and again.last_profile.measured_variants == 0
    assert again.last_profile.reused_points == table.summary()["points"]


def test_profile_reads_the_engines_kernel_choice_and_times_its_fallback_kernels(profiled) -> None:
    """The second conv's input channels leave ONNX Runtime's blocked kernels at counts that are
    not multiples of 4: the profile reads that from the engine at its probes, times a grid on
    the plain kernels, and a variant at such a count is priced there, outside the correction."""
    table, _, x, tgt = profiled
    gm = compiler.lower(tiny(), x)
    blocks, _ = extract(gm, compiler.analyze(gm, channel_step=tgt.channel_step), table.fuses)
    labelled = {k: e for k, e in table.entries.items() if e.fast is not None}
    assert set(labelled) == {k for k, e in table.entries.items() if any(len(g) > 1 for g in e.grid)}
    fallback = {k: e for k, e in labelled.items() if e.slow_grid}
    assert fallback and all(not e.missing() for e in fallback.values())
    for key, e in fallback.items():
        mid = [g[len(g) // 2] for g in e.grid]
        home = tgt.kernel_family(*blocks[key].module(mid))
        i = next(j for j, f in enumerate(e.fast) if len(f) < 6)  # a var with a class off the fast kernels
        for count in range(mid[i] - 1, mid[i] - tgt.channel_step, -1):
            point = mid[:i] + [count] + mid[i + 1:]
            fast = step_class(count, tgt.channel_step) in e.fast[i]
            assert (tgt.kernel_family(*blocks[key].module(point)) == home) == fast, (point, e.fast)
    pred = latency_tables.Predictor(table, gm, x, space=compiler.analyze(gm, channel_step=1))
    odd = {g.id: g.size - 1 for g in pred.space.prunable()}  # 31 channels: off the blocked kernels
    assert pred.features(odd)[3] > 0 and pred.features(None)[3] == 0


def test_table_refuses_another_target_and_unknown_blocks(profiled) -> None:
    table, _, x, tgt = profiled
    with pytest.raises(TableError, match="threads: table has 1, target has 2"):
        table.predictor(tiny(), x, fingerprint=targets.get("onnxruntime-cpu", threads=2).fingerprint())
    with pytest.raises(TableError, match="no entry"):
        table.predict(tiny(), torch.randn(1, 3, 24, 24))  # other spatial size: other blocks
    with pytest.raises(TableError, match="profile"):
        latency_tables.profile(tiny(), x, targets.get("onnxruntime-cpu", threads=2), out=profiled[1],
                               progress=False)


def test_blocks_fuse_conv_bn_activation() -> None:
    x = torch.randn(1, 3, 16, 16)
    gm = compiler.lower(tiny(), x)
    blocks, uses = extract(gm, compiler.analyze(gm))
    kinds = sorted(json.loads(k)["kind"] for k in blocks)
    assert kinds.count("conv") == 1 and "linear" in kinds  # both convs are one block type...
    conv = next(k for k in blocks if '"conv"' in k)
    assert "BatchNorm2d" in conv and "ReLU" in conv
    assert [u.fixed for u in uses if u.key == conv] == [(3, 32), (32, 32)]  # ...used at two sizes
    assert 3 in blocks[conv].exact[0]  # the unprunable input's 3 channels are measured exactly


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "densenet121", "shufflenet_v2_x1_0"])
def test_place_counts_equal_the_rewritten_shapes(name) -> None:
    """What prediction assumes about channel counts is what the rewrite produces."""
    model = getattr(torchvision.models, name)(weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    gm = compiler.lower(model, x)
    space = compiler.analyze(gm, channel_step=8)
    counter = PlaceCounter(space)
    rng = np.random.default_rng(0)
    for _ in range(2):
        widths = space.resolve(space.random_widths(rng))
        counts = counter.counts(counter.vector(widths))
        pruned = compiler.rewrite(gm, space, widths, "l1", x)
        shapes = {n.name: n.meta["tensor_meta"].shape for n in pruned.graph.nodes
                  if isinstance(n.meta.get("tensor_meta"), torch.fx.passes.shape_prop.TensorMetadata)}
        checked = 0
        for place, row in counter.row.items():
            if place in shapes:
                assert shapes[place][space.places[place].dim] == counts[row], place
                checked += 1
        assert checked > 20


def test_exported_program_raises_back_to_modules(tmp_path) -> None:
    from compiler.modelspec import load_model

    model, x = torchvision.models.resnet18(weights=None).eval(), torch.randn(1, 3, 32, 32)
    torch.export.save(torch.export.export(model, (x,)), tmp_path / "r18.pt2")
    raised = load_model(str(tmp_path / "r18.pt2"))
    with torch.no_grad():
        torch.testing.assert_close(raised(x), model(x))
    assert compiler.analyze(compiler.lower(raised, x)).summary() == \
        compiler.analyze(compiler.lower(model, x)).summary()


def grouped_net() -> torch.nn.Module:
    """ResNeXt-style: a grouped 3x3 conv with group width 16 (6 groups of 96 channels)."""
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(3, 96, 3, padding=1, bias=False), nn.BatchNorm2d(96), nn.ReLU(),
                         nn.Conv2d(96, 96, 3, padding=1, groups=6, bias=False), nn.BatchNorm2d(96), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(96, 10)).eval()


def test_grouped_convs_profile_on_counts_their_groups_allow(tmp_path) -> None:
    """Grid points and off-step probes of a grouped conv are multiples of its group count (a
    probe at 88 channels for 6 groups used to crash the profile with 'in_channels must be
    divisible by groups'), and the table predicts the net's pruned variants."""
    model, x = grouped_net(), torch.randn(1, 3, 16, 16)
    tgt = targets.get("onnxruntime-cpu", threads=1)
    table = latency_tables.profile(model, x, tgt, out=tmp_path / "g.json", grid_points=3, variants=2, off_step_variants=0,
                                   progress=False, block_timing=QUICK_BLOCK, model_timing=QUICK_MODEL)
    grouped = [(k, e) for k, e in table.entries.items() if '"groups":6' in k]
    assert grouped, list(table.entries)
    for _, e in grouped:
        counts = {v for point in e.points for v in point}
        assert all(c % 6 == 0 for c in counts), counts
        assert any(c % tgt.channel_step for c in counts)  # an off-step probe was measured
    gm = compiler.lower(model, x)
    space = compiler.analyze(gm, channel_step=tgt.channel_step)
    widths = space.uniform_widths(0.5)
    half, full = table.predict(model, x, widths), table.predict(model, x)
    # predicted from the grouped grid, not refused; the order of two ~0.14 ms predictions from a
    # 3-point grid and 2 variants is within profiling noise on a loaded host (seen: 0.149 vs 0.137)
    assert math.isfinite(half) and 0 < half < 1.5 * full, (half, full)


def test_a_table_that_predicts_the_floor_no_faster_than_the_model_is_named_when_profiled(tmp_path,
                                                                                        monkeypatch) -> None:
    """The self-check profile runs after fitting: on a sound table it is silent; a correction that
    flattens the block sum (its scale held at zero, as a profile on a busy machine can fit) is
    named, with what to do; one that turns it around is refused outright."""
    model, x = resnet20().eval(), torch.zeros(1, 3, 32, 32)
    table = latency_tables.load(latency_tables.SHIPPED / "onnxruntime-cpu_amd-epyc-avx512_t1.json")
    pred = table.predictor(model, x)
    assert contradiction(pred) is None
    full_sum = float(pred.features()[0])
    table.models[pred.key]["correction"] = {"form": "scale+offset", "coef": [0.0, 0.0, 2 * full_sum]}
    message = contradiction(table.predictor(model, x))
    assert message is not None and "contradict each other" in message and "idle machine" in message
    table.models[pred.key]["correction"] = {"form": "scale+offset", "coef": [-1.0, 0.0, 2 * full_sum]}
    assert "negative block-sum" in contradiction(table.predictor(model, x))
    # and profile() says it: a fit in which the block sum no longer counts
    monkeypatch.setattr(sys.modules["latency_tables.profile"], "fit_correction",
                        lambda xs, ys, empty_ms: (np.array([0.0, 0.0, 1e3, 0.0]), "scale+offset", np.ones(len(ys))))
    with pytest.warns(UserWarning, match="no faster than the unpruned model"):
        _profile_tiny(tmp_path / "t.json")


def test_a_prediction_below_an_empty_engine_run_is_refused_not_returned() -> None:
    """A correction's negative offset outweighing the block sum (far below the variants it was
    fitted on) would make a confident negative latency; the table says why instead."""
    model, x = resnet20().eval(), torch.zeros(1, 3, 32, 32)
    table = latency_tables.load(latency_tables.SHIPPED / "onnxruntime-cpu_amd-epyc-avx512_t1.json")
    pred = table.predictor(model, x)
    full_sum = float(pred.features()[0])
    assert pred() > table.overhead_ms
    table.models[pred.key]["correction"] = {"form": "scale+offset", "coef": [1.0, 0.0, -1.5 * full_sum]}
    with pytest.raises(latency_tables.TableError, match="below an empty engine run.*profile this model again"):
        table.predictor(model, x)()
    with pytest.raises(latency_tables.TableError, match="below an empty engine run"):
        table.predict(model, x)
    assert "below an empty engine run" in contradiction(table.predictor(model, x))  # a profile warns, keeps it


def test_a_stored_correction_that_predicts_wider_widths_faster_is_refused_and_refit_by_a_profile(
        profiled, tmp_path) -> None:
    """Older versions fitted negative block-sum coefficients (vgg11 at 64x64); a table holding
    one names it and the remedy, and profiling the model again refits the variants it has
    without measuring any."""
    _, fixture_path, x, tgt = profiled
    table = latency_tables.load(fixture_path)  # a copy: the fixture's table stays as it is
    pred = table.predictor(tiny(), x)
    assert pred() > 0
    record = table.models[pred.key]
    record["correction"]["coef"] = [-0.5, 0.1, 2 * pred()]
    path = tmp_path / "old.json"
    table.save(path)
    with pytest.raises(latency_tables.TableError, match="negative block-sum.*profile this model again"):
        latency_tables.load(path).predictor(tiny(), x)()
    again = latency_tables.profile(tiny(), x, tgt, out=path, grid_points=3, variants=1, off_step_variants=2,
                                   progress=False, block_timing=QUICK_BLOCK, model_timing=QUICK_MODEL)
    assert again.last_profile.measured_variants == 0
    assert min(again.models[pred.key]["correction"]["coef"][:2]) >= 0
    assert again.predictor(tiny(), x)() > 0


def test_a_profile_with_more_variants_measures_only_the_added_ones(tmp_path) -> None:
    """A table's model extended from 1 to 3 random variants gets the 2 new ones, each once: the
    same set a profile with 3 from the start measures (told apart by their weights' size)."""
    tgt, x = targets.get("onnxruntime-cpu", threads=1), torch.randn(1, 1, 28, 28)

    def weights(path: Path, variants: int) -> tuple[int, list[float]]:
        table = latency_tables.profile(small_fmnist(), x, tgt, out=path, grid_points=2, variants=variants,
                                       off_step_variants=0, progress=False, block_timing=QUICK_BLOCK,
                                       model_timing=QUICK_MODEL)
        record = next(iter(table.models.values()))
        return table.last_profile.measured_variants, sorted(v["features"][1] for v in record["variants"])

    assert weights(tmp_path / "a.json", 1)[0] == 3  # the unpruned, the smallest, one random
    added, extended = weights(tmp_path / "a.json", 3)
    assert added == 2 and extended == weights(tmp_path / "b.json", 3)[1]  # before: the smallest twice, one lost


def test_blocks_and_variants_timed_in_groups_fill_the_same_table(tmp_path) -> None:
    """Blocks three at a time beside the metronome, variants two at a time beside the unpruned
    model (time_group): every grid point is measured, every variant recorded with the unpruned
    model's time from its own group (shared within a group), and the correction is fitted."""
    tgt, x = targets.get("onnxruntime-cpu", threads=1), torch.randn(1, 3, 16, 16)
    alone = latency_tables.profile(tiny(), x, tgt, out=tmp_path / "alone.json", grid_points=2, variants=2,
                                   off_step_variants=1, progress=False, block_timing=QUICK_BLOCK,
                                   model_timing=QUICK_MODEL)
    grouped = latency_tables.profile(tiny(), x, tgt, out=tmp_path / "grouped.json", grid_points=2, variants=2,
                                     off_step_variants=1, progress=False, block_timing=QUICK_BLOCK,
                                     model_timing=QUICK_MODEL, block_group=3, variant_group=2)
    assert grouped.summary()["points"] == alone.summary()["points"] > 3
    assert all(not e.missing() for e in grouped.entries.values())
    record = next(iter(grouped.models.values()))
    beside = [v["unpruned_beside_ms"] for v in record["variants"] + record["off_step"]]
    assert len(beside) == 5 and beside[0] == beside[1] and beside[2] == beside[3]  # groups (0, 1) (2, 3) (4)
    assert "coef" in record["correction"]
    with pytest.raises(BadInputError, match="variant_group >= 1"):
        latency_tables.profile(tiny(), x, tgt, variant_group=0, progress=False)


def _profile_tiny(out: Path) -> None:
    """A quick profile of the tiny model with its self-checks (a profile's warnings)."""
    tgt = targets.get("onnxruntime-cpu", threads=1)
    try:
        latency_tables.profile(tiny(), torch.randn(1, 3, 16, 16), tgt, out=out, grid_points=2, variants=2,
                               off_step_variants=0, progress=False, block_timing=QUICK_BLOCK, model_timing=QUICK_MODEL)
    finally:
        tgt.close()


def test_a_table_profiled_on_a_busy_machine_says_so_and_widens_its_error_bars(tmp_path, monkeypatch) -> None:
    """The unpruned model's time beside each profiled variant measures how busy the machine was:
    the shipped table's profiles were quiet and keep their leave-one-out error bars; spread over
    NOISY_PCT, the bars are at least half the spread, and profile, inspect and the table's
    summary say so, with what to do."""
    model, x = resnet20().eval(), torch.zeros(1, 3, 32, 32)
    table = latency_tables.load(latency_tables.SHIPPED / "onnxruntime-cpu_amd-epyc-avx512_t1.json")
    quiet = table.predictor(model, x)
    assert quiet.noise_pct is not None and 0 < quiet.noise_pct < NOISY_PCT, quiet.noise_pct
    assert noise_warning("resnet20", quiet.noise_pct) is None
    record = table.models[quiet.key]
    for i, v in enumerate(record["variants"] + record["off_step"]):  # neighbours slowing it by up to 60%
        v["unpruned_beside_ms"] *= 1 + 0.2 * (i % 4)
    busy = table.predictor(model, x)
    assert busy.noise_pct > NOISY_PCT
    widths = busy.space.uniform_widths(0.5)
    assert busy(widths) == quiet(widths)  # the prediction stands; its error bar grows
    assert busy.error_pct(widths) == pytest.approx(max(quiet.error_pct(widths), busy.noise_pct / 2))
    assert busy.error_pct(widths) > quiet.error_pct(widths)
    assert table.summary()["models"][quiet.key]["noise_pct"] == pytest.approx(busy.noise_pct)
    path = tmp_path / "busy.json"
    table.save(path)
    r = latprune("inspect", str(path))
    assert r.returncode == 0 and f"varied by {busy.noise_pct:.0f}%" in r.stdout and "busy while" in r.stdout
    monkeypatch.setattr(sys.modules["latency_tables.predict"], "profile_noise_pct", lambda record: 40.0)
    with pytest.warns(UserWarning, match="busy while .* varied by 40%.*profile it again"):
        _profile_tiny(tmp_path / "t.json")


def test_a_busy_spell_during_the_off_step_variants_does_not_move_the_fallback_scale() -> None:
    """Every variant is judged by its ratio to the unpruned model timed beside it, on one scale
    for on- and off-step variants alike: the host 1.3x slower while the off-step ones ran (both
    engines slowed, ratios unchanged) leaves the correction, the fallback scale and their
    errors as they were."""
    table = latency_tables.load(latency_tables.SHIPPED / "onnxruntime-cpu_amd-epyc-avx512_t1.json")
    record = next(m for m in table.models.values() if m["name"].startswith("resnet20_fmnist"))
    fit_model(record, table.overhead_ms)
    quiet = json.loads(json.dumps({k: record[k] for k in ("correction", "fit_error_pct", "off_step_error_pct")}))
    for v in record["off_step"]:
        v["measured"]["median_ms"] *= 1.3
        v["unpruned_beside_ms"] *= 1.3
    fit_model(record, table.overhead_ms)
    assert record["correction"]["coef"] == quiet["correction"]["coef"]
    assert record["correction"]["fallback_scale"] == pytest.approx(quiet["correction"]["fallback_scale"], abs=2e-6)
    off, was = record["off_step_error_pct"], quiet["off_step_error_pct"]
    assert off.pop("abs") == pytest.approx(was.pop("abs"), abs=2e-3) and off == pytest.approx(was, abs=2e-3)


def test_the_error_bound_holds_nine_in_ten_of_a_heavy_tailed_spread() -> None:
    """error_bound (split conformal) holds a fresh error exchangeable with its n with chance at
    least k / (n + 1), whatever their spread. On log-normal errors (a heavier tail than a normal
    spread, as leave-one-out errors have) 26 give the second largest, which holds over 90% of
    fresh ones; 2.5x the median, the rule before, holds about 80%."""
    draws = np.random.default_rng(0).lognormal(0.0, 1.0, size=(4000, 27))
    assert np.mean([d[26] <= error_bound(d[:26]) for d in draws]) >= 0.9
    assert np.mean([d[26] <= min(2.5 * np.median(d[:26]), d[:26].max()) for d in draws]) < 0.85
    assert error_bound(np.arange(26.0, 0, -1)) == 25 and error_bound(np.arange(1.0, 15)) == 14


class Loaded(Target):
    """A host-clock target whose engines spin for their own time (0.2 ms for the metronome, 0.5 ms
    for a block) times the host's `load`: a busy spell is `load` > 1."""

    name = "loaded"
    load = 1.0

    def fingerprint(self) -> dict:
        return {"target": self.name}

    def build(self, model, example_inputs, out_dir=None) -> Artifact:
        return Artifact(self.name, 0.5 if isinstance(model, torch.nn.Identity) else 0.2, ())

    def run(self, artifact, inputs=None) -> list:
        end = time.perf_counter() + artifact.handle * self.load / 1e3
        while time.perf_counter() < end:
            pass
        return []


def test_a_busy_spell_while_a_block_is_timed_is_taken_out_by_the_metronome_beside_it() -> None:
    """The table's metronome time is taken once (quiet); a block timed during a spell that runs
    everything 2x slower reads 1.0 ms alone but its quiet 0.5 ms beside the metronome, alone or
    in a group of blocks sharing the metronome's turns. A target with its own clock times the
    block alone and keeps no metronome."""
    tgt, table = Loaded(), LatencyTable({"target": "loaded"}, {}, 8)
    quick = Timing(warmup=2, min_runs=10, min_seconds=0.04, max_rounds=1)
    timed = _paced(table, tgt, quick, quick)
    assert table.timing["metronome"]["ms"] == pytest.approx(0.2, rel=0.15)
    block = tgt.build(torch.nn.Identity(), ())
    tgt.load = 2.0
    assert tgt.measure(block, quick).median_ms == pytest.approx(1.0, rel=0.15)
    assert timed([(tgt, block)])[0].median_ms == pytest.approx(0.5, rel=0.15)
    small = tgt.build(torch.nn.ReLU(), ())
    assert [s.median_ms for s in timed([(tgt, block), (tgt, small), (tgt, block)])] == pytest.approx([0.5, 0.2, 0.5],
                                                                                                    rel=0.15)

    class OwnClock(Loaded):
        def measure(self, artifact, timing=Timing()):
            return super().measure(artifact, timing)
    own, plain = OwnClock(), LatencyTable({"target": "loaded"}, {}, 8)
    own.load = 2.0
    assert _paced(plain, own, quick, quick)([(own, block)])[0].median_ms == pytest.approx(1.0, rel=0.15)
    assert "metronome" not in plain.timing
