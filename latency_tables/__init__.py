"""Per-device latency lookup tables (README's Architecture: Block, LatencyTable): profile, save, load, predict."""
from __future__ import annotations

from pathlib import Path

from .blocks import Block, BlockUse, PlaceCounter, extract
from .predict import Predictor
from .profile import profile
from .table import LatencyTable, TableError, fingerprint_mismatch, load

SHIPPED = Path(__file__).parent / "tables"


def shipped() -> list[Path]:
    """The tables measured for the reference models, shipped as examples and test data."""
    return sorted(SHIPPED.glob("*.json"))


__all__ = ["shipped", "SHIPPED", "profile", "load", "LatencyTable", "TableError", "Predictor", "Block", "BlockUse", "extract",
           "PlaceCounter", "fingerprint_mismatch"]
