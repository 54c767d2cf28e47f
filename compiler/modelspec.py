"""Turn the CLI's MODEL and --input-shape arguments into a module and example inputs."""
from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import torch

from .core.errors import BadInputError
from .core.pt2 import load_exported
from .core.raise_aten import raise_exported


def load_model(spec: str, seed: int = 0) -> torch.nn.Module:
    """`package.module:factory`, `path/to/file.py:factory` or a `torch.export.save` file (.pt2).
    The factory runs under a fixed RNG seed, so a randomly initialised model is the same every
    build (a build system needs the same inputs to give the same outputs)."""
    path = Path(spec)
    if path.suffix == ".pt2" or (path.exists() and ":" not in spec):
        return _exported(path)
    mod_name, sep, attr = spec.partition(":")
    if not sep or not attr:
        raise BadInputError(f"MODEL {spec!r} is neither `package.module:factory` nor a .pt2 file "
                            "saved with torch.export.save")
    try:
        if mod_name.endswith(".py"):
            file = Path(mod_name)
            if not file.exists():
                raise BadInputError(f"model file {file} does not exist")
            s = importlib.util.spec_from_file_location(file.stem, file)
            module = importlib.util.module_from_spec(s)
            sys.modules.setdefault(file.stem, module)
            s.loader.exec_module(module)
        else:
            module = importlib.import_module(mod_name)
    except BadInputError:
        raise
    except Exception as exc:
        raise BadInputError(f"cannot import {mod_name!r} for MODEL {spec!r}: {type(exc).__name__}: {exc}") from None
    factory = getattr(module, attr, None)
    if factory is None:
        raise BadInputError(f"{mod_name!r} has no attribute {attr!r} (MODEL {spec!r})")
    try:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = factory() if callable(factory) and not isinstance(factory, torch.nn.Module) else factory
    except Exception as exc:
        raise BadInputError(f"calling {spec}() failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(model, torch.nn.Module):
        raise BadInputError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module")
    return model.eval()


def _exported(path: Path) -> torch.nn.Module:
    if not path.exists():
        raise BadInputError(f"model file {path} does not exist")

    return raise_exported(load_exported(path))


def parse_shape(text: str) -> tuple[int, ...]:
    """'1,3,224,224' -> (1, 3, 224, 224)."""
    try:
        shape = tuple(int(s) for s in text.replace("x", ",").split(","))
    except ValueError:
        raise BadInputError(f"--input-shape {text!r} must be comma-separated integers, e.g. 1,3,224,224") from None
    if not shape or any(s < 1 for s in shape):
        raise BadInputError(f"--input-shape {text!r} must have positive sizes")
    return shape


def example_inputs(shapes: list[str], seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(parse_shape(s), generator=g) for s in shapes)
