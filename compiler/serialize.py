"""A pruned architecture as data: save a pruned GraphModule and load it without model code.

The file holds the graph as JSON (nodes, standard torch.nn module specs), the PruningSpace
and Widths it came from, and the weights. It loads with `torch.load(weights_only=True)`, and
call targets resolve only inside torch, torchvision, operator, math and builtins: no pickled code runs.
"""
from __future__ import annotations

import builtins
import importlib
import inspect
import json
import os
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
from torch.fx.node import _get_qualified_name

from .atomic import atomic_path
from .errors import ArtifactError
from .space import PruningSpace

FORMAT = "latprune.pruned-model"
VERSION = 1
_SAFE_ROOTS = ("torch", "torchvision", "operator", "_operator", "math", "builtins")


def _encode(v: Any) -> Any:
    if isinstance(v, fx.Node):
        return {"node": v.name}
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, tuple):
        return {"tuple": [_encode(x) for x in v]}
    if isinstance(v, list):
        return [_encode(x) for x in v]
    if isinstance(v, dict):
        return {"dict": {k: _encode(x) for k, x in v.items()}}
    if isinstance(v, slice):
        return {"slice": [_encode(v.start), _encode(v.stop), _encode(v.step)]}
    if v is Ellipsis:
        return {"ellipsis": True}
    if isinstance(v, torch.dtype):
        return {"dtype": str(v).removeprefix("torch.")}
    if isinstance(v, torch.device):
        return {"device": str(v)}
    if isinstance(v, torch.memory_format):
        return {"memory_format": str(v).removeprefix("torch.")}
    raise ArtifactError(f"cannot save a graph argument of type {type(v).__name__}: {v!r}")


def _decode(v: Any, env: dict[str, fx.Node]) -> Any:
    if isinstance(v, list):
        return [_decode(x, env) for x in v]
    if not isinstance(v, dict):
        return v
    (key, val), = v.items()
    if key == "node":
        return env[val]
    if key == "tuple":
        return tuple(_decode(x, env) for x in val)
    if key == "dict":
        return {k: _decode(x, env) for k, x in val.items()}
    if key == "slice":
        return slice(*(_decode(x, env) for x in val))
    if key == "ellipsis":
        return Ellipsis
    if key in ("dtype", "memory_format"):
        return getattr(torch, val)
    if key == "device":
        return torch.device(val)
    raise ArtifactError(f"unknown argument encoding {key!r}")


def _resolve(qualname: str) -> Any:
    """Import a call target by name, only from the safe roots."""
    if "." not in qualname:
        return getattr(builtins, qualname)
    if qualname.split(".")[0] not in _SAFE_ROOTS:
        raise ArtifactError(f"call target {qualname!r} is outside torch, torchvision, operator, math and builtins")
    parts = qualname.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for p in parts[i:]:
            obj = getattr(obj, p)
        return obj
    raise ArtifactError(f"cannot resolve call target {qualname!r}")


def _module_spec(name: str, m: nn.Module) -> dict[str, Any]:
    cls = type(m)
    if not cls.__module__.startswith("torch.nn"):
        raise ArtifactError(f"module `{name}` is a {cls.__module__}.{cls.__name__}, not a torch.nn module: "
                            f"only graphs of standard modules can be saved without their code")
    kwargs: dict[str, Any] = {}
    for p in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name in ("device", "dtype"):
            continue
        if hasattr(m, p.name):
            v = getattr(m, p.name)
            kwargs[p.name] = (v is not None) if isinstance(v, torch.Tensor) or (v is None and p.name == "bias") else v
    spec = {"type": f"{cls.__module__}.{cls.__name__}", "kwargs": json.loads(json.dumps(kwargs))}
    if repr(_build_module(spec)) != repr(m):
        raise ArtifactError(f"module `{name}` ({cls.__name__}) cannot be rebuilt from its attributes")
    return spec


def _build_module(spec: dict[str, Any]) -> nn.Module:
    cls = _resolve(spec["type"])
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ArtifactError(f"{spec['type']!r} is not a torch.nn module")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in spec["kwargs"].items()}
    return cls(**kwargs)


def save(pruned: fx.GraphModule, path: str | os.PathLike) -> None:
    """Write a pruned GraphModule (from compiler.prune/rewrite) to one file, atomically."""
    info = pruned.meta.get("latprune") if isinstance(pruned, fx.GraphModule) else None
    if info is None:
        raise ArtifactError("compiler.save takes a model returned by compiler.prune or compiler.rewrite")
    nodes, modules, attrs, states = [], {}, {}, {}
    for n in pruned.graph.nodes:
        target = n.target if isinstance(n.target, str) else _get_qualified_name(n.target)
        nodes.append({"name": n.name, "op": n.op, "target": target,
                      "args": _encode(n.args), "kwargs": _encode(n.kwargs)})
        if n.op == "call_module" and n.target not in modules:
            m = pruned.get_submodule(n.target)
            modules[n.target] = _module_spec(n.target, m)
            states[n.target] = m.state_dict()
        elif n.op == "get_attr":
            attrs[n.target] = getattr(pruned.get_submodule(n.target.rpartition(".")[0]), n.target.rpartition(".")[2])
    arch = {"nodes": nodes, "modules": modules, "class_name": pruned.__class__.__name__,
            "example_shapes": pruned.meta.get("example_shapes"),
            "example_dtypes": pruned.meta.get("example_dtypes")}
    payload = {"format": FORMAT, "version": VERSION, "arch": json.dumps(arch),
               "space": json.dumps(info["space"].to_dict()), "widths": dict(info["widths"]),
               "states": states, "attrs": {k: v.detach() for k, v in attrs.items()}}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load(path: str | os.PathLike) -> fx.GraphModule:
    """Rebuild a model saved by compiler.save; no original model code is needed."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ArtifactError(f"{path}: no such file") from None
    except Exception as exc:
        raise ArtifactError(f"{path}: not a readable latprune model ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ArtifactError(f"{path}: not a latprune pruned model (expected format {FORMAT!r})")
    if payload.get("version") != VERSION:
        raise ArtifactError(f"{path}: format version {payload.get('version')} is not supported (this latprune reads {VERSION})")
    try:
        arch = json.loads(payload["arch"])
        root: dict[str, Any] = {}
        for target, spec in arch["modules"].items():
            m = _build_module(spec)
            m.load_state_dict(payload["states"][target])
            root[target] = m
        root.update(payload["attrs"])
        graph = fx.Graph()
        env: dict[str, fx.Node] = {}
        for n in arch["nodes"]:
            target = n["target"] if n["op"] in ("placeholder", "get_attr", "call_module", "call_method", "output") \
                else _resolve(n["target"])
            args, kwargs = _decode(n["args"], env), _decode(n["kwargs"], env)
            if n["op"] == "output":
                graph.output(args[0])
                continue
            node = graph.create_node(n["op"], target, args, kwargs, name=n["name"])
            env[n["name"]] = node
        gm = fx.GraphModule(root, graph, arch["class_name"])
        space = PruningSpace.from_dict(json.loads(payload["space"]))
    except ArtifactError:
        raise
    except Exception as exc:
        raise ArtifactError(f"{path}: corrupt latprune model ({type(exc).__name__}: {exc})") from None
    gm.eval()
    gm.meta["latprune"] = {"space": space, "widths": dict(payload["widths"])}
    gm.meta["example_shapes"] = arch["example_shapes"]
    gm.meta["example_dtypes"] = arch["example_dtypes"]
    return gm
