"""Read a torch.export archive (.pt2) without running code from it.

`torch.export.load` unpickles in several places: weights and constants saved with pickle,
custom and opaque objects, sample inputs (it retries with `weights_only=False`), a legacy
archive layout, and AOTInductor shared libraries it loads. A .pt2 handed to latprune is
untrusted, so this reader inspects the archive's records first and refuses any that would
need one of those, with the reason; only then does it deserialise, through `load_pt2`
(plain tensor records and the JSON program), never through the legacy fallback.
"""
from __future__ import annotations

import io
import json
import os
from typing import Any

import torch

from .errors import BadInputError


def _refuse(path: Any, why: str) -> BadInputError:
    return BadInputError(f"{path}: refused to load: {why}. latprune reads only .pt2 files whose weights, constants "
                         "and sample inputs are plain tensors (re-export the model with torch.export.save, or pass "
                         "it as package.module:factory)")


def _config(reader: Any, name: str) -> dict[str, Any]:
    try:
        config = json.loads(reader.read_string(name)).get("config", {})
    except (ValueError, AttributeError, RuntimeError) as exc:
        raise BadInputError(f"cannot read {name} inside the archive: {exc}") from None
    if not isinstance(config, dict) or not all(isinstance(v, dict) for v in config.values()):
        raise BadInputError(f"{name} inside the archive is malformed")
    return config


def check_archive(path: str | os.PathLike) -> list[str]:
    """The archive's model names, after checking that loading it would unpickle nothing."""
    from torch.export.pt2_archive._package import PT2ArchiveReader
    from torch.export.pt2_archive.constants import TENSOR_CONSTANT_FILENAME_PREFIX

    try:
        reader = PT2ArchiveReader(os.fspath(path))
    except Exception as exc:  # torch's zip reader raises RuntimeError or OSError
        raise BadInputError(f"{path} is not a torch.export archive ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    with reader:
        names = set(reader.get_file_names())
        if any(n.startswith("data/aotinductor/") for n in names):
            raise _refuse(path, "it holds AOTInductor compiled code, which loading would execute")
        models = sorted(n[len("models/"):-len(".json")] for n in names if n.startswith("models/") and n.endswith(".json"))
        if not models:
            raise BadInputError(f"{path} holds no exported program (no models/*.json); save it with torch.export.save")
        for m in models:
            if f"data/weights/{m}.pt" in names or f"data/constants/{m}.pt" in names:
                raise _refuse(path, "it uses the legacy pickled weight layout")
            for kind in ("weights", "constants"):
                name = f"data/{kind}/{m}_{kind}_config.json"
                if name not in names:
                    raise BadInputError(f"{path}: {name} is missing from the archive; it is damaged or not a .pt2")
                for fqn, meta in _config(reader, name).items():
                    if meta.get("use_pickle") or not str(meta.get("path_name", "")).startswith(
                            "weight_" if kind == "weights" else TENSOR_CONSTANT_FILENAME_PREFIX):
                        raise _refuse(path, f"{kind[:-1]} {fqn!r} is a pickled object, not a plain tensor")
            sample = f"data/sample_inputs/{m}.pt"
            if sample in names:
                try:
                    torch.load(io.BytesIO(reader.read_bytes(sample)), weights_only=True)
                except Exception:
                    raise _refuse(path, "its sample inputs need unrestricted unpickling") from None
    return models


def load_exported(path: str | os.PathLike) -> torch.export.ExportedProgram:
    """The archive's exported program, loaded only after `check_archive` passed."""
    from torch.export.pt2_archive._package import load_pt2

    if "model" not in check_archive(path):
        raise BadInputError(f"{path} holds no program named 'model' (torch.export.save writes that one)")
    try:
        return load_pt2(os.fspath(path)).exported_programs["model"]
    except Exception as exc:
        raise BadInputError(f"{path} is not a program saved with torch.export.save ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
