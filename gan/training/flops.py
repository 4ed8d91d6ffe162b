"""Model sizes and FLOPs per image, counted by torch's FlopCounterMode."""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..config import ModelConfig
from ..models import build_discriminator, build_generator


def model_summary(cfg: ModelConfig) -> dict:
    # requires_grad_(False) rather than no_grad(): FlopCounterMode's module tracker trips
    # over no_grad tensors derived from parameters.
    G = build_generator(cfg).eval().requires_grad_(False)
    D = build_discriminator(cfg).eval().requires_grad_(False)
    z = torch.randn(2, cfg.z_dim)
    c = torch.zeros(2, dtype=torch.long) if cfg.c_dim else None
    with FlopCounterMode(display=False) as fc:
        img = G(z, c)
    g = fc.get_total_flops() / 2
    with FlopCounterMode(display=False) as fc:
        D(img, c)
    d = fc.get_total_flops() / 2
    return {"g_params": sum(p.numel() for p in G.parameters()), "d_params": sum(p.numel() for p in D.parameters()),
            "g_flops": g, "d_flops": d, "train_flops": 4 * g + 9 * d}
