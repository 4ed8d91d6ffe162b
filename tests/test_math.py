"""Fast in-process checks of the math: regularizers against finite differences, augmentation,
the ADA controller, EMA half-life, the sharded sampler, modulated convolution, grid shapes."""
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gan import losses
from gan.augment import N_GEOM, N_RANDOM, SCALE_STD, AdaptiveP, apply_augment, augment, pseudo_reals
from gan.models.layers import Blur, Downsample, EqualConv2d, ModulatedConv2d, Upsample, _Filter, _fir_kernel
from gan.sampling import grid_cols, grid_image
from gan.training.data import InfiniteSampler
from gan.training.ema import update_ema


def _tiny_d():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 5 * 5, 1)).double()


def test_r1_matches_finite_differences():
    D = _tiny_d()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    r1 = losses.r1_penalty(D(x), x)
    eps = 1e-6
    for n in range(2):
        grad = torch.zeros(3 * 5 * 5, dtype=torch.float64)
        for i in range(grad.numel()):
            d = torch.zeros(3 * 5 * 5, dtype=torch.float64)
            d[i] = eps
            d = d.view(3, 5, 5)
            with torch.no_grad():
                hi = D((x[n] + d)[None]).sum()
                lo = D((x[n] - d)[None]).sum()
            grad[i] = (hi - lo) / (2 * eps)
        assert r1[n].item() == pytest.approx(grad.square().sum().item(), rel=1e-6)
    # It is differentiable (R1 is minimized through D's weights; the last bias cannot affect it).
    r1.sum().backward()
    assert all(m.weight.grad is not None and m.weight.grad.abs().sum() > 0 for m in (D[0], D[3]))


def test_path_length_matches_finite_differences():
    torch.manual_seed(1)
    n, num_ws, w_dim = 3, 2, 4
    A = torch.randn(num_ws * w_dim, 3 * 4 * 4, dtype=torch.float64)

    def synth(ws):  # a smooth, non-linear stand-in for the synthesis network
        return torch.tanh(ws.reshape(n, -1) @ A).reshape(n, 3, 4, 4)

    ws = torch.randn(n, num_ws, w_dim, dtype=torch.float64, requires_grad=True)
    img = synth(ws)
    torch.manual_seed(7)
    penalty, new_mean = losses.path_length(img, ws, torch.tensor(0.5), decay=0.1)
    torch.manual_seed(7)
    y = torch.randn_like(img) / 4.0  # the same projection noise, / sqrt(H * W)
    eps = 1e-6
    lengths = []
    for s in range(n):
        g = torch.zeros(num_ws * w_dim, dtype=torch.float64)
        for i in range(g.numel()):
            d = torch.zeros(num_ws * w_dim, dtype=torch.float64)
            d[i] = eps
            w_hi, w_lo = ws.detach().clone(), ws.detach().clone()
            w_hi[s] += d.view(num_ws, w_dim)
            w_lo[s] -= d.view(num_ws, w_dim)
            g[i] = ((synth(w_hi)[s] * y[s]).sum() - (synth(w_lo)[s] * y[s]).sum()) / (2 * eps)
        lengths.append(g.view(num_ws, w_dim).square().sum(1).mean().sqrt())
    lengths = torch.stack(lengths)
    expect_mean = 0.5 + 0.1 * (lengths.mean() - 0.5)
    assert new_mean.item() == pytest.approx(expect_mean.item(), rel=1e-5)
    assert torch.allclose(penalty.detach().double(), (lengths - expect_mean).square(), rtol=1e-4, atol=1e-7)


def test_augment_identity_at_p0_and_moves_pixels_at_p1():
    x = torch.rand(8, 3, 16, 16) * 2 - 1
    assert augment(x, 0.0) is x
    torch.manual_seed(0)
    y = augment(x, 1.0)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert (y - x).abs().mean() > 0.1
    # Gradients flow through every op (G learns through D's augmented view).
    z = x.clone().requires_grad_(True)
    augment(z, 0.5).sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def _augment_by_definition(x, r, p):
    """Each op on its own, in order, with the numbers `apply_augment` takes from `r`; the
    geometry through grid_sample (an independent implementation of flip, shift and reflection)."""
    b, _, h, w = x.shape
    on = (r[:, :6] < p).float()
    v = lambda t: t.view(b, 1, 1, 1)  # noqa: E731
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = torch.where(on[:, 0] > 0, -1.0, 1.0)
    theta[:, 1, 1] = 1
    theta[:, 0, 2] = torch.round((r[:, 6] * 2 - 1) * w / 8) * 2 / w * on[:, 1]
    theta[:, 1, 2] = torch.round((r[:, 7] * 2 - 1) * h / 8) * 2 / h * on[:, 1]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    x = x + v(r[:, 8] - 0.5) * v(on[:, 2])  # brightness
    m = x.mean(dim=1, keepdim=True)
    x = (x - m) * (1 + v(r[:, 9] * 2 - 1) * v(on[:, 3])) + m  # saturation
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - m) * (1 + v(r[:, 10] - 0.5) * v(on[:, 4])) + m  # contrast
    ys, xs = torch.linspace(0, 1, h)[None, :, None], torch.linspace(0, 1, w)[None, None, :]
    hole = ((ys - r[:, 11, None, None]).abs() < 0.25) & ((xs - r[:, 12, None, None]).abs() < 0.25)
    return x * (1 - hole[:, None].float() * v(on[:, 5]))  # cutout


@pytest.mark.parametrize("p", [0.3, 1.0])
def test_augment_equals_its_op_by_op_definition(p):
    """The folded, few-op `apply_augment` computes what the ops one by one compute, on a
    non-square image and with the largest shifts included."""
    torch.manual_seed(1)
    x = torch.rand(32, 3, 24, 16) * 2 - 1
    r = torch.rand(32, N_RANDOM)
    r[:8, 6:8] = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 0.0], [1.0, 1.0]]).repeat(2, 1)  # +-1/8 of the size
    assert torch.allclose(apply_augment(x, r, p), _augment_by_definition(x, r, p), atol=2e-5)


def test_geometric_augment_rotates_and_scales_about_the_centre():
    """--aug-geom's four numbers: a quarter turn is torch.rot90 and a half turn a flip of both axes
    (pixel centres map onto pixel centres, so no blur); images that drew neither op come out as
    the 13 numbers alone make them; a scaled disc's area grows by the scale squared; and
    `augment` draws the four extra numbers only with geom (runs without it repeat as before)."""
    torch.manual_seed(3)
    x = torch.rand(4, 3, 8, 8) * 2 - 1
    r = torch.ones(4, N_RANDOM + N_GEOM)  # every op off (r >= p) ...
    r[:, N_RANDOM + 1] = 0.0  # ... but the rotation
    r[:, N_RANDOM + 3] = 0.75  # angle (2r - 1) pi = pi / 2
    assert torch.allclose(apply_augment(x, r, 0.5), torch.rot90(x, 1, (2, 3)), atol=1e-5)
    r[:, N_RANDOM + 3] = 1.0
    assert torch.allclose(apply_augment(x, r, 0.5), x.flip(2, 3), atol=1e-5)
    r[:2, N_RANDOM + 1] = 1.0  # the first two draw nothing geometric
    out = apply_augment(x, r, 0.5)
    assert torch.equal(out[:2], apply_augment(x, r[:, :N_RANDOM], 0.5)[:2]) and not torch.allclose(out[2:], x[2:])
    # Scale: a centred disc of radius 8 px in 64, scaled by 2^(SCALE_STD * z) for the quantile z.
    yy, xx = torch.meshgrid(torch.arange(64) + 0.5, torch.arange(64) + 0.5, indexing="ij")
    disc = ((((yy - 32) ** 2 + (xx - 32) ** 2) < 8 ** 2).float() * 2 - 1).expand(1, 3, 64, 64)
    r = torch.ones(1, N_RANDOM + N_GEOM)
    r[:, N_RANDOM] = 0.0
    r[:, N_RANDOM + 2] = 0.9772  # z = 2: scale 2^0.4
    area = ((apply_augment(disc, r, 0.5)[0, 0] + 1) / 2).sum() / ((disc[0, 0] + 1) / 2).sum()
    assert area.item() == pytest.approx(2 ** (2 * SCALE_STD * 2), rel=0.05)
    for geom, n in ((False, N_RANDOM), (True, N_RANDOM + N_GEOM)):
        torch.manual_seed(4)
        out = augment(x, 1.0, geom=geom)
        torch.manual_seed(4)
        assert torch.equal(out, apply_augment(x, torch.rand(4, n), 1.0))


def test_apa_shows_fakes_as_reals_with_its_own_probability():
    """APA's probability moves by ADA's steps on ADA's measurement, from 0 and up to 1 whatever
    ADA's cap; it is saved, and a checkpoint from before it reads as 0; pseudo_reals swaps in the
    fake beside each real with that probability."""
    ctl = AdaptiveP(0.2, 0.6, batch=4, interval=1, kimg=0.008, adaptive=True, p_max=0.7, pseudo=True)
    for _ in range(3):  # a D sure of every real: both rise, by 0.5 a step
        ctl.accumulate(torch.ones(4))
        ctl.update()
    assert ctl.p == 0.7 and ctl.pseudo == 1.0
    ctl.accumulate(-torch.ones(4))
    ctl.update()
    assert ctl.p == pytest.approx(0.2) and ctl.pseudo == 0.5
    again = AdaptiveP(0.0, 0.6, 4, 1, 0.008, True, pseudo=True)
    again.load_state_dict(ctl.state_dict())
    assert again.pseudo == 0.5
    old = {k: v for k, v in ctl.state_dict().items() if k != "pseudo"}
    again.load_state_dict(old)
    assert again.pseudo == 0.0
    assert not AdaptiveP(0.0, 0.6, 4, 1, 0.008, False, pseudo=True).pseudo_on  # fixed p: nothing measures D
    real, fake = torch.zeros(400, 3, 4, 4), torch.ones(400, 3, 4, 4)
    assert torch.equal(pseudo_reals(real, fake, 0.0), real) and torch.equal(pseudo_reals(real, fake, 1.0), fake)
    torch.manual_seed(5)
    mixed = pseudo_reals(real, fake, 0.25)
    shown_fake = mixed.flatten(1).mean(1)
    assert set(shown_fake.tolist()) == {0.0, 1.0} and 0.18 < shown_fake.mean().item() < 0.32


def test_compiled_augment_equals_eager():
    """The trainer runs `apply_augment` compiled with p as a tensor (traced by Dynamo and
    AOTAutograd here, as in the compiled training tests): same images, same gradients."""
    torch.manual_seed(2)
    x = (torch.rand(8, 3, 16, 16) * 2 - 1).requires_grad_(True)
    compiled = torch.compile(apply_augment, backend="aot_eager", dynamic=False)
    for n in (N_RANDOM, N_RANDOM + N_GEOM):  # with and without the geometric group
        r = torch.rand(8, n)
        out, ref = compiled(x, r, torch.tensor(0.6)), apply_augment(x, r, 0.6)
        (g,), (g_ref,) = torch.autograd.grad(out.square().sum(), x), torch.autograd.grad(ref.square().sum(), x)
        assert torch.equal(out, ref) and torch.equal(g, g_ref)


def test_adaptive_p_moves_toward_target():
    ada = AdaptiveP(0.2, target=0.6, batch=16, interval=4, kimg=1.0, adaptive=True)
    step = 16 * 4 / 1000
    ada.accumulate(torch.ones(16))  # D sure the reals are real: overfitting, more augmentation
    ada.update()
    assert ada.p == pytest.approx(0.2 + step) and ada.last_rt == 1.0
    ada.accumulate(-torch.ones(16))
    ada.update()
    ada.accumulate(-torch.ones(16))
    ada.update()
    assert ada.p == pytest.approx(0.2 - step)
    for _ in range(100):
        ada.accumulate(-torch.ones(16))
        ada.update()
    assert ada.p == 0.0  # clamped
    for p_max, top in ((1.0, 1.0), (0.7, 0.7)):  # an overfitting D pushes p to --ada-p-max, no further
        capped = AdaptiveP(0.65, target=0.6, batch=16, interval=4, kimg=1.0, adaptive=True, p_max=p_max)
        for _ in range(100):
            capped.accumulate(torch.ones(16))
            capped.update()
        assert capped.p == top
    resumed = AdaptiveP(0.73, 0.6, 16, 4, 1.0, adaptive=True, p_max=0.7)  # a cap lower than a resumed p
    resumed.accumulate(torch.ones(16))
    resumed.update()
    assert resumed.p == 0.7
    fixed = AdaptiveP(0.3, 0.6, 16, 4, 1.0, adaptive=False)
    fixed.accumulate(torch.ones(16))
    fixed.update()
    assert fixed.p == 0.3


def test_ema_half_life():
    G, G_ema = torch.nn.Linear(1, 1, bias=False), torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.ones_(G.weight)
    torch.nn.init.zeros_(G_ema.weight)
    batch, ema_kimg = 10, 0.5  # half-life: 500 images = 50 steps
    for step in range(50):
        update_ema(G_ema, G, batch, (step + 1) * batch, ema_kimg, rampup=0)
    assert G_ema.weight.item() == pytest.approx(0.5, rel=1e-5)


def test_sampler_shards_are_disjoint_and_resume_exactly():
    size, world = 23, 3
    per = [len(range(r, size, world)) for r in range(world)]
    firsts = [list(itertools.islice(iter(InfiniteSampler(size, r, world, seed=5)), per[r])) for r in range(world)]
    flat = sum(firsts, [])
    assert sorted(flat) == list(range(size))  # one epoch over all ranks: every index exactly once
    for r in range(world):
        full = list(itertools.islice(iter(InfiniteSampler(size, r, world, seed=5)), 40))
        for start in (0, 3, per[r], 17):
            resumed = list(itertools.islice(iter(InfiniteSampler(size, r, world, seed=5, start=start)), 40 - start))
            assert resumed == full[start:]
    assert firsts[0] != list(itertools.islice(iter(InfiniteSampler(size, 0, world, seed=6)), per[0]))


@pytest.mark.parametrize("up,demod,up_conv", [(False, True, "transposed"), (True, True, "transposed"),
                                              (True, True, "filter_first"), (False, False, "transposed")])
def test_modulated_conv_equals_per_sample_weights(up, demod, up_conv):
    """Against the definition: per-sample modulated (and demodulated) weights; upsampling is
    the anti-aliasing upsample, then the conv. The transposed form (conv at the low
    resolution, then the filter) equals it away from the 1-pixel border."""
    torch.manual_seed(0)
    conv = ModulatedConv2d(5, 6, 3 if demod else 1, w_dim=7, demodulate=demod, up=up, up_conv=up_conv).double()
    x, w = torch.randn(2, 5, 8, 8, dtype=torch.float64), torch.randn(2, 7, dtype=torch.float64)
    out = conv(x, w)
    styles = conv.affine(w)
    ref = []
    for n in range(2):
        if demod:
            weight = conv.weight * conv.scale * styles[n][None, :, None, None]
            weight = weight * (weight.square().sum(dim=(1, 2, 3), keepdim=True) + 1e-8).rsqrt()
        else:
            weight = conv.weight * (styles[n] * conv.scale)[None, :, None, None]
        xi = x[n : n + 1]
        if up:
            xi = Upsample().double()(xi)
        ref.append(F.conv2d(xi, weight, padding=weight.shape[-1] // 2))
    ref = torch.cat(ref)
    assert out.shape == ref.shape == (2, 6, 16 if up else 8, 16 if up else 8)
    if up and up_conv == "transposed":
        assert torch.allclose(out[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], atol=1e-12)
        assert not torch.allclose(out, ref, atol=1e-3)  # the border differs: zero outside, after the conv
    else:
        assert torch.allclose(out, ref, atol=1e-12)


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 2, 5, 7)])
def test_resampling_filters_and_their_derivatives(shape):
    """Blur and Upsample equal the plain depthwise [1,3,3,1] filters, and their first and second
    derivatives (R1 and path length take the second) match finite differences."""
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    k = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=torch.float64)
    k = torch.outer(k, k).div(64).expand(shape[1], 1, 4, 4)
    blur_ref = F.conv2d(F.pad(x, (1, 2, 1, 2), mode="replicate"), k, groups=shape[1])
    up_ref = F.conv_transpose2d(x, k * 4, stride=2, padding=1, groups=shape[1])
    smooth_ref = F.conv2d(x, k * 4, padding=1, groups=shape[1])  # after a stride-2 transposed conv
    kernel = _fir_kernel().double()
    smooth = lambda t: _Filter.apply(t, kernel * 4, "smooth")  # noqa: E731
    cases = [(Blur().double(), blur_ref), (Upsample().double(), up_ref), (smooth, smooth_ref)]
    if shape[2] % 2 == 0 and shape[3] % 2 == 0:  # the blur at every second pixel
        cases.append((Downsample().double(), blur_ref[:, :, ::2, ::2]))
    for module, ref in cases:
        assert torch.allclose(module(x), ref, atol=1e-12)
        assert torch.autograd.gradcheck(module, (x,)) and torch.autograd.gradgradcheck(module, (x,))


def test_downsampling_convs_blur_then_stride():
    """D's downsampling convs are the blur followed by a stride-2 conv; the 1x1 one takes the
    blur at the kept pixels only (Downsample) and convolves with stride 1."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    for k in (1, 3):
        conv = EqualConv2d(3, 4, k, down=True).double()
        with torch.no_grad():
            conv.bias.normal_()
        ref = F.conv2d(Blur().double()(x), conv.weight * conv.scale, conv.bias, stride=2, padding=(k - 1) // 2)
        assert torch.allclose(conv(x), ref, atol=1e-12)
    with pytest.raises(ValueError, match="even size"):
        Downsample()(torch.zeros(1, 1, 5, 4))


def _convolutions(fn) -> int:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(e.count for e in prof.key_averages() if e.key == "aten::convolution")


def test_regularizers_cost_a_few_convolutions_per_layer_not_one_per_channel():
    """R1 and path length differentiate twice through the anti-aliasing filters. PyTorch's own
    double backward of a grouped conv runs one convolution per channel (thousands of GPU kernels
    per step at 256 px); ours runs one per filter, so a regularization step costs a few times a
    plain step in convolutions, whatever the width."""
    from gan.config import ModelConfig
    from gan.models import build_discriminator, build_generator

    torch.manual_seed(0)
    cfg = ModelConfig(arch="stylegan", resolution=32, channel_base=2048, channel_max=64, z_dim=16, w_dim=16,
                      mapping_layers=2)
    G, D = build_generator(cfg), build_discriminator(cfg)
    x = torch.randn(4, 3, 32, 32)

    def r1():
        real = x.detach().requires_grad_(True)
        losses.r1_penalty(D(real), real).mean().backward()

    def pl():
        ws = G.mapping(torch.randn(2, 16)).requires_grad_(True)
        losses.path_length(G.synthesis(ws), ws, torch.zeros(()))[0].mean().backward()

    plain_d = _convolutions(lambda: D(x).mean().backward())
    plain_g = _convolutions(lambda: G(torch.randn(2, 16)).mean().backward())
    assert _convolutions(r1) <= 3 * plain_d, (_convolutions(r1), plain_d)
    assert _convolutions(pl) <= 3 * plain_g, (_convolutions(pl), plain_g)


def test_grid_shape_from_count():
    assert grid_cols(32) == 8 and grid_cols(64) == 8 and grid_cols(16) == 4 and grid_cols(12) == 4
    assert grid_cols(7) == 4 and grid_cols(1) == 1 and grid_cols(3) == 3
    for n in range(1, 200):
        c = grid_cols(n)
        rows = -(-n // c)
        assert rows <= c <= 4 * rows + 3, n
        if any(n % k == 0 and k >= n // k and k <= 2 * int(np.ceil(np.sqrt(n))) for k in range(1, n + 1)):
            assert n % c == 0, n  # a full grid whenever a near-square one exists
    img = grid_image(torch.ones(32, 3, 4, 4), grid_cols(32))
    assert img.size == (8 * 4, 4 * 4) and np.asarray(img).min() == 255  # no black cells
