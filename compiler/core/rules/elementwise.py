"""Ops that keep channels where they are, tie them (residual adds) or reduce over them."""
from __future__ import annotations

import operator
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from ..labels import Labels
from .base import Rule, register_rule

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


_ACT, _GLUE, _FREE = Passthrough("activation"), Passthrough("glue"), Passthrough("free")
for _op in (nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.LeakyReLU, nn.ELU,
            nn.SELU, nn.CELU, nn.Mish, nn.Softplus, nn.Hardtanh, nn.Softsign, F.relu, torch.relu, F.relu6, F.silu, F.gelu,
            F.hardswish, F.hardsigmoid, F.sigmoid, torch.sigmoid, torch.tanh, F.tanh, F.leaky_relu, F.elu, F.selu,
            F.hardtanh, F.softplus, F.mish, "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "hardtanh_"):
    register_rule(_op, _ACT)
for _op in (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity, F.dropout, F.dropout1d,
            F.dropout2d, F.dropout3d, "contiguous", "detach", "float", "to", "type_as"):
    register_rule(_op, _FREE)
for _op in (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d,
            nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
            nn.LPPool2d, nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d, nn.ZeroPad2d, nn.ConstantPad1d,
            nn.ConstantPad2d, nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReplicationPad1d, nn.ReplicationPad2d,
            F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d,
            F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.adaptive_max_pool1d, F.adaptive_max_pool2d,
            F.adaptive_max_pool3d, F.interpolate, F.upsample, F.pad, torch.clamp, torch.clip, torch.abs, torch.neg,
            operator.neg, torch.exp, torch.sqrt, torch.square, "clamp", "clamp_", "clip", "abs", "neg", "exp", "sqrt",
            "square", "clone", "half", "double"):
    register_rule(_op, _GLUE)
try:  # torchvision wraps stochastic depth as an fx leaf function; it scales whole samples
    from torchvision.ops.stochastic_depth import stochastic_depth
    register_rule(stochastic_depth, _GLUE)
except ImportError:  # torchvision is optional
    pass
for _op in (operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd, operator.isub, operator.imul,
            operator.itruediv, torch.add, torch.sub, torch.mul, torch.div, torch.maximum, torch.minimum, torch.where,
            torch.true_divide, "add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "maximum", "minimum",
            "masked_fill", "where"):
    register_rule(_op, Elementwise())
for _op in (nn.Softmax, nn.LogSoftmax, nn.Softmin, F.softmax, F.log_softmax, torch.softmax, torch.log_softmax,
            "softmax", "log_softmax"):
    register_rule(_op, Softmax())
for _name in ("mean", "sum", "amax", "amin", "std", "var"):
    register_rule(_name, Reduce())
    register_rule(getattr(torch, _name), Reduce())
for _op in (nn.ChannelShuffle, torch.channel_shuffle, F.channel_shuffle, "channel_shuffle"):
    register_rule(_op, ChannelShuffle())
for _op in (nn.GLU, F.glu):
    register_rule(_op, Glu())
