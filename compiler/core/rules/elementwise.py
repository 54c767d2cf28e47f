"""Ops that keep channels where they are, tie them (residual adds) or reduce over them."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn

from ..labels import Labels
from .base import Rule

if TYPE_CHECKING:
    from ..propagate import NodeLabels, Propagator


class Passthrough(Rule):
    """Elementwise on one tensor, or spatial (pool, pad, resize): channels stay where they are."""

    def channels(self, p: Propagator, node: fx.Node, m: nn.Module | None) -> NodeLabels:
        return p.passthrough(node, p.lab(node.args[0]) if node.args else None)


class Softmax(Rule):
    def channels(self, p: Propagator, node: fx.Node, m: nn.Module | None) -> NodeLabels:
        x = p.lab(node.args[0])
        dim = m.dim if m is not None else node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        if x is not None and x.dim is not None and dim is not None and dim % len(x.shape) == x.dim:
            p.st.freeze(x.ids, f"softmax over the channels at {node.name}")
        return p.passthrough(node, x)


class Elementwise(Rule):
    """Binary ops: operands with channels on the same dim are tied (a residual add)."""

    def channels(self, p: Propagator, node: fx.Node, m: nn.Module | None) -> NodeLabels:
        out = p.shape(node)
        n = len(out)
        ops: list[tuple[int, Labels]] = []
        for lab in p.tensor_args(node):
            if lab.dim is None:
                continue
            d = lab.dim + n - len(lab.shape)
            if lab.shape[lab.dim] == 1 and out[d] != 1:
                continue  # broadcast over the channels: no tie
            ops.append((d, lab))
        if not ops:
            return Labels.empty(out)
        if len({d for d, _ in ops}) == 1:
            ids = ops[0][1].ids
            for _, lab in ops[1:]:
                ids = p.st.merge(ids, lab.ids, node.name)
            return Labels(out, ops[0][0], ids)
        fulls = [lab.to_full().reshape((1,) * (n - len(lab.shape)) + lab.shape).expand(out) for _, lab in ops]
        merged = fulls[0].flatten().numpy()
        for f in fulls[1:]:
            merged = p.st.merge(merged, f.flatten().numpy(), node.name)
        return p.st.from_full(torch.from_numpy(merged).reshape(out), node.name)


class ChannelShuffle(Rule):
    """Shuffle reads channels as a (groups, C/groups) grid: prune whole columns of it."""

    def channels(self, p: Propagator, node: fx.Node, m: nn.Module | None) -> NodeLabels:
        x = p.lab(node.args[0])
        groups = m.groups if m is not None else node.args[1] if len(node.args) > 1 else node.kwargs["groups"]
        if x is None or x.dim != 1:
            return p.passthrough(node, x)
        grid = x.ids.reshape(groups, -1)
        for col in grid.T:
            p.st.merge(col, np.full(groups, col[0]), node.name)
        return Labels(p.shape(node), 1, grid.T.reshape(-1).copy())


class Reduce(Rule):
    """mean/sum/amax/...: a reduction over other dims keeps the channels; over the channels a
    sum is what masking gives, anything else freezes them."""

    def channels(self, p: Propagator, node: fx.Node, m: nn.Module | None) -> NodeLabels:
        x = p.lab(node.args[0])
        name = node.target if isinstance(node.target, str) else node.target.__name__
        out = p.shape(node)
        args, kw = node.args, node.kwargs
        dims = args[1] if len(args) > 1 else kw.get("dim")
        keep = args[2] if len(args) > 2 else kw.get("keepdim", False)
        if x is None or x.dim is None:
            return Labels.empty(out)
        n = len(x.shape)
        dims = list(range(n)) if dims is None else dims
        dims = [d % n for d in (dims if isinstance(dims, (list, tuple)) else [dims])]
        if x.dim in dims:
            if name != "sum":
                p.st.freeze(x.ids, f"{name} over the channels at {node.name}")
            return Labels.empty(out)
        return Labels(out, x.dim if keep else x.dim - sum(1 for k in dims if k < x.dim), x.ids)


class Glu(Rule):
    """GLU along the channels: output channel j is a[j] * sigmoid(b[j]) for the input's halves
    [a | b], so a[j] and b[j] are one unit and the output carries a's labels."""

    def channels(self, p: Propagator, node: fx.Node, m: nn.Module | None) -> NodeLabels:
        x = p.lab(node.args[0])
        dim = m.dim if m is not None else node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", -1)
        if x is None or x.dim is None or dim % len(x.shape) != x.dim:
            return p.passthrough(node, x) if x is None or x.dim is None else Labels(p.shape(node), x.dim, x.ids)
        half = len(x.ids) // 2
        return Labels(p.shape(node), x.dim, p.st.merge(x.ids[:half], x.ids[half:], node.name))
