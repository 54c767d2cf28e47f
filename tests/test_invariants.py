"""README's Architecture's invariants on hand-written nets that cover every construct of issue 2."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

import compiler
from helpers import check_masked_equivalence, n_params, random_widths, randomize_norms
from nets import NETS


def build(name: str, seed: int = 0):
    cls, shape = NETS[name]
    torch.manual_seed(seed)
    return randomize_norms(cls(), seed), torch.randn(shape)


@pytest.mark.parametrize("name", sorted(NETS))
def test_keep_all_equals_original(name):
    model, x = build(name)
    pruned = compiler.prune(model, x, None)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(NETS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_widths_equal_masked_original(name, seed):
    model, x = build(name, seed)
    gm = compiler.lower(model, x)
    space = compiler.analyze(gm)
    assert space.prunable(), f"{name}: nothing to prune"
    widths = random_widths(space, np.random.default_rng(seed))
    pruned = check_masked_equivalence(model, x, widths, gm=gm, space=space)
    if any(w < space.group(g).size for g, w in widths.items()):
        assert n_params(pruned) < n_params(model)


@pytest.mark.parametrize("name", sorted(NETS))
def test_the_pruned_model_shares_no_tensor_with_the_original(name):
    """The rewrite lets its copy share the original's weights while it slices them; whatever no
    rule replaced must be the copy's own at the end, so training the pruned model (or its BN
    statistics, as AdaBN does) leaves the original, the distillation teacher, as it was."""
    model, x = build(name)
    gm = compiler.lower(model, x)
    space = compiler.analyze(gm)
    before = {k: v.clone() for k, v in gm.state_dict().items()}
    ours = {t.untyped_storage().data_ptr() for t in gm.state_dict().values() if t.numel()}
    for widths in (space.uniform_widths(1.0), random_widths(space, np.random.default_rng(0))):
        pruned = compiler.rewrite(gm, space, widths)
        assert not ours & {t.untyped_storage().data_ptr() for t in pruned.state_dict().values() if t.numel()}
        pruned.train()(x)
        with torch.no_grad():
            for p in pruned.parameters():
                p.mul_(2)
    for k, v in gm.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0, msg=k)


@pytest.mark.parametrize("importance", ["l1", "l2", "bn_gamma"])
def test_each_importance_keeps_the_invariant(importance):
    model, x = build("residual")
    space = compiler.analyze(compiler.lower(model, x))
    check_masked_equivalence(model, x, space.uniform_widths(0.5), importance)


def groups_by_member(space, node_name):
    return [g for g in space.groups if any(m.node == node_name for m in g.members)]


def test_residual_add_couples_its_producers():
    model, x = build("residual")
    gm = compiler.lower(model, x)
    space = compiler.analyze(gm)
    (stream,) = groups_by_member(space, "b_0")  # conv feeding the residual add
    members = {m.node for m in stream.members}
    assert {"stem_0", "b_0", "add"} <= members and stream.prunable


def test_concat_offsets_and_split_pieces():
    model, x = build("concat_split")
    space = compiler.analyze(compiler.lower(model, x))
    cat = [m for g in space.groups for m in g.members if m.node == "cat"]
    assert sorted((m.positions[0], len(m.positions)) for m in cat) == [(0, 12), (12, 20)]
    c_pieces = [g.size for g in space.groups if g.id.startswith("c_0")]
    assert sorted(c_pieces) == [2, 10, 12]  # split [14, 10], then p[:, 2:14]
    e_pieces = [g.size for g in space.groups if g.id.startswith("e_0")]
    assert sorted(e_pieces) == [8, 8]  # chunk(2); r[:, :8] is the first chunk again


def test_grouped_conv_blocks_and_depthwise_multiplier():
    model, x = build("grouped")
    space = compiler.analyze(compiler.lower(model, x), channel_step=8)
    stem = space.group("stem_0")
    assert stem.blocks == 4 and stem.channel_step == 8
    assert all(w % 4 == 0 for w in stem.allowed())
    # depthwise x2: each input channel owns two output channels, pruned together
    g = space.group("g_0")
    dw = [m for m in g.members if m.node == "dw2"]
    assert g.blocks == 4 and len(dw[0].positions) == 2 * g.size


def test_groupnorm_units_and_layernorm_over_channels_frozen():
    model, x = build("norms_1d")
    space = compiler.analyze(compiler.lower(model, x))
    gn = space.group("c2")
    assert gn.unit == 4 and gn.prunable and gn.size == 32
    assert space.group("c3").prunable  # LayerNorm over the length is channel-local
    c4 = space.group("c4")
    assert not c4.prunable and "LayerNorm" in c4.reason


def test_channel_shuffle_ties_the_halves():
    model, x = build("shuffle")
    space = compiler.analyze(compiler.lower(model, x))
    tied = space.group("a_0")  # the shuffle reads cat(a, b) as a 2 x 8 grid: a_j and b_j go together
    assert {m.node for m in tied.members} >= {"a_0", "b_0"} and "b_0" not in space.ids()
    assert space.group("c_0").unit == 2  # nn.ChannelShuffle(2) ties pairs of c's channels


class UnevenShuffle(nn.Module):
    """a channel shuffle over cat(b: 2, a: 4), a made first: its 2 x 3 grid is [b0 b1 a0; a1 a2 a3]."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 2, 3, padding=1)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        a = self.a(x)
        y = torch.cat([self.b(x), a], 1)
        n, c, h, w = y.shape
        y = y.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        return self.head(y.mean((2, 3)))


def test_channel_shuffle_over_an_uneven_concat_ties_each_column():
    model, x = UnevenShuffle().eval(), torch.randn(2, 3, 6, 6)
    gm = compiler.lower(model, x)
    space = compiler.analyze(gm)
    pairs = space.group("a.1")  # the columns (b0, a1) and (b1, a2) go together; (a0, a3) is one unit
    assert pairs.prunable and pairs.units == 2
    assert {m.node: m.positions for m in pairs.members}["cat"] == [0, 1, 3, 4]
    assert not space.group("a").prunable and "b" not in space.ids()
    check_masked_equivalence(model, x, {"a.1": 1}, gm=gm, space=space)


def test_unsupported_op_freezes_only_what_it_touches():
    model, x = build("unsupported")
    space = compiler.analyze(compiler.lower(model, x))
    frozen = space.group("b_0")
    assert not frozen.prunable and "cumsum" in frozen.reason
    assert space.group("a_0").prunable and space.group("c_0").prunable


def test_model_input_and_output_are_never_pruned():
    model, x = build("residual")
    space = compiler.analyze(compiler.lower(model, x))
    assert not space.group("x").prunable and not space.group("head").prunable
    assert "model output" in space.group("head").reason


def test_flatten_into_linear_with_literal_view():
    model, x = build("flatten_linear")
    space = compiler.analyze(compiler.lower(model, x))
    b = space.group("b_0")
    fc2_in = [m for m in b.members if m.node == "reshape"]
    assert len(fc2_in[0].positions) == 8 * 16  # each channel spans 4x4 features
    pruned = check_masked_equivalence(model, x, {"b_0": 3})
    assert pruned.fc2.in_features == 3 * 16
