import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import LITE0, assert_user_error, free_port, run_cli, run_main
from gan.errors import UserError
from gan.export import load_generator
from gan.training import checkpoint

TINY_DCGAN = ["--arch", "dcgan", "--g-channels", 8, "--d-channels", 8, "--z-dim", 16]
TINY_STYLE = ["--arch", "stylegan", "--channel-base", 256, "--channel-max", 32, "--map", 2, "--z-dim", 32, "--w-dim", 32]


def train(*args, check=0, **kw):
    return run_cli("train.py", *args, check=check, **kw)


def faults(spec):
    """Fault injection comes from the test's environment, never from flags or saved config."""
    return {"ARTGAN_TEST_FAULTS": spec}


def only_run(outdir):
    runs = [p for p in Path(outdir).iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def load_state(ckpt):
    from safetensors.torch import load_file

    return {name: load_file(str(ckpt / name)) for name in ("model.safetensors", "model_1.safetensors")}


def test_dry_run_prints_config_and_flops(tmp_path, proc_store):
    out = train("--data", proc_store, "--preset", "demo", "--outdir", tmp_path / "runs", "--dry-run").stdout
    assert '"arch": "dcgan"' in out and "GFLOP" in out and "M params" in out
    assert not (tmp_path / "runs").exists()
    import train as train_cli

    proc = run_main(train_cli.main, "--data", proc_store, "--preset", "stylegan128", "--dry-run", "--kimg", 3)
    out = proc.stdout
    assert '"resolution": 32' in out and '"kimg": 3.0' in out and '"aug": "ada"' in out
    # The preset's 128px yields to the store's 32px: said in one line, and the run is named by what it is.
    note = [l for l in proc.stderr.splitlines() if l.startswith("note:")]
    assert len(note) == 1 and "128px" in note[0] and "32px" in note[0], proc.stderr
    assert '"name": "proc32-stylegan32"' in out
    out = run_main(train_cli.main, "--data", proc_store, "--preset", "demo", "--dry-run").stdout
    assert '"name": "proc32-demo"' in out


def test_train_writes_run_dir_checkpoint_export_and_samples(tmp_path, proc_store):
    runs = tmp_path / "runs"
    train("--data", proc_store, *TINY_DCGAN, "--cond", "--kimg", 0.128, "--batch", 16, "--outdir", runs,
          "--snap", 0.064, "--checkpoint-every", 0.064, "--keep", 2, "--mixed-precision", "bf16", "--aug", "ada")
    run = only_run(runs)
    assert run.name == "00000-proc32-dcgan"
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["c_dim"] == 4 and cfg["model"]["class_names"][0] == "grid"
    ck = checkpoint.complete_checkpoints(run)
    assert [n for n, _ in ck] == [64, 128]  # keep=2 rotated the kimg0 restore point away
    assert len(list((run / "samples").glob("fakes_*.png"))) >= 2
    assert list((run / "tb").rglob("events.out.tfevents*"))
    G, mcfg, meta = load_generator(ck[-1][1] / "export")
    assert meta["kimg"] == 0.128 and mcfg.c_dim == 4
    img = G(torch.randn(2, 16), torch.tensor([0, 3]))
    assert img.shape == (2, 3, 32, 32) and torch.isfinite(img).all()
    # --no-cond cannot make it unconditional when resumed, as --cond cannot the other way (below)
    assert_user_error(train("--resume", run, "--no-cond", check=None), "--no-cond", "class-conditional",
                      "another --name")
    # a second run gets the next id
    train("--data", proc_store, *TINY_DCGAN, "--kimg", 0.032, "--batch", 16, "--outdir", runs)
    assert sorted(p.name for p in runs.iterdir()) == ["00000-proc32-dcgan", "00001-proc32-dcgan"]


# stylegan's under -m slow (CI time); dcgan's and fastgan's (with R1, R2 and ADA) run in make test.
@pytest.mark.parametrize("arch", [pytest.param("stylegan", marks=pytest.mark.slow), "dcgan"])
def test_resume_is_bit_identical(tmp_path, proc_store, arch):
    tiny = TINY_STYLE if arch == "stylegan" else TINY_DCGAN
    common = ["--data", proc_store, *tiny, "--batch", 8, "--aug", "ada", "--aug-p", 0.2, "--r1-interval", 2,
              "--seed", 3, "--snap", 100, "--checkpoint-every", 100, "--name", "r"]
    if arch == "stylegan":
        common += ["--pl-weight", 1.0]
    # One half of the interrupted run gathers its batches from the store held whole in (here
    # CPU) memory instead of the DataLoader: the same batches, so still bit-identical. StyleGAN's
    # second half also runs G and D's main phases through torch.compile, traced by Dynamo and
    # AOTAutograd but not code-generated (CI has seconds, not inductor's minutes): the same
    # computation, R1 and path length (eager) beside it.
    on_device = ["--data-on-device", "on"]
    # Dynamo logs every recompile: the compiled half is checked for them below.
    traced = dict(env={**faults("compile_eager"), "TORCH_LOGS": "recompiles"}) if arch == "stylegan" else {}
    train(*common, "--kimg", 0.064, "--outdir", tmp_path / "a", "--snap", 0.032)
    # DCGAN's interrupted run also asks for deterministic kernels: on a CPU the same computation.
    half = train(*common, "--kimg", 0.032, "--outdir", tmp_path / "b",
                 *(on_device + ["--deterministic", "on"] if arch == "dcgan" else []))
    assert "Warning" not in half.stderr, half.stderr[-2000:]  # e.g. torch's about the store's read-only memmap
    resumed = train(*common, "--kimg", 0.064, "--outdir", tmp_path / "b", "--resume", "auto",
                    *(on_device + ["--compile", "on"] if arch == "stylegan" else []), **traced)
    if arch == "stylegan":
        check_compiled_once(resumed.stderr)
    a = checkpoint.latest(only_run(tmp_path / "a"))
    b = checkpoint.latest(only_run(tmp_path / "b"))
    assert a.name == b.name
    assert checkpoint.read_state(a)["cur_nimg"] == checkpoint.read_state(b)["cur_nimg"] == 64
    sa, sb = load_state(a), load_state(b)
    for name in sa:
        for k in sa[name]:
            assert torch.equal(sa[name][k], sb[name][k]), (name, k)
    from safetensors.torch import load_file

    ea, eb = load_file(str(a / "export/model.safetensors")), load_file(str(b / "export/model.safetensors"))
    assert all(torch.equal(ea[k], eb[k]) for k in ea)
    assert checkpoint.read_state(a)["aug_p"] == checkpoint.read_state(b)["aug_p"]
    if arch == "stylegan":
        check_truncation_centre(a / "export", tmp_path)


def test_deterministic_kernels_are_chosen_only_when_asked(monkeypatch):
    """--deterministic on: PyTorch's deterministic kernels, fixed cuDNN algorithms and cuBLAS's
    fixed workspace; off on a GPU: cuDNN autotuning. The switches are process-wide: restored after."""
    from gan.training.runtime import set_kernel_choice

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        set_kernel_choice(False, torch.device("cuda"))
        assert torch.backends.cudnn.benchmark and not torch.are_deterministic_algorithms_enabled()
        assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
        set_kernel_choice(True, torch.device("cuda"))
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]


@pytest.mark.slow  # CI time: test_failed_compile_is_one_note runs the compile path in make test
def test_compiled_bf16_traces_each_kind_of_call_once(tmp_path, proc_store):
    """bf16, the precision GPUs train in: Accelerate wraps G's and D's forward for autocast, and
    the compiled run must still trace each kind of call once (Dynamo on CI, without codegen)."""
    proc = train("--data", proc_store, *TINY_STYLE, "--batch", 8, "--kimg", 0.064, "--mixed-precision", "bf16",
                 "--compile", "on", "--pl-weight", 1, "--r1-interval", 2, "--aug", "ada", "--aug-p", 0.2,
                 "--snap", 100, "--outdir", tmp_path, env={**faults("compile_eager"), "TORCH_LOGS": "recompiles"})
    check_compiled_once(proc.stderr)
    assert "torch.compile failed" not in proc.stderr


def check_compiled_once(stderr: str, extra_kinds: int = 0):
    """Each compiled callable (G, D, the augmentation) is traced once per kind of call: G with
    and without grad, D and the augmentation on images with and without grad (the D and G
    phases). Any other recompile (a guard on a changing Python value, such as ADA's p or the
    step) would repeat during training, and on a GPU each one costs seconds to a minute.

    Under mixed precision Accelerate wraps G's and D's forward in one wrapper function, and DDP
    wraps both in its own: Dynamo then keeps G's and D's graphs under that one function, so D's
    first graph shows as a recompile of G's ("rank mismatch": an image where G takes z). That is
    one more entry, not a repeated one; four in all. `extra_kinds`: further kinds of call of the
    model (fastgan's D on reals, which also returns its reconstruction: a constant keyword)."""
    log = [line for line in stderr.splitlines() if "[__recompiles]" in line]
    recompiles = [line for line in log if "Recompiling function" in line]
    # A recompile's cause is the first guard failure listed after it (the newest entry's; the
    # older entries' failures follow). torch before 2.5 lists it without the "N/M: " entry.
    causes, pending = [], False
    for line in log:
        if "Recompiling function" in line:
            pending = True
        elif pending and (m := re.search(r"\] +- (?:\d+/\d+: )?(.+)", line)):
            causes.append(m.group(1))
            pending = False
    assert "recompile_limit" not in stderr, stderr[-3000:]
    assert 0 < len(recompiles) <= 4 + extra_kinds and len(causes) == len(recompiles), "\n".join(log)
    # The shared entry's cause: "rank mismatch"; torch before 2.5 guards on the wrapped module's type.
    shared_causes = ("rank mismatch", "___check_type_id(L['args'][0]")
    allowed = ("GLOBAL_STATE changed: grad_mode", "requires_grad mismatch", *shared_causes,
               *(("len(kwargs)", "len(L['kwargs'])", "recon") if extra_kinds else ()))
    assert all(any(a in c for a in allowed) for c in causes), causes
    shared = sum(any(a in c for a in shared_causes) for c in causes)
    assert len(recompiles) - shared <= 3 + extra_kinds, causes  # beyond the shared entry, three grad-mode kinds


def check_truncation_centre(export, tmp_path):
    """w_avg is tracked in training: it is the mean w, so --trunc 0 gives one image, the mean-w image."""
    from gan.sampling import Sampler

    G, cfg, _ = load_generator(export)
    z = torch.randn(8192, cfg.z_dim, generator=torch.Generator().manual_seed(1))
    mean_w = G.mapping(z)[:, 0].mean(0)
    w_avg = G.mapping.w_avg
    assert (w_avg - mean_w).norm() < 0.05 * mean_w.norm(), ((w_avg - mean_w).norm(), mean_w.norm())
    out = tmp_path / "trunc0"
    run_cli("generate.py", "sample", "--model", export, "--seeds", "0-3", "--trunc", 0, "--out", out, check=0)
    pics = [np.asarray(Image.open(out / f"seed{i:04d}.png")).astype(int) for i in range(4)]
    assert all(np.array_equal(pics[0], p) for p in pics[1:])
    centre = Sampler(G, cfg).synth(w_avg[None, None].repeat(1, G.num_ws, 1))
    from gan.sampling import to_uint8

    assert np.abs(to_uint8(centre)[0].astype(int) - pics[0]).max() <= 1
    other = to_uint8(Sampler(G, cfg).synth(torch.zeros(1, G.num_ws, cfg.w_dim)))[0].astype(int)
    assert np.abs(other - pics[0]).mean() > 1  # not the w = 0 image


def test_non_finite_steps_restore_and_lower_lr(tmp_path, proc_store):
    runs = tmp_path / "runs"
    train("--data", proc_store, *TINY_DCGAN, "--kimg", 0.16, "--batch", 16, "--outdir", runs,
          "--checkpoint-every", 0.08, env=faults("nan@2,3,4,5"))
    run = only_run(runs)
    events = [json.loads(l)["event"] for l in (run / "events.jsonl").read_text().splitlines()]
    skipped = [e for e in events if "step skipped" in e]
    assert [e.split(":")[0] for e in skipped] == ["step 2", "step 3", "step 4", "step 5"]  # the steps that failed
    assert any(e.startswith("non-finite losses or gradients for 4 steps: restored kimg000000") and "x0.5" in e
               for e in events), events
    last = checkpoint.latest(run)
    st = checkpoint.read_state(last)
    assert st["lr_scale"] == 0.5 and st["cur_nimg"] >= 160
    for tensors in load_state(last).values():
        assert all(torch.isfinite(t).all() for t in tensors.values())
    # The test hook is not part of the run: not in config.json or the export, and a resume does not re-fire it.
    for cfg_file in (run / "config.json", last / "export" / "config.json"):
        text = cfg_file.read_text()  # no key naming faults, no step spec like "nan@2,3"
        assert "nan@" not in text and not re.search(r'"[^"]*fault[^"]*"\s*:', text), text
    mid = checkpoint.complete_checkpoints(run)[0][1]
    # Weights that turn non-finite behind the steps' backs are caught before the next checkpoint.
    train("--resume", mid, "--kimg", 0.24, env=faults("nanweight@12"))
    events = [json.loads(l)["event"] for l in (run / "events.jsonl").read_text().splitlines()]
    # The 4 injected NaN losses are not re-fired; the damaged G makes non-finite losses until the
    # checkpoint, whose check restores instead of writing.
    assert sum("step skipped" in e for e in events) > 4
    assert sum(e.startswith("non-finite weights before a checkpoint: restored kimg") for e in events) == 1, events
    for tensors in load_state(checkpoint.latest(run)).values():
        assert all(torch.isfinite(t).all() for t in tensors.values())


def test_training_steps_never_wait_for_the_device(tmp_path, proc_store):
    """Between the points where the host stops anyway (logs, ADA updates, snapshots,
    checkpoints), a training step reads no tensor on the host: on a GPU every such read is a
    sync that drains the queue. Non-finite checks and skipped steps stay on the device. Every
    phase runs in the checked steps: R1 at 3, 6; path length at 2, 6, 10."""
    out = run_cli("tests/host_reads.py", "--data", proc_store, "--outdir", tmp_path, *TINY_STYLE, "--pl-weight", 2,
                  "--pl-interval", 2, "--r1-gamma", 1, "--r1-interval", 3, "--aug", "ada", "--aug-p", 0.2, "--batch", 8,
                  "--kimg", 0.096, "--log-every", 1000, "--snap", 1000, "--checkpoint-every", 1000, check=0).stdout
    report = json.loads(out.strip().splitlines()[-1])
    assert report["steps"] == 12
    # Step 0 holds the first checkpoint; the last step the final settle, checkpoint and export.
    # ADA reads its statistics every 4 steps (after step s, the settle is counted at s + 1).
    allowed = {0, 12} | {s for s in range(12) if s % 4 == 0} | {s + 1 for s in range(12) if s % 4 == 0}
    stray = [r for r in report["reads"] if r["step"] not in allowed]
    assert not stray, stray[:10]
    assert any(r["step"] == 12 for r in report["reads"])  # the counter does see reads
    # The steady img/s that bench/train.py reports: from the end of the 3 warm-up steps to the
    # end of the last step, before the final checkpoint (with its export) is written.
    n0, n1, t0, t1 = report["steady_window"]
    assert (n0, n1) == (3 * 8, 96) and t1 <= report["ckpt_times"][-1]
    assert report["steady_img_per_s"] == pytest.approx((n1 - n0) / (t1 - t0))


def test_failed_compile_is_one_note_and_the_run_goes_on(tmp_path, proc_store):
    """A compile that fails (here: an injected broken backend, as with a missing toolchain)
    costs one note; the run completes eagerly. (Compiled = eager: test_resume_is_bit_identical.)"""
    out = train("--data", proc_store, *TINY_DCGAN, "--batch", 8, "--kimg", 0.032, "--outdir", tmp_path / "b",
                "--compile", "on", env=faults("compile_fail"))
    notes = [l for l in (out.stdout + out.stderr).splitlines() if "torch.compile failed" in l]
    assert len(notes) == 1 and "injected: no working C++ compiler" in notes[0], notes
    assert "Traceback" not in out.stderr
    assert checkpoint.read_state(checkpoint.latest(only_run(tmp_path / "b")))["cur_nimg"] == 32


@pytest.mark.slow
def test_compiled_training_on_cpu_survives_narrow_layers(tmp_path):
    """--compile on, on CPU, with real inductor: a StyleGAN whose D has 8 channels at 64 px.
    Inductor runs CPU convs channels-last, and oneDNN's weight gradient of a 1x1 stride-2 conv
    (D's skip path had one) with under 16 channels corrupts the heap there: the process aborted
    at the first step. D's 1x1 downsampling conv now runs with stride 1 on Downsample's output.
    Slow (inductor compiles G, D and their backward: a minute or two)."""
    store = tmp_path / "s64"
    run_cli("-m", "data_prep", "--procedural", 32, "--out", store, "--resolution", 64, "--no-progress", check=0)
    out = train("--data", store, "--arch", "stylegan", "--channel-base", 512, "--channel-max", 16, "--map", 1,
                "--z-dim", 16, "--w-dim", 16, "--batch", 16, "--kimg", 0.032, "--r1-interval", 1, "--aug", "fixed",
                "--aug-p", 0.5, "--compile", "on", "--outdir", tmp_path / "runs")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "torch.compile failed" not in out.stdout + out.stderr
    assert checkpoint.read_state(checkpoint.latest(only_run(tmp_path / "runs")))["cur_nimg"] == 32


def test_betas_flag_sets_adam_and_a_resume_trains_with_the_new_ones(tmp_path, proc_store):
    """--betas reaches both Adams, and a resume with other --betas uses them, not the checkpoint's
    (whose optimizer state carries the first run's). R1 off: no lazy-regularization scaling."""
    import train as train_cli

    bad = run_main(train_cli.main, "--data", proc_store, "--betas", "0.5", "--dry-run")
    assert bad.returncode == 2 and "--betas" in bad.stderr and "two numbers" in bad.stderr
    assert "Traceback" not in bad.stderr
    common = ["--data", proc_store, *TINY_DCGAN, "--batch", 8, "--r1-gamma", 0, "--snap", 100,
              "--checkpoint-every", 100, "--name", "b", "--outdir", tmp_path]
    train(*common, "--kimg", 0.016, "--betas", "0.2,0.9")
    run = only_run(tmp_path)
    assert json.loads((run / "config.json").read_text())["train"]["betas"] == [0.2, 0.9]

    def saved_betas():
        ckpt = checkpoint.latest(run)
        groups = [torch.load(ckpt / name, weights_only=True)["param_groups"] for name in ("optimizer.bin", "optimizer_1.bin")]
        return [tuple(g["betas"]) for gs in groups for g in gs]

    assert saved_betas() == [(0.2, 0.9), (0.2, 0.9)]
    train(*common, "--kimg", 0.032, "--betas", "0.1,0.95", "--resume", "auto")
    assert checkpoint.read_state(checkpoint.latest(run))["cur_nimg"] == 32
    assert saved_betas() == [(0.1, 0.95), (0.1, 0.95)]


def test_user_errors(tmp_path, proc_store):
    import train as train_cli

    def quick(*args):  # validation only: in-process; start-up is covered by the subprocess runs
        return run_main(train_cli.main, *args)

    runs = tmp_path / "runs"
    assert_user_error(quick("--data", tmp_path / "nope", "--outdir", runs), "not found")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_text("{")
    assert_user_error(quick("--data", bad, "--outdir", runs), "malformed")
    art = tmp_path / "my art" / "oils"  # the user's own art, not yet prepared: the command to prepare it
    art.mkdir(parents=True)
    Image.new("RGB", (40, 30)).save(art / "a.JPG")
    assert_user_error(quick("--data", art.parent, "--outdir", runs), "folder of images",
                      f"python -m data_prep '{art.parent}' --out 'data/my art' --resolution 128")
    assert_user_error(quick("--data", proc_store, "--resolution", 64, "--outdir", runs), "--resolution 64")
    assert_user_error(quick("--data", proc_store, "--resolution", 100, "--outdir", runs),
                      "--resolution 100", "64 or 128")
    assert_user_error(quick("--data", proc_store, "--preset", "nosuch", "--outdir", runs), "unknown preset", "demo")
    assert_user_error(quick("--data", proc_store, *TINY_DCGAN, "--batch", 16, "--grad-accum", 3, "--outdir", runs),
                      "not divisible")
    assert_user_error(quick("--data", proc_store, *TINY_DCGAN, "--ema-rampup", -0.1, "--outdir", runs), "--ema-rampup")
    assert_user_error(train("--data", proc_store, *TINY_DCGAN, "--outdir", bad / "manifest.json" / "runs", check=None),
                      "cannot write the run dir", "pick a folder you can write to")  # a file in the way
    assert_user_error(quick("--data", proc_store, "--cond", "--arch", "dcgan", "--resume", tmp_path),
                      "not a checkpoint")
    assert not runs.exists()  # nothing was created by refused runs
    store16 = tmp_path / "s16"
    from data_prep.__main__ import main as prep

    assert run_main(prep, "--procedural", 8, "--out", store16, "--resolution", 16, "--no-progress", "--workers", 1).returncode == 0
    assert_user_error(quick("--data", store16, "--arch", "dcgan", "--outdir", runs), "does not support 16px")
    # out of memory mid-run: actionable message, and the run dir's checkpoint is intact
    proc = train("--data", proc_store, *TINY_DCGAN, "--batch", 16, "--kimg", 1, "--outdir", runs,
                 env=faults("oom@2"), check=None)
    assert_user_error(proc, "out of memory", "--batch", "--grad-accum")
    run = only_run(runs)
    assert checkpoint.latest(run).name == "kimg000000"
    load_generator(checkpoint.latest(run) / "export")
    # --cond cannot turn an unconditional run conditional (it was ignored: make demo with an old demo/).
    assert_user_error(quick("--resume", run, "--cond"), "--cond", "unconditional", "another --name")
    # A hand-edited run config naming convs that do not exist: one line, the checkpoint untouched.
    cfg = json.loads((run / "config.json").read_text())
    cfg["model"]["up_conv"] = "sideways"
    (run / "config.json").write_text(json.dumps(cfg))
    assert_user_error(train("--resume", run, "--kimg", 1, check=None), "'sideways'", "transposed")
    assert checkpoint.latest(run).name == "kimg000000"


def test_two_process_training_stays_in_sync_and_resumes_single(tmp_path, proc_store):
    """DDP (gloo) with gradient accumulation, compiled as on GPUs (Dynamo on CI, no codegen): the
    ranks stay in sync, and neither recompiles past its first steps (no_sync, lazy R1 and path
    length, ADA's moving p); a single process resumes the run."""
    runs = tmp_path / "runs"
    # old_ddp: DDP's per-forward buffer copy as before torch 2.12, which broke backward on rank 1
    env = {"OMP_NUM_THREADS": "1", **faults("compile_eager;old_ddp"), "TORCH_LOGS": "recompiles"}
    proc = run_cli("-m", "torch.distributed.run", "--nproc_per_node", 2, "--master_port", free_port(), "train.py", "--data", proc_store, *TINY_STYLE, "--batch", 8, "--kimg", 0.064, "--outdir", runs,
                   "--r1-interval", 2, "--aug", "ada", "--grad-accum", 2, "--pl-weight", 1, "--compile", "on", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    pids = {m.group(1) for m in re.finditer(r"V\d{4} [\d:.]+ (\d+) .*\[__recompiles\]", proc.stderr)}
    # torch 2.4 (the oldest artgan supports) logs no recompile here at all; newer ones the shared entry
    assert len(pids) == 2 or (not pids and torch.__version__ < (2, 5)), proc.stderr[-3000:]
    for pid in pids:  # each rank's own log
        check_compiled_once("\n".join(l for l in proc.stderr.splitlines() if f" {pid} " in l))
    run = only_run(runs)
    sync = [json.loads(l) for l in (run / "events.jsonl").read_text().splitlines() if "ranks in sync" in l]
    assert sync and all(e["processes"] == 2 for e in sync)
    assert not (run / ".process-check").exists()  # the start-up check's file (runtime.share_run_dir) is gone
    ck = checkpoint.latest(run)
    assert checkpoint.read_state(ck)["cur_nimg"] == 64 and (ck / "random_states_1.pkl").exists()
    train("--data", proc_store, "--resume", ck, "--kimg", 0.096, "--batch", 8, "--compile", "off")
    assert checkpoint.read_state(checkpoint.latest(run))["cur_nimg"] == 96


def test_accelerate_launch_precision_is_used(tmp_path, proc_store, monkeypatch):
    """`accelerate launch --mixed_precision bf16` (or `accelerate config`'s choice) reaches the
    trainer as ACCELERATE_MIXED_PRECISION, which Accelerate itself drops when handed a precision:
    a new run trains in it unless --mixed-precision says otherwise, with a note either way. (The
    real launcher, and resuming under it: test_accelerate_launch_runs_in_its_precision, slow.)"""
    import train as train_cli

    def dry(*args):
        proc = run_main(train_cli.main, "--data", proc_store, *TINY_DCGAN, "--outdir", tmp_path, "--dry-run", *args)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout[: proc.stdout.index("\nG:")])["train"]["mixed_precision"], proc.stderr

    from gan import precision

    monkeypatch.setattr(precision, "cpu_bf16", lambda: (True, ""))  # a CPU with bf16 (without: test_precision)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert dry() == ("bf16", "note: mixed precision bf16, from accelerate launch / accelerate config "
                             "(--mixed-precision overrides it)\n")
    prec, err = dry("--mixed-precision", "no")
    assert prec == "no" and "--mixed-precision no overrides accelerate's bf16" in err
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")  # what the launcher sets when nothing was chosen
    assert dry("--preset", "demo")[0] == "bf16" and dry()[0] == "no"
    assert not any(tmp_path.iterdir())  # dry runs write nothing


@pytest.mark.slow
def test_accelerate_launch_runs_in_its_precision(tmp_path, proc_store):
    """The real `accelerate launch` (one CPU process): a new run in the launcher's bf16; a run
    started in fp32 and resumed under it stays in fp32 and says so."""
    launch = ["-m", "accelerate.commands.launch", "--cpu", "--num_processes", 1, "--mixed_precision", "bf16", "train.py"]
    common = ["--data", proc_store, *TINY_DCGAN, "--batch", 16, "--name", "p"]
    run_cli(*launch, *common, "--kimg", 0.032, "--outdir", tmp_path / "a", check=0)
    assert json.loads((only_run(tmp_path / "a") / "config.json").read_text())["train"]["mixed_precision"] == "bf16"
    train(*common, "--kimg", 0.032, "--outdir", tmp_path / "b")
    proc = run_cli(*launch, *common, "--kimg", 0.064, "--outdir", tmp_path / "b", "--resume", "auto", check=0)
    assert "the run trains in float32, as it started; accelerate's bf16 is not applied" in proc.stderr
    run = only_run(tmp_path / "b")
    assert json.loads((run / "config.json").read_text())["train"]["mixed_precision"] == "no"
    assert checkpoint.read_state(checkpoint.latest(run))["cur_nimg"] == 64


def test_run_dir_lock_stops_a_second_trainer(tmp_path):
    """One train.py per run dir (the real second train.py: the fault suite's
    test_second_trainer_on_the_same_run_is_refused)."""
    from gan.training.rundir import RunLock

    first = RunLock(tmp_path)
    with pytest.raises(UserError, match=rf"is being trained by another train.py \(pid {os.getpid()} on "):
        RunLock(tmp_path)
    first.release()
    RunLock(tmp_path).release()  # free again once released (and the kernel frees it when a process dies)


def test_processes_that_see_different_files_are_told_apart():
    """What share_run_dir does with each process's view (the real 2-process runs: the fault
    suite's test_machines_that_do_not_share_files_are_refused)."""
    from gan.training.runtime import disagreement

    view = {"host": "a", "sees run dir": True, "store": "f00d" * 16, "resume": "kimg000040"}
    assert disagreement([view, dict(view, host="b")], "runs/00001-x") is None
    blind = disagreement([view, dict(view, host="b", **{"sees run dir": False}, store="beef")], "runs/00001-x")
    assert blind.startswith("process 1 (on b) does not see the run dir runs/00001-x that process 0 (on a) made")
    assert "shared filesystem" in blind
    store = disagreement([view, view, dict(view, host="c", store="beef" * 16)], "r")
    assert store.startswith("process 2 (on c) reads a different store") and "f00df00df00d vs" not in store
    assert "beefbeefbeef vs f00df00df00d" in store
    resume = disagreement([view, dict(view, resume=None)], "r")
    assert "would resume from nothing but process 0 from kimg000040" in resume


@pytest.mark.slow
def test_two_process_compiled_training_stays_in_sync(tmp_path, proc_store):
    """`accelerate launch` on GPUs compiles by default: DDP with compiled G and D (traced only,
    as in test_resume_is_bit_identical), gradient accumulation, R1, path length and ADA keeps the
    ranks identical. Slow (about 90 s on 2 cores: DDP splits the graphs), so `make test-slow`."""
    runs = tmp_path / "runs"
    env = {"OMP_NUM_THREADS": "1", **faults("compile_eager")}
    proc = run_cli("-m", "torch.distributed.run", "--nproc_per_node", 2, "--master_port", free_port(), "train.py",
                   "--data", proc_store, *TINY_STYLE, "--batch", 8, "--kimg", 0.064, "--outdir", runs, "--r1-interval", 2,
                   "--aug", "ada", "--grad-accum", 2, "--pl-weight", 1, "--compile", "on", "--checkpoint-every", 0.032,
                   env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "torch.compile failed" not in proc.stdout + proc.stderr
    sync = [json.loads(l) for l in (only_run(runs) / "events.jsonl").read_text().splitlines() if "ranks in sync" in l]
    assert len(sync) >= 2 and all(e["processes"] == 2 for e in sync)


def _class_diversity(export, seeds=16):
    """Mean per-pixel std (0-255 scale) across seeds, for each class (or the one unconditional set)."""
    from gan.sampling import Sampler, latents_for_seeds

    G, cfg, _ = load_generator(export)
    s = Sampler(G, cfg)
    z = latents_for_seeds(range(seeds), cfg.z_dim)
    return [((s.from_z(z, c) + 1) * 127.5).std(0).mean().item() for c in (range(cfg.c_dim) if cfg.c_dim else [None])]


@pytest.mark.slow  # CI time: conditional sampling and training are covered in make test
def test_conditional_dcgan_uses_z(tmp_path, proc_store):
    """Samples of one class differ across seeds about as much as an unconditional model's do
    (a learned class code concatenated to z collapsed to one image per class: std 4 vs 13)."""
    common = ["--data", proc_store, "--preset", "demo", "--kimg", 4, "--g-channels", 24, "--d-channels", 24,
              "--snap", 100, "--checkpoint-every", 100]
    train(*common, "--cond", "--outdir", tmp_path / "cond")
    train(*common, "--outdir", tmp_path / "uncond")
    cond = _class_diversity(checkpoint.latest(only_run(tmp_path / "cond")) / "export")
    (uncond,) = _class_diversity(checkpoint.latest(only_run(tmp_path / "uncond")) / "export")
    assert len(cond) == 4 and uncond > 5, (cond, uncond)
    assert min(cond) > 0.6 * uncond, (cond, uncond)


def test_fp16_overflow_steps_are_skipped_not_divergence(tmp_path, proc_store):
    """fp16's GradScaler (here a CPU one, by test hook) skips steps with inf gradients and halves
    its scale; that is not divergence: no restore, no lr halving, training goes on."""
    runs = tmp_path / "runs"
    train("--data", proc_store, *TINY_STYLE, "--kimg", 0.16, "--batch", 8, "--outdir", runs, "--r1-interval", 4,
          "--pl-weight", 1, "--snap", 100, env=faults("scaler;overflow@2,3,4,5,6,7"))
    run = only_run(runs)
    events = (run / "events.jsonl").read_text()
    assert "restored" not in events and "step skipped" not in events, events
    last = checkpoint.latest(run)
    st = checkpoint.read_state(last)
    assert st["lr_scale"] == 1.0 and st["cur_nimg"] == 160
    scaler = torch.load(last / "scaler.pt", weights_only=True)
    # Every phase with an injected overflow halved the scale once: D and G at each of 6 steps,
    # plus R1 at step 4 and path length at steps 4 (every 4th step).
    assert scaler["scale"] == 2.0 ** 16 / 2 ** (6 * 2 + 2), scaler
    for tensors in load_state(last).values():
        assert all(torch.isfinite(t).all() for t in tensors.values())
    # A streak the scale cannot settle is divergence: restore and lower the learning rate.
    runs2 = tmp_path / "runs2"
    train("--data", proc_store, *TINY_DCGAN, "--kimg", 1.0, "--batch", 16, "--outdir", runs2, "--snap", 100,
          "--r1-gamma", 0, env=faults("scaler;overflow@" + ",".join(map(str, range(1, 52)))))
    events = (only_run(runs2) / "events.jsonl").read_text()
    assert "overflowed 50 steps in a row" in events
    assert "fp16 gradients overflowed for 50 steps: restored kimg000000" in events
    if torch.cuda.is_available():
        return
    # Without a GPU, fp16 would silently be float32: refused.
    import train as train_cli

    assert_user_error(run_main(train_cli.main, "--data", proc_store, *TINY_DCGAN, "--mixed-precision", "fp16",
                               "--outdir", tmp_path / "r3"), "fp16 needs a GPU", "bf16")
    assert not (tmp_path / "r3").exists()


@pytest.mark.slow
def test_conditional_demo_model_varies_per_class_like_the_issue(tmp_path):
    """The reported setting in full: demo preset, --cond, 40 kimg, 16 seeds per class (make test-slow)."""
    store = tmp_path / "proc"
    run_cli("-m", "data_prep", "--procedural", 3000, "--out", store, "--resolution", 32, "--no-progress", check=0)
    train("--data", store, "--preset", "demo", "--cond", "--kimg", 40, "--outdir", tmp_path / "runs")
    cond = _class_diversity(checkpoint.latest(only_run(tmp_path / "runs")) / "export")
    assert min(cond) > 20, cond  # 1.9-3.3 before conditional batch norm; 21-74 for unconditional models


def _buffer_sync_worker(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    from gan.training.runtime import BufferSync

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        torch.manual_seed(rank)  # every buffer differs between the processes
        bn = torch.nn.BatchNorm2d(3)
        bn.running_mean.normal_()
        bn.num_batches_tracked += 1000 * (rank + 1)
        bn.register_buffer("constant", torch.full((2,), float(rank)), persistent=False)
        other = torch.nn.Module()
        other.register_buffer("w_avg", torch.randn(5))
        BufferSync(2, bn, other)()
        torch.save({"bn": dict(bn.named_buffers()), "w_avg": other.w_avg}, f"{out_dir}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_buffer_sync_sends_rank0_state_buffers_only(tmp_path):
    """BufferSync (what DDP's buffer broadcast did): process 0's persistent buffers, of every dtype,
    land exactly on the others; constant (non-persistent) buffers are not sent."""
    torch.multiprocessing.spawn(_buffer_sync_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    r0, r1 = (torch.load(tmp_path / f"{r}.pt") for r in (0, 1))
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(r0["bn"][name], r1["bn"][name]) and r1["bn"][name].dtype == r0["bn"][name].dtype, name
    assert r1["bn"]["num_batches_tracked"] == 1000 and torch.equal(r0["w_avg"], r1["w_avg"])
    assert r1["bn"]["constant"].tolist() == [1.0, 1.0]  # its own, not process 0's


@pytest.mark.parametrize("arch,accum,forwards", [("dcgan", 1, 1), ("fastgan", 1, 1), ("dcgan", 2, 4), ("stylegan", 1, 2)])
def test_generator_forwards_per_step(tmp_path, proc_store, arch, accum, forwards):
    """DCGAN and FastGAN run G once a step, as their own loops do: D learns from those fakes
    (detached), then G's loss backpropagates through the same graph into D as D's update left it.
    StyleGAN (StyleGAN2's loop) and gradient accumulation draw G's fakes anew."""
    import train as train_cli
    from accelerate.state import AcceleratorState
    from gan.training.loop import launch
    from gan.training.setup import resolve

    tiny = {"dcgan": TINY_DCGAN, "stylegan": TINY_STYLE,
            "fastgan": ["--arch", "fastgan", "--g-channels", 8, "--d-channels", 8, "--z-dim", 16]}[arch]
    argv = ["--data", proc_store, *tiny, "--batch", 8, "--grad-accum", accum, "--kimg", 1, "--aug", "none",
            "--outdir", tmp_path]
    trainer = launch(resolve(train_cli.build_parser().parse_args([str(a) for a in argv])))
    try:
        G, D = trainer._unwrap(trainer.G), trainer._unwrap(trainer.D)
        calls = []
        G.register_forward_hook(lambda m, i, out: calls.append(out.requires_grad))
        before_g = [p.detach().clone() for p in G.parameters()]
        before_d = [p.detach().clone() for p in D.parameters()]
        outcome = trainer._step({})
        assert int(outcome) == 0 and trainer._shared_fake is None
        assert len(calls) == forwards, calls
        # Shared: the one forward carries G's graph; otherwise D's phase ran G without one.
        assert calls[0] is (forwards == 1)
        # Both players learned (G's update went through the fakes D had just seen).
        assert any(not torch.equal(a, b) for a, b in zip(before_g, G.parameters()))
        assert any(not torch.equal(a, b) for a, b in zip(before_d, D.parameters()))
    finally:
        trainer.held.close()  # the run dir's lock
        AcceleratorState._reset_state(True)


@pytest.mark.parametrize("arch,flags", [("dcgan", []), ("fastgan", []), ("fastgan", ["--recon-weight", 0]),
                                        ("fastgan", ["--grad-accum", 2]), ("fastgan", ["--recon-interval", 3]),
                                        pytest.param("fastgan", ["--match-perceptual", 1, "--match-bank", 16], marks=pytest.mark.skipif(
                                            not LITE0, reason="the pull needs Lite0's weights package"))])
def test_counted_training_flops_match_a_real_step(tmp_path, proc_store, arch, flags):
    """run_summary's FLOPs per real image (what bench/train.py's MFU and the run-length
    estimates divide by) agree with FlopCounterMode on one real training step: D's decoders
    counted where they run, G's phase taking no gradients of D's weights, the perceptual pull's
    network on the matched pairs (a step after the first, once the bank has fakes to match). With
    lazy reconstruction, the average over --recon-interval's N steps (the decoders run on one)."""
    import train as train_cli
    from accelerate.state import AcceleratorState
    from torch.utils.flop_counter import FlopCounterMode

    from gan.training.flops import run_summary
    from gan.training.loop import launch
    from gan.training.setup import resolve

    tiny = {"dcgan": TINY_DCGAN, "fastgan": ["--arch", "fastgan", "--g-channels", 8, "--d-channels", 8, "--z-dim", 16]}[arch]
    # No R1 (lazy regularization is left out of the count; and autograd.grad trips the counter).
    argv = ["--data", proc_store, *tiny, "--batch", 8, "--kimg", 1, "--aug", "none", "--r1-gamma", 0, "--outdir", tmp_path,
            *flags]
    trainer = launch(resolve(train_cli.build_parser().parse_args([str(a) for a in argv])))
    try:
        cfg = trainer.cfg
        for _ in range(2):  # the matching bank (16 here) fills from the first steps' fakes
            assert int(trainer._step({})) == 0
            trainer.counters.step += 1
        per_step = []
        for _ in range(cfg.recon_interval):
            with FlopCounterMode(display=False) as fc:
                assert int(trainer._step({})) == 0
            trainer.counters.step += 1
            per_step.append(fc.get_total_flops() / cfg.batch)
        counted = sum(per_step) / len(per_step)
        assert (len(set(per_step)) > 1) is (arch == "fastgan" and cfg.recon_interval > 1)  # decoded on one step in N
        s = run_summary(trainer.mcfg, cfg)
        assert abs(s["train_flops"] / counted - 1) < 0.01, (s["train_flops"] - counted, s, counted)
        assert (s["decoder_flops"] > 0) is (arch == "fastgan" and cfg.recon_weight > 0)
        assert (s["pull_flops"] > 0) is (cfg.match_perceptual > 0)
    finally:
        trainer.held.close()
        AcceleratorState._reset_state(True)
