"""`tensorrt`: NVIDIA TensorRT engines built from ONNX (FP32 or FP16), timed with CUDA events.

Optional: TensorRT and a CUDA GPU are needed (pip install 'latprune[tensorrt]'); without
them `targets.get("tensorrt")` raises TargetUnavailable saying which one is missing. A
timing cache (kept beside the latency table) makes rebuilding known layers fast.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compiler.core.atomic import atomic_path
from compiler.core.export import onnx_bytes

from .base import (Artifact, LatencyStats, Target, TargetError, TargetUnavailable, Timing, as_numpy, time_cuda)


def _trt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise TargetUnavailable(f"TensorRT is not installed ({exc}); pip install 'latprune[tensorrt]' on a "
                                "machine with an NVIDIA GPU") from None
    if not torch.cuda.is_available():
        raise TargetUnavailable("the tensorrt target needs a CUDA GPU and none is visible to PyTorch")
    return trt


class TensorRT(Target):
    """One TensorRT engine per build on CUDA device `device`."""

    name = "tensorrt"

    def __init__(self, precision: str = "fp32", timing_cache: str | Path | None = None, device: int = 0,
                 workspace_mb: int = 2048, threads: int | None = None) -> None:
        self.trt = _trt()
        if precision not in ("fp32", "fp16"):
            raise TargetError(f"precision must be fp32 or fp16, got {precision!r}")
        self.precision, self.device, self.workspace_mb = precision, device, workspace_mb
        self.timing_cache = Path(timing_cache) if timing_cache else None
        self.channel_step = 16 if precision == "fp16" else 8  # tensor-core tiles want multiples of 8/16
        self.logger = self.trt.Logger(self.trt.Logger.ERROR)

    def fingerprint(self) -> dict[str, Any]:
        return {"target": self.name, "device": torch.cuda.get_device_name(self.device),
                "compute_capability": ".".join(map(str, torch.cuda.get_device_capability(self.device))),
                "cuda": torch.version.cuda, "tensorrt": self.trt.__version__, "precision": self.precision}

    def build(self, model: torch.nn.Module, example_inputs: torch.Tensor | Sequence[torch.Tensor],
              out_dir: str | Path | None = None) -> Artifact:
        trt = self.trt
        builder = trt.Builder(self.logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse(onnx_bytes(model, example_inputs)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise TargetError(f"TensorRT could not parse the ONNX model: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace_mb << 20)
        if self.precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        cache = config.create_timing_cache(self.timing_cache.read_bytes()
                                           if self.timing_cache and self.timing_cache.exists() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise TargetError("TensorRT failed to build an engine for the model (see its log above)")
        if self.timing_cache is not None:
            with atomic_path(self.timing_cache) as tmp:
                tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
        files: dict[str, Path] = {}
        if out_dir is not None:
            with atomic_path(Path(out_dir) / "model.plan") as tmp:
                tmp.write_bytes(bytes(plan))
            files = {"engine": Path(out_dir) / "model.plan"}
        return self._load(bytes(plan), as_numpy(example_inputs), files)

    def _load(self, plan: bytes, inputs: tuple[np.ndarray, ...], files: dict[str, Path]) -> Artifact:
        trt = self.trt
        engine = trt.Runtime(self.logger).deserialize_cuda_engine(plan)
        context = engine.create_execution_context()
        dev = torch.device("cuda", self.device)
        buffers, outputs, k = {}, [], 0
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            dtype = torch.from_numpy(np.empty(0, dtype=trt.nptype(engine.get_tensor_dtype(name)))).dtype
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                t = torch.from_numpy(inputs[k]).to(dev, dtype)
                k += 1
            else:
                t = torch.empty(tuple(engine.get_tensor_shape(name)), dtype=dtype, device=dev)
                outputs.append(name)
            buffers[name] = t
            context.set_tensor_address(name, t.data_ptr())
        return Artifact(self.name, (engine, context, buffers, outputs), inputs, files)

    def _execute(self, artifact: Artifact, stream: torch.cuda.Stream) -> None:
        _, context, _, _ = artifact.handle
        if not context.execute_async_v3(stream.cuda_stream):
            raise TargetError("TensorRT failed to run the engine")

    def run(self, artifact: Artifact, inputs: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
        if inputs is not None:
            raise TargetError("the tensorrt target runs on the inputs it was built with; rebuild for new inputs")
        _, _, buffers, outputs = artifact.handle
        stream = torch.cuda.current_stream(self.device)
        self._execute(artifact, stream)
        stream.synchronize()
        return [buffers[n].float().cpu().numpy() for n in outputs]

    def measure(self, artifact: Artifact, timing: Timing = Timing()) -> LatencyStats:
        """GPU time between CUDA events around each enqueue; no host work in the interval."""
        stream = torch.cuda.current_stream(self.device)
        return time_cuda(lambda: self._execute(artifact, stream), stream, timing)
