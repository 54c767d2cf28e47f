"""`tvm-llvm`: TVM (Relax) on this host's CPU, each graph tuned with meta-schedule.

Untuned TVM convolutions run ~50x slower than ORT (README's Architecture), so a latency table of
untuned schedules would mislead: every build tunes its tasks (`trials` per task) into a
tuning database (`work_dir`) that later builds reuse, the final engine included. Timing
runs locally, or on a TVM RPC server (`rpc`) or a free device of a tracker key
(`rpc_tracker` + `rpc_key`); `tvm-aarch64` is this target cross-compiled for ARM.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compiler.core.atomic import atomic_path
from compiler.core.lower import as_inputs

from . import _fast_inspect
from .base import (Artifact, LatencyStats, Target, TargetError, TargetUnavailable, Timing, adaptive,
                   as_numpy, check_threads, cpu_name, cpu_simd)

# For a session, including the wait for a free board (a board serves one session at a time, so a
# second build queues at the tracker, or in the server's backlog, until the first ends), and for
# each call in it.
RPC_TIMEOUT_S = 600.0


def _tvm() -> Any:
    try:
        with _fast_inspect.patched():
            import tvm
            from tvm import relax  # noqa: F401
            from tvm.s_tir import meta_schedule  # noqa: F401  (parses TVMScript intrinsics on import)
    except ImportError as exc:
        raise TargetUnavailable(f"TVM is not installed ({exc}); pip install 'latprune[tvm]'") from None
    return tvm


class TvmLlvm(Target):
    """TVM's LLVM CPU backend for this host (or a remote CPU of the same kind over RPC)."""

    name = "tvm-llvm"

    def __init__(self, threads: int = 1, trials: int = 16, work_dir: str | os.PathLike | None = None,
                 rpc: str | None = None, rpc_tracker: str | None = None, rpc_key: str = "latprune",
                 mcpu: str | None = None, rpc_timeout: float = RPC_TIMEOUT_S) -> None:
        self.threads = check_threads(threads)
        os.environ.setdefault("TVM_NUM_THREADS", str(self.threads))
        tvm = _tvm()
        if trials < 0:
            raise TargetError(f"trials must be >= 0, got {trials}")
        self.trials = trials
        self.work_dir = Path(work_dir) if work_dir else Path("build") / "tvm_tuning" / self.name
        self.rpc, self.rpc_tracker, self.rpc_key = rpc, rpc_tracker, rpc_key
        if not rpc_timeout > 0:
            raise TargetError(f"rpc_timeout must be > 0 seconds, got {rpc_timeout}")
        self.rpc_timeout = float(rpc_timeout)
        self.mcpu = mcpu or tvm.target.codegen.llvm_get_system_cpu()  # -mcpu=native falls back silently
        self.channel_step = 16 if cpu_simd() == "avx512f" else 8
        self._session: Any = None
        self._device_info: dict[str, Any] | None = None

    # ---- what makes this target ------------------------------------------------------
    def target_dict(self) -> dict[str, Any]:
        return {"kind": "llvm", "mcpu": self.mcpu, "num-cores": self.threads}

    def fingerprint(self) -> dict[str, Any]:
        import tvm

        device = f"rpc:{self.rpc_tracker}/{self.rpc_key}" if self.rpc_tracker else (f"rpc:{self.rpc}" if self.rpc else cpu_name())
        return {"target": self.name, "device": device, "mcpu": self.mcpu, "threads": self.threads,
                "tvm": tvm.__version__, "tuning_trials_per_task": self.trials,
                "cost_model": self.cost_model() if self.trials else None, "precision": "fp32"}

    @property
    def remote(self) -> bool:
        return bool(self.rpc or self.rpc_tracker)

    # ---- build -------------------------------------------------------------------------
    def lower_relax(self, model: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[Any, list[np.ndarray]]:
        """torch.export -> Relax IRModule with the weights split off as inputs."""
        from tvm import relax
        from tvm.relax.frontend.torch import from_exported_program

        try:
            ep = torch.export.export(model.eval(), inputs)
            mod = from_exported_program(ep, keep_params_as_input=True)
        except Exception as exc:
            raise TargetError(f"TVM's PyTorch frontend could not import the model: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
        mod, params = relax.frontend.detach_params(mod)
        return mod, [p.numpy() for p in params.get("main", [])]

    def tune_and_compile(self, mod: Any) -> Any:
        """Tune every task `trials` times into the database, then compile with its best schedules."""
        import tvm
        from tvm import relax

        target = tvm.target.Target(self.target_dict())
        self.work_dir.mkdir(parents=True, exist_ok=True)
        try:
            with target:
                if self.trials > 0:
                    mod = relax.transform.DecomposeOpsForInference()(mod)
                    mod = relax.pipeline.zero_pipeline()(mod)
                    self._tune_missing(mod, target)
                    mod = relax.transform.MetaScheduleApplyDatabase(str(self.work_dir))(mod)
                return tvm.compile(mod, target=target)
        except TargetError:
            raise
        except Exception as exc:
            raise TargetError(f"TVM could not build the model for {self.target_dict()}: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}") from None

    def prepare(self, models: Sequence[tuple[torch.nn.Module, Sequence[torch.Tensor]]]) -> None:
        """Tune the tasks of many models in one meta-schedule run. Each run starts its own
        builder and runner processes (tens of seconds here), so a profile tunes its whole grid
        at once and the builds that follow come straight from the database."""
        if self.trials <= 0 or not models:
            return
        with _fast_inspect.patched():
            self._prepare(models)

    def _prepare(self, models: Sequence[tuple[torch.nn.Module, Sequence[torch.Tensor]]]) -> None:
        import tvm
        from tvm import relax

        target = tvm.target.Target(self.target_dict())
        mods = []
        with target:
            for model, inputs in models:
                mod, _ = self.lower_relax(model, as_inputs(inputs))
                mod = relax.transform.DecomposeOpsForInference()(mod)
                mods.append(relax.pipeline.zero_pipeline()(mod))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._tune_missing(mods, target)

    def _tune_missing(self, mods: Any, target: Any) -> None:
        """Tune only the tasks the database has no schedule for: a block (or the final engine)
        whose tasks were tuned while profiling builds straight from the database."""
        from tvm.s_tir import meta_schedule as ms
        from tvm.s_tir.meta_schedule.relax_integration import extract_tasks, extracted_tasks_to_tune_contexts

        logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
        db = ms.database.JSONDatabase(work_dir=str(self.work_dir))
        missing, seen = [], set()
        for mod in mods if isinstance(mods, list) else [mods]:
            for t in extract_tasks(mod, target):
                key = tvm_structural_hash(t.dispatched[0])
                if key not in seen and db.query_tuning_record(t.dispatched[0], target, t.task_name) is None:
                    seen.add(key)
                    missing.append(t)
        if not missing:
            return
        with _unnamed_log_handlers_aside():
            contexts, weights = extracted_tasks_to_tune_contexts(missing, str(self.work_dir), seed=0,
                                                                 num_threads=self.threads)
            ms.tune.tune_tasks(tasks=contexts, task_weights=weights, work_dir=str(self.work_dir),
                               max_trials_global=self.trials * len(contexts), max_trials_per_task=self.trials,
                               num_trials_per_iter=min(self.trials, 64), builder=self.ms_builder(),
                               runner=self.ms_runner(), database=db, cost_model=self.cost_model())

    @staticmethod
    def cost_model() -> str:
        """XGBoost's cost model when it is installed; otherwise random (fine for small budgets,
        where the evolutionary search barely trains a model anyway)."""
        try:
            import xgboost  # noqa: F401
            return "xgb"
        except ImportError:
            return "random"

    def ms_builder(self) -> Any:
        from tvm.s_tir import meta_schedule as ms

        return ms.builder.LocalBuilder(max_workers=self.threads, timeout_sec=300, initializer=_worker_init())

    def ms_runner(self) -> Any:
        """Candidates are timed where the engine will run: locally, or through the RPC tracker."""
        from tvm.s_tir import meta_schedule as ms

        if self.rpc_tracker:
            host, port = _addr(self.rpc_tracker)
            return ms.runner.RPCRunner(ms.runner.RPCConfig(tracker_host=host, tracker_port=port,
                                                           tracker_key=self.rpc_key, session_timeout_sec=300))
        if self.rpc:
            raise TargetError("meta-schedule times candidates through an RPC tracker: give --rpc-tracker "
                              "HOST:PORT --rpc-key KEY to tune on a remote device (--rpc alone can time "
                              "engines but not tune them; or use --trials 0)")
        return ms.runner.LocalRunner(timeout_sec=120)

    def export(self, ex: Any, path: Path) -> None:
        """Write the engine as a shared library (atomically)."""
        with atomic_path(path) as tmp:
            ex.export_library(str(tmp.with_suffix(".so")))
            os.replace(tmp.with_suffix(".so"), tmp)

    def build(self, model: torch.nn.Module, example_inputs: torch.Tensor | Sequence[torch.Tensor],
              out_dir: str | Path | None = None) -> Artifact:
        with _fast_inspect.patched():
            return self._build(model, example_inputs, out_dir)

    def _build(self, model: torch.nn.Module, example_inputs: torch.Tensor | Sequence[torch.Tensor],
               out_dir: str | Path | None) -> Artifact:

        inputs = as_inputs(example_inputs)
        mod, params = self.lower_relax(model, inputs)
        ex = self.tune_and_compile(mod)
        files: dict[str, Path] = {}
        if out_dir is not None:
            out = Path(out_dir)
            self.export(ex, out / "model.so")
            with atomic_path(out / "params.npz") as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, *params)
            files = {"engine": out / "model.so", "params": out / "params.npz", "tuning_db": self.work_dir}
        return self._load(ex, as_numpy(inputs), params, files)

    def _load(self, ex: Any, inputs: tuple[np.ndarray, ...], params: list[np.ndarray],
              files: dict[str, Path]) -> Artifact:
        import tvm
        from tvm import relax

        if self.remote:
            sess = self.session()
            with tempfile.TemporaryDirectory() as d:
                lib = Path(d) / "model.so"
                self.export(ex, lib)
                self._on_board("uploading the engine", lambda: sess.upload(str(lib)))

            def load() -> tuple[Any, Any]:
                dev = sess.cpu()
                return relax.VirtualMachine(sess.load_module("model.so"), dev), dev

            vm, dev = self._on_board("loading the engine", load)
        else:
            dev = tvm.cpu()
            vm = relax.VirtualMachine(ex, dev)
        self._on_board("sending the inputs and weights",
                       lambda: vm.set_input("main", *[tvm.runtime.tensor(a, dev) for a in (*inputs, *params)]))
        return Artifact(self.name, (vm, dev), inputs, files, {"n_inputs": len(inputs)})

    # ---- run and time ------------------------------------------------------------------
    def run(self, artifact: Artifact, inputs: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
        import tvm

        vm, dev = artifact.handle
        if inputs is not None:
            raise TargetError("tvm targets run on the inputs they were built with; rebuild for new inputs")

        def run() -> list[np.ndarray]:
            vm.invoke_stateful("main")
            out = vm.get_outputs("main")
            return [out.numpy()] if isinstance(out, tvm.runtime.Tensor) else [o.numpy() for o in out]

        return self._on_board("running the engine", run)

    def measure(self, artifact: Artifact, timing: Timing = Timing()) -> LatencyStats:
        """TVM's own evaluator (on the device, no Python in the loop): `min_runs` repeats of at
        least min_seconds / min_runs each, repeated while the IQR is wide."""
        vm, dev = artifact.handle
        per_repeat_ms = max(1, int(timing.min_seconds * 1000 / max(timing.min_runs, 1)))
        self.run(artifact)  # warm-up (also loads the module on a remote device)
        evaluate = self._on_board("timing the engine", lambda: vm.time_evaluator(
            "invoke_stateful", dev, number=1, repeat=timing.min_runs, min_repeat_ms=per_repeat_ms))
        return adaptive(lambda: self._on_board("timing the engine",
                                               lambda: [t * 1e3 for t in evaluate("main").results]), timing)

    # ---- RPC ---------------------------------------------------------------------------
    def session(self) -> Any:
        """One RPC session per target: a direct server, or whichever device of the key the
        tracker hands out (a device farm is more servers under one key). Getting it has a
        deadline: TVM's connect has none, and a board that accepts and never answers (a hung
        server, a session stuck in its handshake) would hold a build and its CI job forever."""
        if self._session is None:
            from tvm import rpc

            def connect() -> Any:
                if self.rpc_tracker:
                    host, port = _addr(self.rpc_tracker)
                    return rpc.connect_tracker(host, port).request(self.rpc_key, priority=1, session_timeout=0)
                host, port = _addr(self.rpc)
                return rpc.connect(host, port)

            try:
                self._session = _within(self.rpc_timeout, connect)
            except _NoReply:
                busy = f" (or every device of key {self.rpc_key!r} stayed busy)" if self.rpc_tracker else ""
                raise TargetError(f"the TVM RPC {self.rpc_where} gave no session within {self.rpc_timeout:g} s{busy}; "
                                  "check that its server answers (restart `python -m tvm.exec.rpc_server` on "
                                  "the device), or allow longer with --rpc-timeout") from None
            except Exception as exc:
                raise TargetError(f"cannot reach the TVM RPC {self.rpc_where}: "
                                  f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; start "
                                  "`python -m tvm.exec.rpc_server` on the device (or check the address)") from None
        return self._session

    @property
    def rpc_where(self) -> str:
        """Which RPC endpoint this target talks to, for messages."""
        return f"{'tracker' if self.rpc_tracker else 'server'} at {self.rpc_tracker or self.rpc}"

    def _on_board(self, what: str, call: Callable[[], Any]) -> Any:
        """call(), under the session's deadline when it talks to a remote device: a board that
        stops answering mid-session (frozen, or its network gone without a reset) fails the
        build, and the session is dropped, instead of holding the build forever."""
        if not self.remote:
            return call()
        try:
            return _within(self.rpc_timeout, call)
        except _NoReply:
            self.close()
            raise TargetError(f"the device behind the TVM RPC {self.rpc_where} stopped answering while {what} "
                              f"(no reply in {self.rpc_timeout:g} s); check the board, or allow longer with "
                              "--rpc-timeout") from None

    def device_info(self) -> dict[str, Any]:
        """What the remote device declares of itself: tools/arm_rpc_server.py declares an
        emulated board; a plain TVM RPC server (a real board) declares nothing."""
        if not self.remote:
            return {}
        if self._device_info is None:
            try:
                ask = self.session().get_function  # resolves the name on the device, so under the deadline
                info = json.loads(self._on_board("asking what it is", lambda: ask("latprune.device_info")()))
                self._device_info = info if isinstance(info, dict) else {}
            except (AttributeError, ValueError):  # no such function there: an ordinary server
                self._device_info = {}
        return self._device_info

    @property
    def emulated(self) -> bool:
        return bool(self.device_info().get("emulated"))

    def close(self) -> None:
        self._session = None
        self._device_info = None


class _NoReply(Exception):
    """_within's deadline passed (not a TimeoutError: a socket's own timeout inside the call is one)."""


def _within(seconds: float, call: Callable[[], Any]) -> Any:
    """call()'s result, or _NoReply once `seconds` pass. The call runs on a daemon thread
    (TVM's FFI lets go of the GIL while it blocks on a socket), which is left parked there on
    a timeout: the process can still exit, and nothing else holds that connection."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # handed to the caller's thread below
            box["error"] = exc

    thread = threading.Thread(target=run, name="latprune-rpc", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise _NoReply(seconds)
    if "error" in box:
        raise box["error"]
    return box["value"]


@contextlib.contextmanager
def _unnamed_log_handlers_aside() -> Iterator[None]:
    """meta-schedule rebuilds its loggers' config from the names of the handlers on its logger
    and fails on an unnamed one (pytest's capture handlers land there after a first tuning run
    in a process); such handlers are set aside while it sets up and tunes."""
    logger = logging.getLogger("tvm.s_tir.meta_schedule")
    unnamed = [h for h in logger.handlers if h.get_name() is None]
    for h in unnamed:
        logger.removeHandler(h)
    try:
        yield
    finally:
        for h in unnamed:
            logger.addHandler(h)


def _worker_init() -> Any:
    """The fast inspect.stack for builder processes, sent by value (no project imports there)."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(_fast_inspect)
    return _fast_inspect.install


def tvm_structural_hash(mod: Any) -> int:
    import tvm_ffi

    return int(tvm_ffi.structural_hash(mod))


def _addr(text: str | None) -> tuple[str, int]:
    host, _, port = (text or "").rpartition(":")
    if not host or not port.isdigit():
        raise TargetError(f"RPC address {text!r} must be HOST:PORT")
    return host, int(port)
