"""The tvm-aarch64 engine executes: on an emulated aarch64 board (qemu-user running the aarch64
TVM runtime behind a tracker on 127.0.0.1, brought up by tools/arm_emulator.py), it is built,
uploaded, run and compared with PyTorch; a compile verifies its outputs and leaves latency out;
meta-schedule tunes over the tracker. The first run fetches the arm64 Python and the aarch64
wheels (~1 min) into the user cache; later runs reuse them."""
from __future__ import annotations

import gc
import importlib.util
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
import torch.nn as nn

import targets
from compiler.data import split_train
from helpers import MODEL, ROOT, SHAPE, SHIPPED, latprune, randomize_norms
from targets.base import TargetError

# Each test body takes 2-110 s here; 300 s stops one that hangs (meta-schedule's tuner waits on
# the tracker with no deadline) before five of them could hold CI to its limit. The board's own
# start (first run: ~1 min of downloads) is bounded by its fixture.
pytestmark = [pytest.mark.tvm, pytest.mark.arm_emulator, pytest.mark.slow, pytest.mark.timeout(300, func_only=True)]
EMULATOR = [sys.executable, str(ROOT / "tools" / "arm_emulator.py")]
KEY = "latprune-test-emu"
RPC_TIMEOUT_S = 180  # a session the board never answers fails the test instead of holding CI


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def board() -> Iterator[str]:
    """An emulated board's tracker address, stopped after the module."""
    port = _free_port()
    r = subprocess.run([*EMULATOR, "up", "--port", str(port), "--key", KEY], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([*EMULATOR, "down", "--port", str(port)], capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def board_process(board) -> psutil.Process:
    """The emulated server's process (qemu-user running the aarch64 Python), from the state
    file tools/arm_emulator.py keeps beside its cache."""
    spec = importlib.util.spec_from_file_location("arm_emulator", EMULATOR[1])
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    state = json.loads(tool._state_path(tool.default_cache(), int(board.rsplit(":", 1)[1])).read_text())
    return psutil.Process(state["pids"][1])


@pytest.fixture
def arm(board, tmp_path) -> Iterator[Callable[..., targets.Target]]:
    """tvm-aarch64 targets on the board. The board serves one session at a time and a session
    lives while its target or an engine built on it does, so they are released after the test."""
    made: list[targets.Target] = []

    def make(trials: int = 0) -> targets.Target:
        made.append(targets.get("tvm-aarch64", trials=trials, rpc_tracker=board, rpc_key=KEY,
                                rpc_timeout=RPC_TIMEOUT_S, work_dir=tmp_path / "db"))
        return made[-1]

    yield make
    for t in made:
        t.close()
    made.clear()
    gc.collect()


def plain_cnn() -> nn.Module:
    return randomize_norms(nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                                         nn.Conv2d(16, 24, 3, stride=2, padding=1), nn.ReLU(),
                                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 5))).eval()


def depthwise_cnn() -> nn.Module:
    """MobileNet-style: expand, depthwise 3x3, project, with a residual add."""

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU6())
            self.body = nn.Sequential(nn.Conv2d(16, 48, 1), nn.BatchNorm2d(48), nn.ReLU6(),
                                      nn.Conv2d(48, 48, 3, padding=1, groups=48), nn.BatchNorm2d(48), nn.ReLU6(),
                                      nn.Conv2d(48, 16, 1), nn.BatchNorm2d(16))
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.stem(x)
            return self.head(x + self.body(x))

    return randomize_norms(Block()).eval()


@pytest.mark.parametrize("make", [plain_cnn, depthwise_cnn], ids=["plain", "depthwise"])
def test_engine_runs_on_the_emulated_board_and_matches_torch(arm, board_process, make, tmp_path) -> None:
    model, x = make(), torch.randn(1, 3, 20, 20)
    tgt = arm()
    art = tgt.build(model, x, out_dir=tmp_path / "out")
    assert (tmp_path / "out" / "model.so").read_bytes()[18:20] == (183).to_bytes(2, "little")  # EM_AARCH64
    with torch.no_grad():
        ref = model(x).numpy()
    out = tgt.run(art)[0]
    assert out.shape == ref.shape and np.abs(out - ref).max() / np.abs(ref).max() < 1e-5
    fp = tgt.fingerprint()
    assert fp["emulated"] is True and "emulated" in fp["device"]
    assert tgt.can_run and not tgt.can_measure
    assert board_process.children() == []  # the open session is served in the board's process: no fork to hang
    with pytest.raises(TargetError, match="emulated"):
        tgt.measure(art)  # a timing under emulation would be a lie


def test_compile_verifies_outputs_on_the_emulated_board(board, tmp_path) -> None:
    npz = tmp_path / "d.npz"
    (xt, yt), (xv, yv) = split_train()
    np.savez(npz, x=xt[:600].numpy(), y=yt[:600].numpy(), x_val=xv[:200].numpy(), y_val=yv[:200].numpy())
    base = ["compile", MODEL, "--input-shape", SHAPE, "--data", str(npz), "--target", "tvm-aarch64", "--trials", "0",
            "--rpc-tracker", board, "--rpc-key", KEY, "--rpc-timeout", str(RPC_TIMEOUT_S), "--evaluations", "4",
            "--budget", "0.7x", "--quiet"]
    no_table = latprune(*base, "--out", str(tmp_path / "o1"))
    assert no_table.returncode == 2 and "emulated" in no_table.stderr and "--table" in no_table.stderr
    r = latprune(*base, "--out", str(tmp_path / "o2"), "--table", str(SHIPPED), "--force", "--json")  # x86's table
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads(r.stdout)
    t = rep["targets"]["tvm-aarch64"]
    assert rep["status"] == "outputs_verified" and t["fingerprint"]["emulated"] is True
    v = t["verify"]
    assert v["outputs_match"] and v["output_max_rel_error"] < 1e-4 and "measured_ms" not in v and v["not_timed"]
    assert Path(t["files"]["engine"]).read_bytes()[:4] == b"\x7fELF"
    prof = latprune("profile", MODEL, "--input-shape", SHAPE, "--target", "tvm-aarch64", "--trials", "0",
                    "--rpc-tracker", board, "--rpc-key", KEY, "--rpc-timeout", str(RPC_TIMEOUT_S),
                    "--out", str(tmp_path / "t.json"))
    assert prof.returncode == 2 and "emulated" in prof.stderr and not (tmp_path / "t.json").exists()


def test_tuning_times_candidates_over_the_tracker(arm, tmp_path) -> None:
    """meta-schedule's RPC runner on the emulated board: a handful of trials land in the database
    with run times, and the tuned engine still matches PyTorch."""
    from tvm.s_tir import meta_schedule as ms

    model, x = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()).eval(), torch.randn(1, 3, 16, 16)
    tgt = arm(trials=2)
    out = tgt.run(tgt.build(model, x))[0]
    with torch.no_grad():
        ref = model(x).numpy()
    assert np.abs(out - ref).max() / np.abs(ref).max() < 1e-5
    records = ms.database.JSONDatabase(work_dir=str(tmp_path / "db")).get_all_tuning_records()
    timed = [r for r in records if r.run_secs and all(float(s) < 1e9 for s in r.run_secs)]
    assert timed, "no candidate was timed on the board"


def test_emulator_says_what_is_missing_or_in_the_way(tmp_path) -> None:
    import os
    import socket

    no_qemu = subprocess.run([*EMULATOR, "up", "--port", str(_free_port()), "--cache", str(tmp_path)],
                             capture_output=True, text=True, timeout=120, env={**os.environ, "PATH": str(tmp_path)})
    assert no_qemu.returncode == 2 and "qemu-user is not installed" in no_qemu.stderr and "Traceback" not in no_qemu.stderr
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        busy = subprocess.run([*EMULATOR, "up", "--port", str(port), "--cache", str(tmp_path)], capture_output=True,
                              text=True, timeout=120)
    assert busy.returncode == 2 and f"port {port}" in busy.stderr and "in use" in busy.stderr
    assert not list(tmp_path.glob("sysroot-*"))  # refused before fetching anything
