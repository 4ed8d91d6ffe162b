"""StyleGAN2-style generator and discriminator in plain PyTorch (no custom CUDA ops).

G: mapping network (z, class embedding) -> w; constant 4x4 input; per resolution two
modulated 3x3 convs (the first upsampling, anti-aliased) with per-pixel noise, and a
toRGB whose outputs are summed across resolutions (skip architecture).
D: residual blocks with anti-aliased downsampling, minibatch stddev, projection head
for class-conditional training.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..config import ModelConfig
from .layers import EqualConv2d, EqualLinear, MinibatchStd, ModulatedConv2d, Upsample, lrelu

RESOLUTIONS = (16, 32, 64, 128, 256, 512, 1024)


def channels(cfg: ModelConfig, res: int) -> int:
    return min(cfg.channel_base // res, cfg.channel_max)


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class MappingNetwork(nn.Module):
    def __init__(self, cfg: ModelConfig, num_ws: int, w_avg_beta: float = 0.995):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = cfg.z_dim, cfg.c_dim, cfg.w_dim
        self.num_ws = num_ws  # how many copies of w the synthesis network consumes
        self.w_avg_beta = w_avg_beta  # EMA of w for truncation
        self.embed = EqualLinear(cfg.c_dim, cfg.w_dim) if cfg.c_dim else None
        in_dim = cfg.z_dim + (cfg.w_dim if cfg.c_dim else 0)
        dims = [in_dim] + [cfg.w_dim] * cfg.mapping_layers
        self.layers = nn.Sequential(*[EqualLinear(a, b, lr_mul=0.01, activate=True) for a, b in zip(dims[:-1], dims[1:])])
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, truncation: float = 1.0,
                update_w_avg: bool = False) -> torch.Tensor:
        x = normalize_2nd_moment(z.float())
        if self.embed is not None:
            onehot = torch.nn.functional.one_hot(c, self.c_dim).float()
            x = torch.cat([x, normalize_2nd_moment(self.embed(onehot))], dim=1)
        w = self.layers(x)
        if update_w_avg:
            self.w_avg.copy_(w.detach().float().mean(0).lerp(self.w_avg, self.w_avg_beta))
        if truncation != 1.0:
            w = self.w_avg.lerp(w, truncation)
        return w.unsqueeze(1).repeat(1, self.num_ws, 1)


class SynthesisLayer(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, w_dim: int, res: int, up: bool = False,
                 up_conv: str = "transposed"):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, 3, w_dim, up=up, up_conv=up_conv)
        self.res = res  # output resolution (noise map size)
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        # Fixed noise for reproducible sampling ("const"): part of the saved model.
        self.register_buffer("noise_const", torch.randn(res, res))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: str = "random") -> torch.Tensor:
        x = self.conv(x, w)
        if noise == "random":
            n = torch.randn(x.shape[0], 1, self.res, self.res, device=x.device, dtype=x.dtype)
            x = x + n * self.noise_strength.to(x.dtype)
        elif noise == "const":
            x = x + self.noise_const.to(x.dtype) * self.noise_strength.to(x.dtype)
        elif noise != "none":
            raise ValueError(f"noise mode {noise!r}: use random, const or none")
        return lrelu(x + self.bias.to(x.dtype)[None, :, None, None])


class ToRGB(nn.Module):
    def __init__(self, in_ch: int, w_dim: int):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, 3, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(3))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.conv(x, w) + self.bias.to(x.dtype)[None, :, None, None]


class SynthesisNetwork(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.resolution = cfg.resolution
        log2 = int(math.log2(cfg.resolution))
        self.const = nn.Parameter(torch.randn(channels(cfg, 4), 4, 4))
        self.layers = nn.ModuleList()
        self.torgbs = nn.ModuleList()
        self.upsample = Upsample()
        c4 = channels(cfg, 4)
        self.layers.append(SynthesisLayer(c4, c4, cfg.w_dim, 4))
        self.torgbs.append(ToRGB(c4, cfg.w_dim))
        prev = c4
        for r in range(3, log2 + 1):
            res = 2 ** r
            ch = channels(cfg, res)
            self.layers.append(SynthesisLayer(prev, ch, cfg.w_dim, res, up=True, up_conv=cfg.up_conv))
            self.layers.append(SynthesisLayer(ch, ch, cfg.w_dim, res))
            self.torgbs.append(ToRGB(ch, cfg.w_dim))
            prev = ch
        # Each conv consumes one w, each toRGB shares the w of the conv after it (StyleGAN2 layout).
        self.num_ws = len(self.layers) + 1

    def forward(self, ws: torch.Tensor, noise: str = "random") -> torch.Tensor:
        x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1).to(ws.dtype)
        x = self.layers[0](x, ws[:, 0], noise)
        img = self.torgbs[0](x, ws[:, 1])
        i = 1
        for block in range(1, len(self.torgbs)):
            x = self.layers[i](x, ws[:, i], noise)
            x = self.layers[i + 1](x, ws[:, i + 1], noise)
            img = self.upsample(img) + self.torgbs[block](x, ws[:, i + 2])
            i += 2
        return img


class StyleGANGenerator(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.z_dim, self.c_dim, self.w_dim = cfg.z_dim, cfg.c_dim, cfg.w_dim
        self.synthesis = SynthesisNetwork(cfg)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(cfg, self.num_ws)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, truncation: float = 1.0,
                noise: str = "random", style_mixing: float = 0.0, update_w_avg: bool = False) -> torch.Tensor:
        ws = self.mapping(z, c, truncation=truncation, update_w_avg=update_w_avg)
        if style_mixing > 0:
            ws = self.mix_styles(ws, c, style_mixing)
        return self.synthesis(ws, noise=noise)

    def mix_styles(self, ws: torch.Tensor, c: torch.Tensor | None, prob: float) -> torch.Tensor:
        """Regularization: from a random layer on, use the w of a second random z."""
        b = ws.shape[0]
        cutoff = torch.randint(1, self.num_ws, (b,), device=ws.device)
        cutoff = torch.where(torch.rand(b, device=ws.device) < prob, cutoff, torch.full_like(cutoff, self.num_ws))
        ws2 = self.mapping(torch.randn_like(ws[:, 0, : self.z_dim]), c)
        layer = torch.arange(self.num_ws, device=ws.device)[None, :]
        return torch.where((layer >= cutoff[:, None])[:, :, None], ws2, ws)


class DiscriminatorBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv0 = EqualConv2d(in_ch, in_ch, 3, activate=True)
        self.conv1 = EqualConv2d(in_ch, out_ch, 3, activate=True, down=True)
        self.skip = EqualConv2d(in_ch, out_ch, 1, bias=False, down=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.skip(x)
        x = self.conv1(self.conv0(x))
        return (x + y) * (1 / math.sqrt(2))


class StyleGANDiscriminator(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        log2 = int(math.log2(cfg.resolution))
        self.from_rgb = EqualConv2d(3, channels(cfg, cfg.resolution), 1, activate=True)
        self.blocks = nn.Sequential(*[DiscriminatorBlock(channels(cfg, 2 ** r), channels(cfg, 2 ** (r - 1)))
                                      for r in range(log2, 2, -1)])
        c4 = channels(cfg, 4)
        self.mbstd = MinibatchStd(cfg.mbstd_group)
        self.conv = EqualConv2d(c4 + 1, c4, 3, activate=True)
        self.fc = EqualLinear(c4 * 16, c4, activate=True)
        cmap = c4 if cfg.c_dim else 1
        self.out = EqualLinear(c4, cmap)
        # Projection head: class embedding dotted with the final features.
        self.embed = EqualLinear(cfg.c_dim, cmap) if cfg.c_dim else None

    def input_blocks(self) -> list[nn.Module]:
        """The residual blocks, input side first; the first carries fromRGB."""
        blocks = list(self.blocks)
        return [nn.ModuleList([self.from_rgb, blocks[0]])] + blocks[1:]

    def forward(self, img: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        x = self.blocks(self.from_rgb(img))
        x = self.conv(self.mbstd(x))
        x = self.out(self.fc(x.flatten(1)))
        if self.embed is not None:
            cmap = self.embed(torch.nn.functional.one_hot(c, self.cfg.c_dim).to(x.dtype))
            x = (x * cmap).sum(dim=1, keepdim=True) / math.sqrt(cmap.shape[1])
        return x
