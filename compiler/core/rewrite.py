"""Pass 4: apply a keep mask to the graph: slice weights, fix split sizes and literal shapes.

Everything is read off the PruningSpace's places: a module's input and output keep masks
are those of its input node and its own node, so modules and graph ops agree by construction.
"""
from __future__ import annotations

import copy
import operator
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
from torch.fx.passes.shape_prop import TensorMetadata

from .errors import LatpruneError
from .lower import Inputs, propagate_shapes
from .propagate import _SPLIT, CONV, CONV_T, expand_index, shape_of
from .space import PruningSpace

_PER_CHANNEL = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.InstanceNorm1d,
                nn.InstanceNorm2d, nn.InstanceNorm3d, nn.GroupNorm, nn.PReLU)


class RewriteError(LatpruneError):
    """The rewritten graph is inconsistent: a latprune bug, reported with the node."""


def keep_of(space: PruningSpace, keep_unit: np.ndarray, name: str) -> tuple[int, np.ndarray] | None:
    """(dim, bool mask over positions) of a place; None when the node has no channels."""
    p = space.places.get(name)
    if p is None:
        return None
    return p.dim, np.where(p.units >= 0, keep_unit[np.maximum(p.units, 0)], True)


def apply(gm: fx.GraphModule, space: PruningSpace, keep_unit: np.ndarray, inputs: Inputs | None = None) -> fx.GraphModule:
    """A pruned copy of `gm`; the original is untouched (it can serve as a teacher)."""
    new = copy.deepcopy(gm)
    done: set[str] = set()
    for node in list(new.graph.nodes):
        if node.op == "call_module" and node.target not in done:
            done.add(node.target)
            _slice_module(new, node, space, keep_unit)
        elif node.op == "get_attr":
            _slice_attr(new, node, space, keep_unit)
        elif node.op in ("call_function", "call_method"):
            _patch_op(node, space, keep_unit)
    new.graph.lint()
    new.recompile()
    if inputs is not None:
        try:
            propagate_shapes(new, inputs)
        except Exception as exc:
            raise RewriteError(f"the pruned graph does not run ({type(exc).__name__}: {exc}); "
                               f"please report this model to latprune") from None
    return new


def _masks(node: fx.Node, space: PruningSpace, keep: np.ndarray, in_dim: int, out_dim: int):
    src = node.args[0] if node.args else None
    ik = keep_of(space, keep, src.name) if isinstance(src, fx.Node) else None
    ok = keep_of(space, keep, node.name)
    ik = ik[1] if ik is not None and ik[0] == in_dim else None
    ok = ok[1] if ok is not None and ok[0] == out_dim else None
    return ik, ok


def _idx(mask: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.nonzero(mask)[0])


def _take(t: torch.Tensor, dim: int, mask: np.ndarray) -> torch.Tensor:
    """The kept slices of `t` along `dim` (index_select: several times faster than t[idx])."""
    return t.index_select(dim, _idx(mask))


def _set(m: nn.Module, name: str, value: torch.Tensor) -> None:
    old = getattr(m, name)
    if isinstance(old, nn.Parameter):
        setattr(m, name, nn.Parameter(value.contiguous(), requires_grad=old.requires_grad))
    else:
        setattr(m, name, value.contiguous())


def _slice_module(gm: fx.GraphModule, node: fx.Node, space: PruningSpace, keep: np.ndarray) -> None:
    m = gm.get_submodule(node.target)
    rank = len(shape_of(node) or ())
    if isinstance(m, nn.Linear):
        ik, ok = _masks(node, space, keep, len(shape_of(node.args[0])) - 1, rank - 1)
        w = m.weight.data
        if ok is not None and not ok.all():
            w = _take(w, 0, ok)
            if m.bias is not None:
                _set(m, "bias", _take(m.bias.data, 0, ok))
            m.out_features = int(ok.sum())
        if ik is not None and not ik.all():
            w = _take(w, 1, ik)
            m.in_features = int(ik.sum())
        _set(m, "weight", w)
    elif isinstance(m, CONV + CONV_T):
        ik, ok = _masks(node, space, keep, 1, 1)
        _slice_conv(m, ik, ok, node)
    elif isinstance(m, _PER_CHANNEL):
        _, ok = _masks(node, space, keep, 1, 1)
        if ok is None or ok.all():
            return
        for name in ("weight", "bias", "running_mean", "running_var"):
            t = getattr(m, name, None)
            if isinstance(t, torch.Tensor) and t.dim() == 1 and len(t) == len(ok):
                _set(m, name, _take(t.data, 0, ok))
        if isinstance(m, nn.GroupNorm):
            m.num_groups = int(ok.sum()) // (m.num_channels // m.num_groups)
            m.num_channels = int(ok.sum())
        elif isinstance(m, nn.PReLU):
            m.num_parameters = int(ok.sum())
        else:
            m.num_features = int(ok.sum())
    elif not isinstance(m, nn.LayerNorm):  # LayerNorm only ever sees non-channel dims here
        for mask in _masks(node, space, keep, 1, 1):
            if mask is not None and not mask.all() and any(True for _ in m.parameters(recurse=True)):
                raise RewriteError(f"module `{node.target}` ({type(m).__name__}) would be pruned but has no rule")


def _slice_conv(m: nn.Module, ik: np.ndarray | None, ok: np.ndarray | None, node: fx.Node) -> None:
    g = m.groups
    n_in = int(ik.sum()) if ik is not None else m.in_channels
    n_out = int(ok.sum()) if ok is not None else m.out_channels
    if n_in == m.in_channels and n_out == m.out_channels:
        return
    w = m.weight.data
    if isinstance(m, CONV_T):
        if ok is not None:
            w = _take(w, 1, ok)
        if ik is not None:
            w = _take(w, 0, ik)
    elif g == 1:
        if ok is not None:
            w = _take(w, 0, ok)
        if ik is not None:
            w = _take(w, 1, ik)
    elif g == m.in_channels:  # depthwise: the group count follows the channels
        if ok is not None:
            w = _take(w, 0, ok)
        g = n_in
    else:
        opg, ipg = m.out_channels // g, m.in_channels // g
        ok_b = (ok if ok is not None else np.ones(m.out_channels, bool)).reshape(g, opg)
        ik_b = (ik if ik is not None else np.ones(m.in_channels, bool)).reshape(g, ipg)
        if len(set(ok_b.sum(1).tolist())) != 1 or len(set(ik_b.sum(1).tolist())) != 1:
            raise RewriteError(f"grouped conv `{node.target}` would keep unequal blocks")
        w = torch.cat([_take(_take(w[j * opg:(j + 1) * opg], 0, ok_b[j]), 1, ik_b[j]) for j in range(g)])
    if m.bias is not None and ok is not None:
        _set(m, "bias", _take(m.bias.data, 0, ok))
    _set(m, "weight", w)
    m.in_channels, m.out_channels, m.groups = n_in, n_out, g


def _slice_attr(gm: fx.GraphModule, node: fx.Node, space: PruningSpace, keep: np.ndarray) -> None:
    k = keep_of(space, keep, node.name)
    if k is None or k[1].all():
        return
    dim, mask = k
    owner_name, _, attr = node.target.rpartition(".")
    owner = gm.get_submodule(owner_name)
    _set(owner, attr, _take(getattr(owner, attr).data, dim, mask))


def _arg(node: fx.Node, i: int, name: str, default: Any) -> Any:
    return node.args[i] if len(node.args) > i else node.kwargs.get(name, default)


def _patch_op(node: fx.Node, space: PruningSpace, keep: np.ndarray) -> None:
    t = node.target
    src = node.args[0] if node.args else None
    k_in = keep_of(space, keep, src.name) if isinstance(src, fx.Node) else None
    if t in _SPLIT and t not in ("unbind", torch.unbind) and k_in is not None:
        dim, mask = k_in
        if _arg(node, 2, "dim", 0) % len(shape_of(src)) != dim or mask.all():
            return
        sizes, start = [], 0
        for meta in node.meta["tensor_meta"]:
            n = meta.shape[dim]
            sizes.append(int(mask[start:start + n].sum()))
            start += n
        node.op, node.target = "call_function", torch.split
        node.args, node.kwargs = (src, sizes), {"dim": dim}
    elif t is operator.getitem and k_in is not None and isinstance(src.meta.get("tensor_meta"), TensorMetadata):
        _patch_channel_slice(node, k_in, shape_of(src))
    elif t in ("view", "reshape", "expand", torch.reshape):
        k_out = keep_of(space, keep, node.name)
        if k_out is None or k_out[1].all():
            return
        dim, mask = k_out
        shape_args = node.args[1:] if t != torch.reshape else node.args[1]
        flat = isinstance(shape_args, tuple) and len(shape_args) == 1 and isinstance(shape_args[0], (list, tuple))
        sizes = list(shape_args[0] if flat else shape_args)
        if isinstance(sizes[dim], int) and sizes[dim] != -1:
            sizes[dim] = int(mask.sum())
            new = (tuple(sizes),) if flat else tuple(sizes)
            node.args = (src, *new) if t != torch.reshape else (src, tuple(sizes))


def _patch_channel_slice(node: fx.Node, k_in: tuple[int, np.ndarray], in_shape: tuple[int, ...]) -> None:
    dim, mask = k_in
    idx = node.args[1]
    items = expand_index(idx, len(in_shape))
    pos = [i for i, it in enumerate(items) if it is not None]
    if dim >= len(pos):
        return
    s = items[pos[dim]]
    if not isinstance(s, slice) or s == slice(None) or mask.all():
        return
    start, stop, _ = s.indices(in_shape[dim])
    items[pos[dim]] = slice(int(mask[:start].sum()), int(mask[:stop].sum()), s.step)
    node.args = (node.args[0], tuple(items) if isinstance(idx, tuple) else items[0])
