"""Shared building blocks: equalized-lr layers, anti-aliased resampling, modulated conv."""
from __future__ import annotations

import contextlib
import math
import types

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize

SQRT2 = math.sqrt(2.0)


def lrelu(x: torch.Tensor) -> torch.Tensor:
    # Gain sqrt(2) keeps activations at unit variance under equalized learning rate.
    return F.leaky_relu(x, 0.2) * SQRT2


class EqualLinear(nn.Module):
    """Linear layer whose weights are scaled at run time (equalized learning rate)."""

    def __init__(self, in_features: int, out_features: int, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activate: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init) / lr_mul))
        self.scale = lr_mul / math.sqrt(in_features)  # He-init constant applied per forward
        self.lr_mul = lr_mul  # slows this layer's effective learning rate (mapping network)
        self.activate = activate  # leaky ReLU after the affine map

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)
        return lrelu(x) if self.activate else x


class EqualConv2d(nn.Module):
    """3x3 / 1x1 convolution with equalized learning rate; optional anti-aliased 2x downsampling."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, bias: bool = True, activate: bool = False,
                 down: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.scale = 1.0 / math.sqrt(in_ch * kernel * kernel)
        self.activate = activate  # leaky ReLU after the conv
        # Halving the resolution without aliasing: blur, then a stride-2 conv. A 1x1 conv reads
        # only the pixels it keeps, so it takes them from Downsample and runs with stride 1: that
        # keeps clear of oneDNN's channels-last weight gradient of a 1x1 stride-2 conv with under
        # 16 channels, which corrupts the heap (torch 2.14; inductor picks that layout on CPU),
        # and its gradient is faster on CPU too.
        self.down = down
        self.blur = (Downsample() if kernel == 1 else Blur()) if down else None
        self.stride = 1 if kernel == 1 else 2  # of the conv after the filter, when down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.scale
        if self.down:
            x = F.conv2d(self.blur(x), w, self.bias, stride=self.stride, padding=(w.shape[-1] - 1) // 2)
        else:
            x = F.conv2d(x, w, self.bias, padding=w.shape[-1] // 2)
        return lrelu(x) if self.activate else x


def _fir_kernel() -> torch.Tensor:
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    k = torch.outer(k, k)
    return k / k.sum()


def _blur(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    return F.conv2d(F.pad(x, (1, 2, 1, 2), mode="replicate"), k.to(x.dtype).expand(c, 1, 4, 4), groups=c)


def _unpad_replicate(t: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Adjoint of replicate padding (1 before, 2 after): (h+3, w+3) -> (h, w), the copied edge
    rows/columns folded back onto the edges they came from."""
    t = torch.cat([t[:, :, :2].sum(2, keepdim=True), t[:, :, 2:h], t[:, :, h:].sum(2, keepdim=True)], 2)
    return torch.cat([t[..., :2].sum(3, keepdim=True), t[..., 2:w], t[..., w:].sum(3, keepdim=True)], 3)


def _blur_adjoint(g: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    c, h, w = g.shape[1:]
    return _unpad_replicate(F.conv_transpose2d(g, k.to(g.dtype).expand(c, 1, 4, 4), groups=c), h, w)


def _down(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Blur, keeping every second pixel: (2H, 2W) -> (H, W). (A stride-2 depthwise conv would
    blur only the kept pixels, but its adjoint, a grouped stride-2 transposed conv, runs 2x
    slower than this whole filter on oneDNN in bf16.)"""
    h, w = x.shape[2:]
    if h % 2 or w % 2:
        raise ValueError(f"downsampling needs an even size, got {h}x{w}")
    return _blur(x, k)[:, :, ::2, ::2]


def _down_adjoint(g: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Zero-insertion back to (2H, 2W), then the blur's adjoint."""
    z = g.new_zeros(g.shape[0], g.shape[1], 2 * g.shape[2], 2 * g.shape[3])
    z[:, :, ::2, ::2] = g
    return _blur_adjoint(z, k)


def _up(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    return F.conv_transpose2d(x, k.to(x.dtype).expand(c, 1, 4, 4), stride=2, padding=1, groups=c)


def _up_adjoint(g: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    c = g.shape[1]
    return F.conv2d(g, k.to(g.dtype).expand(c, 1, 4, 4), stride=2, padding=1, groups=c)


def _smooth(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The filter after a stride-2 transposed conv: (2H+1) -> 2H, zero outside."""
    c = x.shape[1]
    return F.conv2d(x, k.to(x.dtype).expand(c, 1, 4, 4), padding=1, groups=c)


def _smooth_adjoint(g: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    c = g.shape[1]
    return F.conv_transpose2d(g, k.to(g.dtype).expand(c, 1, 4, 4), padding=1, groups=c)


# name -> (the op, the name of its adjoint): the filters are linear, so each one's gradient is its adjoint.
_FILTERS = {"blur": (_blur, "blur_t"), "blur_t": (_blur_adjoint, "blur"),
            "down": (_down, "down_t"), "down_t": (_down_adjoint, "down"),
            "up": (_up, "up_t"), "up_t": (_up_adjoint, "up"),
            "smooth": (_smooth, "smooth_t"), "smooth_t": (_smooth_adjoint, "smooth")}


class _Filter(torch.autograd.Function):
    """A fixed depthwise filter whose gradient is its adjoint filter, itself a `_Filter`: every
    order of derivative is one grouped convolution. PyTorch's own double backward of a grouped
    convolution (R1 and path length differentiate through these filters) loops over the
    channels: thousands of tiny kernels per regularization step on a GPU instead of one."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, kernel: torch.Tensor, name: str) -> torch.Tensor:
        ctx.save_for_backward(kernel)
        ctx.name = name
        return _FILTERS[name][0](x, kernel)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (kernel,) = ctx.saved_tensors
        return _Filter.apply(g, kernel, _FILTERS[ctx.name][1]), None, None


class _FixedFilter(nn.Module):
    """The [1,3,3,1] filter as a module: `name` picks the `_FILTERS` op, `gain` scales the kernel."""

    name, gain = "", 1.0

    def __init__(self):
        super().__init__()
        self.register_buffer("kernel", _fir_kernel() * self.gain, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _Filter.apply(x, self.kernel, self.name)


class Blur(_FixedFilter):
    """Depthwise [1,3,3,1] low-pass filter (same size output)."""

    name = "blur"


class Downsample(_FixedFilter):
    """Anti-aliased 2x downsampling: the Blur at every second pixel."""

    name = "down"


class Upsample(_FixedFilter):
    """Anti-aliased 2x upsampling: zero-insertion plus the [1,3,3,1] filter (gain 4: zero-insertion
    keeps a quarter of the samples)."""

    name, gain = "up", 4.0


UP_CONVS = ("transposed", "filter_first")  # ModelConfig.up_conv (checked by models.check_config)


def up_nearest2x(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour 2x upsampling of (B, C, H, W), the same values as F.interpolate's. Each
    pixel is stacked beside itself along width, then each row under itself: on a CPU in bf16,
    F.interpolate's kernel made two copies of its output, and this ran a 32 px map's forward and
    backward 4.6x faster (0.95 against 4.35 ms for fastgan64's 16x32x32x32)."""
    b, c, h, w = x.shape
    x = torch.stack((x, x), -1).view(b, c, h, 2 * w)
    return torch.stack((x, x), -2).view(b, c, 2 * h, 2 * w)


def avg_pool2x(x: torch.Tensor) -> torch.Tensor:
    """2x2 average pooling of (B, C, H, W) with even H and W (F.avg_pool2d(x, 2)'s values, up to
    rounding): neighbouring columns added, then neighbouring rows. On a CPU in bf16 its forward and
    backward ran 2.7x faster than avg_pool2d's (1.19 against 3.23 ms at 32x32x32x32)."""
    a, b = x.unflatten(-1, (-1, 2)).unbind(-1)
    c, d = (a + b).unflatten(-2, (-1, 2)).unbind(-2)
    return (c + d) * 0.25


class UpNearest2x(nn.Module):
    """`up_nearest2x` as a module (no parameters: it takes nn.Upsample's place in a state dict)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return up_nearest2x(x)


class AvgPool2x(nn.Module):
    """`avg_pool2x` as a module (no parameters: it takes nn.AvgPool2d(2)'s place in a state dict)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return avg_pool2x(x)


class ModulatedConv2d(nn.Module):
    """StyleGAN2 modulated/demodulated convolution.

    Implemented by scaling activations instead of weights (x * style -> shared conv ->
    * demod): mathematically identical to per-sample weights and runs as one ordinary
    batched convolution on any device, no grouped-conv tricks needed.

    Upsampling (`up`) runs one of two ways (`up_conv`), equal away from the 1-pixel border:
    "transposed" convolves at the low resolution with stride 2 and then applies the
    anti-aliasing filter to the output (StyleGAN2's order: a quarter of the multiply-adds);
    "filter_first" upsamples with the filter and then convolves at the full resolution
    (models saved before `up_conv` existed, so they render as they always did).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, w_dim: int, demodulate: bool = True,
                 up: bool = False, up_conv: str = "transposed"):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.affine = EqualLinear(w_dim, in_ch, bias_init=1.0)  # w -> per-channel style
        self.scale = 1.0 / math.sqrt(in_ch * kernel * kernel)
        self.demodulate = demodulate  # normalize output channels to unit expected variance
        self.up = up  # output at twice the input resolution
        self.up_conv = up_conv
        if up:  # the [1,3,3,1] filter with gain 4 (zero-insertion keeps a quarter of the samples)
            self.register_buffer("kernel", _fir_kernel() * 4, persistent=False)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w)  # (B, in)
        weight = self.weight * self.scale
        if not self.demodulate:
            styles = styles * self.scale  # toRGB layers: plain modulation
            weight = self.weight
        x = x * styles.to(x.dtype)[:, :, None, None]
        if not self.up:
            x = F.conv2d(x, weight.to(x.dtype), padding=weight.shape[-1] // 2)
        elif self.up_conv == "transposed":
            # Zero-insertion then the conv is a stride-2 transposed conv with the flipped kernel.
            x = F.conv_transpose2d(x, weight.to(x.dtype).transpose(0, 1).flip(2, 3), stride=2)
            x = _Filter.apply(x, self.kernel, "smooth")
        else:
            x = _Filter.apply(x, self.kernel, "up")
            x = F.conv2d(x, weight.to(x.dtype), padding=weight.shape[-1] // 2)
        if self.demodulate:
            # d_o = 1 / sqrt(sum_i,k (w_oik * s_i)^2)
            dcoefs = (weight.square().sum(dim=(2, 3)) @ styles.square().T.to(weight.dtype)).T.add(1e-8).rsqrt()
            x = x * dcoefs.to(x.dtype)[:, :, None, None]
        return x


class MinibatchStd(nn.Module):
    """Appends the std-dev of features across small groups of the batch as extra channels."""

    def __init__(self, group_size: int = 4, channels: int = 1):
        super().__init__()
        self.group_size = group_size  # samples per statistics group
        self.channels = channels  # number of appended feature maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n)
        while n % g:
            g -= 1
        f = self.channels
        y = x.float().reshape(g, -1, f, c // f, h, w)
        y = (y - y.mean(0)).square().mean(0).add(1e-8).sqrt()
        y = y.mean(dim=(2, 3, 4)).reshape(-1, f, 1, 1)
        y = y.repeat(g, 1, h, w).to(x.dtype)
        return torch.cat([x, y], dim=1)


class ClassBatchNorm(nn.Module):
    """BatchNorm without its own affine map, followed by a gain and bias looked up per class."""

    def __init__(self, channels: int, c_dim: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Embedding(c_dim, channels)  # starts at 1: plain BN at initialization
        self.bias = nn.Embedding(c_dim, channels)  # starts at 0
        nn.init.ones_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """`c`: class indices (B,), or (B, classes) weights that blend the classes' gains and biases."""
        if c.is_floating_point():
            gain, bias = c.to(x.dtype) @ self.gain.weight.to(x.dtype), c.to(x.dtype) @ self.bias.weight.to(x.dtype)
        else:
            gain, bias = self.gain(c).to(x.dtype), self.bias(c).to(x.dtype)
        return self.bn(x) * gain[:, :, None, None] + bias[:, :, None, None]


def run_grouped(layers, x: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """`layers` (a sequence of modules) on `x`, whose batch holds `groups` equal batches: each
    batch norm normalizes each of them by its own statistics (and updates its running ones batch
    by batch), so the result is what `groups` separate calls would give, while every other layer
    (the convs) runs once on the whole batch. A layer whose forward takes `groups` (a
    discriminator's block) is passed it."""
    for layer in layers:
        if groups > 1 and isinstance(layer, nn.modules.batchnorm._BatchNorm):
            x = torch.cat([layer(part) for part in x.chunk(groups)])
        elif getattr(layer, "takes_groups", False):
            x = layer(x, groups)
        else:
            x = layer(x)
    return x


# Whether autocast exists on a device type (not on "meta", where FLOPs are counted).
_autocast_available = getattr(torch.amp, "is_autocast_available", lambda device: device in ("cpu", "cuda"))


class SpectralNorm(nn.Module):
    """A weight divided by its largest singular value (Miyato et al. 2018), as a parametrization
    (`spectral_norm` registers it) whose forward only reads the stored singular-vector estimates
    `_u`, `_v`. torch's own runs a power-iteration step inside every training forward, writing
    them in place, and under inductor the backward of a module called twice before its backward
    (D on reals, then on fakes) then finds a saved tensor changed: fastgan crashed on its first
    compiled step. Here the training loop advances the estimate once per step, outside the graph,
    with `power_iteration(model)`. The buffers are named and initialized as torch's, so state
    dicts saved with either load into the other, and eval-mode outputs are the same."""

    def __init__(self, weight: torch.Tensor, dim: int = 0, eps: float = 1e-12):
        super().__init__()
        self.dim, self.eps = dim, eps
        mat = self._matrix(weight.detach())
        self.register_buffer("_u", F.normalize(mat.new_empty(mat.shape[0]).normal_(0, 1), dim=0, eps=eps))
        self.register_buffer("_v", F.normalize(mat.new_empty(mat.shape[1]).normal_(0, 1), dim=0, eps=eps))
        self.update(weight, steps=15)  # as torch's: a good estimate before the first forward

    def _matrix(self, weight: torch.Tensor) -> torch.Tensor:
        return (weight.movedim(self.dim, 0) if self.dim else weight).flatten(1)

    def _mv(self, weight: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The weight's matrix times `v`. A transposed conv's weight (in, out, *k), normalized along
        dim 1, is contracted in place: its matrix would be a copy of the weight, 8 MB in fastgan64's
        z -> 4x4, made twice a step, its gradient copied back once (some 2% of a CPU step)."""
        if self.dim != 1:
            return torch.mv(self._matrix(weight), v)
        w3 = weight.flatten(2)  # (in, out, K): the matrix is w3[i, o, k] at row o, column i * K + k
        return torch.einsum("iok,ik->o", w3, v.view(w3.shape[0], w3.shape[2]))

    def _mtv(self, weight: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """The weight's matrix, transposed, times `u` (see `_mv`)."""
        if self.dim != 1:
            return torch.mv(self._matrix(weight).t(), u)
        return torch.matmul(u, weight.flatten(2)).flatten()  # (in, K), row-major as the matrix's columns

    @torch.no_grad()
    def update(self, weight: torch.Tensor, steps: int = 1) -> None:
        for _ in range(steps):
            self._u.copy_(F.normalize(self._mv(weight, self._v), dim=0, eps=self.eps))
            self._v.copy_(F.normalize(self._mtv(weight, self._u), dim=0, eps=self.eps))

    def sigma(self, weight: torch.Tensor) -> torch.Tensor:
        """The estimated largest singular value of `weight` (differentiable in `weight`)."""
        if self.dim == 1:  # in float32 under autocast too, as torch.mv is (matmul would run in bf16)
            device = weight.device.type
            autocasting = _autocast_available(device) and torch.is_autocast_enabled(device)
            with torch.autocast(device, enabled=False) if autocasting else contextlib.nullcontext():
                return torch.vdot(self._mtv(weight, self._u), self._v)
        return torch.vdot(self._u, self._mv(weight, self._v))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight / self.sigma(weight)


def _out_size(conv: nn.Module, size: int, axis: int) -> int:
    k, s, p, d = conv.kernel_size[axis], conv.stride[axis], conv.padding[axis], conv.dilation[axis]
    if isinstance(conv, nn.ConvTranspose2d):
        return (size - 1) * s - 2 * p + d * (k - 1) + conv.output_padding[axis] + 1
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _out_shape(conv: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    return _out_size(conv, x.shape[-2], 0), _out_size(conv, x.shape[-1], 1)


def _conv_transpose(conv: nn.ConvTranspose2d, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """`conv`'s transposed conv of `x` with weight `w`, without bias. From a 1x1 input without
    padding, output padding, dilation or groups (a generator's z -> 4x4) it is a matmul: each input
    channel adds its weight's out_channels x k x k slice, scaled. On a CPU the transposed conv's
    backward ran some 20x slower than this matmul's there (~6 ms a call in fastgan64)."""
    if (x.shape[-2:] == (1, 1) and conv.groups == 1 and conv.padding == (0, 0)
            and conv.output_padding == (0, 0) and conv.dilation == (1, 1)):
        return (x.flatten(1) @ w.flatten(1)).view(x.shape[0], conv.out_channels, *conv.kernel_size)
    return F.conv_transpose2d(x, w, None, conv.stride, conv.padding, conv.output_padding, conv.groups, conv.dilation)


class ConvTranspose2d(nn.ConvTranspose2d):
    """torch's transposed conv (same arguments, parameters and state dict) that runs as a matmul
    from a 1x1 input (`_conv_transpose`): DCGAN's and fastgan's first layer, z -> 4x4, so they take
    the spectral-norm forward's path without spectral norm. Where the 20x slower backward was
    measured was fastgan's; DCGAN's whole step measured the same either way (dcgan64 bf16 1.02x,
    float32 0.98x, demo 1.015x: noise), so this is for one code path, not for DCGAN's speed."""

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if output_size is not None:  # torch's own arithmetic for the requested size
            return super().forward(x, output_size)
        y = _conv_transpose(self, x, self.weight)
        return y if self.bias is None else y + self.bias.to(y.dtype)[:, None, None]


def _sn_conv_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A spectrally normalized 2-D conv: conv(x, W / sigma) = conv(x, W) / sigma, since a conv is
    linear in its weight. Whichever side is smaller is divided: the weight (and its gradient) where
    the layer's output is larger (high resolutions, few channels), the output where the weight is
    (a small batch at 4-16 px through 128-512 channels: fastgan64's G divided 3.4M weights a step
    for outputs a sixth that size). Same values and gradients as `self.weight`; the bias is added
    after the division, as it is outside it."""
    plist = self.parametrizations.weight
    sn, w = plist[0], plist.original
    scale_output = x.shape[0] * self.out_channels * math.prod(_out_shape(self, x)) < w.numel()
    if not scale_output:
        w = w / sn.sigma(w)
    if isinstance(self, nn.ConvTranspose2d):
        y = _conv_transpose(self, x, w)
    else:
        y = F.conv2d(x, w, None, self.stride, self.padding, self.dilation, self.groups)
    if scale_output:
        y = y * (1 / sn.sigma(w)).to(y.dtype)
    if self.bias is not None:
        y = y + self.bias.to(y.dtype)[:, None, None]
    return y


def spectral_norm(module: nn.Module) -> nn.Module:
    """`module.weight` spectrally normalized (a transposed conv's along its output channels). A
    2-D conv (zero padding) also runs `_sn_conv_forward`, which divides the smaller of its weight
    and its output; `module.weight` stays the normalized weight, and the state dict is torch's."""
    dim = 1 if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)) else 0
    parametrize.register_parametrization(module, "weight", SpectralNorm(module.weight, dim))
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)) and module.padding_mode == "zeros":
        module.forward = types.MethodType(_sn_conv_forward, module)
    return module


@torch.no_grad()
def power_iteration(model: nn.Module) -> None:
    """One power-iteration step of every spectral norm in `model` that is in training mode: the
    training loop calls it once per step, before the phase that trains `model`."""
    for m in model.modules():
        plist = getattr(getattr(m, "parametrizations", None), "weight", None)
        if plist is None:
            continue
        for p in plist:
            if isinstance(p, SpectralNorm) and p.training:
                p.update(plist.original)
