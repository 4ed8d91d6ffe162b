"""Multi-scale sliced Wasserstein distance (Karras et al. 2018, "Progressive Growing of GANs").

Images -> Laplacian pyramid down to 16 px -> per level, random 7x7 neighbourhoods
(descriptors) -> per-channel normalization -> SWD over random projections, x1e3.
Needs no pretrained network. Descriptor positions are seeded per image index, so a set
split across processes yields exactly the descriptors of the unsplit set.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

PATCH = 7
PER_IMAGE = 128  # descriptors sampled per image per level
MIN_RES = 16


def _blur_kernel(device) -> torch.Tensor:
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], device=device)
    k = torch.outer(k, k)
    return (k / k.sum()).expand(3, 1, 5, 5)


def _down(x: torch.Tensor) -> torch.Tensor:
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), _blur_kernel(x.device), stride=2, groups=3)


def _up(x: torch.Tensor) -> torch.Tensor:
    up = torch.zeros(x.shape[0], 3, x.shape[2] * 2, x.shape[3] * 2, device=x.device, dtype=x.dtype)
    up[:, :, ::2, ::2] = x * 4
    return F.conv2d(F.pad(up, (2, 2, 2, 2), mode="reflect"), _blur_kernel(x.device), groups=3)


def laplacian_pyramid(x: torch.Tensor, min_res: int = MIN_RES) -> list[torch.Tensor]:
    """Finest band first; the last level is the low-pass image at `min_res`."""
    levels = []
    while x.shape[-1] > min_res:
        low = _down(x)
        levels.append(x - _up(low))
        x = low
    levels.append(x)
    return levels


def descriptors(images: torch.Tensor, first_index: int = 0, per_image: int = PER_IMAGE,
                seed: int = 0) -> list[torch.Tensor]:
    """images: (N, 3, H, W) uint8 or float in [-1, 1]; image i of the set is `first_index + i`.
    Returns per level a (N * per_image, 3 * 7 * 7) float tensor."""
    x = images.float()
    if images.dtype == torch.uint8:
        x = x / 127.5 - 1
    out = []
    for level, band in enumerate(laplacian_pyramid(x)):
        n, c, h, w = band.shape
        descs = []
        for i in range(n):
            g = torch.Generator().manual_seed(hash((seed, first_index + i, level)) & 0x7FFFFFFF)
            ys = torch.randint(0, h - PATCH + 1, (per_image,), generator=g)
            xs = torch.randint(0, w - PATCH + 1, (per_image,), generator=g)
            patches = band[i].unfold(1, PATCH, 1).unfold(2, PATCH, 1)  # (3, H', W', 7, 7)
            descs.append(patches[:, ys, xs].permute(1, 0, 2, 3).reshape(per_image, -1))
        out.append(torch.cat(descs).cpu())
    return out


def _normalize(d: torch.Tensor) -> torch.Tensor:
    d = d.reshape(d.shape[0], 3, -1)
    d = (d - d.mean(dim=(0, 2), keepdim=True)) / d.std(dim=(0, 2), keepdim=True).clamp_min(1e-8)
    return d.reshape(d.shape[0], -1)


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, repeats: int = 4, dirs: int = 128, seed: int = 0) -> float:
    n = min(len(a), len(b))
    g = torch.Generator().manual_seed(seed)
    a, b = a[torch.randperm(len(a), generator=g)[:n]], b[torch.randperm(len(b), generator=g)[:n]]
    total = 0.0
    for _ in range(repeats):
        d = torch.randn(a.shape[1], dirs, generator=g)
        d = d / d.norm(dim=0, keepdim=True)
        pa, _ = torch.sort(a.double() @ d.double(), dim=0)
        pb, _ = torch.sort(b.double() @ d.double(), dim=0)
        total += float((pa - pb).abs().mean())
    return total / repeats


def swd(real: list[torch.Tensor], fake: list[torch.Tensor], resolution: int) -> dict:
    """Per-level SWD x1e3 keyed by level resolution, plus their average under 'swd'."""
    out = {}
    for level, (a, b) in enumerate(zip(real, fake)):
        out[f"swd{resolution >> level}"] = 1e3 * sliced_wasserstein(_normalize(a), _normalize(b), seed=level)
    out["swd"] = sum(out.values()) / len(out)
    return out
