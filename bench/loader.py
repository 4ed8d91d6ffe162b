"""PreparedDataset through a DataLoader: uint8 store -> normalized float batches on the
training device; beside it, in the same run, the trainer's other path (`--data-on-device`):
the store held whole on the device and batches gathered there.

Targets (2-core CPU, DataLoader): >= 20,000 img/s at 64px, >= 3,000 img/s at 256px.
    python bench/loader.py [--seconds 3] [--device cuda]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from data_prep.store import PreparedDataset

TARGETS = {64: 20000, 256: 3000}


def measure(store: Path, batch: int, seconds: float, device: str) -> float:
    ds = PreparedDataset(store)
    # As the trainer reads it with x-flips: indices len..2*len-1 are the mirror images.
    sampler = torch.utils.data.RandomSampler(range(2 * len(ds)))
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, sampler=sampler, drop_last=True,
                                         collate_fn=PreparedDataset.collate)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device)
            n += x.shape[0]
            if time.perf_counter() - start >= seconds:
                break
    sync(device)
    return n / (time.perf_counter() - start)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure_on_device(store: Path, batch: int, seconds: float, device: str) -> float:
    from gan.training.data import DeviceBatches, InfiniteSampler

    ds = PreparedDataset(store)
    batches = DeviceBatches(ds, torch.device(device)).batches(InfiniteSampler(len(ds), 0, 1, 0, mirror=True), batch)
    next(batches)
    sync(device)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        x, y = next(batches)
        n += x.shape[0]
        if n % (batch * 20) == 0:
            sync(device)  # keep the queue short: the clock measures finished work
    sync(device)
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for res in TARGETS:
            store = Path(tmp) / f"s{res}"
            subprocess.run([sys.executable, "-m", "data_prep", "--procedural", str(args.images), "--out", str(store),
                            "--resolution", str(res), "--no-progress"], check=True, stdout=subprocess.DEVNULL)
            rate = measure(store, args.batch, args.seconds, args.device)
            on_device = measure_on_device(store, args.batch, args.seconds, args.device)
            rows.append({"resolution": res, "img_per_s": round(rate), "target": TARGETS[res],
                         "ratio_to_target": round(rate / TARGETS[res], 2), "on_device_img_per_s": round(on_device),
                         "on_device_vs_loader": round(on_device / rate, 2)})
    print(f"device: {args.device}, batch {args.batch}")
    print(f"{'res':>5} {'loader img/s':>12} {'target':>8} {'ratio':>6} {'on-device img/s':>16} {'vs loader':>9}")
    for r in rows:
        print(f"{r['resolution']:>5} {r['img_per_s']:>12} {r['target']:>8} {r['ratio_to_target']:>6} "
              f"{r['on_device_img_per_s']:>16} {r['on_device_vs_loader']:>8}x")
    print(json.dumps({"bench": "loader", "device": args.device, "batch": args.batch, "rows": rows}))


if __name__ == "__main__":
    main()
