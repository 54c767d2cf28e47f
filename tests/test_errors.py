"""Bad input gets a clear LatpruneError naming the cause and what to do."""
from __future__ import annotations

import pytest
import torch

import compiler
from nets import DataDependent, Gate, Residual


def test_untraceable_model_names_module_line_and_fix():
    with pytest.raises(compiler.LoweringError) as e:
        compiler.lower(DataDependent(), torch.randn(1, 3, 8, 8))
    msg = str(e.value)
    assert "`gate`" in msg and "Gate" in msg and "nets.py" in msg and "x.sum() > 0" in msg
    assert "leaf_modules=['gate']" in msg


def test_leaf_module_makes_it_traceable_and_freezes_its_channels():
    model = DataDependent().eval()
    x = torch.randn(2, 3, 8, 8)
    gm = compiler.lower(model, x, leaf_modules=["gate"])
    space = compiler.analyze(gm)
    a = space.group("a_0")
    assert not a.prunable and "gate" in a.reason
    pruned = compiler.prune(model, x, {"b_0": 4}, leaf_modules=[Gate])
    with torch.no_grad():
        assert pruned(x).shape == (2, 2)


def test_unknown_leaf_name_is_an_error():
    with pytest.raises(compiler.LoweringError, match="names no submodule"):
        compiler.lower(DataDependent(), torch.randn(1, 3, 8, 8), leaf_modules=["nope"])


def test_wrong_input_shape_is_a_clear_error():
    with pytest.raises(compiler.LoweringError, match="example inputs"):
        compiler.lower(Residual(), torch.randn(1, 5, 16, 16))


@pytest.fixture(scope="module")
def residual():
    model, x = Residual().eval(), torch.randn(1, 3, 16, 16)
    gm = compiler.lower(model, x)
    return model, x, gm, compiler.analyze(gm, channel_step=8)


def test_unknown_group_id(residual):
    model, x, gm, space = residual
    with pytest.raises(compiler.WidthsError, match="unknown channel groups.*nope"):
        compiler.rewrite(gm, space, {"nope": 3})


@pytest.mark.parametrize("bad", [0, 17, -1])
def test_out_of_range_width(residual, bad):
    _, _, gm, space = residual
    with pytest.raises(compiler.WidthsError, match="out of range 1..16"):
        compiler.rewrite(gm, space, {"a_0": bad})


def test_non_int_width(residual):
    _, _, gm, space = residual
    with pytest.raises(compiler.WidthsError, match="must be an int"):
        compiler.rewrite(gm, space, {"a_0": 3.5})


def test_frozen_group_cannot_be_pruned(residual):
    _, _, gm, space = residual
    with pytest.raises(compiler.WidthsError, match="cannot be pruned.*model output"):
        compiler.rewrite(gm, space, {"head": 3})


def test_widths_clamp_to_granularity_and_at_least_one_step(residual):
    model, x, gm, space = residual
    assert space.resolve({"a_0": 1})["a_0"] == 8
    assert space.resolve({"a_0": 11})["a_0"] == 8
    assert space.resolve({"a_0": 13})["a_0"] == 16
    pruned = compiler.rewrite(gm, space, {"a_0": 5}, example_inputs=x)
    assert pruned.meta["latprune"]["widths"]["a_0"] == 8
    assert pruned.get_submodule("a.0").out_channels == 8


def test_unknown_importance(residual):
    _, _, gm, space = residual
    with pytest.raises(compiler.BadInputError, match="unknown importance"):
        compiler.rewrite(gm, space, {"a_0": 8}, importance="magic")


def test_errors_carry_exit_codes():
    assert compiler.BadInputError.exit_code == 2
    assert compiler.InfeasibleBudgetError.exit_code == 3
    assert compiler.VerificationError.exit_code == 4
