"""The Rule protocol, the registry, and the slicing helpers every rule uses."""
from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn

from ..errors import BadInputError, LatpruneError

if TYPE_CHECKING:
    from ..propagate import NodeLabels, Propagator
    from ..space import Place

CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
ROLES = ("producer", "norm", "activation", "free", "glue")
ENGINE_FUSES = ("norm", "activation")  # conv -> BatchNorm -> activation: what inference engines fold into one kernel
Mask = "np.ndarray | None"
Masks = Callable[[int, int], tuple[Any, Any]]  # (in_dim, out_dim) -> (input keep mask, output keep mask)
Keep = Callable[[Any], "tuple[int, np.ndarray] | None"]  # fx node -> (channel dim, keep mask) or None


class RewriteError(LatpruneError):
    """The rewritten graph is inconsistent: a latprune bug, reported with the node."""


def take(t: torch.Tensor, dim: int, mask: np.ndarray) -> torch.Tensor:
    """The kept slices of `t` along `dim` (index_select: several times faster than t[idx])."""
    return t.index_select(dim, torch.from_numpy(np.nonzero(mask)[0]))


def set_tensor(m: nn.Module, name: str, value: torch.Tensor) -> None:
    """Replace a parameter or buffer, keeping its kind and requires_grad."""
    old = getattr(m, name)
    if isinstance(old, nn.Parameter):
        setattr(m, name, nn.Parameter(value.contiguous(), requires_grad=old.requires_grad))
    else:
        setattr(m, name, value.contiguous())


def pruned(mask: Any) -> bool:
    return mask is not None and not mask.all()


class Rule:
    """The defaults: labels are frozen, nothing is sliced (refused if the module has weights
    and would lose channels), no importance, no MACs, a glue op for latency."""

    role: ClassVar[str] = "glue"
    running_stats: ClassVar[bool] = False

    def __init__(self, role: str | None = None) -> None:
        if role is not None:
            if role not in ROLES:
                raise BadInputError(f"unknown rule role {role!r}; choose one of {ROLES}")
            self.role = role

    def channels(self, p: Propagator, node: fx.Node, m: nn.Module | None) -> NodeLabels:
        return p.unknown(node)

    def slice(self, m: nn.Module, node: fx.Node, masks: Masks) -> None:
        if any(pruned(k) for k in masks(1, 1)) and any(True for _ in m.parameters(recurse=True)):
            raise RewriteError(f"module `{node.target}` ({type(m).__name__}) would be pruned but its rule "
                               f"({type(self).__name__}) does not slice weights")

    def patch(self, node: fx.Node, keep: Keep) -> None:
        """Rewrite literal channel counts in a function or method call's arguments."""

    def weight_slices(self, m: nn.Module, node: fx.Node, out_place: Place | None,
                      in_place: Place | None) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        return iter(())

    def scale(self, m: nn.Module) -> torch.Tensor | None:
        """Per-channel scale that Network Slimming ranks by (BatchNorm's gamma)."""
        return None

    def macs(self, m: nn.Module, out_shape: tuple[int, ...]) -> int:
        return 0

    def describe(self, m: nn.Module) -> Any:
        """The module's fixed attributes: what its latency depends on besides channel counts."""
        return {"op": repr(m)}

    def resize(self, m: nn.Module, cin: int, cout: int) -> nn.Module | None:
        """A fresh module like `m` at other channel counts, to time it (None: cannot)."""
        return resized_default(m)


def resized_default(m: nn.Module) -> nn.Module | None:
    """A module without weights or buffers is the same at any width."""
    if not any(True for _ in m.parameters()) and not any(True for _ in m.buffers()):
        return copy.deepcopy(m)
    return None


# -- the registry ------------------------------------------------------------------------------
_MODULE_RULES: dict[type, Rule] = {}
_CALL_RULES: dict[Any, Rule] = {}


def register_rule(op: type[nn.Module] | Callable[..., Any] | str, rule: Rule) -> None:
    """Teach latprune an op: a module type, a function, or a tensor method's name; the rule
    replaces any earlier one. A registered module type is not traced into: its calls stay
    whole in the graph and the rule says what they do (a subclass is traced into unless it is
    registered too, since its forward may differ). Pruned
    models that contain a user-registered op emit and run, but are not saved as .latprune files:
    those load only ops built into latprune."""
    if not isinstance(rule, Rule):
        raise BadInputError(f"register_rule needs a compiler.Rule instance, got {type(rule).__name__}")
    if isinstance(op, type) and issubclass(op, nn.Module):
        _MODULE_RULES[op] = rule
    elif isinstance(op, str) or callable(op):
        _CALL_RULES[op] = rule
    else:
        raise BadInputError(f"register_rule takes an nn.Module type, a function or a method name, got {op!r}")


def has_own_rule(m: nn.Module) -> bool:
    return type(m) in _MODULE_RULES


def module_rule(m: nn.Module) -> Rule | None:
    for cls in type(m).__mro__:
        if cls in _MODULE_RULES:
            return _MODULE_RULES[cls]
    return None


def call_rule(target: Any) -> Rule | None:
    try:
        return _CALL_RULES.get(target)
    except TypeError:  # an unhashable target
        return None


def role_of(node: fx.Node, modules: dict[str, nn.Module]) -> str | None:
    """The latency role of what a node runs; None when no rule knows it."""
    if node.op == "call_module":
        rule = module_rule(modules[node.target])
    elif node.op in ("call_function", "call_method"):
        rule = call_rule(node.target)
    else:
        return None
    return rule.role if rule is not None else None


def resize(m: nn.Module, cin: int, cout: int) -> nn.Module | None:
    rule = module_rule(m)
    return rule.resize(m, cin, cout) if rule is not None else resized_default(m)


def describe_module(m: nn.Module) -> Any:
    rule = module_rule(m)
    return (rule or Rule()).describe(m)
