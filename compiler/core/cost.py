"""Static cost of a graph: parameters and multiply-accumulates (the FLOPs proxy that latprune
replaces with measured latency, kept for reports and for showing where FLOPs mislead)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.fx as fx
import torch.nn as nn

from .lower import lower
from .propagate import shape_of
from .rules import module_rule


def macs(model: nn.Module, example_inputs: torch.Tensor | Sequence[torch.Tensor]) -> int:
    """Multiply-accumulates of convs and linears (the layers that dominate CNN compute)."""
    gm = model if isinstance(model, fx.GraphModule) and all(
        "tensor_meta" in n.meta for n in model.graph.nodes if n.op == "call_module") else lower(model, example_inputs)
    modules = dict(gm.named_modules())
    total = 0
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        m = modules[node.target]
        out = shape_of(node)
        if out is None:
            continue
        rule = module_rule(m)
        total += rule.macs(m, out) if rule is not None else 0
    return total


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
