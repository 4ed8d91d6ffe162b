"""Projection: the latent whose image is closest to a target image, so a real artwork can be
re-rendered or walked from like a sample.

StyleGAN: one w (shared by every layer), optimized from the mean w with noise added to it that
fades out over the first three quarters, and a learning rate that ramps up and then down (the
recipe of StyleGAN2's projector). DCGAN: its z, from the best of a few random starts, with no
added noise. The distance is a perceptual one (VGG activations, each unit-normalized over
channels, squared differences averaged per layer, as LPIPS does without its learned weights)
plus the pixels' mean squared error. Synthesis noise stays at the model's fixed inputs, which
is what `sample` renders with, so a saved latent renders the projected image exactly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from .style import VGGFeatures

LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv4_2")
MIN_VGG_SIDE = 64  # smaller images are upsampled for the VGG: at 32 px conv4 would see 4x4


@dataclass
class ProjectOptions:
    steps: int = 300
    lr: float = 0.1
    noise: float = 0.05  # initial noise on w, as a fraction of the spread of w
    pixel_weight: float = 1.0
    starts: int = 64  # DCGAN: random z tried before optimizing ...
    keep: int = 8  # ... of which the closest this many are optimized together; the best one wins
    seed: int = 0


def target_tensor(img: Image.Image, size: int) -> torch.Tensor:
    """(1, 3, size, size) in [-1, 1]: the centre square, resized as data_prep resizes."""
    w, h = img.size
    s = min(w, h)
    img = img.convert("RGB").crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    arr = np.asarray(img.resize((size, size), Image.LANCZOS), dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1)[None] / 127.5 - 1


class _Distance:
    """Perceptual + pixel distance of images in [-1, 1] to one target."""

    def __init__(self, vgg: VGGFeatures, target: torch.Tensor, pixel_weight: float):
        self.vgg, self.target, self.pixel_weight = vgg, target, pixel_weight
        self.side = max(target.shape[-1], MIN_VGG_SIDE)
        with torch.no_grad():
            self.target_feats = self._features(target)

    def _features(self, img: torch.Tensor) -> list[torch.Tensor]:
        x = (img.float().clamp(-1, 1) + 1) / 2
        if x.shape[-1] < self.side:
            x = F.interpolate(x, size=(self.side, self.side), mode="bilinear", align_corners=False)
        feats = self.vgg(x)
        return [F.normalize(feats[k].float(), dim=1, eps=1e-8) for k in LAYERS]

    def __call__(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per image: (total distance, perceptual part)."""
        feats = self._features(img)
        perceptual = sum((f - t).square().sum(1).mean((1, 2)) for f, t in zip(feats, self.target_feats))
        pixel = (img.float() - self.target).square().mean((1, 2, 3))
        return perceptual + self.pixel_weight * pixel, perceptual


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two images in [-1, 1] (peak-to-peak 2)."""
    mse = (a.float().clamp(-1, 1) - b.float().clamp(-1, 1)).square().mean().item()
    return float("inf") if mse == 0 else 10 * math.log10(4 / mse)


def _lr(t: float, base: float) -> float:
    """Ramp up over the first 5%, cosine ramp down over the last 25% (t in [0, 1])."""
    down = min(1.0, (1 - t) / 0.25)
    return base * min(1.0, t / 0.05) * (0.5 - 0.5 * math.cos(down * math.pi))


def project(sampler, target: Image.Image, vgg: VGGFeatures, opts: ProjectOptions, c: int | None = None,
            progress: bool = True, on_step=None) -> tuple[dict, torch.Tensor, dict]:
    """Returns ({"space": "w" or "z", "latent": (1, dim) tensor}, the image rendered from it
    (1, 3, R, R) in [-1, 1], report: distance and PSNR at the start and the end, per-step history).
    `on_step(done, total, {"distance": ...})` is called after every step; an exception it raises
    (a cancel) ends the projection."""
    G, device, res = sampler.G, sampler.device, sampler.cfg.resolution
    vgg = vgg.to(device)
    goal = target_tensor(target, res).to(device)
    dist = _Distance(vgg, goal, opts.pixel_weight)
    gen = torch.Generator().manual_seed(opts.seed)
    G.requires_grad_(False)
    # Rendered by `sampler.render`, as `sample --latent` and walks render: a saved latent gives the same image.
    if sampler.arch.mapping:
        space = "w"
        with torch.no_grad():
            w_avg = sampler.w_mean(c).float().reshape(1, -1)
            z = torch.randn(4096, sampler.cfg.z_dim, generator=gen).to(device)
            ws = G.mapping(z, sampler._c(4096, c))[:, 0].float()
            w_std = ws.sub(w_avg).square().sum(1).mean().sqrt().item()  # spread of w around its mean
        start = w_avg.clone()
    else:
        space, w_std = "z", 0.0
        with torch.no_grad():  # the closest of a few random starts
            zs = torch.randn(opts.starts, sampler.cfg.z_dim, generator=gen).to(device)
            d = torch.cat([dist(sampler.render(part, c))[0] for part in zs.split(16)])
            start = zs[d.argsort()[: max(1, min(opts.keep, opts.starts))]].clone()
    latent = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([latent], lr=opts.lr, betas=(0.9, 0.999))
    with torch.no_grad():
        img0 = sampler.render(latent, c)
        d0, p0 = dist(img0)
        img0, d0, p0 = img0[:1], d0[0], p0[0]  # the start: the closest one
    history = []
    bar = tqdm(total=opts.steps, desc="project", disable=not progress, dynamic_ncols=True)
    for step in range(opts.steps):
        t = step / max(opts.steps - 1, 1)
        for group in opt.param_groups:
            group["lr"] = _lr(t, opts.lr)
        x = latent
        if space == "w" and opts.noise > 0:
            scale = w_std * opts.noise * max(0.0, 1 - t / 0.75) ** 2
            x = latent + torch.randn(latent.shape, generator=gen).to(device) * scale
        d, p = dist(sampler.render(x, c))
        opt.zero_grad(set_to_none=True)
        d.sum().backward()
        opt.step()
        history.append({"distance": d.min().item(), "perceptual": p[d.argmin()].item()})
        bar.update(1)
        bar.set_postfix(distance=f"{history[-1]['distance']:.4g}", refresh=False)
        if on_step is not None:
            on_step(step + 1, opts.steps, history[-1])
    bar.close()
    with torch.no_grad():
        d, _ = dist(sampler.render(latent, c))
        final = latent.detach()[d.argmin()][None]  # the best of the latents optimized together
        img = sampler.render(final, c)
        d1, p1 = dist(img)
    report = {"space": space, "steps": opts.steps,
              "start": {"distance": d0.item(), "perceptual": p0.item(), "psnr": psnr(img0, goal)},
              "end": {"distance": d1.item(), "perceptual": p1.item(), "psnr": psnr(img, goal)},
              "history": history}
    return {"space": space, "latent": final.cpu()}, img.cpu(), report


LATENT_FORMAT = "artgan projected latent"


def latent_bytes(latent: dict, sampler, class_name: str | None, model: str) -> bytes:
    """The latent as safetensors (no pickle), with what `read_latent` checks it against."""
    from safetensors.torch import save

    meta = {"format": LATENT_FORMAT, "space": latent["space"], "arch": sampler.cfg.arch,
            "resolution": str(sampler.cfg.resolution), "class": class_name or "", "model": str(model)}
    return save({"latent": latent["latent"].float().contiguous()}, metadata=meta)


def save_latent(path, latent: dict, sampler, class_name: str | None, model: str) -> None:
    from .integrity import write_atomic

    data = latent_bytes(latent, sampler, class_name, model)
    write_atomic(path, lambda tmp: tmp.write_bytes(data))


def read_latent(path, sampler) -> dict:
    """A latent saved by `project`, checked against the model that is to render it:
    {"space", "latent": (1, dim), "c": class index or None}."""
    from pathlib import Path

    from safetensors import safe_open

    from .errors import UserError

    p = Path(path)
    if not p.is_file():
        raise UserError(f"--latent {path}: no such file")
    try:
        with safe_open(str(p), "pt") as f:
            meta = f.metadata() or {}
            t = f.get_tensor("latent") if "latent" in f.keys() else None
    except Exception as e:  # not safetensors, truncated, damaged
        raise UserError(f"--latent {path}: not a latent saved by generate.py project "
                        f"({(str(e).splitlines() or [''])[0][:120]})") from None
    if meta.get("format") != LATENT_FORMAT or t is None:
        raise UserError(f"--latent {path}: not a latent saved by generate.py project")
    space = "w" if sampler.arch.mapping else "z"
    dim = sampler.cfg.w_dim if space == "w" else sampler.cfg.z_dim
    if meta.get("space") != space or tuple(t.shape) != (1, dim) or not bool(torch.isfinite(t).all()):
        raise UserError(f"--latent {path}: a {meta.get('space')} latent of size {t.shape[-1]} from a "
                        f"{meta.get('arch')} model; this model takes a {space} latent of size {dim} "
                        "(project the image with this model)")
    c = None
    if sampler.cfg.c_dim and not sampler.arch.mapping:  # DCGAN takes the class beside z; StyleGAN's w holds it
        name = meta.get("class", "")
        if name not in sampler.cfg.class_names:
            raise UserError(f"--latent {path}: projected for class {name!r}, which this model does not have")
        c = sampler.cfg.class_names.index(name)
    return {"space": space, "latent": t.float(), "c": c}
