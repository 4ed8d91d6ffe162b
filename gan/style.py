"""VGG19 features, Gram matrices and the Gatys et al. style / content / TV losses.

Weights: torchvision's VGG19 ImageNet weights, fetched and cached the standard
torchvision way; offline and uncached is a clear error naming the file to supply, never a
silent fallback. `weights="random"` exists for tests and always warns.
"""
from __future__ import annotations

import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import UserError
from .weights import ensure_cached, load_state_file

# Indices into torchvision's vgg19().features (outputs after the ReLU).
STYLE_LAYERS = {"conv1_1": 1, "conv2_1": 6, "conv3_1": 11, "conv4_1": 20, "conv5_1": 29}
CONTENT_LAYER = ("conv4_2", 22)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_vgg_state(weights: str | None) -> dict | None:
    """State dict for torchvision's vgg19 (None = random init). `weights`: None (torchvision's
    cached/downloaded ImageNet weights), a file path (.pth / .safetensors) or 'random'."""
    if weights == "random":
        print("note: --vgg-weights random: VGG19 is randomly initialized, so the style loss is NOT the "
              "perceptual Gatys loss (the result shows the mechanics, not the real look); README 'VGG weights' "
              "says how to supply the ImageNet weights", file=sys.stderr)
        return None
    if weights is None:
        from torchvision.models import VGG19_Weights

        weights = str(ensure_cached(VGG19_Weights.IMAGENET1K_V1.url, "VGG19", "--vgg-weights"))
    return load_state_file(weights, "VGG19", "--vgg-weights")


class VGGFeatures(nn.Module):
    """VGG19 up to conv5_1, returning the style layers' and the content layer's activations."""

    def __init__(self, state: dict | None):
        super().__init__()
        from torchvision.models import vgg19

        net = vgg19(weights=None)
        if state is not None:
            try:
                net.load_state_dict(state)
            except RuntimeError as e:
                raise UserError(f"VGG19 weights do not match torchvision's vgg19 ({str(e).splitlines()[0]})") from None
        last = max(STYLE_LAYERS.values()) + 1
        self.features = net.features[:last].eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.taps = {v: k for k, v in STYLE_LAYERS.items()}
        self.taps[CONTENT_LAYER[1]] = CONTENT_LAYER[0]

    def with_dtype(self, dtype: torch.dtype) -> "VGGFeatures":
        """Run the convolutions in `dtype` (bf16 or float32); normalization stays float32."""
        self.features.to(dtype)
        return self

    def forward(self, img01: torch.Tensor) -> dict[str, torch.Tensor]:
        """img01: (N, 3, H, W) in [0, 1]; normalized the way torchvision's VGG expects. Outputs
        come in the dtype of the convolution weights (see `with_dtype`)."""
        x = ((img01.float() - self.mean) / self.std).to(self.features[0].weight.dtype)
        out = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out[self.taps[i]] = x
        return out


def gram(feat: torch.Tensor) -> torch.Tensor:
    n, c, h, w = feat.shape
    f = feat.float().reshape(n, c, h * w)
    return f @ f.transpose(1, 2) / (c * h * w)


def style_loss(feats: dict, target_grams: dict) -> torch.Tensor:
    return sum(F.mse_loss(gram(feats[k]), target_grams[k], reduction="sum") for k in STYLE_LAYERS) / len(STYLE_LAYERS)


def content_loss(feats: dict, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(feats[CONTENT_LAYER[0]].float(), target.float())


def tv_loss(img: torch.Tensor) -> torch.Tensor:
    return (img[..., 1:, :] - img[..., :-1, :]).abs().mean() + (img[..., :, 1:] - img[..., :, :-1]).abs().mean()
