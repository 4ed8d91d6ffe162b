"""The CUDA path, run with `make test-gpu` on a GPU machine; skipped where no CUDA device exists
(CPU CI). Tolerances are stated per test: cuDNN picks algorithms per shape and uses TF32
convolutions, so GPU results match CPU ones closely, not bit for bit.

ARTGAN_GPU_TESTS_DEVICE=cpu rehearses this suite on a CPU (every code path and assertion, CPU
against CPU), so a session without a GPU can check it before a scarce GPU session runs it."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_cli
from gan.export import load_generator
from gan.training import checkpoint
from test_fastgan import TINY_FAST
from test_train import TINY_DCGAN, TINY_STYLE, check_compiled_once, faults, load_state, only_run

DEV = os.environ.get("ARTGAN_GPU_TESTS_DEVICE", "cuda")
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(DEV == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def needs_fp16_device(precision: str = "fp16") -> None:
    if precision == "fp16" and DEV == "cpu":
        pytest.skip("fp16 training is refused on a CPU (it needs a GPU)")


def train(*args, check=0, **kw):
    return run_cli("train.py", *args, check=check, **kw)


def scalars(run, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values = []
    for f in sorted((run / "tb").rglob("events.out.tfevents*")):
        acc = EventAccumulator(str(f.parent))
        acc.Reload()
        if tag in acc.Tags().get("scalars", []):
            values += [e.value for e in acc.Scalars(tag)]
    return values


@pytest.mark.parametrize("precision", ["no", "bf16", "fp16"])
@pytest.mark.parametrize("arch", ["dcgan", "stylegan", "fastgan"])
def test_train_every_precision_and_resume(tmp_path, proc_store, arch, precision):
    """~200 steps: no non-finite storm (fp16's first overflow steps are the scaler's, not
    divergence), losses that move, and a resume that continues the same run. StyleGAN and fastgan
    run with the GPU default, torch.compile on (a failed compile would be a note, and fails the
    test; fastgan's spectral norm once crashed there); DCGAN eagerly."""
    needs_fp16_device(precision)
    tiny = {"stylegan": TINY_STYLE + ["--pl-weight", 1, "--r1-interval", 4], "dcgan": TINY_DCGAN,
            "fastgan": TINY_FAST + ["--aug", "ada", "--aug-p", 0.2]}[arch]
    compiled = arch != "dcgan"
    common = ["--data", proc_store, *tiny, "--batch", 16, "--mixed-precision", precision, "--snap", 100,
              "--outdir", tmp_path / "runs", "--name", "g", "--log-every", 10,
              "--compile", "on" if compiled else "off"]  # on: auto's choice on a GPU, also in a CPU rehearsal
    first = train(*common, "--kimg", 3.2, "--checkpoint-every", 1.6, env={"TORCH_LOGS": "recompiles"})
    if compiled:
        check_compiled_once(first.stderr, extra_kinds=int(arch == "fastgan"))  # its D on reals also reconstructs
    run = only_run(tmp_path / "runs")
    events = (run / "events.jsonl").read_text()
    assert "restored" not in events and events.count("step skipped") <= 2, events
    assert "torch.compile failed" not in events, events
    loss_g = scalars(run, "Loss/G")
    assert len(loss_g) >= 10 and all(np.isfinite(loss_g)) and np.std(loss_g) > 1e-3, loss_g
    ck = checkpoint.latest(run)
    assert checkpoint.read_state(ck)["cur_nimg"] == 3200
    for tensors in load_state(ck).values():
        assert all(torch.isfinite(t).all() for t in tensors.values())
    train("--resume", run, "--kimg", 4.0)
    assert checkpoint.read_state(checkpoint.latest(run))["cur_nimg"] == 4000


def test_resume_on_gpu_continues_the_same_run(tmp_path, proc_store):
    """2N steps == N + resume + N on the GPU, fp32, with --deterministic on. Without it cuDNN's
    autotuning picks algorithms per process: an H200 (torch 2.11) ended two such runs 0.023 apart in
    a weight after 8 Adam steps at lr 0.0025, as far apart as different data would put them."""
    common = ["--data", proc_store, *TINY_DCGAN, "--batch", 16, "--seed", 3, "--snap", 100, "--checkpoint-every", 100,
              "--name", "r", "--aug", "ada", "--aug-p", 0.2, "--deterministic", "on"]
    runs = [train(*common, "--kimg", 0.128, "--outdir", tmp_path / "a"),
            train(*common, "--kimg", 0.064, "--outdir", tmp_path / "b"),
            train(*common, "--kimg", 0.128, "--outdir", tmp_path / "b", "--resume", "auto")]
    for proc in runs:  # an op with no deterministic kernel warns (warn_only): none may in these runs
        assert "does not have a deterministic implementation" not in proc.stderr, proc.stderr[-2000:]
    sa = load_state(checkpoint.latest(only_run(tmp_path / "a")))
    sb = load_state(checkpoint.latest(only_run(tmp_path / "b")))
    for name in sa:
        for k in sa[name]:
            a, b = sa[name][k].float(), sb[name][k].float()
            assert torch.equal(a, b), (name, k, (a - b).abs().max())


def test_cuda_graphs_train_as_the_default_compile_does(tmp_path, proc_store):
    """--compile-mode reduce-overhead replays the compiled G, D and augmentation as CUDA graphs
    (fewer launches at small batches). Same seed, same steps: the weights end where the default
    mode's do. Not bit for bit (cuDNN may pick other algorithms, scatter-adds are atomic), so the
    measure is scale-aware: the two runs differ by under a tenth of how far training moved the
    weights (a graph replaying stale inputs or outputs would differ by about as much as they
    moved). On a CPU (the rehearsal) the mode changes nothing and the two runs agree as well."""
    common = ["--data", proc_store, *TINY_STYLE, "--batch", 16, "--kimg", 0.32, "--seed", 5, "--snap", 100,
              "--pl-weight", 1, "--r1-interval", 4, "--aug", "fixed", "--aug-p", 0.3, "--compile", "on",
              "--name", "g", "--log-every", 5]
    for mode, extra in (("default", []), ("graphs", ["--compile-mode", "reduce-overhead"])):
        # Inductor's compiles each take seconds: none may repeat during training (CUDA graphs record
        # per compiled graph too).
        check_compiled_once(train(*common, "--outdir", tmp_path / mode, *extra, env={"TORCH_LOGS": "recompiles"}).stderr)
    runs = {m: only_run(tmp_path / m) for m in ("default", "graphs")}
    for run in runs.values():
        events = (run / "events.jsonl").read_text()
        assert "torch.compile failed" not in events and "restored" not in events, events
    assert json.loads((runs["graphs"] / "config.json").read_text())["train"]["compile_mode"] == "reduce-overhead"
    start = load_state(checkpoint.complete_checkpoints(runs["default"])[0][1])  # the restore point before step 0
    sa, sb = (load_state(checkpoint.latest(r)) for r in runs.values())
    for name in sa:
        moved = sum((sa[name][k].float() - start[name][k].float()).abs().sum() for k in sa[name])
        apart = sum((sa[name][k].float() - sb[name][k].float()).abs().sum() for k in sa[name])
        assert all(torch.isfinite(t).all() for t in sb[name].values())
        assert moved > 0 and apart < 0.1 * moved, (name, float(apart), float(moved))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, proc_store):
    """A small conditional StyleGAN, with SWD measured during training (on the training device)."""
    out = tmp_path_factory.mktemp("trained")
    train("--data", proc_store, *TINY_STYLE, "--cond", "--batch", 16, "--kimg", 0.32, "--outdir", out, "--snap", 100,
          "--compile", "off", "--metrics", "swd", "--metrics-num", 64)
    run = only_run(out)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows and rows[-1]["kimg"] == 0.32 and np.isfinite(rows[-1]["swd"]) and rows[-1]["swd"] > 0, rows
    return checkpoint.latest(run) / "export"


def test_sample_cpu_gpu_agree_and_batch_invariant(trained):
    from gan.sampling import Sampler

    G, cfg, _ = load_generator(trained)
    cpu = dict(Sampler(G, cfg, "cpu").seeds([1, 5, 9, 13], 2, 0.7, batch=4))
    G, cfg, _ = load_generator(trained, DEV)
    s = Sampler(G, cfg, DEV)
    gpu4 = dict(s.seeds([1, 5, 9, 13], 2, 0.7, batch=4))
    gpu1 = dict(s.seeds([13, 9, 5, 1], 2, 0.7, batch=1))
    for k in cpu:
        assert (cpu[k] - gpu4[k]).abs().max() < 2e-2, k  # TF32 convolutions on the GPU
        assert (gpu4[k] - gpu1[k]).abs().max() < 1e-3, k
    bf16 = dict(Sampler(G, cfg, DEV, "bf16").seeds([1], 2, 0.7))
    assert (bf16[1] - gpu4[1]).abs().mean() < 5e-2


def test_every_cli_command_on_cuda(trained, tmp_path, proc_store):
    for cmd in (["sample", "--seeds", "0-7", "--grid", "--out", tmp_path / "s"],
                ["interpolate", "--seeds", "0,1", "--frames", 4, "--out", tmp_path / "w.gif"],
                ["mix", "--rows", "0-1", "--cols", "2-3", "--out", tmp_path / "m.png"],
                ["refine", "--seeds", 1, "--style", proc_store / "preview.png", "--vgg-weights", "random", "--steps", 10,
                 "--size", 64, "--optimizer", "adam", "--out", tmp_path / "r"],
                ["eval", "--data", proc_store, "--metrics", "swd", "--num", 64, "--json", tmp_path / "e.json"]):
        run_cli("generate.py", cmd[0], "--model", trained, "--device", DEV, "--class", "grid", *cmd[1:], check=0)
    assert Image.open(tmp_path / "s" / "grid.png").size == (4 * 32, 2 * 32)
    # A projection on the GPU, and its latent rendered there into the same image.
    run_cli("generate.py", "project", tmp_path / "s" / "seed0003.png", "--model", trained, "--device", DEV, "--class",
            "grid", "--steps", 30, "--vgg-weights", "random", "--out", tmp_path / "p", check=0)
    report = json.loads((tmp_path / "p" / "seed0003_report.json").read_text())
    assert report["end"]["distance"] < report["start"]["distance"], report
    run_cli("generate.py", "sample", "--model", trained, "--device", DEV, "--latent",
            tmp_path / "p" / "seed0003_latent.safetensors", "--out", tmp_path / "pl", check=0)
    again = np.asarray(Image.open(tmp_path / "pl" / "seed0003.png")).astype(int)
    assert np.abs(again - np.asarray(Image.open(tmp_path / "p" / "seed0003_projected.png"))).max() <= 1
    cpu = run_cli("generate.py", "eval", "--model", trained, "--device", "cpu", "--data", proc_store, "--metrics", "swd",
                  "--num", 64, "--json", tmp_path / "c.json", check=0)
    g = json.loads((tmp_path / "e.json").read_text())["metrics"]
    c = json.loads((tmp_path / "c.json").read_text())["metrics"]
    assert g["swd"] == pytest.approx(c["swd"], rel=5e-2), (g, c, cpu.stderr[-500:])


# LBFGS refuses bf16 features (tests/test_generate.py): these are every combination refine runs.
@pytest.mark.parametrize("optimizer,precision", [("lbfgs", "no"), ("adam", "no"), ("adam", "bf16")])
def test_refine_every_optimizer_and_precision_on_cuda(tmp_path, optimizer, precision):
    from data_prep.procedural import render
    from gan.refine import RefineOptions, losses_of, refine
    from gan.sampling import save_png
    from gan.style import VGGFeatures

    torch.manual_seed(0)
    vgg = VGGFeatures(None)
    content, style = render(2, 0, 64)[0], render(0, 2, 64)[0]
    opts = RefineOptions(steps=30, size=64, optimizer=optimizer, precision=precision, style_weight=1e4)
    out, report = refine(content, [style], [1.0], vgg, opts, device=DEV, progress=False)
    assert report["end"]["style"] < 0.7 * report["start"]["style"], report["end"]
    again = losses_of(Image.open(save_png(out, tmp_path / "r.png")), content, [style], [1.0], vgg, opts, DEV)
    assert again["total"] == pytest.approx(report["end"]["total"], rel=1e-3)


def test_fp16_scaler_on_gpu_backs_off_from_injected_overflows(tmp_path, proc_store):
    needs_fp16_device()
    train("--data", proc_store, *TINY_DCGAN, "--batch", 16, "--kimg", 0.16, "--mixed-precision", "fp16",
          "--outdir", tmp_path / "runs", "--snap", 100, "--compile", "off", env=faults("overflow@2,3,4"))
    run = only_run(tmp_path / "runs")
    assert "restored" not in (run / "events.jsonl").read_text()
    scale = torch.load(checkpoint.latest(run) / "scaler.pt", weights_only=True)["scale"]
    assert scale <= 2.0 ** 16 / 2 ** 6


@pytest.mark.parametrize("precision,data_on_device", [("bf16", "on"), ("bf16", "off"), ("fp16", "on")])
def test_training_steps_do_not_sync_on_gpu(tmp_path, proc_store, precision, data_on_device):
    """No host read of a tensor (a device sync) between settle points on CUDA, fp16's scaler
    included, and CUDA's own sync detector agrees. Neither does a step copy from pageable host
    memory, whose copy waits for the queued kernels (the store on the GPU: the batch's indices;
    the DataLoader: its batches)."""
    needs_fp16_device(precision)
    out = run_cli("tests/host_reads.py", "--data", proc_store, "--outdir", tmp_path, *TINY_STYLE, "--pl-weight", 2,
                  "--pl-interval", 2, "--r1-gamma", 1, "--r1-interval", 3, "--aug", "fixed", "--aug-p", 0.3,
                  "--batch", 8, "--kimg", 0.096, "--log-every", 1000, "--snap", 1000, "--checkpoint-every", 1000,
                  "--mixed-precision", precision, "--compile", "off", "--data-on-device", data_on_device, check=0,
                  env={"ARTGAN_CUDA_SYNC_DEBUG": "1"}).stdout
    report = json.loads(out.strip().splitlines()[-1])
    stray = [r for r in report["reads"] if r["step"] not in (0, report["steps"])]
    assert report["steps"] == 12 and not stray, stray[:10]
    assert not [s for s in report.get("cuda_syncs", []) if s not in (0, report["steps"])], report["cuda_syncs"]
