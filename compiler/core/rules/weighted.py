"""Producers: convolutions and linears create channels and own the weights importance reads."""
from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn

from ..labels import Labels
from .base import CONV, CONV_T, Masks, Rule, RewriteError, pruned, register_rule, set_tensor, take

if TYPE_CHECKING:
    from ..propagate import NodeLabels, Propagator
    from ..space import Place


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


for _t in CONV + CONV_T:
    register_rule(_t, Conv())
register_rule(nn.Linear, Linear())
