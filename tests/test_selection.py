"""Data-driven channel selection (thinet, lasso) and the least-squares refit (reconstruct)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

import compiler
from compiler.core.reconstruct import reconstruct
from helpers import check_masked_equivalence, randomize_norms
from nets import NETS


def _calib(shape: tuple[int, ...], n: int = 3, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(8, *shape[1:], generator=g) for _ in range(n)]


def _dead_unit_net() -> nn.Module:
    """Channel 0 of the first conv never fires (ReLU of a large negative bias) but has by far the
    largest weights, in its filter and in the next conv's column: the weight norms keep it,
    a criterion that looks at the next layer's output drops it first."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    with torch.no_grad():
        net[0].weight[0] *= 50
        net[0].bias[0] = -1e4
        net[2].weight[:, 0] *= 50
    return net


@pytest.mark.parametrize("importance", ["thinet", "lasso"])
def test_a_unit_that_never_reaches_the_next_layer_goes_first(importance) -> None:
    net, x = _dead_unit_net(), torch.randn(1, 3, 12, 12)
    gm = compiler.lower(net, x)
    space = compiler.analyze(gm)
    group = space.prunable()[0]  # the first conv's output channels
    units = slice(group.unit_start, group.unit_start + group.units)
    assert np.argmax(compiler.importance_scores(gm, space, "l1")[units]) == 0  # the norms keep it
    s = compiler.importance_scores(gm, space, importance, _calib(x.shape))[units]
    assert np.argmin(s) == 0, s


@pytest.mark.parametrize("name", ["residual", "concat_split", "grouped", "flatten_linear", "shuffle", "squeeze_excite"])
@pytest.mark.parametrize("importance", ["thinet", "lasso"])
def test_data_driven_criteria_score_every_group_and_keep_the_invariant(name, importance) -> None:
    cls, shape = NETS[name]
    torch.manual_seed(0)
    model, x = randomize_norms(cls(), 0), torch.randn(shape)
    gm = compiler.lower(model, x)
    space = compiler.analyze(gm)
    s = compiler.importance_scores(gm, space, importance, _calib(shape))
    assert s.shape == (space.total_units,) and np.isfinite(s).all()
    assert np.array_equal(s, compiler.importance_scores(gm, space, importance, _calib(shape)))  # deterministic
    check_masked_equivalence(model, x, space.uniform_widths(0.5), s, gm=gm, space=space)


def test_a_data_driven_criterion_without_data_names_what_to_give() -> None:
    net, x = _dead_unit_net(), torch.randn(1, 3, 12, 12)
    with pytest.raises(compiler.BadInputError, match="calibration data.*importance_scores"):
        compiler.prune(net, x, {"_0": 4}, importance="thinet")
    assert compiler.prune(net, x, {"_0": 4}, importance="thinet", calib_data=_calib(x.shape))(x).shape == (1, 4)


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("name", ["residual", "flatten_linear", "grouped", "concat_split"])
def test_reconstruction_brings_the_pruned_output_closer_to_the_original(name) -> None:
    cls, shape = NETS[name]
    torch.manual_seed(0)
    model, x = randomize_norms(cls(), 0).eval(), torch.randn(shape)
    gm = compiler.lower(model, x)
    space = compiler.analyze(gm)
    widths = space.uniform_widths(0.5)
    keep = compiler.keep_mask(gm, space, widths)
    pruned = compiler.rewrite(gm, space, widths, example_inputs=x)
    calib = _calib(shape, n=4)
    test = torch.randn(16, *shape[1:], generator=torch.Generator().manual_seed(9))  # not fitted on
    with torch.no_grad():
        want, before = gm(test), pruned(test)
    layers = reconstruct(gm, pruned, space, keep, calib)
    assert layers and any(r.get("refitted") for r in layers), layers
    for r in layers:
        assert "skipped" in r or (r["error_after"] <= r["error_before"]) == r["refitted"]
    with torch.no_grad():
        after = pruned(test)
    assert _relative_error(after, want) < _relative_error(before, want), (name, layers)


def test_reconstruction_names_the_layers_it_leaves_as_sliced() -> None:
    model = nn.Sequential(nn.Conv2d(3, 16, 1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.ReLU(),
                          nn.Conv2d(16, 8, 3, padding="same"),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2)).eval()
    x = torch.randn(1, 3, 8, 8)
    gm = compiler.lower(model, x)
    space = compiler.analyze(gm)
    widths = space.uniform_widths(0.5)
    pruned = compiler.rewrite(gm, space, widths, example_inputs=x)
    layers = {r["layer"]: r for r in reconstruct(gm, pruned, space, compiler.keep_mask(gm, space, widths), _calib(x.shape))}
    assert "depthwise" in layers["2"]["skipped"] and "padding 'same'" in layers["4"]["skipped"]
    assert "refitted" in layers["7"]


def _labelled(n: int = 6, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 3, 12, 12, generator=g), torch.randint(0, 4, (16,), generator=g)) for _ in range(n)]


def test_sparsity_training_drives_batchnorm_scales_toward_zero() -> None:
    from compiler.slimming import scale_summary, sparsity_train
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(16, 4))
    plain = sparsity_train(net, _labelled(), epochs=3, penalty=0.0, lr=0.05, progress=False)
    sparse = sparsity_train(net, _labelled(), epochs=3, penalty=2.0, lr=0.05, progress=False)
    assert scale_summary(sparse)["median_abs"] < 0.5 * scale_summary(plain)["median_abs"]
    assert torch.equal(net[1].weight, torch.ones(16))  # the model given is left as it was
    with pytest.raises(compiler.BadInputError, match="has none"):
        sparsity_train(nn.Sequential(nn.Conv2d(3, 4, 3)), _labelled(), epochs=1, progress=False)


def test_slimming_needs_sparsity_training() -> None:
    with pytest.raises(compiler.BadInputError, match="sparsity_epochs"):
        compiler.CompileOptions(importance="slimming").validate()
    compiler.CompileOptions(importance="slimming", sparsity_epochs=0.5).validate()
