"""The benchmark scripts run, on CPU at toy sizes, and print what they promise.

They are not timed here (the figures are the scripts' business); this checks that they still
start, measure every row and phase they name, and end with their JSON line. A GPU session has
30 minutes and runs these scripts first: bench/phases.py had stopped starting at all (a local
import made `torch` unbound in main) and nothing but a GPU call would have shown it.
"""
import importlib.util
import json

import pytest

from conftest import LITE0, lite0_weights, run_cli

# A StyleGAN small enough for seconds per phase, with every phase on (R1, path length).
TINY_STYLEGAN = ["--arch", "stylegan", "--resolution", 32, "--channel-base", 256, "--channel-max", 16, "--map", 2,
                 "--z-dim", 16, "--w-dim", 16, "--batch", 4, "--pl-weight", 1]


def bench(*args) -> dict:
    proc = run_cli(*args, env={"CUDA_VISIBLE_DEVICES": ""}, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _load_quality():
    """bench/quality.py as a module (it is a script, not a package), for its helpers."""
    spec = importlib.util.spec_from_file_location("bench_quality", "bench/quality.py")
    quality = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quality)
    return quality


@pytest.mark.slow  # CI time: the bench scripts' other smoke tests stay in make test
def test_bench_train_rows_and_mfu():
    out = bench("bench/train.py", "--device", "cpu", "--presets", "demo", "--precisions", "bf16", "--kimg", 0.32,
                "--peak-seconds", 0.2, "--train-flags=--batch 8 --recon-weight 0")  # train.py's flags reach each row
    assert out["failed"] == []
    assert [r["precision"] for r in out["rows"]] == ["bf16"]
    assert [(r["batch"], r["train_flags"]) for r in out["rows"]] == [(8, "--batch 8 --recon-weight 0")]
    for r in out["rows"]:
        assert r["img_per_s"] > 0 and r["s_per_kimg"] > 0 and 0 < r["mfu"] and r["peak_mem_gib"] > 0, r
    assert out["peak_tflops"]["no"] > 0 and out["peak_tflops"]["bf16"] > 0


@pytest.mark.slow  # 16 s; bench/train.py's smoke test stays in make test
def test_bench_phases_every_phase_and_variant():
    variants = ["artgan", "taps", "channels_last"]
    out = bench("bench/phases.py", "--device", "cpu", "--repeats", 1, "--variants", ",".join(variants), "--",
                *TINY_STYLEGAN)
    assert list(out["s_per_kimg"]) == variants and all(v > 0 for v in out["s_per_kimg"].values())
    for v in variants:
        phases = out["phases"][v]
        assert set(phases) == {"loader", "D", "G", "EMA", "R1", "PL"}, phases.keys()
        assert all(p["ms"] > 0 and p["launches"] > 0 for p in phases.values()), phases


@pytest.mark.slow  # 12 s
def test_bench_generate_sampling_and_refine():
    out = bench("bench/generate.py", "--device", "cpu", "--presets", "demo", "--seconds", 0.3, "--refine-steps", 4,
                "--refine-size", 64, "--vgg-weights", "random")
    assert out["vgg_weights"] == "random"
    (row,) = out["sampling"]
    assert row["preset"] == "demo" and row["fp32_img_per_s"] > 0 and row["bf16_img_per_s"] > 0
    assert set(out["refine"]) == {"lbfgs-fp32", "adam-fp32", "adam-bf16"}
    for name, r in out["refine"].items():
        assert r["s_per_step"] > 0 and r["style_end"] <= r["style_start"], (name, r)


@pytest.mark.slow
@lite0_weights
def test_bench_lite0_times_both_layouts_and_they_agree():
    """bench/lite0.py: both layouts timed, and channels-last (what the pull and the critics run)
    gives channels-first's gradient."""
    out = bench("bench/lite0.py", "--batch", 2, "--resolution", 32, "--stages", 4, "--repeats", 1)
    assert set(out["ms"]) == {"channels_first", "channels_last"} and min(out["ms"].values()) > 0, out
    assert out["grad_rel_diff"] < 1e-3 and out["speedup"] > 0, out


# The host-side data benchmarks: simple scripts, run with `make test-slow`.
@pytest.mark.slow
@pytest.mark.parametrize("script,args", [("bench/loader.py", ["--seconds", 0.3, "--images", 128]),
                                         ("bench/prepare.py", ["--images", 16, "--resolution", 32])])
def test_bench_data_scripts(script, args):
    out = bench(script, *args)
    rates = [r["img_per_s"] for r in out["rows"]] if "rows" in out else [out["img_per_s"]]
    assert rates and all(r > 0 for r in rates), out


@pytest.mark.slow
def test_bench_quality_references_and_a_timed_run(tmp_path):
    """bench/quality.py on the procedural collection: the two references, then a preset trained
    for a few seconds in two slices, each evaluated (per-level SWD, spread, novelty) with a grid."""
    res = bench("bench/quality.py", "--collections", "procedural", "--procedural", 64, "--resolution", 32,
                "--presets", "demo", "--minutes", 0.1, "--evals", 2, "--workdir", tmp_path,
                "--train-args", "--kimg 1000 --batch 16")
    rows = res["rows"]
    labels = [r["row"] for r in rows]
    assert labels == ["procedural: real A vs B", "procedural: blurred A vs B", "procedural: demo", "procedural: demo"]
    assert all(r["swd32"] > 0 and r["swd16"] > 0 for r in rows)
    assert rows[3]["kimg"] > rows[2]["kimg"] > 0 and 0 < rows[3]["spread"] and 0 < rows[3]["novelty"]
    if LITE0:
        # Classifier features: seconds of training are far from the real halves' floor.
        assert all(r["fd"] > 1.5 * rows[0]["fd"] and r["kid"] > rows[0]["kid"] for r in rows[2:])
        # Precision / recall in those features: shares, real A mostly inside B's manifold, and
        # seconds of training's pictures less often than the real half's.
        assert all(0 <= r[k] <= 1 for r in rows for k in ("precision", "recall"))
        assert rows[0]["precision"] > 0.3 and rows[0]["recall"] > 0.3
        assert all(r["precision"] < rows[0]["precision"] for r in rows[2:])
    assert (tmp_path / "grids" / "procedural-demo-0.1min.png").exists()
    # A checkpoint dir along the way is scored as it was then, not as the run's newest.
    run = next((tmp_path / "runs").glob("*/*-demo"))
    first = sorted((run / "checkpoints").glob("kimg*"))[-2]  # the one before the newest
    res = bench("bench/quality.py", "--collections", "procedural", "--procedural", 64, "--resolution", 32,
                "--workdir", tmp_path, "--evaluate", first, run)
    mid, newest = res["rows"][2:]
    assert mid["row"] == f"procedural: {run.name}@{first.name}" and newest["row"] == f"procedural: {run.name}"
    assert mid["kimg"] == pytest.approx(float(first.name.removeprefix("kimg")))
    assert mid["kimg"] < newest["kimg"] == rows[3]["kimg"]
    assert (tmp_path / "grids" / f"procedural-{run.name}@{first.name}.png").exists()
    assert (tmp_path / "grids" / f"procedural-{run.name}-{newest['kimg']:g}kimg.png").exists()


def test_bench_quality_names_one_store_per_source(tmp_path):
    """bench/quality.py reuses a prepared store by name, so the name tells apart every source it
    could have come from: a category, a procedural count, and folders that share a basename."""
    from types import SimpleNamespace

    quality = _load_quality()
    args = SimpleNamespace(category="animals", procedural=2000, resolution=64)
    a, b = tmp_path / "one" / "art", tmp_path / "two" / "art"
    names = {quality.store_name("openclipart", args), quality.store_name("procedural", args),
             quality.store_name("emoji", args), quality.store_name(str(a), args), quality.store_name(str(b), args),
             quality.store_name("openclipart", SimpleNamespace(**{**vars(args), "category": "people"})),
             quality.store_name("procedural", SimpleNamespace(**{**vars(args), "procedural": 500})),
             quality.store_name("procedural", SimpleNamespace(**{**vars(args), "resolution": 32}))}
    assert len(names) == 8
    assert quality.store_name(str(a), args) == quality.store_name(str(a / ".." / "art"), args)
    assert quality.store_name(str(a), args).startswith("art-") and quality.label(str(a), args) == "art"


def test_bench_quality_draws_a_conditional_models_classes_as_the_reals_hold_them(tmp_path):
    """A conditional model is scored on fakes whose classes mix as the training store's do: equal
    shares in plain turns, unequal ones in their proportions in every prefix of the seeds, from the
    store the model's config names (equal shares once that store is gone)."""
    from collections import Counter

    from PIL import Image

    quality = _load_quality()
    assert quality.class_order([500] * 4, 9) == [0, 1, 2, 3, 0, 1, 2, 3, 0]
    order = quality.class_order([10, 30, 60], 200)
    assert Counter(order) == {0: 20, 1: 60, 2: 120}
    assert Counter(order[:10]) == {0: 1, 1: 3, 2: 6}
    art = tmp_path / "art"
    for k, (name, count) in enumerate((("a", 3), ("b", 6), ("c", 9))):  # labels from folders, in name order
        (art / name).mkdir(parents=True)
        for i in range(count):  # every picture distinct: none is dropped as a duplicate
            Image.new("RGB", (16, 16), (20 * i, 40 + 80 * k, 10)).save(art / name / f"{i}.png")
    store = tmp_path / "store"
    run_cli("-m", "data_prep", art, "--out", store, "--resolution", 32, "--labels-from-folders", "--no-progress")
    assert list(quality.class_shares({"train": {"data": str(store)}}, 3)) == [3, 6, 9]
    assert list(quality.class_shares({"train": {"data": str(tmp_path / "gone")}}, 3)) == [1, 1, 1]
    assert list(quality.class_shares({}, 3)) == [1, 1, 1]


def test_bench_quality_halves_are_a_fixed_random_split(tmp_path):
    """The floor's halves are random, not the store's first and second halves: a store keeps its
    source's order (files by name), which index halves measure instead of the collection. Here the
    first 12 files are black and the last 12 white (a mark each): each half must hold both, all 24
    once, alike on every call."""
    import torch
    from PIL import Image

    src = tmp_path / "src"
    src.mkdir()
    for i in range(24):  # each its own picture (data_prep drops duplicates): a grey mark in its own place
        im = Image.new("RGB", (32, 32), (0, 0, 0) if i < 12 else (255, 255, 255))
        im.paste((128, 128, 128), (i, i % 8 * 4, i + 4, i % 8 * 4 + 4))
        im.save(src / f"{i:02d}.png")
    store = tmp_path / "store"
    run_cli("-m", "data_prep", src, "--out", store, "--resolution", 32, "--no-progress", check=0)
    quality = _load_quality()
    a, b = quality.halves(store)
    assert a.shape == b.shape == (12, 3, 32, 32)
    white = lambda x: int((x.float().mean(dim=(1, 2, 3)) > 127).sum())  # noqa: E731
    assert 0 < white(a) < 12 and 0 < white(b) < 12 and white(a) + white(b) == 12
    a2, b2 = quality.halves(store)
    assert torch.equal(a, a2) and torch.equal(b, b2)
