"""Seeds -> latents -> images. One RNG per seed, so an image depends only on
(model, seed, class, truncation), never on batch size or order."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def latents_for_seeds(seeds, z_dim: int) -> torch.Tensor:
    return torch.stack([torch.randn(z_dim, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


def to_uint8(imgs: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W, 3) uint8."""
    x = (imgs.detach().float().clamp(-1, 1) + 1) * 127.5
    return x.round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def grid_image(imgs: torch.Tensor, cols: int) -> Image.Image:
    arr = to_uint8(imgs)
    n, h, w, _ = arr.shape
    cols = max(1, min(cols, n))
    rows = (n + cols - 1) // cols
    canvas = np.zeros((rows * h, cols * w, 3), np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        canvas[r * h : (r + 1) * h, c * w : (c + 1) * w] = arr[i]
    return Image.fromarray(canvas)


def save_png(img: Image.Image, path: str | os.PathLike) -> Path:
    """Write atomically: a crash never leaves a truncated PNG behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    img.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


def save_grid(imgs: torch.Tensor, path: str | os.PathLike, cols: int = 8) -> Image.Image:
    grid = grid_image(imgs, cols)
    save_png(grid, path)
    return grid
