"""PreparedDataset through a DataLoader: uint8 store -> normalized float batches.

Targets (2-core CPU): >= 20,000 img/s at 64px, >= 3,000 img/s at 256px.
    python bench/loader.py [--seconds 3]
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


def measure(store: Path, batch: int, seconds: float) -> float:
    ds = PreparedDataset(store)
    # As the trainer reads it with x-flips: indices len..2*len-1 are the mirror images.
    sampler = torch.utils.data.RandomSampler(range(2 * len(ds)))
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, sampler=sampler, drop_last=True,
                                         collate_fn=PreparedDataset.collate)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for x, y in loader:
            n += x.shape[0]
            if time.perf_counter() - start >= seconds:
                break
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for res in TARGETS:
            store = Path(tmp) / f"s{res}"
            subprocess.run([sys.executable, "-m", "data_prep", "--procedural", str(args.images), "--out", str(store),
                            "--resolution", str(res), "--no-progress"], check=True, stdout=subprocess.DEVNULL)
            rate = measure(store, args.batch, args.seconds)
            rows.append({"resolution": res, "img_per_s": round(rate), "target": TARGETS[res],
                         "ratio_to_target": round(rate / TARGETS[res], 2)})
    print(f"{'res':>5} {'img/s':>10} {'target':>8} {'ratio':>6}")
    for r in rows:
        print(f"{r['resolution']:>5} {r['img_per_s']:>10} {r['target']:>8} {r['ratio_to_target']:>6}")
    print(json.dumps({"bench": "loader", "batch": args.batch, "rows": rows}))


if __name__ == "__main__":
    main()
