"""`onnxruntime-cpu`: the embedded default. The model goes through ONNX into an ORT session
with full graph optimisation (Conv+BN+activation fused, NCHWc layout), one engine per build."""
from __future__ import annotations

from collections.abc import Sequence
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compiler.core.atomic import atomic_path
from compiler.core.export import onnx_bytes

from .base import Artifact, Target, TargetError, as_numpy, check_threads, cpu_name, cpu_simd

_OPT_LEVELS = ("disable", "basic", "extended", "all")
_NCHWC = "com.microsoft.nchwc"  # the domain of ORT's blocked-layout kernels and reorders


class OnnxRuntimeCPU(Target):
    """ONNX Runtime's CPU execution provider with a fixed intra-op thread count."""

    name = "onnxruntime-cpu"

    def __init__(self, threads: int = 1, opt_level: str = "all", blocked: bool = True) -> None:
        import onnxruntime  # noqa: F401  (a hard dependency; fail here, not mid-build)

        self.threads = check_threads(threads)
        self.blocked = blocked  # False: ORT's NCHWc layout pass off, every conv on the plain kernels
        if opt_level not in _OPT_LEVELS:
            raise TargetError(f"opt_level must be one of {_OPT_LEVELS}, got {opt_level!r}")
        self.opt_level = opt_level
        self.simd = cpu_simd()
        self.channel_step = 16 if self.simd == "avx512f" else 8

    def fingerprint(self) -> dict[str, Any]:
        import onnxruntime

        return {"target": self.name, "device": cpu_name(), "simd": self.simd, "threads": self.threads,
                "onnxruntime": onnxruntime.__version__, "opt_level": self.opt_level, "precision": "fp32",
                **({} if self.blocked else {"layout": "nchw"})}

    @property
    def _disabled(self) -> list[str]:
        return [] if self.blocked else ["NchwcTransformer"]

    def _options(self, optimized_path: Path | None = None) -> Any:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[self.opt_level]
        so.log_severity_level = 3
        if optimized_path is not None:
            so.optimized_model_filepath = str(optimized_path)
        return so

    def kernel_family(self, model: torch.nn.Module, example_inputs: torch.Tensor | Sequence[torch.Tensor]) -> str | None:
        """'nchwc' where ORT's optimised graph runs the block on its blocked-layout kernels,
        'plain' where it keeps NCHW (e.g. a conv whose input channels are not a multiple of 4)."""
        import onnx

        with tempfile.TemporaryDirectory(prefix="latprune-ort-") as d:
            self.build_onnx(onnx_bytes(model, example_inputs), as_numpy(example_inputs), d)
            graph = onnx.load(Path(d) / "model.ort.onnx", load_external_data=False).graph
        return "nchwc" if any(n.domain == _NCHWC for n in graph.node) else "plain"

    def fallback(self) -> Target | None:
        if self.opt_level != "all":
            return None  # the NCHWc pass runs only at 'all'
        return OnnxRuntimeCPU(self.threads, self.opt_level, blocked=False)

    def build(self, model: torch.nn.Module, example_inputs: torch.Tensor | Sequence[torch.Tensor],
              out_dir: str | Path | None = None) -> Artifact:
        return self.build_onnx(onnx_bytes(model, example_inputs), as_numpy(example_inputs), out_dir)

    def build_onnx(self, onnx_model: bytes, inputs: tuple[np.ndarray, ...],
                   out_dir: str | Path | None = None) -> Artifact:
        """A session for an ONNX model; with `out_dir`, also model.onnx and the ORT-optimised
        model.ort.onnx (what the session runs after fusion), both written atomically."""
        import onnxruntime as ort

        files: dict[str, Path] = {}
        try:
            if out_dir is None:
                sess = ort.InferenceSession(onnx_model, self._options(), providers=["CPUExecutionProvider"],
                                            disabled_optimizers=self._disabled)
            else:
                out = Path(out_dir)
                with atomic_path(out / "model.onnx") as tmp:
                    tmp.write_bytes(onnx_model)
                with atomic_path(out / "model.ort.onnx") as tmp:
                    sess = ort.InferenceSession(onnx_model, self._options(tmp), providers=["CPUExecutionProvider"],
                                                disabled_optimizers=self._disabled)
                files = {"onnx": out / "model.onnx", "engine": out / "model.ort.onnx"}
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
            raise TargetError(f"ONNX Runtime could not load the model: {str(exc).splitlines()[0]}") from None
        names = [i.name for i in sess.get_inputs()]
        if len(names) != len(inputs):
            raise TargetError(f"the ONNX model takes {len(names)} inputs but {len(inputs)} were given")
        return Artifact(self.name, (sess, names), inputs, files)

    def run(self, artifact: Artifact, inputs: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
        sess, names = artifact.handle
        return sess.run(None, dict(zip(names, artifact.inputs if inputs is None else inputs)))
