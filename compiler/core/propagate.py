"""Pass 2a: walk the fx graph and give every tensor its channel labels, op by op.

What an op does to channels is its rule's business (compiler.core.rules); the Propagator
holds the label state and the toolkit rules build on (passthrough, unknown, generic, shared,
in_ids, channel_first). An op without a rule freezes every channel it touches: never a wrong slice.
"""
from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
from torch.fx.passes.shape_prop import TensorMetadata

from .labels import NONE, ChannelState, Labels
from .rules import call_rule, module_rule

NodeLabels = Labels | tuple | None


def tensor_meta(node: fx.Node) -> Any:
    return node.meta.get("tensor_meta")


def shape_of(node: fx.Node) -> tuple[int, ...] | None:
    tm = tensor_meta(node)
    return tuple(tm.shape) if isinstance(tm, TensorMetadata) else None


def describe(node: fx.Node) -> str:
    """A short human name for what a node runs: `conv2d layer1.0.conv1`, `torch.cat`..."""
    t = node.target
    if node.op == "call_module":
        return f"module `{t}`"
    if node.op == "call_method":
        return f"method `.{t}()` (node {node.name})"
    return f"`{getattr(t, '__module__', '')}.{getattr(t, '__name__', t)}` (node {node.name})"


class Propagator:
    """Runs the rules over a shaped GraphModule and keeps the labels and grouped-conv constraints."""

    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
        self.st = ChannelState()
        self.labels: dict[fx.Node, NodeLabels] = {}
        self.blocks: list[tuple[str, np.ndarray, int]] = []  # (where, ids, groups)
        self._module_calls: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.chdep: dict[fx.Node, Any] = {}  # non-tensor values: do they derive from a channel count?

    def run(self) -> Propagator:
        for node in self.gm.graph.nodes:
            self.labels[node] = self._visit(node)
        return self

    # -- helpers -------------------------------------------------------------------------
    @staticmethod
    def shape(node: fx.Node) -> tuple[int, ...] | None:
        return shape_of(node)

    @staticmethod
    def describe(node: fx.Node) -> str:
        return describe(node)

    def lab(self, a: Any) -> Labels | None:
        v = self.labels.get(a) if isinstance(a, fx.Node) else None
        return v if isinstance(v, Labels) else None

    def value(self, a: Any) -> Any:
        """Concrete value of an argument: label tensors for tensors, recorded values else."""
        if isinstance(a, fx.Node):
            lab = self.lab(a)
            if lab is not None:
                return lab.to_full()
            return a.meta.get("value")
        if isinstance(a, (list, tuple)):
            return type(a)(self.value(x) for x in a)
        if isinstance(a, dict):
            return {k: self.value(v) for k, v in a.items()}
        if isinstance(a, slice):
            return slice(self.value(a.start), self.value(a.stop), self.value(a.step))
        return a

    def tensor_args(self, node: fx.Node) -> list[Labels]:
        found: list[Labels] = []
        fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(self.lab(n)) or n)
        return [x for x in found if x is not None]

    def fresh_frozen(self, node: fx.Node, reason: str) -> NodeLabels:
        tm = tensor_meta(node)

        def one(meta: Any) -> Labels | None:
            shape = tuple(meta.shape)
            if not shape:
                return Labels.empty(shape)
            d = 1 if len(shape) >= 2 else 0
            return Labels(shape, d, self.st.new(shape[d], node.name, frozen=reason))

        if isinstance(tm, TensorMetadata):
            return one(tm)
        if isinstance(tm, (list, tuple)):
            return tuple(one(m) if isinstance(m, TensorMetadata) else None for m in tm)
        return None

    def unknown(self, node: fx.Node, why: str | None = None) -> NodeLabels:
        reason = why or f"unsupported op {describe(node)}"
        for lab in self.tensor_args(node):
            self.st.freeze(lab.ids, reason)
        return self.fresh_frozen(node, reason)

    def passthrough(self, node: fx.Node, x: Labels | None) -> NodeLabels:
        """Channels stay where they are; only other dims may change size."""
        out = shape_of(node)
        if out is None:
            return None
        if x is None or x.dim is None:
            return Labels.empty(out)
        if len(out) != len(x.shape) or out[x.dim] != x.shape[x.dim]:
            return self.unknown(node, f"{describe(node)} changes the channel dim")
        return Labels(out, x.dim, x.ids)

    def generic(self, node: fx.Node, fn: Callable[..., Any], args: Any, kwargs: Any) -> NodeLabels:
        """Run a shape op on label tensors and read the channels off the result."""
        try:
            with torch.no_grad():
                out = fn(*self.value(args), **self.value(kwargs))
        except Exception as exc:  # an op that cannot run on int64 labels: freeze, don't guess
            return self.unknown(node, f"{describe(node)} could not be analysed ({type(exc).__name__})")
        if isinstance(out, torch.Tensor):
            return self.st.from_full(out, node.name)
        return self.unknown(node)

    # -- dispatch ------------------------------------------------------------------------
    def _visit(self, node: fx.Node) -> NodeLabels:
        if node.op == "placeholder":
            shape = shape_of(node)
            if shape is None or len(shape) < 2:
                return Labels.empty(shape) if shape is not None else None
            return Labels(shape, 1, self.st.new(shape[1], node.name, frozen="model input channels"))
        if node.op == "get_attr":
            return self._get_attr(node)
        if node.op == "output":
            for lab in self.tensor_args(node):
                self.st.freeze(lab.ids, "model output")
            return None
        if tensor_meta(node) is None:
            self.chdep[node] = self._scalar_dep(node)
            return None  # sizes, ints, asserts: no channels
        if node.op == "call_module":
            return self._module(node, self.gm.get_submodule(node.target))
        return self._function(node)

    def _scalar_dep(self, node: fx.Node) -> Any:
        """True (or a tuple of flags) where a size value is computed from a channel count,
        so it will change when that group is pruned."""
        t, args = node.target, node.args
        x = self.lab(args[0]) if args else None
        if x is not None and (t == "size" or (t is getattr and args[1] == "shape")):
            flags = tuple(x.dim == k for k in range(len(x.shape)))
            d = args[1] if t == "size" and len(args) > 1 else node.kwargs.get("dim")
            return flags[d] if isinstance(d, int) else flags
        if t is operator.getitem and isinstance(self.chdep.get(args[0]), tuple):
            return self.chdep[args[0]][args[1]]
        deps: list[Any] = []
        fx.node.map_arg((args, node.kwargs), lambda n: deps.append(self.chdep.get(n)) or n)
        return any(any(d) if isinstance(d, tuple) else bool(d) for d in deps)

    def _get_attr(self, node: fx.Node) -> NodeLabels:
        shape = shape_of(node)
        if shape is None:
            return None
        big = [d for d, s in enumerate(shape) if s > 1]
        if not big:
            return Labels.empty(shape)
        if len(big) == 1:
            return Labels(shape, big[0], self.st.new(shape[big[0]], node.name))
        d = max(big, key=lambda k: shape[k])
        return Labels(shape, d, self.st.new(shape[d], node.name, frozen=f"tensor `{node.target}` used in forward"))

    def _module(self, node: fx.Node, m: nn.Module) -> NodeLabels:
        rule = module_rule(m)
        if rule is None:
            return self.unknown(node, f"opaque module `{node.target}` ({type(m).__name__})")
        return rule.channels(self, node, m)

    def _function(self, node: fx.Node) -> NodeLabels:
        rule = call_rule(node.target)
        return self.unknown(node) if rule is None else rule.channels(self, node, None)

    # -- the toolkit rules build on ----------------------------------------------------------
    def shared(self, node: fx.Node, in_ids: np.ndarray, out_ids: np.ndarray) -> np.ndarray:
        """A module called at several sites has one set of weights: tie the sites together."""
        prev = self._module_calls.get(node.target)
        if prev is None:
            self._module_calls[node.target] = (in_ids, out_ids)
            return out_ids
        self.st.merge(prev[0], in_ids, node.name)
        return self.st.merge(prev[1], out_ids, node.name)

    def in_ids(self, node: fx.Node, x: Labels | None, dim: int, n: int) -> np.ndarray:
        """The labels a weighted op reads at `dim`; frozen (and fresh) if they sit elsewhere."""
        if x is not None and x.dim == dim and len(x.ids) == n:
            return x.ids
        if x is not None and x.dim is not None:
            self.st.freeze(x.ids, f"{describe(node)} reads channels from an unexpected dim")
        return np.full(n, NONE, dtype=np.int64)

    def channel_first(self, node: fx.Node, x: Labels | None) -> NodeLabels:
        """A per-channel op (a norm): channels must sit at dim 1."""
        if x is not None and x.dim not in (None, 1):
            return self.unknown(node, f"{describe(node)} sees channels outside dim 1")
        return self.passthrough(node, x)
