import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT, assert_user_error, run_cli
from gan.export import load_generator
from gan.training import checkpoint

TINY_DCGAN = ["--arch", "dcgan", "--g-channels", 8, "--d-channels", 8, "--z-dim", 16]
TINY_STYLE = ["--arch", "stylegan", "--channel-base", 256, "--channel-max", 32, "--map", 2, "--z-dim", 32, "--w-dim", 32]


def train(*args, check=0, **kw):
    return run_cli("train.py", *args, check=check, **kw)


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
    out = train("--data", proc_store, "--preset", "stylegan128", "--dry-run", "--kimg", 3).stdout
    assert '"resolution": 32' in out and '"kimg": 3.0' in out and '"aug": "ada"' in out


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
    # a second run gets the next id
    train("--data", proc_store, *TINY_DCGAN, "--kimg", 0.032, "--batch", 16, "--outdir", runs)
    assert sorted(p.name for p in runs.iterdir()) == ["00000-proc32-dcgan", "00001-proc32-dcgan"]


@pytest.mark.parametrize("arch", ["stylegan", "dcgan"])
def test_resume_is_bit_identical(tmp_path, proc_store, arch):
    tiny = TINY_STYLE if arch == "stylegan" else TINY_DCGAN
    common = ["--data", proc_store, *tiny, "--batch", 8, "--aug", "ada", "--aug-p", 0.2, "--r1-interval", 2,
              "--seed", 3, "--snap", 100, "--checkpoint-every", 100, "--name", "r"]
    if arch == "stylegan":
        common += ["--pl-weight", 1.0]
    train(*common, "--kimg", 0.064, "--outdir", tmp_path / "a")
    train(*common, "--kimg", 0.032, "--outdir", tmp_path / "b")
    train(*common, "--kimg", 0.064, "--outdir", tmp_path / "b", "--resume", "auto")
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


def test_non_finite_steps_restore_and_lower_lr(tmp_path, proc_store):
    runs = tmp_path / "runs"
    train("--data", proc_store, *TINY_DCGAN, "--kimg", 0.16, "--batch", 16, "--outdir", runs,
          "--debug-faults", "nan@2,3,4,5")
    run = only_run(runs)
    events = [json.loads(l)["event"] for l in (run / "events.jsonl").read_text().splitlines()]
    assert sum("step skipped" in e for e in events) == 4
    assert any("restored kimg000000" in e and "x0.5" in e for e in events)
    last = checkpoint.latest(run)
    st = checkpoint.read_state(last)
    assert st["lr_scale"] == 0.5 and st["cur_nimg"] >= 160
    for tensors in load_state(last).values():
        assert all(torch.isfinite(t).all() for t in tensors.values())


def test_user_errors(tmp_path, proc_store):
    runs = tmp_path / "runs"
    assert_user_error(train("--data", tmp_path / "nope", "--outdir", runs, check=None), "not found")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_text("{")
    assert_user_error(train("--data", bad, "--outdir", runs, check=None), "malformed")
    assert_user_error(train("--data", proc_store, "--resolution", 64, "--outdir", runs, check=None), "--resolution 64")
    assert_user_error(train("--data", proc_store, "--preset", "nosuch", "--outdir", runs, check=None), "unknown preset", "demo")
    assert_user_error(train("--data", proc_store, *TINY_DCGAN, "--batch", 16, "--grad-accum", 3, "--outdir", runs,
                            check=None), "not divisible")
    assert_user_error(train("--data", proc_store, "--cond", "--arch", "dcgan", "--resume", tmp_path, check=None),
                      "not a checkpoint")
    assert not runs.exists()  # nothing was created by refused runs
    store16 = tmp_path / "s16"
    run_cli("-m", "data_prep", "--procedural", 8, "--out", store16, "--resolution", 16, "--no-progress", check=0)
    assert_user_error(train("--data", store16, "--arch", "dcgan", "--outdir", runs, check=None), "does not support 16px")
    # out of memory mid-run: actionable message, and the run dir's checkpoint is intact
    proc = train("--data", proc_store, *TINY_DCGAN, "--batch", 16, "--kimg", 1, "--outdir", runs,
                 "--debug-faults", "oom@2", check=None)
    assert_user_error(proc, "out of memory", "--batch", "--grad-accum")
    run = only_run(runs)
    assert checkpoint.latest(run).name == "kimg000000"
    load_generator(checkpoint.latest(run) / "export")


def test_sigterm_checkpoints_and_resume_continues(tmp_path, proc_store):
    runs = tmp_path / "runs"
    cmd = [sys.executable, "train.py", "--data", str(proc_store), *map(str, TINY_DCGAN), "--batch", "16",
           "--kimg", "1000", "--outdir", str(runs), "--checkpoint-every", "1000"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        time.sleep(0.5)
        runs_now = list(runs.glob("*/checkpoints/kimg000000")) if runs.exists() else []
        if runs_now:
            break
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    run = only_run(runs)
    st = checkpoint.read_state(checkpoint.latest(run))
    assert st["cur_nimg"] > 0 and "stopped by signal" in (run / "events.jsonl").read_text()
    target = st["cur_nimg"] / 1000 + 0.032
    train("--data", proc_store, "--outdir", runs, "--resume", run, "--kimg", target)
    assert checkpoint.read_state(checkpoint.latest(run))["cur_nimg"] >= st["cur_nimg"] + 32


def test_two_process_training_stays_in_sync_and_resumes_single(tmp_path, proc_store):
    runs = tmp_path / "runs"
    env = {"OMP_NUM_THREADS": "1"}
    proc = run_cli("-m", "torch.distributed.run", "--nproc_per_node", 2, "--master_port", 29571, "train.py", "--data", proc_store, *TINY_STYLE, "--batch", 8, "--kimg", 0.064, "--outdir", runs,
                   "--r1-interval", 2, "--aug", "ada", "--grad-accum", 2, "--pl-weight", 1, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = only_run(runs)
    sync = [json.loads(l) for l in (run / "events.jsonl").read_text().splitlines() if "ranks in sync" in l]
    assert sync and all(e["processes"] == 2 for e in sync)
    ck = checkpoint.latest(run)
    assert checkpoint.read_state(ck)["cur_nimg"] == 64 and (ck / "random_states_1.pkl").exists()
    train("--data", proc_store, "--resume", ck, "--kimg", 0.096, "--batch", 8)
    assert checkpoint.read_state(checkpoint.latest(run))["cur_nimg"] == 96
