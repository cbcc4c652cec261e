"""Time one 3D training step of a 3D network at the LA patch size (issue 15, closing note).

Run: python bench/bench_3d_step.py [--model mm3d] [--width 16] [--batch 2] [--patch 80 112 112]
                                   [--steps 3] [--warmup 1] [--device cpu|cuda] [--out-channels 1]

One step is what a MisMatch step on a labelled batch costs: forward of the network on a
``(batch, 1, D, H, W)`` patch, a soft Dice loss on each decoder's sigmoid plus the decoders'
MSE consistency, backward, and an Adam update (lr 1e-3). Random inputs and labels (the cost of
a step does not depend on them). Prints every step's wall seconds, the median over ``--steps``
timed steps (after ``--warmup`` untimed ones), the median CPU seconds of the process per step
(on a shared machine wall time / CPU time says how much of the cores the step got), the
parameter count and the peak memory (CUDA: ``max_memory_allocated``; CPU: the process's peak
resident set).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time

import torch

from mismatch.models import build_model


def _loss(logits: list[torch.Tensor], label: torch.Tensor) -> torch.Tensor:
    """Soft Dice (smoothing 1) per decoder + MSE between the first two decoders' probabilities."""
    probs = [torch.sigmoid(z) for z in logits]
    dice = [1 - (2 * (p * label).sum() + 1) / (p.sum() + label.sum() + 1) for p in probs]
    consistency = torch.mean((probs[0] - probs[-1]) ** 2)
    return torch.stack(dice).sum() + 0.002 * consistency


def _peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="mm3d")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--patch", type=int, nargs=3, default=[80, 112, 112], metavar=("D", "H", "W"))
    parser.add_argument("--out-channels", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3, help="timed steps (default: 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default: 1)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    torch.manual_seed(0)
    net = build_model(args.model, in_channels=1, width=args.width, out_channels=args.out_channels).to(device)
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3)
    image = torch.randn(args.batch, 1, *args.patch, device=device)
    label = (torch.rand(args.batch, 1, *args.patch, device=device) > 0.8).float()
    n_params = sum(p.numel() for p in net.parameters())
    print(f"{args.model} width {args.width}: {n_params:,} parameters; batch {args.batch} x "
          f"{'x'.join(map(str, args.patch))} on {device} ({torch.get_num_threads()} CPU threads)", flush=True)

    times, cpu_times = [], []
    for step in range(args.warmup + args.steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        optimiser.zero_grad(set_to_none=True)
        _loss(net(image), label).backward()
        optimiser.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        timed = step >= args.warmup
        if timed:
            times.append(seconds)
            cpu_times.append(cpu_seconds)
        print(f"step {step + 1}{'' if timed else ' (warm-up)'}: {seconds:.3f} s ({cpu_seconds:.1f} CPU s)",
              file=sys.stderr, flush=True)
    print(f"median step: {statistics.median(times):.3f} s over {len(times)} steps "
          f"({statistics.median(cpu_times):.1f} CPU s); peak memory {_peak_memory_gib(device):.2f} GiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
