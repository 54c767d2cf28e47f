"""Pass 2a: walk the fx graph and give every tensor its channel labels, op by op.

Each rule says how an op moves channels: producers (conv, linear) create elements, local ops
pass them on, residual ops tie them, cat/split shift offsets, reshapes are evaluated on a
label tensor. An op without a rule freezes every channel it touches: never a wrong slice.
"""
from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torch.fx.passes.shape_prop import TensorMetadata

from .labels import NONE, ChannelState, Labels

NodeLabels = Labels | tuple | None

_LOCAL_MODULES = (
    nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh,
    nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.Mish, nn.Softplus, nn.Hardtanh, nn.Softsign,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity,
    nn.PReLU,
)
_SPATIAL_MODULES = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.LPPool2d, nn.Upsample, nn.UpsamplingNearest2d,
    nn.UpsamplingBilinear2d, nn.ZeroPad2d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ReflectionPad1d,
    nn.ReflectionPad2d, nn.ReplicationPad1d, nn.ReplicationPad2d,
)
_NORM_MODULES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.InstanceNorm1d,
                 nn.InstanceNorm2d, nn.InstanceNorm3d)
_RESHAPE_MODULES = (nn.Flatten, nn.Unflatten)
CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)

_LOCAL_FUNCS = {
    F.relu, torch.relu, F.relu6, F.silu, F.gelu, F.hardswish, F.hardsigmoid, F.sigmoid,
    torch.sigmoid, torch.tanh, F.tanh, F.leaky_relu, F.elu, F.selu, F.hardtanh, F.softplus,
    F.mish, F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, torch.clamp, torch.clip,
    torch.abs, torch.neg, operator.neg, torch.exp, torch.sqrt, torch.square,
}
try:  # torchvision wraps stochastic depth as an fx leaf function; it scales whole samples
    from torchvision.ops.stochastic_depth import stochastic_depth as _stochastic_depth
    _LOCAL_FUNCS.add(_stochastic_depth)
except ImportError:  # torchvision is optional
    pass
_LOCAL_METHODS = {
    "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "clamp", "clamp_", "clip", "abs",
    "neg", "contiguous", "clone", "detach", "float", "half", "double", "to", "type_as", "exp",
    "sqrt", "square", "hardtanh_",
}
_ELEMENTWISE_FUNCS = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd, operator.isub,
    operator.imul, operator.itruediv, torch.add, torch.sub, torch.mul, torch.div, torch.maximum,
    torch.minimum, torch.where, torch.true_divide,
}
_ELEMENTWISE_METHODS = {"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "maximum",
                        "minimum", "masked_fill", "where"}
_SPATIAL_FUNCS = {
    F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.adaptive_max_pool1d,
    F.adaptive_max_pool2d, F.adaptive_max_pool3d, F.interpolate, F.upsample, F.pad,
}
_RESHAPE_FUNCS = {torch.flatten, torch.permute, torch.transpose, torch.squeeze,
                  torch.unsqueeze, torch.movedim, torch.t, torch.unflatten, torch.stack}
_RESHAPE_METHODS = {"flatten", "permute", "transpose", "squeeze", "unsqueeze",
                    "expand", "expand_as", "repeat", "unflatten", "movedim", "view_as",
                    "reshape_as", "t"}
_REDUCE = {"mean", "sum", "amax", "amin", "std", "var"}
_SOFTMAX = {F.softmax, F.log_softmax, torch.softmax, torch.log_softmax, "softmax", "log_softmax"}
_CAT = {torch.cat, torch.concat, torch.concatenate}
_SPLIT = {torch.split, torch.chunk, torch.unbind, "split", "chunk", "unbind"}
_SHUFFLE = {torch.channel_shuffle, F.channel_shuffle, "channel_shuffle"}
_VIEW = {"view", "reshape", torch.reshape}
# Scalar arithmetic and shape queries: no channels, but saved graphs compute sizes with them.
_SCALAR_FUNCS = {operator.getitem, getattr, operator.floordiv, operator.mod, operator.pow}
_SCALAR_METHODS = {"size", "dim", "numel"}

# Every module type and op the analysis has a rule for. A saved pruned model may hold these
# and nothing else: they are also the exact allow-list compiler.load resolves names against.
KNOWN_MODULES: tuple[type[nn.Module], ...] = (
    CONV + CONV_T + (nn.Linear, nn.GroupNorm, nn.LayerNorm, nn.Softmax, nn.LogSoftmax, nn.Softmin,
                     nn.ChannelShuffle) + _NORM_MODULES + _LOCAL_MODULES + _SPATIAL_MODULES + _RESHAPE_MODULES)
KNOWN_FUNCTIONS: frozenset[Callable[..., Any]] = frozenset(
    f for f in (_LOCAL_FUNCS | _ELEMENTWISE_FUNCS | _SPATIAL_FUNCS | _RESHAPE_FUNCS | _SOFTMAX | _CAT | _SPLIT
                | _SHUFFLE | _VIEW | _SCALAR_FUNCS | {getattr(torch, r) for r in _REDUCE}) if callable(f))
KNOWN_METHODS: frozenset[str] = frozenset(
    m for m in (_LOCAL_METHODS | _ELEMENTWISE_METHODS | _RESHAPE_METHODS | _REDUCE | _SOFTMAX | _SPLIT | _SHUFFLE
                | _VIEW | _SCALAR_METHODS) if isinstance(m, str))


def tensor_meta(node: fx.Node) -> Any:
    return node.meta.get("tensor_meta")


def shape_of(node: fx.Node) -> tuple[int, ...] | None:
    tm = tensor_meta(node)
    return tuple(tm.shape) if isinstance(tm, TensorMetadata) else None


def expand_index(idx: Any, ndim: int) -> list[Any]:
    """A tensor index as a list with the Ellipsis spelled out as full slices."""
    items = list(idx) if isinstance(idx, tuple) else [idx]
    if Ellipsis in items:
        e = items.index(Ellipsis)
        used = sum(1 for i in items if i is not None and i is not Ellipsis)
        items[e:e + 1] = [slice(None)] * (ndim - used)
    return items


def describe(node: fx.Node) -> str:
    """A short human name for what a node runs: `conv2d layer1.0.conv1`, `torch.cat`..."""
    t = node.target
    if node.op == "call_module":
        return f"module `{t}`"
    if node.op == "call_method":
        return f"method `.{t}()` (node {node.name})"
    return f"`{getattr(t, '__module__', '')}.{getattr(t, '__name__', t)}` (node {node.name})"


class Propagator:
    """Runs the rules over a shaped GraphModule and keeps the labels and grouped-conv constraints."""

    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
        self.st = ChannelState()
        self.labels: dict[fx.Node, NodeLabels] = {}
        self.blocks: list[tuple[str, np.ndarray, int]] = []  # (where, ids, groups)
        self._module_calls: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.chdep: dict[fx.Node, Any] = {}  # non-tensor values: do they derive from a channel count?

    def run(self) -> Propagator:
        for node in self.gm.graph.nodes:
            self.labels[node] = self._visit(node)
        return self

    # -- helpers -------------------------------------------------------------------------
    def _lab(self, a: Any) -> Labels | None:
        v = self.labels.get(a) if isinstance(a, fx.Node) else None
        return v if isinstance(v, Labels) else None

    def _value(self, a: Any) -> Any:
        """Concrete value of an argument: label tensors for tensors, recorded values else."""
        if isinstance(a, fx.Node):
            lab = self._lab(a)
            if lab is not None:
                return lab.to_full()
            return a.meta.get("value")
        if isinstance(a, (list, tuple)):
            return type(a)(self._value(x) for x in a)
        if isinstance(a, dict):
            return {k: self._value(v) for k, v in a.items()}
        if isinstance(a, slice):
            return slice(self._value(a.start), self._value(a.stop), self._value(a.step))
        return a

    def _tensor_args(self, node: fx.Node) -> list[Labels]:
        found: list[Labels] = []
        fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(self._lab(n)) or n)
        return [x for x in found if x is not None]

    def _fresh_frozen(self, node: fx.Node, reason: str) -> NodeLabels:
        tm = tensor_meta(node)

        def one(meta: Any) -> Labels | None:
            shape = tuple(meta.shape)
            if not shape:
                return Labels.empty(shape)
            d = 1 if len(shape) >= 2 else 0
            return Labels(shape, d, self.st.new(shape[d], node.name, frozen=reason))

        if isinstance(tm, TensorMetadata):
            return one(tm)
        if isinstance(tm, (list, tuple)):
            return tuple(one(m) if isinstance(m, TensorMetadata) else None for m in tm)
        return None

    def _unknown(self, node: fx.Node, why: str | None = None) -> NodeLabels:
        reason = why or f"unsupported op {describe(node)}"
        for lab in self._tensor_args(node):
            self.st.freeze(lab.ids, reason)
        return self._fresh_frozen(node, reason)

    def _passthrough(self, node: fx.Node, x: Labels | None) -> NodeLabels:
        """Channels stay where they are; only other dims may change size."""
        out = shape_of(node)
        if out is None:
            return None
        if x is None or x.dim is None:
            return Labels.empty(out)
        if len(out) != len(x.shape) or out[x.dim] != x.shape[x.dim]:
            return self._unknown(node, f"{describe(node)} changes the channel dim")
        return Labels(out, x.dim, x.ids)

    def _generic(self, node: fx.Node, fn: Callable[..., Any], args: Any, kwargs: Any) -> NodeLabels:
        """Run a shape op on label tensors and read the channels off the result."""
        try:
            with torch.no_grad():
                out = fn(*self._value(args), **self._value(kwargs))
        except Exception as exc:  # an op that cannot run on int64 labels: freeze, don't guess
            return self._unknown(node, f"{describe(node)} could not be analysed ({type(exc).__name__})")
        if isinstance(out, torch.Tensor):
            return self.st.from_full(out, node.name)
        return self._unknown(node)

    # -- dispatch ------------------------------------------------------------------------
    def _visit(self, node: fx.Node) -> NodeLabels:
        if node.op == "placeholder":
            shape = shape_of(node)
            if shape is None or len(shape) < 2:
                return Labels.empty(shape) if shape is not None else None
            return Labels(shape, 1, self.st.new(shape[1], node.name, frozen="model input channels"))
        if node.op == "get_attr":
            return self._get_attr(node)
        if node.op == "output":
            for lab in self._tensor_args(node):
                self.st.freeze(lab.ids, "model output")
            return None
        if tensor_meta(node) is None:
            self.chdep[node] = self._scalar_dep(node)
            return None  # sizes, ints, asserts: no channels
        if node.op == "call_module":
            return self._module(node, self.gm.get_submodule(node.target))
        return self._function(node)

    def _scalar_dep(self, node: fx.Node) -> Any:
        """True (or a tuple of flags) where a size value is computed from a channel count,
        so it will change when that group is pruned."""
        t, args = node.target, node.args
        x = self._lab(args[0]) if args else None
        if x is not None and (t == "size" or (t is getattr and args[1] == "shape")):
            flags = tuple(x.dim == k for k in range(len(x.shape)))
            d = args[1] if t == "size" and len(args) > 1 else node.kwargs.get("dim")
            return flags[d] if isinstance(d, int) else flags
        if t is operator.getitem and isinstance(self.chdep.get(args[0]), tuple):
            return self.chdep[args[0]][args[1]]
        deps: list[Any] = []
        fx.node.map_arg((args, node.kwargs), lambda n: deps.append(self.chdep.get(n)) or n)
        return any(any(d) if isinstance(d, tuple) else bool(d) for d in deps)

    def _reshape(self, node: fx.Node) -> NodeLabels:
        """view/reshape: a size computed from the channel count may only size the dim that
        carries the channels; elsewhere it would change the layout when pruned."""
        t, args = node.target, node.args
        res = self._generic(node, (lambda s, *a: getattr(s, t)(*a)) if isinstance(t, str) else t, args, node.kwargs)
        sizes = args[1] if len(args) == 2 and isinstance(args[1], (list, tuple)) else args[1:]
        dim = res.dim if isinstance(res, Labels) else None
        bad = [k for k, a in enumerate(sizes) if isinstance(a, fx.Node) and self.chdep.get(a) and k != dim]
        if bad and isinstance(res, Labels):
            reason = f"{describe(node)} sizes dim {bad[0]} from the channel count"
            for lab in self._tensor_args(node):
                self.st.freeze(lab.ids, reason)
            self.st.freeze(res.ids, reason)
        return res

    def _get_attr(self, node: fx.Node) -> NodeLabels:
        shape = shape_of(node)
        if shape is None:
            return None
        big = [d for d, s in enumerate(shape) if s > 1]
        if not big:
            return Labels.empty(shape)
        if len(big) == 1:
            return Labels(shape, big[0], self.st.new(shape[big[0]], node.name))
        d = max(big, key=lambda k: shape[k])
        return Labels(shape, d, self.st.new(shape[d], node.name, frozen=f"tensor `{node.target}` used in forward"))

    def _module(self, node: fx.Node, m: nn.Module) -> NodeLabels:
        x = self._lab(node.args[0]) if node.args else None
        if isinstance(m, CONV + CONV_T):
            return self._conv(node, m, x)
        if isinstance(m, nn.Linear):
            return self._linear(node, m, x)
        if isinstance(m, _NORM_MODULES):
            return self._channel_first(node, x)
        if isinstance(m, nn.GroupNorm):
            return self._group_norm(node, m, x)
        if isinstance(m, nn.LayerNorm):
            n = len(x.shape) if x else 0
            if x is not None and x.dim is not None and x.dim >= n - len(m.normalized_shape):
                self.st.freeze(x.ids, f"LayerNorm `{node.target}` normalises over the channels")
            return self._passthrough(node, x)
        if isinstance(m, _LOCAL_MODULES + _SPATIAL_MODULES):
            if isinstance(m, nn.PReLU) and m.num_parameters > 1:
                return self._channel_first(node, x)
            return self._passthrough(node, x)
        if isinstance(m, (nn.Softmax, nn.LogSoftmax, nn.Softmin)):
            return self._softmax(node, x, m.dim)
        if isinstance(m, nn.ChannelShuffle):
            return self._channel_shuffle(node, x, m.groups)
        if isinstance(m, _RESHAPE_MODULES):
            return self._generic(node, m, node.args, node.kwargs)
        return self._unknown(node, f"opaque module `{node.target}` ({type(m).__name__})")

    def _function(self, node: fx.Node) -> NodeLabels:
        t = node.target
        args, kwargs = node.args, node.kwargs
        x = self._lab(args[0]) if args else None
        if t in _LOCAL_FUNCS or t in _LOCAL_METHODS:
            return self._passthrough(node, x)
        if t in _ELEMENTWISE_FUNCS or t in _ELEMENTWISE_METHODS:
            return self._elementwise(node)
        if t in _SPATIAL_FUNCS:
            return self._passthrough(node, x)
        if t in _SOFTMAX:
            dim = args[1] if len(args) > 1 else kwargs.get("dim")
            return self._softmax(node, x, dim)
        name = t if isinstance(t, str) else getattr(t, "__name__", "")
        if name in _REDUCE and (isinstance(t, str) or getattr(torch, name, None) is t):
            return self._reduce(node, x, name)
        if t in _CAT:
            return self._cat(node)
        if t in _SPLIT:
            return self._split(node, x)
        if t in _SHUFFLE:
            return self._channel_shuffle(node, x, args[1] if len(args) > 1 else kwargs["groups"])
        if t is operator.getitem:
            return self._getitem(node)
        if t in _VIEW:
            return self._reshape(node)
        if t in _RESHAPE_FUNCS:
            return self._generic(node, t, args, kwargs)
        if t in _RESHAPE_METHODS:
            return self._generic(node, lambda s, *a, **k: getattr(s, t)(*a, **k), args, kwargs)
        return self._unknown(node)

    # -- rules ---------------------------------------------------------------------------
    def _shared(self, node: fx.Node, in_ids: np.ndarray, out_ids: np.ndarray) -> np.ndarray:
        """A module called at several sites has one set of weights: tie the sites together."""
        prev = self._module_calls.get(node.target)
        if prev is None:
            self._module_calls[node.target] = (in_ids, out_ids)
            return out_ids
        self.st.merge(prev[0], in_ids, node.name)
        return self.st.merge(prev[1], out_ids, node.name)

    def _in_ids(self, node: fx.Node, x: Labels | None, dim: int, n: int) -> np.ndarray:
        if x is not None and x.dim == dim and len(x.ids) == n:
            return x.ids
        if x is not None and x.dim is not None:
            self.st.freeze(x.ids, f"{describe(node)} reads channels from an unexpected dim")
        return np.full(n, NONE, dtype=np.int64)

    def _conv(self, node: fx.Node, m: nn.Module, x: Labels | None) -> NodeLabels:
        out = shape_of(node)
        in_ids = self._in_ids(node, x, 1, m.in_channels)
        g = m.groups
        if isinstance(m, CONV_T) and g != 1:
            self.st.freeze(in_ids, f"grouped transposed conv `{node.target}`")
            out_ids = self.st.new(m.out_channels, node.name, frozen=f"grouped transposed conv `{node.target}`")
        elif g == 1:
            out_ids = self.st.new(m.out_channels, node.name)
        elif g == m.in_channels:  # depthwise: output channel j reads input channel j // mult
            out_ids = np.repeat(in_ids, m.out_channels // g)
        else:
            out_ids = self.st.new(m.out_channels, node.name)
            self.blocks.append((f"input of {node.target}", in_ids, g))
            self.blocks.append((f"output of {node.target}", out_ids, g))
        out_ids = self._shared(node, in_ids, out_ids)
        return Labels(out, 1, out_ids)

    def _linear(self, node: fx.Node, m: nn.Linear, x: Labels | None) -> NodeLabels:
        out = shape_of(node)
        last = len(out) - 1
        if x is not None and x.dim is not None and x.dim != len(x.shape) - 1:
            return Labels(out, x.dim, x.ids)  # a linear over a non-channel dim keeps channels
        in_ids = self._in_ids(node, x, len(x.shape) - 1 if x else 0, m.in_features)
        out_ids = self._shared(node, in_ids, self.st.new(m.out_features, node.name))
        return Labels(out, last, out_ids)

    def _channel_first(self, node: fx.Node, x: Labels | None) -> NodeLabels:
        if x is not None and x.dim not in (None, 1):
            return self._unknown(node, f"{describe(node)} sees channels outside dim 1")
        return self._passthrough(node, x)

    def _group_norm(self, node: fx.Node, m: nn.GroupNorm, x: Labels | None) -> NodeLabels:
        if x is None or x.dim != 1:
            return self._unknown(node, f"{describe(node)} sees channels outside dim 1")
        size = m.num_channels // m.num_groups
        for j in range(m.num_groups):  # a norm group's statistics need all of its channels
            block = x.ids[j * size:(j + 1) * size]
            self.st.merge(block, np.full(size, block[0]), node.name)
        return self._passthrough(node, x)

    def _softmax(self, node: fx.Node, x: Labels | None, dim: Any) -> NodeLabels:
        if x is not None and x.dim is not None and dim is not None and dim % len(x.shape) == x.dim:
            self.st.freeze(x.ids, f"softmax over the channels at {node.name}")
        return self._passthrough(node, x)

    def _elementwise(self, node: fx.Node) -> NodeLabels:
        out = shape_of(node)
        n = len(out)
        ops: list[tuple[int, Labels]] = []
        for lab in self._tensor_args(node):
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
                ids = self.st.merge(ids, lab.ids, node.name)
            return Labels(out, ops[0][0], ids)
        fulls = [lab.to_full().reshape((1,) * (n - len(lab.shape)) + lab.shape).expand(out) for _, lab in ops]
        merged = fulls[0].flatten().numpy()
        for f in fulls[1:]:
            merged = self.st.merge(merged, f.flatten().numpy(), node.name)
        return self.st.from_full(torch.from_numpy(merged).reshape(out), node.name)

    def _channel_shuffle(self, node: fx.Node, x: Labels | None, groups: int) -> NodeLabels:
        """Shuffle reads channels as a (groups, C/groups) grid: prune whole columns of it."""
        if x is None or x.dim != 1:
            return self._passthrough(node, x)
        grid = x.ids.reshape(groups, -1)
        for col in grid.T:
            self.st.merge(col, np.full(groups, col[0]), node.name)
        return Labels(shape_of(node), 1, grid.T.reshape(-1).copy())

    def _reduce(self, node: fx.Node, x: Labels | None, name: str) -> NodeLabels:
        out = shape_of(node)
        args, kw = node.args, node.kwargs
        dims = args[1] if len(args) > 1 else kw.get("dim")
        keep = args[2] if len(args) > 2 else kw.get("keepdim", False)
        if x is None or x.dim is None:
            return Labels.empty(out)
        n = len(x.shape)
        if dims is None:
            dims = list(range(n))
        dims = [d % n for d in (dims if isinstance(dims, (list, tuple)) else [dims])]
        if x.dim in dims:
            if name != "sum":  # a sum over channels is what masking gives; a mean is not
                self.st.freeze(x.ids, f"{name} over the channels at {node.name}")
            return Labels.empty(out)
        d = x.dim if keep else x.dim - sum(1 for k in dims if k < x.dim)
        return Labels(out, d, x.ids)

    def _cat(self, node: fx.Node) -> NodeLabels:
        out = shape_of(node)
        tensors = node.args[0]
        dim = (node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)) % len(out)
        labs = [self._lab(t) for t in tensors]
        if all(lab is not None and lab.dim in (None, dim) for lab in labs):
            parts = [lab.ids if lab.dim is not None else np.full(lab.shape[dim], NONE, dtype=np.int64)
                     for lab in labs]
            return Labels(out, dim, np.concatenate(parts))
        return self._generic(node, torch.cat, node.args, node.kwargs)

    def _split(self, node: fx.Node, x: Labels | None) -> NodeLabels:
        tm = tensor_meta(node)
        if x is None or not isinstance(tm, (list, tuple)):
            return self._unknown(node)
        shapes = [tuple(m.shape) for m in tm]
        if x.dim is None:
            return tuple(Labels.empty(s) for s in shapes)
        name = node.target if isinstance(node.target, str) else node.target.__name__
        dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
        if name == "unbind":
            dim = node.args[1] if len(node.args) > 1 else dim
        dim %= len(x.shape)
        if dim != x.dim:
            return tuple(Labels(s, x.dim - (1 if name == "unbind" and dim < x.dim else 0), x.ids) for s in shapes)
        if name == "unbind":
            return self._unknown(node, f"unbind over the channels at {node.name}")
        pieces, start = [], 0
        for i, s in enumerate(shapes):  # each piece is its own group: it must keep >= 1 channel
            ids = x.ids[start:start + s[dim]]
            self.st.tag(ids, (node.name, i))
            pieces.append(Labels(s, dim, ids))
            start += s[dim]
        return tuple(pieces)

    def _getitem(self, node: fx.Node) -> NodeLabels:
        src, idx = node.args
        v = self.labels.get(src)
        if isinstance(v, tuple):
            return v[idx]
        x = self._lab(src)
        if x is None:
            return self._unknown(node)
        if x.dim is None:
            return self._generic(node, operator.getitem, node.args, {})
        raw = list(idx) if isinstance(idx, tuple) else [idx]
        if any(isinstance(i, fx.Node) and self._lab(i) is not None for i in raw) or raw.count(Ellipsis) > 1:
            return self._unknown(node, f"tensor indexing at {node.name}")
        items = expand_index(idx, len(x.shape))
        dims = [i for i in items if i is not None]
        channel = dims[x.dim] if x.dim < len(dims) else slice(None)
        if channel != slice(None):
            if not isinstance(channel, slice) or channel.step not in (None, 1):
                return self._unknown(node, f"indexing into the channels at {node.name}")
            res = self._generic(node, operator.getitem, node.args, {})
            if isinstance(res, Labels) and res.ids is not None:
                self.st.tag(res.ids, (node.name, 0))
            return res
        return self._generic(node, operator.getitem, node.args, {})
