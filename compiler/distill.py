"""Pass 6 (optional): fine-tune the pruned model with knowledge distillation from the original.

The unpruned model is the teacher: the student matches its softened outputs (Hinton et al.)
as well as the labels, which recovers more accuracy per step than labels alone after pruning.
"""
from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from .core.errors import BadInputError
from .data import labelled
from .dataspec import Batch


def finetune(student: nn.Module, teacher: nn.Module, train: list[Batch], epochs: float, lr: float = 0.01,
             temperature: float = 4.0, alpha: float = 0.7, seed: int = 0, progress: bool = True) -> nn.Module:
    """A fine-tuned copy of `student`: SGD + cosine LR over `epochs` passes of `train`, loss
    alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * cross-entropy."""
    teacher.eval()

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            soft = F.log_softmax(teacher(x) / temperature, 1)
        out = model(x)
        kd = F.kl_div(F.log_softmax(out / temperature, 1), soft, log_target=True, reduction="batchmean")
        return alpha * temperature ** 2 * kd + (1 - alpha) * F.cross_entropy(out, y)

    return sgd_fit(student, train, epochs, loss, lr, seed, "fine-tune (KD)", progress)


def sgd_fit(model: nn.Module, train: list[Batch], epochs: float, loss: Callable[[nn.Module, torch.Tensor, torch.Tensor],
            torch.Tensor], lr: float, seed: int, desc: str, progress: bool,
            before_step: Callable[[nn.Module], None] | None = None) -> nn.Module:
    """A trained copy of `model`: SGD with momentum and cosine LR over `epochs` passes of `train`
    (batches in a seeded order); `before_step` may edit the gradients (sparsity training)."""
    model = copy.deepcopy(model).train()
    steps = max(1, round(epochs * len(train)))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(seed)
    order = torch.cat([torch.randperm(len(train), generator=g) for _ in range(int(epochs) + 1)])[:steps]
    for i in tqdm(order.tolist(), desc=desc, disable=not progress, leave=False):
        if not labelled(train[i]):
            raise BadInputError(f"{desc} needs labelled (input, label) training batches")
        opt.zero_grad(set_to_none=True)
        loss(model, *train[i]).backward()
        if before_step is not None:
            before_step(model)
        opt.step()
        sched.step()
    return model.eval()
