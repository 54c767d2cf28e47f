"""The masked-equivalence invariant on torchvision classification models, random Widths."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import compiler
from helpers import check_masked_equivalence, n_params, random_widths, randomize_norms

torchvision = pytest.importorskip("torchvision", reason="torchvision is a test dependency (pip install -e .[test])")
pytestmark = pytest.mark.slow  # 13 full-size models, ~40 s: the quick tier covers the invariant on tests/nets.py

MODELS = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0",
          "regnet_x_400mf", "shufflenet_v2_x1_0", "densenet121", "resnext50_32x4d",
          "squeezenet1_1", "mnasnet0_5", "vgg11_bn", "googlenet"]


@pytest.mark.parametrize("name", MODELS)
def test_random_widths_equal_masked_original(name):
    torch.manual_seed(0)
    kwargs = {"init_weights": True} if name == "googlenet" else {}
    model = randomize_norms(torchvision.models.get_model(name, weights=None, **kwargs))
    x = torch.randn(2, 3, 64, 64)
    gm = compiler.lower(model, x)
    space = compiler.analyze(gm)
    assert len(space.prunable()) >= 8, f"{name}: only {len(space.prunable())} prunable groups"
    pruned = check_masked_equivalence(model, x, random_widths(space, np.random.default_rng(1)), gm=gm, space=space)
    assert n_params(pruned) < n_params(model)
    with torch.no_grad():
        assert pruned(x).shape == model(x).shape
