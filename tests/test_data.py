"""Fashion-MNIST is read from the Debian package's IDX files, and bad files are refused."""
from __future__ import annotations

import gzip

import pytest
import torch

import compiler
from compiler.data import FASHION_MNIST, fashion_mnist, read_idx


@pytest.mark.skipif(not FASHION_MNIST.exists(), reason="needs Debian's dataset-fashion-mnist (tools/setup.sh installs it)")
def test_fashion_mnist_is_the_real_dataset() -> None:
    x, y = fashion_mnist("test")
    assert x.shape == (10000, 1, 28, 28) and y.shape == (10000,)
    assert torch.bincount(y).tolist() == [1000] * 10  # the test split is balanced
    assert abs(float(x.mean())) < 0.1 and 0.8 < float(x.std()) < 1.2


def test_bad_idx_files_are_refused(tmp_path) -> None:
    p = tmp_path / "bad.gz"
    with gzip.open(p, "wb") as f:
        f.write(b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + b"\x01\x02")
    with pytest.raises(compiler.BadInputError, match="truncated"):
        read_idx(p)
    with gzip.open(p, "wb") as f:
        f.write(b"PK\x03\x04")
    with pytest.raises(compiler.BadInputError, match="not an unsigned-byte IDX"):
        read_idx(p)
    with pytest.raises(compiler.BadInputError, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist("train", root=tmp_path)
