"""Layout ops: reshape, view, concat, split, indexing; they move channels between dims and
offsets, and patch literal sizes in their arguments when channels go."""
from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn

from ..labels import NONE, Labels
from .base import Keep, Rule, register_rule

if TYPE_CHECKING:
    from ..propagate import NodeLabels, Propagator


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


for _op in (nn.Flatten, nn.Unflatten, torch.flatten, torch.squeeze, torch.unsqueeze, "flatten", "squeeze", "unsqueeze",
            "view_as", "reshape_as"):
    register_rule(_op, Reshape("free"))
for _op in (torch.permute, torch.transpose, torch.movedim, torch.t, torch.unflatten, torch.stack, "permute",
            "transpose", "expand_as", "repeat", "unflatten", "movedim", "t"):
    register_rule(_op, Reshape())
for _op in ("view", "reshape", torch.reshape):
    register_rule(_op, View("free"))
register_rule("expand", View(check_sizes=False))
for _op in (torch.cat, torch.concat, torch.concatenate):
    register_rule(_op, Cat())
for _op in (torch.split, torch.chunk, torch.unbind, "split", "chunk", "unbind"):
    register_rule(_op, Split())
register_rule(operator.getitem, Getitem("free"))
for _op in (getattr, operator.floordiv, operator.mod, operator.pow, "size", "dim", "numel"):
    register_rule(_op, Scalar())
