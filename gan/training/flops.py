"""Model sizes and FLOPs per image, counted by torch's FlopCounterMode."""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..config import ModelConfig
from ..models import arch_of, build_discriminator, build_generator


def model_summary(cfg: ModelConfig, grad_accum: int = 1) -> dict:
    """Parameters, forward FLOPs per image, and a training step's per real image: G forward once
    (where the step shares its fakes, `Arch.shares_fakes`) or twice, G backward, D on
    reals, on fakes and in G's phase (forward + backward each; D's fastgan decoders not counted)."""
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
    g_passes = 3 if arch_of(cfg).shares_fakes(grad_accum) else 4
    return {"g_params": sum(p.numel() for p in G.parameters()), "d_params": sum(p.numel() for p in D.parameters()),
            "g_flops": g, "d_flops": d, "g_passes": g_passes, "train_flops": g_passes * g + 9 * d}
