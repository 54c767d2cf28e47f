"""Fail fast on size: estimate a build's memory from the lowered graph before any real work.

Shapes come from the fake-tensor propagation that lowering already did, so the estimate costs
nothing and allocates nothing. A forward holds the weights plus the activations that are alive
at once (walked in graph order, freed after their last use); a backward (the KD fine-tune) keeps
every activation of a batch, twice (values and gradients), plus the teacher and optimiser state.
Profiling and verification hold the model in PyTorch and in the engine at the same time.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch
import torch.fx as fx

from .errors import BadInputError

_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
ENGINE_COPIES = 3  # PyTorch model, exported graph, engine session


def _bytes(meta: object) -> int:
    """Bytes of a node's value: a tensor's, or the sum over a tuple/list of tensors."""
    if isinstance(meta, (list, tuple)) and not hasattr(meta, "shape"):
        return sum(_bytes(m) for m in meta)
    shape, dtype = getattr(meta, "shape", None), getattr(meta, "dtype", None)
    if shape is None or dtype is None:
        return 0
    n = 1
    for s in shape:
        n *= int(s)
    return n * torch.empty((), dtype=dtype).element_size()


@dataclass(frozen=True)
class Footprint:
    """One forward at the example inputs' batch: weights, peak live activations, all activations."""

    batch: int
    weights: int
    peak_activations: int
    all_activations: int

    def forward(self, batch: int) -> int:
        return self.weights + self.peak_activations * batch // self.batch

    def training(self, batch: int) -> int:
        return 4 * self.weights + 2 * self.all_activations * batch // self.batch


def footprint(gm: fx.GraphModule) -> Footprint:
    """Walk the graph once: an activation lives from its node until its last user."""
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    last_use = {n: max((order[u] for u in n.users), default=order[n]) for n in gm.graph.nodes}
    sizes = {n: _bytes(n.meta.get("tensor_meta")) for n in gm.graph.nodes}
    live = peak = 0
    ending: dict[int, int] = {}
    for n in gm.graph.nodes:
        live += sizes[n]
        peak = max(peak, live)
        ending[last_use[n]] = ending.get(last_use[n], 0) + sizes[n]
        live -= ending.pop(order[n], 0)
    weights = sum(t.numel() * t.element_size() for t in gm.state_dict().values())
    shapes = gm.meta.get("example_shapes") or [[1]]
    return Footprint(max(int(shapes[0][0]) if shapes[0] else 1, 1), weights, peak, sum(sizes.values()))


def parse_size(text: str | int | None) -> int | None:
    """'16G', '512MB', '2.5g', an int (bytes), or 'none' (no limit) -> bytes or None."""
    if text is None or isinstance(text, int):
        return text
    if text.strip().lower() in ("none", "off"):
        return None
    m = _SIZE.match(text)
    if not m:
        raise BadInputError(f"cannot read memory size {text!r}; write e.g. 16G, 512M or none")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def available() -> int:
    """Memory this process can still use: MemAvailable on Linux, else the physical total."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _gb(n: int) -> str:
    return f"{n / 2**30:.2f} GB"


def check_fits(gm: fx.GraphModule, limit: str | int | None = "auto", train_batch: int | None = None,
               finetune: bool = False, workers: int = 1, generator_width: int = 0) -> int:
    """Refuse (BadInputError) a build whose estimate exceeds `limit` ('auto': 90% of available
    memory; None: no check). Search workers each hold the model and run its forward at once.
    `generator_width` > 0: a PruningNet with that hidden width is trained (its decode layer has
    (width + 1) values per model weight, held with their gradients and Adam's two moments).
    Returns the estimate in bytes."""
    fp = footprint(gm)
    need = ENGINE_COPIES * fp.forward(fp.batch)
    parts = [f"{ENGINE_COPIES} copies of a forward at batch {fp.batch} ({_gb(fp.forward(fp.batch))} each)"]
    if train_batch:
        need = max(need, fp.forward(train_batch))
        if finetune:
            need = max(need, fp.training(train_batch))
            parts.append(f"fine-tuning at batch {train_batch} ({_gb(fp.training(train_batch))})")
    if workers > 1:
        need = max(need, (workers + 1) * fp.forward(train_batch or fp.batch))
        parts.append(f"{workers} search workers and this process each running a forward "
                     f"({_gb(fp.forward(train_batch or fp.batch))} each)")
    if generator_width:
        generator = 4 * fp.weights * (generator_width + 1)
        need = max(need, generator + fp.training(train_batch or fp.batch))
        parts.append(f"training a PruningNet ({_gb(generator)} for its generator and optimiser state)")
    cap = int(0.9 * available()) if limit == "auto" else parse_size(limit)
    if cap is not None and need > cap:
        raise BadInputError(
            f"this build needs about {_gb(need)} of memory ({'; '.join(parts)}; weights {_gb(fp.weights)}, "
            f"peak activations {_gb(fp.peak_activations)}), over the limit of {_gb(cap)}. Use a smaller "
            "--input-shape or --batch-size, fewer --workers, --weights sliced, or raise the limit with --memory-limit (e.g. 64G, or none)")
    return need
