"""A fast `inspect.stack()` for TVMScript parsing (stdlib imports only: it is pickled by
value into TVM's builder processes).

TVM's TVMScript parser calls `inspect.stack()` for every prim_func, and the stdlib version
resolves every frame's module by scanning `sys.modules`: importing meta-schedule's tensor
intrinsics took ~35 s here, ~6 s with this. The parser only reads frames, file names,
line numbers and one line of context, which this gives the same way.
"""
from __future__ import annotations

import contextlib
import inspect
import linecache
import sys
from collections.abc import Iterator


def _fast_stack(context: int = 1) -> list[inspect.FrameInfo]:
    out = []
    f = sys._getframe(1)
    while f is not None:
        name, line = f.f_code.co_filename, f.f_lineno
        out.append(inspect.FrameInfo(f, name, line, f.f_code.co_name, [linecache.getline(name, line)], 0))
        f = f.f_back
    return out


def install() -> None:
    """Patch inspect.stack for the rest of this process (used in TVM's worker processes)."""
    inspect.stack = _fast_stack


@contextlib.contextmanager
def patched() -> Iterator[None]:
    """Patch inspect.stack while TVM parses or tunes in this process, then restore it."""
    saved = inspect.stack
    inspect.stack = _fast_stack
    try:
        yield
    finally:
        inspect.stack = saved
