"""The reference a pruned model must equal: the original with dropped channels zeroed.

Every place (every node output that carries channels) is masked, after the producer's BN and
activation, so the reference is what the pruned graph computes, position for position.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.fx as fx

from .rewrite import keep_of
from .space import PruningSpace


class _Masked(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, space: PruningSpace, keep_unit: np.ndarray) -> None:
        super().__init__(gm)
        self.masks: dict[str, tuple[int, torch.Tensor]] = {}
        for node in gm.graph.nodes:
            k = keep_of(space, keep_unit, node.name)
            if k is not None and not k[1].all():
                self.masks[node.name] = (k[0], torch.from_numpy(k[1]))

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        if n.name in self.masks and isinstance(out, torch.Tensor):
            dim, mask = self.masks[n.name]
            shape = [1] * out.dim()
            shape[dim] = -1
            out = torch.where(mask.view(shape), out, torch.zeros((), dtype=out.dtype))
        return out


def masked_reference(gm: fx.GraphModule, space: PruningSpace, keep_unit: np.ndarray, *inputs: torch.Tensor) -> Any:
    """Run the unpruned graph with every dropped channel zeroed at every place."""
    with torch.no_grad():
        return _Masked(gm, space, keep_unit).run(*inputs)


def invariant_error(gm: fx.GraphModule, pruned: fx.GraphModule, space: PruningSpace,
                    keep_unit: np.ndarray, *inputs: torch.Tensor) -> float:
    """Largest |pruned - masked reference| over all outputs, relative to the output scale.
    Near float epsilon when the rewrite is right; O(1) for a slicing bug."""
    ref = masked_reference(gm, space, keep_unit, *inputs)
    with torch.no_grad():
        out = pruned(*inputs)
    refs, outs = torch.utils._pytree.tree_leaves(ref), torch.utils._pytree.tree_leaves(out)
    if len(refs) != len(outs):
        return float("inf")
    worst = 0.0
    for r, o in zip(refs, outs):
        if not isinstance(r, torch.Tensor):
            continue
        if r.shape != o.shape:
            return float("inf")
        scale = max(r.abs().max().item(), 1e-6)
        worst = max(worst, (r - o).abs().max().item() / scale)
    return worst
