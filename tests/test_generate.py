import json
import os
import re
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import assert_user_error, native_bf16, run_cli, run_main
from gan.config import ModelConfig
from gan.errors import UserError
from gan.export import load_generator, save_generator
from gan.models import build_generator
from gan.sampling import Sampler, latents_for_seeds, parse_seeds


def gen(*args, check=0):
    return run_cli("generate.py", *args, check=check)


def gen_in_process(*args, check=0):
    """generate.py's main() in this process: for calls after a test's first (its subprocess run
    covers start-up); about 2 s less each."""
    import generate

    proc = run_main(generate.main, *args)
    if check is not None:
        assert proc.returncode == check, (proc.returncode, proc.stderr[-2000:])
    return proc


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Small randomly initialized exported models (sampling logic does not need training)."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    out = {}
    for name, cfg in {
        "style": ModelConfig(arch="stylegan", resolution=32, channel_base=512, channel_max=64, mapping_layers=2,
                             z_dim=32, w_dim=32, c_dim=3, class_names=["Baroque", "Cubism", "Impressionism"]),
        "dcgan": ModelConfig(arch="dcgan", resolution=32, g_channels=16, d_channels=16, z_dim=24),
    }.items():
        G = build_generator(cfg)
        for p in G.parameters():  # make noise strengths and biases non-trivial
            p.data.add_(torch.randn_like(p) * 0.05)
        G.eval()
        if cfg.arch == "dcgan":
            from gan.training.ema import recalibrate_batchnorm

            recalibrate_batchnorm(G, cfg.z_dim, 0, "cpu", batches=2, batch=64)
        save_generator(G, cfg, root / name, extra={"kimg": 1.5, "dataset": {"kind": "folder", "path": "/private/art"}})
        out[name] = root / name
    return out


def test_parse_seeds():
    assert parse_seeds("0-3,10,2") == [0, 1, 2, 3, 10]
    assert parse_seeds(" 7 ") == [7] and parse_seeds("4294967295") == [4294967295]
    for bad in ("0-", "5-2", "a", "-3", "4294967296", "", "1,,2", "1-2-3"):
        with pytest.raises(UserError):
            parse_seeds(bad)


def test_models_saved_by_older_artgan_render_as_before(tmp_path):
    """tests/data/stylegan-v1: a StyleGAN export (config version 1, before up_conv existed) and
    the images that artgan rendered from it for seeds 0-2. It keeps its filter-first up-convs;
    a new model gets the transposed ones, and a newer config version, which older artgan refuses."""
    from safetensors.torch import load_file

    old = Path(__file__).parent / "data" / "stylegan-v1"
    G, cfg, meta = load_generator(old)
    assert meta["artgan_config_version"] == 1 and cfg.up_conv == "filter_first"
    imgs = torch.stack([img for _, img in Sampler(G, cfg).seeds([0, 1, 2], None)])
    assert torch.allclose(imgs, load_file(str(old / "expected_seeds_0-2.safetensors"))["images"], atol=1e-5)

    fresh = ModelConfig(**{**cfg.to_dict(), "up_conv": "transposed"})
    new = save_generator(build_generator(fresh), fresh, tmp_path / "new")
    G2, cfg2, meta2 = load_generator(new)
    assert cfg2.up_conv == "transposed" and meta2["artgan_config_version"] >= 2
    assert ModelConfig(arch="stylegan").up_conv == "transposed"  # what train.py builds


def test_seed_images_do_not_depend_on_batch_or_order(models):
    for name, c in (("style", 1), ("dcgan", None)):
        G, cfg, _ = load_generator(models[name])
        s = Sampler(G, cfg)
        a = dict(s.seeds([5, 1, 9, 3, 7], c, 0.8, batch=5))
        b = dict(s.seeds([3, 9, 1, 7, 5], c, 0.8, batch=2))
        single = dict(s.seeds([9], c, 0.8, batch=1))
        for k in a:
            assert torch.allclose(a[k], b[k], atol=1e-5), (name, k)
        assert torch.allclose(a[9], single[9], atol=1e-5)
        assert not torch.allclose(a[5], a[1])


def test_sample_cli_writes_seed_files_grid_and_export_roundtrip(models, tmp_path):
    out = tmp_path / "out"
    res = gen("sample", "--model", models["style"], "--seeds", "0-5,42", "--class", "Cubism", "--trunc", 0.7,
              "--grid", "--batch", 4, "--out", out)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["grid.png"] + [f"seed{i:04d}.png" for i in (0, 1, 2, 3, 4, 5, 42)], res.stdout
    again = tmp_path / "again"
    gen_in_process("sample", "--model", models["style"], "--seeds", "42", "--class", "Cubism", "--trunc", 0.7, "--out", again)
    a = np.asarray(Image.open(out / "seed0042.png")).astype(int)
    b = np.asarray(Image.open(again / "seed0042.png")).astype(int)
    assert np.abs(a - b).max() <= 1
    # export -> load gives identical images
    exp = tmp_path / "exported"
    gen_in_process("export", "--model", models["style"], "--out", exp)
    assert {p.name for p in exp.iterdir()} == {"model.safetensors", "config.json", "README.md", "samples.png",
                                               "checksums.json"}
    card = (exp / "README.md").read_text()
    assert "stylegan" in card and "1.5 kimg" in card and "kind=folder" in card
    assert "/private/art" not in card and str(tmp_path) not in card  # no local paths in a shared card
    # A model meant for sharing gets the modes the umask gives new files, not mkdtemp's 0700.
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(exp.stat().st_mode) == 0o777 & ~umask
    assert {stat.S_IMODE(p.stat().st_mode) for p in exp.iterdir()} == {0o666 & ~umask}
    # Offline push: the export stays, and the hint is about the network, not about logging in.
    pushed = tmp_path / "pushed"
    proc = gen("export", "--model", models["style"], "--out", pushed, "--push-to-hub", "someone/art", check=None)
    assert_user_error(proc, "push to someone/art failed", "network")
    assert "login" not in proc.stderr and (pushed / "model.safetensors").exists()
    G1, cfg1, _ = load_generator(models["style"])
    G2, cfg2, _ = load_generator(exp)
    z = latents_for_seeds([3, 4], cfg1.z_dim)
    assert torch.equal(Sampler(G1, cfg1).from_z(z, 2, 0.5), Sampler(G2, cfg2).from_z(z, 2, 0.5))
    assert_user_error(gen_in_process("export", "--model", models["style"], "--out", exp, check=None),
                      "not an empty directory")


def test_sample_every_class_in_turn(models, tmp_path):
    """--class all, a conditional model's default: the listed seeds take the classes in turn (the
    demo's grid, like the store's preview); each image is the one that seed renders with --class
    of its own class, truncated toward its own class's mean."""
    out = tmp_path / "all"
    gen_in_process("sample", "--model", models["style"], "--seeds", "7,3,0-2", "--class", "all", "--trunc", 0.6,
                   "--grid", "--batch", 2, "--out", out)
    classes = ["Baroque", "Cubism", "Impressionism"]
    expected = [f"seed{s:04d}-{classes[i % 3]}.png" for i, s in enumerate([7, 3, 0, 1, 2])]
    assert sorted(p.name for p in out.iterdir()) == sorted(["grid.png", *expected])
    for name in expected:
        seed, cls = name[4:8], name[9:-4]
        one = tmp_path / name
        gen_in_process("sample", "--model", models["style"], "--seeds", seed, "--class", cls, "--trunc", 0.6,
                       "--out", one)
        a = np.asarray(Image.open(out / name)).astype(int)
        b = np.asarray(Image.open(one / f"seed{seed}.png")).astype(int)
        assert np.abs(a - b).max() <= 1, name
    default = tmp_path / "default"  # no --class: the same images under the same names
    gen_in_process("sample", "--model", models["style"], "--seeds", "7,3,0-2", "--trunc", 0.6, "--batch", 2,
                   "--out", default)
    assert sorted(p.name for p in default.iterdir()) == sorted(expected)
    for name in expected:
        assert np.array_equal(np.asarray(Image.open(default / name)), np.asarray(Image.open(out / name))), name
    assert_user_error(gen_in_process("sample", "--model", models["dcgan"], "--seeds", "0", "--class", "all",
                                     "--out", tmp_path / "x", check=None), "--class all", "unconditional")


def test_a_class_named_all_is_that_class_and_no_class_still_draws_them_in_turn(tmp_path):
    """A store labelled from folders may hold a folder named "all": --class all then picks that
    class, and sampling without --class still takes every class in turn."""
    torch.manual_seed(1)
    cfg = ModelConfig(arch="dcgan", resolution=32, g_channels=16, d_channels=16, z_dim=24, c_dim=2,
                      class_names=["all", "trees"])
    G = build_generator(cfg).eval()
    for p in G.parameters():
        p.data.add_(torch.randn_like(p) * 0.05)
    save_generator(G, cfg, tmp_path / "m")
    turns = tmp_path / "turns"
    gen_in_process("sample", "--model", tmp_path / "m", "--seeds", "0-3", "--out", turns)
    assert sorted(p.name for p in turns.iterdir()) == ["seed0000-all.png", "seed0001-trees.png",
                                                       "seed0002-all.png", "seed0003-trees.png"]
    named = tmp_path / "named"
    gen_in_process("sample", "--model", tmp_path / "m", "--seeds", "0-3", "--class", "all", "--out", named)
    assert sorted(p.name for p in named.iterdir()) == [f"seed{i:04d}.png" for i in range(4)]
    for seed in (0, 2):  # the class "all"'s own images, the same as those the turns gave it
        assert np.array_equal(np.asarray(Image.open(named / f"seed{seed:04d}.png")),
                              np.asarray(Image.open(turns / f"seed{seed:04d}-all.png")))
    assert not np.array_equal(np.asarray(Image.open(named / "seed0001.png")),
                              np.asarray(Image.open(turns / "seed0001-trees.png")))


def test_grid_shape_follows_the_count(models, tmp_path):
    gen_in_process("sample", "--model", models["dcgan"], "--seeds", "0-31", "--grid", "--out", tmp_path)
    grid = np.asarray(Image.open(tmp_path / "grid.png"))
    assert grid.shape[:2] == (4 * 32, 8 * 32)  # 4x8, not 6x6 with 4 empty cells
    cells = grid.reshape(4, 32, 8, 32, 3).transpose(0, 2, 1, 3, 4).reshape(32, -1)
    assert (cells.max(1) > 0).all()  # no black cell
    seed31 = np.asarray(Image.open(tmp_path / "seed0031.png"))
    assert np.array_equal(grid[96:, 224:], seed31)


def test_sample_from_run_dir_and_checkpoint(tmp_path, tiny_run):
    run = tiny_run
    gen("sample", "--model", run, "--seeds", "0-1", "--out", tmp_path / "a")
    ck = sorted((run / "checkpoints").iterdir())[-1]
    gen_in_process("sample", "--model", ck, "--seeds", "0-1", "--out", tmp_path / "b")
    assert (tmp_path / "a/seed0001.png").read_bytes() == (tmp_path / "b/seed0001.png").read_bytes()


def test_interpolate_gif_frames_and_mix(models, tmp_path):
    gif = tmp_path / "walk.gif"
    gen("interpolate", "--model", models["style"], "--class", "Baroque", "--seeds", "1,5,9", "--frames", 12,
        "--loop", "--out", gif)
    with Image.open(gif) as im:
        assert im.n_frames == 12
    gen_in_process("interpolate", "--model", models["dcgan"], "--seeds", "1,2", "--frames", 5, "--out", tmp_path / "d.gif")
    with Image.open(tmp_path / "d.gif") as im:
        assert im.n_frames == 5
    mix = tmp_path / "mix.png"
    gen_in_process("mix", "--model", models["style"], "--class", "Baroque", "--rows", "1-3", "--cols", "10-13",
                   "--layers", "0-3", "--out", mix)
    assert Image.open(mix).size == (5 * 32, 4 * 32)
    assert_user_error(gen_in_process("mix", "--model", models["dcgan"], "--rows", "1", "--cols", "2", "--out", mix,
                                     check=None),
                      "not supported for dcgan")
    assert_user_error(gen_in_process("mix", "--model", models["style"], "--class", "Baroque", "--rows", "1",
                                     "--cols", "2", "--layers", "3-99", "--out", mix, check=None), "w layers")


def test_refine_lowers_style_loss(models, tmp_path):
    style = tmp_path / "style.png"
    from data_prep.procedural import render

    render(0, 2, 128)[0].save(style)  # op-art stripes
    out = tmp_path / "ref"
    res = gen("refine", "--model", models["style"], "--class", "Impressionism", "--seeds", 3, "--style", style,
              "--vgg-weights", "random", "--steps", 40, "--size", 64, "--out", out, "--optimizer", "adam",
              "--vgg-precision", "no", "--style-weight", 1e4)
    assert "random" in res.stderr and "note:" in res.stderr
    rep = json.loads((out / "seed0003_report.json").read_text())
    assert rep["end"]["style"] <= 0.5 * rep["start"]["style"], rep
    assert rep["end"]["content"] < 10 * max(rep["start"]["content"], 1e-3) + 1.0
    assert Image.open(out / "seed0003_refined.png").size == (64, 64)
    assert Image.open(out / "seed0003_strip.png").size[0] > 3 * 64
    # plain neural style transfer on a photo, two blended styles, multi-scale, lbfgs
    photo = tmp_path / "photo.jpg"
    render(5, 1, 200)[0].resize((300, 200)).save(photo)
    style2 = tmp_path / "s2.png"
    render(1, 3, 96)[0].save(style2)
    gen_in_process("refine", "--content", photo, "--style", style, "--style", style2, "--style-blend", "0.7,0.3",
                   "--vgg-weights", "random", "--steps", 3, "--size", 300, "--out", out, "--preserve-color")
    assert Image.open(out / "photo_refined.png").size == (300, 200)
    rep = json.loads((out / "photo_report.json").read_text())
    assert [s["size"] for s in rep["scales"]] == [[171, 256], [200, 300]]


def test_generate_user_errors(models, tmp_path):
    import generate

    def quick(*args):  # validation only: in-process is enough and saves a second per call
        return run_main(generate.main, *args)

    out = tmp_path / "o"
    m = models["style"]
    for seeds in ("0-", "5-2", "a", "-1", "4294967296"):
        assert_user_error(quick("sample", "--model", m, "--class", "Cubism", "--seeds", seeds, "--out", out),
                          "--seeds")
    assert_user_error(quick("sample", "--model", m, "--class", "Cubism", "--seeds", 1, "--trunc", 1.5, "--out", out),
                      "--trunc")
    assert_user_error(quick("sample", "--model", m, "--class", "Rococo", "--seeds", 1, "--out", out),
                      "Rococo", "Impressionism")
    # sample draws a conditional model's classes in turn without --class (below); a walk is one class
    assert_user_error(quick("interpolate", "--model", m, "--seeds", "0,1", "--frames", 2, "--out", tmp_path / "w.gif"),
                      "--class")
    assert_user_error(quick("sample", "--model", tmp_path / "nope", "--seeds", 1, "--out", out), "no such")
    # owner/name looks like a Hub id, but when `owner` is a local folder the user meant a path.
    (tmp_path / "runs").mkdir()
    proc = run_cli("generate.py", "sample", "--model", "runs/00009-nope", "--seeds", 1, "--out", out, cwd=tmp_path)
    assert_user_error(proc, "runs/00009-nope", "no such file or directory")
    assert "Hub" not in proc.stderr
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((m / "config.json").read_text())
    (broken / "model.safetensors").write_bytes(b"\x00" * 100)
    assert_user_error(quick("sample", "--model", broken, "--seeds", 1, "--out", out), "cannot load")
    future = tmp_path / "future"
    future.mkdir()
    cfg = json.loads((m / "config.json").read_text())
    cfg["artgan_config_version"] = 99
    (future / "config.json").write_text(json.dumps(cfg))
    (future / "model.safetensors").write_bytes((m / "model.safetensors").read_bytes())
    assert_user_error(quick("sample", "--model", future, "--seeds", 1, "--out", out), "incompatible")
    odd = tmp_path / "odd"  # a hand-edited config naming convs that do not exist
    odd.mkdir()
    cfg = json.loads((m / "config.json").read_text())
    cfg["model"]["up_conv"] = "sideways"
    (odd / "config.json").write_text(json.dumps(cfg))
    (odd / "model.safetensors").write_bytes((m / "model.safetensors").read_bytes())
    assert_user_error(quick("sample", "--model", odd, "--seeds", 1, "--out", out), "'sideways'", "transposed")
    pick = tmp_path / "pickled"
    pick.mkdir()
    torch.save({"x": 1}, pick / "model.pt")
    assert_user_error(quick("sample", "--model", pick, "--seeds", 1, "--out", out), "only safetensors")
    bad_img = tmp_path / "bad.jpg"
    bad_img.write_text("nope")
    assert_user_error(quick("refine", "--content", bad_img, "--style", bad_img, "--vgg-weights", "random",
                            "--out", out), "not a readable image")
    good = tmp_path / "good.png"
    Image.new("RGB", (40, 40), (9, 9, 9)).save(good)
    assert_user_error(quick("refine", "--content", good, "--style", good, "--vgg-weights", "random", "--name",
                            "../escape", "--out", out), "--name")
    dot = tmp_path / "dot.png"
    Image.new("RGB", (1, 1), (9, 9, 9)).save(dot)
    assert_user_error(quick("refine", "--content", good, "--style", dot, "--vgg-weights", "random", "--out", out),
                      "1x1px", "at least 32px")
    assert_user_error(quick("refine", "--content", good, "--style", good, "--vgg-weights", tmp_path / "missing.pth",
                            "--out", out), "no such file")
    for flag, value in (("--steps", 0), ("--size", 8), ("--style-weight", "nan"), ("--tv-weight", -1)):
        assert_user_error(quick("refine", "--content", good, "--style", good, f"{flag}={value}", "--vgg-weights",
                                "random", "--out", out), flag)
    for blend in ("1", "0.5,x", "-1,2", "nan,1", "0,0", "inf,1"):
        assert_user_error(quick("refine", "--content", good, "--style", good, "--style", good, f"--style-blend={blend}",
                                "--vgg-weights", "random", "--out", out), "--style-blend")
    assert_user_error(quick("interpolate", "--model", m, "--class", "Cubism", "--seeds", "1,2", "--out", out / "x.avi"),
                      ".gif or .mp4")
    assert_user_error(quick("sample", "--model", m, "--class", "Cubism", "--seeds", 1, "--out", good / "x"),
                      f"--out {good / 'x'}: cannot create it")  # a file where the folder should be
    assert_user_error(quick("interpolate", "--model", m, "--class", "Cubism", "--seeds", "1,2", "--frames", 2,
                            "--out", good / "w.gif"), f"{good}: File exists")
    assert not out.exists() or not any(out.iterdir())  # nothing half-written


def test_vgg_weights_offline_message(tmp_path, monkeypatch):
    from gan import style

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(style.torch.hub, "load_state_dict_from_url",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    with pytest.raises(UserError) as e:
        style.load_vgg_state(None)
    msg = str(e.value)
    assert "vgg19-dcbb9e9d.pth" in msg and str(tmp_path / "torch") in msg and "--vgg-weights" in msg
    # A real torchvision-format file at that path is used.
    from torchvision.models import vgg19

    path = Path(torch.hub.get_dir()) / "checkpoints" / "vgg19-dcbb9e9d.pth"
    path.parent.mkdir(parents=True)
    # Only the convolutional part (the file torchvision downloads also holds the 480 MB
    # classifier, which the loader skips): keeps this test's disk footprint at 80 MB.
    full = vgg19(weights=None).state_dict()
    torch.save({k: v for k, v in full.items() if k.startswith("features.")}, path)
    try:
        state = style.load_vgg_state(None)
        feats = style.VGGFeatures(state)(torch.rand(1, 3, 64, 64))
        assert set(feats) == set(style.STYLE_LAYERS) | {"conv4_2"}
    finally:
        path.unlink()


def test_interpolate_mp4_needs_ffmpeg_or_writes_video(models, tmp_path):
    out = tmp_path / "walk.mp4"
    proc = gen("interpolate", "--model", models["dcgan"], "--seeds", "1,2", "--frames", 6, "--out", out, check=None)
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        assert_user_error(proc, "imageio-ffmpeg", "artgan[video]")
        assert not out.exists()
    else:
        assert proc.returncode == 0 and out.stat().st_size > 0


# Adam in bf16 took 105 s on a CPU that emulates bf16 (an AVX2-only EPYC): there it is in make test-slow.
@pytest.mark.parametrize("optimizer,precision", [("lbfgs", "no"), ("adam", "no"), pytest.param(
    "adam", "bf16", marks=[] if native_bf16() else pytest.mark.slow)])
def test_refine_report_is_the_saved_image(tmp_path, optimizer, precision):
    """The final losses in the report are those of the PNG written, whatever the optimizer:
    LBFGS used to run pixels far out of [0, 1] and report losses the clamped image did not have."""
    from data_prep.procedural import render
    from gan.refine import RefineOptions, losses_of, refine
    from gan.sampling import save_png
    from gan.style import VGGFeatures

    torch.manual_seed(0)
    vgg = VGGFeatures(None)
    content, style = render(2, 0, 64)[0], render(0, 2, 64)[0]
    opts = RefineOptions(steps=25, size=64, optimizer=optimizer, precision=precision, style_weight=1e4)
    out, report = refine(content, [style], [1.0], vgg, opts, progress=False)
    path = save_png(out, tmp_path / "r.png")
    again = losses_of(Image.open(path), content, [style], [1.0], vgg, opts)
    for k in ("style", "content", "tv", "total"):
        assert again[k] == pytest.approx(report["end"][k], rel=1e-3, abs=1e-6), (k, again, report["end"])
    assert report["end"]["style"] < 0.5 * report["start"]["style"]
    # What the progress bar showed last is what was delivered (LBFGS used to show 10x lower).
    assert report["end"]["total"] <= 1.25 * report["history"][-1][-1]["total"], (report["end"], report["history"][-1][-1])


def test_style_content_and_reference_images_are_read_like_the_collection(tmp_path):
    """Style, content and --finish-ref images are read the way data_prep reads art: a 16-bit
    scan keeps its tones (Pillow's convert('RGB') clipped it to white), a phone photo stands the
    way its EXIF says, transparency lies on white (not on whatever colour hides under alpha 0)."""
    from data_prep.images import read_image_arg
    from gan.finish import reference_stats
    from gan.style import read_style_images

    ramp = (np.linspace(0, 65535, 96 * 64).reshape(64, 96)).astype(np.uint16)
    scan = tmp_path / "scan16.png"
    Image.fromarray(ramp).save(scan)
    assert Image.open(scan).mode.startswith("I")
    photo = tmp_path / "photo.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown portrait (rotated 90 degrees)
    Image.new("RGB", (120, 60), (200, 40, 40)).save(photo, exif=exif)
    clear = tmp_path / "clear.png"
    rgba = np.zeros((64, 64, 4), np.uint8)  # black under alpha 0, except an opaque red square
    rgba[16:48, 16:48] = (255, 0, 0, 255)
    Image.fromarray(rgba, "RGBA").save(clear)
    for read in (lambda p: read_image_arg(str(p), "--content"), lambda p: read_style_images([str(p)])[0]):
        tones = np.asarray(read(scan)).astype(float)
        assert tones.shape == (64, 96, 3) and 120 < tones.mean() < 135 and tones.max() == 255, tones.mean()
        assert read(photo).size == (60, 120)
        seen = np.asarray(read(clear))
        assert (seen[0, 0] == 255).all() and tuple(seen[32, 32]) == (255, 0, 0)
    mean, _ = reference_stats(scan)
    assert 40 < mean[0] < 60, mean  # CIELAB lightness of a mid-grey ramp, not of white (100)


def test_refine_refuses_lbfgs_on_bf16_features(tmp_path):
    """LBFGS on bf16 VGG features stopped at the start image (its line search cannot see the
    rounded loss decrease): refused up front, before any model or image is read."""
    from gan.refine import RefineOptions

    with pytest.raises(UserError, match="--optimizer adam"):
        RefineOptions(optimizer="lbfgs", precision="bf16")
    for bad in (dict(steps=0), dict(size=16), dict(style_weight=float("nan")), dict(tv_weight=-1)):
        with pytest.raises(UserError):
            RefineOptions(optimizer="adam", **bad)
    proc = gen_in_process("refine", "--content", tmp_path / "absent.png", "--style", tmp_path / "absent.png",
                          "--optimizer", "lbfgs", "--vgg-precision", "bf16", "--out", tmp_path / "r", check=None)
    assert_user_error(proc, "--optimizer lbfgs needs float32", "--optimizer adam")
    assert not (tmp_path / "r").exists()


def test_demo_vgg_check_is_quiet_offline(tmp_path):
    """`make demo` asks `python -m gan.weights vgg19` before refining: offline and uncached it
    answers by exit code alone (no download attempt or error printed mid-demo)."""
    from torchvision.models import VGG16_Weights, VGG19_Weights
    from torchvision.models.vgg import cfgs, make_layers

    from gan.style import vgg_layers
    from gan.weights import VGG_URLS

    # artgan's VGG layouts, init and weight URLs are torchvision's (without importing it).
    for net, key, weights in (("vgg19", "E", VGG19_Weights), ("vgg16", "D", VGG16_Weights)):
        assert VGG_URLS[net] == weights.IMAGENET1K_V1.url
        torch.manual_seed(0)
        ours = vgg_layers(net).state_dict()
        torch.manual_seed(0)
        theirs = make_layers(cfgs[key])
        for m in theirs.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                torch.nn.init.zeros_(m.bias)
        theirs = theirs.state_dict()
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours), net
    proc = run_cli("-m", "gan.weights", "vgg19", env={"TORCH_HOME": str(tmp_path / "torch")})
    assert proc.returncode == 1 and proc.stdout == "" and proc.stderr == "", proc
    path = tmp_path / "torch" / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"cached")
    proc = run_cli("-m", "gan.weights", "vgg19", env={"TORCH_HOME": str(tmp_path / "torch")})
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == ""
    # An SPDX string, not the deprecated table that made setuptools print a warning block twice.
    meta = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()  # no tomllib on Python 3.10
    assert re.search(r'^license = "MIT"$', meta, re.M)


def test_project_finds_a_generated_image_and_sample_renders_its_latent(models, tmp_path):
    """`project` recovers a latent for an image the model made (StyleGAN: one w from the mean w;
    DCGAN: z from the closest random starts), and `sample --latent` renders that latent into
    exactly the projected image. A latent is refused by a model it does not fit, in one line."""
    gen_in_process("sample", "--model", models["style"], "--seeds", 11, "--class", "Cubism", "--out", tmp_path / "t")
    target = tmp_path / "t" / "seed0011.png"
    out = tmp_path / "p"
    proc = gen("project", target, "--model", models["style"], "--class", "Cubism", "--steps", 60,
               "--vgg-weights", "random", "--out", out)
    assert "Traceback" not in proc.stderr
    report = json.loads((out / "seed0011_report.json").read_text())
    assert report["space"] == "w" and report["steps"] == 60
    start, end = report["start"], report["end"]
    assert end["distance"] < 0.3 * start["distance"], report
    assert end["psnr"] > start["psnr"] + 5, report
    assert Image.open(out / "seed0011_strip.png").size[1] == 256
    latent = out / "seed0011_latent.safetensors"
    gen_in_process("sample", "--model", models["style"], "--latent", latent, "--grid", "--out", tmp_path / "r")
    again = np.asarray(Image.open(tmp_path / "r" / "seed0011.png"))
    assert np.array_equal(again, np.asarray(Image.open(out / "seed0011_projected.png")))
    assert (tmp_path / "r" / "grid.png").exists()
    # A walk from one projected artwork to another (a second, quick projection).
    gen_in_process("sample", "--model", models["style"], "--seeds", 12, "--class", "Cubism", "--out", tmp_path / "t")
    gen_in_process("project", tmp_path / "t" / "seed0012.png", "--model", models["style"], "--class", "Cubism",
                   "--steps", 3, "--vgg-weights", "random", "--out", out)
    gen_in_process("interpolate", "--model", models["style"], "--latent", latent, "--latent",
                   out / "seed0012_latent.safetensors", "--frames", 5, "--out", tmp_path / "walk.gif")
    walk = Image.open(tmp_path / "walk.gif")
    assert walk.n_frames == 5
    for frame, name in ((0, "seed0011"), (4, "seed0012")):  # from one projection to the other
        walk.seek(frame)
        pic = np.asarray(walk.convert("RGB"), dtype=float)  # GIF: a 256-colour palette, so not exact
        # (here about 5 levels from its own projection; 46 from the other one)
        assert np.abs(pic - np.asarray(Image.open(out / f"{name}_projected.png"), dtype=float)).mean() < 15, name

    # DCGAN: z, the best of the starts optimized together.
    gen_in_process("sample", "--model", models["dcgan"], "--seeds", 4, "--out", tmp_path / "t2")
    gen_in_process("project", tmp_path / "t2" / "seed0004.png", "--model", models["dcgan"], "--steps", 15,
                   "--vgg-weights", "random", "--out", tmp_path / "p2")
    report = json.loads((tmp_path / "p2" / "seed0004_report.json").read_text())
    assert report["space"] == "z" and report["end"]["distance"] < 0.7 * report["start"]["distance"], report
    z_latent = tmp_path / "p2" / "seed0004_latent.safetensors"
    gen_in_process("sample", "--model", models["dcgan"], "--latent", z_latent, "--out", tmp_path / "r2")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "r2" / "seed0004.png")),
                          np.asarray(Image.open(tmp_path / "p2" / "seed0004_projected.png")))

    # Refusals: one line each, nothing written.
    bad = tmp_path / "bad"
    assert_user_error(gen_in_process("sample", "--model", models["style"], "--latent", z_latent, "--out", bad,
                                     check=None), "z latent", "this model takes a w latent")
    (tmp_path / "notes.safetensors").write_bytes(b"not a tensor file")
    assert_user_error(gen_in_process("sample", "--model", models["style"], "--latent", tmp_path / "notes.safetensors",
                                     "--out", bad, check=None), "not a latent saved by generate.py project")
    assert_user_error(gen_in_process("sample", "--model", models["style"], "--latent", latent, "--seeds", 1,
                                     "--out", bad, check=None), "--seeds", "--latent")
    assert_user_error(gen_in_process("interpolate", "--model", models["style"], "--latent", latent, "--out",
                                     bad / "w.gif", check=None), "at least two waypoints")
    assert_user_error(gen_in_process("interpolate", "--model", models["style"], "--latent", latent, "--latent", latent,
                                     "--trunc", 0.5, "--out", bad / "w.gif", check=None), "drop --class and --trunc")
    assert_user_error(gen_in_process("sample", "--model", models["style"], "--latent", tmp_path / "none.safetensors",
                                     "--out", bad, check=None), "no such file")
    assert_user_error(gen_in_process("project", tmp_path / "none.png", "--model", models["style"], "--class", "Cubism",
                                     "--out", bad, check=None), "no such file")
    assert_user_error(gen_in_process("project", target, "--model", models["style"], "--vgg-weights", "random",
                                     "--out", bad, check=None), "--class")
    assert not bad.exists()
