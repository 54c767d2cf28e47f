"""LatencyTable: per-block latency over a channel grid for one target fingerprint.

The file is versioned JSON: schema and version, the target fingerprint, how latency was
timed, per-block grids with per-point stats (median, p10, p90, runs), and per-model
end-to-end corrections with their fit error. A sha256 over the content catches corrupt
and hand-edited files; loading never guesses.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock

from compiler.core.atomic import atomic_write_text
from compiler.core.hashing import digest, json_text
from compiler.core.rules import ENGINE_FUSES
from compiler.core.space import PruningSpace, Widths

from .errors import TableError
from .grid import bracket, on_step, residue_class, step_class
from .predict import Predictor, profile_noise_pct, stated_error

SCHEMA = "latprune.latency-table"
VERSION = 1


def _product(grid: list[list[int]]) -> list[tuple[int, ...]]:
    return [tuple(int(v) for v in p) for p in np.array(np.meshgrid(*grid, indexing="ij")).reshape(len(grid), -1).T]


def _points_from(rows: list[list[float]], n: int) -> dict[tuple[int, ...], list[float]]:
    points = {}
    for row in rows:
        if len(row) != n + 4 or not all(np.isfinite(row)) or min(row[n:n + 3]) < 0 or row[n + 3] < 1:
            raise ValueError(f"bad point {row!r}")
        points[tuple(int(v) for v in row[:n])] = [float(x) for x in row[n:n + 3]] + [int(row[n + 3])]
    return points


def _check_grid(grid: list[list[int]], n: int) -> None:
    if len(grid) != n or any(not g or sorted(g) != g for g in grid):
        raise ValueError("grid does not match vars or is not sorted")


@dataclass
class Entry:
    """One block's measurements: a full grid product, plus off-step probes. Where the engine has
    a fallback kernel family (ORT's plain NCHW convs beside its blocked NCHWc ones), also which
    residue classes of each var keep the fast family (`fast`, read from the engine's compiled
    graph at the probes) and a coarser grid timed on the fallback kernels (`slow_grid`)."""

    vars: tuple[str, ...]
    grid: list[list[int]]
    channel_step: int
    points: dict[tuple[int, ...], list[float]] = field(default_factory=dict)  # -> [median, p10, p90, runs]
    fast: list[list[int]] | None = None  # per var: grid.step_class values on the fast kernels; None: not probed
    slow_grid: list[list[int]] | None = None
    slow: dict[tuple[int, ...], list[float]] = field(default_factory=dict)

    def grid_points(self) -> list[tuple[int, ...]]:
        return _product(self.grid)

    def slow_points(self) -> list[tuple[int, ...]]:
        return _product(self.slow_grid) if self.slow_grid else []

    def missing(self) -> list[tuple[int, ...]]:
        return [p for p in self.grid_points() if p not in self.points] + \
            [p for p in self.slow_points() if p not in self.slow]

    def compile(self, overhead_ms: float) -> _Compiled:
        if self.missing():
            raise TableError(f"block entry is incomplete ({len(self.missing())} grid points missing); "
                             "resume its profile to finish it")
        return _Compiled(self, overhead_ms)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"vars": list(self.vars), "grid": self.grid, "step": self.channel_step,
                             "points": [[*k, *v] for k, v in sorted(self.points.items())]}
        if self.fast is not None:  # written only when probed: older tables stay byte-identical
            d["fast"] = self.fast
        if self.slow_grid:
            d["slow_grid"] = self.slow_grid
            d["slow"] = [[*k, *v] for k, v in sorted(self.slow.items())]
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Entry:
        n = len(d["vars"])
        _check_grid(d["grid"], n)
        fast = d.get("fast")
        if fast is not None and (len(fast) != n or not all(isinstance(c, int) and c >= 0 for f in fast for c in f)):
            raise ValueError(f"fast classes {fast!r}")
        slow_grid = d.get("slow_grid")
        if slow_grid is not None:
            _check_grid(slow_grid, n)
        return Entry(tuple(d["vars"]), [[int(v) for v in g] for g in d["grid"]], int(d["step"]),
                     _points_from(d["points"], n), [[int(c) for c in f] for f in fast] if fast is not None else None,
                     [[int(v) for v in g] for g in slow_grid] if slow_grid else None, _points_from(d.get("slow", []), n))


def _array(grid: list[list[int]], points: dict[tuple[int, ...], list[float]], overhead_ms: float) -> np.ndarray:
    ms = np.zeros([len(g) for g in grid])
    for idx in np.ndindex(*ms.shape):
        ms[idx] = max(points[tuple(grid[i][j] for i, j in enumerate(idx))][0] - overhead_ms, 0.0)
    return ms


def _interpolate(grid: list[np.ndarray], ms: np.ndarray, values: Sequence[float]) -> float:
    """Multilinear interpolation of a grid of latencies (extrapolating below it, clamped at 0)."""
    corners = [bracket(g, v) for g, v in zip(grid, values)]
    total = 0.0
    for pick in np.ndindex(*([2] * len(corners))):
        w, idx = 1.0, []
        for (lo, hi, t), p in zip(corners, pick):
            w *= t if p else 1.0 - t
            idx.append(hi if p else lo)
        if w:
            total += w * ms[tuple(idx)]
    return max(total, 0.0)


class _Compiled:
    """An entry as arrays, ready for fast lookups."""

    def __init__(self, e: Entry, overhead_ms: float) -> None:
        self.grid = [np.asarray(g, dtype=np.float64) for g in e.grid]
        self.channel_step = e.channel_step
        self.ms = _array(e.grid, e.points, overhead_ms)
        self.penalty = [self._penalty(e, i, overhead_ms) for i in range(len(e.grid))]
        self.fast = [set(f) for f in e.fast] if e.fast is not None else None
        self.slow_grid = [np.asarray(g, dtype=np.float64) for g in e.slow_grid] if e.slow_grid else None
        self.slow_ms = _array(e.slow_grid, e.slow, overhead_ms) if e.slow_grid else None

    def _penalty(self, e: Entry, i: int, overhead_ms: float) -> dict[int, float]:
        """Per residue class of var i (grid.residue_class): measured off-step latency over the
        on-step latency just above it (>= 1 only if the hardware really pays; a penalty below
        1 is kept as measured)."""
        ratios: dict[int, list[float]] = {}
        for key, stats in e.points.items():
            if key[i] % e.channel_step and key[i] not in e.grid[i] and all(
                    key[j] in e.grid[j] for j in range(len(key)) if j != i):
                up = list(key)
                up[i] = -(-key[i] // e.channel_step) * e.channel_step
                base = self._at(tuple(up))
                if base > 0:
                    ratios.setdefault(residue_class(key[i], e.channel_step), []).append(
                        max(stats[0] - overhead_ms, 0.0) / base)
        return {c: float(np.median(r)) for c, r in ratios.items()}

    def _penalty_at(self, i: int, v: int) -> float:
        """The penalty of var i's measured class nearest v's (in powers of two; the lower on a
        tie); 1 where no off-step count was measured."""
        pens = self.penalty[i]
        if not pens:
            return 1.0
        c = residue_class(v, self.channel_step)
        return pens[min(pens, key=lambda m: (abs(np.log2(m) - np.log2(c)), m))]

    def _at(self, values: Sequence[float]) -> float:
        return _interpolate(self.grid, self.ms, values)

    def __call__(self, values: Sequence[int]) -> float:
        return self.price(values)[0]

    def price(self, values: Sequence[int]) -> tuple[float, bool]:
        """(ms, whether on the fallback kernels). On the fast kernels: the next step up, times
        the measured penalty of each off-step count's class. At a count whose class the engine
        runs on its fallback kernels: the fallback grid at the counts themselves (those kernels
        do not pad to the step)."""
        looked, pen = [], 1.0
        for i, (g, v) in enumerate(zip(self.grid, values)):
            u, off = on_step(int(v), g, self.channel_step)
            if off and self.slow_ms is not None and step_class(int(v), self.channel_step) not in self.fast[i]:
                # the fallback grid's top is one count below the full size
                top = [min(int(c), int(g[-1])) for c, g in zip(values, self.slow_grid)]
                return _interpolate(self.slow_grid, self.slow_ms, top), True
            looked.append(u)
            if off:
                pen *= self._penalty_at(i, int(v))
        return self._at(looked) * pen, False


@dataclass
class LatencyTable:
    """Block latencies for one target fingerprint, plus per-model end-to-end corrections."""

    fingerprint: dict[str, Any]
    timing: dict[str, Any]
    channel_step: int
    overhead_ms: float = 0.0
    entries: dict[str, Entry] = field(default_factory=dict)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    fuses: tuple[str, ...] = ENGINE_FUSES  # what the target's engine folds into a conv: how blocks were cut
    last_profile: Any = field(default=None, compare=False, repr=False)  # ProfileStats of the run that made it

    @property
    def device(self) -> str:
        """"target (device)": how messages name what the table was measured on."""
        return f"{self.fingerprint.get('target')} ({self.fingerprint.get('device')})"

    # ---- files -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        body = {"schema": SCHEMA, "version": VERSION, "fingerprint": self.fingerprint,
                "timing": self.timing, "step": self.channel_step, "overhead_ms": self.overhead_ms,
                "entries": {k: e.to_dict() for k, e in sorted(self.entries.items())},
                "models": dict(sorted(self.models.items()))}
        if tuple(self.fuses) != ENGINE_FUSES:  # written only when it differs: older tables stay byte-identical
            body["fuses"] = list(self.fuses)
        body["sha256"] = _digest(body)
        return body

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically; under a file lock, merging with what another writer saved."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            if path.exists():
                try:
                    on_disk = load(path)
                except TableError:
                    on_disk = None  # ours replaces a corrupt file only if we own its fingerprint
                if on_disk is not None and on_disk.fingerprint == self.fingerprint:
                    self.merge(on_disk)
            atomic_write_text(path, json.dumps(self.to_dict(), indent=1, sort_keys=False) + "\n")

    def merge(self, other: LatencyTable) -> LatencyTable:
        """Add another table's measurements (same fingerprint only); ours win on overlap. Block
        times scaled to another metronome time are rescaled to ours."""
        diff = fingerprint_mismatch(self.fingerprint, other.fingerprint)
        if diff:
            raise TableError("cannot merge tables measured on different targets: " + "; ".join(diff))
        ours, theirs = _metronome_ms(self.timing), _metronome_ms(other.timing)
        if ours is None and theirs is not None:
            self.timing["metronome"] = dict(other.timing["metronome"])
        factor = ours / theirs if ours is not None and theirs is not None else 1.0

        def rescaled(points: dict[tuple[int, ...], list[float]]) -> dict[tuple[int, ...], list[float]]:
            return {p: [v * factor for v in s[:3]] + s[3:] for p, s in points.items()}
        for k, e in other.entries.items():
            mine = self.entries.get(k)
            if mine is None:
                self.entries[k] = Entry(e.vars, [list(g) for g in e.grid], e.channel_step, rescaled(e.points),
                                        e.fast, e.slow_grid, rescaled(e.slow))
                continue
            mine.grid = [sorted(set(a) | set(b)) for a, b in zip(mine.grid, e.grid)]
            for p, s in rescaled(e.points).items():
                mine.points.setdefault(p, s)
            if mine.fast is None and e.fast is not None:
                mine.fast, mine.slow_grid = [list(f) for f in e.fast], e.slow_grid
            if mine.slow_grid == e.slow_grid:
                for p, s in rescaled(e.slow).items():
                    mine.slow.setdefault(p, s)
        for k, m in other.models.items():
            self.models.setdefault(k, m)
        return self

    # ---- checks ------------------------------------------------------------------------
    def check_target(self, fingerprint: dict[str, Any], force: bool = False) -> None:
        """Refuse to predict for a target this table was not measured on (unless forced)."""
        diff = fingerprint_mismatch(fingerprint, self.fingerprint)
        if diff and not force:
            raise TableError("latency table was measured on a different target: " + "; ".join(diff)
                             + ". Profile this target (`latprune profile`), or force=True / --force "
                               "to use it anyway")

    def summary(self) -> dict[str, Any]:
        n_points = sum(len(e.points) + len(e.slow) for e in self.entries.values())
        complete = sum(1 for e in self.entries.values() if not e.missing())
        off = {k: m.get("off_step_error_pct") for k, m in self.models.items()}
        fits = {k: {"name": m.get("name"), "variants": len(m.get("variants", [])),
                    **m.get("correction", {}), **m.get("fit_error_pct", {}),
                    "bound_pct": stated_error(m.get("fit_error_pct"), len(m.get("variants", [])), "loo_abs", "loo_max_abs"),
                    "off_step": off[k] and off[k] | {"bound_pct": stated_error(off[k], off[k]["n"], "abs", "max_abs")},
                    "noise_pct": profile_noise_pct(m)}
                for k, m in self.models.items()}
        return {"fingerprint": self.fingerprint, "timing": self.timing, "step": self.channel_step,
                "overhead_ms": self.overhead_ms, "entries": len(self.entries),
                "complete_entries": complete, "points": n_points,
                "grids": {k: e.grid for k, e in self.entries.items()},
                "fallback_grids": {k: e.slow_grid for k, e in self.entries.items() if e.slow_grid}, "models": fits}

    # ---- prediction --------------------------------------------------------------------
    def predictor(self, model: torch.nn.Module, example_inputs: Any,
                  fingerprint: dict[str, Any] | None = None, force: bool = False,
                  space: PruningSpace | None = None) -> Predictor:
        """A fast widths -> ms function for one model (lowered and analysed once; pass the
        lowered graph and its space to share them with a search)."""
        if fingerprint is not None:
            self.check_target(fingerprint, force)
        return Predictor(self, model, example_inputs, space)

    def predict(self, model: torch.nn.Module, example_inputs: Any, widths: Widths | None = None,
                with_error: bool = False) -> float | tuple[float, float | None]:
        """Predicted end-to-end latency in ms of `model` pruned to `widths`; with `with_error`,
        (ms, expected error in % or None where the table has no evidence for these widths)."""
        pred = self.predictor(model, example_inputs)
        return (pred(widths), pred.error_pct(widths)) if with_error else pred(widths)


def _metronome_ms(timing: dict[str, Any]) -> float | None:
    """The metronome's time a table's block times are scaled to (latency_tables.profile), or
    None for a table profiled without one (block times as timed)."""
    m = timing.get("metronome")
    return float(m["ms"]) if isinstance(m, dict) else None


def fingerprint_mismatch(want: dict[str, Any], have: dict[str, Any]) -> list[str]:
    return [f"{k}: table has {have.get(k)!r}, target has {want.get(k)!r}"
            for k in sorted(set(want) | set(have)) if want.get(k) != have.get(k)]


def _digest(body: dict[str, Any]) -> str:
    return digest(json_text({k: v for k, v in body.items() if k != "sha256"}, compact=True), length=None)


def load(path: str | os.PathLike) -> LatencyTable:
    """Read and fully validate a table file; any defect is a TableError naming it."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise TableError(f"cannot read latency table {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise TableError(f"{path} is not a latency table (not UTF-8 text; a .latprune model is read by "
                         "`latprune show`)") from None
    if not text.lstrip().startswith("{"):
        raise TableError(f"{path} is not a latency table (not a JSON object); give the .json that "
                         "`latprune profile` wrote")
    try:
        d = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TableError(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg}); the table is corrupt "
                         "(damaged or cut short): profile again into a new file") from None
    if not isinstance(d, dict) or d.get("schema") != SCHEMA:
        raise TableError(f"{path} is not a latprune latency table (schema "
                         f"{d.get('schema') if isinstance(d, dict) else None!r}, expected {SCHEMA!r})")
    if d.get("version") != VERSION:
        raise TableError(f"{path} has table version {d.get('version')!r}; this latprune reads version "
                         f"{VERSION}: profile again with this version")
    if d.get("sha256") != _digest(d):
        raise TableError(f"{path} fails its checksum: it was edited by hand or damaged. Tables are "
                         "measurements; re-profile rather than edit them")
    try:
        entries = {k: Entry.from_dict(e) for k, e in d["entries"].items()}
        table = LatencyTable(dict(d["fingerprint"]), dict(d["timing"]), int(d["step"]), float(d["overhead_ms"]),
                             entries, dict(d["models"]), tuple(d.get("fuses", ENGINE_FUSES)))
        _check_sense(table)
        return table
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise TableError(f"{path} is malformed ({type(exc).__name__}: {exc}); profile again") from None


def _check_sense(t: LatencyTable) -> None:
    """What a checksum cannot vouch for (it can be recomputed over anything): values a profile
    could have written. Raises ValueError naming the first that is not."""
    if not set(t.fuses) <= {"norm", "activation"} or len(set(t.fuses)) != len(t.fuses):
        raise ValueError(f"fuses {list(t.fuses)}")
    if not t.entries:
        raise ValueError("no block entries")
    if t.channel_step < 1 or not (np.isfinite(t.overhead_ms) and t.overhead_ms >= 0):
        raise ValueError(f"step {t.channel_step} / overhead_ms {t.overhead_ms}")
    if (ms := _metronome_ms(t.timing)) is not None and not (np.isfinite(ms) and ms > 0):
        raise ValueError(f"metronome time {ms}")
    if not all(isinstance(k, str) for k in t.fingerprint) or "target" not in t.fingerprint:
        raise ValueError("fingerprint names no target")
    for key, e in t.entries.items():
        if e.channel_step < 1 or not e.vars or any(v < 1 for g in e.grid + (e.slow_grid or []) for v in g):
            raise ValueError(f"entry {key[:60]}: step {e.channel_step}, grid {e.grid}, slow grid {e.slow_grid}")
        if e.slow_grid and e.fast is None:
            raise ValueError(f"entry {key[:60]}: a fallback-kernel grid without the classes that use it")
    for key, m in t.models.items():
        coef = m.get("correction", {}).get("coef", [1.0, 0.0, 0.0])
        if len(coef) not in (3, 4) or not all(isinstance(c, (int, float)) and np.isfinite(c) for c in coef):
            raise ValueError(f"model {key}: correction {coef}")
        scale = m.get("correction", {}).get("fallback_scale", 1.0)
        if not (isinstance(scale, (int, float)) and 0 < scale < 100):
            raise ValueError(f"model {key}: fallback scale {scale!r}")
