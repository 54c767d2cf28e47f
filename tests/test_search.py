"""The search meets its budgets, lands on the channel grid, is deterministic, caches, and refuses
infeasible budgets. Latency comes from the shipped ORT table (resnet20@32 is in it); the
fitness here is a cheap deterministic function of the candidate's weights, so that what is
tested is the search, not a training run (tests/test_search_real.py scores on real data)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import compiler
from helpers import R20_CALIB, R20_X, r20, search_r20, shipped_table
from latency_tables.predict import error_bound

TABLE = shipped_table()
X, CALIB, model, run = R20_X, R20_CALIB, r20, search_r20


def test_every_result_meets_its_budget_on_the_grid() -> None:
    res = run(budgets=["0.9x", "0.75x", f"{TABLE.predict(model(), X) * 0.6:.4f}ms"])
    space = compiler.analyze(compiler.lower(model(), X), channel_step=TABLE.channel_step)
    assert [r.budget for r in res.results][:2] == ["0.9x", "0.75x"]
    for r in res.results:
        assert r.latency_ms <= r.budget_ms
        assert r.budget_ms < res.full_ms
        for g in space.prunable():
            assert r.widths[g.id] % TABLE.channel_step == 0 or r.widths[g.id] == g.size
    # one archive shared by three budgets; each best is the best under its budget
    for r in res.results:
        assert r.score == max(c.score for c in res.archive if c.latency_ms <= r.limit_ms)
    assert res.results[0].score >= res.results[1].score >= res.results[2].score


def test_ranked_is_the_archive_under_the_limit_best_first_and_starts_with_the_pick() -> None:
    res = run(budgets=["0.6x", "0.9x"], max_evaluations=16)  # the 0.9x candidates are over the 0.6x limit
    top = res.ranked()
    under = [c for c in res.archive if c.latency_ms <= res.best.limit_ms]
    assert 1 < len(top) == len(under) < len(res.archive)  # some candidates were over the limit
    assert top[0].widths == res.best.widths and top[0].full_score == res.best.score
    assert all((a.full_score, -a.latency_ms) >= (b.full_score, -b.latency_ms) for a, b in zip(top, top[1:]))


def test_evolution_beats_the_uniform_seed_and_is_deterministic() -> None:
    a, b = run(), run()
    assert [c.widths for c in a.archive] == [c.widths for c in b.archive]
    assert [c.score for c in a.archive] == [c.score for c in b.archive]
    uniform = [c for c in a.archive if c.origin == "uniform"]
    assert len(uniform) == 1
    assert a.best.score > uniform[0].score
    assert {c.origin for c in a.archive} >= {"uniform", "random", "mutation"}
    assert run(seed=1).archive[5].widths != a.archive[5].widths


def test_random_search_stays_in_the_band() -> None:
    res = run(strategy="random", max_evaluations=10, band=0.1)
    budget = res.results[0].limit_ms
    assert len(res.archive) == 10
    assert all(0.9 * budget <= c.latency_ms <= budget and c.origin == "random" for c in res.archive)


def test_netadapt_descends_by_the_step_that_loses_least_per_ms_saved() -> None:
    res = run(strategy="netadapt", budgets=["0.75x"], max_evaluations=400)
    limit = res.results[0].limit_ms
    space = compiler.analyze(compiler.lower(model(), X), channel_step=TABLE.channel_step)
    groups = space.prunable()
    level = lambda c: tuple(g.allowed().index(c.widths[g.id]) for g in groups)  # noqa: E731
    by_level = {level(c): c for c in res.archive}
    # replay the descent from the unpruned model: each step's proposals are the next archive
    # entries, and the step taken is recomputed here from their scores and latencies
    current, seen = res.archive[0], 1
    assert level(current) == tuple(len(g.allowed()) - 1 for g in groups) and current.origin == "netadapt"
    while current.latency_ms > limit:
        here = level(current)
        proposals = [by_level[here[:i] + (here[i] - 1,) + here[i + 1:]] for i in range(len(here)) if here[i] > 0]
        assert {level(c) for c in res.archive[seen:seen + len(proposals)]} == {level(c) for c in proposals}
        seen += len(proposals)
        saving = [c for c in proposals if c.latency_ms < current.latency_ms]
        current = min(saving, key=lambda c: ((current.score - c.score) / (current.latency_ms - c.latency_ms),
                                             c.latency_ms))
    assert seen == len(res.archive)  # it stopped as soon as the budget was met
    assert res.best.latency_ms <= limit
    assert res.best.score == max(c.score for c in res.archive if c.latency_ms <= limit) >= current.score
    # no randomness: another seed, the same descent
    assert [c.widths for c in run(strategy="netadapt", budgets=["0.75x"], max_evaluations=400, seed=3).archive] \
        == [c.widths for c in res.archive]


def test_netadapt_out_of_evaluations_says_so() -> None:
    with pytest.raises(compiler.BadInputError, match="allow more evaluations"):
        run(strategy="netadapt", budgets=["0.6x"], max_evaluations=5)


def test_patience_stops_once_the_best_stops_rising_and_changes_nothing_before() -> None:
    p = 15  # enough for the best to rise after the seeds at least once under the shipped table
    res, whole = run(max_evaluations=120, patience=p), run(max_evaluations=120)
    n, limit = len(res.archive), res.results[0].limit_ms
    assert 8 + p < n < 120 and res.stats["stopped_early"] and not whole.stats["stopped_early"]  # 8: the seeds
    assert [c.widths for c in res.archive] == [c.widths for c in whole.archive[:n]]  # the same search, cut short
    best = lambda cs: max(c.score for c in cs if c.latency_ms <= limit)  # noqa: E731
    assert best(res.archive[:n - p]) == best(res.archive)  # nothing rose in the last p ...
    assert best(res.archive[:n - p - 1]) < best(res.archive[:n - p])  # ... and it rose just before them
    with pytest.raises(compiler.BadInputError, match="patience"):
        run(strategy="netadapt", patience=5)


def test_pareto_front_is_monotone() -> None:
    front = run(budgets=["0.9x", "0.6x"]).pareto()
    assert len(front) >= 2
    assert all(a.latency_ms < b.latency_ms and a.score < b.score for a, b in zip(front, front[1:]))


def test_scores_are_cached_across_runs(tmp_path) -> None:
    cache = tmp_path / "scores.json"
    first = run(cache=cache, cache_key="k")
    again = run(cache=cache, cache_key="k")
    assert first.stats["evaluations"] == 24 and again.stats["evaluations"] == 0
    assert again.stats["cache_hits"] == 24
    assert [c.score for c in again.archive] == [c.score for c in first.archive]
    assert run(cache=cache, cache_key="other data").stats["evaluations"] == 24


def test_cost_split_is_reported() -> None:
    stats = run(max_evaluations=6).stats
    assert set(stats["seconds"]) == {"rewrite", "adabn", "eval"}
    assert stats["candidates_per_second"] > 0


def test_infeasible_budget_names_the_floor() -> None:
    with pytest.raises(compiler.InfeasibleBudgetError, match=r"smallest reachable latency [0-9.]+ ms") as e:
        run(budgets=["0.01x"])
    assert e.value.exit_code == 3


def test_a_table_that_predicts_the_floor_slower_than_the_unpruned_model_is_named_as_the_cause() -> None:
    from compiler.core.budget import check_feasible

    with pytest.raises(compiler.InfeasibleBudgetError, match="contradict each other") as e:
        check_feasible({"0.75x": 1.5}, floor_ms=2.1, where="onnxruntime-cpu", full_ms=2.0)
    assert "2.1 ms" in str(e.value) and "2 ms" in str(e.value)
    with pytest.raises(compiler.InfeasibleBudgetError) as e:
        check_feasible({"0.25x": 0.5}, floor_ms=1.0, where="onnxruntime-cpu", full_ms=2.0)
    assert "contradict" not in str(e.value)  # an ordinary floor: the budget is what is wrong


@pytest.mark.parametrize("bad", ["fast", "-2ms", "0x", ""])
def test_bad_budget_is_a_clear_error(bad: str) -> None:
    with pytest.raises(compiler.BadInputError, match="budget"):
        compiler.parse_budget(bad)


def test_budget_forms() -> None:
    assert compiler.parse_budget("6ms").ms(10) == 6
    assert compiler.parse_budget("0.5x").ms(10) == 5
    assert compiler.parse_budget("35%").ms(10) == pytest.approx(3.5)
    assert compiler.parse_budget(2.5).ms(10) == 2.5


def test_iterative_budgets_remove_the_same_share_of_latency_each_step() -> None:
    from compiler.core.budget import schedule
    steps = schedule(10.0, 2.5, 3)
    assert len(steps) == 3 and steps[-1] == 2.5 and 10.0 > steps[0] > steps[1] > 2.5
    assert steps[0] / 10.0 == pytest.approx(steps[1] / steps[0]) == pytest.approx(2.5 / steps[1])
    assert schedule(10.0, 2.5, 1) == [2.5]


def test_nan_scores_are_refused() -> None:
    with pytest.raises(compiler.BadInputError, match="finite"):
        compiler.search(model(), X, TABLE, CALIB, lambda m: float("nan"), budgets=["0.9x"],
                        max_evaluations=2, progress=False)


def test_held_out_batches_are_scored_by_top1() -> None:
    labels = torch.arange(4) % 10
    val = [(torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(9)), labels)]
    res = compiler.search(model(), X, TABLE, CALIB, val, budgets=["0.9x"], max_evaluations=3, progress=False)
    assert all(c.score in (0.0, 0.25, 0.5, 0.75, 1.0) for c in res.archive)
    with pytest.raises(compiler.BadInputError, match="pairs"):
        compiler.search(model(), X, TABLE, CALIB, [torch.zeros(2)], budgets=["0.9x"], max_evaluations=1,
                        progress=False)


def test_scoring_in_chunks_and_channels_last_counts_what_one_plain_forward_counts() -> None:
    """Scoring's speed-ups (64-image forwards, channels_last weights) change no count: a
    150-image batch is scored in three chunks and gives the hits of one NCHW forward, and a
    candidate scored by the evaluator's path gets what the same sliced model scores plainly."""
    from compiler.core import analyze, lower
    from compiler.core.adabn import adabn
    from compiler.core.importance import select
    from compiler.core.rewrite import apply
    from compiler.evaluate import EVAL_CHUNK, Job, score, top1

    torch.manual_seed(0)
    net = model().eval()
    x = torch.randn(150, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y = net(x).argmax(1)
    y[::3] = (y[::3] + 1) % 10  # a third wrong
    metric = top1([(x, y)])
    assert len(metric.batches) == -(-150 // EVAL_CHUNK) and metric(net) == pytest.approx(100 / 150)
    gm = lower(net, (X,))
    space = analyze(gm, channel_step=16)
    widths = space.floor_widths()
    scores = np.random.default_rng(0).random(space.total_units)
    plain = adabn(apply(gm, space, select(space, space.resolve(widths), scores)), CALIB)
    value, _ = score(Job(gm, space, scores, CALIB, metric, None), space.resolve(widths), screened=False)
    assert value == metric(plain)


def test_a_bf16_screen_computes_in_bf16_and_keys_its_scores_apart() -> None:
    """The screen's AdaBN and metric run under bf16 autocast when asked (the metric sees bf16
    logits; BN statistics stay fp32), the full score never does, 'auto' follows the CPU's own
    bf16 support, and screened scores of another precision are not read from a cache."""
    from compiler.core import analyze, lower
    from compiler.evaluate import Evaluator, Job, Screen, native_bf16, resolve_precision, score

    def logits_dtype(net: torch.nn.Module) -> float:
        with torch.no_grad():
            out = net(torch.randn(2, 3, 32, 32))
        return {torch.bfloat16: 16.0, torch.float32: 32.0}[out.dtype]

    gm = lower(model().eval(), (X,))
    space = analyze(gm, channel_step=16)
    unit = np.random.default_rng(0).random(space.total_units)
    widths = space.resolve(space.floor_widths())
    for precision, bits in (("bf16", 16.0), ("fp32", 32.0)):
        job = Job(gm, space, unit, CALIB, logits_dtype, Screen(logits_dtype, 1, precision))
        assert score(job, widths, screened=True)[0] == bits
        assert score(job, widths, screened=False)[0] == 32.0  # the full score: always fp32
    with torch.autocast("cpu", dtype=torch.bfloat16):  # what a bf16 screen's AdaBN runs under
        net = compiler.adabn(compiler.rewrite(gm, space, widths), CALIB[:1])
    assert all(b.dtype == torch.float32 for b in net.buffers() if b.is_floating_point())
    assert resolve_precision("auto") == ("bf16" if native_bf16() else "fp32")
    assert resolve_precision("fp32") == "fp32" and resolve_precision("bf16") == "bf16"
    with pytest.raises(compiler.BadInputError, match="screen precision 'fp16'"):
        resolve_precision("fp16")
    with pytest.raises(compiler.BadInputError, match="screen precision"):
        run(screen_precision="int8")
    keys = {p: Evaluator(gm, space, unit, CALIB, logits_dtype, None, "k", Screen(logits_dtype, 1, p)).cache_key
            for p in ("fp32", "bf16")}
    assert keys == {"fp32": "k", "bf16": "k|screen-bf16"}


def test_the_safety_margin_keeps_predictions_under_the_budget_by_the_tables_own_error() -> None:
    """'auto' is the error bound the table states for the model (resnet20 was profiled with
    measured variants); a fixed share is taken as given; 0 searches right up to the budget."""
    pred = TABLE.predictor(model(), X)
    loo = pred.error_pct()
    assert loo is not None and loo > 0
    auto, fixed, none = run(), run(safety_margin=0.1), run(safety_margin=0.0)
    assert auto.best.margin == pytest.approx(loo / 100) and fixed.best.margin == 0.1 and none.best.margin == 0
    for r in (auto.best, fixed.best, none.best):
        assert r.limit_ms == pytest.approx(max(r.budget_ms / (1 + r.margin), auto.floor_ms))
        assert r.latency_ms <= r.limit_ms
    assert fixed.best.latency_ms <= fixed.best.budget_ms / 1.1 < none.best.budget_ms
    with pytest.raises(compiler.BadInputError, match="safety_margin"):
        run(safety_margin=1.5)


def test_predictions_say_where_the_table_has_no_evidence() -> None:
    space = compiler.analyze(compiler.lower(model(), X), channel_step=TABLE.channel_step)
    on_step = space.uniform_widths(0.5)
    ms, err = TABLE.predict(model(), X, on_step, with_error=True)
    loo = TABLE.predictor(model(), X).fit_error_pct
    assert ms > 0 and err == error_bound(loo.get("loo_abs") or [loo["loo_max_abs"]])
    off = dict(on_step)
    g = space.prunable()[0]
    off[g.id] = on_step[g.id] - 1  # one group off the channel step
    unchecked = copy.deepcopy(TABLE)
    for record in unchecked.models.values():
        record.pop("off_step_error_pct", None)
    assert unchecked.predict(model(), X, off, with_error=True)[1] is None  # no off-step variants measured
    checked = copy.deepcopy(TABLE)
    for record in checked.models.values():
        record["off_step_error_pct"] = {"median_abs": 4.0, "max_abs": 30.0, "n": 19,
                                        "abs": [float(e) for e in range(1, 19)] + [30.0]}
    assert checked.predict(model(), X, off, with_error=True)[1] == 18.0  # 19 errors: the 18th smallest
    assert checked.predict(model(), X, on_step, with_error=True)[1] == err  # on the step: leave-one-out
    unvalidated = copy.deepcopy(TABLE)
    unvalidated.models = {}  # blocks measured, but no end-to-end variants of this model
    assert unvalidated.predict(model(), X, on_step, with_error=True)[1] is None
    few = copy.deepcopy(TABLE)
    for record in few.models.values():
        record["variants"] = record["variants"][:3]  # leave-one-out over 3 points says nothing
    assert few.predict(model(), X, on_step, with_error=True)[1] is None
