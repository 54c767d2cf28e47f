"""latprune's compiler: lower a CNN to torch.fx, find its channel groups, prune it."""
from __future__ import annotations

from .api import prune, rewrite
from .errors import (ArtifactError, BadInputError, InfeasibleBudgetError, LatpruneError,
                     LoweringError, VerificationError, WidthsError)
from .groups import analyze
from .importance import IMPORTANCE, register_importance
from .lower import lower
from .masking import masked_reference
from .serialize import load, save
from .space import ChannelGroup, Member, PruningSpace, Widths

__all__ = [
    "lower", "analyze", "prune", "rewrite", "save", "load", "masked_reference",
    "register_importance", "IMPORTANCE", "ChannelGroup", "Member", "PruningSpace", "Widths",
    "LatpruneError", "BadInputError", "LoweringError", "WidthsError", "ArtifactError",
    "InfeasibleBudgetError", "VerificationError",
]
