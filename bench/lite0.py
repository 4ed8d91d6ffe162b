"""The frozen EfficientNet-Lite0 as training runs it (the perceptual pull, `--match-perceptual`, and D's
critics, `--d-lite0`): its first stages' forward and the backward to the image, channels-first against
channels-last, alternated in one run so that a noisy shared machine slows both alike.

    python bench/lite0.py [--batch 8] [--resolution 64] [--stages 4] [--repeats 6] [--device cpu]

Prints the median ms a call for each layout, their ratio, and one JSON line. Needs the Lite0 package's
weights (the `lite0` extra).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gan.losses import feature_distance  # noqa: E402
from gan.metrics.fid import MetricUnavailable  # noqa: E402
from gan.metrics.lite0 import STAGES, load, to_input_range  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=8, help="images a call (the pull's matched half of batch 16)")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--stages", type=int, default=4, help=f"the network's first N stages (1-{len(STAGES)})")
    ap.add_argument("--repeats", type=int, default=6, help="timed rounds; each runs both layouts 10 times")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if min(args.batch, args.repeats) < 1 or args.resolution < 16 or not 1 <= args.stages <= len(STAGES):
        ap.error(f"--batch and --repeats must be at least 1, --resolution at least 16, --stages 1 to {len(STAGES)}")
    try:
        dev = torch.device(args.device)
        torch.empty(1, device=dev)
    except (RuntimeError, AssertionError) as e:
        ap.error(f"--device {args.device}: {str(e).splitlines()[0]}")
    torch.manual_seed(0)
    try:
        nets = {"channels_first": load().to(dev), "channels_last": load().to(dev, memory_format=torch.channels_last)}
    except MetricUnavailable as e:
        ap.exit(2, f"error: {e}\n")
    for net in nets.values():
        net.eval().requires_grad_(False)
    real = torch.rand(args.batch, 3, args.resolution, args.resolution, device=dev) * 2 - 1

    def call(name: str, fake: torch.Tensor) -> torch.Tensor:
        fmt = torch.channels_last if name == "channels_last" else torch.contiguous_format
        with torch.no_grad():
            target = nets[name].maps(to_input_range(real).contiguous(memory_format=fmt), args.stages)
        x = fake.detach().requires_grad_()
        loss = feature_distance(nets[name].maps(to_input_range(x).contiguous(memory_format=fmt), args.stages), target)
        loss.backward()
        return x.grad

    fake = torch.rand_like(real) * 2 - 1
    grads = {name: call(name, fake) for name in nets}  # warm-up, and the two must agree
    a, b = grads["channels_first"], grads["channels_last"]
    err = ((a - b).abs().max() / a.abs().max().clamp_min(1e-30)).item()  # relative to the largest gradient
    times = {name: [] for name in nets}
    for _ in range(args.repeats):
        for name in nets:
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(10):
                call(name, fake)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times[name].append((time.perf_counter() - t0) / 10 * 1e3)
    ms = {name: statistics.median(v) for name, v in times.items()}
    ratio = ms["channels_first"] / ms["channels_last"]
    print(f"Lite0's first {args.stages} stages, forward and backward, batch {args.batch} at {args.resolution} px "
          f"on {args.device} ({torch.get_num_threads()} thread(s)):")
    for name, v in ms.items():
        print(f"  {name:15s} {v:8.1f} ms a call")
    print(f"  channels-last is {ratio:.2f}x as fast (gradients differ by {err:.1e} of the largest)")
    print(json.dumps({"bench": "lite0", **vars(args), "ms": ms, "speedup": ratio, "grad_rel_diff": err}))


if __name__ == "__main__":
    main()
