"""Differentiable augmentation of everything D sees (reals and fakes alike), so D cannot
memorize a small dataset and G is not taught the augmentations (Karras et al. 2020;
Zhao et al. 2020). Each op is applied per sample with probability p.

`AdaptiveP` is the ADA controller: it nudges p so that E[sign(D(real))] tracks a target.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def augment(x: torch.Tensor, p: float) -> torch.Tensor:
    if p <= 0:
        return x
    b, dev = x.shape[0], x.device

    def mask() -> torch.Tensor:
        return (torch.rand(b, 1, 1, 1, device=dev) < p).to(x.dtype)

    # Geometric: x-flip and integer-ish translation (up to 1/8 of the size) as one resampling.
    flip = torch.where(torch.rand(b, device=dev) < p, -1.0, 1.0)
    # Whole-pixel shifts (in normalized units: 2/size per pixel) so untouched pixels stay exact.
    # Scaled per axis with Python numbers: a tensor made from a list would be a host->device copy,
    # which waits for the GPU.
    u = torch.rand(b, 2, device=dev) * 2 - 1
    w, h = x.shape[3], x.shape[2]
    pixels = torch.cat([torch.round(u[:, :1] * w / 8), torch.round(u[:, 1:] * h / 8)], 1)
    shift = torch.cat([pixels[:, :1] * 2 / w, pixels[:, 1:] * 2 / h], 1) * (torch.rand(b, 1, device=dev) < p)
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0] = flip
    theta[:, 1, 1] = 1.0
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="reflection", align_corners=False).to(x.dtype)
    # Colour: brightness, saturation, contrast.
    x = x + (torch.rand(b, 1, 1, 1, device=dev, dtype=x.dtype) - 0.5) * mask()
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (1 + (torch.rand(b, 1, 1, 1, device=dev, dtype=x.dtype) * 2 - 1) * mask()) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * (1 + (torch.rand(b, 1, 1, 1, device=dev, dtype=x.dtype) - 0.5) * mask()) + mean
    # Cutout: a square of half the size, zeroed.
    h, w = x.shape[2:]
    cy = torch.rand(b, 1, 1, device=dev)
    cx = torch.rand(b, 1, 1, device=dev)
    ys = torch.linspace(0, 1, h, device=dev)[None, :, None]
    xs = torch.linspace(0, 1, w, device=dev)[None, None, :]
    hole = ((ys - cy).abs() < 0.25) & ((xs - cx).abs() < 0.25)
    keep = 1 - hole.unsqueeze(1).to(x.dtype) * mask()
    return x * keep


class AdaptiveP:
    """Adaptive augmentation probability (ADA). State is checkpointed via state_dict."""

    def __init__(self, p: float, target: float, batch: int, interval: int, kimg: float, adaptive: bool):
        self.p = float(p)  # current probability
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
        self.p = min(max(self.p + self.step_size * (1 if self.last_rt > self.target else -1), 0.0), 1.0)

    def pending(self) -> tuple:
        """This process's statistics gathered since the last update (sum of signs, count)."""
        return self._sum, self._n

    def set_pending(self, total: float, n: int) -> None:
        self._sum, self._n = float(total), int(n)

    def state_dict(self) -> dict:
        return {"p": self.p, "sum": float(self._sum), "n": self._n, "last_rt": self.last_rt}

    def load_state_dict(self, d: dict) -> None:
        self.p, self._sum, self._n, self.last_rt = float(d["p"]), float(d["sum"]), int(d["n"]), float(d["last_rt"])
