"""Turn the CLI's --data / --eval arguments into training batches, held-out batches and a metric.

--data takes `fashion-mnist` (Debian's dataset-fashion-mnist), a folder of images in
ImageFolder layout (class sub-folders; `train/` and `val/` sub-folders are used when present),
a `.npz` with `x`/`y` arrays (and optionally `x_val`/`y_val`), or `package.module:function`
returning (train, val) iterables of (input, label) batches. Every form is checked up front:
malformed data is a BadInputError naming the problem, never a failure deep in a forward pass.
"""
from __future__ import annotations

import pkgutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .core.errors import BadInputError
from .core.hashing import digest
from .data import split_train
from .evaluate import EvalFn, top1

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class Data:
    """Training batches (calibration, fine-tuning) and held-out batches (search fitness, report)."""

    train: list[Batch]
    val: list[Batch]
    source: str

    def digest(self) -> str:
        """A hash of every batch AdaBN, fine-tuning and scoring may read, so caches keyed on it
        notice any changed data."""
        return digest(*(t for batch in self.train + self.val for t in batch if t is not None), length=16)

    @staticmethod
    def from_batches(batches: Iterable[Any], source: str = "batches") -> Data:
        """Data from an iterable of input batches (tensors or numpy arrays) or (input, label)
        pairs, as compiler.compile's `calib_data` takes them: all training data, no held-out
        split (the caller scores with its own eval_fn)."""
        out: list[Batch] = []
        try:
            items = list(batches)
        except TypeError:
            raise BadInputError(f"calib_data must be an iterable of batches, got {type(batches).__name__}") from None
        for i, b in enumerate(items):
            x, y = (b[0], b[1]) if isinstance(b, (tuple, list)) and len(b) == 2 else (b, None)
            out.append((_tensor(x, f"calib_data batch {i} input"),
                        None if y is None else _tensor(y, f"calib_data batch {i} labels")))
        if not out:
            raise BadInputError("calib_data yielded no batches")
        return Data(out, [], source)

    def labelled(self) -> bool:
        return all(y is not None for _, y in self.train + self.val)


def _tensor(v: Any, what: str) -> torch.Tensor:
    if isinstance(v, np.ndarray) and np.issubdtype(v.dtype, np.number):
        return torch.from_numpy(np.ascontiguousarray(v))
    if isinstance(v, torch.Tensor):
        return v
    raise BadInputError(f"{what} is a {type(v).__name__}; give a torch.Tensor or a numeric numpy array")


def check_labels(data: Data, classes: int | None) -> None:
    """Labels must be integer class indices in [0, classes) for the model's head."""
    for split, batches in (("training", data.train), ("held-out", data.val)):
        ys = [y for _, y in batches if y is not None]
        if not ys:
            continue
        y = torch.cat([t.reshape(-1) for t in ys])
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise BadInputError(f"{data.source}: {split} labels are {y.dtype}, not integer class indices")
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or (classes is not None and hi >= classes):
            bad = int(((y < 0) | (y >= (classes if classes is not None else hi + 1))).sum())
            raise BadInputError(f"{data.source}: {bad} {split} labels fall outside [0, {classes}) (seen {lo}..{hi}); "
                                f"the model's head has {classes} outputs. Check the labels or the model's head")


def _batches(x: torch.Tensor, y: torch.Tensor, size: int) -> list[Batch]:
    return [(x[i:i + size], y[i:i + size]) for i in range(0, len(x), size)]


def _check(x: torch.Tensor, y: torch.Tensor, shape: tuple[int, ...], what: str) -> None:
    if x.ndim != len(shape) or tuple(x.shape[1:]) != tuple(shape[1:]):
        raise BadInputError(f"{what}: inputs have shape {tuple(x.shape)}, the model takes "
                            f"(N, {', '.join(map(str, shape[1:]))}); check --input-shape or the data")
    if len(x) != len(y) or len(x) == 0:
        raise BadInputError(f"{what}: {len(x)} inputs and {len(y)} labels; they must match and be non-empty")
    if not torch.isfinite(x).all():
        raise BadInputError(f"{what}: the inputs contain NaN or infinite values")


def _split(x: torch.Tensor, y: torch.Tensor, seed: int) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_val = max(1, len(x) // 10)
    return (x[order[n_val:]], y[order[n_val:]]), (x[order[:n_val]], y[order[:n_val]])


def _npz(path: Path, shape: tuple[int, ...], seed: int) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:
        raise BadInputError(f"cannot read {path} as .npz: {type(exc).__name__}: {exc}") from None
    if "x" not in arrays or "y" not in arrays:
        raise BadInputError(f"{path} must hold arrays 'x' and 'y' (optionally 'x_val', 'y_val'); it has {sorted(arrays)}")

    def pair(xk: str, yk: str) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = arrays[xk], arrays[yk]
        if not np.issubdtype(x.dtype, np.number) or not np.issubdtype(y.dtype, np.integer):
            raise BadInputError(f"{path}: '{xk}' must be numeric and '{yk}' integer class labels")
        if len(x) != len(y) or len(x) == 0:
            raise BadInputError(f"{path}: '{xk}' has {len(x)} items and '{yk}' {len(y)}; they must match and be non-empty")
        return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.int64))

    if "x_val" in arrays and "y_val" in arrays:
        return pair("x", "y"), pair("x_val", "y_val")
    return _split(*pair("x", "y"), seed)


def _folder(root: Path, shape: tuple[int, ...], seed: int) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    from torchvision import datasets, transforms

    if len(shape) != 4 or shape[1] not in (1, 3):
        raise BadInputError(f"an image folder feeds (N, 1 or 3, H, W) inputs; the model takes {tuple(shape)}")
    c, h, w = shape[1:]
    # ImageFolder loads RGB; a 1-channel model gets luminance
    tf = transforms.Compose(([transforms.Grayscale(1)] if c == 1 else []) + [transforms.Resize((h, w)),
                                                                             transforms.ToTensor()])

    def load(d: Path) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            ds = datasets.ImageFolder(str(d), transform=tf)
        except (FileNotFoundError, RuntimeError) as exc:
            raise BadInputError(f"{d} is not an ImageFolder (one sub-folder of images per class): {exc}") from None
        items = []
        for i, (path, _) in enumerate(ds.samples):
            try:
                items.append(ds[i])
            except (OSError, ValueError) as exc:
                raise BadInputError(f"cannot read image {path}: {exc}; remove or replace it") from None
        xs, ys = zip(*items)
        return torch.stack(xs), torch.tensor(ys)

    if (root / "train").is_dir() and (root / "val").is_dir():
        return load(root / "train"), load(root / "val")
    return _split(*load(root), seed)


def _function(spec: str) -> tuple[Iterable[Any], Iterable[Any]]:
    try:
        out = pkgutil.resolve_name(spec)()
    except Exception as exc:
        raise BadInputError(f"--data {spec}: {type(exc).__name__}: {exc}") from None
    if not (isinstance(out, tuple) and len(out) == 2):
        raise BadInputError(f"--data {spec} must return (train, val) iterables of (input, label) batches")
    return out


def load_data(spec: str, input_shape: tuple[int, ...], batch_size: int = 64, seed: int = 0,
              max_train: int | None = None, max_val: int | None = 2000) -> Data:
    """Read --data into batches of `batch_size`, checked against the model's input shape."""
    for name, n in (("batch size", batch_size), ("--eval-images", max_val), ("max_train", max_train)):
        if n is not None and n < 1:
            raise BadInputError(f"{name} must be a positive number of images, got {n}")
    if spec == "fashion-mnist":
        (xt, yt), (xv, yv) = split_train()
    elif ":" in spec and not Path(spec).exists():
        train, val = _function(spec)
        try:
            tb, vb = [tuple(b) for b in train], [tuple(b) for b in val]
        except TypeError:
            raise BadInputError(f"--data {spec} must return (train, val) iterables of (input, label) batches") from None
        if not tb or not vb or not all(len(b) == 2 for b in tb + vb):
            raise BadInputError(f"--data {spec} must yield non-empty (input, label) batches")
        (xt, yt), (xv, yv) = ((torch.cat([_tensor(b[0], f"--data {spec} input") for b in bs]),
                               torch.cat([_tensor(b[1], f"--data {spec} labels") for b in bs])) for bs in (tb, vb))
    else:
        path = Path(spec)
        if not path.exists():
            raise BadInputError(f"--data {spec}: no such file or folder (give fashion-mnist, an ImageFolder "
                                "folder, a .npz with x/y, or package.module:function)")
        if path.is_dir():
            (xt, yt), (xv, yv) = _folder(path, input_shape, seed)
        elif path.suffix == ".npz":
            (xt, yt), (xv, yv) = _npz(path, input_shape, seed)
        else:
            raise BadInputError(f"--data {spec} is a {path.suffix or 'suffix-less'} file; give fashion-mnist, an "
                                "ImageFolder folder, a .npz with x/y, or package.module:function")
    for x, y, what in ((xt, yt, "training data"), (xv, yv, "validation data")):
        _check(x, y, input_shape, f"--data {spec}: {what}")
    order = torch.randperm(len(xt), generator=torch.Generator().manual_seed(seed))
    xt, yt = xt[order[:max_train]], yt[order[:max_train]]
    return Data(_batches(xt, yt, batch_size), _batches(xv[:max_val], yv[:max_val], 500), spec)


def load_metric(spec: str | None) -> Callable[[list[Batch]], EvalFn]:
    """--eval: `package.module:function(val_batches) -> eval_fn`; default top-1."""
    if spec is None:
        return top1
    try:
        make = pkgutil.resolve_name(spec)
    except Exception as exc:
        raise BadInputError(f"--eval {spec}: {type(exc).__name__}: {exc}") from None
    if not callable(make):
        raise BadInputError(f"--eval {spec} is not callable")

    def checked(val: list[Batch]) -> EvalFn:
        try:
            fn = make(val)
        except Exception as exc:
            raise BadInputError(f"--eval {spec}(val_batches) failed: {type(exc).__name__}: {exc}") from None
        if not callable(fn):
            raise BadInputError(f"--eval {spec}(val_batches) returned a {type(fn).__name__}; it must return "
                                "eval_fn(model) -> float")
        return fn

    return checked
