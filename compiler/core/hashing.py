"""The one hashing helper: build keys, cache keys, table checksums and data digests all go
through `digest`, so what a key covers is decided by what its caller passes, never by which
of several helpers it happened to use."""
from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import torch


def digest(*chunks: bytes | str | torch.Tensor | np.ndarray, length: int | None = 20) -> str:
    """sha256 over the chunks in order: text as UTF-8, tensors and arrays by their bytes.
    `length` hex digits (None: all 64)."""
    h = hashlib.sha256()
    for c in chunks:
        if isinstance(c, str):
            c = c.encode()
        elif isinstance(c, torch.Tensor):
            c = c.detach().contiguous().cpu().numpy().tobytes()
        elif isinstance(c, np.ndarray):
            c = np.ascontiguousarray(c).tobytes()
        h.update(c)
    return h.hexdigest()[:length] if length else h.hexdigest()


def json_text(value: Any, compact: bool = False) -> str:
    """Canonical JSON (sorted keys) for hashing; `compact` drops the spaces after separators."""
    return json.dumps(value, sort_keys=True, default=str, separators=(",", ":") if compact else None)
