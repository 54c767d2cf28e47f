"""Model families held out from latprune's development, trained on Fashion-MNIST on first use.

The two reference models (ResNet-20, MobileNetV2-small) are what the methods and defaults were
built and tuned on; a benchmark's final numbers should also come from a family nobody tuned
to. These are torchvision architectures with a one-channel stem, trained with the reference
recipe (tools/train_reference.py: 3 epochs, SGD + Nesterov, one-cycle LR, seed 0, one thread) on the same
55,000 training images. The checkpoint is cached under build/heldout/ (written atomically; read
with weights_only=True), so a rerun reuses it. The same recipe gives a different checkpoint on
another CPU (its kernels sum in another order): 0.894 test top-1 (first 2,000 test images) on an
Intel Xeon host, 0.873 on an AMD EPYC one; a benchmark records the unpruned accuracy beside its
own numbers.

    .venv/bin/python tools/heldout_fmnist.py shufflenet_v2_x0_5_fmnist   # train (or load) and print test top-1
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import torch
import torchvision
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from compiler.core.atomic import atomic_path  # noqa: E402
from compiler.data import split_train  # noqa: E402
from compiler.models import reference  # noqa: E402
from train_reference import train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1] / "build" / "heldout"
EPOCHS, BATCH, LR, SEED = 3, 128, 0.2, 0


def _shufflenet_v2_x0_5() -> nn.Module:
    """Channel split, concat and shuffle, depthwise convs: no residual add, unlike both references.
    The stem takes one channel and keeps its stride-2 conv but not the max-pool (28 x 28 input)."""
    m = torchvision.models.shufflenet_v2_x0_5(num_classes=10)
    m.conv1[0] = nn.Conv2d(1, 24, 3, 2, 1, bias=False)
    m.maxpool = nn.Identity()
    return m


HELDOUT: dict[str, Callable[[], nn.Module]] = {"shufflenet_v2_x0_5_fmnist": _shufflenet_v2_x0_5}


def heldout(name: str) -> nn.Module:
    """The trained held-out model `name`, in eval mode: from build/heldout/, else trained now."""
    if name not in HELDOUT:
        raise SystemExit(f"unknown held-out model {name!r}; known: {', '.join(sorted(HELDOUT))}")
    path = ROOT / f"{name}.pt"
    torch.manual_seed(SEED)
    model = HELDOUT[name]()
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    (xtr, ytr), _ = split_train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same checkpoint on any machine of this kind, and no oversubscription
    try:
        train(model, xtr, ytr, EPOCHS * (len(xtr) // BATCH), BATCH, LR, SEED, f"train {name}")
    finally:
        torch.set_num_threads(threads)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(model.state_dict(), tmp)
    return model.eval()


def bench_model(name: str) -> nn.Module:
    """A benchmark's model by name, in eval mode: a reference model, or a held-out one."""
    return heldout(name) if name in HELDOUT else reference(name).eval()


if __name__ == "__main__":
    import compiler
    from compiler.data import fashion_mnist
    from bench_search import batches

    xte, yte = fashion_mnist("test")
    for n in sys.argv[1:] or sorted(HELDOUT):
        print(n, compiler.top1(batches(xte, yte, len(xte)))(heldout(n)))
