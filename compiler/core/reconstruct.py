"""Least-squares reconstruction of the layers that read pruned channels (He et al. 2017; the
weight refit of ThiNet): after the rewrite, each such conv or linear gets the weights that best
reproduce, from the pruned model's own inputs, what the unpruned layer output on calibration
images (its kept output channels, bias held). Layers are refitted in graph order, so each
one also absorbs the error left upstream. Cheaper than a fine-tune, and it recovers much of
what pruning took (tools/bench_methods.py).

The fit is ridge-regularised toward the inherited weights, and a refit is kept only if it
lowers the error on sampled outputs it was not fitted on. 2-D convs (grouped ones per block)
and linears are refitted; depthwise, transposed, 1-D/3-D and non-zero-padded convs, and layers
with more than MAX_FEATURES inputs per output, keep their sliced weights (each named, with
why, in the result).
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from .contributions import calibration_inputs, layer_tensors
from .rewrite import keep_of
from .rules.base import CONV, CONV_T
from .space import PruningSpace

MAX_IMAGES = 64
MAX_FEATURES = 8192  # inputs per output: a Gram matrix beyond this costs more than the fit is worth
MIN_ROWS = 2048
RIDGE = 1e-3  # relative to the mean diagonal of the Gram matrix
HELD_OUT = 0.2  # share of sampled rows that judge the refit


def _unsupported(m: nn.Module) -> str | None:
    if isinstance(m, nn.Linear):
        return None if m.in_features <= MAX_FEATURES else f"{m.in_features} inputs per output (> {MAX_FEATURES})"
    if type(m) is not nn.Conv2d:
        return f"{type(m).__name__} is not refitted (2-D convs and linears are)"
    if m.groups == m.in_channels > 1:
        return "depthwise: its inputs are its own channels"
    if isinstance(m.padding, str) or m.padding_mode != "zeros":
        return f"padding {m.padding!r} ({m.padding_mode}) is not refitted"
    if (d := m.in_channels // m.groups * math.prod(m.kernel_size)) > MAX_FEATURES:
        return f"{d} inputs per output (> {MAX_FEATURES})"
    return None


def _rows(m: nn.Module, inp: torch.Tensor, target: torch.Tensor,
          rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Sampled (rows, blocks, inputs) and (rows, blocks, outputs) of the layer's linear map."""
    if isinstance(m, nn.Linear):
        x, y = inp.reshape(-1, m.in_features), target.reshape(-1, target.shape[-1])
        pick = torch.from_numpy(rng.choice(len(x), size=min(len(x), max(3 * m.in_features, MIN_ROWS)), replace=False))
        return x[pick, None].double(), y[pick, None].double()
    g = m.groups
    d = m.in_channels // g * math.prod(m.kernel_size)
    per_image = max(1, math.ceil(max(3 * d, MIN_ROWS) / len(inp)))
    xs, ys = [], []
    for xi, yi in zip(inp, target):
        cols = F.unfold(xi[None], m.kernel_size, m.dilation, m.padding, m.stride)[0]  # (C*K, L)
        yi = yi.reshape(yi.shape[0], -1)
        pick = torch.from_numpy(rng.choice(cols.shape[1], size=min(cols.shape[1], per_image), replace=False))
        xs.append(cols[:, pick].T.reshape(-1, g, d))
        ys.append(yi[:, pick].T.reshape(-1, g, yi.shape[0] // g))
    return torch.cat(xs).double(), torch.cat(ys).double()


def _weights(m: nn.Module) -> torch.Tensor:
    """The layer's weight as (blocks, inputs, outputs per block)."""
    w = m.weight.detach().double()
    if isinstance(m, nn.Linear):
        return w.T[None]
    return w.reshape(m.groups, m.out_channels // m.groups, -1).transpose(1, 2)


def _set_weights(m: nn.Module, w: torch.Tensor) -> None:
    shape = m.weight.shape
    new = w[0].T if isinstance(m, nn.Linear) else w.transpose(1, 2).reshape(shape)
    with torch.no_grad():
        m.weight.copy_(new.to(m.weight.dtype))


def _error(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> float:
    return float(((y - torch.einsum("rgi,gio->rgo", x, w)) ** 2).sum() / (y ** 2).sum().clamp_min(1e-30))


def _fit(x: torch.Tensor, y: torch.Tensor, w0: torch.Tensor) -> torch.Tensor:
    """Ridge least squares per block, pulled toward w0."""
    gram = torch.einsum("rgi,rgj->gij", x, x)
    lam = RIDGE * torch.diagonal(gram, dim1=1, dim2=2).mean(1).clamp_min(1e-12)[:, None, None]
    eye = torch.eye(gram.shape[1], dtype=gram.dtype)
    return torch.linalg.solve(gram + lam * eye, torch.einsum("rgi,rgo->gio", x, y) + lam * w0)


def reconstruct(original: fx.GraphModule, pruned: fx.GraphModule, space: PruningSpace, keep: np.ndarray,
                batches: Iterable[Any], seed: int = 0) -> list[dict[str, Any]]:
    """Refit, in place, every conv/linear of `pruned` whose input lost channels under `keep`
    (the unit mask the rewrite applied to `original`). Returns one record per such layer:
    relative output error on held-out samples before and after, or why it was left as is."""
    x = calibration_inputs(batches, MAX_IMAGES)
    rng = np.random.default_rng(seed)
    out = []
    for node in pruned.graph.nodes:
        if node.op != "call_module" or not node.args or not isinstance(node.args[0], fx.Node):
            continue
        m = pruned.get_submodule(node.target)
        if not isinstance(m, (nn.Linear, *CONV, *CONV_T)):
            continue
        ik = keep_of(space, keep, node.args[0].name)
        if ik is None or ik[1].all():
            continue
        record: dict[str, Any] = {"layer": str(node.target)}
        out.append(record)
        if (why := _unsupported(m)) is not None:
            record["skipped"] = why
            continue
        inp = layer_tensors(pruned, x, inputs=[node.name])[0][node.name]
        target = layer_tensors(original, x, outputs=[node.name])[1][node.name]
        ok = keep_of(space, keep, node.name)
        if ok is not None and not ok[1].all():
            target = target.index_select(ok[0], torch.from_numpy(np.nonzero(ok[1])[0]))
        if m.bias is not None:
            b = m.bias.detach()
            target = target - (b if isinstance(m, nn.Linear) else b.reshape(-1, *[1] * (target.dim() - 2)))
        xs, ys = _rows(m, inp, target, rng)
        n_fit = int(len(xs) * (1 - HELD_OUT))
        w0 = _weights(m)
        try:
            w = _fit(xs[:n_fit], ys[:n_fit], w0)
        except torch.linalg.LinAlgError as exc:  # a degenerate layer keeps its sliced weights; the build goes on
            record["skipped"] = f"least squares failed ({exc})"
            continue
        before, after = _error(xs[n_fit:], ys[n_fit:], w0), _error(xs[n_fit:], ys[n_fit:], w)
        record.update(rows=len(xs), error_before=round(before, 6), error_after=round(after, 6), refitted=after < before)
        if after < before:
            _set_weights(m, w)
    return out
