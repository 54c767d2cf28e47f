"""The `latprune` CLI as a user runs it: subprocesses, exit codes, messages, interruption."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from helpers import ROOT, default_sigint, latprune

pytestmark = pytest.mark.slow  # CLI subprocesses and end-to-end builds: the quick tier leaves them out

TINY = "tests/cli_models.py:tiny"


def test_profile_then_inspect(tmp_path) -> None:
    out = tmp_path / "t.json"
    r = latprune("profile", TINY, "--input-shape", "1,3,16,16", "--out", str(out), "--grid-points", "3",
                  "--variants", "2", "--off-step-variants", "2", "--json", "--quiet")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["measured_points"] > 0 and rep["fingerprint"]["target"] == "onnxruntime-cpu"
    r = latprune("inspect", str(out))
    assert r.returncode == 0, r.stderr
    assert "fingerprint: target=onnxruntime-cpu" in r.stdout and "leave-one-out" in r.stdout
    assert "off the channel step: error median" in r.stdout and "over 2 variants" in r.stdout
    assert "90% bound" not in r.stdout  # 4 variants on the step, 2 off it: too few to state one
    s = json.loads(latprune("inspect", str(out), "--json").stdout)
    assert s["entries"] == rep["entries"] and s["complete_entries"] == s["entries"]
    r = latprune("profile", TINY, "--input-shape", "1,3,16,16", "--out", str(out), "--threads", "2", "--quiet")
    assert r.returncode == 2 and "threads: table has 1, target has 2" in r.stderr and "Traceback" not in r.stderr
    r = latprune("profile", TINY, "--input-shape", "1,3,16,16", "--out", str(out), "--grid-points", "3",
                 "--variants", "2", "--off-step-variants", "2")  # everything already measured: say so, no empty progress bar
    assert r.returncode == 0 and "are already measured" in r.stderr and "0pt" not in r.stderr, r.stderr


def test_interrupted_profile_leaves_a_valid_table_and_resumes(tmp_path) -> None:
    out = tmp_path / "r20.json"
    args = ["profile", "compiler.models:resnet20", "--input-shape", "1,3,32,32", "--out", str(out),
            "--save-every", "0.3", "--grid-points", "3", "--variants", "2", "--off-step-variants", "0", "--quiet",
            "--json"]  # grid 3: the default grid took 4.5 min here and proves nothing more
    proc = subprocess.Popen([sys.executable, "-m", "compiler.cli", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            preexec_fn=default_sigint)
    deadline = time.time() + 240
    while not out.exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)  # the harshest interruption: no handler runs
    proc.wait()
    assert out.exists(), "no checkpoint was written before the kill"
    partial = json.loads(latprune("inspect", str(out), "--json").stdout)  # the checkpoint is a valid table
    assert partial["points"] > 0
    r = latprune("profile", *args[1:])
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["reused_points"] >= partial["points"] > 0
    final = json.loads(latprune("inspect", str(out), "--json").stdout)
    assert final["complete_entries"] == final["entries"] and final["models"]


def test_corrupt_table_and_bad_models_are_clear_errors(tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "latprune.latency-table", "version": 1, "entries": ')
    r = latprune("inspect", str(bad))
    assert r.returncode == 2 and "not valid JSON" in r.stderr and "Traceback" not in r.stderr
    cases = {
        "tests/cli_models.py:untraceable": "cannot trace",
        "tests/cli_models.py:not_a_model": "not a torch.nn.Module",
        "no_such_module:f": "cannot import",
        "tests/cli_models.py:missing": "has no attribute",
        "justtext": "neither",
    }
    for spec, message in cases.items():
        r = latprune("profile", spec, "--input-shape", "1,3,16,16", "--out", str(tmp_path / "x.json"), "--quiet")
        assert r.returncode == 2, (spec, r.stderr)
        assert message in r.stderr and "Traceback" not in r.stderr, (spec, r.stderr)
    r = latprune("profile", TINY, "--input-shape", "1,3,a,16", "--out", str(tmp_path / "x.json"))
    assert r.returncode == 2 and "comma-separated integers" in r.stderr
    r = latprune("profile", TINY, "--input-shape", "1,5,16,16", "--out", str(tmp_path / "x.json"), "--quiet")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr  # wrong channel count for the model
    assert not (tmp_path / "x.json").exists()


def test_profile_accepts_a_torch_export_file(tmp_path) -> None:
    from cli_models import tiny

    x = torch.randn(1, 3, 16, 16)
    torch.export.save(torch.export.export(tiny(), (x,)), tmp_path / "tiny.pt2")
    r = latprune("profile", str(tmp_path / "tiny.pt2"), "--input-shape", "1,3,16,16", "--out",
                 str(tmp_path / "t.json"), "--grid-points", "2", "--variants", "2", "--off-step-variants", "0", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "points measured" in r.stdout


def test_version_show_and_debug(tmp_path) -> None:
    import compiler
    from cli_models import tiny

    r = latprune("--version")
    assert r.returncode == 0 and r.stdout.startswith("latprune 0.")
    path = tmp_path / "m.latprune"
    compiler.save(compiler.prune(tiny(), torch.randn(1, 3, 16, 16), {"_0": 16}), path)
    r = latprune("show", str(path))
    assert r.returncode == 0 and "32 -> 16" in r.stdout and "frozen: model output" in r.stdout, r.stdout
    shown = json.loads(latprune("show", str(path), "--json").stdout)
    assert {"id": "_0", "size": 32, "kept": 16, "prunable": True, "reason": None} in shown["groups"]
    r = latprune("inspect", str(path))  # a model file is not a table: say which command reads it
    assert r.returncode == 2 and "latprune show" in r.stderr and "Traceback" not in r.stderr
    r = latprune("--debug", "inspect", str(path))
    assert r.returncode == 2 and "Traceback" in r.stderr and r.stderr.strip().splitlines()[-1].startswith("latprune: error")
