"""Collapse and copying, in pixels: the spread of a set (mean pairwise distance) and how close
each image comes to a reference set (nearest-neighbour distance).

A model that collapsed has a spread well below the real images'; one that copies its training
images has nearest-neighbour distances to them far below the real images' own distances to
each other. Distances are RMS over the pixels of 32px copies in [-1, 1] (what a person reads as
the same picture, not the same noise).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

SIZE = 32


def flat(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) uint8 or float in [-1, 1] -> (N, 3 * SIZE * SIZE) float64."""
    x = images.float()
    if images.dtype == torch.uint8:
        x = x / 127.5 - 1
    if x.shape[-1] != SIZE:
        x = F.interpolate(x, size=(SIZE, SIZE), mode="area" if x.shape[-1] > SIZE else "bilinear")
    return x.reshape(len(x), -1).double()


def _rms(d: torch.Tensor, dim: int) -> torch.Tensor:
    return d / dim ** 0.5


def mean_pairwise(images: torch.Tensor) -> float:
    """Mean RMS distance over all pairs of the set."""
    x = flat(images)
    if len(x) < 2:
        raise ValueError("the spread needs at least 2 images")
    return float(_rms(torch.pdist(x), x.shape[1]).mean())


def nearest(images: torch.Tensor, reference: torch.Tensor, same_set: bool = False) -> torch.Tensor:
    """Each image's RMS distance to its nearest image of `reference`; `same_set`: the two are one
    set, and an image's own copy does not count."""
    x, r = flat(images), flat(reference)
    d = _rms(torch.cdist(x, r), x.shape[1])
    if same_set:
        d.fill_diagonal_(float("inf"))
    return d.min(dim=1).values


def collapse_and_copying(fakes: torch.Tensor, reals: torch.Tensor) -> dict:
    """spread: the fakes' mean pairwise distance over the reals'; novelty: the fakes' median
    distance to their nearest real over the reals' median distance to their nearest other real.
    Both near 1 for new images like the reals; spread << 1 is collapse, novelty << 1 is copying."""
    return {"spread": mean_pairwise(fakes) / mean_pairwise(reals),
            "novelty": float(nearest(fakes, reals).median() / nearest(reals, reals, same_set=True).median())}
