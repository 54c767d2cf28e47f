"""A pruned architecture is data: save, reload without the model code, refuse bad files."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import compiler
from helpers import randomize_norms, random_widths
from nets import NETS


@pytest.mark.parametrize("name", sorted(NETS))
def test_roundtrip_equals_pruned(name, tmp_path):
    cls, shape = NETS[name]
    torch.manual_seed(0)
    model, x = randomize_norms(cls()), torch.randn(shape)
    gm = compiler.lower(model, x)
    space = compiler.analyze(gm)
    pruned = compiler.rewrite(gm, space, random_widths(space, np.random.default_rng(0)), example_inputs=x)
    path = tmp_path / "m.lpt"
    compiler.save(pruned, path)
    loaded = compiler.load(path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), pruned(x), rtol=0, atol=0)
    assert loaded.meta["latprune"]["widths"] == pruned.meta["latprune"]["widths"]
    assert loaded.meta["latprune"]["space"].ids() == space.ids()
    assert [p.name for p in tmp_path.iterdir()] == ["m.lpt"]  # no temporary left behind


def test_load_needs_no_model_code(tmp_path):
    """A fresh interpreter that never imports the nets module rebuilds the model."""
    model, x = NETS["concat_split"][0]().eval(), torch.randn(1, 3, 16, 16)
    pruned = compiler.prune(model, x, {"a_0": 5})
    compiler.save(pruned, tmp_path / "m.lpt")
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        torch.save(pruned(x), tmp_path / "y.pt")
    code = ("import torch, compiler, sys; m = compiler.load(sys.argv[1]); x = torch.load(sys.argv[2]);"
            "assert 'nets' not in sys.modules; torch.testing.assert_close(m(x), torch.load(sys.argv[3]), rtol=0, atol=0)")
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.lpt"), str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
                   check=True, env=env, cwd=tmp_path)


def test_corrupt_and_foreign_files_are_refused(tmp_path):
    bad = tmp_path / "bad.lpt"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(compiler.ArtifactError, match="not a readable latprune model"):
        compiler.load(bad)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(compiler.ArtifactError, match="not a latprune pruned model"):
        compiler.load(foreign)
    with pytest.raises(compiler.ArtifactError, match="no such file"):
        compiler.load(tmp_path / "missing.lpt")


def test_save_refuses_a_model_that_needs_its_code(tmp_path):
    from nets import DataDependent, Gate
    pruned = compiler.prune(DataDependent().eval(), torch.randn(1, 3, 8, 8), None, leaf_modules=[Gate])
    with pytest.raises(compiler.ArtifactError, match="not a torch.nn module"):
        compiler.save(pruned, tmp_path / "m.lpt")
    assert not list(tmp_path.iterdir())
    with pytest.raises(compiler.ArtifactError, match="compiler.prune"):
        compiler.save(torch.nn.Linear(2, 2), tmp_path / "m.lpt")


def test_pruned_model_exports_to_onnx_and_runs_in_onnxruntime(tmp_path):
    model, x = NETS["squeeze_excite"][0]().eval(), torch.randn(1, 3, 16, 16)
    gm = compiler.lower(model, x)
    pruned = compiler.rewrite(gm, compiler.analyze(gm), {"stem_0": 10, "fc1": 3}, example_inputs=x)
    path = tmp_path / "m.onnx"
    compiler.export_onnx(pruned, x, path)
    assert compiler.core.export.onnx_max_error(path, pruned, x) < 1e-4
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]
