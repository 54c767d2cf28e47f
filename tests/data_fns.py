"""--data and --eval given as package.module:function, for tests/test_dataspec.py."""
from __future__ import annotations

from typing import Any

import torch

from compiler.data import split_train


def loaders() -> tuple[list[Any], list[Any]]:
    """(train, val) lists of (input, label) batches of real Fashion-MNIST images."""
    (xt, yt), (xv, yv) = split_train()
    return [(xt[i:i + 50], yt[i:i + 50]) for i in range(0, 200, 50)], [(xv[:100], yv[:100])]


def not_a_pair() -> list[Any]:
    return [1, 2, 3]


def top3(val: list[Any]) -> Any:
    """A metric factory: top-3 accuracy on the validation batches."""
    def score(model: torch.nn.Module) -> float:
        with torch.no_grad():
            hits = sum(int((model(x).topk(3, dim=1).indices == y[:, None]).any(1).sum()) for x, y in val)
        return hits / sum(len(y) for _, y in val)
    return score


def a_string(val: list[Any]) -> str:
    """An --eval factory that returns a string instead of eval_fn."""
    return "accuracy"


def scores_a_string(val: list[Any]) -> Any:
    """An --eval factory whose eval_fn returns a string instead of a number."""
    return lambda model: "0.9"


def numpy_loaders() -> tuple[list[Any], list[Any]]:
    """(train, val) batches as numpy arrays, as many data pipelines yield them."""
    return [(x.numpy(), y.numpy()) for x, y in loaders()[0]], [(x.numpy(), y.numpy()) for x, y in loaders()[1]]
