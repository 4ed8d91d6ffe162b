"""Model registry: every model is rebuilt from its ModelConfig alone.

What an architecture can do is data on its entry, so the training loop and the sampler ask
the entry instead of testing architecture names.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch.nn as nn

from ..config import G_OUTS, ModelConfig
from ..errors import UserError
from . import dcgan, fastgan, stylegan
from .layers import UP_CONVS

LITE0_CRITIC_STAGES = fastgan.ProjectedCritics.MAX_STAGES
MAX_CLUSTERS = 64  # --clusters: more, and a small collection's clusters hold a handful of images each


@dataclass(frozen=True)
class Arch:
    generator: type  # nn.Module class built from a ModelConfig
    discriminator: type
    resolutions: tuple  # output sizes it supports
    mapping: bool  # G has a mapping network: truncation toward the mean w, interpolation in w
    style_mixing: bool  # G(..., style_mixing=p) and `generate.py mix`
    path_length: bool  # G.mapping / G.synthesis split that path-length regularization needs
    noise_modes: bool  # G(..., noise="random"|"const"|"none")
    self_supervised: bool = False  # D(..., recon=True) -> (logits, reconstruction loss per sample)
    # One G forward per step: the fakes D learns from (detached) are the ones G's loss then
    # backpropagates through, D's update in between (DCGAN's and FastGAN's own loops). Otherwise
    # G's phase draws new fakes (StyleGAN2's loop, which also keeps G's activations out of D's
    # phase, where GPU memory is tightest).
    shared_fakes: bool = False
    # resolution -> the sizes of D's feature maps whose cells it can also score (--d-patch); None: none
    patch_sizes: Callable[[int], list] | None = None
    # resolution -> the sizes of a small copy of the image D can also score (--d-layout); None: none
    layout_sizes: Callable[[int], list] | None = None
    # resolution -> the feature-map sizes self-attention may run at in G and D (--attn); None: none
    attn_sizes: Callable[[int], list] | None = None
    # G reads a cluster of the collection from its latent and D scores against it (--clusters)
    self_conditioning: bool = False
    # D(x, c, groups=N) scores N equal batches in one pass as N calls would (its batch norms keep
    # their statistics apart): D's phase scores its reals and fakes so
    grouped_scores: bool = False
    # G's final activation is ModelConfig.g_out (--g-out); otherwise fixed by the architecture
    output_choice: bool = False
    # D also scores images by critics on a frozen ImageNet network's features (--d-lite0)
    feature_critics: bool = False

    def shares_fakes(self, grad_accum: int) -> bool:
        """Whether a training step runs G once (`shared_fakes`): not with gradient accumulation,
        where every micro-batch's G graph would be held at once."""
        return self.shared_fakes and grad_accum == 1


REGISTRY = {
    "dcgan": Arch(dcgan.DCGANGenerator, dcgan.DCGANDiscriminator, dcgan.RESOLUTIONS,
                  mapping=False, style_mixing=False, path_length=False, noise_modes=False, shared_fakes=True,
                  grouped_scores=True),
    "stylegan": Arch(stylegan.StyleGANGenerator, stylegan.StyleGANDiscriminator, stylegan.RESOLUTIONS,
                     mapping=True, style_mixing=True, path_length=True, noise_modes=True),
    # Small collections (100-5,000 images): FastGAN-style G with skip-layer excitation, a residual
    # D that also reconstructs its reals. z space (no mapping network, so no mixing or w walks).
    "fastgan": Arch(fastgan.FastGANGenerator, fastgan.FastGANDiscriminator, fastgan.RESOLUTIONS,
                    mapping=False, style_mixing=False, path_length=False, noise_modes=True, self_supervised=True,
                    shared_fakes=True, patch_sizes=fastgan.feature_sizes,
                    layout_sizes=fastgan.inner_sizes, attn_sizes=fastgan.inner_sizes, self_conditioning=True,
                    grouped_scores=True, output_choice=True, feature_critics=True),
}


def arch_of(cfg: ModelConfig) -> Arch:
    if cfg.arch not in REGISTRY:
        raise UserError(f"unknown architecture {cfg.arch!r}; choose from {', '.join(REGISTRY)}")
    return REGISTRY[cfg.arch]


def nearest_sizes(res: int, supported: tuple) -> str:
    """'64 or 128' for 100: the supported sizes just below and above `res`."""
    below = [r for r in supported if r < res]
    above = [r for r in supported if r > res]
    return " or ".join(str(r) for r in ([below[-1]] if below else []) + ([above[0]] if above else []))


def _check_size_option(cfg: ModelConfig, flag: str, value: int, sizes_of, lacks: str, listing: str) -> None:
    """A size-valued model option (0: off): refused where the architecture has no such sizes
    (`sizes_of` None; `lacks` follows "--arch NAME" to say what it has instead), or at a size not
    among `sizes_of(resolution)` (`listing` names them, with a {sizes} field)."""
    if not value:
        return
    if sizes_of is None:
        raise UserError(f"{flag}: --arch {cfg.arch}{lacks}; use --arch fastgan or {flag} 0")
    sizes = sizes_of(cfg.resolution)
    if value not in sizes:
        raise UserError(f"{flag} {value}: at {cfg.resolution}px {listing.format(sizes=', '.join(map(str, sizes)))}; "
                        "use one of those, or 0")


def check_config(cfg: ModelConfig) -> None:
    supported = arch_of(cfg).resolutions
    if cfg.resolution not in supported:
        raise UserError(f"--arch {cfg.arch} does not support {cfg.resolution}px; it supports "
                        f"{', '.join(map(str, supported))} (prepare the store at one of those)")
    arch = arch_of(cfg)
    _check_size_option(cfg, "--d-patch", cfg.d_patch, arch.patch_sizes, "'s discriminator scores whole images only",
                       "D's feature maps are {sizes} cells across")
    _check_size_option(cfg, "--d-layout", cfg.d_layout, arch.layout_sizes,
                       "'s discriminator scores the full-size image only", "it can be {sizes}")
    _check_size_option(cfg, "--attn", cfg.attn, arch.attn_sizes, " has no self-attention blocks",
                       "self-attention can run at {sizes} px")
    if cfg.d_lite0:
        if not arch.feature_critics:
            raise UserError(f"--d-lite0: --arch {cfg.arch}'s discriminator has no feature critics; use --arch fastgan "
                            "or --d-lite0 0")
        if not 1 <= cfg.d_lite0 <= LITE0_CRITIC_STAGES:
            raise UserError(f"--d-lite0 {cfg.d_lite0}: use 1 to {LITE0_CRITIC_STAGES} (a critic on each of that many "
                            "of EfficientNet-Lite0's stages), or 0 for none")
    if cfg.clusters:
        if not arch.self_conditioning:
            raise UserError(f"--clusters: --arch {cfg.arch} cannot condition on clusters; use --arch fastgan or --clusters 0")
        if cfg.c_dim:
            raise UserError("--clusters is for unconditional models; a --cond model has the store's classes already "
                            "(drop one of the two)")
        if not 2 <= cfg.clusters <= MAX_CLUSTERS:
            raise UserError(f"--clusters {cfg.clusters}: use 2 to {MAX_CLUSTERS}, or 0 for none")
    if cfg.g_out not in G_OUTS:  # a saved config.json's; the flag has choices
        raise UserError(f"the model config's g_out is {cfg.g_out!r}; it must be {' or '.join(G_OUTS)}")
    if cfg.g_out != G_OUTS[0] and not arch.output_choice:
        choosers = " or ".join(f"--arch {n}" for n, a in REGISTRY.items() if a.output_choice)
        raise UserError(f"--g-out {cfg.g_out}: --arch {cfg.arch}'s G has a fixed output (StyleGAN's linear, DCGAN's "
                        f"tanh); use {choosers} or drop --g-out")
    if cfg.up_conv not in UP_CONVS:  # only ever read from a saved config.json
        raise UserError(f"the model config's up_conv is {cfg.up_conv!r}; it must be one of {', '.join(UP_CONVS)}")


def build_generator(cfg: ModelConfig) -> nn.Module:
    check_config(cfg)
    return REGISTRY[cfg.arch].generator(cfg)


def build_discriminator(cfg: ModelConfig) -> nn.Module:
    check_config(cfg)
    return REGISTRY[cfg.arch].discriminator(cfg)
