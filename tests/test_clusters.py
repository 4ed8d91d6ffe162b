"""Self-conditioning (--clusters): k-means on thumbnails, the clusters' intervals of the first
latent coordinate, and a fastgan that reads its cluster from z."""
import numpy as np
import pytest
import torch

from gan import clusters
from gan.config import ModelConfig
from gan.errors import UserError
from gan.models import build_discriminator, build_generator
from gan.sampling import Sampler


def _blobs(n_per: int, colours: list, seed: int = 0) -> np.ndarray:
    """uint8 NCHW 16 px images: flat colours with a little noise, `n_per` of each colour."""
    rng = np.random.default_rng(seed)
    out = [np.clip(np.array(c)[None, :, None, None] + rng.normal(0, 12, (n_per, 3, 16, 16)), 0, 255)
           for c in colours]
    return np.concatenate(out).astype(np.uint8)


def test_kmeans_finds_the_groups_and_is_deterministic():
    colours = [(250, 250, 250), (200, 30, 30), (30, 30, 200), (240, 220, 40)]
    images = _blobs(25, colours)
    feats = clusters.thumbnails(images)
    assert feats.shape == (100, 3 * clusters.THUMB ** 2) and 0 <= feats.min() and feats.max() <= 1
    cen, labels = clusters.kmeans(feats, 4, seed=0)
    groups = labels.view(4, 25)
    assert all(len(set(g.tolist())) == 1 for g in groups)  # each colour is one cluster
    assert len(set(groups[:, 0].tolist())) == 4  # and the four are different
    cen2, labels2 = clusters.kmeans(feats, 4, seed=0)
    assert torch.equal(labels, labels2) and torch.equal(cen, cen2)
    assert torch.equal(clusters.assign(images, cen), labels)  # a store put into given clusters
    # More clusters than distinct images: none is left empty.
    _, few = clusters.kmeans(feats[:3], 3, seed=0)
    assert sorted(few.tolist()) == [0, 1, 2]


def test_cluster_count_grows_with_the_collection_within_bounds():
    assert clusters.cluster_count(100) == 4 and clusters.cluster_count(1789) == 15 and clusters.cluster_count(241) == 5
    assert clusters.cluster_count(10) == 2 and clusters.cluster_count(10 ** 6) == 32


def test_latent_draws_each_cluster_as_often_as_the_collection_holds_it():
    freq = torch.tensor([50.0, 30.0, 15.0, 5.0])
    edges = clusters.edges(freq)
    assert edges[0] == 0 and edges[-1] == 1 and torch.allclose(edges[1:-1], torch.tensor([0.5, 0.8, 0.95], dtype=torch.float64))
    z0 = torch.randn(200_000, generator=torch.Generator().manual_seed(0))
    w = clusters.code(z0, edges)
    assert torch.allclose(w.sum(1), torch.ones(len(z0)), atol=1e-5)
    share = torch.bincount(w.argmax(1), minlength=4).float() / len(z0)
    assert torch.allclose(share, freq / freq.sum(), atol=0.005), share
    # One-hot but within EDGE / 2 of the three inner bounds.
    blended = (w.max(1).values < 1).float().mean()
    assert blended == pytest.approx(3 * clusters.EDGE, abs=0.004), blended
    # A walk across a bound: the weights move by at most 1 / (EDGE * density) per unit of z0.
    line = torch.linspace(-0.05, 0.05, 201)  # around u = 0.5, the first inner bound
    wl = clusters.code(line, edges)
    assert wl[0, 0] == 1 and wl[-1, 1] == 1 and (wl[1:] - wl[:-1]).abs().max() < 0.1
    # Training's draws for given clusters: N(0, 1) restricted to their intervals.
    c = torch.tensor([0, 1, 2, 3] * 2500)
    z = clusters.z0_for(c, edges)
    wc = clusters.code(z, edges)
    assert torch.equal(wc.argmax(1), c) and wc.max(1).values.min() >= 0.5
    u = torch.special.ndtr(z[c == 1])
    assert 0.5 <= u.min() and u.max() <= 0.8 and abs(u.mean().item() - 0.65) < 0.01


def test_a_self_conditioned_fastgan_reads_its_cluster_from_z():
    cfg = ModelConfig(arch="fastgan", resolution=32, g_channels=4, d_channels=4, channel_max=32, z_dim=16, clusters=3)
    torch.manual_seed(0)
    G, D = build_generator(cfg), build_discriminator(cfg)
    G.cluster_edges.copy_(clusters.edges([1, 1, 1]).float())
    with torch.no_grad():  # clusters with very different gains: the cluster decides the picture
        for m in G.modules():
            if hasattr(m, "gain") and isinstance(m.gain, torch.nn.Embedding):
                m.gain.weight.copy_(torch.tensor([[1.0], [3.0], [-2.0]]).expand_as(m.gain.weight))
    G.eval()
    z = torch.randn(2, 16)
    a, b = z.clone(), z.clone()
    a[:, 0], b[:, 0] = -1.5, 1.5  # the first and the last cluster, the rest of z the same
    assert (G(a) - G(b)).abs().mean() > 0.3 * G(a).abs().mean()
    assert torch.equal(G(a), G(a, torch.tensor([2, 2])))  # c is the store's classes' slot: unused here
    assert D(G(a), torch.tensor([0, 0])).shape == (2, 1)
    # Truncation pulls the rest of z in but keeps the cluster coordinate.
    s = Sampler(G, cfg)
    t = s.truncate_z(a, 0.5)
    assert torch.equal(t[:, 0], a[:, 0]) and torch.allclose(t[:, 1:], a[:, 1:] * 0.5)
    plain = Sampler(build_generator(ModelConfig(**{**cfg.to_dict(), "clusters": 0})), cfg)
    plain.cfg = ModelConfig(**{**cfg.to_dict(), "clusters": 0})
    assert torch.allclose(plain.truncate_z(a, 0.5), a * 0.5)
    # The clusters' centroids and intervals are saved with the weights.
    assert {"cluster_edges", "cluster_centroids"} <= set(G.state_dict())


@pytest.mark.parametrize("bad, words", [(dict(arch="dcgan"), "--arch dcgan cannot"), (dict(c_dim=2), "--cond"),
                                        (dict(clusters=1), "2 to")])
def test_clusters_are_refused_where_they_cannot_work(bad, words):
    cfg = ModelConfig(**{"arch": "fastgan", "resolution": 32, "clusters": 3, **bad})
    with pytest.raises(UserError, match=words):
        build_generator(cfg)


def test_clustered_fastgan_trains_samples_walks_and_fine_tunes_onto_its_clusters(tmp_path, proc_store):
    """--clusters end to end: the run says what it found, seeds render repeatably (truncated too),
    a walk renders, and --from onto a store of one kind of picture puts all of it in one of the
    base's clusters, whose interval of the latent then covers all of it."""
    from PIL import Image

    import generate
    from conftest import run_cli, run_main
    from gan.export import load_generator, resolve_model
    from test_fastgan import TINY_FAST
    from test_train import only_run, train

    runs = tmp_path / "runs"
    proc = train("--data", proc_store, *TINY_FAST, "--clusters", 3, "--batch", 8, "--kimg", 0.032, "--outdir", runs,
                 "--snap", 100)
    assert "clusters: 3 of 256 images" in proc.stdout and "add --cond" not in proc.stdout
    run = only_run(runs)
    G, cfg, _ = load_generator(resolve_model(run))
    assert cfg.clusters == 3 and G.cluster_edges[0] == 0 and abs(float(G.cluster_edges[-1]) - 1) < 1e-6
    assert (G.cluster_edges[1:] > G.cluster_edges[:-1]).all() and G.cluster_centroids.abs().sum() > 0

    def gen(*args):
        p = run_main(generate.main, *args)
        assert p.returncode == 0, p.stderr[-2000:]

    for name in ("a", "b"):
        gen("sample", "--model", run, "--seeds", "0-3", "--trunc", 0.7, "--out", tmp_path / name)
    a = np.asarray(Image.open(tmp_path / "a" / "seed0002.png"))
    assert np.array_equal(a, np.asarray(Image.open(tmp_path / "b" / "seed0002.png")))
    gen("interpolate", "--model", run, "--seeds", "0,1", "--frames", 4, "--out", tmp_path / "walk.gif")
    assert Image.open(tmp_path / "walk.gif").n_frames == 4
    # A store of one flat colour: every image goes to the one base cluster nearest it.
    folder = tmp_path / "red"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(24):
        px = np.clip(np.array([220, 30, 30])[None, None] + rng.normal(0, 10, (32, 32, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(px).save(folder / f"{i}.png")
    red = tmp_path / "red-store"
    run_cli("-m", "data_prep", folder, "--out", red, "--resolution", 32, "--no-progress", check=0)
    ft = train("--data", red, "--from", run, "--kimg", 0.016, "--batch", 8, "--outdir", tmp_path / "ft", "--snap", 100)
    assert "Traceback" not in ft.stderr
    G2, cfg2, _ = load_generator(resolve_model(only_run(tmp_path / "ft")))
    assert cfg2.clusters == 3 and torch.equal(G2.cluster_centroids, G.cluster_centroids)
    width = G2.cluster_edges[1:] - G2.cluster_edges[:-1]
    k = int(width.argmax())
    assert abs(float(width[k]) - 1) < 1e-6
    assert k == int(clusters.assign(np.stack([np.asarray(Image.open(folder / "0.png")).transpose(2, 0, 1)]),
                                    G.cluster_centroids)[0])


def test_clusters_flag_auto_and_bad_values(tmp_path, proc_store):
    """--clusters auto sizes the count from the store (the dry run says so and writes no run);
    a bad value, too many clusters for the store, --cond beside it and a DCGAN are one-line errors."""
    import train as train_cli
    from conftest import assert_user_error, run_main

    common = ["--data", proc_store, "--arch", "fastgan", "--kimg", 0.016, "--outdir", tmp_path / "runs"]
    dry = run_main(train_cli.main, *common, "--clusters", "auto", "--dry-run")
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert f"clusters: {clusters.cluster_count(256)} for 256 images" in dry.stdout + dry.stderr
    assert not (tmp_path / "runs").exists()
    bad = run_main(train_cli.main, *common, "--clusters", "many")
    assert bad.returncode == 2 and "--clusters" in bad.stderr and "Traceback" not in bad.stderr
    assert_user_error(run_main(train_cli.main, *common, "--clusters", 200), "--clusters 200", "256 images", "at most 128")
    assert_user_error(run_main(train_cli.main, *common, "--clusters", 3, "--cond"), "--clusters", "--cond")
    assert_user_error(run_main(train_cli.main, "--data", proc_store, "--preset", "dcgan64", "--clusters", 3,
                               "--outdir", tmp_path / "runs"), "--arch dcgan")
    assert not (tmp_path / "runs").exists()
