"""Scoring a search's candidates in parallel: local worker processes, or actors on a Ray cluster.

Each worker receives the scoring job (graph, space, channel importance, calibration and
held-out batches) once, then scores Widths with one torch thread. The search hands over a
whole generation at a time and reads the scores back in its own order, so what it finds does
not depend on how many workers there are. Workers are started with `spawn` (a forked child
of a process that has run torch's OpenMP threads can hang), so a script that searches with
workers needs the usual `if __name__ == "__main__":` guard.
"""
from __future__ import annotations

import copy
import multiprocessing
import os
import pickle
import signal
import socket
import sys
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import replace
from operator import attrgetter

import torch
import torch.fx as fx

from .core.errors import BadInputError
from .core.space import Widths
from .evaluate import Evaluator, Job, Seconds, score

_JOB: Job | None = None


def _start(job: bytes) -> None:
    """Worker start: one torch thread; Ctrl-C is the parent's to handle (it cancels the rest)."""
    global _JOB
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    _JOB = _unpickled(job)


def _score(widths: Widths, screened: bool) -> tuple[float, Seconds]:
    assert _JOB is not None, "worker used before its start"
    return score(_JOB, widths, screened)


def _picklable(job: Job) -> bytes:
    """The job as bytes. The graph travels as a copy of its fx.Graph (node names and shape
    metadata intact) and the modules and attributes it uses: a GraphModule's own pickling
    re-traces its generated code with the tracer that made it, which loses both."""
    graph = copy.deepcopy(job.gm.graph)
    used = {n.target: attrgetter(n.target)(job.gm) for n in graph.nodes if n.op in ("call_module", "get_attr")}
    try:
        return pickle.dumps((replace(job, gm=None), used, graph))
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        raise BadInputError(f"the evaluation cannot be sent to worker processes ({exc}); give eval_fn as a "
                            "module-level function (CLI: --eval pkg.mod:fn) or search with workers=1") from None


def _unpickled(data: bytes) -> Job:
    """The job from `_picklable`'s bytes, pickled a moment ago by this search's own process."""
    job, used, graph = pickle.loads(data)
    return replace(job, gm=fx.GraphModule(used, graph))


class LocalPool:
    """`workers` local processes (concurrent.futures, spawn)."""

    def __init__(self, job: Job, workers: int) -> None:
        self.workers = workers
        self.executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_start, initargs=(_picklable(job),))

    def imap(self, items: list[tuple[Widths, bool]]) -> Iterator[tuple[int, tuple[float, Seconds]]]:
        futures: dict[Future[tuple[float, Seconds]], int] = {}
        try:
            futures = {self.executor.submit(_score, w, s): i for i, (w, s) in enumerate(items)}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    yield futures[f], f.result()
        except BrokenProcessPool:
            raise BadInputError("a search worker process died (out of memory?); search with fewer workers "
                                "(--workers) or a smaller --memory-limit") from None
        finally:
            for f in futures:
                f.cancel()  # on an error or Ctrl-C: what has not started never starts

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


class _RayScorer:
    """A Ray actor holding one copy of the job."""

    def __init__(self, job: bytes) -> None:
        torch.set_num_threads(1)
        self.job = _unpickled(job)

    def score(self, widths: Widths, screened: bool) -> tuple[float, Seconds]:
        return score(self.job, widths, screened)


class RayPool:
    """One actor per CPU (or `workers` of them) on a Ray cluster: `address` as ray.init takes it
    ('auto', 'ray://host:port'), or 'local' to start a Ray instance on this machine (its workers
    get this process's import path). On a cluster, a custom eval_fn's module must be importable
    on every node."""

    def __init__(self, job: Job, address: str, workers: int) -> None:
        try:
            import ray
        except ImportError:
            raise BadInputError("searching on Ray needs the ray package: pip install 'latprune[ray]'") from None
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            local = address == "local"
            _check_reachable(address)
            try:
                ray.init(address=None if local else address, num_cpus=workers if local and workers > 1 else None,
                         include_dashboard=False, log_to_driver=False, configure_logging=False,
                         runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}}
                         if local else None)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise BadInputError(f"cannot reach the Ray cluster at {address!r} ({exc}); start it (`ray start "
                                    "--head`) or pass its address, or 'local'") from None
        n = workers if workers > 1 else max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.workers = n
        ref = ray.put(_picklable(job))
        actor = ray.remote(num_cpus=1)(_RayScorer)
        self.actors = [actor.remote(ref) for _ in range(n)]

    def imap(self, items: list[tuple[Widths, bool]]) -> Iterator[tuple[int, tuple[float, Seconds]]]:
        ray = self.ray
        refs = {self.actors[i % len(self.actors)].score.remote(w, s): i for i, (w, s) in enumerate(items)}
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                yield refs[done[0]], ray.get(done[0])
        finally:
            for r in pending:
                ray.cancel(r)

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        if self.started:
            self.ray.shutdown()


def _check_reachable(address: str) -> None:
    """A HOST:PORT address that refuses a connection is said at once (ray.init retries for minutes)."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # 'local', 'auto': ray.init finds out quickly
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise BadInputError(f"cannot reach the Ray cluster at {address!r} ({exc}); start it (`ray start --head`) "
                            "or pass its address, or 'local'") from None


@contextmanager
def parallel(evaluator: Evaluator, workers: int, ray_address: str | None = None) -> Iterator[int]:
    """Gives `evaluator` a pool for the duration (none for one local worker: it scores in this
    process) and yields the number of workers."""
    if ray_address is None and workers <= 1:
        yield 1
        return
    pool = RayPool(evaluator.job(), ray_address, workers) if ray_address else LocalPool(evaluator.job(), workers)
    evaluator.pool = pool
    try:
        yield pool.workers
    finally:
        evaluator.pool = None
        pool.close()
