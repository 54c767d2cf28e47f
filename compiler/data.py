"""Real data for the reference models: Fashion-MNIST from Debian's `dataset-fashion-mnist`
(gzipped IDX files; 60k train / 10k test, 28x28 grey, 10 classes), and what a labelled batch
is for every pass that scores or trains."""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

from .core.errors import BadInputError

FASHION_MNIST = Path(os.environ.get("LATPRUNE_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
          "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def labelled(batch: object) -> bool:
    """Whether a batch is an (input, label) pair of tensors, as scoring and training need."""
    return isinstance(batch, (tuple, list)) and len(batch) == 2 and all(isinstance(t, torch.Tensor) for t in batch)


def read_idx(path: Path) -> np.ndarray:
    """An IDX array (the MNIST file format: magic, dims, big-endian sizes, raw data)."""
    with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise BadInputError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise BadInputError(f"{path} is truncated: {body.size} values for dims {dims}")
    return body.reshape(dims)


def fashion_mnist(split: str = "train", root: Path = FASHION_MNIST) -> tuple[torch.Tensor, torch.Tensor]:
    """(images as float N x 1 x 28 x 28 normalised to mean 0 / std 1 over the train set, labels)."""
    if split not in _FILES:
        raise BadInputError(f"split must be 'train' or 'test', got {split!r}")
    paths = [Path(root) / f for f in _FILES[split]]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise BadInputError(f"Fashion-MNIST not found ({missing[0]}); apt-get install dataset-fashion-mnist "
                            "or set LATPRUNE_FASHION_MNIST to its folder")
    images, labels = (read_idx(p) for p in paths)
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return (x - 0.2860) / 0.3530, torch.from_numpy(labels.astype(np.int64))


HELD_OUT = 5000  # the last images of the training split: what the search scores on


def split_train(root: Path = FASHION_MNIST) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """((train x, y), (held-out x, y)): the reference models never train on the held-out split,
    so the search's fitness is measured on data they have not seen, and the test set stays untouched."""
    x, y = fashion_mnist("train", root)
    return (x[:-HELD_OUT], y[:-HELD_OUT]), (x[-HELD_OUT:], y[-HELD_OUT:])
