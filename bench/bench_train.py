"""Train-step and inference time of unet and mm at 176x176, batch 1 (CPU, and CUDA if present).

Run: python bench/bench_train.py [--reps 20] [--size 176]
Prints a table of medians (and the mm / unet ratio), measured interleaved in one run so that
machine noise hits both networks alike.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mismatch.losses import soft_dice_loss
from mismatch.models import build_model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_step_time(net: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> float:
    """Seconds for forward, Dice on every decoder, backward and an Adam step."""
    _sync(x.device)
    start = time.perf_counter()
    loss = sum(soft_dice_loss(torch.sigmoid(logits), y) for logits in net(x))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    _sync(x.device)
    return time.perf_counter() - start


@torch.no_grad()
def inference_time(net: torch.nn.Module, x: torch.Tensor) -> float:
    """Seconds for one probability map (mean of the decoders' sigmoids)."""
    _sync(x.device)
    start = time.perf_counter()
    net.probabilities(x)
    _sync(x.device)
    return time.perf_counter() - start


def bench(device: torch.device, size: int, reps: int) -> list[tuple[str, str, float, float]]:
    """Median train-step and inference seconds per network on one device."""
    torch.manual_seed(0)
    x = torch.randn(1, 1, size, size, device=device)
    y = (torch.rand(1, 1, size, size, device=device) > 0.9).float()
    nets = {name: build_model(name).to(device) for name in ("unet", "mm")}
    opts = {name: torch.optim.Adam(net.parameters(), lr=2e-5) for name, net in nets.items()}
    train: dict[str, list[float]] = {n: [] for n in nets}
    infer: dict[str, list[float]] = {n: [] for n in nets}
    for rep in range(reps + 3):  # the first 3 rounds warm up (allocator, cuDNN autotune)
        for name, net in nets.items():
            net.train()
            t = train_step_time(net, opts[name], x, y)
            net.eval()
            i = inference_time(net, x)
            if rep >= 3:
                train[name].append(t)
                infer[name].append(i)
    return [(str(device), n, statistics.median(train[n]), statistics.median(infer[n])) for n in nets]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--size", type=int, default=176)
    args = parser.parse_args()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, {args.size}x{args.size}, batch 1, "
          f"median of {args.reps}")
    if torch.cuda.is_available():
        print(f"cuda: {torch.cuda.get_device_name(0)}")
    print(f"{'device':8s} {'network':8s} {'train step ms':>14s} {'inference ms':>13s}")
    for device in devices:
        rows = bench(device, args.size, args.reps)
        for dev, name, t, i in rows:
            print(f"{dev:8s} {name:8s} {t * 1e3:14.2f} {i * 1e3:13.2f}")
        (_, _, tu, iu), (_, _, tm, im) = rows
        print(f"{str(device):8s} {'mm/unet':8s} {tm / tu:14.2f}x {im / iu:12.2f}x")


if __name__ == "__main__":
    main()
