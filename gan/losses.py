"""Adversarial losses and regularizers as pure functions of logits / tensors."""
from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("logistic", "hinge", "relativistic")


def d_loss(kind: str, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator loss, mean over the batch."""
    if kind == "logistic":
        return F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()
    if kind == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    if kind == "relativistic":  # R3GAN's relativistic pairing: real i should outscore fake i
        return F.softplus(fake_logits - real_logits).mean()
    raise ValueError(f"unknown loss {kind!r}")


def g_loss(kind: str, fake_logits: torch.Tensor, real_logits: torch.Tensor | None = None) -> torch.Tensor:
    """Generator loss: non-saturating logistic, the hinge generator loss, or relativistic pairing
    (fake i should outscore real i; `real_logits` paired with `fake_logits`, constants to G)."""
    if kind == "logistic":
        return F.softplus(-fake_logits).mean()
    if kind == "hinge":
        return -fake_logits.mean()
    if kind == "relativistic":
        return F.softplus(real_logits - fake_logits).mean()
    raise ValueError(f"unknown loss {kind!r}")


def feature_distance(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    """LPIPS's distance without its learned weights (Zhang et al. 2018): at each pair of feature
    maps, both unit-normalized over channels, the squared difference summed over channels and
    averaged over positions and images; summed over the maps. 0 for equal features, at most 4 a map."""
    total = 0.0
    for x, y in zip(a, b):
        x, y = x.float(), y.float()
        x = x * torch.rsqrt(x.pow(2).sum(1, keepdim=True) + 1e-10)
        y = y * torch.rsqrt(y.pow(2).sum(1, keepdim=True) + 1e-10)
        total = total + (x - y).pow(2).sum(1).mean()
    return total


def _scaled_grad(out: torch.Tensor, inp: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    """d out / d inp, kept in the graph. Under fp16 the inner backward runs on `out * scale`
    (the GradScaler's scale) and is divided back, so small fp16 gradients do not underflow;
    an overflow shows up as inf, which the scaler then skips."""
    if scale is not None:
        out = out * scale
    (grad,) = torch.autograd.grad(out, inp, create_graph=True)
    grad = grad.float()
    return grad / scale if scale is not None else grad


def r1_penalty(real_logits: torch.Tensor, real_img: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample squared gradient norm of D at real images (R1, Mescheder et al. 2018); at
    generated images it is R2 (R3GAN regularizes both)."""
    grad = _scaled_grad(real_logits.float().sum(), real_img, scale)
    return grad.square().sum(dim=(1, 2, 3))


def path_length(img: torch.Tensor, ws: torch.Tensor, pl_mean: torch.Tensor, decay: float = 0.01,
                scale: torch.Tensor | None = None):
    """StyleGAN2 path-length regularizer. Returns (penalty per sample, updated pl_mean)."""
    noise = torch.randn_like(img) / (img.shape[2] * img.shape[3]) ** 0.5
    grad = _scaled_grad((img * noise).float().sum(), ws, scale)
    lengths = grad.square().sum(2).mean(1).sqrt()
    new_mean = pl_mean.lerp(lengths.mean().detach(), decay)
    return (lengths - new_mean).square(), new_mean
