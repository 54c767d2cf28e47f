"""`cuda` and `torch-cpu`: the pruned model run by PyTorch itself, as users deploy it there.

On a GPU: cuDNN kernels, fp16 by default (bf16 / fp32 selectable), channels_last, and the
forward captured in a CUDA graph so that a batch-1 latency is the GPU's, not Python's launch
overhead; timed with CUDA events. On the CPU: PyTorch's eager CPU path at a fixed thread count,
timed on the host clock. The emitted engine is an AOTInductor package (`model.pt2`) that
loads and runs without the model's Python code; `build(..., out_dir=...)` compiles it and the
artifact then runs (and is timed on) that engine, so verification measures what ships. Table
points are timed on the eager / CUDA-graph path; the end-to-end correction absorbs the gap,
and `Artifact.info["engine"]` says which engine a number came from.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compiler.core.atomic import atomic_path
from compiler.core.lower import as_inputs

from .base import (Artifact, LatencyStats, Target, TargetError, TargetUnavailable, Timing, check_threads,
                   cpu_name, cpu_simd, time_calls, time_cuda)

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _inference(fn: Any, inputs: tuple[torch.Tensor, ...]) -> Any:
    """A no-argument call of `fn` (a module or an AOTInductor runner) on the built inputs."""
    def call() -> Any:
        with torch.inference_mode():
            return fn(*inputs)
    return call


class TorchTarget(Target):
    """PyTorch on `device`; subclasses fix the device."""

    device = "cpu"

    def __init__(self, precision: str = "fp32", threads: int = 1, channels_last: bool = True) -> None:
        if precision not in _DTYPES:
            raise TargetError(f"precision must be one of {sorted(_DTYPES)}, got {precision!r}")
        self.precision, self.threads, self.channels_last = precision, check_threads(threads), channels_last

    def fingerprint(self) -> dict[str, Any]:
        return {"target": self.name, "device": cpu_name(), "simd": cpu_simd(), "threads": self.threads,
                "torch": torch.__version__, "precision": self.precision, "channels_last": self.channels_last}

    def _prepare(self, model: torch.nn.Module, example_inputs: Any) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
        dtype = _DTYPES[self.precision]
        model = copy.deepcopy(model).eval().to(self.device, dtype)
        inputs = tuple(t.to(self.device, dtype) for t in as_inputs(example_inputs))
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
            inputs = tuple(t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t for t in inputs)
        return model, inputs

    def build(self, model: torch.nn.Module, example_inputs: torch.Tensor | Sequence[torch.Tensor],
              out_dir: str | Path | None = None) -> Artifact:
        torch.set_num_threads(self.threads)
        model, inputs = self._prepare(model, example_inputs)
        numpy_inputs = tuple(t.float().cpu().numpy() for t in inputs)
        if out_dir is None:
            call, engine = self._eager(model, inputs), self.eager_engine
            return Artifact(self.name, (call, inputs), numpy_inputs, {}, {"engine": engine})
        path = Path(out_dir) / "model.pt2"
        try:
            with torch.no_grad():
                exported = torch.export.export(model, inputs)
                with atomic_path(path) as tmp:
                    torch._inductor.aoti_compile_and_package(exported, package_path=str(tmp.with_suffix(".pt2")))
                    tmp.with_suffix(".pt2").rename(tmp)
            runner = torch._inductor.aoti_load_package(str(path))
        except Exception as exc:  # export and Inductor raise many types; the first line says which
            raise TargetError(f"AOTInductor could not compile the model: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
        return Artifact(self.name, (_inference(runner, inputs), inputs), numpy_inputs, {"engine": path},
                        {"engine": "aotinductor"})

    eager_engine = "eager"

    def _eager(self, model: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> Any:
        return _inference(model, inputs)

    def run(self, artifact: Artifact, inputs: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
        if inputs is not None:
            raise TargetError(f"the {self.name} target runs on the inputs it was built with; rebuild for new inputs")
        call, _ = artifact.handle
        out = call()
        self._sync()
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return [o.detach().float().cpu().numpy() for o in outs]

    def _sync(self) -> None:
        """CPU runs are synchronous."""

    def measure(self, artifact: Artifact, timing: Timing = Timing()) -> LatencyStats:
        torch.set_num_threads(self.threads)
        call, _ = artifact.handle
        return time_calls(call, timing)


class TorchCPU(TorchTarget):
    """PyTorch eager on the CPU: a deployment path of its own, and how CI exercises the GPU
    target's plumbing (building, timing, the AOTInductor engine) without a GPU."""

    name = "torch-cpu"
    device = "cpu"

    def __init__(self, precision: str = "fp32", threads: int = 1, channels_last: bool = True) -> None:
        super().__init__(precision, threads, channels_last)
        self.channel_step = 16 if cpu_simd() == "avx512f" else 8


class TorchCUDA(TorchTarget):
    """PyTorch on an NVIDIA GPU, forward captured in a CUDA graph, timed with CUDA events."""

    name = "cuda"
    device = "cuda"
    eager_engine = "cuda-graph"

    def __init__(self, precision: str = "fp16", threads: int = 1, channels_last: bool = True) -> None:
        if not torch.cuda.is_available():
            raise TargetUnavailable("the cuda target needs an NVIDIA GPU visible to PyTorch and none is; run the "
                                    "build on the GPU machine (its engine is compiled there too: Inductor generates "
                                    "GPU kernels with the GPU present), or choose a CPU target such as torch-cpu")
        super().__init__(precision, threads, channels_last)
        self.channel_step = 8  # tensor cores take fp16/bf16 channel counts in multiples of 8

    def fingerprint(self) -> dict[str, Any]:
        props = torch.cuda.get_device_properties(0)
        return {"target": self.name, "device": props.name, "capability": f"{props.major}.{props.minor}",
                "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(), "torch": torch.__version__,
                "precision": self.precision, "channels_last": self.channels_last}

    def _eager(self, model: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> Any:
        """The forward captured once in a CUDA graph; a call replays it."""
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.inference_mode():
            for _ in range(3):  # warm-up on a side stream: cuDNN picks its kernels before capture
                model(*inputs)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.inference_mode():
            static_out = model(*inputs)

        def call() -> Any:
            graph.replay()
            return static_out
        return call

    def _sync(self) -> None:
        torch.cuda.synchronize()

    def measure(self, artifact: Artifact, timing: Timing = Timing()) -> LatencyStats:
        call, _ = artifact.handle
        return time_cuda(call, torch.cuda.current_stream(), timing)
