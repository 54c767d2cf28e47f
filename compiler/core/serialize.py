"""A pruned architecture as data: save a pruned GraphModule and load it without model code.

The file holds the graph as JSON (nodes, standard torch.nn module specs), the PruningSpace
and Widths it came from, and the weights. Loading never runs code from the file: weights load
with `torch.load(weights_only=True)`; every call target, method and module type must be one the
channel analysis has a rule for (an exact allow-list, looked up by name, never walked with
getattr); and every name that torch.fx writes into the Python source it generates (node names,
placeholders, attribute paths, keyword names) must be a plain identifier, so a crafted file
cannot inject source.
"""
from __future__ import annotations

import inspect
import json
import keyword
import os
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
from torch.fx.node import _get_qualified_name

from .atomic import atomic_path
from .errors import ArtifactError
from .rules import KNOWN_FUNCTIONS, KNOWN_METHODS, KNOWN_MODULES
from .space import PruningSpace

FORMAT = "latprune.pruned-model"
VERSION = 1
# Pure tensor math the analysis has no rule for (it freezes the channels they touch) but that
# real models contain; named here, resolved once from these constants, never from file text.
_PURE_TORCH = ("cumsum", "cumprod", "matmul", "bmm", "mm", "einsum", "norm", "rsqrt", "log", "pow", "erf",
               "max", "min", "argmax", "argmin", "logsumexp", "prod", "roll", "flip", "gather", "index_select",
               "zeros_like", "ones_like", "full_like", "floor", "ceil", "round", "sign", "sin", "cos",
               "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_not")
_PURE_F = ("linear", "layer_norm", "group_norm", "batch_norm", "instance_norm", "normalize", "conv1d", "conv2d",
           "conv3d", "scaled_dot_product_attention", "embedding")
_PURE_METHODS = frozenset(_PURE_TORCH) | {"index_select", "masked_fill", "type", "float", "int", "long", "bool"}
_FUNCTIONS = {_get_qualified_name(f): f for f in KNOWN_FUNCTIONS | {getattr(torch, n) for n in _PURE_TORCH}
              | {getattr(torch.nn.functional, n) for n in _PURE_F}}
_METHODS = KNOWN_METHODS | _PURE_METHODS
_MODULES = {f"{c.__module__}.{c.__name__}": c for c in KNOWN_MODULES}
_TENSOR_ATTRS = frozenset({"shape", "dtype", "device", "ndim"})  # what getattr(x, name) may read


def _identifier(name: Any, what: str, dotted: bool = False) -> str:
    """`name` if it is a plain (dotted) Python identifier that cannot inject source."""
    parts = name.split(".") if isinstance(name, str) and dotted else [name]
    if not all(isinstance(p, str) and ((p.isidentifier() and not keyword.iskeyword(p) and not p.startswith("__"))
                                       or (dotted and p.isascii() and p.isdigit())) for p in parts):
        raise ArtifactError(f"{what} {name!r} is not a plain identifier; the file was not written by latprune")
    return name


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
        value = getattr(torch, _identifier(val, key), None)
        if not isinstance(value, torch.dtype if key == "dtype" else torch.memory_format):
            raise ArtifactError(f"{val!r} is not a torch {key}")
        return value
    if key == "device":
        return torch.device(val)
    raise ArtifactError(f"unknown argument encoding {key!r}")


def _function(qualname: Any) -> Any:
    """A call target by its qualified name, from the allow-list only."""
    fn = _FUNCTIONS.get(qualname) if isinstance(qualname, str) else None
    if fn is None:
        raise ArtifactError(f"call target {qualname!r} is not on latprune's list of safe ops; loading refuses it")
    return fn


def _target(n: dict[str, Any], modules: dict[str, Any], attrs: dict[str, Any]) -> Any:
    """A node's target, checked for its op kind; only call_function resolves to an object."""
    op, target = n["op"], n["target"]
    if op == "call_function":
        return _function(target)
    if op == "call_method":
        if target not in _METHODS:
            raise ArtifactError(f"method {target!r} is not on latprune's list of safe ops; loading refuses it")
        return target
    if op == "placeholder":
        return _identifier(target, "input name")
    if op in ("call_module", "get_attr"):
        _identifier(target, "attribute path", dotted=True)
        if target not in (modules if op == "call_module" else attrs):
            raise ArtifactError(f"node {n['name']!r} refers to {target!r}, which the file does not hold")
        return target
    if op == "output":
        return target
    raise ArtifactError(f"unknown node kind {op!r}")


def _check_args(target: Any, args: Any, kwargs: dict[str, Any]) -> None:
    for k in kwargs:
        _identifier(k, "keyword argument")
    if target is getattr and not (len(args) == 2 and args[1] in _TENSOR_ATTRS):
        raise ArtifactError(f"getattr{tuple(args[1:])!r} reads an attribute other than {sorted(_TENSOR_ATTRS)}")


def _module_spec(name: str, m: nn.Module) -> dict[str, Any]:
    cls = type(m)
    if f"{cls.__module__}.{cls.__name__}" not in _MODULES:
        raise ArtifactError(f"module `{name}` is a {cls.__module__}.{cls.__name__}, not a torch.nn module latprune "
                            f"knows: only graphs of standard modules can be saved without their code")
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
    cls = _MODULES.get(spec["type"]) if isinstance(spec.get("type"), str) else None
    if cls is None:
        raise ArtifactError(f"module type {spec.get('type')!r} is not a torch.nn module latprune knows")
    kwargs = {_identifier(k, "module argument"): tuple(v) if isinstance(v, list) else v
              for k, v in spec["kwargs"].items()}
    return cls(**kwargs)


def save(pruned: fx.GraphModule, path: str | os.PathLike) -> None:
    """Write a pruned GraphModule (from compiler.prune/rewrite) to one file, atomically."""
    info = pruned.meta.get("latprune") if isinstance(pruned, fx.GraphModule) else None
    if info is None:
        raise ArtifactError("compiler.save takes a model returned by compiler.prune or compiler.rewrite")
    nodes, modules, attrs, states = [], {}, {}, {}
    for n in pruned.graph.nodes:
        target = n.target if isinstance(n.target, str) else _get_qualified_name(n.target)
        if (n.op == "call_function" and target not in _FUNCTIONS) or (n.op == "call_method" and target not in _METHODS):
            raise ArtifactError(f"node {n.name} calls {target}, which is not on latprune's list of safe ops: only "
                                "graphs of those can be saved without their code (and loaded without running any)")
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
            m.load_state_dict(payload["states"][_identifier(target, "module path", dotted=True)])
            root[target] = m
        attrs = payload["attrs"]
        if not all(isinstance(v, torch.Tensor) for v in attrs.values()):
            raise ArtifactError("the file's graph constants are not all tensors")
        root.update({_identifier(k, "attribute path", dotted=True): v for k, v in attrs.items()})
        graph = fx.Graph()
        env: dict[str, fx.Node] = {}
        for n in arch["nodes"]:
            target = _target(n, arch["modules"], attrs)
            args, kwargs = _decode(n["args"], env), _decode(n["kwargs"], env)
            _check_args(target, args, kwargs)
            if n["op"] == "output":
                graph.output(args[0])
                continue
            name = _identifier(n["name"], "node name")
            if name in env:
                raise ArtifactError(f"node name {name!r} appears twice")
            env[name] = graph.create_node(n["op"], target, args, kwargs, name=name)
        gm = fx.GraphModule(root, graph, _identifier(arch["class_name"], "class name"))
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
