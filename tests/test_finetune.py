"""Fine-tuning toward a style: --from (transfer), FreezeD, style-guided training, resume, and
every mismatch and bad input as a one-line error with nothing written."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from conftest import assert_user_error, run_cli, run_main
from gan.training import checkpoint
from test_train import TINY_DCGAN, only_run, train


@pytest.fixture(scope="module")
def base(tmp_path_factory, proc_store):
    """A tiny conditional DCGAN trained on the procedural store (4 labelled styles)."""
    out = tmp_path_factory.mktemp("base")
    train("--data", proc_store, *TINY_DCGAN, "--cond", "--kimg", 0.064, "--batch", 16, "--outdir", out, "--snap", 100)
    return only_run(out)


@pytest.fixture(scope="module")
def style_png(tmp_path_factory):
    from data_prep.procedural import render

    path = tmp_path_factory.mktemp("style") / "style.png"
    render(3, 1, 96)[0].save(path)  # circles
    return path


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory):
    """A small style collection without labels (a plain folder of 24 images)."""
    from data_prep.procedural import render

    root = tmp_path_factory.mktemp("coll")
    for i in range(24):
        render(7, i * 4 + 2, 64)[0].save(root / f"{i}.png")  # all one style
    store = root / "store"
    run_cli("-m", "data_prep", root, "--out", store, "--resolution", 32, "--no-progress", check=0)
    return store


def _tb_scalars(run, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(next((run / "tb").rglob("events.out.tfevents*")).parent))
    acc.Reload()
    return [e.value for e in acc.Scalars(tag)] if tag in acc.Tags()["scalars"] else []


@pytest.mark.slow  # CI time: fastgan's --from test runs FreezeD in make test
def test_freeze_d_keeps_the_first_blocks_and_transfers_weights(tmp_path, base, unlabelled, proc_store):
    runs = tmp_path / "runs"
    train("--data", unlabelled, "--from", base, "--class", "circles", "--freeze-d", 2, "--kimg", 0.096,
          "--batch", 16, "--outdir", runs, "--snap", 100)
    run = only_run(runs)
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["train"]["init_from"] == str(base) and cfg["train"]["preset"] == "finetune"
    assert cfg["train"]["fixed_class"] == cfg["model"]["class_names"].index("circles")
    start = checkpoint.complete_checkpoints(run)[0][1]  # the restore point before the first step
    base_ck = checkpoint.latest(base)
    for name in ("model.safetensors", "model_1.safetensors"):  # G and D start from the base model
        a, b = load_file(str(base_ck / name)), load_file(str(start / name))
        assert all(torch.equal(a[k], b[k]) for k in a), name
    d0 = load_file(str(base_ck / "model_1.safetensors"))
    d1 = load_file(str(checkpoint.latest(run) / "model_1.safetensors"))
    # DCGAN D: features.0 (block 1), features.2-3 (block 2) frozen; features.5+ and the head train.
    frozen = [k for k in d0 if k.startswith(("features.0.", "features.2.", "features.3.")) and "running" not in k
              and "num_batches" not in k]
    assert frozen and all(torch.equal(d0[k], d1[k]) for k in frozen), frozen
    assert not torch.equal(d0["features.5.weight"], d1["features.5.weight"])
    assert not torch.equal(d0["out.weight"], d1["out.weight"])
    # the one-class fine-tune resumes on its unlabelled store (given the run's checkpoints folder,
    # the run resumes from its newest checkpoint, as it does given the run dir)
    train("--resume", run / "checkpoints", "--kimg", 0.112)
    assert checkpoint.read_state(checkpoint.latest(run))["cur_nimg"] == 112
    from gan.export import resolve_model

    assert resolve_model(str(run / "checkpoints")) == resolve_model(str(run)) == checkpoint.latest(run) / "export"
    # An export has no D: it starts fresh, and the user is told.
    import shutil

    shutil.copytree(checkpoint.latest(base) / "export", tmp_path / "shared")  # an export on its own
    proc = train("--data", proc_store, "--from", tmp_path / "shared", "--kimg", 0.016, "--batch", 16,
                 "--outdir", tmp_path / "from_export", "--snap", 100)
    assert "has no discriminator" in proc.stderr and "D starts from scratch" in proc.stderr


def test_style_guided_finetune_lowers_style_distance_and_resumes(tmp_path, base, proc_store, style_png):
    from gan.export import load_generator
    from gan.metrics.style import style_report
    from gan.sampling import Sampler, latents_for_seeds
    from gan.style import StyleTarget, VGGFeatures

    style = tmp_path / "style.png"
    style.write_bytes(style_png.read_bytes())
    runs = tmp_path / "runs"
    # G_ema follows G closely here (a short half-life), so the export shows what 20 steps did.
    common = ["--data", proc_store, "--style-image", style, "--vgg-weights", "random", "--batch", 8,
              "--outdir", runs, "--snap", 100, "--style-every", 1, "--style-weight", 20, "--log-every", 2,
              "--ema-kimg", 0.004, "--style-batch", 2]
    proc = train(*common, "--from", base, "--kimg", 0.096, "--name", "st")
    assert "randomly initialized" in proc.stderr
    run = only_run(runs)
    assert (run / "style" / "style0.png").exists()
    losses = _tb_scalars(run, "Loss/style")
    assert len(losses) >= 6 and np.mean(losses[-2:]) < np.mean(losses[:2]), losses

    target = StyleTarget(VGGFeatures(None), [Image.open(style)], 128)

    def report(export):
        G, cfg, _ = load_generator(export)
        z = latents_for_seeds(range(8), cfg.z_dim)
        return style_report(torch.cat([Sampler(G, cfg).from_z(z, k) for k in range(cfg.c_dim)]), target)

    before, after = report(checkpoint.latest(base) / "export"), report(checkpoint.latest(run) / "export")
    assert after["style_distance"] < 0.8 * before["style_distance"], (before, after)
    # Resume continues the run from its own copy of the style image.
    style.unlink()
    train("--resume", run, "--kimg", 0.112)
    assert checkpoint.read_state(checkpoint.latest(run))["cur_nimg"] == 112
    assert len(_tb_scalars(run, "Loss/style")) > len(losses)


def test_finetune_mismatches_and_bad_input_are_one_line_errors(tmp_path, base, proc_store, unlabelled, style_png):
    import train as train_cli

    runs = tmp_path / "runs"

    def quick(*args):
        return run_main(train_cli.main, *args, "--outdir", runs)

    assert_user_error(quick("--data", unlabelled, "--from", base), "no labels", "--class")
    assert_user_error(quick("--data", unlabelled, "--from", base, "--class", "cubism"), "cubism", "circles")
    assert_user_error(quick("--data", proc_store, "--from", base, "--arch", "stylegan"), "arch", "fine-tuning keeps")
    store16 = tmp_path / "s16"
    run_cli("-m", "data_prep", "--procedural", 8, "--out", store16, "--resolution", 16, "--no-progress", check=0)
    assert_user_error(quick("--data", store16, "--from", base), "32px", "16px", "--resolution 32")
    assert_user_error(quick("--data", proc_store, "--from", tmp_path / "nothing"), "--from", "no such file")
    assert_user_error(quick("--data", proc_store, "--from", base, "--freeze-d", 9), "--freeze-d 9", "3 blocks")
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    assert_user_error(quick("--data", proc_store, "--from", base, "--style-image", bad), "--style-image", "readable")
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (1, 1), (200, 10, 10)).save(tiny)
    assert_user_error(quick("--data", proc_store, "--from", base, "--style-image", tiny), "1x1px", "at least")
    assert_user_error(quick("--data", proc_store, "--from", base, "--style-image", style_png, "--style-weight", -1),
                      "--style-weight")
    assert_user_error(quick("--data", proc_store, "--class", "circles"), "--class", "--from")
    assert not runs.exists()  # nothing was written by refused runs


def test_finish_colour_detail_upscale_on_real_images(tmp_path, proc_store):
    import generate
    from data_prep.procedural import render
    from gan.finish import colour_stats, lab_to_rgb, match_colour, reference_stats, rgb_to_lab, sharpen, upscale2

    rgb = np.random.default_rng(0).integers(0, 256, (50, 50, 3))
    assert np.abs(lab_to_rgb(rgb_to_lab(rgb)).astype(int) - rgb).max() <= 1  # Lab round trip
    # colour: a colour-field painting takes on the palette statistics of the whole store (the
    # covariance only as far as the sRGB gamut allows)
    img = render(3, 3, 96)[0]
    ref = reference_stats(proc_store)
    mu0, cov0 = colour_stats(np.asarray(img))
    mu1, cov1 = colour_stats(np.asarray(match_colour(img, ref)))
    assert np.abs(mu1 - ref[0]).max() < 0.15 * np.abs(mu0 - ref[0]).max() + 1.0, (mu0, mu1, ref[0])
    assert np.linalg.norm(cov1 - ref[1]) < 0.5 * np.linalg.norm(cov0 - ref[1])
    # detail: an edge gets crisper, low-amplitude grain in flat areas is not amplified
    base = np.where(np.arange(64)[None, :] < 32, 80, 170).repeat(64, 0)
    grain = np.random.default_rng(1).integers(-2, 3, (64, 64))
    pic = Image.fromarray(np.stack([base + grain] * 3, -1).astype(np.uint8))
    out = np.asarray(sharpen(pic)).astype(int)[..., 0]
    cols = out[:, 28:36].mean(0)
    assert cols.min() < 76 and cols.max() > 174, cols  # overshoot on both sides of the edge
    assert out[:, 5:20].std() <= 1.2 * (base + grain)[:, 5:20].std()
    assert upscale2(pic).size == (128, 128)
    # CLI: the finish subcommand and sample --finish
    src = tmp_path / "a.png"
    img.save(src)
    run_cli("generate.py", "finish", src, "--steps", "colour,detail,upscale2", "--ref", proc_store, "--out",
            tmp_path / "f", check=0)
    assert Image.open(tmp_path / "f" / "a.png").size == (192, 192)
    assert_user_error(run_main(generate.main, "finish", src, "--steps", "colour", "--out", tmp_path / "g"), "--ref")
    assert_user_error(run_main(generate.main, "finish", src, "--steps", "glow", "--out", tmp_path / "g"), "colour")
    # An unreadable reference is named by the flag this command takes (--ref, not refine's --finish-ref).
    bad_ref = tmp_path / "notes.txt"
    bad_ref.write_text("not an image")
    proc = run_main(generate.main, "finish", src, "--steps", "colour", "--ref", bad_ref, "--out", tmp_path / "g")
    assert_user_error(proc, f"--ref {bad_ref}", "not a prepared store or readable image")
    assert "--finish-ref" not in proc.stderr
    assert not (tmp_path / "g").exists()


def test_eval_reports_style_distance_and_diversity_vgg16(tmp_path, base, proc_store, style_png):
    from gan.style import LAYERS, VGGFeatures

    res = run_cli("generate.py", "eval", "--model", base, "--data", proc_store, "--metrics", "swd", "--num", 32,
                  "--style", style_png, "--vgg", "vgg16", "--vgg-weights", "random", "--style-seeds", "0-7",
                  "--class", "grid", check=0)
    m = json.loads(res.stdout.strip().splitlines()[-1])["metrics"]
    assert m["style_distance"] > 0 and m["diversity"] > 0 and m["swd"] > 0
    feats = VGGFeatures(None, "vgg16")(torch.rand(1, 3, 64, 64))
    assert set(feats) == set(LAYERS["vgg16"]) and feats["conv5_1"].shape[1] == 512
