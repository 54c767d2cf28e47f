"""--data and --eval: every accepted form on real images, and malformed data as clear errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from compiler import BadInputError
from compiler.data import split_train
from compiler.dataspec import load_data, load_metric
from compiler.models import reference

SHAPE = (1, 1, 28, 28)


def image_folder(root, n_per_class: int = 6, classes: int = 3, colour: bool = False):
    """Real Fashion-MNIST images as PNG files, one sub-folder per class."""
    (x, y), _ = split_train()
    for c in range(classes):
        d = root / f"class{c}"
        d.mkdir(parents=True)
        for i, img in enumerate(x[y == c][:n_per_class]):
            a = (img[0].numpy() * 255).astype(np.uint8)
            rgb = np.stack([a, a // 2, 255 - a], -1) if colour else a
            Image.fromarray(rgb).save(d / f"{i}.png")
    return root


def test_image_folder_with_and_without_a_val_split(tmp_path) -> None:
    image_folder(tmp_path / "plain")
    d = load_data(str(tmp_path / "plain"), SHAPE, batch_size=4)
    assert sum(len(y) for _, y in d.train) + sum(len(y) for _, y in d.val) == 18
    assert d.train[0][0].shape[1:] == (1, 28, 28) and set(torch.cat([y for _, y in d.train]).tolist()) <= {0, 1, 2}
    image_folder(tmp_path / "split" / "train")
    image_folder(tmp_path / "split" / "val", n_per_class=2)
    d = load_data(str(tmp_path / "split"), SHAPE)
    assert sum(len(y) for _, y in d.val) == 6


def test_image_folder_keeps_colour_for_a_3_channel_model(tmp_path) -> None:
    image_folder(tmp_path / "c", colour=True)
    x = load_data(str(tmp_path / "c"), (1, 3, 32, 32)).train[0][0]
    assert x.shape[1:] == (3, 32, 32) and not torch.allclose(x[:, 0], x[:, 2])  # not grey


def test_function_spec_and_custom_metric() -> None:
    d = load_data("data_fns:loaders", SHAPE)
    assert sum(len(y) for _, y in d.train) == 200 and sum(len(y) for _, y in d.val) == 100
    score = load_metric("data_fns:top3")(d.val)
    top3 = score(reference("mobilenet_v2_small_fmnist"))
    assert 0.9 < top3 <= 1.0  # the trained model's top-3 on real images


@pytest.mark.parametrize("case, match", [
    ("corrupt_image", "cannot read image"), ("not_a_folder", "ImageFolder"), ("npz_keys", "'x' and 'y'"),
    ("npz_float_labels", "integer class labels"), ("npz_not_npz", "cannot read"), ("fn_shape", "must return"),
    ("fn_missing", "data_fns"), ("batch_size", "positive"), ("metric_missing", "--eval"),
    ("folder_shape", "1 or 3")])
def test_malformed_data_is_a_clear_error(case, match, tmp_path) -> None:
    x = np.zeros((8, 1, 28, 28), np.float32)
    if case == "corrupt_image":
        root = image_folder(tmp_path / "f")
        (root / "class1" / "0.png").write_bytes(b"not a png")
        call = lambda: load_data(str(root), SHAPE)  # noqa: E731
    elif case == "not_a_folder":
        (tmp_path / "empty").mkdir()
        call = lambda: load_data(str(tmp_path / "empty"), SHAPE)  # noqa: E731
    elif case in ("npz_keys", "npz_float_labels"):
        path = tmp_path / "d.npz"
        np.savez(path, **({"x": x} if case == "npz_keys" else {"x": x, "y": np.zeros(8, np.float32)}))
        call = lambda: load_data(str(path), SHAPE)  # noqa: E731
    elif case == "npz_not_npz":
        (tmp_path / "d.npz").write_text("hello")
        call = lambda: load_data(str(tmp_path / "d.npz"), SHAPE)  # noqa: E731
    elif case == "fn_shape":
        call = lambda: load_data("data_fns:not_a_pair", SHAPE)  # noqa: E731
    elif case == "fn_missing":
        call = lambda: load_data("data_fns:nothing_here", SHAPE)  # noqa: E731
    elif case == "batch_size":
        call = lambda: load_data("data_fns:loaders", SHAPE, batch_size=0)  # noqa: E731
    elif case == "metric_missing":
        call = lambda: load_metric("data_fns:nope")  # noqa: E731
    else:
        root = image_folder(tmp_path / "g")
        call = lambda: load_data(str(root), (1, 4, 28, 28))  # noqa: E731
    with pytest.raises(BadInputError, match=match):
        call()
