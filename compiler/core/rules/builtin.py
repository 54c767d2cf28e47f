"""The rules for the ops torch ships, registered once at import; also the allow-lists a saved
.latprune file is read against."""
from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import _CALL_RULES, _MODULE_RULES, CONV, CONV_T, register_rule
from .channelwise import BatchNorm, GroupNorm, InstanceNorm, LayerNorm, PReLU
from .elementwise import ChannelShuffle, Elementwise, Glu, Passthrough, Reduce, Softmax
from .layout import Cat, Getitem, Reshape, Scalar, Split, View
from .weighted import Conv, Linear


def _builtin() -> None:
    act, glue, free = Passthrough("activation"), Passthrough("glue"), Passthrough("free")
    for t in CONV + CONV_T:
        register_rule(t, Conv())
    register_rule(nn.Linear, Linear())
    for t in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.modules.batchnorm._BatchNorm):
        register_rule(t, BatchNorm())
    for t in (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d):
        register_rule(t, InstanceNorm())
    register_rule(nn.GroupNorm, GroupNorm())
    register_rule(nn.LayerNorm, LayerNorm())
    register_rule(nn.PReLU, PReLU())
    for t in (nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.LeakyReLU,
              nn.ELU, nn.SELU, nn.CELU, nn.Mish, nn.Softplus, nn.Hardtanh, nn.Softsign):
        register_rule(t, act)
    for t in (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity):
        register_rule(t, free)
    for t in (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
              nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
              nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.LPPool2d, nn.Upsample, nn.UpsamplingNearest2d,
              nn.UpsamplingBilinear2d, nn.ZeroPad2d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ReflectionPad1d,
              nn.ReflectionPad2d, nn.ReplicationPad1d, nn.ReplicationPad2d):
        register_rule(t, glue)
    for t in (nn.Softmax, nn.LogSoftmax, nn.Softmin):
        register_rule(t, Softmax())
    register_rule(nn.ChannelShuffle, ChannelShuffle())
    for op in (nn.GLU, F.glu):
        register_rule(op, Glu())
    register_rule(nn.Flatten, Reshape("free"))
    register_rule(nn.Unflatten, Reshape("free"))

    for f in (F.relu, torch.relu, F.relu6, F.silu, F.gelu, F.hardswish, F.hardsigmoid, F.sigmoid, torch.sigmoid,
              torch.tanh, F.tanh, F.leaky_relu, F.elu, F.selu, F.hardtanh, F.softplus, F.mish):
        register_rule(f, act)
    for f in ("relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "hardtanh_"):
        register_rule(f, act)
    for f in (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, "contiguous", "detach", "float", "to", "type_as"):
        register_rule(f, free)
    for f in ("clone", "half", "double", torch.clamp, torch.clip, torch.abs, torch.neg, operator.neg, torch.exp, torch.sqrt, torch.square,
              "clamp", "clamp_", "clip", "abs", "neg", "exp", "sqrt", "square",
              F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
              F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.adaptive_max_pool1d,
              F.adaptive_max_pool2d, F.adaptive_max_pool3d, F.interpolate, F.upsample, F.pad):
        register_rule(f, glue)
    try:  # torchvision wraps stochastic depth as an fx leaf function; it scales whole samples
        from torchvision.ops.stochastic_depth import stochastic_depth
        register_rule(stochastic_depth, glue)
    except ImportError:  # torchvision is optional
        pass
    elementwise = Elementwise()
    for f in (operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd, operator.isub, operator.imul,
              operator.itruediv, torch.add, torch.sub, torch.mul, torch.div, torch.maximum, torch.minimum,
              torch.where, torch.true_divide, "add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "maximum",
              "minimum", "masked_fill", "where"):
        register_rule(f, elementwise)
    for f in (F.softmax, F.log_softmax, torch.softmax, torch.log_softmax, "softmax", "log_softmax"):
        register_rule(f, Softmax())
    for name in ("mean", "sum", "amax", "amin", "std", "var"):
        register_rule(name, Reduce())
        register_rule(getattr(torch, name), Reduce())
    for f in (torch.cat, torch.concat, torch.concatenate):
        register_rule(f, Cat())
    for f in (torch.split, torch.chunk, torch.unbind, "split", "chunk", "unbind"):
        register_rule(f, Split())
    for f in (torch.channel_shuffle, F.channel_shuffle, "channel_shuffle"):
        register_rule(f, ChannelShuffle())
    for f in (torch.flatten, torch.squeeze, torch.unsqueeze, "flatten", "squeeze", "unsqueeze", "view_as",
              "reshape_as"):
        register_rule(f, Reshape("free"))
    for f in (torch.permute, torch.transpose, torch.movedim, torch.t, torch.unflatten, torch.stack, "permute",
              "transpose", "expand_as", "repeat", "unflatten", "movedim", "t"):
        register_rule(f, Reshape())
    for f in ("view", "reshape", torch.reshape):
        register_rule(f, View("free"))
    register_rule("expand", View(check_sizes=False))
    register_rule(operator.getitem, Getitem("free"))
    for f in (getattr, operator.floordiv, operator.mod, operator.pow, "size", "dim", "numel"):
        register_rule(f, Scalar())


_builtin()
# What a saved pruned model may hold: the ops built into latprune, fixed at import (a user's
# registered op is trusted in the process that registered it, never in a file). They are the
# exact allow-list compiler.load resolves names against.
KNOWN_MODULES: tuple[type[nn.Module], ...] = tuple(t for t in _MODULE_RULES if not t.__name__.startswith("_"))
KNOWN_FUNCTIONS: frozenset[Callable[..., Any]] = frozenset(f for f in _CALL_RULES if not isinstance(f, str))
KNOWN_METHODS: frozenset[str] = frozenset(f for f in _CALL_RULES if isinstance(f, str))
