"""Latency tables without a device: grids, staircase interpolation, file integrity, refusal."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

import latency_tables
from latency_tables.grid import bracket, grid_values, off_step_probes, on_step
from latency_tables.predict import corrected, design
from latency_tables.profile import _entry_for, fit_correction, fit_fallback
from latency_tables.table import Entry, LatencyTable, TableError

FP = {"target": "onnxruntime-cpu", "device": "cpu-x", "threads": 1, "onnxruntime": "1.0", "precision": "fp32"}


def staircase(c: int, step: int = 16) -> float:
    """Latency that pays for whole SIMD blocks, plus 20% for a count off the step."""
    return float(-(-c // step)) * (1.0 if c % step == 0 else 1.2)


def entry_from(fn, grid: list[int], step: int = 16, probes: tuple[int, ...] = ()) -> Entry:
    e = Entry(("c",), [grid], step)
    for v in list(grid) + list(probes):
        e.points[(v,)] = [fn(v), fn(v), fn(v), 10]
    return e


def test_grid_values_are_on_step_and_include_full() -> None:
    g = grid_values(16, 100, 16, points=4)
    assert g[-1] == 100 and all(v % 16 == 0 for v in g[:-1]) and len(g) <= 5
    assert grid_values(3, 3, 16) == [3]  # a frozen dim has one value
    assert all(v % 48 == 0 for v in grid_values(1, 960, math.lcm(16, 3))[:-1])  # a grouped conv steps by lcm(target step, groups)
    assert off_step_probes([16, 64, 128], 16) == [120, 124, 122, 121]  # one per class: gcd 8, 4, 2, 1
    assert off_step_probes([3], 16) == []
    assert all(v % 3 == 0 for v in off_step_probes([48, 96, 192], 16, 3))  # counts a 3-group conv can have


def test_bracket_and_on_step() -> None:
    vals = np.array([16.0, 32.0, 64.0])
    assert bracket(vals, 32) == (1, 1, 0.0)
    lo, hi, t = bracket(vals, 48)
    assert (lo, hi) == (1, 2) and t == pytest.approx(0.5)
    with pytest.raises(ValueError):
        bracket(vals, 80)
    assert on_step(40, vals, 16) == (48, True)
    assert on_step(48, vals, 16) == (48, False)
    assert on_step(63, np.array([16.0, 63.0]), 16) == (63, False)  # a measured full size is exact


def test_interpolation_keeps_the_staircase() -> None:
    e = entry_from(staircase, [16, 32, 64, 128], probes=(56,))
    c = e.compile(overhead_ms=0.0)
    for v in (16, 32, 64, 128):
        assert c([v]) == pytest.approx(staircase(v))  # exact on the grid
    assert c([96]) == pytest.approx(staircase(96))  # linear between on-step points: exact here
    assert c.penalty[0] == {8: pytest.approx(1.2)}  # measured at the off-step probe, class gcd(56, 16) = 8
    for v in (40, 71, 100, 127):
        assert c([v]) == pytest.approx(staircase(v), rel=1e-6), v  # next step up x penalty
    assert c([127]) > c([128])  # an off-step count can be slower than the next step: not smoothed away


def test_off_step_penalty_follows_the_residue_class() -> None:
    """An engine that keeps its fast kernel (padded) for counts that are multiples of 4 and
    falls to a plain one, 3x slower, otherwise: each class is priced by its own probe."""
    def engine(c: int) -> float:
        return float(-(-c // 16)) * (1.0 if c % 16 == 0 else 1.1 if c % 4 == 0 else 3.0)

    e = entry_from(engine, [16, 32, 64, 128], probes=tuple(off_step_probes([16, 32, 64, 128], 16)))
    c = e.compile(overhead_ms=0.0)
    assert set(c.penalty[0]) == {8, 4, 2, 1}
    for v in (40, 44, 63, 71, 98, 127):
        assert c([v]) == pytest.approx(engine(v), rel=1e-6), v
    only_8 = entry_from(engine, [16, 32, 64, 128], probes=(56,)).compile(0.0)  # a table with one class
    assert only_8([63]) == pytest.approx(only_8([60]))  # every off-step count priced by it, as before


def test_counts_on_the_fallback_kernels_are_priced_on_the_fallback_grid() -> None:
    """An engine that keeps its blocked kernels (padded to the step) for counts that are
    multiples of 4 and runs the rest on plain kernels, which do not step with the SIMD block
    and whose cost no penalty at one count carries to another: the classes the profile found
    on the fast family take the step up x penalty, the others the fallback grid at the counts
    themselves."""
    def engine(c: int) -> float:
        return float(-(-c // 16)) * (1.1 if c % 16 and c % 4 == 0 else 1.0)

    def plain(c: int) -> float:
        return 0.05 * c

    grid = [16, 32, 64, 128]
    e = entry_from(engine, grid, probes=tuple(off_step_probes(grid, 16)))
    e.fast, e.slow_grid = [[4, 8, 16]], [[16, 64, 128]]
    for v in e.slow_grid[0]:
        e.slow[(v,)] = [plain(v)] * 3 + [10]
    c = e.compile(overhead_ms=0.0)
    for v in (16, 64, 96, 128):
        assert c([v]) == pytest.approx(engine(v)), v  # on the step: the blocked grid
    for v in (40, 44, 60, 124):
        assert c([v]) == pytest.approx(engine(v), rel=1e-6), v  # a fast class: next step x penalty
    for v in (33, 63, 71, 98, 127):
        assert c([v]) == pytest.approx(plain(v), rel=1e-6), v  # fallback kernels, interpolated
    back = Entry.from_dict(json.loads(json.dumps(e.to_dict())))
    assert back == e
    assert "fast" not in entry_from(engine, grid).to_dict()  # tables without probes are written as before
    e.slow.pop((64,))
    assert e.missing() == [(64,)]  # an unfinished fallback grid is resumed like the main one


def test_a_wider_grid_keeps_every_fallback_point_measured_so_far() -> None:
    """A model that reaches more channels than the one a block was profiled for widens the
    block's grid; its fallback grid widens the same way, so no measured fallback point falls
    off it (unused, yet kept in the file) and the new range is covered."""
    t = LatencyTable(dict(FP), {"blocks": {}}, 16, 0.001)
    small = SimpleNamespace(vars=("c",), least=(16,), full=(128,), channel_step=(1,), exact=(frozenset(),))
    e = _entry_for(t, "k", small, 16, 4)
    e.fast, e.slow_grid = [[16]], [[15, 47, 127]]
    e.slow = {(v,): [0.01 * v] * 3 + [10] for v in e.slow_grid[0]}
    wide = SimpleNamespace(vars=("c",), least=(16,), full=(256,), channel_step=(1,), exact=(frozenset(),))
    e = _entry_for(t, "k", wide, 16, 4)
    assert e.grid[0][-1] == 256 and e.slow_grid[0][-1] == 255
    assert set(e.slow) <= set(e.slow_points())
    assert len(e.slow_points()) > len(e.slow)  # the new range is still to be measured


def test_overhead_is_subtracted_and_clamped() -> None:
    e = entry_from(lambda v: 0.01 + v / 1000, [16, 32])
    c = e.compile(overhead_ms=0.01)
    assert c([32]) == pytest.approx(0.032)
    assert e.compile(overhead_ms=1.0)([16]) == 0.0


def test_incomplete_entry_is_refused() -> None:
    e = entry_from(staircase, [16, 32])
    e.grid = [[16, 32, 64]]
    with pytest.raises(TableError, match="incomplete"):
        e.compile(0.0)


def table() -> LatencyTable:
    t = LatencyTable(dict(FP), {"blocks": {}}, 16, 0.001)
    t.entries["k1"] = entry_from(staircase, [16, 32, 64])
    return t


def test_save_load_roundtrip(tmp_path) -> None:
    p = tmp_path / "t.json"
    table().save(p)
    back = latency_tables.load(p)
    assert back.entries["k1"].points == table().entries["k1"].points
    assert back.fingerprint == FP and back.overhead_ms == 0.001
    assert not list(tmp_path.glob(".t.json.*"))  # no temporary left behind


def test_hand_edit_corruption_and_foreign_files_are_refused(tmp_path) -> None:
    p = tmp_path / "t.json"
    table().save(p)
    d = json.loads(p.read_text())
    d["entries"]["k1"]["points"][0][1] = 0.0001  # a "better" number typed in by hand
    p.write_text(json.dumps(d))
    with pytest.raises(TableError, match="checksum"):
        latency_tables.load(p)
    p.write_text(p.read_text()[:-40])
    with pytest.raises(TableError, match="not valid JSON"):
        latency_tables.load(p)
    p.write_text(json.dumps({"schema": "something.else", "version": 1}))
    with pytest.raises(TableError, match="not a latprune latency table"):
        latency_tables.load(p)
    d = table().to_dict()
    d["version"] = 99
    p.write_text(json.dumps(d))
    with pytest.raises(TableError, match="version 99"):
        latency_tables.load(p)
    with pytest.raises(TableError, match="cannot read"):
        latency_tables.load(tmp_path / "missing.json")


def test_fingerprint_refusal_names_the_field() -> None:
    t = table()
    other = dict(FP, threads=4)
    with pytest.raises(TableError, match=r"threads: table has 1, target has 4"):
        t.check_target(other)
    t.check_target(other, force=True)  # forced: allowed
    t.check_target(dict(FP))


def test_tables_of_one_fingerprint_merge_and_others_do_not(tmp_path) -> None:
    p = tmp_path / "t.json"
    table().save(p)
    t2 = LatencyTable(dict(FP), {"blocks": {}}, 16, 0.001)
    t2.entries["k2"] = entry_from(lambda v: v / 10, [16, 48])
    t2.save(p)  # merges with what is on disk
    assert set(latency_tables.load(p).entries) == {"k1", "k2"}
    t3 = LatencyTable(dict(FP, device="cpu-y"), {}, 16)
    with pytest.raises(TableError, match="device"):
        t3.merge(latency_tables.load(p))


def test_merging_tables_paced_by_different_metronome_times_rescales_to_ours(tmp_path) -> None:
    """Two profiles that started one file at once each timed their own metronome reference;
    block times scaled to 0.5 ms of metronome and to 1.0 ms meet on ours. A table profiled
    without one takes the other's reference; a reference that is not a positive time is refused."""
    def paced(ref_ms: float, key: str, scale: float) -> LatencyTable:
        t = LatencyTable(dict(FP), {"metronome": {"engine": "m", "ms": ref_ms}}, 16)
        t.entries[key] = entry_from(lambda v: v * scale, [16, 32])
        return t
    ours = paced(0.5, "k1", 1.0).merge(paced(1.0, "k2", 2.0))
    assert ours.entries["k2"].points[(32,)] == [32.0, 32.0, 32.0, 10]  # 64 ms at 1.0 -> 32 at 0.5
    assert ours.entries["k1"].points[(32,)][0] == 32.0
    raw = table().merge(paced(1.0, "k2", 2.0))
    assert raw.timing["metronome"]["ms"] == 1.0 and raw.entries["k2"].points[(32,)][0] == 64.0
    p = tmp_path / "t.json"
    bad = paced(0.5, "k1", 1.0)
    bad.timing["metronome"]["ms"] = -1.0
    p.write_text(json.dumps(bad.to_dict()))
    with pytest.raises(TableError, match="metronome time -1.0"):
        latency_tables.load(p)


def test_fit_correction_recovers_a_linear_relation_and_reports_loo_error() -> None:
    rng = np.random.default_rng(0)
    s = rng.uniform(1, 10, 9)
    w = rng.uniform(0, 5, 9)
    x = np.stack([s, w, np.ones_like(s)], 1)
    y = 0.9 * s + 0.3 * w + 0.5
    coef, form, loo = fit_correction(x, y)
    assert form == "scale+weights+offset"
    assert coef == pytest.approx([0.9, 0.3, 0.5, 0.0], rel=1e-6)
    assert float(np.max(loo)) < 1e-6
    coef, form, _ = fit_correction(x[:, :], 1.1 * s)
    assert form == "scale" and coef[0] == pytest.approx(1.1)
    # the scale-only form scales the block sum and the empty engine run together: every engine pays it
    coef, form, loo = fit_correction(x[:3], 1.1 * (s[:3] + 0.05), empty_ms=0.05)
    assert form == "scale" and coef == pytest.approx([1.1, 0.0, 0.055, 0.0]) and float(np.max(loo)) < 1e-6


def test_the_correction_never_predicts_a_wider_variant_faster() -> None:
    """A model whose time follows its weights (a big classifier), timed with noise: unbounded
    least squares gives the block sum a negative coefficient, so more compute would predict
    less time. The fit holds the block-sum and weight coefficients at zero or above, and its
    left-out errors stay near the noise."""
    rng = np.random.default_rng(1)
    w = rng.uniform(50, 500, 12)
    s = 0.01 * w + rng.uniform(0, 3, 12)  # the blocks grow with the weights, loosely
    x = np.stack([s, w, np.ones_like(s)], 1)
    y = 0.11 * w + 0.2 - 0.05 * s  # a time the block sum, if anything, runs against
    free, *_ = np.linalg.lstsq(x / y[:, None], np.ones_like(y), rcond=None)
    assert free[0] < 0  # what the fit used to keep
    coef, form, loo = fit_correction(x, y)
    assert coef[0] >= 0 and coef[1] >= 0, (coef, form)
    wider = x[0] + np.array([1.0, 0.0, 0.0])
    assert design(wider) @ coef >= design(x[0]) @ coef
    assert float(np.max(loo)) < 25, loo


def test_an_engine_that_grows_faster_than_its_blocks_keeps_its_unpruned_model_and_shares() -> None:
    """As densenet121 at 64 px measured: random variants cluster around 60% of the block sum,
    the smallest reachable model below, the unpruned model above, and the engine's time grows
    faster than its blocks' sum. A straight line through the cluster misses the unpruned model
    by over 10%, and every budget relative to it with it; the squared form keeps both ends
    and the variants' shares of the unpruned model."""
    rng = np.random.default_rng(5)
    s = np.r_[4.8, 1.4, rng.uniform(2.5, 3.4, 24)]  # unpruned, smallest, random
    w = 6.3 * s + rng.uniform(-1, 1, 26)
    x = np.stack([s, w, np.ones_like(s)], 1)
    y = (0.5 * s + 0.16 * s ** 2) * rng.normal(1.0, 0.01, 26)
    line = _solve_form(x, y, "scale+offset")
    assert abs(design(x[0]) @ line / y[0] - 1) > 0.10  # what choosing by each variant's own error kept
    coef, form, loo = fit_correction(x, y)
    assert form == "scale+square+offset" and coef[3] > 0
    assert abs(design(x[0]) @ coef / y[0] - 1) < 0.03 and abs(design(x[1]) @ coef / y[1] - 1) < 0.05
    shares = (design(x[2:]) @ coef / y[2:]) / (design(x[0]) @ coef / y[0]) - 1
    assert float(np.max(np.abs(shares))) < 0.05, shares


def _solve_form(x: np.ndarray, y: np.ndarray, form: str) -> np.ndarray:
    from latency_tables.profile import _FORMS, _solve

    return _solve(design(x), y, _FORMS[form], 0.0)


def test_the_correction_s_errors_are_those_of_the_whole_rule_form_choice_included() -> None:
    """Each reported error is the left-out variant's error under the rule refit without it, the
    form chosen again: the chosen form's own leave-one-out errors chose it and flatter it."""
    from latency_tables.profile import _FORMS, _rel_err

    rng = np.random.default_rng(3)
    flattered = 0
    for _ in range(20):
        s, w = rng.uniform(1, 10, 10), rng.uniform(0, 5, 10)
        x = np.stack([s, w, np.ones_like(s)], 1)
        y = s * rng.normal(1.0, 0.08, 10) + 0.3
        coef, form, errors = fit_correction(x, y)
        for i in range(len(y)):
            k = np.arange(len(y)) != i
            assert errors[i] == pytest.approx(abs(design(x[i]) @ fit_correction(x[k], y[k])[0] - y[i]) / y[i] * 100)
        own = np.array([_rel_err(design(x), y, _FORMS[form], i, 0.0) for i in range(len(y))])
        flattered += bool(np.median(own) < np.median(errors) - 1e-9)
    assert flattered > 0  # the form's own errors would have understated some of these fits


def test_the_fallback_kernels_scale_is_fit_on_off_step_variants_with_the_correction_kept() -> None:
    """Blocks on the fallback kernels cost more in the graph than alone (reorders around them):
    their sum's scale is learnt from the off-step variants, leave-one-out errors reported; a
    model with too few such variants keeps 1.0 and says its errors as they are."""
    rng = np.random.default_rng(1)
    fast, slow = rng.uniform(0.2, 1.0, 6), rng.uniform(0.5, 2.0, 6)
    x = np.stack([fast, np.zeros(6), np.ones(6), slow], 1)
    coef = np.array([0.8, 0.0, 0.0])
    scale, loo = fit_fallback(x, 0.8 * fast + 1.15 * slow, coef)
    assert scale == pytest.approx(1.15) and float(np.max(loo)) < 1e-6
    assert corrected(x[0], coef, scale) == pytest.approx(0.8 * fast[0] + 1.15 * slow[0])
    scale, loo = fit_fallback(x[:2], 0.8 * fast[:2] + 1.5 * slow[:2], coef)
    assert scale == 1.0 and float(np.min(loo)) > 10
    assert corrected(x[:, :3], coef, 2.0) == pytest.approx(0.8 * fast)  # rows written before the 4th feature
