"""PruningSpace serialisation and importance criteria."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import given, strategies as st

import compiler
from compiler.core.space import _rle, _unrle
from nets import NETS


@given(st.lists(st.integers(-1, 40), max_size=60))
def test_rle_roundtrip(xs):
    a = np.array(xs, dtype=np.int64)
    np.testing.assert_array_equal(_unrle(json.loads(json.dumps(_rle(a)))), a)


@pytest.mark.parametrize("name", sorted(NETS))
def test_space_json_roundtrip(name):
    cls, shape = NETS[name]
    space = compiler.analyze(compiler.lower(cls().eval(), torch.randn(shape)))
    back = compiler.PruningSpace.from_dict(json.loads(json.dumps(space.to_dict())))
    assert back.to_dict() == space.to_dict()
    for k, p in space.places.items():
        np.testing.assert_array_equal(back.places[k].units, p.units)


class Two(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(2, 6, 1, bias=False)
        self.bn = nn.BatchNorm2d(6)
        self.b = nn.Conv2d(6, 2, 1, bias=False)

    def forward(self, x):
        return self.b(self.bn(self.a(x)))


def kept_channels(importance, setup) -> list[int]:
    model = Two().eval()
    setup(model)
    x = torch.randn(1, 2, 4, 4)
    gm = compiler.lower(model, x)
    space = compiler.analyze(gm)
    keep = compiler.keep_mask(gm, space, {"a": 2}, importance)
    g = space.group("a")
    return np.nonzero(keep[g.unit_start:g.unit_start + g.units])[0].tolist()


def test_l1_keeps_the_largest_filters():
    def setup(m):
        with torch.no_grad():
            m.a.weight.copy_(torch.tensor([1., 9, 2, 8, 3, 1]).view(6, 1, 1, 1).expand(6, 2, 1, 1))
            m.b.weight.fill_(0.01)
    assert kept_channels("l1", setup) == [1, 3]


def test_l2_and_l1_differ_on_spread_out_weights():
    def setup(m):
        with torch.no_grad():
            w = torch.zeros(6, 2, 1, 1)
            w[0] = torch.tensor([3., 3]).view(2, 1, 1)  # l1 6, l2 4.24
            w[1] = torch.tensor([5., 0]).view(2, 1, 1)  # l1 5, l2 5
            w[2:] = 0.1
            m.a.weight.copy_(w)
            m.b.weight.zero_()
    assert kept_channels("l1", setup) == [0, 1]
    assert kept_channels("l2", setup)[0] == 1 or kept_channels("l2", setup) == [0, 1]
    def setup3(m):
        setup(m)
        with torch.no_grad():
            m.a.weight[2] = torch.tensor([4.2, 0]).view(2, 1, 1)  # l1 4.2 < 6, l2 4.2 < 4.24
            m.a.weight[0] = torch.tensor([2.9, 2.9]).view(2, 1, 1)  # l1 5.8, l2 4.10 < 4.2
    assert kept_channels("l1", setup3) == [0, 1]
    assert kept_channels("l2", setup3) == [1, 2]


def test_bn_gamma_keeps_the_largest_scales():
    def setup(m):
        with torch.no_grad():
            m.bn.weight.copy_(torch.tensor([0.1, -0.2, 3.0, 0.3, -2.0, 0.05]))
    assert kept_channels("bn_gamma", setup) == [2, 4]


def test_custom_importance_callable_and_registry():
    def last_two(gm, space):
        return np.arange(space.total_units, dtype=float)
    assert kept_channels(last_two, lambda m: None) == [4, 5]
    compiler.register_importance("last_two", last_two)
    assert kept_channels("last_two", lambda m: None) == [4, 5]
