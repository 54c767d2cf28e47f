"""ONNX export of a (pruned) model, written atomically, checked by ONNX Runtime."""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from .atomic import atomic_path
from .errors import LatpruneError
from .lower import as_inputs


class ExportError(LatpruneError):
    """torch.onnx could not export the model."""


def export_onnx(model: torch.nn.Module, example_inputs: torch.Tensor | Sequence[torch.Tensor],
                path: str | os.PathLike, opset: int = 18) -> None:
    """Export with torch.onnx's torch.export-based exporter (one self-contained file)."""
    inputs = as_inputs(example_inputs)
    model.eval()
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        try:
            prog = torch.onnx.export(model, inputs, dynamo=True, opset_version=opset, verbose=False,
                                     external_data=False)
            prog.save(str(tmp))
        except Exception as exc:
            raise ExportError(f"torch.onnx could not export the model: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}") from None


def onnx_max_error(path: str | os.PathLike, model: torch.nn.Module,
                   example_inputs: torch.Tensor | Sequence[torch.Tensor]) -> float:
    """Largest |ONNX Runtime - PyTorch| over the first output, relative to its scale."""
    import onnxruntime as ort

    inputs = as_inputs(example_inputs)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {i.name: t.numpy() for i, t in zip(sess.get_inputs(), inputs)}
    out = sess.run(None, feed)[0]
    with torch.no_grad():
        ref = model(*inputs)
    ref = (ref[0] if isinstance(ref, (tuple, list)) else ref).numpy()
    return float(np.abs(out - ref).max() / max(np.abs(ref).max(), 1e-6))


def onnx_bytes(model: torch.nn.Module, example_inputs: torch.Tensor | Sequence[torch.Tensor],
               opset: int = 17) -> bytes:
    """An in-memory ONNX model for timing: the TorchScript exporter takes ~20 ms where the
    dynamo one takes ~1 s, which matters when a latency table builds hundreds of blocks."""
    import io

    inputs = as_inputs(example_inputs)
    model.eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with _process_stdout_silenced():
                torch.onnx.export(model, inputs, buf, dynamo=False, opset_version=opset)
            return buf.getvalue()
        except Exception:
            pass
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        try:
            return torch.onnx.export(model, inputs, dynamo=True, opset_version=18,
                                     verbose=False).model_proto.SerializeToString()
        except Exception as exc:
            raise ExportError(f"torch.onnx could not export the model: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}") from None


@contextlib.contextmanager
def _process_stdout_silenced() -> Iterator[None]:
    """The TorchScript exporter prints the whole graph to the process's stdout (from C++, past
    sys.stdout) when it fails on an op, e.g. an adaptive pool that upsamples; the dynamo exporter
    then takes over, and the dump would land in `latprune ... --json` output."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no stdout to protect
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
