"""Self-conditioning: a collection's own clusters as the classes of a model whose users never
see classes (after Self-Conditioned GANs, Liu et al., CVPR 2020, which cluster D's features).

A diverse collection (emoji: faces, flags, hands, objects) is many small collections. k-means
on 8x8 colour thumbnails splits it by layout and colour (round flags in red and white, yellow
faces, keycaps, scenes), and G and D are conditioned on the cluster, so each learns a few kinds of
picture at a time instead of one smear of all of them.

The cluster is not a class a user picks: it is read from the latent itself. The first latent
coordinate z0 is mapped through the normal CDF to u in (0, 1), and the clusters own consecutive
intervals of u as wide as their share of the collection, so z ~ N(0, I) draws each cluster as
often as the collection holds it, and every seed, walk, projection and truncation of the model
works as for an unconditional one. Across each inner bound the cluster code is blended linearly
over EDGE of u, so a walk through z crosses from one cluster into the next without a jump. Each
fake in training has its z0 drawn in its real image's interval, edges included: G learns on the
latents sampling will draw.
torch and numpy only.
"""
from __future__ import annotations

import math

import numpy as np
import torch

THUMB = 8  # the thumbnails' side: layout and colour, not texture
EDGE = 0.01  # width (in u) of the blend between neighbouring clusters' codes: 1% of seeds per bound
CHUNK = 512  # images read at a time from the store (a 1024 px store never sits in memory whole)


def cluster_count(images: int) -> int:
    """How many clusters for a collection of `images`: about sqrt(n / 8) (15 for 1,789 emoji, 7
    for 381 clip-art figures, 5 for 241 portraits), at least 2 and at most 32, so each keeps dozens of
    images (a class of a few images is what a small-data D memorizes)."""
    return max(2, min(32, round(math.sqrt(images / 8))))


def thumbnails(images, size: int = THUMB) -> torch.Tensor:
    """(N, 3 * size * size) float thumbnails in [0, 1] of uint8 NCHW `images` (an array or a
    memory-mapped store), area-averaged, read CHUNK images at a time."""
    out = []
    for i in range(0, len(images), CHUNK):
        x = torch.from_numpy(np.array(images[i:i + CHUNK])).float() / 255.0  # a copy: the store is read-only
        out.append(torch.nn.functional.adaptive_avg_pool2d(x, size).flatten(1))
    return torch.cat(out)


def kmeans(x: torch.Tensor, k: int, seed: int = 0, restarts: int = 4, iters: int = 40):
    """(centroids (k, D), labels (N,)): the best of `restarts` Lloyd runs from k-means++ starts,
    deterministic for a seed. An emptied cluster takes the point farthest from its centroid."""
    x = x.double()  # the same labels on every machine and thread count for the same store
    gen = torch.Generator().manual_seed(seed)
    best = None
    for _ in range(restarts):
        cen = _plus_plus(x, k, gen)
        for _ in range(iters):
            dist = torch.cdist(x, cen)
            labels = dist.argmin(1)
            new = torch.zeros_like(cen).index_add_(0, labels, x)
            count = torch.bincount(labels, minlength=k)
            nearest = dist.min(1).values
            for j in torch.nonzero(count == 0).flatten().tolist():
                far = nearest.argmax()
                new[j], count[j] = x[far], 1
                labels[far], nearest[far] = j, -1.0  # each emptied cluster takes a different point
            new = new / count[:, None]
            if torch.equal(new, cen):
                break
            cen = new
        labels = torch.cdist(x, cen).argmin(1)
        inertia = (x - cen[labels]).pow(2).sum().item()
        if best is None or inertia < best[0]:
            best = (inertia, cen, labels)
    return best[1].float(), best[2]


def _plus_plus(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    cen = [x[torch.randint(len(x), (1,), generator=gen)].squeeze(0)]
    d2 = (x - cen[0]).pow(2).sum(1)
    for _ in range(1, k):
        i = torch.multinomial(d2 / d2.sum(), 1, generator=gen) if d2.sum() > 0 else \
            torch.randint(len(x), (1,), generator=gen)
        cen.append(x[i].squeeze(0))
        d2 = torch.minimum(d2, (x - cen[-1]).pow(2).sum(1))
    return torch.stack(cen)


def assign(images, centroids: torch.Tensor) -> torch.Tensor:
    """Each image's nearest centroid (a base model's clusters, for a store it was not trained on)."""
    return torch.cdist(thumbnails(images).double(), centroids.double()).argmin(1)


def edges(freq) -> torch.Tensor:
    """The clusters' intervals of u: K + 1 cumulative bounds from 0 to 1."""
    f = torch.as_tensor(freq, dtype=torch.float64)
    return torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(f / f.sum(), 0)]).clamp(0, 1)


def code(z0: torch.Tensor, bounds: torch.Tensor) -> torch.Tensor:
    """(B, K) cluster weights of first latent coordinates `z0` (B,): one-hot inside an interval,
    a linear blend within EDGE / 2 of an inner bound; the rows sum to 1."""
    u = torch.special.ndtr(z0.float())[:, None]
    b = bounds.to(z0.device, torch.float32)
    step = ((u - b[None, 1:-1]) / EDGE + 0.5).clamp(0, 1)  # (B, K - 1): how far past each inner bound
    step = torch.cat([torch.ones_like(u), step, torch.zeros_like(u)], 1)
    return step[:, :-1] - step[:, 1:]


def z0_for(c: torch.Tensor, bounds: torch.Tensor) -> torch.Tensor:
    """First latent coordinates of clusters `c` (B,): N(0, 1) restricted to each one's interval, so
    G trains on the very latents sampling draws for that cluster (the blends at its edges too).
    On c's device, without a host sync (drawn every step)."""
    b = bounds.to(c.device, torch.float32)
    lo, hi = b[c], b[c + 1]
    u = lo + torch.rand(c.shape, device=c.device) * (hi - lo)
    return torch.special.ndtri(u.clamp(1e-6, 1 - 1e-6))
