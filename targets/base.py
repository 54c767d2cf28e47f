"""What every backend shares: the Target protocol, its artifacts and how latency is timed.

Timing follows README's Architecture: warm up, run until both a minimum count and a minimum time are
reached, report the median with p10/p90 and IQR, and time again (up to `max_rounds`) when
the IQR is wide, keeping the tightest round. How it was timed travels with the numbers.
"""
from __future__ import annotations

import abc
import dataclasses
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from compiler.core.errors import BadInputError, LatpruneError
from compiler.core.lower import as_inputs
from compiler.core.rules import ENGINE_FUSES


class TargetError(LatpruneError):
    """A backend could not build or run a model (missing toolchain, failed build)."""


class TargetUnavailable(TargetError):
    """The backend's libraries or hardware are not present on this machine."""


@dataclass(frozen=True)
class Timing:
    """How a latency is measured; recorded in every latency table."""

    warmup: int = 10
    min_runs: int = 40
    min_seconds: float = 0.25
    max_rel_iqr: float = 0.05
    max_rounds: int = 3

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LatencyStats:
    """A latency measurement: median and spread in milliseconds, over `runs` timed calls."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    iqr_ms: float
    runs: int
    rounds: int = 1

    @property
    def rel_iqr(self) -> float:
        return self.iqr_ms / self.median_ms if self.median_ms > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    @staticmethod
    def from_samples(samples_ms: Sequence[float], rounds: int = 1) -> LatencyStats:
        a = np.asarray(samples_ms, dtype=np.float64)
        q10, q25, q50, q75, q90 = np.percentile(a, [10, 25, 50, 75, 90])
        return LatencyStats(float(q50), float(q10), float(q90), float(q75 - q25), int(a.size), rounds)


M = TypeVar("M")


def _tightest(one_round: Callable[[], M], spread: Callable[[M], float], timing: Timing) -> tuple[M, int]:
    """Rounds until one's spread is within `timing.max_rel_iqr`, at most `max_rounds`; the
    tightest round and how many were taken."""
    best: M | None = None
    for r in range(1, timing.max_rounds + 1):
        got = one_round()
        if best is None or spread(got) < spread(best):
            best = got
        if spread(best) <= timing.max_rel_iqr:
            break
    assert best is not None
    return best, r


def adaptive(round_samples: Callable[[], Sequence[float]], timing: Timing = Timing()) -> LatencyStats:
    """The one timing loop every target shares: rounds of samples (ms) until a round's spread
    (IQR / median) is within `timing.max_rel_iqr`, at most `max_rounds`; the tightest round wins.
    How one round samples is the target's: a host clock, TVM's evaluator, CUDA events."""
    best, rounds = _tightest(lambda: LatencyStats.from_samples(round_samples()), lambda s: s.rel_iqr, timing)
    return dataclasses.replace(best, rounds=rounds)


def time_cuda(launch: Callable[[], Any], stream: Any, timing: Timing = Timing()) -> LatencyStats:
    """Time `launch` (an enqueue on `stream`, not waited for) in GPU time between CUDA events
    recorded around each launch: no host work inside the interval."""
    for _ in range(timing.warmup):
        launch()

    def one_round() -> list[float]:
        samples: list[float] = []
        while len(samples) < timing.min_runs or sum(samples) < timing.min_seconds * 1e3:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(stream)
            launch()
            end.record(stream)
            end.synchronize()
            samples.append(start.elapsed_time(end))
        return samples

    return adaptive(one_round, timing)


def settled(measure: Callable[[], M], limit: float, attempts: int = 3,
            value: Callable[[M], float] = lambda s: s.median_ms) -> tuple[M, list[M]]:
    """A measurement judged against `limit` by its `value` (default: its median in ms).
    Interference on a shared host (another process, a frequency dip) only adds time, so a
    measurement over the limit is taken again, up to `attempts` in all, and the one of least
    value stands; returns it and every measurement taken."""
    taken = [measure()]
    while min(map(value, taken)) > limit and len(taken) < attempts:
        taken.append(measure())
    return min(taken, key=value), taken


@dataclass(frozen=True)
class Take:
    """One timing of an engine and, when a budget is a share of another engine's latency (0.5x
    of the unpruned model), of that reference timed beside it (Target.measure_beside): host
    drift over minutes (neighbours on a shared machine moved whole timings by up to 68% here)
    moves both, so their ratio holds where either time alone does not."""

    engine: LatencyStats
    reference: LatencyStats | None = None

    @property
    def value(self) -> float:
        """What a budget judges: the engine's share of the reference, or else its median in ms."""
        return self.engine.median_ms if self.reference is None else self.engine.median_ms / self.reference.median_ms


def take(target: Target, engine: Artifact, timing: Timing, reference: Artifact | None = None) -> Take:
    """The engine timed once, beside `reference` when there is one (Target.measure_beside)."""
    if reference is None:
        return Take(target.measure(engine, timing))
    ref, stats = target.measure_beside(engine, reference, timing)
    return Take(stats, ref)


def settle(target: Target, engine: Artifact, limit: float, timing: Timing,
           reference: Artifact | None = None) -> tuple[Take, list[Take]]:
    """The engine's takes judged against `limit` (in ms, or as a share of `reference`), retaken
    over it as `settled` does; returns the take that stands and every take."""
    return settled(lambda: take(target, engine, timing, reference), limit, value=lambda t: t.value)


def time_calls(call: Callable[[], Any], timing: Timing = Timing(),
               clock: Callable[[], float] = time.perf_counter) -> LatencyStats:
    """Time `call` (a blocking run of the engine) on the host clock: at least `min_runs` calls
    and `min_seconds` per round."""
    for _ in range(timing.warmup):
        call()

    def one_round() -> list[float]:
        samples: list[float] = []
        start = clock()
        while len(samples) < timing.min_runs or clock() - start < timing.min_seconds:
            t0 = clock()
            call()
            samples.append((clock() - t0) * 1e3)
        return samples

    return adaptive(one_round, timing)


def time_pair(reference: Callable[[], Any], call: Callable[[], Any], timing: Timing = Timing(),
              clock: Callable[[], float] = time.perf_counter, turn: int = 4) -> tuple[LatencyStats, LatencyStats]:
    """Time two engines in turns on the host clock: `turn` timed calls of the reference, then
    of the engine, and so on, each turn after one untimed call (the other engine has just run
    and taken the caches: a deployed engine runs on warm ones); each round lasts `min_seconds`
    per engine. On a shared host a busy spell lasts many calls (successive calls' times
    correlate at 0.67 on these 2-core hosts), so in turns it slows both engines alike and
    their ratio holds, where one timed after the other catches it in one of them only. The
    round whose larger spread is the smaller wins, both engines' stats from that same round."""
    return time_group(reference, [call], timing, clock, turn)[0]


Pair = tuple[LatencyStats, LatencyStats]  # (the reference's stats, the engine's), from one round


def time_group(reference: Callable[[], Any], calls: Sequence[Callable[[], Any]], timing: Timing = Timing(),
               clock: Callable[[], float] = time.perf_counter, turn: int = 4) -> list[Pair]:
    """time_pair for several engines beside one reference: all of them in turns, the reference
    and each engine `min_seconds` a round, so the reference takes 1 / (k + 1) of the time
    instead of half. Per engine, (the reference's stats, its own) from the round whose larger
    spread is the smaller; an engine whose round is within `max_rel_iqr` sits out the rounds
    after it, the reference never does."""
    for _ in range(timing.warmup):
        for fn in (reference, *calls):
            fn()
    best: dict[int, Pair] = {}
    rounds: dict[int, int] = {}

    def spread(pair: Pair) -> float:
        return max(x.rel_iqr for x in pair)

    pending = list(range(len(calls)))
    for r in range(1, timing.max_rounds + 1):
        if not pending:
            break
        fns = [reference, *(calls[i] for i in pending)]
        samples: list[list[float]] = [[] for _ in fns]
        start = clock()
        while len(samples[0]) < timing.min_runs or clock() - start < len(fns) * timing.min_seconds:
            for fn, into in zip(fns, samples):
                fn()
                for _ in range(turn):
                    t0 = clock()
                    fn()
                    into.append((clock() - t0) * 1e3)
        ref = LatencyStats.from_samples(samples[0])
        for i, got in zip(pending, samples[1:]):
            pair = (ref, LatencyStats.from_samples(got))
            if i not in best or spread(pair) < spread(best[i]):
                best[i] = pair
            rounds[i] = r
        pending = [i for i in pending if spread(best[i]) > timing.max_rel_iqr]
    return [(dataclasses.replace(best[i][0], rounds=rounds[i]), dataclasses.replace(best[i][1], rounds=rounds[i]))
            for i in range(len(calls))]


@dataclass
class Artifact:
    """A model built for one target: the loaded engine, its inputs, and its files if saved."""

    target: str
    handle: Any
    inputs: tuple[np.ndarray, ...]
    files: dict[str, Path] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def engine(self) -> str:
        """Which engine runs it: the target's own, or the one a target with several names in
        `info` (PyTorch: eager, cuda-graph, or the emitted aotinductor package)."""
        return self.info.get("engine", self.target)


def cpu_name() -> str:
    """The CPU model as the OS reports it: the device part of a CPU fingerprint."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_simd() -> str:
    """The widest x86 vector ISA, which sets ORT's NCHWc channel block (avx512: 16, avx2: 8)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return platform.machine()
    for isa in ("avx512f", "avx2", "avx", "neon", "asimd"):
        if isa in flags:
            return isa
    return platform.machine()


def as_numpy(example_inputs: torch.Tensor | Sequence[torch.Tensor]) -> tuple[np.ndarray, ...]:
    return tuple(t.detach().cpu().contiguous().numpy() for t in as_inputs(example_inputs))


def check_threads(threads: int) -> int:
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise BadInputError(f"threads must be a positive integer, got {threads!r}")
    return threads


class Target(abc.ABC):
    """A backend that builds a model into an engine and times it on its device."""

    name: str = ""
    channel_step: int = 8  # channel counts that keep the engine on its fast path
    declared_step: int | None = None  # the target's own step, where a measured one was given instead (get())
    fuses: tuple[str, ...] = ENGINE_FUSES  # op roles the engine folds into a conv/linear, in order

    @abc.abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """Everything a latency depends on besides the model: device, threads, versions, precision."""

    @abc.abstractmethod
    def build(self, model: torch.nn.Module, example_inputs: torch.Tensor | Sequence[torch.Tensor],
              out_dir: str | Path | None = None) -> Artifact:
        """Compile `model` for this target; with `out_dir`, also write its engine files there."""

    @abc.abstractmethod
    def run(self, artifact: Artifact, inputs: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
        """Run the engine once (on the example inputs by default) and return its outputs."""

    def measure(self, artifact: Artifact, timing: Timing = Timing()) -> LatencyStats:
        """Time the engine on its example inputs."""
        return time_calls(lambda: self.run(artifact), timing)

    def measure_beside(self, artifact: Artifact, reference: Artifact,
                       timing: Timing = Timing()) -> tuple[LatencyStats, LatencyStats]:
        """Time `reference` and the engine side by side: (reference's stats, the engine's). On the
        host clock in turns (time_pair); a target that times on its own clock (TVM's evaluator,
        CUDA events) times the reference, then the engine."""
        return self.measure_group([artifact], reference, timing)[0]

    def measure_group(self, artifacts: Sequence[Artifact], reference: Artifact,
                      timing: Timing = Timing()) -> list[Pair]:
        """measure_beside for several engines at once: on the host clock all in turns with one
        reference (time_group); on a target's own clock, each after the reference again."""
        if not self.times_on_host:
            return [(self.measure(reference, timing), self.measure(a, timing)) for a in artifacts]
        return time_group(lambda: self.run(reference), [(lambda a=a: self.run(a)) for a in artifacts], timing)

    @property
    def times_on_host(self) -> bool:
        """Whether engines are timed on the host clock around `run` (this class's `measure`), so
        that two can be timed in turns (time_pair); a target that overrides `measure` times on
        its own clock (TVM's evaluator, CUDA events)."""
        return type(self).measure is Target.measure

    def kernel_family(self, model: torch.nn.Module, example_inputs: torch.Tensor | Sequence[torch.Tensor]) -> str | None:
        """Which family of kernels the engine runs this (one-block) model on, read from what the
        engine compiled; None where the target has one family only. Engines leave their fast,
        blocked-layout kernels at channel counts they cannot block, for much slower ones."""
        return None

    def fallback(self) -> Target | None:
        """This target compiling onto its fallback kernel family only (what off-step counts get),
        so a table can time blocks there at any count; None where there is no such family."""
        return None

    @property
    def can_measure(self) -> bool:
        """Whether this target's device is reachable to time (and run) engines on."""
        return True

    @property
    def can_run(self) -> bool:
        """Whether engines can execute for their outputs: true where they can be timed, and on an
        emulated device, whose timings mean nothing but whose outputs do."""
        return self.can_measure

    def close(self) -> None:
        """Release remote sessions or devices; local targets hold nothing."""

    def __repr__(self) -> str:
        return f"<Target {self.name} {self.fingerprint()}>"
