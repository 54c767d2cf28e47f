"""On real data (Fashion-MNIST) with the trained reference model: AdaBN recovers a pruned
model's accuracy, and a search under a real budget returns a usable model within it."""
from __future__ import annotations

import copy

import pytest
import torch

import compiler
import latency_tables
from compiler.data import split_train
from compiler.evaluate import resolve_precision
from compiler.models import reference

pytestmark = pytest.mark.slow  # CLI subprocesses and end-to-end builds: the quick tier leaves them out

TABLE = latency_tables.load(latency_tables.SHIPPED / "onnxruntime-cpu_amd-epyc-avx512_t1.json")
X = torch.zeros(1, 1, 28, 28)


@pytest.fixture(scope="module")
def data():
    torch.set_num_threads(2)
    (xtr, ytr), (xval, yval) = split_train()
    calib = [(xtr[i:i + 64], ytr[i:i + 64]) for i in range(0, 512, 64)]
    return calib, [(xval[i:i + 500], yval[i:i + 500]) for i in range(0, 1000, 500)]


def test_adabn_recovers_a_pruned_model(data) -> None:
    calib, val = data
    model = reference("resnet20_fmnist")
    top1 = compiler.top1(val)
    gm = compiler.lower(model, X)
    space = compiler.analyze(gm, channel_step=16)
    pruned = compiler.rewrite(gm, space, space.uniform_widths(0.5))
    stale = top1(pruned)
    recalibrated = top1(compiler.adabn(copy.deepcopy(pruned), calib))
    assert top1(model) > 0.85
    assert recalibrated > stale + 0.05, (stale, recalibrated)


def test_search_on_real_data_meets_the_budget(data) -> None:
    calib, val = data
    model = reference("resnet20_fmnist")
    res = compiler.search(model, X, TABLE, calib, compiler.top1(val), budgets=["0.5x"], max_evaluations=10,
                          population=6, seed=0, progress=False)
    best = res.best
    assert best.latency_ms <= best.budget_ms == pytest.approx(0.5 * res.full_ms)
    assert best.score > 0.6  # ten candidates after AdaBN, no fine-tuning; chance is 0.1
    uniform = next(c for c in res.archive if c.origin == "uniform")
    assert best.score >= uniform.score


def test_screening_scores_all_cheaply_and_picks_by_the_full_score(data) -> None:
    """With screen_images, every candidate gets the cheap score, only the `rescore` best per
    budget (and the uniform baseline) the full one, and the pick is the best full score."""
    calib, val = data
    model = reference("resnet20_fmnist")
    kw = dict(budgets=["0.5x", "0.35x"], max_evaluations=10, population=6, seed=0, progress=False)
    res = compiler.search(model, X, TABLE, calib, val, screen_images=200, rescore=2, **kw)
    stats = res.stats
    assert stats["evaluations"] == len(res.archive) == 10
    assert stats["screen"] == {"adabn_batches": 2, "precision": resolve_precision("auto")}
    rescored = [c for c in res.archive if c.full_score is not None]
    assert 2 <= len(rescored) <= 2 * 2 + 2 and stats["full_evaluations"] <= 2 * 2 + 2  # + one uniform per budget
    for r in res.results:
        under = [c for c in rescored if c.latency_ms <= r.limit_ms]
        assert r.score == max(c.full_score for c in under) and r.uniform.full_score is not None
    gm = compiler.lower(model, X)
    pruned = compiler.adabn(compiler.rewrite(gm, compiler.analyze(gm, channel_step=16), res.best.widths), calib)
    assert compiler.top1(val)(pruned) == pytest.approx(res.best.score)  # the full score: the unscreened metric
    plain = compiler.search(model, X, TABLE, calib, val, **kw)
    assert all(c.full_score == c.score for c in plain.archive) and plain.stats["screen"] is None
    with pytest.raises(compiler.BadInputError, match="screen_images"):
        compiler.search(model, X, TABLE, calib, compiler.top1(val), screen_images=100, **kw)


def test_a_bf16_screen_scores_as_the_fp32_one_does(data) -> None:
    """The same seed population (its widths do not depend on scores) screened in bf16 and in
    fp32 scores within a few images of each other; the picks' scores are full fp32 scores."""
    calib, val = data
    model = reference("resnet20_fmnist")
    kw = dict(budgets=["0.5x"], max_evaluations=8, population=6, seed=0, progress=False, screen_images=256)
    runs = {p: compiler.search(model, X, TABLE, calib, val, screen_precision=p, **kw) for p in ("fp32", "bf16")}
    seeds = {p: r.archive[:6] for p, r in runs.items()}
    assert [c.widths for c in seeds["fp32"]] == [c.widths for c in seeds["bf16"]]
    gaps = [abs(a.score - b.score) for a, b in zip(seeds["fp32"], seeds["bf16"])]
    assert max(gaps) <= 6 / 256, gaps  # tools/bench_fitness.py: 1-4 of 256 predictions flipped
    assert len({a.score for a in seeds["fp32"]}) > 2  # the candidates differ, so the check means something
    gm = compiler.lower(model, X)
    best = runs["bf16"].best
    pruned = compiler.adabn(compiler.rewrite(gm, compiler.analyze(gm, channel_step=16), best.widths), calib)
    assert compiler.top1(val)(pruned) == pytest.approx(best.score)
