"""Reference CNNs for the benchmarks, the tests and the README's main job (factories for
`package.module:factory` model specs): a CIFAR-style ResNet-20 and a small MobileNetV2, and
the same two trained on Fashion-MNIST (checkpoints made by tools/train_reference.py)."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from .core.errors import BadInputError

CHECKPOINTS = Path(__file__).parent / "checkpoints"


class _Basic(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + (x if self.down is None else self.down(x)))


class ResNet20(nn.Module):
    """He et al.'s CIFAR ResNet (3 stages x 3 blocks, 16/32/64 wide x `width`), projection shortcuts."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 1) -> None:
        super().__init__()
        w = [16 * width, 32 * width, 64 * width]
        self.stem = nn.Sequential(nn.Conv2d(in_channels, w[0], 3, 1, 1, bias=False), nn.BatchNorm2d(w[0]),
                                  nn.ReLU(inplace=True))
        layers, cin = [], w[0]
        for i, c in enumerate(w):
            for j in range(3):
                layers.append(_Basic(cin, c, 2 if (i > 0 and j == 0) else 1))
                cin = c
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


class _Inverted(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hid = cin * expand
        self.block = nn.Sequential(
            nn.Conv2d(cin, hid, 1, bias=False), nn.BatchNorm2d(hid), nn.ReLU6(inplace=True),
            nn.Conv2d(hid, hid, 3, stride, 1, groups=hid, bias=False), nn.BatchNorm2d(hid), nn.ReLU6(inplace=True),
            nn.Conv2d(hid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


class MobileNetV2Small(nn.Module):
    """MobileNetV2's inverted residuals (expansion 6, depthwise 3x3) sized for 28x28 inputs."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32),
                                  nn.ReLU6(inplace=True))
        cfg = [(16, 1, 1), (24, 2, 2), (32, 2, 2), (64, 2, 2), (96, 1, 1)]  # (out, repeats, first stride)
        layers, cin = [], 32
        for cout, n, s in cfg:
            for j in range(n):
                layers.append(_Inverted(cin, cout, s if j == 0 else 1, 1 if cout == 16 else 6))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Conv2d(cin, 256, 1, bias=False), nn.BatchNorm2d(256), nn.ReLU6(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(256, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.head(self.layers(self.stem(x)))), 1))


def resnet20(num_classes: int = 10, in_channels: int = 3, width: int = 1) -> ResNet20:
    return ResNet20(num_classes, in_channels, width)


def mobilenet_v2_small(num_classes: int = 10, in_channels: int = 1) -> MobileNetV2Small:
    return MobileNetV2Small(num_classes, in_channels)


# Fashion-MNIST reference models. ResNet-20 is twice as wide (32/64/128) so that its groups
# have several steps on a 16-channel grid (AVX-512's block); 16/32/64 leaves stage 1 unprunable.
REFERENCE = {"resnet20_fmnist": lambda: resnet20(10, 1, width=2),
             "mobilenet_v2_small_fmnist": lambda: mobilenet_v2_small(10, 1)}


def reference(name: str, trained: bool = True) -> nn.Module:
    """A reference architecture, with the weights tools/train_reference.py trained if `trained`."""
    if name not in REFERENCE:
        raise BadInputError(f"unknown reference model {name!r}; known: {sorted(REFERENCE)}")
    model = REFERENCE[name]()
    if trained:
        path = CHECKPOINTS / f"{name}.pt"
        if not path.exists():
            raise BadInputError(f"{path} is missing; make it with tools/train_reference.py --model {name}")
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(ckpt["state_dict"])
    return model.eval()


def resnet20_fmnist() -> nn.Module:
    """ResNet-20 (width 2) trained on Fashion-MNIST; input 1x1x28x28."""
    return reference("resnet20_fmnist")


def mobilenet_v2_small_fmnist() -> nn.Module:
    """MobileNetV2Small trained on Fashion-MNIST; input 1x1x28x28."""
    return reference("mobilenet_v2_small_fmnist")
