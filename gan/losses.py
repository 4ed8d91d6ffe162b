"""Adversarial losses and regularizers as pure functions of logits / tensors."""
from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("logistic", "hinge")


def d_loss(kind: str, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator loss, mean over the batch."""
    if kind == "logistic":
        return F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()
    if kind == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    raise ValueError(f"unknown loss {kind!r}")


def g_loss(kind: str, fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator loss: non-saturating logistic, or the hinge generator loss."""
    if kind == "logistic":
        return F.softplus(-fake_logits).mean()
    if kind == "hinge":
        return -fake_logits.mean()
    raise ValueError(f"unknown loss {kind!r}")


def r1_penalty(real_logits: torch.Tensor, real_img: torch.Tensor) -> torch.Tensor:
    """Per-sample squared gradient norm of D at real images (Mescheder et al. 2018)."""
    (grad,) = torch.autograd.grad(real_logits.float().sum(), real_img, create_graph=True)
    return grad.float().square().sum(dim=(1, 2, 3))


def path_length(img: torch.Tensor, ws: torch.Tensor, pl_mean: torch.Tensor, decay: float = 0.01):
    """StyleGAN2 path-length regularizer. Returns (penalty per sample, updated pl_mean)."""
    noise = torch.randn_like(img) / (img.shape[2] * img.shape[3]) ** 0.5
    (grad,) = torch.autograd.grad((img * noise).float().sum(), ws, create_graph=True)
    lengths = grad.float().square().sum(2).mean(1).sqrt()
    new_mean = pl_mean.lerp(lengths.mean().detach(), decay)
    return (lengths - new_mean).square(), new_mean
