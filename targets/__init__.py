"""Backends that build a model into an engine and time it on a device (README's Architecture: Target).

`targets.get(name, **options)` is the one entry point; backends import their libraries
only when asked for, so a missing TVM or TensorRT never breaks the others.
"""
from __future__ import annotations

import importlib
from typing import Any

from .base import (Artifact, LatencyStats, Take, Target, TargetError, TargetUnavailable, Timing, adaptive, settle,
                   settled, take, time_calls, time_cuda, time_group, time_pair)

_REGISTRY = {
    "onnxruntime-cpu": ("targets.onnxruntime_cpu", "OnnxRuntimeCPU"),
    "tvm-llvm": ("targets.tvm_llvm", "TvmLlvm"),
    "tvm-aarch64": ("targets.tvm_aarch64", "TvmAarch64"),
    "tensorrt": ("targets.tensorrt", "TensorRT"),
    "cuda": ("targets.torch_device", "TorchCUDA"),
    "torch-cpu": ("targets.torch_device", "TorchCPU"),
}
NAMES = tuple(_REGISTRY)


def get(name: str, **options: Any) -> Target:
    """The target called `name`, configured by `options` (threads, trials, rpc, channel_step, ...)."""
    if name not in _REGISTRY:
        raise TargetError(f"unknown target {name!r}; choose one of {', '.join(NAMES)}")
    module, cls = _REGISTRY[name]
    step = options.pop("channel_step", None)
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise TargetUnavailable(f"target {name!r} needs a library that is not installed: {exc}") from None
    try:
        target = getattr(mod, cls)(**options)
    except TypeError as exc:
        raise TargetError(f"bad options for target {name!r}: {exc}") from None
    if step is not None:  # a measured step (`latprune probe-step`) in place of the declared one
        target.declared_step, target.channel_step = target.channel_step, int(step)
    return target


__all__ = ["get", "NAMES", "Target", "Artifact", "LatencyStats", "Timing", "TargetError",
           "TargetUnavailable", "time_calls", "time_group", "time_pair", "adaptive", "settled", "time_cuda", "Take", "take",
           "settle"]
