"""Errors of the latency-table layer."""
from __future__ import annotations

from compiler.core.errors import BadInputError


class TableError(BadInputError):
    """A latency table is unreadable, foreign, incomplete, or for another target."""
