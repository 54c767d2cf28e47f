"""One rule per op family: everything latprune knows about an op, in one place.

A Rule says how channel labels flow through the op (`channels`), how to slice its weights
(`slice`) or patch its arguments (`patch`) when channels go, which weight slices importance
reads (`weight_slices`), its multiply-accumulates (`macs`), and how a latency table sees it
(`role`, `describe`, `resize`); `running_stats` marks what AdaBN re-estimates and `scale`
what Network Slimming ranks by. Rules are looked up by module type (along the MRO), by
function, or by method name. `register_rule` teaches latprune a user's own op; an op
without a rule freezes every channel it touches, so an unknown op is never sliced wrongly.

Roles are what engines fuse by: `producer` (conv, linear) heads a block, `norm` and
`activation` may be folded into it (each target declares which, `Target.fuses`), `free` ops
run as metadata changes and cost nothing alone, `glue` ops are timed one by one.
"""
from __future__ import annotations

import copy
import operator
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from .errors import BadInputError, LatpruneError
from .labels import NONE, Labels

if TYPE_CHECKING:
    from .propagate import NodeLabels, Propagator
    from .space import Place

CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
ROLES = ("producer", "norm", "activation", "free", "glue")
ENGINE_FUSES = ("norm", "activation")  # conv -> BatchNorm -> activation: what inference engines fold into one kernel
Mask = "np.ndarray | None"
Masks = Callable[[int, int], tuple[Any, Any]]  # (in_dim, out_dim) -> (input keep mask, output keep mask)
Keep = Callable[[Any], "tuple[int, np.ndarray] | None"]  # fx node -> (channel dim, keep mask) or None


class RewriteError(LatpruneError):
    """The rewritten graph is inconsistent: a latprune bug, reported with the node."""


def take(t: torch.Tensor, dim: int, mask: np.ndarray) -> torch.Tensor:
    """The kept slices of `t` along `dim` (index_select: several times faster than t[idx])."""
    return t.index_select(dim, torch.from_numpy(np.nonzero(mask)[0]))


def set_tensor(m: nn.Module, name: str, value: torch.Tensor) -> None:
    """Replace a parameter or buffer, keeping its kind and requires_grad."""
    old = getattr(m, name)
    if isinstance(old, nn.Parameter):
        setattr(m, name, nn.Parameter(value.contiguous(), requires_grad=old.requires_grad))
    else:
        setattr(m, name, value.contiguous())


def pruned(mask: Any) -> bool:
    return mask is not None and not mask.all()


class Rule:
    """The defaults: labels are frozen, nothing is sliced (refused if the module has weights
    and would lose channels), no importance, no MACs, a glue op for latency."""

    role: ClassVar[str] = "glue"
    running_stats: ClassVar[bool] = False

    def __init__(self, role: str | None = None) -> None:
        if role is not None:
            if role not in ROLES:
                raise BadInputError(f"unknown rule role {role!r}; choose one of {ROLES}")
            self.role = role

    def channels(self, p: Propagator, node: fx.Node, m: nn.Module | None) -> NodeLabels:
        return p.unknown(node)

    def slice(self, m: nn.Module, node: fx.Node, masks: Masks) -> None:
        if any(pruned(k) for k in masks(1, 1)) and any(True for _ in m.parameters(recurse=True)):
            raise RewriteError(f"module `{node.target}` ({type(m).__name__}) would be pruned but its rule "
                               f"({type(self).__name__}) does not slice weights")

    def patch(self, node: fx.Node, keep: Keep) -> None:
        """Rewrite literal channel counts in a function or method call's arguments."""

    def weight_slices(self, m: nn.Module, node: fx.Node, out_place: Place | None,
                      in_place: Place | None) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        return iter(())

    def scale(self, m: nn.Module) -> torch.Tensor | None:
        """Per-channel scale that Network Slimming ranks by (BatchNorm's gamma)."""
        return None

    def macs(self, m: nn.Module, out_shape: tuple[int, ...]) -> int:
        return 0

    def describe(self, m: nn.Module) -> Any:
        """The module's fixed attributes: what its latency depends on besides channel counts."""
        return {"op": repr(m)}

    def resize(self, m: nn.Module, cin: int, cout: int) -> nn.Module | None:
        """A fresh module like `m` at other channel counts, to time it (None: cannot)."""
        return resized_default(m)


def resized_default(m: nn.Module) -> nn.Module | None:
    """A module without weights or buffers is the same at any width."""
    if not any(True for _ in m.parameters()) and not any(True for _ in m.buffers()):
        return copy.deepcopy(m)
    return None


# -- producers ---------------------------------------------------------------------------------
class Conv(Rule):
    role = "producer"

    def channels(self, p: Propagator, node: fx.Node, m: nn.Module | None) -> NodeLabels:
        x = p.lab(node.args[0])
        in_ids = p.in_ids(node, x, 1, m.in_channels)
        g = m.groups
        if isinstance(m, CONV_T) and g != 1:
            p.st.freeze(in_ids, f"grouped transposed conv `{node.target}`")
            out_ids = p.st.new(m.out_channels, node.name, frozen=f"grouped transposed conv `{node.target}`")
        elif g == 1:
            out_ids = p.st.new(m.out_channels, node.name)
        elif g == m.in_channels:  # depthwise: output channel j reads input channel j // mult
            out_ids = np.repeat(in_ids, m.out_channels // g)
        else:
            out_ids = p.st.new(m.out_channels, node.name)
            p.blocks.append((f"input of {node.target}", in_ids, g))
            p.blocks.append((f"output of {node.target}", out_ids, g))
        return Labels(p.shape(node), 1, p.shared(node, in_ids, out_ids))

    def slice(self, m: nn.Module, node: fx.Node, masks: Masks) -> None:
        ik, ok = masks(1, 1)
        g = m.groups
        n_in = int(ik.sum()) if ik is not None else m.in_channels
        n_out = int(ok.sum()) if ok is not None else m.out_channels
        if n_in == m.in_channels and n_out == m.out_channels:
            return
        w = m.weight.data
        if isinstance(m, CONV_T):
            w = take(w, 1, ok) if ok is not None else w
            w = take(w, 0, ik) if ik is not None else w
        elif g == 1:
            w = take(w, 0, ok) if ok is not None else w
            w = take(w, 1, ik) if ik is not None else w
        elif g == m.in_channels:  # depthwise: the group count follows the channels
            w = take(w, 0, ok) if ok is not None else w
            g = n_in
        else:
            opg, ipg = m.out_channels // g, m.in_channels // g
            ok_b = (ok if ok is not None else np.ones(m.out_channels, bool)).reshape(g, opg)
            ik_b = (ik if ik is not None else np.ones(m.in_channels, bool)).reshape(g, ipg)
            if len(set(ok_b.sum(1).tolist())) != 1 or len(set(ik_b.sum(1).tolist())) != 1:
                raise RewriteError(f"grouped conv `{node.target}` would keep unequal blocks")
            w = torch.cat([take(take(w[j * opg:(j + 1) * opg], 0, ok_b[j]), 1, ik_b[j]) for j in range(g)])
        if m.bias is not None and ok is not None:
            set_tensor(m, "bias", take(m.bias.data, 0, ok))
        set_tensor(m, "weight", w)
        m.in_channels, m.out_channels, m.groups = n_in, n_out, g

    def weight_slices(self, m: nn.Module, node: fx.Node, out_place: Place | None,
                      in_place: Place | None) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        w = m.weight.detach().float()
        is_t = isinstance(m, CONV_T)
        if out_place is not None and out_place.dim == 1:
            yield out_place.units, (w.transpose(0, 1) if is_t else w).flatten(1)
        if in_place is None or in_place.dim != 1 or m.groups == m.in_channels > 1:
            return  # depthwise: the input and output are one unit; counted above
        if is_t or m.groups == 1:
            yield in_place.units, (w if is_t else w.transpose(0, 1)).flatten(1)
        else:  # grouped: input position p feeds the filters of block p // (in / groups)
            opg, ipg = w.shape[0] // m.groups, w.shape[1]
            yield in_place.units, w.reshape(m.groups, opg, ipg, -1).permute(0, 2, 1, 3).reshape(m.groups * ipg, -1)

    def macs(self, m: nn.Module, out_shape: tuple[int, ...]) -> int:
        return int(np.prod(out_shape)) * (m.in_channels // m.groups * int(np.prod(m.kernel_size)))

    def describe(self, m: nn.Module) -> Any:
        return {"op": type(m).__name__, "kernel": list(m.kernel_size), "stride": list(m.stride),
                "padding": m.padding if isinstance(m.padding, str) else list(m.padding),
                "dilation": list(m.dilation), "groups": m.groups, "bias": m.bias is not None,
                "padding_mode": m.padding_mode}

    def resize(self, m: nn.Module, cin: int, cout: int) -> nn.Module | None:
        groups = cin if m.groups == m.in_channels and m.groups > 1 else m.groups
        return type(m)(cin, cout, m.kernel_size, m.stride, m.padding, m.dilation, groups,
                       m.bias is not None, m.padding_mode)


class Linear(Rule):
    role = "producer"

    def channels(self, p: Propagator, node: fx.Node, m: nn.Module | None) -> NodeLabels:
        x = p.lab(node.args[0])
        out = p.shape(node)
        if x is not None and x.dim is not None and x.dim != len(x.shape) - 1:
            return Labels(out, x.dim, x.ids)  # a linear over a non-channel dim keeps channels
        in_ids = p.in_ids(node, x, len(x.shape) - 1 if x else 0, m.in_features)
        return Labels(out, len(out) - 1, p.shared(node, in_ids, p.st.new(m.out_features, node.name)))

    def slice(self, m: nn.Module, node: fx.Node, masks: Masks) -> None:
        ik, ok = masks(len(node.args[0].meta["tensor_meta"].shape) - 1, len(node.meta["tensor_meta"].shape) - 1)
        w = m.weight.data
        if pruned(ok):
            w = take(w, 0, ok)
            if m.bias is not None:
                set_tensor(m, "bias", take(m.bias.data, 0, ok))
            m.out_features = int(ok.sum())
        if pruned(ik):
            w = take(w, 1, ik)
            m.in_features = int(ik.sum())
        set_tensor(m, "weight", w)

    def weight_slices(self, m: nn.Module, node: fx.Node, out_place: Place | None,
                      in_place: Place | None) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        w = m.weight.detach().float()
        if out_place is not None and out_place.dim == len(node.meta["tensor_meta"].shape) - 1:
            yield out_place.units, w
        if in_place is not None and in_place.dim == len(node.args[0].meta["tensor_meta"].shape) - 1:
            yield in_place.units, w.transpose(0, 1)

    def macs(self, m: nn.Module, out_shape: tuple[int, ...]) -> int:
        return int(np.prod(out_shape)) * m.in_features

    def describe(self, m: nn.Module) -> Any:
        return {"op": "Linear", "bias": m.bias is not None}

    def resize(self, m: nn.Module, cin: int, cout: int) -> nn.Module | None:
        return nn.Linear(cin, cout, m.bias is not None)


# -- per-channel ops ---------------------------------------------------------------------------
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


# -- ops that keep channels where they are -----------------------------------------------------
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


# -- layout ops --------------------------------------------------------------------------------
class Reshape(Rule):
    """flatten, permute, transpose, ...: evaluated on label tensors, channels read off the result."""

    def channels(self, p: Propagator, node: fx.Node, m: nn.Module | None) -> NodeLabels:
        t = node.target
        fn = m if m is not None else (lambda s, *a, **k: getattr(s, t)(*a, **k)) if isinstance(t, str) else t
        return p.generic(node, fn, node.args, node.kwargs)


class View(Reshape):
    """view/reshape/expand with literal sizes: the channel dim's size is rewritten when pruned.
    For view/reshape, a size computed from the channel count may only size the dim that carries
    the channels; elsewhere it would change the layout when pruned."""

    def __init__(self, role: str | None = None, check_sizes: bool = True) -> None:
        super().__init__(role)
        self.check_sizes = check_sizes

    def channels(self, p: Propagator, node: fx.Node, m: nn.Module | None) -> NodeLabels:
        res = super().channels(p, node, m)
        if not self.check_sizes or not isinstance(res, Labels):
            return res
        args = node.args
        sizes = args[1] if len(args) == 2 and isinstance(args[1], (list, tuple)) else args[1:]
        bad = [k for k, a in enumerate(sizes) if isinstance(a, fx.Node) and p.chdep.get(a) and k != res.dim]
        if bad:
            reason = f"{p.describe(node)} sizes dim {bad[0]} from the channel count"
            for lab in p.tensor_args(node):
                p.st.freeze(lab.ids, reason)
            p.st.freeze(res.ids, reason)
        return res

    def patch(self, node: fx.Node, keep: Keep) -> None:
        k_out = keep(node)
        if k_out is None or k_out[1].all():
            return
        dim, mask = k_out
        src, t = node.args[0], node.target
        shape_args = node.args[1:] if t is not torch.reshape else node.args[1]
        flat = isinstance(shape_args, tuple) and len(shape_args) == 1 and isinstance(shape_args[0], (list, tuple))
        sizes = list(shape_args[0] if flat else shape_args)
        if isinstance(sizes[dim], int) and sizes[dim] != -1:
            sizes[dim] = int(mask.sum())
            new = (tuple(sizes),) if flat else tuple(sizes)
            node.args = (src, *new) if t is not torch.reshape else (src, tuple(sizes))


class Cat(Rule):
    def channels(self, p: Propagator, node: fx.Node, m: nn.Module | None) -> NodeLabels:
        out = p.shape(node)
        dim = (node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)) % len(out)
        labs = [p.lab(t) for t in node.args[0]]
        if all(lab is not None and lab.dim in (None, dim) for lab in labs):
            parts = [lab.ids if lab.dim is not None else np.full(lab.shape[dim], NONE, dtype=np.int64)
                     for lab in labs]
            return Labels(out, dim, np.concatenate(parts))
        return p.generic(node, torch.cat, node.args, node.kwargs)


class Split(Rule):
    """split/chunk/unbind: each piece along the channels is its own group (keeps >= 1 channel);
    the split sizes are rewritten to the kept counts."""

    def channels(self, p: Propagator, node: fx.Node, m: nn.Module | None) -> NodeLabels:
        x = p.lab(node.args[0])
        tm = node.meta.get("tensor_meta")
        if x is None or not isinstance(tm, (list, tuple)):
            return p.unknown(node)
        shapes = [tuple(m_.shape) for m_ in tm]
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
            return p.unknown(node, f"unbind over the channels at {node.name}")
        pieces, start = [], 0
        for i, s in enumerate(shapes):
            ids = x.ids[start:start + s[dim]]
            p.st.tag(ids, (node.name, i))
            pieces.append(Labels(s, dim, ids))
            start += s[dim]
        return tuple(pieces)

    def patch(self, node: fx.Node, keep: Keep) -> None:
        src = node.args[0]
        k_in = keep(src) if isinstance(src, fx.Node) else None
        if node.target in ("unbind", torch.unbind) or k_in is None:
            return
        dim, mask = k_in
        d = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
        if d % len(src.meta["tensor_meta"].shape) != dim or mask.all():
            return
        sizes, start = [], 0
        for meta in node.meta["tensor_meta"]:
            n = meta.shape[dim]
            sizes.append(int(mask[start:start + n].sum()))
            start += n
        node.op, node.target = "call_function", torch.split
        node.args, node.kwargs = (src, sizes), {"dim": dim}


def expand_index(idx: Any, ndim: int) -> list[Any]:
    """A tensor index as a list with the Ellipsis spelled out as full slices."""
    items = list(idx) if isinstance(idx, tuple) else [idx]
    if Ellipsis in items:
        e = items.index(Ellipsis)
        used = sum(1 for i in items if i is not None and i is not Ellipsis)
        items[e:e + 1] = [slice(None)] * (ndim - used)
    return items


class Getitem(Rule):
    """x[...] on a tensor (a contiguous slice of the channels is a group of its own) or picking
    one output of a multi-output op."""

    def channels(self, p: Propagator, node: fx.Node, m: nn.Module | None) -> NodeLabels:
        src, idx = node.args
        v = p.labels.get(src)
        if isinstance(v, tuple):
            return v[idx]
        x = p.lab(src)
        if x is None:
            return p.unknown(node)
        if x.dim is None:
            return p.generic(node, operator.getitem, node.args, {})
        raw = list(idx) if isinstance(idx, tuple) else [idx]
        if any(isinstance(i, fx.Node) and p.lab(i) is not None for i in raw) or raw.count(Ellipsis) > 1:
            return p.unknown(node, f"tensor indexing at {node.name}")
        dims = [i for i in expand_index(idx, len(x.shape)) if i is not None]
        channel = dims[x.dim] if x.dim < len(dims) else slice(None)
        if channel != slice(None):
            if not isinstance(channel, slice) or channel.step not in (None, 1):
                return p.unknown(node, f"indexing into the channels at {node.name}")
            res = p.generic(node, operator.getitem, node.args, {})
            if isinstance(res, Labels) and res.ids is not None:
                p.st.tag(res.ids, (node.name, 0))
            return res
        return p.generic(node, operator.getitem, node.args, {})

    def patch(self, node: fx.Node, keep: Keep) -> None:
        src, idx = node.args
        k_in = keep(src) if isinstance(src, fx.Node) else None
        if k_in is None or not isinstance(src.meta.get("tensor_meta"), torch.fx.passes.shape_prop.TensorMetadata):
            return
        dim, mask = k_in
        in_shape = tuple(src.meta["tensor_meta"].shape)
        items = expand_index(idx, len(in_shape))
        pos = [i for i, it in enumerate(items) if it is not None]
        if dim >= len(pos):
            return
        s = items[pos[dim]]
        if not isinstance(s, slice) or s == slice(None) or mask.all():
            return
        start, stop, _ = s.indices(in_shape[dim])
        items[pos[dim]] = slice(int(mask[:start].sum()), int(mask[:stop].sum()), s.step)
        node.args = (src, tuple(items) if isinstance(idx, tuple) else items[0])


class Scalar(Rule):
    """Sizes and scalar arithmetic (x.size(1), getattr(x, 'shape'), //): no channels of their
    own; the propagator tracks whether their value derives from a channel count."""

    role = "free"


# -- the registry ------------------------------------------------------------------------------
_MODULE_RULES: dict[type, Rule] = {}
_CALL_RULES: dict[Any, Rule] = {}


def register_rule(op: type[nn.Module] | Callable[..., Any] | str, rule: Rule) -> None:
    """Teach latprune an op: a module type, a function, or a tensor method's name; the rule
    replaces any earlier one. A registered module type is not traced into: its calls stay
    whole in the graph and the rule says what they do (a subclass is traced into unless it is
    registered too, since its forward may differ). Pruned
    models that contain a user-registered op emit and run, but are not saved as .latprune files:
    those load only ops built into latprune."""
    if not isinstance(rule, Rule):
        raise BadInputError(f"register_rule needs a compiler.Rule instance, got {type(rule).__name__}")
    if isinstance(op, type) and issubclass(op, nn.Module):
        _MODULE_RULES[op] = rule
    elif isinstance(op, str) or callable(op):
        _CALL_RULES[op] = rule
    else:
        raise BadInputError(f"register_rule takes an nn.Module type, a function or a method name, got {op!r}")


def has_own_rule(m: nn.Module) -> bool:
    return type(m) in _MODULE_RULES


def module_rule(m: nn.Module) -> Rule | None:
    for cls in type(m).__mro__:
        if cls in _MODULE_RULES:
            return _MODULE_RULES[cls]
    return None


def call_rule(target: Any) -> Rule | None:
    try:
        return _CALL_RULES.get(target)
    except TypeError:  # an unhashable target
        return None


def role_of(node: fx.Node, modules: dict[str, nn.Module]) -> str | None:
    """The latency role of what a node runs; None when no rule knows it."""
    if node.op == "call_module":
        rule = module_rule(modules[node.target])
    elif node.op in ("call_function", "call_method"):
        rule = call_rule(node.target)
    else:
        return None
    return rule.role if rule is not None else None


def resize(m: nn.Module, cin: int, cout: int) -> nn.Module | None:
    rule = module_rule(m)
    return rule.resize(m, cin, cout) if rule is not None else resized_default(m)


def describe_module(m: nn.Module) -> Any:
    rule = module_rule(m)
    return (rule or Rule()).describe(m)


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
