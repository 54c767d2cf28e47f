"""Channel labels: which pruning element each channel position of a tensor carries.

Every channel a producer (conv, linear, parameter, model input) creates is an *element*.
Ops that tie channels together (a residual add, a depthwise conv, a GroupNorm group) union
elements; the connected components are the pruning units. A tensor's labels are the element
ids along its one channel dim; NONE marks a position that belongs to no element.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

NONE = -1


@dataclass
class Labels:
    """Element ids along channel dim `dim` of a tensor of `shape` (dim None: no channels)."""

    shape: tuple[int, ...]
    dim: int | None
    ids: np.ndarray | None

    @staticmethod
    def empty(shape: tuple[int, ...]) -> Labels:
        return Labels(tuple(shape), None, None)

    def to_full(self) -> torch.Tensor:
        """A label tensor of the full shape, for ops that move channels between dims."""
        if self.dim is None:
            return torch.full(self.shape, NONE, dtype=torch.int64)
        view = [1] * len(self.shape)
        view[self.dim] = len(self.ids)
        return torch.from_numpy(self.ids.copy()).view(view).expand(self.shape).contiguous()


class ChannelState:
    """Union-find over elements, with each element's birth node, tags and freeze reason."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.birth: list[str] = []
        self.tags: dict[int, set[tuple[str, int]]] = {}
        self.frozen: dict[int, str] = {}

    def new(self, n: int, birth: str, frozen: str | None = None) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        self.birth.extend([birth] * n)
        if frozen:
            for e in range(start, start + n):
                self.frozen[e] = frozen
        return np.arange(start, start + n, dtype=np.int64)

    def find(self, e: int) -> int:
        parent = self.parent
        while parent[e] != e:
            parent[e] = parent[parent[e]]
            e = parent[e]
        return e

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def roots(self, ids: np.ndarray) -> np.ndarray:
        """Component root of each id (NONE stays NONE)."""
        uniq, inv = np.unique(ids, return_inverse=True)
        r = np.array([self.find(int(u)) if u >= 0 else NONE for u in uniq], dtype=np.int64)
        return r[inv].reshape(ids.shape)

    def freeze(self, ids: np.ndarray | None, reason: str) -> None:
        if ids is None:
            return
        for e in np.unique(ids).tolist():
            if e >= 0:
                self.frozen.setdefault(e, reason)

    def tag(self, ids: np.ndarray, tag: tuple[str, int]) -> None:
        for e in np.unique(ids).tolist():
            if e >= 0:
                self.tags.setdefault(e, set()).add(tag)

    def merge(self, a: np.ndarray, b: np.ndarray, where: str) -> np.ndarray:
        """Tie two equal-length id arrays position by position; NONE against an id freezes it."""
        both = (a >= 0) & (b >= 0)
        pairs = np.unique(np.stack([a[both], b[both]], axis=1), axis=0) if both.any() else []
        for x, y in pairs:
            self.union(int(x), int(y))
        one = (a >= 0) ^ (b >= 0)
        if one.any():
            self.freeze(np.where(a >= 0, a, b)[one], f"tied to a fixed channel at {where}")
        return np.where(a >= 0, a, b)

    def from_full(self, t: torch.Tensor, where: str) -> Labels:
        """Labels of a full label tensor. Where ids vary along several dims (a channel shuffle's
        (g, C/g) view), each slice of the largest such dim is tied into one unit, so that
        pruning keeps the tensor rectangular."""
        arr = t.numpy()
        comp = self.roots(arr)
        varying = _varying_dims(comp)
        if len(varying) > 1:
            d = max(varying, key=lambda k: (arr.shape[k], k))
            moved = np.moveaxis(comp, d, 0).reshape(arr.shape[d], -1)
            for row in moved:
                real = row[row >= 0]
                if len(real) < len(row) and len(real):
                    self.freeze(real, f"channel positions mixed with fixed ones at {where}")
                uniq = np.unique(real)
                for e in uniq[1:].tolist():
                    self.union(int(uniq[0]), int(e))
            comp = self.roots(arr)
            varying = _varying_dims(comp)
            if len(varying) > 1:
                self.freeze(arr, f"channels spread over several dims at {where}")
                varying = [d]
        if not varying:
            return Labels.empty(tuple(arr.shape))
        d = varying[0]
        index = tuple(slice(None) if k == d else 0 for k in range(arr.ndim))
        return Labels(tuple(arr.shape), d, comp[index].astype(np.int64))


def _varying_dims(comp: np.ndarray) -> list[int]:
    return [d for d in range(comp.ndim) if comp.shape[d] > 1 and not (comp == comp.take([0], axis=d)).all()]
