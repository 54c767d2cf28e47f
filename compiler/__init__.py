"""latprune's compiler: lower a CNN to torch.fx, find its channel groups, prune it."""
from __future__ import annotations

from .adabn import adabn
from .api import keep_mask, prune, rewrite
from .cost import macs, params
from .errors import (ArtifactError, BadInputError, InfeasibleBudgetError, LatpruneError,
                     LoweringError, VerificationError, WidthsError)
from .groups import analyze
from .importance import IMPORTANCE, register_importance
from .lower import lower
from .export import ExportError, export_onnx, onnx_bytes
from .masking import invariant_error, masked_reference
from .serialize import load, save
from .space import ChannelGroup, Member, PruningSpace, Widths
from .budget import Budget, parse_budget
from .evaluate import Evaluator, top1
from .search import BudgetResult, Candidate, SearchResult, search
from .compile import CompileResult, compile
from .finetune import finetune

__all__ = [
    "lower", "analyze", "prune", "adabn", "macs", "params", "rewrite", "keep_mask", "save", "load", "masked_reference", "invariant_error",
    "register_importance", "IMPORTANCE", "export_onnx", "onnx_bytes", "ExportError", "ChannelGroup", "Member", "PruningSpace", "Widths",
    "LatpruneError", "BadInputError", "LoweringError", "WidthsError", "ArtifactError",
    "InfeasibleBudgetError", "VerificationError", "search", "SearchResult", "BudgetResult", "Candidate",
    "Budget", "parse_budget", "Evaluator", "top1", "compile", "CompileResult", "finetune",
]
