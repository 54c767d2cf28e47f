"""What each pruning unit adds to the layers that read it, sampled on calibration data.

A convolution or linear layer is linear in its input channels: its output, less the bias,
is the sum over input positions of what each position contributes. Sampling outputs
(an image, an output channel, a location) gives, per consumer layer, a matrix Z of
samples x units whose row sums are those outputs; pruning a set T of units removes the
sum of T's columns. ThiNet and LASSO channel selection (compiler.core.selection) work on Z.

Every consumer that reads a group is one block of rows of that group's Z, scaled to unit
output energy so that a residual-coupled group weighs each of its readers alike. Depthwise
convs are no consumers (their input and output are one unit, judged by what reads their
output); transposed and non-zero-padded convs and consumers of registered user ops are
left out, and a group no consumer reads falls back to L1 (selection.py).
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from .errors import BadInputError
from .rules.base import CONV
from .space import PruningSpace

SAMPLES_PER_IMAGE = 16  # sampled outputs per image and consumer
MAX_IMAGES = 32
MAX_OUT_CHANNELS = 8  # output channels a conv's samples are drawn from, per image
_CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def calibration_inputs(batches: Iterable[Any], max_images: int = MAX_IMAGES) -> torch.Tensor:
    """The first `max_images` inputs of (input, label) or input batches, as one tensor."""
    xs, have = [], 0
    for batch in batches:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        if not isinstance(x, torch.Tensor):
            raise BadInputError(f"calibration batches must be tensors or (input, label) pairs, got {type(x).__name__}")
        xs.append(x[:max_images - have])
        have += len(xs[-1])
        if have >= max_images:
            break
    if not xs:
        raise BadInputError("data-driven importance got no calibration batches; give at least one training batch")
    return torch.cat(xs)


def consumers(gm: fx.GraphModule, space: PruningSpace) -> list[fx.Node]:
    """Conv and linear calls whose input channels carry prunable units (see module docstring)."""
    out = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or not node.args or not isinstance(node.args[0], fx.Node):
            continue
        m, place = gm.get_submodule(node.target), space.places.get(node.args[0].name)
        if place is None or not (place.units >= 0).any():
            continue
        if isinstance(m, CONV) and place.dim == 1 and m.padding_mode == "zeros" and not (m.groups == m.in_channels > 1):
            out.append(node)
        elif isinstance(m, nn.Linear) and place.dim == len(node.args[0].meta["tensor_meta"].shape) - 1:
            out.append(node)
    return out


class _Recorder(fx.Interpreter):
    """Runs the graph and keeps the input and/or output tensor of the named nodes."""

    def __init__(self, gm: fx.GraphModule, inputs: set[str], outputs: set[str]) -> None:
        super().__init__(gm)
        self.inputs, self.outputs, self.seen_in, self.seen_out = inputs, outputs, {}, {}

    def run_node(self, n: fx.Node) -> Any:
        if n.name in self.inputs:
            self.seen_in[n.name] = self.env[n.args[0]].detach()
        out = super().run_node(n)
        if n.name in self.outputs:
            self.seen_out[n.name] = out.detach()
        return out


def layer_tensors(gm: fx.GraphModule, x: torch.Tensor, inputs: Iterable[str] = (),
                  outputs: Iterable[str] = ()) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The input of each node named in `inputs` and the output of each in `outputs` when `gm`
    runs on `x` in eval mode, without gradients."""
    was = gm.training
    gm.eval()
    rec = _Recorder(gm, set(inputs), set(outputs))
    try:
        with torch.no_grad():
            rec.run(x)
    finally:
        gm.train(was)
    return rec.seen_in, rec.seen_out


def _dense_weight(m: nn.Module) -> torch.Tensor:
    """A grouped conv's weight as (out, in, *kernel), zero where a filter does not read."""
    w = m.weight.detach().float()
    if m.groups == 1:
        return w
    opg, ipg = m.out_channels // m.groups, m.in_channels // m.groups
    dense = w.new_zeros(m.out_channels, m.in_channels, *w.shape[2:])
    for j in range(m.groups):
        dense[j * opg:(j + 1) * opg, j * ipg:(j + 1) * ipg] = w[j * opg:(j + 1) * opg]
    return dense


def _conv_samples(m: nn.Module, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """(samples, in_channels): each input channel's share of sampled conv outputs."""
    w, c = _dense_weight(m), m.in_channels
    conv = _CONV_FN[w.dim() - 2]
    rows = []
    for xi in x:
        outs = torch.from_numpy(rng.choice(m.out_channels, size=min(m.out_channels, MAX_OUT_CHANNELS), replace=False))
        wt = w[outs].transpose(0, 1).reshape(c * len(outs), 1, *w.shape[2:])  # one filter slice per (channel, output)
        y = conv(xi[None].float(), wt, None, m.stride, m.padding, m.dilation, c).reshape(c, len(outs), -1)
        pick_o = torch.from_numpy(rng.integers(0, len(outs), SAMPLES_PER_IMAGE))
        pick_l = torch.from_numpy(rng.integers(0, y.shape[2], SAMPLES_PER_IMAGE))
        rows.append(y[:, pick_o, pick_l].T)
    return torch.cat(rows)


def _linear_samples(m: nn.Linear, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """(samples, in_features): each input feature's share of sampled linear outputs."""
    flat = x.reshape(-1, m.in_features).float()
    n = min(len(flat) * m.out_features, SAMPLES_PER_IMAGE * len(x))
    pairs = rng.choice(len(flat) * m.out_features, size=n, replace=False)
    r, o = torch.from_numpy(pairs // m.out_features), torch.from_numpy(pairs % m.out_features)
    return flat[r] * m.weight.detach().float()[o]


def unit_contributions(gm: fx.GraphModule, space: PruningSpace, batches: Iterable[Any],
                       seed: int = 0) -> dict[str, np.ndarray]:
    """Per prunable group id: Z (samples, group units), stacked over every consumer that reads it."""
    x = calibration_inputs(batches)
    nodes = consumers(gm, space)
    inputs = layer_tensors(gm, x, inputs=[n.name for n in nodes])[0]
    rng = np.random.default_rng(seed)
    blocks: dict[str, list[np.ndarray]] = {}
    for node in nodes:
        m = gm.get_submodule(node.target)
        z = (_linear_samples(m, inputs[node.name], rng) if isinstance(m, nn.Linear)
             else _conv_samples(m, inputs[node.name], rng)).double().numpy()
        scale = np.sqrt(np.mean(z.sum(1) ** 2)) or 1.0  # whole output, fixed positions included
        units = space.places[node.args[0].name].units
        for g in space.prunable():
            cols = (units >= g.unit_start) & (units < g.unit_start + g.units)
            if not cols.any():
                continue
            zg = np.zeros((len(z), g.units))
            np.add.at(zg.T, units[cols] - g.unit_start, z[:, cols].T)  # a unit may span several positions
            blocks.setdefault(g.id, []).append(zg / scale)
    return {gid: np.vstack(b) for gid, b in blocks.items()}
