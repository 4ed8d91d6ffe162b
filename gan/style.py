"""VGG features, Gram matrices and the Gatys et al. style / content / TV losses, shared by
`generate.py refine` and style-guided fine-tuning in the trainer.

Networks: VGG19 (default) or VGG16, torchvision's ImageNet weights, fetched and cached the
standard torchvision way; offline and uncached is a clear error naming the file to supply,
never a silent fallback. `weights="random"` exists for tests and offline demos and always
says so; its random init is seeded, so every process and every resume sees the same net.

Layers (outputs after the ReLU): style on conv1_1, conv2_1, conv3_1, conv4_1, conv5_1 and
content on conv4_2, for both networks (their indices differ: VGG16 has fewer convs per block).
"""
from __future__ import annotations

import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import UserError
from .weights import VGG_URLS, ensure_cached, load_state_file

# Indices into torchvision's vgg19().features / vgg16().features.
LAYERS = {
    "vgg19": {"conv1_1": 1, "conv2_1": 6, "conv3_1": 11, "conv4_1": 20, "conv4_2": 22, "conv5_1": 29},
    "vgg16": {"conv1_1": 1, "conv2_1": 6, "conv3_1": 11, "conv4_1": 18, "conv4_2": 20, "conv5_1": 25},
}
STYLE_NAMES = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
CONTENT_NAME = "conv4_2"
STYLE_LAYERS = {k: LAYERS["vgg19"][k] for k in STYLE_NAMES}  # VGG19's, for callers that only know it
MIN_STYLE_SIDE = 32  # smaller style images would be upscaled into a style they do not have
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NETWORKS = tuple(LAYERS)


# torchvision's VGG layouts ("E" = VGG19, "D" = VGG16): conv widths, M = 2x2 max-pool. Built here
# rather than by importing torchvision.models, which pulls in every model and costs 1-2 s per
# process; the module indices (and so the state dict keys) are torchvision's.
VGG_CFGS = {
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
}


def vgg_layers(net: str) -> nn.Sequential:
    """torchvision's `vgg19().features` / `vgg16().features` (no batch norm), initialized the way
    torchvision initializes them, drawing from the global RNG in the same order."""
    layers, c = [], 3
    for v in VGG_CFGS[net]:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(c, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            c = v
    features = nn.Sequential(*layers)
    for m in features.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return features


def load_vgg_state(weights: str | None, net: str = "vgg19", flag: str = "--vgg-weights") -> dict | None:
    """State dict for torchvision's `net` (None = seeded random init). `weights`: None
    (torchvision's cached/downloaded ImageNet weights), a file path (.pth / .safetensors) or 'random'."""
    if net not in LAYERS:
        raise UserError(f"--vgg {net!r}: choose from {', '.join(NETWORKS)}")
    name = net.upper()
    if weights == "random":
        print(f"note: {flag} random: {name} is randomly initialized, so the style loss is NOT the "
              "perceptual Gatys loss (the result shows the mechanics, not the real look); README 'VGG weights' "
              "says how to supply the ImageNet weights", file=sys.stderr)
        return None
    if weights is None:
        weights = str(ensure_cached(VGG_URLS[net], name, flag))
    return load_state_file(weights, name, flag)


class VGGFeatures(nn.Module):
    """VGG up to conv5_1, returning the style layers' and the content layer's activations."""

    def __init__(self, state: dict | None, net: str = "vgg19"):
        super().__init__()
        # Only the convolutional part (torchvision's layout, so its state dicts load): building
        # the 120M-parameter classifier just to drop it took seconds per process.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # 'random' weights are the same everywhere, every time
            features = vgg_layers(net)
        if state is not None:
            own = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
            try:
                features.load_state_dict(own)
            except RuntimeError as e:
                raise UserError(f"{net.upper()} weights do not match torchvision's {net} "
                                f"({str(e).splitlines()[0]})") from None
        layers = LAYERS[net]
        self.net = net
        self.features = features[: max(layers.values()) + 1].eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.taps = {v: k for k, v in layers.items()}

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


def style_distance(feats: dict, target_grams: dict) -> torch.Tensor:
    """Per-image style loss (N,): squared Gram differences summed per layer, averaged over layers."""
    return sum((gram(feats[k]) - target_grams[k]).square().sum(dim=(1, 2)) for k in STYLE_NAMES) / len(STYLE_NAMES)


def style_loss(feats: dict, target_grams: dict) -> torch.Tensor:
    return style_distance(feats, target_grams).sum()


def content_loss(feats: dict, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(feats[CONTENT_NAME].float(), target.float())


def tv_loss(img: torch.Tensor) -> torch.Tensor:
    return (img[..., 1:, :] - img[..., :-1, :]).abs().mean() + (img[..., :, 1:] - img[..., :, :-1]).abs().mean()


class StyleTarget(nn.Module):
    """Gram targets of one or more style images (equal blend) at a fixed working size, and the
    per-image style distance of a batch of generated images to them."""

    def __init__(self, vgg: VGGFeatures, styles: list, size: int):
        super().__init__()
        import numpy as np

        self.vgg = vgg
        self.size = size  # images are compared at size x size
        grams = None
        with torch.no_grad():
            for im in styles:
                arr = np.asarray(im.convert("RGB").resize((size, size), 1), np.float32) / 255.0  # 1 = LANCZOS
                x = torch.from_numpy(arr).permute(2, 0, 1)[None].to(vgg.mean.device)
                g = {k: gram(v) / len(styles) for k, v in vgg(x).items() if k in STYLE_NAMES}
                grams = g if grams is None else {k: grams[k] + g[k] for k in g}
        for k, v in grams.items():
            self.register_buffer(f"gram_{k}", v)

    def targets(self) -> dict:
        return {k: getattr(self, f"gram_{k}") for k in STYLE_NAMES}

    def distance(self, imgs: torch.Tensor) -> torch.Tensor:
        """imgs: generator output in [-1, 1], (N, 3, R, R) -> (N,) relative style distances:
        per layer ||Gram - target||^2 / ||target||^2, averaged over the style layers. Relative,
        so one --style-weight means the same for any feature scale (VGG19/16, any weights)."""
        return self.distance_and_features(imgs)[0]

    def distance_and_features(self, imgs: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """`distance`, and VGG's features of the images at the working size (one VGG pass)."""
        x = ((imgs.float() + 1) / 2).clamp(0, 1)
        if x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        feats = self.vgg(x)
        total = 0
        for k, t in self.targets().items():
            total = total + (gram(feats[k]) - t).square().sum(dim=(1, 2)) / t.square().sum().clamp_min(1e-12)
        return total / len(STYLE_NAMES), feats


def read_style_images(paths: list[str], flag: str = "--style-image") -> list:
    """RGB images, each readable and at least MIN_STYLE_SIDE px; errors name `flag`."""
    from data_prep.images import read_image_arg

    images = []
    for p in paths:
        im = read_image_arg(p, flag)
        if min(im.size) < MIN_STYLE_SIDE:
            raise UserError(f"{flag} {p} is {im.size[0]}x{im.size[1]}px; style images need at least "
                            f"{MIN_STYLE_SIDE}px on the short side (upscaling invents a style the image does not have)")
        images.append(im)
    return images


def style_size(resolution: int) -> int:
    """Working size for the style loss: VGG's Gram statistics need some room, small G outputs
    are upsampled to 128px; large ones are compared at up to 256px."""
    return min(max(resolution, 128), 256)
