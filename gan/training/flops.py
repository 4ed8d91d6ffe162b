"""Model sizes and FLOPs per image, counted by torch's FlopCounterMode."""
from __future__ import annotations

import json

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..config import ModelConfig, TrainConfig
from ..models import arch_of, build_discriminator, build_generator

N = 2  # images per counted batch (batch norm wants more than one)
# Counted on CPU tensors up to this many parameters (G and D) and this resolution: a small model's
# step runs in a fraction of a second there. Larger ones are counted on the meta device, shapes
# only (no arithmetic, but every op costs about a millisecond of Python there).
CPU_COUNT_PARAMS, CPU_COUNT_RES = 10_000_000, 128
_cache: dict = {}


def model_summary(cfg: ModelConfig, grad_accum: int = 1, recon: bool = True) -> dict:
    """Parameters, forward FLOPs per image, and a training step's per real image.

    The step is the training loop's (gan.training.phases), counted with its backward passes: D's
    phase (G's fakes, D on the reals, with its decoders where the architecture has them and
    `recon` is on, i.e. unless --recon-weight 0, and on the fakes detached), then G's phase (D's
    weights frozen: only gradients of its inputs), on G's fakes from D's phase where the step
    shares them (`Arch.shares_fakes`), else on fresh ones (D's phase then ran G without a graph).
    Lazy regularization (R1, path length), augmentation and the EMA are left out."""
    key = (json.dumps(cfg.to_dict(), sort_keys=True), grad_accum, recon)
    if key not in _cache:
        _cache[key] = _count(cfg, grad_accum, recon)
    return dict(_cache[key])


def run_summary(mcfg: ModelConfig, cfg: TrainConfig) -> dict:
    """`model_summary` for a run: its gradient accumulation, D's decoders unless --recon-weight 0
    (on one step in --recon-interval's N),
    and the perceptual pull's network where --match-perceptual is on (`pull_flops`: its forward on
    each matched fake and its real image, and the backward to the fake, per real image of the step)."""
    s = model_summary(mcfg, cfg.grad_accum, recon=cfg.recon_weight > 0)
    if s["decoder_flops"] > 0 and cfg.recon_interval > 1:  # lazy reconstruction: the decoders' share of 1 step in N
        off = model_summary(mcfg, cfg.grad_accum, recon=False)["train_flops"]
        s["train_flops"] = off + (s["train_flops"] - off) / cfg.recon_interval
    s["pull_flops"] = pull_flops(mcfg.resolution) * cfg.match_frac if cfg.match_perceptual > 0 else 0.0
    s["train_flops"] += s["pull_flops"]
    return s


def pull_flops(resolution: int) -> float:
    """FLOPs of the perceptual pull (gan.training.matching.FeaturePull) per matched image: Lite0's
    first stages on the fake (with the backward to it) and on its real image, at the model's size
    up to the pull's cap. Counted on the network without its weights (the count is the shapes')."""
    key = ("pull", resolution)
    if key not in _cache:
        from ..metrics.lite0 import Lite0
        from .matching import FeaturePull

        pull = FeaturePull("cpu", net=Lite0())  # the training loop's own pull, on unloaded weights
        fake = (torch.rand(N, 3, resolution, resolution) * 2 - 1).requires_grad_(True)
        real = torch.rand(N, 3, resolution, resolution) * 2 - 1
        with FlopCounterMode(display=False) as fc:
            pull(fake, real).backward()
        _cache[key] = fc.get_total_flops() / N
    return _cache[key]


def _count(cfg: ModelConfig, grad_accum: int, recon: bool) -> dict:
    arch = arch_of(cfg)
    G, D = build_generator(cfg), build_discriminator(cfg)
    params = {"g_params": sum(p.numel() for p in G.parameters()),
              "d_params": sum(p.numel() for p in D.parameters() if p.requires_grad),
              "d_frozen": sum(p.numel() for p in D.parameters() if not p.requires_grad)}  # --d-lite0's network
    small = params["g_params"] + params["d_params"] <= CPU_COUNT_PARAMS and cfg.resolution <= CPU_COUNT_RES
    device = "cpu" if small else "meta"
    G, D = G.to(device), D.to(device)
    z = torch.randn(N, cfg.z_dim, device=device)
    c = torch.zeros(N, dtype=torch.long, device=device) if cfg.c_dim or cfg.clusters else None  # D's classes
    real = torch.randn(N, 3, cfg.resolution, cfg.resolution, device=device)
    decode = arch.self_supervised and recon
    shared = arch.shares_fakes(grad_accum)

    def count(fn) -> float:
        with FlopCounterMode(display=False) as fc:
            fn()
        return fc.get_total_flops() / N

    def step():
        fake = G(z, c)  # an unshared one is only used detached (its graph is not counted: no backward)
        real_out = D(real, c, recon=True) if decode else D(real, c)
        loss = real_out[0].mean() + real_out[1].mean() if decode else real_out.mean()
        (loss + D(fake.detach(), c).mean()).backward()
        D.requires_grad_(False)
        D(fake if shared else G(z, c), c).mean().backward()

    train = count(step)
    # The forward counts, with G and D frozen rather than under no_grad(): FlopCounterMode's module
    # tracker trips over no_grad tensors derived from parameters that require grad.
    G.requires_grad_(False)
    D.requires_grad_(False)
    g = count(lambda: G(z, c))
    d = count(lambda: D(real, c))
    decoders = count(lambda: D(real, c, recon=True)) - d if decode else 0.0
    return {**params, "g_flops": g, "d_flops": d, "decoder_flops": decoders, "train_flops": train}
