"""One rule per op family: everything latprune knows about an op, in one place.

A Rule says how channel labels flow through the op (`channels`), how to slice its weights
(`slice`) or patch its arguments (`patch`) when channels go, which weight slices importance
reads (`weight_slices`), its multiply-accumulates (`macs`), and how a latency table sees it
(`role`, `describe`, `resize`); `running_stats` marks what AdaBN re-estimates and `scale`
what Network Slimming ranks by. Rules are looked up by module type (along the MRO), by
function, or by method name. `register_rule` teaches latprune a user's own op; an op
without a rule freezes every channel it touches, so an unknown op is never sliced wrongly.

Roles are what engines fuse by: `producer` (conv, linear) heads a block, `norm` and
`activation` may be folded into it (each target declares which, `Target.fuses`), `free` ops
run as metadata changes and cost nothing alone, `glue` ops are timed one by one.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.nn as nn

from . import channelwise, elementwise, layout, weighted  # each registers the torch ops it covers, at its end
from .base import (_CALL_RULES, _MODULE_RULES, CONV, CONV_T, ENGINE_FUSES, ROLES, RewriteError, Rule, call_rule,
                   describe_module, has_own_rule, module_rule, register_rule, resize, role_of, set_tensor, take)
from .channelwise import PerChannel
from .elementwise import Passthrough

# What a saved .latprune file may hold: the ops registered above, fixed here at import. A user's
# registered op is trusted in the process that registered it, never in a file.
KNOWN_MODULES: tuple[type[nn.Module], ...] = tuple(t for t in _MODULE_RULES if not t.__name__.startswith("_"))
KNOWN_FUNCTIONS: frozenset[Callable[..., Any]] = frozenset(f for f in _CALL_RULES if not isinstance(f, str))
KNOWN_METHODS: frozenset[str] = frozenset(f for f in _CALL_RULES if isinstance(f, str))

__all__ = ["CONV", "CONV_T", "ENGINE_FUSES", "ROLES", "RewriteError", "Rule", "call_rule", "describe_module",
           "has_own_rule", "module_rule", "register_rule", "resize", "role_of", "set_tensor", "take",
           "KNOWN_FUNCTIONS", "KNOWN_METHODS", "KNOWN_MODULES", "PerChannel", "Passthrough", "channelwise",
           "elementwise", "layout", "weighted"]
