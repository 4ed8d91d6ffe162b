"""Prepare throughput: 1,000 folder JPEGs of ~500x400 to 128px on all cores.

Target: >= 150 source images/s on 2 cores.
    python bench/prepare.py [--images 1000]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from data_prep.procedural import render

TARGET = 150.0


def make_folder(root: Path, n: int) -> None:
    for i in range(n):
        img, _ = render(7, i, 512)
        # ~500x400 landscape photos with a little size variety
        w, h = 480 + (i % 5) * 10, 380 + (i % 3) * 20
        img.resize((w, h)).save(root / f"art_{i:05d}.jpg", quality=90)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--resolution", type=int, default=128)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        make_folder(src, args.images)
        cmd = [sys.executable, "-m", "data_prep", str(src), "--out", str(Path(tmp) / "store"),
               "--resolution", str(args.resolution), "--no-progress"]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        total = time.perf_counter() - start
        # Process start-up (interpreter + imports) measured alone, so the steady rate is visible too.
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import data_prep.pipeline, data_prep.store"], check=True)
        startup = time.perf_counter() - start
    rate = args.images / total
    steady = args.images / max(total - startup, 1e-9)
    print(f"images={args.images} cores={os.cpu_count()} wall={total:.2f}s startup={startup:.2f}s")
    print(f"end-to-end {rate:.0f} img/s (target {TARGET:.0f}, ratio {rate / TARGET:.2f}); "
          f"excluding start-up {steady:.0f} img/s")
    print(json.dumps({"bench": "prepare", "images": args.images, "img_per_s": round(rate, 1),
                      "img_per_s_excl_startup": round(steady, 1), "target": TARGET,
                      "ratio_to_target": round(rate / TARGET, 2)}))


if __name__ == "__main__":
    main()
