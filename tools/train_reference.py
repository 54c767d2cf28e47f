"""Train the Fashion-MNIST reference models whose checkpoints ship in compiler/checkpoints/.

Train on the first 55,000 training images; the last 5,000 are the held-out split that the
search scores candidates on (never the test set); test accuracy is on the 10,000 test
images. SGD + Nesterov, one-cycle LR, random 2-pixel shifts and flips. Deterministic for a
seed on one machine. The checkpoint holds the state dict and how it was made.

    .venv/bin/python tools/train_reference.py --model resnet20_fmnist --epochs 3
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from compiler.core.atomic import atomic_path  # noqa: E402
from compiler.data import fashion_mnist, split_train  # noqa: E402
from compiler.models import CHECKPOINTS, REFERENCE, reference  # noqa: E402


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random shifts of up to 2 pixels (pad + crop) and horizontal flips, per image."""
    n = x.shape[0]
    padded = F.pad(x, (2, 2, 2, 2))
    dx, dy = torch.randint(0, 5, (2, n), generator=g)
    rows = (dy[:, None] + torch.arange(28))[:, :, None]
    cols = (dx[:, None] + torch.arange(28))[:, None, :]
    out = padded[torch.arange(n)[:, None, None], 0, rows, cols].unsqueeze(1)
    flip = torch.rand(n, generator=g) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 500) -> float:
    model.eval()
    with torch.no_grad():
        hits = sum(int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum()) for i in range(0, len(x), batch))
    return hits / len(x)


def train(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, batch: int, lr: float,
          seed: int, desc: str) -> float:
    """The reference recipe for `steps` SGD steps (epochs of shuffled batches); returns seconds."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.2)
    per_epoch = len(x) // batch
    t0 = time.perf_counter()
    bar = tqdm(total=steps, desc=desc)
    for step in range(steps):
        if step % per_epoch == 0:
            model.train()
            order = torch.randperm(len(x), generator=g)
        idx = order[(step % per_epoch) * batch:(step % per_epoch + 1) * batch]
        loss = F.cross_entropy(model(augment(x[idx], g)), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.update()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=sorted(REFERENCE), required=True)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    (xtr, ytr), (xval, yval) = split_train()
    xte, yte = fashion_mnist("test")
    torch.manual_seed(args.seed)
    model = reference(args.model, trained=False).train()
    seconds = train(model, xtr, ytr, args.epochs * (len(xtr) // args.batch), args.batch, args.lr, args.seed,
                    f"train {args.model}")
    meta = {"model": args.model, "epochs": args.epochs, "batch": args.batch, "lr": args.lr, "seed": args.seed,
            "train_images": len(xtr), "train_seconds": round(seconds, 1),
            "val_top1": accuracy(model, xval, yval), "test_top1": accuracy(model, xte, yte),
            "torch": str(torch.__version__)}
    out = args.out or CHECKPOINTS / f"{args.model}.pt"
    buf = io.BytesIO()
    torch.save({"state_dict": model.state_dict(), "meta": meta}, buf)
    with atomic_path(out) as tmp:
        tmp.write_bytes(buf.getvalue())
    print(json.dumps(meta, indent=1))


if __name__ == "__main__":
    main()
