"""The vocabulary of README's Architecture: ChannelGroup, PruningSpace, Widths.

A group's channels are pruned in *units*: usually one channel, but a unit spans several
channels where the graph forces it (a GroupNorm group, a depthwise multiplier, a channel
shuffle). Every place (a node output with its channel dim) maps each position to a global
unit id, or -1 for a position that is never pruned; the rewrite works from that map alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import WidthsError

Widths = dict[str, int]
SCHEMA = "latprune.pruning-space/1"


@dataclass
class Member:
    """One place a group's channels live: a node output, its channel dim, the positions."""

    node: str
    dim: int
    positions: list[int]

    def to_dict(self) -> dict[str, Any]:
        p = self.positions
        step = p[1] - p[0] if len(p) > 1 else 1
        if len(p) > 1 and step > 0 and all(b - a == step for a, b in zip(p, p[1:])):
            return {"node": self.node, "dim": self.dim, "offset": p[0], "count": len(p), "stride": step}
        if len(p) == 1:
            return {"node": self.node, "dim": self.dim, "offset": p[0], "count": 1, "stride": 1}
        return {"node": self.node, "dim": self.dim, "indices": list(p)}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Member:
        if "indices" in d:
            return Member(d["node"], d["dim"], list(d["indices"]))
        return Member(d["node"], d["dim"], list(range(d["offset"], d["offset"] + d["count"] * d["stride"], d["stride"])))


@dataclass
class ChannelGroup:
    """Channels that must be kept or dropped together across every member place."""

    id: str
    size: int  # channels at the primary member (the earliest producer)
    unit: int  # channels per pruning unit at the primary member
    unit_start: int  # first global unit id of this group
    units: int
    channel_step: int  # channels move in multiples of this (or stay at `size`)
    prunable: bool
    reason: str | None = None  # why not prunable
    blocks: int = 1  # >1: a grouped conv needs the same count kept in each block
    unit_blocks: list[int] | None = None  # block of each unit when blocks > 1
    members: list[Member] = field(default_factory=list)

    def allowed(self) -> list[int]:
        """Every channel count this group may keep."""
        if not self.prunable:
            return [self.size]
        steps = list(range(self.channel_step, self.size, self.channel_step))
        return steps + [self.size]

    def clamp(self, channels: int) -> int:
        """The allowed count nearest to `channels` (ties go up); at least one step."""
        allowed = self.allowed()
        return min(allowed, key=lambda a: (abs(a - channels), -a))

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ("id", "size", "unit", "unit_start", "units", "channel_step",
                                          "prunable", "reason", "blocks", "unit_blocks")}
        d["members"] = [m.to_dict() for m in self.members]
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> ChannelGroup:
        fields = {("channel_step" if k == "granularity" else k): v for k, v in d.items() if k != "members"}  # 0.1 files
        return ChannelGroup(**fields, members=[Member.from_dict(m) for m in d["members"]])


@dataclass
class Place:
    """A node output's channel dim and the global unit id of each position (-1: fixed)."""

    dim: int
    units: np.ndarray


@dataclass
class PruningSpace:
    """All groups of one graph in a stable order, plus the position->unit map per place."""

    groups: list[ChannelGroup]
    places: dict[str, Place]

    @property
    def total_units(self) -> int:
        return sum(g.units for g in self.groups)

    def group(self, gid: str) -> ChannelGroup:
        for g in self.groups:
            if g.id == gid:
                return g
        raise WidthsError(f"unknown channel group {gid!r}; known groups: {self.ids()[:12]}...")

    def ids(self) -> list[str]:
        return [g.id for g in self.groups]

    def prunable(self) -> list[ChannelGroup]:
        return [g for g in self.groups if g.prunable]

    def full_widths(self) -> Widths:
        """Widths that keep everything: the unpruned model."""
        return {g.id: g.size for g in self.groups}

    def floor_widths(self) -> Widths:
        """Widths that keep the least each prunable group allows: the smallest reachable model."""
        return {g.id: g.allowed()[0] for g in self.prunable()}

    def uniform_widths(self, ratio: float) -> Widths:
        """Uniform width scaling: every prunable group keeps `ratio` of its channels."""
        return {g.id: g.clamp(max(1, round(g.size * ratio))) for g in self.prunable()}

    def random_widths(self, rng: np.random.Generator, low: float = 0.25, high: float = 1.0) -> Widths:
        """A random Widths: each prunable group keeps a uniform random share in [low, high],
        on its channel_step grid (at least one step)."""
        return {g.id: g.clamp(max(g.channel_step, round(g.size * rng.uniform(low, high)))) for g in self.prunable()}

    def resolve(self, widths: Widths | None) -> Widths:
        """Check `widths` and clamp each value to its group's channel_step: full Widths out."""
        out = self.full_widths()
        if not widths:
            return out
        known = set(out)
        bad = sorted(set(widths) - known)
        if bad:
            raise WidthsError(f"Widths names unknown channel groups {bad}; see compiler.analyze(gm).ids()")
        for gid, ch in widths.items():
            g = self.group(gid)
            if isinstance(ch, bool) or not isinstance(ch, (int, np.integer)):
                raise WidthsError(f"width of group {gid!r} must be an int, got {ch!r}")
            if not 1 <= ch <= g.size:
                raise WidthsError(f"width {ch} of group {gid!r} is out of range 1..{g.size}")
            if not g.prunable and ch != g.size:
                raise WidthsError(f"group {gid!r} cannot be pruned ({g.reason}); keep it at {g.size}")
            out[gid] = g.clamp(int(ch))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "groups": [g.to_dict() for g in self.groups],
            "places": {k: {"dim": p.dim, "units": _rle(p.units)} for k, p in self.places.items()},
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> PruningSpace:
        if d.get("schema") != SCHEMA:
            raise WidthsError(f"not a latprune pruning space (schema {d.get('schema')!r}, expected {SCHEMA!r})")
        places = {k: Place(p["dim"], _unrle(p["units"])) for k, p in d["places"].items()}
        return PruningSpace([ChannelGroup.from_dict(g) for g in d["groups"]], places)

    def summary(self) -> dict[str, int]:
        return {
            "groups": len(self.groups),
            "prunable_groups": len(self.prunable()),
            "prunable_channels": sum(g.size for g in self.prunable()),
            "frozen_channels": sum(g.size for g in self.groups if not g.prunable),
        }


def _rle(a: np.ndarray) -> list[list[int]]:
    """Runs of consecutive ids [start, step, count]: places are mostly arange slices."""
    runs: list[list[int]] = []
    for v in a.tolist():
        if runs:
            start, step, count = runs[-1]
            if count == 1 and v - start in (0, 1) and start != -1 and v != -1:
                runs[-1] = [start, v - start, 2]
                continue
            if start + step * count == v and (start != -1) == (v != -1) and (step != 0 or v == start):
                runs[-1][2] += 1
                continue
        runs.append([v, 0, 1])
    return runs


def _unrle(runs: list[list[int]]) -> np.ndarray:
    parts = [np.arange(count, dtype=np.int64) * step + start for start, step, count in runs]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def lcm(*xs: int) -> int:
    return math.lcm(*xs)
