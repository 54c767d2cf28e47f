"""Pass 4: apply a keep mask to the graph: slice weights, fix split sizes and literal shapes.

What slicing or patching an op means is its rule's (compiler.core.rules).
Everything is read off the PruningSpace's places: a module's input and output keep masks
are those of its input node and its own node, so modules and graph ops agree by construction.
"""
from __future__ import annotations

import copy
import itertools

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn

from .lower import Inputs, propagate_shapes
from .rules.base import Masks, RewriteError, Rule, call_rule, module_rule, set_tensor, take
from .space import PruningSpace


def keep_of(space: PruningSpace, keep_unit: np.ndarray, name: str) -> tuple[int, np.ndarray] | None:
    """(dim, bool mask over positions) of a place; None when the node has no channels."""
    p = space.places.get(name)
    if p is None:
        return None
    return p.dim, np.where(p.units >= 0, keep_unit[np.maximum(p.units, 0)], True)


def apply(gm: fx.GraphModule, space: PruningSpace, keep_unit: np.ndarray, inputs: Inputs | None = None) -> fx.GraphModule:
    """A pruned copy of `gm`; the original is untouched (it can serve as a teacher).

    The copy starts by sharing the original's weights (copying them all, to slice most of them
    right after, was two thirds of a rewrite); the ones no rule replaced are copied at the end."""
    originals = {id(t): t for t in itertools.chain(gm.parameters(), gm.buffers())}
    new = copy.deepcopy(gm, memo=dict(originals))
    done: set[str] = set()
    for node in list(new.graph.nodes):
        if node.op == "call_module" and node.target not in done:
            done.add(node.target)
            _slice_module(new, node, space, keep_unit)
        elif node.op == "get_attr":
            _slice_attr(new, node, space, keep_unit)
        elif node.op in ("call_function", "call_method"):
            _patch_op(node, space, keep_unit)
    _own_tensors(new, originals)
    new.graph.lint()
    new.recompile()
    if inputs is not None:
        try:
            propagate_shapes(new, inputs)
        except Exception as exc:
            raise RewriteError(f"the pruned graph does not run ({type(exc).__name__}: {exc}); "
                               f"please report this model to latprune") from None
    return new


def _own_tensors(new: nn.Module, originals: dict[int, torch.Tensor]) -> None:
    """Copy every parameter and buffer of `new` that still holds the original's memory (the same
    tensor, or a new one over the same storage, as a rule that keeps a whole weight makes), ties
    kept, so that training or recalibrating the pruned model never writes into the original."""
    theirs = {t.untyped_storage().data_ptr() for t in originals.values() if t.numel()}
    copies: dict[int, torch.Tensor] = {}
    for m in new.modules():
        for store in (m._parameters, m._buffers):
            for name, t in store.items():
                if t is None or not t.numel() or t.untyped_storage().data_ptr() not in theirs:
                    continue
                if id(t) not in copies:
                    c = t.detach().clone()
                    copies[id(t)] = nn.Parameter(c, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else c
                store[name] = copies[id(t)]


def _module_masks(node: fx.Node, space: PruningSpace, keep: np.ndarray) -> Masks:
    """(in_dim, out_dim) -> the keep masks of the module's input and output at those dims."""
    def masks(in_dim: int, out_dim: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        src = node.args[0] if node.args else None
        ik = keep_of(space, keep, src.name) if isinstance(src, fx.Node) else None
        ok = keep_of(space, keep, node.name)
        return ik[1] if ik is not None and ik[0] == in_dim else None, ok[1] if ok is not None and ok[0] == out_dim else None
    return masks


def _slice_module(gm: fx.GraphModule, node: fx.Node, space: PruningSpace, keep: np.ndarray) -> None:
    m = gm.get_submodule(node.target)
    (module_rule(m) or Rule()).slice(m, node, _module_masks(node, space, keep))


def _slice_attr(gm: fx.GraphModule, node: fx.Node, space: PruningSpace, keep: np.ndarray) -> None:
    k = keep_of(space, keep, node.name)
    if k is None or k[1].all():
        return
    dim, mask = k
    owner_name, _, attr = node.target.rpartition(".")
    owner = gm.get_submodule(owner_name)
    set_tensor(owner, attr, take(getattr(owner, attr).data, dim, mask))


def _patch_op(node: fx.Node, space: PruningSpace, keep: np.ndarray) -> None:
    rule = call_rule(node.target)
    if rule is not None:
        rule.patch(node, lambda n: keep_of(space, keep, n.name))
