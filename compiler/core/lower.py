"""Pass 1: lower an nn.Module to a torch.fx graph with a shape on every node.

Tracing happens in eval mode, so `if self.training` branches (dropout, stochastic depth,
auxiliary heads) are resolved as they run at inference. Modules named in `leaf_modules`
stay opaque call_module nodes; the analysis freezes every channel they touch.
"""
from __future__ import annotations

import contextlib
import io
import os
import traceback
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.fx as fx
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.passes.shape_prop import ShapeProp

from .errors import LoweringError
from .rules import has_own_rule

Inputs = tuple[torch.Tensor, ...]
_SKIP_DIRS = (os.path.dirname(torch.__file__), os.path.dirname(__file__))


def as_inputs(example_inputs: torch.Tensor | Sequence[torch.Tensor]) -> Inputs:
    """Normalise one tensor or a sequence of tensors to a tuple."""
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    inputs = tuple(example_inputs)
    if not inputs or not all(isinstance(t, torch.Tensor) for t in inputs):
        raise LoweringError("example_inputs must be a tensor or a non-empty sequence of tensors")
    return inputs


class _Tracer(fx.Tracer):
    """An fx tracer that honours user leaves and remembers which module it is inside. A module
    whose type has a rule of its own (register_rule) is a leaf: the rule describes it whole."""

    def __init__(self, leaves: set[str], leaf_types: tuple[type, ...]) -> None:
        super().__init__()
        self.leaves = leaves
        self.leaf_types = leaf_types
        self.lp_path: list[str] = []
        self.failed_in: str | None = None  # innermost module whose forward raised

    def is_leaf_module(self, m: torch.nn.Module, qualname: str) -> bool:
        if qualname in self.leaves or (self.leaf_types and isinstance(m, self.leaf_types)) or has_own_rule(m):
            return True
        return super().is_leaf_module(m, qualname)

    def call_module(self, m: torch.nn.Module, forward: Any, args: Any, kwargs: Any) -> Any:
        self.lp_path.append(self.path_of_module(m))
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            self.failed_in = self.failed_in or self.lp_path[-1]
            raise
        finally:
            self.lp_path.pop()


def _user_frame(exc: BaseException) -> str:
    """The innermost traceback frame outside torch: the user's line that broke tracing."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(_SKIP_DIRS)]
    if not frames:
        return "inside torch"
    f = frames[-1]
    return f"{f.filename}:{f.lineno}: `{(f.line or '').strip()}`"


class _ValueProp(ShapeProp):
    """ShapeProp that also keeps non-tensor results (sizes, ints) that later passes read."""

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        if not isinstance(result, torch.Tensor) and not _holds_tensor(result):
            n.meta["value"] = result
        return result


def _holds_tensor(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return any(isinstance(v, torch.Tensor) or _holds_tensor(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_tensor(v) or isinstance(v, torch.Tensor) for v in value.values())
    return False


def propagate_shapes(gm: fx.GraphModule, inputs: Inputs) -> None:
    """Write node.meta['tensor_meta'] (and 'value' for non-tensors). Runs on fake tensors
    (shapes only, ~3x faster than a forward); ops fake tensors cannot run get a real run."""
    with torch.no_grad():
        try:
            mode = FakeTensorMode(allow_non_fake_inputs=True)
            _ValueProp(gm, fake_mode=mode).propagate(*(mode.from_tensor(t) for t in inputs))
        except Exception:
            _ValueProp(gm).propagate(*inputs)
    gm.meta["example_shapes"] = [list(t.shape) for t in inputs]
    gm.meta["example_dtypes"] = [str(t.dtype).removeprefix("torch.") for t in inputs]


def lower(
    model: torch.nn.Module,
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    leaf_modules: Iterable[str | type] = (),
) -> fx.GraphModule:
    """Trace `model` with torch.fx and annotate every node with its shape.

    `leaf_modules` holds qualified submodule names or module classes to keep opaque; use it
    for code fx cannot trace. Their channels are frozen, never pruned wrongly.
    """
    inputs = as_inputs(example_inputs)
    leaves = {x for x in leaf_modules if isinstance(x, str)}
    leaf_types = tuple(x for x in leaf_modules if isinstance(x, type))
    unknown = sorted(n for n in leaves if n not in dict(model.named_modules()))
    if unknown:
        raise LoweringError(f"leaf_modules names no submodule of the model: {unknown}")
    was_training = model.training
    model.eval()
    tracer = _Tracer(leaves, leaf_types)
    try:
        graph = tracer.trace(model)
    except Exception as exc:  # fx raises many types; all mean "not traceable"
        where = tracer.failed_in or "<root>"
        sub = type(model.get_submodule(where)).__name__ if where != "<root>" else type(model).__name__
        raise LoweringError(
            f"torch.fx cannot trace module `{where}` ({sub}) at {_user_frame(exc)}: "
            f"{type(exc).__name__}: {exc}. Make that code traceable (no control flow on tensor "
            f"values)" + (f", or pass leaf_modules=['{where}'] to keep it opaque (its channels are "
                          f"then frozen)." if where != "<root>" else ".")
        ) from None
    finally:
        model.train(was_training)
    gm = fx.GraphModule(tracer.root, graph, type(model).__name__)
    gm.eval()
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # ShapeProp prints tracebacks; we report the cause
            propagate_shapes(gm, inputs)
    except Exception as exc:
        root = exc
        while root.__cause__ is not None:
            root = root.__cause__
        lines = [ln for ln in str(root).splitlines() if ln.strip()]
        raise LoweringError(
            f"the model fails on example inputs of shape {[tuple(t.shape) for t in inputs]}: "
            f"{type(root).__name__}: {lines[0] if lines else ''}. Check the input shape the model expects."
        ) from None
    return gm
