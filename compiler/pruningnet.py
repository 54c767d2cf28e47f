"""MetaPruning's PruningNet for a trained model: weights generated from a candidate's widths.

MetaPruning (Liu et al. 2019) trains a meta network that takes a candidate's channel counts
and generates the weights of its pruned layers, so each candidate is scored with weights made
for its widths rather than weights sliced from a network trained at full width. MetaPruning
trains the generator from scratch on a full schedule; a latprune user brings a trained model
and a few minutes, so this generator is residual: every parameter the pruned graph keeps is
`pretrained + decode(relu(encode(width ratios)))`, with `decode` zero at the start. Untrained,
it gives each candidate exactly its sliced pretrained weights (what EagleEye scores); training
learns width-dependent corrections.

Training draws a random Widths per step, slices the generated tensors exactly as the rewrite
slices pretrained ones (same importance order, same keep mask: the rewrite is run once on a
copy of the graph whose parameters hold their own flat indices, so any op rule's slicing is
followed without restating it), and trains the generator by cross-entropy through the pruned
graph with BatchNorm on batch statistics. A candidate is then scored after AdaBN, as
MetaPruning recalibrates BN before evaluating. tools/bench_estimators.py measures whether
this ranks candidates better than sliced weights.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from .core.errors import BadInputError, LatpruneError
from .core.importance import select
from .core.rewrite import apply
from .core.rules.base import set_tensor
from .core.space import PruningSpace, Widths
from .data import labelled

Batch = tuple[torch.Tensor, torch.Tensor]
HIDDEN = 32  # MetaPruning's meta blocks: 32 hidden units per layer


class PruningNet(nn.Module):
    """The width-conditioned weight generator over one lowered model and its PruningSpace."""

    def __init__(self, gm: fx.GraphModule, space: PruningSpace, unit_scores: np.ndarray,
                 hidden: int = HIDDEN) -> None:
        super().__init__()
        self.space, self.unit_scores = space, unit_scores
        self.groups = space.prunable()
        if not self.groups:
            raise BadInputError("the model has no prunable channel group: a PruningNet has nothing to generate")
        named = list(gm.named_parameters())
        self.register_buffer("base", torch.cat([p.detach().float().flatten() for _, p in named]))
        self.encode = nn.Linear(len(self.groups), hidden)
        self.decode_w = nn.Parameter(torch.zeros(self.base.numel(), hidden))
        self.decode_b = nn.Parameter(torch.zeros(self.base.numel()))
        # a plain attribute, not a submodule: the probe is not trained, saved or moved
        object.__setattr__(self, "_probe", _index_probe(gm, named))
        self.train_seconds = 0.0

    def encoding(self, widths: Widths) -> torch.Tensor:
        """The network encoding vector: each prunable group's kept share of its channels."""
        return torch.tensor([widths[g.id] / g.size for g in self.groups], dtype=torch.float32)

    def structure(self, resolved: Widths) -> tuple[fx.GraphModule, dict[str, torch.Tensor]]:
        """The pruned graph for `resolved` widths (PruningSpace.resolve) and, per parameter it
        keeps, the flat indices into the unpruned parameters that its elements come from."""
        pruned = apply(self._probe, self.space, select(self.space, resolved, self.unit_scores))
        index = {}
        for name, p in pruned.named_parameters():
            flat = p.detach().flatten()
            if not torch.equal(flat, flat.round()) or (flat.numel() and not 0 <= float(flat.min()) <= float(flat.max())
                                                          < self.base.numel()):
                raise LatpruneError(f"the rewrite computes parameter {name} instead of slicing it; "
                                    "a PruningNet cannot generate it; score with weights='sliced' (--weights sliced)")
            index[name] = flat.long()
        return pruned, index

    def generated(self, widths: Widths, index: dict[str, torch.Tensor],
                  shapes: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
        """The generated parameters of the pruned graph, differentiable in the generator."""
        h = torch.relu(self.encode(self.encoding(widths)))
        flat = torch.cat(list(index.values()))
        values = self.base[flat] + self.decode_w[flat] @ h + self.decode_b[flat]
        out, start = {}, 0
        for name, idx in index.items():
            out[name] = values[start:start + idx.numel()].reshape(shapes[name])
            start += idx.numel()
        return out

    def model(self, widths: Widths) -> fx.GraphModule:
        """The pruned model for `widths` with generated weights (BN statistics still to be
        recalibrated: call AdaBN before scoring it)."""
        resolved = self.space.resolve(widths)
        pruned, index = self.structure(resolved)
        shapes = {n: p.shape for n, p in pruned.named_parameters()}
        with torch.no_grad():
            params = self.generated(resolved, index, shapes)
        for name, value in params.items():
            owner, _, leaf = name.rpartition(".")
            set_tensor(pruned.get_submodule(owner), leaf, value.clone())
        return pruned

    def fit(self, batches: Sequence[Batch], steps: int, seed: int = 0, lr: float = 1e-4, low: float = 0.2,
            high: float = 1.0, on_step: Callable[[int, float], None] | None = None) -> list[float]:
        """Train the generator for `steps` steps (one random Widths per step, shares of each
        group's channels drawn in [low, high]); returns the losses."""
        if steps < 1 or not batches:
            raise BadInputError("PruningNet training needs at least one step and one training batch")
        if not all(labelled(b) for b in batches):
            raise BadInputError("PruningNet trains on labelled batches: give training data as (input, label) "
                                "tensor pairs, or score with sliced weights")
        t0 = time.perf_counter()
        rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        opt = torch.optim.Adam(self.parameters(), lr=lr)
        losses = []
        self.train()
        for step in range(steps):
            widths = self.space.resolve(self.space.random_widths(rng, low, high))
            pruned, index = self.structure(widths)  # resolved above
            pruned.train()
            shapes = {n: p.shape for n, p in pruned.named_parameters()}
            x, y = batches[step % len(batches)]
            logits = torch.func.functional_call(pruned, self.generated(widths, index, shapes), (x,))
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if on_step is not None:
                on_step(step, losses[-1])
        self.eval()
        self.train_seconds = time.perf_counter() - t0
        return losses


def _index_probe(gm: fx.GraphModule, named: list[tuple[str, Any]]) -> fx.GraphModule:
    """A copy of `gm` whose parameters hold their own flat indices (float64, exact to 2**53)
    and whose buffers are the real ones."""
    probe = copy.deepcopy(gm)
    start = 0
    for name, p in named:
        owner, _, leaf = name.rpartition(".")
        values = torch.arange(start, start + p.numel(), dtype=torch.float64).reshape(p.shape)
        probe.get_submodule(owner)._parameters[leaf] = nn.Parameter(values, requires_grad=False)
        start += p.numel()
    return probe


def trained(gm: fx.GraphModule, space: PruningSpace, unit_scores: np.ndarray, batches: Sequence[Batch], steps: int,
            seed: int, progress: bool = False) -> PruningNet:
    """A PruningNet for the search: fitted for `steps` steps (cycling over `batches`), seeded."""
    torch.manual_seed(seed)  # the generator's initialisation
    pn = PruningNet(gm, space, unit_scores)
    with tqdm(total=steps, desc="PruningNet", disable=not progress, leave=False) as bar:
        pn.fit(batches, steps, seed=seed, on_step=lambda _, loss: (bar.update(), bar.set_postfix(loss=f"{loss:.3f}")))
    return pn
