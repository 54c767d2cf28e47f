"""Hand-written nets, one per construct the analysis must handle (issue 2's list)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def cbr(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU())


class Residual(nn.Module):
    """add, sub, projection shortcut, in-place add."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 16)
        self.a = cbr(16, 16)
        self.b = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.proj = nn.Conv2d(16, 24, 1, stride=2)
        self.c = cbr(16, 24, stride=2)
        self.head = nn.Linear(24, 5)

    def forward(self, x):
        x = self.stem(x)
        y = self.b(self.a(x)) + x
        y = F.relu(y) - 0.1 * x
        z = self.c(y)
        z += self.proj(y)
        return self.head(z.mean((2, 3)))


class SqueezeExcite(nn.Module):
    """SE: broadcast multiply by a gate computed through conv and through flatten+linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 32)
        self.fc1 = nn.Conv2d(32, 8, 1)
        self.fc2 = nn.Conv2d(8, 32, 1)
        self.dw = cbr(32, 32, groups=32)
        self.lin1 = nn.Linear(32, 12)
        self.lin2 = nn.Linear(12, 32)
        self.spatial = nn.Conv2d(32, 1, 1)
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        x = self.stem(x)
        s = F.adaptive_avg_pool2d(x, 1)
        x = x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))
        x = self.dw(x)
        g = self.lin2(F.relu(self.lin1(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))))
        x = x * F.hardsigmoid(g).view(x.size(0), -1, 1, 1)
        x = x * torch.sigmoid(self.spatial(x))  # a one-channel gate broadcast over channels
        return self.head(x.amax(dim=(2, 3)))


class ConcatSplit(nn.Module):
    """torch.cat offsets, split with sizes, chunk, and slicing channels with getitem."""

    def __init__(self) -> None:
        super().__init__()
        self.a = cbr(3, 12)
        self.b = cbr(3, 20)
        self.c = cbr(32, 24)
        self.d = cbr(10, 10)
        self.e = cbr(12, 16)
        self.f = cbr(8, 8)
        self.head = nn.Linear(8 + 8 + 10 + 8, 3)

    def forward(self, x):
        y = torch.cat([self.a(x), self.b(x)], dim=1)
        y = self.c(y)
        p, q = torch.split(y, [14, 10], dim=1)
        q = self.d(q)
        r = self.e(p[:, 2:14])
        s, t = r.chunk(2, dim=1)
        out = torch.cat((self.f(s), t, q), 1)
        out = torch.cat([out, r[:, :8]], dim=1)
        return self.head(F.adaptive_avg_pool2d(out, 1).flatten(1))


class Grouped(nn.Module):
    """grouped conv, depthwise with a channel multiplier, transposed conv."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 32)
        self.g = cbr(32, 32, groups=4)
        self.dw2 = nn.Conv2d(32, 64, 3, padding=1, groups=32)
        self.bn = nn.BatchNorm2d(64)
        self.up = nn.ConvTranspose2d(64, 16, 2, stride=2)
        self.head = nn.Linear(16, 6)

    def forward(self, x):
        x = self.g(self.stem(x))
        x = F.relu6(self.bn(self.dw2(x)))
        x = F.max_pool2d(x, 2)
        x = F.leaky_relu(self.up(x))
        return self.head(x.mean(dim=(-1, -2)))


class Norms1d(nn.Module):
    """Conv1d, BatchNorm1d, GroupNorm (pruned a norm group at a time), InstanceNorm,
    per-channel PReLU, LayerNorm over the length (sound) and over the channels (frozen)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(4, 24, 3, padding=1)
        self.bn = nn.BatchNorm1d(24)
        self.c2 = nn.Conv1d(24, 32, 3, padding=1)
        self.gn = nn.GroupNorm(8, 32)
        self.act = nn.PReLU(32)
        self.c3 = nn.Conv1d(32, 16, 1)
        self.inorm = nn.InstanceNorm1d(16, affine=True)
        self.ln_len = nn.LayerNorm(20)
        self.c4 = nn.Conv1d(16, 12, 1)
        self.ln_ch = nn.LayerNorm(12)
        self.head = nn.Linear(12, 2)

    def forward(self, x):
        x = F.gelu(self.bn(self.c1(x)))
        x = self.act(self.gn(self.c2(x)))
        x = self.ln_len(self.inorm(self.c3(x)))
        x = self.ln_ch(self.c4(x).transpose(1, 2))  # (N, L, C): normalised over channels
        return self.head(x.mean(1))


class Spatial(nn.Module):
    """upsample/interpolate, adaptive and plain pools, dropout, identity, padding."""

    def __init__(self) -> None:
        super().__init__()
        self.a = cbr(3, 16)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.pool = nn.AvgPool2d(2)
        self.drop = nn.Dropout2d(0.2)
        self.ident = nn.Identity()
        self.b = cbr(16, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        x = self.drop(self.ident(self.a(x)))
        x = self.pool(self.up(x))
        x = F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False)
        x = F.pad(self.b(x), (1, 1, 1, 1))
        return self.head(nn.functional.adaptive_max_pool2d(x, 1).squeeze(-1).squeeze(-1))


class FlattenLinear(nn.Module):
    """flatten/view into Linear with spatial size > 1: dynamic and literal view sizes."""

    def __init__(self) -> None:
        super().__init__()
        self.a = cbr(3, 16)
        self.b = cbr(16, 8)
        self.fc1 = nn.Linear(16 * 4 * 4, 20)
        self.fc2 = nn.Linear(8 * 4 * 4, 20)
        self.out = nn.Linear(20, 3)

    def forward(self, x):
        a = F.adaptive_avg_pool2d(self.a(x), 4)
        b = F.adaptive_avg_pool2d(self.b(self.a(x)), 4)
        h = self.fc1(a.view(a.size(0), -1)) + self.fc2(b.reshape(-1, 128))
        return self.out(F.relu(h))


class Shuffle(nn.Module):
    """channel shuffle by view-transpose-view, with literal group count, and nn.ChannelShuffle."""

    def __init__(self) -> None:
        super().__init__()
        self.a = cbr(3, 8)
        self.b = cbr(3, 8)
        self.c = cbr(16, 16)
        self.shuffle = nn.ChannelShuffle(2)
        self.d = cbr(16, 12)
        self.head = nn.Linear(12, 3)

    def forward(self, x):
        y = torch.cat([self.a(x), self.b(x)], 1)
        n, c, h, w = y.shape
        y = y.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)
        y = self.d(self.shuffle(self.c(y)))
        return self.head(y.mean((2, 3)))


class SharedAndParam(nn.Module):
    """one conv applied twice (shared weights) and a per-channel parameter (layer scale)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = cbr(3, 16)
        self.shared = nn.Conv2d(16, 16, 3, padding=1)
        self.gamma = nn.Parameter(torch.linspace(0.5, 1.5, 16))
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        x = self.a(x)
        y = F.relu(self.shared(x))
        y = self.shared(y) * self.gamma.view(1, -1, 1, 1)
        return self.head(y.mean((2, 3)))


class Unsupported(nn.Module):
    """an op with no rule (cumsum over channels) must freeze what it touches, nothing else."""

    def __init__(self) -> None:
        super().__init__()
        self.a = cbr(3, 16)
        self.b = cbr(16, 16)
        self.c = cbr(16, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        x = torch.cumsum(self.b(self.a(x)), dim=1)
        return self.head(self.c(x).mean((2, 3)))


NETS = {
    "residual": (Residual, (2, 3, 16, 16)),
    "squeeze_excite": (SqueezeExcite, (2, 3, 16, 16)),
    "concat_split": (ConcatSplit, (2, 3, 16, 16)),
    "grouped": (Grouped, (2, 3, 16, 16)),
    "norms_1d": (Norms1d, (2, 4, 20)),
    "spatial": (Spatial, (2, 3, 16, 16)),
    "flatten_linear": (FlattenLinear, (2, 3, 16, 16)),
    "shuffle": (Shuffle, (2, 3, 16, 16)),
    "shared_and_param": (SharedAndParam, (2, 3, 16, 16)),
    "unsupported": (Unsupported, (2, 3, 16, 16)),
}


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = cbr(3, 8)
        self.gate = Gate()
        self.b = cbr(8, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.b(self.gate(self.a(x))).mean((2, 3)))


class Gate(nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: fx cannot trace this
            return x
        return -x
