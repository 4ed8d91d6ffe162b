"""DCGAN family (Radford et al. 2016): transposed convs + batch norm in G, strided convs in D.

At 64px with g_channels=d_channels=64 and z_dim=100 this is the classic 3.6M / 2.8M model.
Conditional: class-conditional batch norm in G (a per-class gain and bias after every
normalization, as in SNGAN/BigGAN), so z stays G's only input and the class modulates
features; D uses a projection head. Concatenating a learned class embedding to z instead
let G grow the class code until BN squashed z's share: one image per class whatever the seed.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..config import ModelConfig
from .layers import ClassBatchNorm, ConvTranspose2d, run_grouped

RESOLUTIONS = (32, 64, 128, 256)


def _init(m: nn.Module) -> None:
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d) and m.affine:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class DCGANGenerator(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.z_dim = cfg.z_dim
        self.c_dim = cfg.c_dim
        n_up = int(math.log2(cfg.resolution)) - 2  # 4px -> resolution
        chans = [cfg.g_channels * 2 ** (n_up - 1 - i) for i in range(n_up)]  # e.g. 512,256,128,64
        def norm(ch: int) -> nn.Module:
            return ClassBatchNorm(ch, cfg.c_dim) if cfg.c_dim else nn.BatchNorm2d(ch)

        layers: list[nn.Module] = [ConvTranspose2d(cfg.z_dim, chans[0], 4, 1, 0, bias=False),
                                   norm(chans[0]), nn.ReLU(True)]
        for a, b in zip(chans[:-1], chans[1:]):
            layers += [nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False), norm(b), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(chans[-1], 3, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(_init)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        x = z[:, :, None, None]
        for layer in self.net:
            x = layer(x, c) if isinstance(layer, ClassBatchNorm) else layer(x)
        return x


class DCGANDiscriminator(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        n_down = int(math.log2(cfg.resolution)) - 2
        chans = [cfg.d_channels * 2 ** i for i in range(n_down)]  # e.g. 64,128,256,512
        layers: list[nn.Module] = [nn.Conv2d(3, chans[0], 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        for a, b in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.LeakyReLU(0.2, True)]
        self.features = nn.Sequential(*layers)
        self.out = nn.Conv2d(chans[-1], 1, 4, 1, 0, bias=False)
        # Projection discriminator (Miyato & Koyama 2018): <embed(c), pooled features>.
        self.embed = nn.Embedding(cfg.c_dim, chans[-1]) if cfg.c_dim else None
        self.apply(_init)
        if self.embed is not None:
            nn.init.normal_(self.embed.weight, 0.0, 0.02)

    def input_blocks(self) -> list[nn.Module]:
        """One group per strided conv (with its norm and activation), input side first."""
        groups: list[list[nn.Module]] = []
        for m in self.features:
            if isinstance(m, nn.Conv2d):
                groups.append([])
            groups[-1].append(m)
        return [nn.ModuleList(g) for g in groups]

    def forward(self, img: torch.Tensor, c: torch.Tensor | None = None, groups: int = 1) -> torch.Tensor:
        """Logits (B, 1). `groups` > 1: `img` (and `c`) hold that many equal batches, scored as that
        many calls would score them (each batch norm keeps their statistics apart; the convs run
        once on the whole batch)."""
        if img.shape[0] % groups:
            raise ValueError(f"a batch of {img.shape[0]} does not split into {groups} equal groups")
        h = run_grouped(self.features, img, groups)
        logits = self.out(h).flatten(1)
        if self.embed is not None:
            logits = logits + (self.embed(c) * h.sum(dim=(2, 3))).sum(1, keepdim=True)
        return logits
