"""Per-device latency lookup tables (design.md: Block, LatencyTable): profile, save, load, predict."""
from __future__ import annotations

from .blocks import Block, BlockUse, PlaceCounter, extract
from .predict import Predictor
from .profile import profile
from .table import LatencyTable, TableError, fingerprint_mismatch, load

__all__ = ["profile", "load", "LatencyTable", "TableError", "Predictor", "Block", "BlockUse", "extract",
           "PlaceCounter", "fingerprint_mismatch"]
