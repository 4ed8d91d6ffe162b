"""Build the README pictures from what `make demo` wrote (product output, only arranged).

    python docs/make_figures.py [--demo demo]
    python docs/make_figures.py --grids docs/clipart.png REAL.png MODEL.png [...]

`--grids`: instead, the first 32 tiles of each 64-seed grid that bench/quality.py wrote (real
images first), side by side in one picture.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image


def tiles(grid: Path, tile: int, n: int, cols: int) -> list[Image.Image]:
    im = Image.open(grid).convert("RGB")
    per_row = im.width // tile
    return [im.crop(((i % per_row) * tile, (i // per_row) * tile, (i % per_row + 1) * tile, (i // per_row + 1) * tile))
            for i in range(n)]


def panel(images: list[Image.Image], cols: int, scale: int, gap: int = 2) -> Image.Image:
    t = images[0].width * scale
    rows = (len(images) + cols - 1) // cols
    out = Image.new("RGB", (cols * t + (cols - 1) * gap, rows * t + (rows - 1) * gap), (255, 255, 255))
    for i, im in enumerate(images):
        out.paste(im.resize((t, t), Image.NEAREST), ((i % cols) * (t + gap), (i // cols) * (t + gap)))
    return out


def hstack(parts: list[Image.Image], gap: int = 12) -> Image.Image:
    h = max(p.height for p in parts)
    out = Image.new("RGB", (sum(p.width for p in parts) + gap * (len(parts) - 1), h), (255, 255, 255))
    x = 0
    for p in parts:
        out.paste(p, (x, (h - p.height) // 2))
        x += p.width + gap
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--demo", default="demo")
    ap.add_argument("--grids", nargs="+", metavar="PNG", help="OUT.png, then grids of 8 columns to set side by side")
    args = ap.parse_args()
    if args.grids:
        out, grids = Path(args.grids[0]), args.grids[1:]
        missing = [g for g in grids if not Path(g).is_file()]
        if not grids or missing:
            ap.error(f"--grids: OUT.png, then at least one grid PNG ({'missing: ' + ', '.join(missing) if missing else 'none given'})")
        parts = [panel(tiles(Path(g), Image.open(g).width // 8, 32, 8), 8, 1) for g in grids]
        # A 256-colour palette: half the bytes of full colour for these noisy tiles (README pictures stay small).
        pic = hstack(parts, gap=8).quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        pic.save(out, optimize=True)
        print("wrote", out)
        return
    d = Path(args.demo)
    res = Image.open(next((d / "samples").glob("seed0000*.png"))).width  # seed0000-grid.png: classes in turn
    real = panel(tiles(d / "data" / "preview.png", min(res, 128), 16, 8), 4, 3)
    fake = panel(tiles(d / "samples" / "grid.png", res, 16, 8), 4, 3)
    strip = Image.open(d / "refined" / "seed0007_strip.png").convert("RGB")
    strip = strip.resize((round(strip.width * real.height / strip.height / 2), real.height // 2), Image.LANCZOS)
    out = Path(__file__).parent
    hstack([real, fake, strip]).save(out / "demo.png", optimize=True)
    panel(tiles(d / "samples" / "grid.png", res, 32, 8), 8, 3).save(out / "samples.png", optimize=True)
    with Image.open(d / "walk.gif") as gif:
        frames = []
        for k in range(0, gif.n_frames, max(1, gif.n_frames // 8)):
            gif.seek(k)
            frames.append(gif.convert("RGB").copy())
    panel(frames[:8], 8, 3).save(out / "interpolate.png", optimize=True)
    Image.open(d / "refined" / "seed0007_strip.png").save(out / "refine.png", optimize=True)
    print("wrote", ", ".join(str(out / n) for n in ("demo.png", "samples.png", "interpolate.png", "refine.png")))


if __name__ == "__main__":
    main()
