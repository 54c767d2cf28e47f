"""Errors a user can act on. Each carries the CLI exit code it maps to."""
from __future__ import annotations


class LatpruneError(Exception):
    """Base class: a message that names the cause and what to do, never a deep traceback."""

    exit_code = 2


class BadInputError(LatpruneError):
    """The model, the widths, a file or the data given to latprune is unusable (exit 2)."""

    exit_code = 2


class LoweringError(BadInputError):
    """torch.fx could not trace the model."""


class WidthsError(BadInputError):
    """A Widths mapping names an unknown group or an out-of-range channel count."""


class ArtifactError(BadInputError):
    """A saved latprune artifact is corrupt, foreign or of an unsupported version."""


class InfeasibleBudgetError(LatpruneError):
    """No Widths can meet the latency budget (exit 3)."""

    exit_code = 3


class VerificationError(LatpruneError):
    """An emitted engine missed its budget or disagrees with the pruned model (exit 4)."""

    exit_code = 4


class BusyError(LatpruneError):
    """Another build holds the output folder's lock and the caller asked not to wait (exit 5)."""

    exit_code = 5
