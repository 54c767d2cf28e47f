"""`tvm-aarch64`: TVM for 64-bit ARM CPUs, cross-compiled with gcc-aarch64-linux-gnu.

The engine is an aarch64 shared library; it can only be timed on an ARM device reached
through TVM RPC (`rpc` or `rpc_tracker` + `rpc_key`). Without one, builds and emitted
artifacts still work, and measuring says what is missing. Tuning needs the device too:
without RPC, blocks are built with their default schedules only when trials=0. An emulated
board (tools/arm_emulator.py) runs engines for their outputs; timing one is refused.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from compiler.core.atomic import atomic_path

from .base import Artifact, LatencyStats, TargetError, TargetUnavailable, Timing
from .tvm_llvm import RPC_TIMEOUT_S, TvmLlvm, _worker_init

CROSS_CC = "aarch64-linux-gnu-gcc"


class TvmAarch64(TvmLlvm):
    """TVM LLVM backend for aarch64 (NEON), timed over TVM RPC on the device."""

    name = "tvm-aarch64"

    def __init__(self, threads: int = 1, trials: int = 16, work_dir: str | os.PathLike | None = None,
                 rpc: str | None = None, rpc_tracker: str | None = None, rpc_key: str = "latprune",
                 mcpu: str = "cortex-a72", rpc_timeout: float = RPC_TIMEOUT_S) -> None:
        super().__init__(threads, trials, work_dir, rpc, rpc_tracker, rpc_key, mcpu, rpc_timeout)
        if shutil.which(CROSS_CC) is None:
            raise TargetUnavailable(f"{CROSS_CC} is not installed; apt-get install gcc-aarch64-linux-gnu")
        self.channel_step = 8  # NEON holds 4 fp32 lanes; kernels unroll two vectors
        if trials and not self.rpc_tracker:
            raise TargetError("tuning for tvm-aarch64 times candidates on the ARM device: give --rpc-tracker "
                              "HOST:PORT --rpc-key KEY, or --trials 0 to build untuned")

    @property
    def can_run(self) -> bool:
        return self.remote

    @property
    def can_measure(self) -> bool:
        """Only a real board's timings mean anything; an emulated one runs engines for their outputs."""
        return self.remote and not self.emulated

    def target_dict(self) -> dict[str, Any]:
        return {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"], "mcpu": self.mcpu,
                "num-cores": self.threads}

    def fingerprint(self) -> dict[str, Any]:
        fp = super().fingerprint()
        fp["device"] = fp["device"] if self.remote else "aarch64 (no device attached)"
        if self.emulated:
            fp["device"] += f" (emulated aarch64, {self.device_info().get('emulator', 'emulator')})"
            fp["emulated"] = True
        return fp

    def ms_builder(self) -> Any:
        from tvm.s_tir import meta_schedule as ms

        return ms.builder.LocalBuilder(max_workers=self.threads, timeout_sec=300, f_export=_export_aarch64,
                                       initializer=_worker_init())

    def export(self, ex: Any, path: Path) -> None:

        with atomic_path(path) as tmp:
            ex.export_library(str(tmp.with_suffix(".so")), fcompile=_cross())
            os.replace(tmp.with_suffix(".so"), tmp)

    def _load(self, ex: Any, inputs: Any, params: Any, files: dict[str, Path]) -> Artifact:
        if self.remote:
            return super()._load(ex, inputs, params, files)
        return Artifact(self.name, None, inputs, files, {"executable": ex})

    def run(self, artifact: Artifact, inputs: Any = None) -> list:
        if artifact.handle is None:
            raise TargetError("an aarch64 engine runs only on an ARM device: give --rpc HOST:PORT or "
                              "--rpc-tracker HOST:PORT --rpc-key KEY")
        return super().run(artifact, inputs)

    def measure(self, artifact: Artifact, timing: Timing = Timing()) -> LatencyStats:
        if artifact.handle is None:
            self.run(artifact)  # raises: says how to attach a device
        if self.emulated:
            raise TargetError(f"the device behind the TVM RPC {self.rpc_where} is emulated: its timings say "
                              "nothing about a real board; profile and time on the board (README, ARM boards)")
        return super().measure(artifact, timing)


def _cross() -> Any:
    from tvm.support import cc

    return cc.cross_compiler(CROSS_CC)


def _export_aarch64(mod: Any) -> str:
    """meta-schedule builder hook: write a candidate as an aarch64 library."""
    import tempfile

    path = os.path.join(tempfile.mkdtemp(prefix="latprune_ms_"), "candidate.so")
    mod.export_library(path, fcompile=_cross())
    return path
