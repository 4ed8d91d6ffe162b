"""Deterministic abstract-art generator: the built-in dataset that needs no download.

Each image depends only on (seed, index). Four labelled styles that differ in
structure (lines, curves, periodic patterns, soft fields), so a GAN has something
real to learn and a conditional model has classes worth separating.
"""
from __future__ import annotations

import colorsys
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

STYLES = ("grid", "circles", "stripes", "colorfield")


def _rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed & 0xFFFFFFFF, index & 0xFFFFFFFF, 0xA27])


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0), 1), min(max(v, 0), 1))
    return int(r * 255), int(g * 255), int(b * 255)


def _grid(rng: np.random.Generator, size: int) -> Image.Image:
    # Mondrian-like: recursive splits, thick dark lines, a few primary-coloured cells.
    paper = _hsv(0.12, rng.uniform(0.02, 0.12), rng.uniform(0.9, 0.98))
    primaries = [_hsv(0.0, 0.85, 0.85), _hsv(0.62, 0.85, 0.6), _hsv(0.14, 0.9, 0.95), (20, 20, 20)]
    img = Image.new("RGB", (size, size), paper)
    draw = ImageDraw.Draw(img)
    cells = [(0, 0, size, size)]
    for _ in range(int(rng.integers(3, 7))):
        i = int(rng.integers(len(cells)))
        x0, y0, x1, y1 = cells.pop(i)
        if (x1 - x0) >= (y1 - y0) and x1 - x0 > size // 6:
            cut = int(x0 + (x1 - x0) * rng.uniform(0.3, 0.7))
            cells += [(x0, y0, cut, y1), (cut, y0, x1, y1)]
        elif y1 - y0 > size // 6:
            cut = int(y0 + (y1 - y0) * rng.uniform(0.3, 0.7))
            cells += [(x0, y0, x1, cut), (x0, cut, x1, y1)]
        else:
            cells.append((x0, y0, x1, y1))
    for cell in cells:
        if rng.random() < 0.35:
            draw.rectangle(cell, fill=primaries[int(rng.integers(len(primaries)))])
    width = max(2, size // 40)
    for x0, y0, x1, y1 in cells:
        draw.rectangle((x0, y0, x1, y1), outline=(15, 15, 15), width=width)
    return img


def _circles(rng: np.random.Generator, size: int) -> Image.Image:
    # Kandinsky-like: dark ground, concentric rings and arcs in a shared hue family.
    base_h = rng.random()
    img = Image.new("RGB", (size, size), _hsv(base_h + 0.5, 0.5, rng.uniform(0.1, 0.3)))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 5))):
        cx, cy = rng.uniform(0.15, 0.85, size=2) * size
        rmax = rng.uniform(0.15, 0.45) * size
        rings = int(rng.integers(2, 6))
        for k in range(rings, 0, -1):
            r = rmax * k / rings
            col = _hsv(base_h + rng.normal(0, 0.12), rng.uniform(0.5, 1), rng.uniform(0.6, 1))
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=col)
    for _ in range(int(rng.integers(1, 4))):
        cx, cy = rng.uniform(0, 1, size=2) * size
        r = rng.uniform(0.2, 0.6) * size
        start = float(rng.uniform(0, 360))
        draw.arc((cx - r, cy - r, cx + r, cy + r), start, start + float(rng.uniform(60, 200)),
                 fill=_hsv(base_h + 0.5, 0.2, 0.95), width=max(2, size // 48))
    return img


def _stripes(rng: np.random.Generator, size: int) -> Image.Image:
    # Op-art: high-contrast periodic bands, bent by a slow sinusoidal warp.
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    theta = rng.uniform(0, math.pi)
    u = xx * math.cos(theta) + yy * math.sin(theta)
    v = -xx * math.sin(theta) + yy * math.cos(theta)
    warp = rng.uniform(0.0, 0.12) * np.sin(2 * math.pi * rng.uniform(0.5, 2.0) * v + rng.uniform(0, 6.3))
    freq = rng.uniform(2.5, 6.0)  # bands stay resolvable down to 32 px
    band = (np.sin(2 * math.pi * freq * (u + warp)) > 0).astype(np.float32)
    h = rng.random()
    c0 = np.array(_hsv(h, rng.uniform(0, 0.3), rng.uniform(0.0, 0.15)), np.float32)
    c1 = np.array(_hsv(h + rng.uniform(0.3, 0.7), rng.uniform(0.2, 0.9), rng.uniform(0.85, 1.0)), np.float32)
    out = c0 + band[..., None] * (c1 - c0)
    return Image.fromarray(out.astype(np.uint8), "RGB")


def _colorfield(rng: np.random.Generator, size: int) -> Image.Image:
    # Rothko-like: a warm or cool ground with two or three soft-edged stacked fields.
    h = rng.random()
    img = Image.new("RGB", (size, size), _hsv(h, rng.uniform(0.5, 0.9), rng.uniform(0.3, 0.7)))
    draw = ImageDraw.Draw(img)
    n = int(rng.integers(2, 4))
    margin = size * rng.uniform(0.06, 0.12)
    gap = size * 0.04
    height = (size - 2 * margin - gap * (n - 1)) / n
    for i in range(n):
        y0 = margin + i * (height + gap)
        col = _hsv(h + rng.normal(0, 0.08), rng.uniform(0.4, 1.0), rng.uniform(0.4, 1.0))
        draw.rectangle((margin, y0, size - margin, y0 + height), fill=col)
    return img.filter(ImageFilter.GaussianBlur(radius=size / 70))


_RENDER = {"grid": _grid, "circles": _circles, "stripes": _stripes, "colorfield": _colorfield}


def render(seed: int, index: int, size: int = 256) -> tuple[Image.Image, int]:
    """Return (image, style label) for item `index` of the procedural set `seed`."""
    label = index % len(STYLES)
    rng = _rng(seed, index)
    return _RENDER[STYLES[label]](rng, size), label


def main(argv=None) -> int:
    """python -m data_prep.procedural --style circles --seed 3 --size 256 --out style.png"""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m data_prep.procedural", description="Render one procedural artwork.")
    p.add_argument("--style", choices=STYLES, default="circles")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--out", required=True, help="PNG file to write")
    args = p.parse_args(argv)
    if not 8 <= args.size <= 4096:
        print("error: --size must be between 8 and 4096", file=sys.stderr)
        return 2
    # Item indices cycle through the styles, so pick the first index of the wanted style.
    index = STYLES.index(args.style) + len(STYLES) * (args.seed % 1000)
    img, _ = render(args.seed, index, args.size)
    img.save(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
