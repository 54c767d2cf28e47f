"""Targets for real: ONNX Runtime sessions, TVM builds, a TVM RPC server and tracker on
127.0.0.1, an aarch64 cross-compiled library, and TensorRT where a GPU allows."""
from __future__ import annotations

import contextlib
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import compiler
import targets
from helpers import ROOT, randomize_norms
from targets.base import Timing

QUICK = Timing(warmup=2, min_runs=5, min_seconds=0.02, max_rounds=1)


def small_net() -> nn.Module:
    return randomize_norms(nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                                         nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.ReLU6(),
                                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4)))


def reference(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(x).numpy()


def test_onnxruntime_build_run_measure(tmp_path) -> None:
    model, x = small_net(), torch.randn(2, 3, 16, 16)
    tgt = targets.get("onnxruntime-cpu", threads=1)
    art = tgt.build(model, x, out_dir=tmp_path)
    np.testing.assert_allclose(tgt.run(art)[0], reference(model, x), rtol=1e-4, atol=1e-5)
    assert (tmp_path / "model.onnx").stat().st_size > 0 and (tmp_path / "model.ort.onnx").stat().st_size > 0
    stats = tgt.measure(art, QUICK)
    assert 0 < stats.p10_ms <= stats.median_ms <= stats.p90_ms and stats.runs >= 5
    fp = tgt.fingerprint()
    assert fp["threads"] == 1 and fp["onnxruntime"] and fp["device"] and fp["precision"] == "fp32"
    assert tgt.channel_step in (8, 16)


def test_an_op_the_fast_exporter_refuses_leaves_stdout_clean(capfd) -> None:
    """An adaptive pool that upsamples fails the TorchScript exporter, which dumps the graph to
    the process's stdout before the dynamo exporter takes over: `--json` output must not get it."""
    model, x = nn.AdaptiveAvgPool2d(7).eval(), torch.randn(1, 8, 2, 2)
    tgt = targets.get("onnxruntime-cpu", threads=1)
    np.testing.assert_allclose(tgt.run(tgt.build(model, x))[0], reference(model, x), rtol=1e-5, atol=1e-6)
    assert "graph" not in capfd.readouterr().out


@pytest.mark.skipif(targets.base.cpu_simd() not in ("avx512f", "avx2"), reason="ONNX Runtime's NCHWc "
                    "(blocked layout) kernels are x86 AVX2 / AVX-512 ones; this CPU has neither")
def test_onnxruntime_kernel_choice_turns_on_divisibility() -> None:
    """Why the table prices off-step counts per residue class and keeps a fallback grid: ONNX
    Runtime runs a conv on its blocked NCHWc kernel when its input channels are below the block
    (16 on AVX-512, 8 on AVX2: the target's channel step) or a multiple of 4 (any output count,
    padded), a depthwise conv when its channels are a multiple of 4, else on a plain kernel with
    layout reorders around it. Read from the engine's own optimised graph
    (Target.kernel_family); if an ONNX Runtime upgrade changes the rule, this fails. The
    fallback target runs every conv on the plain kernels, same outputs."""
    tgt = targets.get("onnxruntime-cpu", threads=1)
    block = tgt.channel_step

    def family(conv: nn.Conv2d, on: targets.Target = tgt) -> str | None:
        return on.kernel_family(conv.eval(), torch.randn(1, conv.in_channels, 10, 10))

    for cin in (6, 7, 8, 9, 10, 12, 14, 15, 16, 18, 20, 22, 23, 24, 60, 62, 63, 64):
        assert family(nn.Conv2d(cin, 23, 1)) == ("nchwc" if cin < block or cin % 4 == 0 else "plain"), cin
    for c in (20, 22, 23, 24, 60, 62, 63, 64):
        assert family(nn.Conv2d(c, c, 3, padding=1, groups=c)) == ("nchwc" if c % 4 == 0 else "plain"), c
    slow = tgt.fallback()
    conv, x = nn.Conv2d(32, 32, 3, padding=1).eval(), torch.randn(1, 32, 10, 10)
    assert family(conv, slow) == "plain" and slow.fingerprint() == {**tgt.fingerprint(), "layout": "nchw"}
    np.testing.assert_allclose(slow.run(slow.build(conv, x))[0], tgt.run(tgt.build(conv, x))[0], rtol=1e-4, atol=1e-4)
    assert targets.get("onnxruntime-cpu", threads=1, opt_level="extended").fallback() is None  # no NCHWc pass there


def test_target_errors_are_clear() -> None:
    with pytest.raises(targets.TargetError, match="unknown target 'opencl'"):
        targets.get("opencl")
    with pytest.raises(compiler.BadInputError, match="threads"):
        targets.get("onnxruntime-cpu", threads=0)
    with pytest.raises(targets.TargetError, match="bad options"):
        targets.get("onnxruntime-cpu", bogus=1)


def test_timing_re_measures_when_noisy() -> None:
    """A call whose duration swings widely gets more rounds (up to max_rounds); a steady one does not."""
    import itertools

    def timed(durations_ms: list[float]) -> targets.LatencyStats:
        now = [0.0]
        steps = itertools.cycle(durations_ms)

        def call() -> None:
            now[0] += next(steps) / 1e3
        return targets.time_calls(call, Timing(warmup=0, min_runs=8, min_seconds=0, max_rel_iqr=0.05,
                                               max_rounds=3), clock=lambda: now[0])

    noisy = timed([1.0, 10.0, 1.0, 4.0])
    assert noisy.rounds == 3 and noisy.runs == 8 and noisy.p90_ms > 2 * noisy.p10_ms
    steady = timed([2.0])
    assert steady.rounds == 1 and steady.median_ms == pytest.approx(2.0)


def test_two_engines_timed_in_turn_keep_their_ratio_through_a_busy_spell() -> None:
    """A busy spell (the host twice as slow) starts 4 ms in: timed one after the other (10 ms
    each), it catches the engine whole and the reference for under half its calls, so the
    engine's share of it looks twice what it is; timed in turns, it slows both alike and the
    share holds."""
    timing = Timing(warmup=0, min_runs=10, min_seconds=0.01, max_rel_iqr=1.0, max_rounds=1)
    now = [0.0]

    def engine(ms: float):
        def call() -> None:
            now[0] += ms / 1e3 * (2.0 if now[0] >= 0.004 else 1.0)
        return call

    ref, eng = targets.time_calls(engine(0.2), timing, clock=lambda: now[0]), \
        targets.time_calls(engine(0.1), timing, clock=lambda: now[0])
    assert eng.median_ms / ref.median_ms == pytest.approx(1.0)  # 0.2 ms quiet, 0.1 ms doubled
    now[0] = 0.0
    ref, eng = targets.time_pair(engine(0.2), engine(0.1), timing, clock=lambda: now[0])
    assert eng.median_ms / ref.median_ms == pytest.approx(0.5)
    assert ref.runs == eng.runs and ref.p90_ms == pytest.approx(0.4)


def test_engines_timed_in_a_group_beside_one_reference_keep_their_ratios_and_the_steady_sit_out() -> None:
    """time_group: three engines in turns with one reference through a busy spell keep each
    ratio to it; the reference runs as long as each engine, not as long as all of them; an
    engine whose round is tight sits out the rounds after it, a jittery one is timed every round."""
    now = [0.0]

    def engine(ms: float, jitter: float = 0.0):
        calls = [0]

        def call() -> None:
            calls[0] += 1
            wobble = 1.0 + (jitter if calls[0] % 2 else -jitter)
            now[0] += ms / 1e3 * wobble * (2.0 if now[0] >= 0.004 else 1.0)
        return call

    spell = Timing(warmup=0, min_runs=10, min_seconds=0.01, max_rel_iqr=1.0, max_rounds=1)
    pairs = targets.time_group(engine(0.2), [engine(0.1), engine(0.3), engine(0.4)], spell, clock=lambda: now[0])
    assert [eng.median_ms / ref.median_ms for ref, eng in pairs] == pytest.approx([0.5, 1.5, 2.0])
    assert len({ref.runs for ref, _ in pairs} | {eng.runs for _, eng in pairs}) == 1
    now[0] = 1.0  # the spell throughout: every call twice as slow
    rounds = Timing(warmup=0, min_runs=10, min_seconds=0.01, max_rel_iqr=0.05, max_rounds=3)
    (r0, steady), (r1, jittery) = targets.time_group(engine(0.2), [engine(0.1), engine(0.1, jitter=0.5)], rounds,
                                                     clock=lambda: now[0])
    assert (steady.rounds, r0.rounds, jittery.rounds, r1.rounds) == (1, 1, 3, 3)
    assert steady.median_ms / r0.median_ms == pytest.approx(0.5)


def test_a_time_over_the_limit_is_taken_again_and_the_fastest_stands() -> None:
    def measurements(*medians: float):
        it = iter(medians)
        return lambda: targets.LatencyStats(next(it), 0.0, 0.0, 0.0, 10)

    def medians(taken):
        return [s.median_ms for s in taken]

    best, taken = targets.settled(measurements(1.0, 9.9), limit=2.0)
    assert medians(taken) == [1.0] and best.median_ms == 1.0  # within the limit: measured once
    best, taken = targets.settled(measurements(3.0, 1.5, 9.9), limit=2.0)
    assert medians(taken) == [3.0, 1.5] and best.median_ms == 1.5  # a transient: the retake stands
    best, taken = targets.settled(measurements(3.0, 4.0, 2.5, 9.9), limit=2.0)
    assert medians(taken) == [3.0, 4.0, 2.5] and best.median_ms == 2.5  # over every time: 3 takes, the fastest


def test_a_ratio_to_a_reference_timed_beside_is_judged_by_the_ratio() -> None:
    """A host that slows down by half between takes moves engine and reference together: a
    ratio budget judges the ratio, which holds, where the engine's time alone would not."""
    class Host:
        def __init__(self) -> None:
            self.load = iter([1.0, 1.0, 1.5, 1.5, 1.5, 1.5])

        def measure(self, artifact: str, timing: Timing) -> targets.LatencyStats:
            ms = {"engine": 1.0, "reference": 2.0}[artifact] * next(self.load)
            return targets.LatencyStats(ms, ms, ms, 0.0, 10)

        def measure_beside(self, artifact: str, reference: str, timing: Timing):
            return self.measure(reference, timing), self.measure(artifact, timing)

    best, taken = targets.settle(Host(), "engine", 0.51, Timing(), reference="reference")
    assert len(taken) == 1 and best.value == pytest.approx(0.5) and best.reference.median_ms == 2.0
    host = Host()
    next(host.load), next(host.load)  # slowed before the first take
    best, taken = targets.settle(host, "engine", 0.51, Timing(), reference="reference")
    assert len(taken) == 1 and best.engine.median_ms == 1.5 and best.value == pytest.approx(0.5)
    best, taken = targets.settle(Host(), "engine", 1.2, Timing())  # no reference: judged in ms
    assert best.reference is None and [t.value for t in taken] == [1.0]
    host = Host()
    next(host.load), next(host.load)
    best, taken = targets.settle(host, "engine", 1.2, Timing())  # the slowed host fails it in ms: 3 takes
    assert [t.value for t in taken] == [1.5] * 3 and best.value == 1.5

    class Slower(Host):  # the engine alone slows: every take's ratio is over the limit
        def __init__(self) -> None:
            self.load = iter([1.0, 1.2, 1.0, 1.1, 1.0, 1.3])

    best, taken = targets.settle(Slower(), "engine", 0.51, Timing(), reference="reference")
    assert len(taken) == 3 and best.value == pytest.approx(0.55)  # over every time: the least ratio stands


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ports() -> dict[str, int]:
    p = free_port()
    return {"port": p, "port_end": p + 50}


@pytest.mark.tvm
def test_tvm_llvm_untuned_build_matches_torch(tmp_path) -> None:
    model, x = small_net(), torch.randn(1, 3, 16, 16)
    tgt = targets.get("tvm-llvm", threads=1, trials=0, work_dir=tmp_path / "db")
    art = tgt.build(model, x, out_dir=tmp_path / "out")
    np.testing.assert_allclose(tgt.run(art)[0], reference(model, x), rtol=1e-4, atol=1e-5)
    assert (tmp_path / "out" / "model.so").read_bytes()[:4] == b"\x7fELF"
    assert tgt.measure(art, QUICK).median_ms > 0
    assert tgt.fingerprint()["mcpu"] not in ("", "generic")


@pytest.mark.tvm
def test_tvm_rpc_round_trip_on_loopback_server_and_tracker(tmp_path) -> None:
    from tvm import rpc
    from tvm.rpc.tracker import Tracker

    model, x = small_net(), torch.randn(1, 3, 16, 16)
    ref = reference(model, x)
    server = rpc.Server(host="127.0.0.1", **ports())
    try:
        tgt = targets.get("tvm-llvm", trials=0, rpc=f"127.0.0.1:{server.port}", work_dir=tmp_path / "db")
        art = tgt.build(model, x)
        np.testing.assert_allclose(tgt.run(art)[0], ref, rtol=1e-4, atol=1e-5)
        assert tgt.measure(art, QUICK).median_ms > 0
        assert tgt.fingerprint()["device"] == f"rpc:127.0.0.1:{server.port}"
        assert tgt.device_info() == {} and not tgt.emulated  # a plain TVM server, as on a real board: timed
    finally:
        server.terminate()
    tracker = Tracker(host="127.0.0.1", silent=True, **ports())
    farm = [rpc.Server(host="127.0.0.1", tracker_addr=("127.0.0.1", tracker.port), key="farm", **ports())
            for _ in range(2)]
    try:
        tgt = targets.get("tvm-llvm", trials=0, rpc_tracker=f"127.0.0.1:{tracker.port}", rpc_key="farm",
                          work_dir=tmp_path / "db")
        np.testing.assert_allclose(tgt.run(tgt.build(model, x))[0], ref, rtol=1e-4, atol=1e-5)
    finally:
        for s in farm:
            s.terminate()
        tracker.terminate()


@pytest.mark.tvm
def test_tvm_rpc_unreachable_server_is_a_clear_error(tmp_path) -> None:
    tgt = targets.get("tvm-llvm", trials=0, rpc=f"127.0.0.1:{free_port()}", work_dir=tmp_path)
    with pytest.raises(targets.TargetError, match="cannot reach the TVM RPC server"):
        tgt.build(small_net(), torch.randn(1, 3, 8, 8))


@pytest.mark.tvm
@pytest.mark.parametrize("via", ["rpc", "rpc_tracker"])
def test_a_board_that_accepts_and_never_answers_is_a_clear_error_not_a_hang(via, tmp_path) -> None:
    """TVM's connect has no deadline; a server that takes the connection and says nothing
    (a hung board) must not hold a build forever."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        tgt = targets.get("tvm-llvm", trials=0, work_dir=tmp_path, rpc_timeout=2,
                          **{via: f"127.0.0.1:{silent.getsockname()[1]}"})
        start = time.monotonic()
        with pytest.raises(targets.TargetError, match="gave no session within 2 s.*--rpc-timeout"):
            tgt.session()
        assert time.monotonic() - start < 30
    with pytest.raises(targets.TargetError, match="rpc_timeout must be > 0"):
        targets.get("tvm-llvm", trials=0, rpc="127.0.0.1:1", rpc_timeout=0)


@pytest.mark.tvm
def test_a_board_that_freezes_mid_session_is_a_clear_error_not_a_hang(tmp_path) -> None:
    """A real TVM RPC server, stopped (SIGSTOP, with the session it forked) after the engine is
    on it: running the engine fails within the deadline and names the server."""
    import psutil
    from tvm import rpc

    server = rpc.Server(host="127.0.0.1", **ports())
    frozen: list[psutil.Process] = []
    try:
        tgt = targets.get("tvm-llvm", trials=0, rpc=f"127.0.0.1:{server.port}", rpc_timeout=5,
                          work_dir=tmp_path / "db")
        art = tgt.build(small_net(), torch.randn(1, 3, 8, 8))
        root = psutil.Process(server.proc._proc.pid)
        frozen = [root, *root.children(recursive=True)]
        for p in frozen:
            p.suspend()
        start = time.monotonic()
        with pytest.raises(targets.TargetError, match=f"127.0.0.1:{server.port} stopped answering while running "
                                                      "the engine .no reply in 5 s.*--rpc-timeout"):
            tgt.run(art)
        assert time.monotonic() - start < 30
    finally:
        for p in frozen:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.resume()
        server.terminate()


@pytest.mark.tvm
def test_the_emulated_board_logs_a_failed_session_and_serves_on(tmp_path, monkeypatch, caplog) -> None:
    """tools/arm_rpc_server.py serves each session in the board's own process: a session that
    fails (here a peer that sends garbage, which TVM's loop raises on) is logged, leaves the
    process where it was and removes its folder; TVM's loop would stop the board instead."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("arm_rpc_server", ROOT / "tools" / "arm_rpc_server.py")
    board = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(board)
    folders, real = [], board.utils.tempdir

    def tempdir():  # TVM's, remembering where it was (its path is gone once removed)
        folders.append(real())
        folders[-1].where = Path(folders[-1].path)
        return folders[-1]

    monkeypatch.setattr(board.utils, "tempdir", tempdir)
    ours, peer = socket.socketpair()
    peer.sendall(b"\x07" * 64)
    peer.close()
    here = Path.cwd()
    monkeypatch.setattr(board.server.logger, "propagate", True)  # TVM's logger writes to stderr only
    with caplog.at_level("ERROR"):
        board.serve_here(ours, ("127.0.0.1", 1), {}, None)  # returns: the listen loop takes the next client
    assert "session from ('127.0.0.1', 1) ended in an error" in caplog.text
    assert Path.cwd() == here and len(folders) == 1 and not folders[0].where.exists()


@pytest.mark.tvm
@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-gcc") is None,
                    reason="needs gcc-aarch64-linux-gnu (CI installs it with apt-get)")
def test_tvm_aarch64_artifact_is_an_arm_elf(tmp_path) -> None:
    tgt = targets.get("tvm-aarch64", trials=0, work_dir=tmp_path / "db")
    art = tgt.build(small_net(), torch.randn(1, 3, 16, 16), out_dir=tmp_path / "out")
    head = (tmp_path / "out" / "model.so").read_bytes()[:20]
    assert head[:4] == b"\x7fELF" and head[4] == 2  # 64-bit
    assert int.from_bytes(head[18:20], "little") == 183  # e_machine EM_AARCH64
    with pytest.raises(targets.TargetError, match="ARM device"):
        tgt.measure(art)
    with pytest.raises(targets.TargetError, match="--rpc"):
        targets.get("tvm-aarch64", trials=8)  # tuning needs the device


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_tensorrt_target_on_a_gpu(tmp_path) -> None:
    model, x = small_net(), torch.randn(1, 3, 16, 16)
    tgt = targets.get("tensorrt", precision="fp32")
    art = tgt.build(model, x, out_dir=tmp_path)
    np.testing.assert_allclose(tgt.run(art)[0], reference(model, x), rtol=1e-3, atol=1e-3)
    assert tgt.measure(art, QUICK).median_ms > 0 and (tmp_path / "model.plan").exists()


@pytest.mark.tvm
def test_tvm_tuning_fills_the_database_and_rebuilds_reuse_it(tmp_path) -> None:
    """A couple of meta-schedule trials per task; the second build of the same model tunes
    nothing and takes its schedules from the database (as the final engine build does)."""
    import time

    model, x = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU()).eval(), \
        torch.randn(1, 8, 8, 8)
    tgt = targets.get("tvm-llvm", threads=1, trials=2, work_dir=tmp_path / "db")
    art = tgt.build(model, x)
    np.testing.assert_allclose(tgt.run(art)[0], reference(model, x), rtol=1e-4, atol=1e-5)
    records = (tmp_path / "db" / "database_tuning_record.json").read_text().count("\n")
    assert records >= 1
    t0 = time.perf_counter()
    again = tgt.build(model, x)
    assert time.perf_counter() - t0 < 20  # tuning again would start worker pools: a minute here
    assert (tmp_path / "db" / "database_tuning_record.json").read_text().count("\n") == records
    np.testing.assert_allclose(tgt.run(again)[0], reference(model, x), rtol=1e-4, atol=1e-5)
