"""Op rules: a user teaches latprune a custom module with register_rule and prunes through it;
the rule is consulted by every pass (labels, slicing, importance, MACs, latency blocks)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import compiler
from compiler.core import rules
from helpers import check_masked_equivalence, randomize_norms
from latency_tables.blocks import extract


class ChannelGain(nn.Module):
    """A learned per-channel gain whose forward fx cannot trace (data-dependent branch): without
    a rule latprune must treat it as opaque and freeze the channels around it."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.rand(channels) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 1e9:  # fx cannot trace a branch on a tensor value
            return x
        return x * self.gain.view(1, -1, 1, 1)


class Swish2(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(2 * x)


def net() -> nn.Module:
    return randomize_norms(nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), ChannelGain(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), Swish2(),
        nn.Conv2d(16, 8, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)))


@pytest.fixture
def registry(monkeypatch):
    """Registrations made by a test vanish after it."""
    for name in ("_MODULE_RULES", "_CALL_RULES"):
        monkeypatch.setattr(rules.base, name, dict(getattr(rules.base, name)))


def _gain_group(space: compiler.PruningSpace) -> compiler.ChannelGroup:
    return next(g for g in space.groups if any(m.node == "_0" for m in g.members))


def test_without_a_rule_the_custom_module_cannot_be_lowered_or_is_frozen(registry) -> None:
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(compiler.LoweringError):
        compiler.lower(net(), x)
    gm = compiler.lower(net(), x, leaf_modules=[ChannelGain])  # the old escape hatch: frozen whole
    group = _gain_group(compiler.analyze(gm))
    assert not group.prunable and "ChannelGain" in group.reason


def test_registered_per_channel_module_is_pruned_through(registry) -> None:
    compiler.register_rule(ChannelGain, compiler.PerChannel())
    model, x = net(), torch.randn(2, 3, 8, 8)
    gm = compiler.lower(model, x)
    assert any(n.op == "call_module" and n.target == "2" for n in gm.graph.nodes)  # kept whole, not traced
    space = compiler.analyze(gm)
    group = _gain_group(space)
    assert group.prunable and {m.node for m in group.members} >= {"_0", "_1", "_2", "_3"}
    pruned = check_masked_equivalence(model, x, {group.id: 6}, gm=gm, space=space)
    assert pruned.get_submodule("2").gain.shape == (6,)
    assert pruned.get_submodule("4").in_channels == 6


def test_a_rule_that_cannot_slice_refuses_instead_of_pruning_wrongly(registry) -> None:
    class LabelsOnly(compiler.Passthrough):
        """Says channels pass through, but has no slicing for ChannelGain's weights."""

    compiler.register_rule(ChannelGain, LabelsOnly())
    model, x = net(), torch.randn(2, 3, 8, 8)
    gm = compiler.lower(model, x)
    space = compiler.analyze(gm)
    with pytest.raises(rules.RewriteError, match="does not slice weights"):
        compiler.rewrite(gm, space, {_gain_group(space).id: 8})


def test_a_custom_activation_is_fused_into_its_conv_block_when_registered_as_one(registry) -> None:
    model, x = net(), torch.randn(1, 3, 8, 8)
    compiler.register_rule(ChannelGain, compiler.PerChannel())
    compiler.register_rule(Swish2, compiler.Passthrough("glue"))
    gm = compiler.lower(model, x)
    alone, _ = extract(gm, compiler.analyze(gm))
    compiler.register_rule(Swish2, compiler.Passthrough("activation"))
    gm = compiler.lower(model, x)
    fused, _ = extract(gm, compiler.analyze(gm))
    assert len(fused) == len(alone) - 1  # the activation no longer forms a block of its own
    assert any("Swish2" in k and '"kind":"conv"' in k for k in fused)
    assert not any("Swish2" in k and '"kind":"conv"' in k for k in alone)
    # a target that fuses nothing cuts every op into its own block
    assert len(extract(gm, compiler.analyze(gm), fuses=())[0]) > len(fused)


def test_user_rules_never_widen_what_a_saved_model_may_load(registry, tmp_path) -> None:
    compiler.register_rule(ChannelGain, compiler.PerChannel())
    model, x = net(), torch.randn(2, 3, 8, 8)
    pruned = compiler.prune(model, x, None)
    with pytest.raises(compiler.ArtifactError, match="ChannelGain"):
        compiler.save(pruned, tmp_path / "m.latprune")
    assert not (tmp_path / "m.latprune").exists()


def test_register_rule_checks_its_arguments(registry) -> None:
    with pytest.raises(compiler.BadInputError, match="Rule instance"):
        compiler.register_rule(ChannelGain, compiler.PerChannel)  # the class, not an instance
    with pytest.raises(compiler.BadInputError, match="role"):
        compiler.Passthrough("fused")
    with pytest.raises(compiler.BadInputError, match="nn.Module type"):
        compiler.register_rule(3, compiler.PerChannel())


def test_every_built_in_op_kind_has_one_rule_and_one_role() -> None:
    assert {r.role for r in rules.base._MODULE_RULES.values()} | {r.role for r in rules.base._CALL_RULES.values()} \
        <= set(rules.ROLES)
    for act in (nn.ELU, nn.Hardtanh, nn.Softplus, nn.ReLU6, nn.SiLU):  # the lists that drifted
        assert rules.module_rule(act()).role == "activation"
    assert rules.module_rule(nn.SyncBatchNorm(4)).running_stats  # subclasses of a leaf type follow it


def test_glu_a_rule_added_in_one_file_prunes_and_saves(tmp_path) -> None:
    """nn.GLU(dim=1) halves the channels: a[j] * sigmoid(b[j]). Its rule (rules/elementwise.py)
    ties a[j] with b[j]; pruned models equal the masked original and save through the
    allow-list, which the registration extended."""
    torch.manual_seed(0)
    model = randomize_norms(nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.GLU(dim=1),
                                          nn.Conv2d(16, 8, 3), nn.Flatten(), nn.LazyLinear(4)))
    x = torch.randn(2, 3, 8, 8)
    model(x)
    gm = compiler.lower(model, x)
    space = compiler.analyze(gm)
    group = next(g for g in space.groups if any(m.node == "_0" for m in g.members))
    assert group.prunable and group.size == 32 and group.unit == 2
    pruned = check_masked_equivalence(model, x, {group.id: 20}, gm=gm, space=space)
    assert pruned.get_submodule("0").out_channels == 20 and pruned.get_submodule("3").in_channels == 10
    compiler.save(pruned, tmp_path / "glu.latprune")
    torch.testing.assert_close(compiler.load(tmp_path / "glu.latprune")(x), pruned(x))
