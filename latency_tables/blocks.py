"""Blocks: the units a latency table keys on, found in a lowered, analysed graph.

A Block is an op as the engine runs it: a conv (or linear) chained with the BatchNorm and
activation that inference engines fold into it, or one glue op (pool, add, cat, ...). Its
key holds everything fixed (op attributes, kernel, stride, batch, spatial size, dtype); its
variable dims are channel counts, which Widths set through the places of the PruningSpace.
`BlockUse` ties one occurrence in a graph to those places, so a prediction needs no rewrite.
"""
from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
from torch.fx.node import _get_qualified_name, map_aggregate

from compiler.core.propagate import shape_of, tensor_meta
from compiler.core.rules import CONV, ENGINE_FUSES, describe_module, resize, role_of
from compiler.core.space import PruningSpace, Widths

class PlaceCounter:
    """Channels kept at every place under a Widths, without rewriting: a place holds a fixed
    part plus, for each group in it, positions that shrink in proportion to the group."""

    def __init__(self, space: PruningSpace) -> None:
        self.gids = [g.id for g in space.groups]
        sizes = np.array([g.size for g in space.groups], dtype=np.float64)
        owner = np.zeros(space.total_units, dtype=np.int64)
        for i, g in enumerate(space.groups):
            owner[g.unit_start:g.unit_start + g.units] = i
        self.names = list(space.places)
        self.fixed = np.zeros(len(self.names))
        self.share = np.zeros((len(self.names), len(self.gids)))  # positions per channel kept
        for r, name in enumerate(self.names):
            u = space.places[name].units
            self.fixed[r] = float((u < 0).sum())
            if (u >= 0).any():
                np.add.at(self.share[r], owner[u[u >= 0]], 1.0)
        self.share /= sizes[None, :]
        lo = np.array([g.channel_step if g.prunable else g.size for g in space.groups], dtype=np.float64)
        self.row = {n: i for i, n in enumerate(self.names)}
        self.full = self.fixed + self.share @ sizes
        self.least = self.fixed + self.share @ lo

    def vector(self, widths: Widths) -> np.ndarray:
        return np.array([widths[g] for g in self.gids], dtype=np.float64)

    def counts(self, w: np.ndarray) -> np.ndarray:
        """Channels at every place for a width vector in group order."""
        return np.rint(self.fixed + self.share @ w)


@dataclass
class Block:
    """One distinct block: its key, its variable dims and how to build it at any channel counts."""

    key: str
    vars: tuple[str, ...]
    full: tuple[int, ...]  # the largest value of each var seen in the graphs profiled
    least: tuple[int, ...]  # the smallest value each var can reach under pruning
    channel_step: tuple[int, ...]  # each var moves in multiples of this (grouped convs: the group count)
    builder: Any = field(repr=False, compare=False, default=None)
    exact: tuple[frozenset[int], ...] = ()  # values some use always has (a dim no pruning reaches)

    def __post_init__(self) -> None:
        if not self.exact:
            self.exact = tuple(frozenset({f}) if f == lo else frozenset() for f, lo in zip(self.full, self.least))

    def describe(self, values: Sequence[int]) -> str:
        return describe_key(self.key, dict(zip(self.vars, values)))

    def module(self, values: Sequence[int]) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
        """A runnable module and inputs at these channel counts."""
        return self.builder(dict(zip(self.vars, values)))


@dataclass
class BlockUse:
    """A block at one spot of a graph: which place sets each of its variable dims."""

    key: str
    places: tuple[str | None, ...]  # one per var; None: fixed at `fixed`
    fixed: tuple[int, ...]
    node: str
    weight_coef: float = 0.0  # parameters = coef * product of the var values (conv, linear)

    def weights(self, values: Sequence[int]) -> float:
        return self.weight_coef * float(np.prod(values)) if self.weight_coef else 0.0


def extract(gm: fx.GraphModule, space: PruningSpace,
            fuses: Sequence[str] = ENGINE_FUSES) -> tuple[dict[str, Block], list[BlockUse]]:
    """The distinct Blocks of a graph and every use of them, in graph order. `fuses` are the
    roles the target's engine folds into a conv or linear, in order (Target.fuses)."""
    counter = PlaceCounter(space)
    modules = dict(gm.named_modules())
    fused: set[fx.Node] = set()
    blocks: dict[str, Block] = {}
    uses: list[BlockUse] = []
    for node in gm.graph.nodes:
        if node in fused or node.op in ("placeholder", "output", "get_attr") or role_of(node, modules) == "free":
            continue
        if not isinstance(tensor_meta(node), torch.fx.passes.shape_prop.TensorMetadata):
            continue
        m = modules.get(node.target) if node.op == "call_module" else None
        if isinstance(m, (*CONV, nn.Linear)) and role_of(node, modules) == "producer":
            chain = _chain(node, modules, fuses)
            fused.update(chain[1:])
            found = _producer_block(chain, modules, space, counter)
        else:
            found = _glue_block(node, m, space, counter)
        if found is None:
            continue
        block, use = found
        if block.key in blocks:
            old = blocks[block.key]
            block.full = tuple(max(a, b) for a, b in zip(old.full, block.full))
            block.least = tuple(min(a, b) for a, b in zip(old.least, block.least))
            block.exact = tuple(a | b for a, b in zip(old.exact, block.exact))
        blocks[block.key] = block
        uses.append(use)
    return blocks, uses


def _only_user(node: fx.Node) -> fx.Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


def _chain(node: fx.Node, modules: dict[str, nn.Module], fuses: Sequence[str]) -> list[fx.Node]:
    """conv followed by the ops of the roles the engine fuses into it, in that order."""
    chain = [node]
    for role in fuses:
        nxt = _only_user(chain[-1])
        if nxt is not None and role_of(nxt, modules) == role and nxt.args and nxt.args[0] is chain[-1]:
            chain.append(nxt)
    return chain


def _var(space: PruningSpace, counter: PlaceCounter, node: fx.Node, dim: int) -> tuple[str | None, int, int]:
    """(place, full, least) of a node's channel dim; a dim no group reaches is fixed."""
    shape = shape_of(node)
    place = space.places.get(node.name)
    if place is not None and place.dim % len(shape) == dim % len(shape):
        r = counter.row[node.name]
        return node.name, int(counter.full[r]), int(counter.least[r])
    return None, shape[dim], shape[dim]


def describe_key(key: str, values: dict[str, int] | None = None) -> str:
    """A block key as a person reads it: 'Conv2d 3x3 s2 dw +BatchNorm2d+ReLU6 1x32x112x112'."""
    try:
        d = json.loads(key)
        ops = [o if isinstance(o, dict) else {"op": str(o)} for o in d["ops"]]
    except (ValueError, TypeError, KeyError):
        return key[:56]  # not a key latprune's block extraction wrote
    head = ops[0]
    words = [str(head.get("op", "?"))[:24]]
    if "kernel" in head:
        words.append("x".join(map(str, head["kernel"])))
        stride = head.get("stride") or [1]
        words += [f"s{stride[0]}"] if max(stride) > 1 else []
        words += ["dw"] if head.get("groups") == "depthwise" else [f"g{head['groups']}"] if head.get("groups") not in (1, None) else []
    if d["kind"] == "op":  # glue op: [name, its other arguments]
        words = [words[0].split("(")[0]]
    elif len(ops) > 1:
        words.append("+" + "+".join(str(o.get("op", "?")).split("(")[0] for o in ops[1:]))
    dims = [str(v) for v in (d["inputs"][0] if d["inputs"] else [])]
    if values:
        dims = [re.sub(r"[a-z_]+", lambda m: str(values.get(m.group(0), m.group(0))), v) for v in dims]
    return " ".join(words + ["x".join(dims)])


def _key(kind: str, ops: list[Any], inputs: list[list[Any]], dtype: str) -> str:
    return json.dumps({"kind": kind, "ops": ops, "inputs": inputs, "dtype": dtype},
                      sort_keys=True, separators=(",", ":"))


def _producer_block(chain: list[fx.Node], modules: dict[str, nn.Module], space: PruningSpace,
                    counter: PlaceCounter) -> tuple[Block, BlockUse] | None:
    head = chain[0]
    m = modules[head.target]
    x = head.args[0]
    if not isinstance(x, fx.Node) or shape_of(x) is None:
        return None
    xshape = list(shape_of(x))
    cdim = 1 if isinstance(m, CONV) else len(xshape) - 1
    in_place, in_full, in_least = _var(space, counter, x, cdim)
    out_place, out_full, out_least = _var(space, counter, head, 1 if isinstance(m, CONV) else -1)
    tail = [describe_module(modules[n.target]) if n.op == "call_module" else _get_qualified_name(n.target)
            for n in chain[1:]]
    shape = [("c" if i == cdim else s) for i, s in enumerate(xshape)]
    dtype = str(tensor_meta(x).dtype)
    if isinstance(m, CONV) and m.groups > 1 and m.groups == m.in_channels:
        # depthwise: one var, the input channels; a multiplier fixes the output as k * c
        mult = m.out_channels // m.in_channels
        desc = {**describe_module(m), "groups": "depthwise", "multiplier": mult}
        key = _key("conv", [desc, *tail], [shape], dtype)
        block = Block(key, ("c",), (in_full,), (in_least,), (1,),
                      builder=_ChainBuilder(m, chain, modules, xshape, cdim, depthwise=True))
        return block, BlockUse(key, (in_place,), (in_full,), head.name, float(np.prod(m.kernel_size) * mult))
    g = m.groups if isinstance(m, CONV) else 1
    desc = describe_module(m)
    shape = [("cin" if i == cdim else s) for i, s in enumerate(xshape)]
    key = _key("conv" if isinstance(m, CONV) else "linear", [desc, *tail], [shape], dtype)
    block = Block(key, ("cin", "cout"), (in_full, out_full), (in_least, out_least), (g, g),
                  builder=_ChainBuilder(m, chain, modules, xshape, cdim, depthwise=False))
    coef = float(np.prod(m.kernel_size)) / g if isinstance(m, CONV) else 1.0
    return block, BlockUse(key, (in_place, out_place), (in_full, out_full), head.name, coef)


class _ChainBuilder:
    """Builds conv/linear [+BN] [+act] at given channel counts."""

    def __init__(self, m: nn.Module, chain: list[fx.Node], modules: dict[str, nn.Module],
                 xshape: list[int], cdim: int, depthwise: bool) -> None:
        self.head = m
        self.rest = [(modules[n.target] if n.op == "call_module" else n.target) for n in chain[1:]]
        self.xshape, self.cdim, self.depthwise = xshape, cdim, depthwise

    def __call__(self, v: dict[str, int]) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
        if self.depthwise:
            cin = v["c"]
            cout = cin * (self.head.out_channels // self.head.in_channels)
        else:
            cin, cout = v["cin"], v["cout"]
        parts: list[Any] = [resize(self.head, cin, cout)]
        for r in self.rest:
            parts.append(resize(r, cout, cout) if isinstance(r, nn.Module) else _Fn(r))
        shape = list(self.xshape)
        shape[self.cdim] = cin
        return nn.Sequential(*parts).eval(), (torch.randn(shape),)


class _Fn(nn.Module):
    def __init__(self, fn: Any) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def _glue_block(node: fx.Node, m: nn.Module | None, space: PruningSpace,
                counter: PlaceCounter) -> tuple[Block, BlockUse] | None:
    """One op between producers (pool, add, mul, cat, activation, norm, ...), with the output
    channel count as its single var; its tensor inputs scale with it."""
    if node.op == "call_module":
        sized = resize(m, 1, 1) if m is not None else None
        if sized is None:
            return None  # a module whose parameters we cannot resize: left to the correction
        opname: Any = describe_module(m)
    elif node.op == "call_function":
        opname = _get_qualified_name(node.target)
    else:
        opname = f"method:{node.target}"
    out_shape = shape_of(node)
    if not out_shape:
        return None
    odim = space.places[node.name].dim if node.name in space.places else min(1, len(out_shape) - 1)
    out_place, out_full, out_least = _var(space, counter, node, odim)
    arg_specs: list[tuple[fx.Node, int | None]] = []
    unsized: list[fx.Node] = []

    def spec(a: Any) -> Any:
        if isinstance(a, fx.Node):
            if shape_of(a) is None:
                unsized.append(a)
                return None
            p = space.places.get(a.name)
            arg_specs.append((a, p.dim % len(shape_of(a)) if p is not None and out_place else None))
            return _Slot(len(arg_specs) - 1)
        return a if isinstance(a, (int, float, bool, str, type(None))) else repr(a)

    args = map_aggregate(node.args, spec)
    kwargs = map_aggregate(dict(node.kwargs), spec)
    if not arg_specs or unsized:
        return None  # no tensor input, or a non-tensor value computed in the graph
    shapes = [[("c*%.6g" % (s / out_full) if d is not None and i == d else s)
               for i, s in enumerate(shape_of(a))] for a, d in arg_specs]
    key = _key("op", [opname, json.dumps([args, kwargs], default=repr, sort_keys=True)], shapes,
               str(tensor_meta(arg_specs[0][0]).dtype))
    builder = _GlueBuilder(node, m, args, kwargs, arg_specs, out_full)
    return (Block(key, ("c",), (out_full,), (out_least,), (1,), builder),
            BlockUse(key, (out_place,), (out_full,), node.name))


class _GlueBuilder:
    """Replays one fx node on random inputs whose channel dims scale with the output's."""

    def __init__(self, node: fx.Node, m: nn.Module | None, args: Any, kwargs: Any,
                 arg_specs: list[tuple[fx.Node, int | None]], out_full: int) -> None:
        self.op, self.target, self.m = node.op, node.target, m
        self.args, self.kwargs, self.out_full = args, kwargs, out_full
        self.shapes = [(list(shape_of(a)), d, tensor_meta(a).dtype) for a, d in arg_specs]

    def __call__(self, v: dict[str, int]) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
        inputs = []
        for shape, d, dtype in self.shapes:
            s = list(shape)
            if d is not None:
                s[d] = max(1, round(s[d] * v["c"] / self.out_full))
            inputs.append(torch.randn(s).to(dtype) if dtype.is_floating_point else torch.zeros(s, dtype=dtype))
        m = resize(self.m, v["c"], v["c"]) if self.m is not None else None
        return _Replay(self.op, self.target, m, self.args, self.kwargs).eval(), tuple(inputs)


class _Slot:
    """Where the i-th tensor input goes in a replayed node's arguments."""

    __slots__ = ("i",)

    def __init__(self, i: int) -> None:
        self.i = i

    def __repr__(self) -> str:
        return f"<tensor {self.i}>"


class _Replay(nn.Module):
    def __init__(self, op: str, target: Any, m: nn.Module | None, args: Any, kwargs: Any) -> None:
        super().__init__()
        self.op, self.target, self.m, self.a, self.k = op, target, m, args, kwargs

    def forward(self, *xs: torch.Tensor) -> Any:
        def fill(a: Any) -> Any:
            return xs[a.i] if isinstance(a, _Slot) else a

        args = map_aggregate(self.a, fill)
        kwargs = map_aggregate(self.k, fill)
        if self.op == "call_module":
            return self.m(*args, **kwargs)
        if self.op == "call_method":
            return getattr(args[0], self.target)(*args[1:], **kwargs)
        return self.target(*args, **kwargs)
