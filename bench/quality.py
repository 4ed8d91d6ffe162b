"""Quality baseline: train presets on the procedural store for a fixed kimg, then SWD
(and FID where the Inception weights exist) of G_ema against a held-out procedural set
(another seed), plus wall time. Later issues must beat these numbers.
    python bench/quality.py [--presets demo,dcgan64] [--kimg-scale 1.0] [--num 2000]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KIMG = {"demo": 200, "dcgan64": 10, "stylegan128": 0.2, "stylegan256": 0.1, "fewshot256": 0.1}
RES = {"demo": 32, "dcgan64": 64, "stylegan128": 128, "stylegan256": 256, "fewshot256": 256}
BATCH = {"stylegan128": 16, "stylegan256": 8, "fewshot256": 8}


def sh(*args) -> str:
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default="demo,dcgan64")
    ap.add_argument("--kimg-scale", type=float, default=1.0, help="multiply every preset's kimg")
    ap.add_argument("--num", type=int, default=2000, help="images for the metric")
    ap.add_argument("--metrics", default="swd,fid")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        for preset in args.presets.split(","):
            res = RES[preset]
            train_store, held_out = tmp / f"train{res}", tmp / f"heldout{res}"
            if not train_store.exists():
                sh("-m", "data_prep", "--procedural", 10000, "--seed", 0, "--out", train_store, "--resolution", res,
                   "--no-progress")
                sh("-m", "data_prep", "--procedural", args.num, "--seed", 1, "--out", held_out, "--resolution", res,
                   "--no-progress")
            kimg = KIMG[preset] * args.kimg_scale
            extra = ["--batch", BATCH[preset]] if preset in BATCH else []
            start = time.perf_counter()
            sh("train.py", "--data", train_store, "--preset", preset, "--kimg", kimg, "--outdir", tmp / "runs",
               "--name", preset, "--mixed-precision", "bf16", "--snap", 1e6, "--checkpoint-every", 1e6, *extra)
            wall = time.perf_counter() - start
            run = sorted((tmp / "runs").glob(f"*-{preset}"))[-1]
            out = sh("generate.py", "eval", "--model", run, "--data", held_out, "--metrics", args.metrics,
                     "--num", args.num)
            metrics = json.loads(out.strip().splitlines()[-1])["metrics"]
            rows.append({"preset": preset, "kimg": kimg, "train_seconds": round(wall, 1),
                         **{k: round(v, 4) for k, v in metrics.items()}})
            print(json.dumps(rows[-1]), flush=True)
    keys = sorted({k for r in rows for k in r} - {"preset", "kimg", "train_seconds"})
    print(f"\n{'preset':<12} {'kimg':>7} {'train s':>8} " + " ".join(f"{k:>9}" for k in keys))
    for r in rows:
        print(f"{r['preset']:<12} {r['kimg']:>7g} {r['train_seconds']:>8} " +
              " ".join(f"{r.get(k, float('nan')):>9.4g}" for k in keys))
    print(json.dumps({"bench": "quality", "rows": rows}))


if __name__ == "__main__":
    main()
