"""latprune's core: lower a CNN to torch.fx, find its channel groups, prune it.

The core knows nothing of latency tables, targets or the build pipeline; `latency_tables`
and `targets` build on it, and `compiler`'s pipeline (compile, search, CLI) on all three.
"""
from __future__ import annotations

from .adabn import adabn
from .api import keep_mask, prune, rewrite
from .budget import Budget, parse_budget
from .cost import macs, params
from .errors import (ArtifactError, BadInputError, BusyError, InfeasibleBudgetError, LatpruneError, LoweringError,
                     VerificationError, WidthsError)
from .export import ExportError, export_onnx, onnx_bytes
from .groups import analyze
from .importance import IMPORTANCE, register_importance
from .importance import scores as importance_scores
from .lower import lower
from .masking import invariant_error, masked_reference
from .rules import PerChannel, Passthrough, Rule, register_rule
from .serialize import load, save
from .space import ChannelGroup, Member, PruningSpace, Widths

__all__ = [
    "adabn", "keep_mask", "prune", "rewrite", "Budget", "parse_budget", "macs", "params", "ArtifactError",
    "BadInputError", "BusyError", "InfeasibleBudgetError", "LatpruneError", "LoweringError", "VerificationError",
    "WidthsError", "ExportError", "export_onnx", "onnx_bytes", "analyze", "IMPORTANCE", "register_importance", "importance_scores", "lower",
    "invariant_error", "masked_reference", "Rule", "PerChannel", "Passthrough", "register_rule", "load", "save", "ChannelGroup", "Member", "PruningSpace", "Widths",
]
