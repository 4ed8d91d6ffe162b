"""Fine-tuning toward a style, measured: style distance to the style image, diversity and SWD
to the base model's training store, for the base model and after each route, on fixed seeds.

Routes: (a) style-guided on the original data (adversarial loss keeps content, the style loss
moves the look); (b) transfer onto a small style collection plus the style loss.
    python bench/finetune.py --base runs/00000-demo --store demo/data --style demo/style.png \
        [--collection STORE] [--kimg 10] [--vgg-weights PATH|random] [--out bench-finetune/]
Without --vgg-weights the real ImageNet VGG19 weights are required (cached or downloadable);
`--vgg-weights random` measures in a random network's feature space and says so.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def measure(model: str, store: str, style: list, vgg_weights: str | None, seeds: str, num: int) -> dict:
    cmd = [sys.executable, str(ROOT / "generate.py"), "eval", "--model", model, "--data", store, "--metrics", "swd",
           "--num", str(num), "--style-seeds", seeds]
    for s in style:
        cmd += ["--style", s]
    if vgg_weights:
        cmd += ["--vgg-weights", vgg_weights]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["metrics"]


def grid(model: str, out: Path) -> Path:
    subprocess.run([sys.executable, str(ROOT / "generate.py"), "sample", "--model", model, "--seeds", "0-15", "--grid",
                    "--out", str(out)], check=True, capture_output=True)
    return out / "grid.png"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="base model (run dir)")
    ap.add_argument("--store", required=True, help="the base model's training store")
    ap.add_argument("--style", action="append", required=True, help="style image (repeat to blend)")
    ap.add_argument("--collection", default=None, help="route (b): a small style store to fine-tune on")
    ap.add_argument("--kimg", type=float, default=10)
    ap.add_argument("--style-weight", type=float, default=None)
    ap.add_argument("--vgg-weights", default=None)
    ap.add_argument("--seeds", default="0-63")
    ap.add_argument("--num", type=int, default=1000, help="images for SWD")
    ap.add_argument("--out", default="bench-finetune")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    routes = {"style image, original data": args.store}
    if args.collection:
        routes["style collection + style image"] = args.collection
    rows = {"base": measure(args.base, args.store, args.style, args.vgg_weights, args.seeds, args.num)}
    grids = {"base": grid(args.base, out / "base")}
    for i, (name, data) in enumerate(routes.items()):
        cmd = [sys.executable, str(ROOT / "train.py"), "--data", data, "--from", args.base, "--kimg", str(args.kimg),
               "--outdir", str(out / "runs"), "--name", f"route{i}", "--snap", "1000"]
        for s in args.style:
            cmd += ["--style-image", s]
        if args.vgg_weights:
            cmd += ["--vgg-weights", args.vgg_weights]
        if args.style_weight is not None:
            cmd += ["--style-weight", str(args.style_weight)]
        subprocess.run(cmd, check=True, capture_output=True)
        run = sorted((out / "runs").glob(f"*-route{i}"))[-1]
        rows[name] = measure(str(run), args.store, args.style, args.vgg_weights, args.seeds, args.num)
        grids[name] = grid(str(run), out / f"route{i}")
    base = rows["base"]
    print(f"\n{'model':<32} {'style dist':>10} {'vs base':>8} {'diversity':>10} {'vs base':>8} {'SWD':>8}")
    for name, r in rows.items():
        print(f"{name:<32} {r['style_distance']:>10.4f} {r['style_distance'] / base['style_distance']:>8.2f} "
              f"{r['diversity']:>10.4f} {r['diversity'] / base['diversity']:>8.2f} {r['swd']:>8.2f}")
    pics = [Image.open(g) for g in grids.values()] + [Image.open(args.style[0]).convert("RGB")]
    h = pics[0].height
    pics[-1] = pics[-1].resize((h, h), Image.LANCZOS)
    sheet = Image.new("RGB", (sum(p.width for p in pics) + 8 * (len(pics) - 1), h), "white")
    x = 0
    for p in [pics[0], pics[-1], *pics[1:-1]]:  # base | style | after each route
        sheet.paste(p, (x, 0))
        x += p.width + 8
    sheet.save(out / "before_style_after.png")
    print(f"grids: {out / 'before_style_after.png'} (base | style | " + " | ".join(routes) + ")")
    print(json.dumps({"bench": "finetune", "kimg": args.kimg, "vgg": args.vgg_weights or "imagenet", "rows": rows}))


if __name__ == "__main__":
    torch.set_num_threads(torch.get_num_threads())
    main()
