"""Property: on random CNN graphs with random Widths, pruned == masked original."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import HealthCheck, example, given, settings, strategies as st

import compiler
from helpers import check_masked_equivalence, randomize_norms


class RandomNet(nn.Module):
    """Interprets a program of ops over a growing list of same-resolution tensors."""

    def __init__(self, program: list[tuple], convs: dict[str, tuple[int, int, int]], head_in: int) -> None:
        super().__init__()
        self.program = program
        self.convs = nn.ModuleDict({k: nn.Sequential(nn.Conv2d(i, o, 3, padding=1, groups=g), nn.BatchNorm2d(o), nn.ReLU())
                                    for k, (i, o, g) in convs.items()})
        self.head = nn.Linear(head_in, 3)

    def forward(self, x):
        ts = [x]
        for op, *a in self.program:
            if op == "conv":
                ts.append(self.convs[a[0]](ts[a[1]]))
            elif op == "add":
                ts.append(ts[a[0]] + ts[a[1]])
            elif op == "mul":
                ts.append(ts[a[0]] * torch.sigmoid(F.adaptive_avg_pool2d(ts[a[1]], 1)))
            elif op == "cat":
                ts.append(torch.cat([ts[a[0]], ts[a[1]]], 1))
            elif op == "split":
                parts = torch.split(ts[a[0]], [a[1], ts[a[0]].shape[1] - a[1]], dim=1)
                ts.extend([parts[0], parts[1]])
            elif op == "shuffle":
                n, c, h, w = ts[a[0]].shape
                ts.append(ts[a[0]].view(n, a[1], c // a[1], h, w).transpose(1, 2).reshape(n, c, h, w))
        return self.head(ts[-1].mean((2, 3)))


@st.composite
def random_net(draw):
    chans = [3]
    program, convs = [], {}
    for step in range(draw(st.integers(2, 9))):
        kind = draw(st.sampled_from(["conv", "conv", "add", "mul", "cat", "split", "shuffle"]))
        i = draw(st.integers(0, len(chans) - 1))
        c = chans[i]
        if kind == "conv" or i == 0 or len(chans) < 3:
            groups = draw(st.sampled_from([1, 1, c, 2])) if i else 1
            if groups == 2 and c % 2:
                groups = 1
            out = c if groups == c else draw(st.integers(2, 12)) * (2 if groups == 2 else 1)
            convs[f"c{step}"] = (c, out, groups)
            program.append(("conv", f"c{step}", i))
            chans.append(out)
            continue
        j = draw(st.integers(1, len(chans) - 1))
        if kind == "add" and chans[j] == c:
            program.append(("add", i, j)); chans.append(c)
        elif kind == "mul" and chans[j] == c:
            program.append(("mul", i, j)); chans.append(c)
        elif kind == "cat":
            program.append(("cat", i, j)); chans.append(c + chans[j])
        elif kind == "split" and c >= 2:
            k = draw(st.integers(1, c - 1))
            program.append(("split", i, k)); chans.extend([k, c - k])
        elif kind == "shuffle" and c > 1 and any(c % g == 0 for g in (2, 3, 4)):
            g = draw(st.sampled_from([g for g in (2, 3, 4) if c % g == 0]))
            program.append(("shuffle", i, g)); chans.append(c)
    if len(chans) == 1:
        convs["last"] = (chans[-1], 4, 1)
        program.append(("conv", "last", len(chans) - 1)); chans.append(4)
    seed = draw(st.integers(0, 2**16))
    return program, convs, chans[-1], seed


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_net())
@example(([("conv", "c0", 0), ("conv", "c1", 0), ("shuffle", 1, 2), ("conv", "c3", 0)],
          {"c0": (3, 2, 1), "c1": (3, 2, 1), "c3": (3, 2, 1)}, 2, 1))  # view(n, 2, c // 2) with c == 2
@example(([("conv", "c0", 0), ("conv", "c1", 0), ("conv", "c2", 0), ("conv", "c3", 0), ("cat", 4, 1),
           ("conv", "c6", 0), ("shuffle", 5, 2)],
          {"c0": (3, 4, 1), "c1": (3, 2, 1), "c2": (3, 3, 1), "c3": (3, 2, 1), "c6": (3, 2, 1)}, 6, 0))
# a shuffle over cat(c3: 2, c0: 4), c3 made later, beside convs whose widths make the plan prune
def test_random_graph_pruned_equals_masked(spec):
    program, convs, head_in, seed = spec
    torch.manual_seed(seed)
    model = randomize_norms(RandomNet(program, convs, head_in), seed)
    x = torch.randn(2, 3, 6, 6)
    gm = compiler.lower(model, x)
    space = compiler.analyze(gm)
    rng = np.random.default_rng(seed)
    widths = {g.id: int(rng.integers(1, g.size + 1)) for g in space.prunable()}
    check_masked_equivalence(model, x, widths, gm=gm, space=space)
