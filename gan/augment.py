"""Differentiable augmentation of everything D sees (reals and fakes alike), so D cannot
memorize a small dataset and G is not taught the augmentations (Karras et al. 2020;
Zhao et al. 2020). Each op is applied per sample with probability p. `geom` adds ADA's
geometric group: scaling and rotation (--aug-geom).

`AdaptiveP` is the ADA controller: it nudges p so that E[sign(D(real))] tracks a target.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Uniform random numbers per sample, drawn in one call: the op masks (x-flip, translation,
# brightness, saturation, contrast, cutout), then the translation (2), the three colour
# amounts and the cutout centre (2).
N_RANDOM = 13
# With `geom`, four more: the scale and rotation masks, the scale's normal quantile and the angle.
N_GEOM = 4
SCALE_STD = 0.2  # log2 of the scale factor ~ N(0, 0.2), as ADA's isotropic scaling


def augment(x: torch.Tensor, p: float | torch.Tensor, apply=None, geom: bool = False) -> torch.Tensor:
    """`x` augmented per sample, each op with probability `p` (identity at p <= 0). The random
    numbers are drawn here in one call; `apply` (default `apply_augment`, which the trainer
    passes compiled, with `p` as a device tensor so a new p is not a new graph) does the rest.
    Without `geom` the same numbers are drawn as before it existed, so runs repeat."""
    if not isinstance(p, torch.Tensor) and p <= 0:
        return x
    r = torch.rand(x.shape[0], N_RANDOM + (N_GEOM if geom else 0), device=x.device)
    return (apply or apply_augment)(x, r, p)


def _reflect(i: torch.Tensor, n: int) -> torch.Tensor:
    """Indices mirrored back into 0..n-1 about the edges (-1 -> 0, n -> n-1), for |shift| < n."""
    i = torch.where(i < 0, -1 - i, i)
    return torch.where(i > n - 1, 2 * n - 1 - i, i)


def apply_augment(x: torch.Tensor, r: torch.Tensor, p: float | torch.Tensor) -> torch.Tensor:
    """The augmentation `r` (uniforms, (batch, N_RANDOM), or N_RANDOM + N_GEOM with the geometric
    group) picks: deterministic, differentiable in `x`, and written in few ops (each one a kernel
    launch on a GPU when it runs eagerly)."""
    b, c, h, w = x.shape
    on = (r[:, :6] < p).float()
    # Geometric: x-flip and translation by whole pixels (up to 1/8 of the size), reflected at the
    # borders, as one gather per axis: every output pixel is an input pixel, no resampling blur.
    cols, rows = torch.arange(w, device=x.device), torch.arange(h, device=x.device)
    shift_x = torch.round((r[:, 6:7] * 2 - 1) * (w / 8)) * on[:, 1:2]
    shift_y = torch.round((r[:, 7:8] * 2 - 1) * (h / 8)) * on[:, 1:2]
    src_x = _reflect((cols + (w - 1 - 2 * cols) * on[:, 0:1] + shift_x).long(), w)  # (b, w)
    src_y = _reflect((rows + shift_y).long(), h)  # (b, h)
    y = x.float().gather(3, src_x[:, None, None, :].expand(b, c, h, w))
    y = y.gather(2, src_y[:, None, :, None].expand(b, c, h, w))
    if r.shape[1] > N_RANDOM:
        y = _scale_rotate(y, r[:, N_RANDOM:], p)
    # Colour, in this order: brightness (+ a), saturation (away from the channel mean, * s),
    # contrast (away from the image mean, * k). Saturation keeps the channel mean and the image
    # mean moves by a, so the three fold into one expression of the two means.
    a = ((r[:, 8] - 0.5) * on[:, 2]).view(b, 1, 1, 1)
    s = (1 + (r[:, 9] * 2 - 1) * on[:, 3]).view(b, 1, 1, 1)
    k = (1 + (r[:, 10] - 0.5) * on[:, 4]).view(b, 1, 1, 1)
    mean_c = y.mean(dim=1, keepdim=True)
    mean = mean_c.mean(dim=(2, 3), keepdim=True)
    y = ((y - mean_c) * s + (mean_c - mean)) * k + (mean + a)
    # Cutout: a square of half the size, zeroed.
    hole_y = ((torch.linspace(0, 1, h, device=x.device) - r[:, 11:12]).abs() < 0.25).float() * on[:, 5:6]
    hole_x = ((torch.linspace(0, 1, w, device=x.device) - r[:, 12:13]).abs() < 0.25).float()
    y = y * (1 - hole_y[:, None, :, None] * hole_x[:, None, None, :])
    return y.to(x.dtype)


def _scale_rotate(y: torch.Tensor, r: torch.Tensor, p) -> torch.Tensor:
    """ADA's geometric group: each image scaled by 2^N(0, SCALE_STD) with probability p and
    rotated by an angle uniform in (-pi, pi) with probability p, about its centre, in one bilinear
    resample reflected at the borders. Images that drew neither are left as they are (no
    resampling blur)."""
    b = y.shape[0]
    on = (r[:, :2] < p).float()
    normal = math.sqrt(2) * torch.erfinv((r[:, 2] * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6))
    inv = torch.exp2(-SCALE_STD * normal * on[:, 0])  # output -> input coordinates: 1 / scale
    angle = (r[:, 3] * 2 - 1) * math.pi * on[:, 1]
    cos, sin, zero = torch.cos(angle) * inv, torch.sin(angle) * inv, torch.zeros_like(inv)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(y.shape), align_corners=False)
    warped = F.grid_sample(y, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    moved = (on.amax(dim=1) > 0).view(b, 1, 1, 1)
    return torch.where(moved, warped, y)


def pseudo_reals(real: torch.Tensor, fake: torch.Tensor, p: float) -> torch.Tensor:
    """APA (adaptive pseudo augmentation, Jiang et al., NeurIPS 2021): each real image of D's batch
    replaced by the fake beside it with probability `p`, so D is shown some of G's images as real."""
    keep = torch.rand(real.shape[0], 1, 1, 1, device=real.device) >= p
    return torch.where(keep, real, fake.to(real.dtype))


class AdaptiveP:
    """Adaptive augmentation probability (ADA), and with `pseudo` APA's probability beside it,
    moved by the same measurement by the same steps (from 0, up to 1). State is checkpointed via
    state_dict."""

    def __init__(self, p: float, target: float, batch: int, interval: int, kimg: float, adaptive: bool,
                 p_max: float = 1.0, pseudo: bool = False):
        self.p = float(p)  # current probability
        self.pseudo_on = pseudo and adaptive  # APA: fakes shown to D as reals, adaptively
        self.pseudo = 0.0  # APA's current probability
        self.p_max = p_max  # the most the controller raises p to
        self.target = target  # desired E[sign(D(real))]
        self.adaptive = adaptive  # False: p stays fixed
        self.step_size = batch * interval / (kimg * 1000)  # p can traverse 0..1 in `kimg`
        self.interval = interval  # D steps between updates
        self._sum = 0.0
        self._n = 0
        self.last_rt = 0.0  # last measured E[sign(D(real))], for logging

    def accumulate(self, real_logits: torch.Tensor) -> None:
        if self.adaptive:  # a device tensor between updates: no host sync per step
            self._sum = self._sum + torch.sign(real_logits.detach().float()).sum().double()
            self._n += real_logits.numel()

    def update(self, reduce=lambda t: t) -> None:
        """Call every `interval` steps; `reduce` sums statistics over processes."""
        if not self.adaptive:
            return
        stats = reduce(torch.stack([torch.as_tensor(self._sum, dtype=torch.float64).cpu(),
                                    torch.tensor(float(self._n), dtype=torch.float64)]))
        self._sum, self._n = 0.0, 0
        if stats[1] <= 0:
            return
        self.last_rt = float(stats[0] / stats[1])
        step = self.step_size * (1 if self.last_rt > self.target else -1)
        self.p = min(max(self.p + step, 0.0), max(self.p_max, 0.0))
        if self.pseudo_on:
            self.pseudo = min(max(self.pseudo + step, 0.0), 1.0)

    def pending(self) -> tuple:
        """This process's statistics gathered since the last update (sum of signs, count)."""
        return self._sum, self._n

    def set_pending(self, total: float, n: int) -> None:
        self._sum, self._n = float(total), int(n)

    def state_dict(self) -> dict:
        return {"p": self.p, "sum": float(self._sum), "n": self._n, "last_rt": self.last_rt, "pseudo": self.pseudo}

    def load_state_dict(self, d: dict) -> None:
        self.p, self._sum, self._n, self.last_rt = float(d["p"]), float(d["sum"]), int(d["n"]), float(d["last_rt"])
        self.pseudo = float(d.get("pseudo", 0.0))  # checkpoints from before APA: 0
