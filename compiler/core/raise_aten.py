"""Raise a torch.export program (ATen ops, parameters as graph inputs) back to torch.nn
modules and torch functions, so the channel analysis sees convs, norms and linears again.

Only the ops CNNs are made of are raised; any other ATen op stays as it is, and the analysis
freezes the channels it touches, as for any op it has no rule for.
"""
from __future__ import annotations

import operator

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from .errors import BadInputError

aten = torch.ops.aten
_FUNCS = {
    aten.relu.default: torch.relu, aten.relu_.default: torch.relu,
    aten.add.Tensor: operator.add, aten.add_.Tensor: operator.add,
    aten.mul.Tensor: operator.mul, aten.sub.Tensor: operator.sub,
    aten.cat.default: torch.cat, aten.flatten.using_ints: torch.flatten,
    aten.sigmoid.default: torch.sigmoid, aten.silu.default: F.silu, aten.silu_.default: F.silu,
    aten.hardswish.default: F.hardswish, aten.hardswish_.default: F.hardswish,
    aten.hardsigmoid.default: F.hardsigmoid, aten.gelu.default: F.gelu,
    aten.adaptive_avg_pool2d.default: F.adaptive_avg_pool2d,
    aten.max_pool2d.default: F.max_pool2d, aten.avg_pool2d.default: F.avg_pool2d,
    aten.dropout.default: F.dropout,
}
_METHODS = {aten.view.default: "view", aten.reshape.default: "reshape", aten.mean.dim: "mean",
            aten.permute.default: "permute", aten.contiguous.default: "contiguous"}


def raise_exported(ep: torch.export.ExportedProgram) -> nn.Module:
    """An nn.Module (fx.GraphModule with nn.Conv2d/BatchNorm2d/Linear submodules) equal to `ep`."""
    src = ep.module()
    params = dict(src.named_parameters()) | dict(src.named_buffers())
    root = nn.Module()
    g = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    count = 0

    def attr(n: object) -> torch.Tensor | None:
        return params.get(n.target) if isinstance(n, fx.Node) and n.op == "get_attr" else None

    def add_module(m: nn.Module, x: fx.Node) -> fx.Node:
        nonlocal count
        name = f"{type(m).__name__.lower()}_{count}"
        count += 1
        root.add_module(name, m)
        return g.call_module(name, (env[x],))

    for node in src.graph.nodes:
        t = node.target
        a = node.args
        if node.op == "placeholder":
            env[node] = g.placeholder(node.name)
        elif node.op == "output":
            out = a[0][0] if isinstance(a[0], (tuple, list)) and len(a[0]) == 1 else a[0]
            g.output(fx.node.map_arg(out, lambda n: env[n]))
        elif node.op == "call_module" and node.target == "_guards_fn":
            continue  # export's input-guard check; the CLI builds inputs of the right shape
        elif node.op == "get_attr":
            env[node] = g.get_attr(node.target)
        elif t in (aten.conv2d.default, aten.conv1d.default) and attr(a[1]) is not None:
            env[node] = add_module(_conv(t, a, attr), a[0])
        elif t is aten.linear.default and attr(a[1]) is not None:
            w = attr(a[1])
            m = nn.Linear(w.shape[1], w.shape[0], bias=len(a) > 2 and a[2] is not None)
            _load(m, w, attr(a[2]) if m.bias is not None else None)
            env[node] = add_module(m, a[0])
        elif t is aten._native_batch_norm_legit_no_training.default and attr(a[3]) is not None:
            env[node] = add_module(_bn(a[0], attr(a[1]), attr(a[2]), attr(a[3]), attr(a[4]), a[6]), a[0])
        elif t is aten.batch_norm.default and attr(a[3]) is not None:
            env[node] = add_module(_bn(a[0], attr(a[1]), attr(a[2]), attr(a[3]), attr(a[4]), a[7]), a[0])
        elif t is operator.getitem and a[0].target is aten._native_batch_norm_legit_no_training.default:
            if a[1] != 0:
                raise BadInputError("the exported program uses batch-norm statistics outputs; export it in eval mode")
            env[node] = env[a[0]]
        elif t in (aten.hardtanh.default, aten.hardtanh_.default) and tuple(a[1:3]) == (0.0, 6.0):
            env[node] = add_module(nn.ReLU6(), a[0])
        elif t in _FUNCS or t in _METHODS:
            args = fx.node.map_arg(a, lambda n: env[n])
            kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n])
            env[node] = (g.call_function(_FUNCS[t], args, kwargs) if t in _FUNCS
                         else g.call_method(_METHODS[t], args, kwargs))
        else:
            env[node] = g.node_copy(node, lambda n: env[n])
    for name, p in params.items():
        if any(n.op == "get_attr" and n.target == name for n in g.nodes):
            *path, leaf = name.split(".")
            holder = root
            for part in path:
                if not hasattr(holder, part):
                    holder.add_module(part, nn.Module())
                holder = getattr(holder, part)
            holder.register_buffer(leaf, p.detach().clone())
    gm = fx.GraphModule(root, g, class_name="Exported")
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return gm.eval()


def _load(m: nn.Module, w: torch.Tensor, b: torch.Tensor | None) -> None:
    with torch.no_grad():
        m.weight.copy_(w)
        if b is not None:
            m.bias.copy_(b)


def _conv(t: object, a: tuple, attr: object) -> nn.Module:
    w = attr(a[1])
    b = attr(a[2]) if len(a) > 2 and a[2] is not None else None
    nd = 2 if t is aten.conv2d.default else 1
    stride, padding, dilation, groups = (list(a[3:]) + [1, 0, 1, 1][len(a) - 3:])[:4] if len(a) > 3 else (1, 0, 1, 1)
    cls = nn.Conv2d if nd == 2 else nn.Conv1d
    m = cls(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), stride, padding, dilation, groups, b is not None)
    _load(m, w, b)
    return m


def _bn(x: fx.Node, w: torch.Tensor | None, b: torch.Tensor | None, mean: torch.Tensor, var: torch.Tensor,
        eps: float) -> nn.Module:
    ndim = len(x.meta["val"].shape) if "val" in x.meta else 4
    cls = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}[ndim]
    m = cls(mean.shape[0], eps=eps, affine=w is not None)
    with torch.no_grad():
        m.running_mean.copy_(mean)
        m.running_var.copy_(var)
        if w is not None:
            m.weight.copy_(w)
            m.bias.copy_(b)
    return m
