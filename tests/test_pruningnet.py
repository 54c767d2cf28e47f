"""PruningNet: untrained it is exactly the sliced model; trained, its weights depend on the widths."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import compiler
from compiler.core.errors import BadInputError
from compiler.core.importance import scores, select
from compiler.core.rewrite import apply
from compiler.pruningnet import PruningNet

import nets
from helpers import randomize_norms

X = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def setup(net: torch.nn.Module) -> tuple[torch.fx.GraphModule, compiler.PruningSpace, np.ndarray]:
    gm = compiler.lower(randomize_norms(net).eval(), X)
    space = compiler.analyze(gm)
    return gm, space, scores(gm, space, "l1")


@pytest.mark.parametrize("net", [nets.Residual, nets.SqueezeExcite, nets.ConcatSplit, nets.Grouped,
                                 nets.FlattenLinear, nets.Shuffle])
def test_untrained_generator_gives_the_sliced_weights(net):
    """Before training the correction is zero, so every candidate gets its sliced pretrained
    weights, through whatever slicing the op rules do (a wrong index map would show here)."""
    torch.manual_seed(0)
    gm, space, unit = setup(net())
    pn = PruningNet(gm, space, unit)
    rng = np.random.default_rng(1)
    for _ in range(3):
        w = space.resolve(space.random_widths(rng, 0.3, 0.9))
        want = apply(gm, space, select(space, w, unit))
        got = pn.model(w)
        assert dict(got.named_parameters()).keys() == dict(want.named_parameters()).keys()
        for (name, a), b in zip(got.named_parameters(), want.parameters()):
            assert a.dtype == b.dtype and torch.equal(a, b), name
        torch.testing.assert_close(got.eval()(X), want.eval()(X))


def batches(n: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 3, 16, 16, generator=g), torch.randint(0, 5, (8,), generator=g)) for _ in range(n)]


def test_training_conditions_weights_on_widths_and_is_deterministic():
    torch.manual_seed(0)
    gm, space, unit = setup(nets.Residual())
    data = batches(4, 0)
    runs = []
    for _ in range(2):
        torch.manual_seed(5)  # the generator's own initialisation; fit seeds the rest
        pn = PruningNet(gm, space, unit, hidden=8)
        losses = pn.fit(data, steps=30, seed=3, lr=1e-2)
        runs.append((pn, losses))
    (pn, losses), (pn2, losses2) = runs
    assert losses == losses2 and all(np.isfinite(losses))
    assert all(torch.equal(a, b) for a, b in zip(pn.parameters(), pn2.parameters()))
    assert float(pn.decode_w.detach().abs().sum()) > 0  # it learned a correction
    # the same kept weight gets a different value under different widths
    full = space.full_widths()
    small = space.resolve({g.id: g.allowed()[0] for g in space.prunable()})
    a, b = pn.model(full), pn.model(small)
    stem_a, stem_b = a.get_parameter("stem.0.weight"), b.get_parameter("stem.0.weight")
    keep = torch.from_numpy(np.nonzero(select(space, small, unit)[space.places["stem_0"].units])[0])
    assert not torch.allclose(stem_a[keep], stem_b)
    # and the generated model still runs and is recalibrated like any candidate
    out = compiler.adabn(b, [x for x, _ in data])(X)
    assert out.shape == (2, 5) and torch.isfinite(out).all()


def test_training_reduces_the_loss_on_its_data():
    torch.manual_seed(0)
    gm, space, unit = setup(nets.Residual())
    data = batches(1, 0)
    pn = PruningNet(gm, space, unit, hidden=8)
    losses = pn.fit(data, steps=60, seed=0, lr=1e-2)
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:10])


def test_nothing_to_generate_is_a_clear_error():
    gm, space, unit = setup(torch.nn.Conv2d(3, 5, 3))  # its only channels are the model's output
    assert not space.prunable()
    with pytest.raises(BadInputError, match="no prunable channel group"):
        PruningNet(gm, space, unit)
    gm, space, unit = setup(nets.Residual())
    with pytest.raises(BadInputError, match="at least one step"):
        PruningNet(gm, space, unit).fit([], steps=5)


def test_a_search_scores_with_pruningnet_weights_when_asked():
    """Same seed, same first candidates; their scores now come from generated weights (the metric
    sums the kept weights, so it sees any change), reproducibly; stats say which weights scored."""
    from helpers import R20_CALIB, R20_X, kept_l1, r20, shipped_table

    labelled = [(x, torch.arange(len(x)) % 10) for x in R20_CALIB]
    common = dict(budgets=["0.8x"], max_evaluations=4, population=4, seed=0, progress=False)
    sliced = compiler.search(r20(), R20_X, shipped_table(), labelled, kept_l1, **common)
    runs = [compiler.search(r20(), R20_X, shipped_table(), labelled, kept_l1, weights="pruningnet",
                            pruningnet_steps=3, **common) for _ in range(2)]
    assert [c.widths for c in runs[0].archive[:4]] == [c.widths for c in sliced.archive[:4]]
    assert all(a.score != b.score for a, b in zip(runs[0].archive[:4], sliced.archive[:4]))
    assert [(c.widths, c.score) for c in runs[0].archive] == [(c.widths, c.score) for c in runs[1].archive]
    assert runs[0].stats["weights"] == "pruningnet" and runs[0].stats["pruningnet_train_s"] > 0
    assert sliced.stats["weights"] == "sliced"
    with pytest.raises(BadInputError, match="labelled batches"):
        compiler.search(r20(), R20_X, shipped_table(), R20_CALIB, kept_l1, weights="pruningnet",
                        pruningnet_steps=2, **common)
    with pytest.raises(BadInputError, match="unknown candidate weights"):
        compiler.search(r20(), R20_X, shipped_table(), labelled, kept_l1, weights="generated", **common)
