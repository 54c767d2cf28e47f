"""Per-channel ops: norms, channelwise scales, PReLU; they keep channels at dim 1."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn

from .base import Masks, Rule, pruned, register_rule, set_tensor, take

if TYPE_CHECKING:
    from ..propagate import NodeLabels, Propagator


class PerChannel(Rule):
    """An op that reads channels at dim 1 and keeps them (a norm, a channelwise scale): every
    1-D parameter or buffer as long as the channels is sliced with them. Subclass it, or
    register it as is, for a custom per-channel module."""

    count_attr: ClassVar[str | None] = None  # the constructor count to update, e.g. num_features

    def channels(self, p: Propagator, node: fx.Node, m: nn.Module | None) -> NodeLabels:
        return p.channel_first(node, p.lab(node.args[0]))

    def slice(self, m: nn.Module, node: fx.Node, masks: Masks) -> None:
        _, ok = masks(1, 1)
        if not pruned(ok):
            return
        for name, t in [*m.named_parameters(recurse=False), *m.named_buffers(recurse=False)]:
            if t.dim() == 1 and len(t) == len(ok):
                set_tensor(m, name, take(t.data, 0, ok))
        if self.count_attr:
            setattr(m, self.count_attr, int(ok.sum()))


class BatchNorm(PerChannel):
    role = "norm"
    running_stats = True
    count_attr = "num_features"

    def scale(self, m: nn.Module) -> torch.Tensor | None:
        return m.weight.detach().abs() if m.affine else None

    def describe(self, m: nn.Module) -> Any:
        return {"op": type(m).__name__}

    def resize(self, m: nn.Module, cin: int, cout: int) -> nn.Module | None:
        bn = type(m)(cout)
        with torch.no_grad():
            bn.running_var.uniform_(0.5, 1.5)
            bn.running_mean.normal_()
        return bn


class InstanceNorm(PerChannel):
    count_attr = "num_features"


class PReLU(PerChannel):
    count_attr = "num_parameters"

    def channels(self, p: Propagator, node: fx.Node, m: nn.Module | None) -> NodeLabels:
        x = p.lab(node.args[0])
        return p.channel_first(node, x) if m.num_parameters > 1 else p.passthrough(node, x)


class GroupNorm(PerChannel):
    def channels(self, p: Propagator, node: fx.Node, m: nn.Module | None) -> NodeLabels:
        x = p.lab(node.args[0])
        if x is None or x.dim != 1:
            return p.unknown(node, f"{p.describe(node)} sees channels outside dim 1")
        size = m.num_channels // m.num_groups
        for j in range(m.num_groups):  # a norm group's statistics need all of its channels
            block = x.ids[j * size:(j + 1) * size]
            p.st.merge(block, np.full(size, block[0]), node.name)
        return p.passthrough(node, x)

    def slice(self, m: nn.Module, node: fx.Node, masks: Masks) -> None:
        _, ok = masks(1, 1)
        if pruned(ok):
            super().slice(m, node, masks)
            m.num_groups = int(ok.sum()) // (m.num_channels // m.num_groups)
            m.num_channels = int(ok.sum())

    def resize(self, m: nn.Module, cin: int, cout: int) -> nn.Module | None:
        return nn.GroupNorm(m.num_groups, cout, m.eps, m.affine)


class LayerNorm(Rule):
    def channels(self, p: Propagator, node: fx.Node, m: nn.Module | None) -> NodeLabels:
        x = p.lab(node.args[0])
        n = len(x.shape) if x else 0
        if x is not None and x.dim is not None and x.dim >= n - len(m.normalized_shape):
            p.st.freeze(x.ids, f"LayerNorm `{node.target}` normalises over the channels")
        return p.passthrough(node, x)

    def slice(self, m: nn.Module, node: fx.Node, masks: Masks) -> None:
        """Only ever sees non-channel dims: the channels it normalises over are frozen."""


for _t in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.modules.batchnorm._BatchNorm):
    register_rule(_t, BatchNorm())
for _t in (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d):
    register_rule(_t, InstanceNorm())
register_rule(nn.GroupNorm, GroupNorm())
register_rule(nn.LayerNorm, LayerNorm())
register_rule(nn.PReLU, PReLU())
