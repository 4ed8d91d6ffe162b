"""Model registry: every model is rebuilt from its ModelConfig alone."""
from __future__ import annotations

import torch.nn as nn

from ..config import ModelConfig
from ..errors import UserError
from . import dcgan, stylegan

REGISTRY = {
    "dcgan": (dcgan.DCGANGenerator, dcgan.DCGANDiscriminator, dcgan.RESOLUTIONS),
    "stylegan": (stylegan.StyleGANGenerator, stylegan.StyleGANDiscriminator, stylegan.RESOLUTIONS),
}


def check_config(cfg: ModelConfig) -> None:
    if cfg.arch not in REGISTRY:
        raise UserError(f"unknown architecture {cfg.arch!r}; choose from {', '.join(REGISTRY)}")
    supported = REGISTRY[cfg.arch][2]
    if cfg.resolution not in supported:
        raise UserError(f"--arch {cfg.arch} does not support {cfg.resolution}px; it supports "
                        f"{', '.join(map(str, supported))} (prepare the store at one of those)")


def build_generator(cfg: ModelConfig) -> nn.Module:
    check_config(cfg)
    return REGISTRY[cfg.arch][0](cfg)


def build_discriminator(cfg: ModelConfig) -> nn.Module:
    check_config(cfg)
    return REGISTRY[cfg.arch][1](cfg)
