"""latprune's compiler: the core passes (compiler.core) and the build pipeline on top of them.

The core's names are imported here at once. The pipeline's (compile, search, ...) load on first
use: they import `latency_tables` and `targets`, which themselves build on the core, so loading
them eagerly would make `import latency_tables` re-enter a half-initialised package.
"""
from __future__ import annotations

import importlib
from typing import Any

from .core import *  # noqa: F403
from .core import __all__ as _CORE

_PIPELINE = {
    "Evaluator": "evaluate", "top1": "evaluate", "BudgetResult": "evolution", "Candidate": "evolution",
    "SearchResult": "evolution", "search": "evolution", "SearchOptions": "evolution", "CompileResult": "pipeline",
    "compile": "pipeline", "CompileOptions": "pipeline", "finetune": "distill", "dataspec": "dataspec",
}
__all__ = [*_CORE, *_PIPELINE]


def __getattr__(name: str) -> Any:
    if name not in _PIPELINE:
        raise AttributeError(f"module 'compiler' has no attribute {name!r}")
    module = importlib.import_module(f".{_PIPELINE[name]}", __name__)
    value = module if name == _PIPELINE[name] else getattr(module, name)
    globals()[name] = value
    return value
