"""The fault-injection suite: what a hostile or unlucky user does to a run, and what must hold.

`make test` runs a fast subset (a trial or two of each fault); `make faults` runs every trial
(ARTGAN_FAULTS=full) and prints the table: fault, trials, survived, data lost, code executed.
Each trial compares against an uninterrupted run of the same command, bit for bit.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

import faultlib as fl
from conftest import free_port, run_main

SEED = 20261124


@pytest.fixture(scope="module")
def reference(tmp_path_factory, proc_store):
    """The uninterrupted run every trial must end up identical to, and how long it takes."""
    out = tmp_path_factory.mktemp("reference")
    t0 = time.monotonic()
    proc = fl.run(fl.train_cmd(proc_store, out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = fl.the_run(out)
    return {"outdir": out, "run": run, "seconds": time.monotonic() - t0, "state": fl.final_state(run)}


def _assert_all(fault_table, fault):
    rows = [r for r in fault_table.rows if r["fault"] == fault]
    bad = [r for r in rows if not r["survived"] or r["data_lost"] or r["code_executed"]]
    assert rows and not bad, json.dumps(bad, indent=1)[:6000]


def _resume_matches(reference, store, outdir, extra=()) -> list[str]:
    """Re-run the same command (it resumes); it must end bit-identical, with nothing left over."""
    proc = fl.run(fl.train_cmd(store, outdir, extra=extra))
    if proc.returncode != 0:
        return [f"--resume auto: exit {proc.returncode}: {proc.stderr[-1500:]}"]
    run = fl.the_run(outdir)
    problems = [f"left behind: {fl.leftovers(run)}"] if fl.leftovers(run) else []
    if not fl.same(fl.final_state(run), reference["state"]):
        problems.append("final weights differ from the uninterrupted run")
    # The resumed progress bar keeps its total and ends full ("320/320").
    bars = [seg for seg in re.split(r"[\r\n]", proc.stderr) if seg.startswith("train:")]
    done = re.search(r"\| *([\d.]+k?)/([\d.]+k?) ", bars[-1]) if bars else None
    if bars and not (done and done.group(1) == done.group(2)):
        problems.append(f"the progress bar ends at {bars[-1]!r}")
    return problems


def _landed(outdir: Path) -> str:
    runs = [p for p in outdir.iterdir() if p.is_dir()] if outdir.exists() else []
    if not runs or not (runs[0] / "checkpoints").exists():
        return "start-up"
    return "mid-checkpoint" if fl.leftovers(runs[0]) else "training"


# ---------------------------------------------------------------------------- kill -9
@pytest.mark.faults  # CI time: SIGTERM/SIGINT stops and resumes bit-identical in make test
def test_kill9_at_random_moments_resumes_bit_identical(tmp_path, proc_store, reference, fault_table):
    rng = random.Random(SEED)
    for i in range(fl.trials(20, 1)):
        outdir = tmp_path / f"k{i}"
        at = rng.uniform(0.3, reference["seconds"])
        # Every other full trial loads data in DataLoader worker processes: they must die too.
        extra = ("--workers", "2") if fl.FULL and i % 2 else ()
        proc = fl.start(fl.train_cmd(proc_store, outdir, extra=extra))
        try:
            proc.wait(timeout=at)
            landed = "after the end"
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            landed = _landed(outdir)
        proc.communicate()
        orphans = fl.wait_session_gone(proc.pid, 5) is None
        fl.kill_session(proc.pid)
        lost = fl.lost_checkpoints(fl.the_run(outdir)) if landed != "start-up" else []
        problems = _resume_matches(reference, proc_store, outdir, extra) + \
            (["processes outlived the kill"] if orphans else [])
        fault_table.add("kill -9 of train.py at a random moment", not problems, len(lost), note=landed,
                        detail=problems + lost + [f"at {at:.2f}s"])
        shutil.rmtree(outdir, ignore_errors=True)
    _assert_all(fault_table, "kill -9 of train.py at a random moment")


# ---------------------------------------------------------------------------- SIGTERM / SIGINT
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_sigint_checkpoint_and_exit_cleanly(tmp_path, proc_store, reference, fault_table, sig):
    """At any moment: exit 128+signal with one line (start-up) or a checkpoint (training), no
    traceback; re-running the command ends bit-identical."""
    name = f"{signal.Signals(sig).name} to train.py at a random moment"
    rng = random.Random(SEED + sig)
    n = fl.trials(6, 1 if sig == signal.SIGTERM else 0)
    if n == 0:
        pytest.skip("SIGINT is in the full set (make faults)")
    for i in range(n):
        outdir = tmp_path / f"s{i}"
        # The fast trial waits for training to be under way: the checkpoint-on-signal path.
        at = rng.uniform(0.3, reference["seconds"]) if fl.FULL else None
        proc = fl.start(fl.train_cmd(proc_store, outdir))
        if at is None:
            fl.wait_for(lambda: list(outdir.glob("*/checkpoints/kimg*")), 120)
            at = 0.5
        try:
            proc.wait(timeout=at)
            landed = "after the end"
        except subprocess.TimeoutExpired:
            landed = _landed(outdir)
            os.kill(proc.pid, sig)
        out, err = proc.communicate(timeout=120)
        problems = []
        if proc.returncode not in (0, 128 + sig):
            problems.append(f"exit {proc.returncode}")
        if "Traceback" in err:
            problems.append(err[-1500:])
        if proc.returncode == 128 + sig and landed == "training" and "stopped by signal" not in out:
            problems.append("no checkpoint at the signal: " + out[-500:])
        fl.kill_session(proc.pid)
        problems += _resume_matches(reference, proc_store, outdir)
        fault_table.add(name, not problems, note=landed, detail=problems + [f"at {at:.2f}s"])
        shutil.rmtree(outdir, ignore_errors=True)
    _assert_all(fault_table, name)


# ---------------------------------------------------------------------------- disk full
FAST_DISK = {"checkpoint", "store"}


# CI time: the two slowest under make faults only
@pytest.mark.parametrize("what", [pytest.param("checkpoint", marks=pytest.mark.faults), "startup",
                                  pytest.param("store", marks=pytest.mark.faults), "export", "samples"])
def test_disk_full(tmp_path, proc_store, reference, fault_table, what):
    """ENOSPC while writing: exit 28, one line naming the filesystem and what is intact, no
    partial file or folder left; after freeing space the same command completes."""
    if what not in FAST_DISK and not fl.FULL:
        pytest.skip("in the full set (make faults)")
    mode = fl.small_fs_mode()
    ref = reference["run"]
    result = fl.run_scenario(what, tmp_path, mode, store=proc_store, ref=ref, kimg=0.32, model=ref)
    fault_table.add(f"disk full during {what} writes ({mode})", result["survived"], result["data_lost"],
                    result["code_executed"], note=result.get("note", ""), detail=result["problems"])
    _assert_all(fault_table, f"disk full during {what} writes ({mode})")


# ---------------------------------------------------------------------------- damaged files
def _checkpoint_files(run: Path) -> list[str]:
    from gan.training import checkpoint

    ck = checkpoint.latest(run)
    return sorted(p.relative_to(ck).as_posix() for p in ck.rglob("*") if p.is_file())


@pytest.mark.faults  # CI time: damaged exports and hostile checkpoint files are in make test
def test_damaged_checkpoint_files_fall_back_to_the_previous_one(tmp_path, proc_store, reference, fault_table):
    """Truncate or flip bits in each file of the newest checkpoint: resume warns naming the file,
    falls back to the previous checkpoint and ends bit-identical."""
    from gan.training import checkpoint

    files = _checkpoint_files(reference["run"])
    cases = [(f, how) for f in files for how in ("truncated", "bit-flipped")]
    if not fl.FULL:
        cases = [("model.safetensors", "bit-flipped"), ("random_states_0.pkl", "truncated")]
    for rel, how in cases:
        outdir = tmp_path / "d"
        shutil.copytree(reference["outdir"], outdir)
        run = fl.the_run(outdir)
        newest = checkpoint.latest(run)
        (fl.truncate if how == "truncated" else fl.flip)(newest / rel)
        proc = fl.run(fl.train_cmd(proc_store, outdir))
        named = newest.name in proc.stderr and (Path(rel).name in proc.stderr or checkpoint.STATE in proc.stderr)
        problems = [] if named else [f"no warning naming {newest.name}/{rel}: {proc.stderr[-800:]}"]
        problems += _resume_matches(reference, proc_store, outdir) if proc.returncode == 0 else \
            [f"exit {proc.returncode}: {proc.stderr[-1500:]}"]
        fault_table.add(f"{how} checkpoint file", not problems, detail=[rel] + problems, note=rel)
        shutil.rmtree(outdir)
    _assert_all(fault_table, "truncated checkpoint file")
    _assert_all(fault_table, "bit-flipped checkpoint file")


def test_damaged_export_files_are_refused_naming_a_good_one(tmp_path, reference, fault_table):
    """generate.py on a damaged export: one-line error naming the file; pointed at the run, it
    names the checkpoint to use instead."""
    import generate
    from gan.training import checkpoint

    ck = checkpoint.latest(reference["run"])
    files = sorted(p.name for p in (ck / "export").iterdir())
    cases = [(f, how) for f in files for how in ("truncated", "bit-flipped")] if fl.FULL else \
        [("model.safetensors", "truncated")]
    for name, how in cases:
        outdir = tmp_path / "e"
        shutil.copytree(reference["outdir"], outdir)
        run = fl.the_run(outdir)
        newest, previous = [p for _, p in checkpoint.complete_checkpoints(run)][-2:][::-1]
        (fl.truncate if how == "truncated" else fl.flip)(newest / "export" / name)
        problems = []
        for model, needles in ((newest / "export", [name]), (run, [previous.name])):
            proc = run_main(generate.main, "sample", "--model", model, "--seeds", 0, "--out", tmp_path / "s")
            if proc.returncode != 2 or not fl.one_line_error(proc) or not all(n in proc.stderr for n in needles):
                problems.append(f"--model {model.name}: exit {proc.returncode}: {proc.stderr[-600:]}")
        fault_table.add(f"{how} export file", not problems, note=name, detail=problems)
        shutil.rmtree(outdir)
    if fl.FULL:  # a shared export (generate.py export) also carries a model card and a preview
        shared = tmp_path / "shared"
        assert run_main(generate.main, "export", "--model", reference["run"], "--out", shared).returncode == 0
        good = run_main(generate.main, "sample", "--model", shared, "--seeds", "0-3", "--out", tmp_path / "good")
        assert good.returncode == 0, good.stderr
        for name in sorted(p.name for p in shared.iterdir()):
            for how in ("truncated", "bit-flipped"):
                copy = tmp_path / "shared-copy"
                shutil.copytree(shared, copy)
                (fl.truncate if how == "truncated" else fl.flip)(copy / name)
                proc = run_main(generate.main, "sample", "--model", copy, "--seeds", "0-3", "--out", tmp_path / "o")
                if name in ("README.md", "samples.png"):  # not read: the weights still verify and load
                    ok = proc.returncode == 0 and all((tmp_path / "o" / f).read_bytes() == (tmp_path / "good" / f)
                                                      .read_bytes() for f in ("seed0000.png", "seed0003.png"))
                else:
                    ok = proc.returncode == 2 and fl.one_line_error(proc) and name in proc.stderr
                fault_table.add(f"{how} export file", ok, note=f"shared {name}", detail=[proc.stderr[-600:]])
                shutil.rmtree(copy)
    for how in ("truncated", "bit-flipped") if fl.FULL else ("truncated",):
        _assert_all(fault_table, f"{how} export file")


# ---------------------------------------------------------------------------- hostile pickles
def test_hostile_pickle_in_any_checkpoint_file_never_runs(tmp_path, proc_store, reference, fault_table):
    """Replace each file of the newest checkpoint (and add Accelerate's custom_checkpoint_0.pkl)
    with a pickle whose payload creates a marker, rewrite the checksums as an attacker would:
    resume refuses it or falls back, the payload never runs. generate.py likewise for exports."""
    import generate
    from gan.training import checkpoint

    files = _checkpoint_files(reference["run"]) + ["custom_checkpoint_0.pkl", "older artgan"]
    if not fl.FULL:
        files = ["optimizer.bin", "older artgan"]
    marker = tmp_path / "payload-ran"
    for rel in files:
        outdir = tmp_path / "h"
        shutil.copytree(reference["outdir"], outdir)
        run = fl.the_run(outdir)
        newest = checkpoint.latest(run)
        if rel == "older artgan":  # trainer state only in Accelerate's custom-object pickle
            (newest / checkpoint.TRAINER).unlink()
            fl.plant_payload(newest / "custom_checkpoint_0.pkl", marker)
        else:
            fl.plant_payload(newest / rel, marker)
        if not rel.endswith("checksums.json"):
            fl.rewrite_manifests(newest)
        problems = []
        if rel.startswith("export/"):  # before the resume below rewrites the newest checkpoint
            proc = run_main(generate.main, "sample", "--model", newest / "export", "--seeds", 0, "--out", tmp_path / "s")
            if proc.returncode != 2 or not fl.one_line_error(proc):
                problems.append(f"generate.py: exit {proc.returncode}: {proc.stderr[-600:]}")
        proc = fl.run(fl.train_cmd(proc_store, outdir))
        if proc.returncode not in (0, 2) or "Traceback" in proc.stderr or \
                (proc.returncode == 2 and not fl.one_line_error(proc)):
            problems.append(f"exit {proc.returncode}: {proc.stderr[-1500:]}")
        if rel == "older artgan" and not ("older artgan" in proc.stderr and "--from" in proc.stderr):
            problems.append(f"no refusal naming the old format: {proc.stderr[-600:]}")
        ran = marker.exists()
        marker.unlink(missing_ok=True)
        fault_table.add("hostile pickle in a checkpoint file (checksums rewritten)", not problems,
                        code_executed=int(ran), note=rel, detail=[rel] + problems)
        shutil.rmtree(outdir)
    _assert_all(fault_table, "hostile pickle in a checkpoint file (checksums rewritten)")


# ---------------------------------------------------------------------------- a killed rank
@pytest.mark.faults
def test_killed_rank_ends_the_other_and_the_run_resumes(tmp_path, proc_store, fault_table):
    """2-process training, one rank SIGKILLed mid-run: the other ends within seconds, nothing is
    left running, and re-running the command resumes to the 2-process reference bit for bit."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port())]
    ref_out = tmp_path / "ref2"
    cmd = lambda out: launcher + fl.train_cmd(proc_store, out)[1:]  # noqa: E731
    proc = fl.run(cmd(ref_out), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reference = {"state": fl.final_state(fl.the_run(ref_out))}
    rng = random.Random(SEED)
    names = {"rank": "kill -9 of one rank in 2-process training",
             "launcher": "kill -9 of the launcher of 2-process training"}  # every rank checkpoints, none orphaned
    for i, kind in enumerate(["rank"] * 3 + ["launcher"] * 2):
        outdir = tmp_path / f"{kind}{i}"
        proc = fl.start(cmd(outdir))
        fl.wait_for(lambda: list(outdir.glob("*/checkpoints/kimg*")), 180)
        time.sleep(rng.uniform(0.0, 2.0))
        ranks = [c for c in psutil.Process(proc.pid).children() if "train.py" in " ".join(c.cmdline())]
        problems = [] if len(ranks) == 2 else [f"found {len(ranks)} ranks"]
        if kind == "rank":
            victim = rng.choice(ranks)
            victim.kill()
            watched = [r for r in ranks if r.pid != victim.pid]
        else:
            os.kill(proc.pid, signal.SIGKILL)
            watched = ranks
        t0 = time.monotonic()
        _, alive = psutil.wait_procs(watched, timeout=30)
        ended = time.monotonic() - t0
        proc.communicate(timeout=60)
        if alive:
            problems.append(f"ranks outlived the kill of the {kind} by 30 s")
        if fl.wait_session_gone(proc.pid, 5) is None:
            problems.append("processes left running")
        fl.kill_session(proc.pid)
        lost = fl.lost_checkpoints(fl.the_run(outdir))
        again = fl.run(cmd(outdir), timeout=600)
        if again.returncode != 0:
            problems.append(f"resume: exit {again.returncode}: {again.stderr[-1500:]}")
        elif not fl.same(fl.final_state(fl.the_run(outdir)), reference["state"]):
            problems.append("final weights differ from the uninterrupted 2-process run")
        fault_table.add(names[kind], not problems and ended < 10, len(lost),
                        note=f"{'other rank' if kind == 'rank' else 'ranks'} ended in {ended:.1f}s",
                        detail=problems + lost)
    for name in names.values():
        _assert_all(fault_table, name)


# ---------------------------------------------------------------------------- the same command twice
def test_second_trainer_on_the_same_run_is_refused(tmp_path, proc_store, fault_table):
    """The command started again while it still trains (a second terminal, a scheduler retrying):
    the second train.py stops at once with one line naming the first and writes nothing; the
    first goes on to the end with every checkpoint intact."""
    if not fl.FULL:
        pytest.skip("in the full set (make faults)")
    outdir = tmp_path / "twice"
    cmd = fl.train_cmd(proc_store, outdir, kimg=3.2)  # long enough to still train when the second starts
    first = fl.start(cmd)
    problems = []
    if not fl.wait_for(lambda: list(outdir.glob("*/checkpoints/kimg*")), 180):
        problems.append("the first run wrote no checkpoint")
    config = (fl.the_run(outdir) / "config.json").read_bytes()
    second = fl.run(cmd)
    alive = first.poll() is None
    if second.returncode != 2 or not fl.one_line_error(second) or f"pid {first.pid} on" not in second.stderr:
        problems.append(f"second: exit {second.returncode}: {second.stderr[-800:]}")
    if (fl.the_run(outdir) / "config.json").read_bytes() != config:
        problems.append("the second rewrote the run's config")
    _, err = first.communicate(timeout=300)
    if first.returncode != 0:
        problems.append(f"first: exit {first.returncode}: {err[-800:]}")
    if not alive:
        problems.append("the first had ended before the second started: the check did not run")
    lost = fl.lost_checkpoints(fl.the_run(outdir))
    fault_table.add("the same train.py started again while it trains", not problems, len(lost),
                    note="refused while the first trained", detail=problems + lost)
    _assert_all(fault_table, "the same train.py started again while it trains")


# ---------------------------------------------------------------------------- machines that do not share files
def test_machines_that_do_not_share_files_are_refused(tmp_path, proc_store, fault_table):
    """Two processes as if on two machines (inject/machine.py: each rank runs from its own folder,
    so relative paths are its own files). Without a shared --outdir each process would write its
    part of every checkpoint where no resume finds it; with different stores they would train
    different runs. Both stop at start-up with the same error on every process, and nothing is
    left running. In the full set only (make faults): CI's time is short, and the in-process
    test_processes_that_see_different_files_are_told_apart covers the messages."""
    if not fl.FULL:
        pytest.skip("in the full set (make faults)")
    other = tmp_path / "other-store"
    subprocess.run([sys.executable, "-m", "data_prep", "--procedural", "64", "--seed", "1", "--out", other,
                    "--resolution", "32", "--no-progress"], cwd=fl.ROOT, check=True, capture_output=True)
    shared = tmp_path / "shared-runs"
    cases = [("machines that do not share --outdir", "runs", proc_store, "does not see the run dir"),
             ("machines with different stores at --data", shared, other, "reads a different store")]
    for i, (fault, outdir, store1, expected) in enumerate(cases):
        for rank, store in enumerate((proc_store, store1)):
            (tmp_path / f"m{i}" / f"machine{rank}").mkdir(parents=True)
            (tmp_path / f"m{i}" / f"machine{rank}" / "store").symlink_to(store)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
               "--no-python", sys.executable, fl.HERE / "inject" / "machine.py", "--data", "store",
               *fl.train_cmd("store", outdir)[4:]]
        # no_fs_wait: a process that does not see the run dir says so at once, not after 10 s of looking
        proc = fl.run(cmd, env=fl.env(ARTGAN_MACHINE_DIR=str(tmp_path / f"m{i}" / "machine{rank}"),
                                      ARTGAN_TEST_FAULTS="no_fs_wait"), timeout=300)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        problems = [] if proc.returncode != 0 else ["exit 0"]
        if not errors or not all(expected in e for e in errors):
            problems.append(f"errors: {errors}")
        # torchrun reports the failed ranks with a traceback of its own; a rank's would show artgan's frames.
        ours = [line for line in proc.stderr.splitlines()
                if line.strip().startswith(f'File "{fl.ROOT}') and f"{fl.ROOT}/.venv" not in line]
        if "exitcode  : -6" in proc.stderr or ours:
            problems.append(f"a rank aborted or printed a traceback: {ours[:3]}")
        made = [p for p in [*(tmp_path / f"m{i}").glob("machine*/runs/*"), *shared.glob("*")]]
        if made:
            problems.append(f"run dirs left behind: {made}")
        fault_table.add(fault, not problems, note="stopped at start-up, saying why", detail=problems)
    for fault, *_ in cases:
        _assert_all(fault_table, fault)


# ---------------------------------------------------------------------------- data_prep killed
def test_data_prep_killed_over_an_existing_store(tmp_path, fault_table):
    """Kill data_prep (SIGKILL, SIGTERM, SIGINT) while it replaces a store: the store is the old
    one or the complete new one, never a mix; no worker outlives it; the next run cleans up."""
    from data_prep.store import PreparedDataset

    out = tmp_path / "store"
    first = fl.run([sys.executable, "-m", "data_prep", "--procedural", 64, "--out", out, "--resolution", 32,
                    "--no-progress"])
    assert first.returncode == 0, first.stderr
    job = lambda dest: [sys.executable, "-m", "data_prep", "--procedural", 1500, "--seed", 1, "--out", dest,  # noqa: E731
                        "--resolution", 32, "--no-progress", "--workers", 2]
    cmd = job(out)
    rng = random.Random(SEED)
    sigs = [signal.SIGKILL] * 8 + [signal.SIGTERM] * 3 + [signal.SIGINT] * 3 if fl.FULL else [signal.SIGKILL]
    if fl.FULL:  # how long the job takes here, so the random moments spread over all of it
        t0 = time.monotonic()
        timing = fl.run(job(tmp_path / "timing"))
        assert timing.returncode == 0, timing.stderr
        seconds = time.monotonic() - t0
    for sig in sigs:
        old = json.loads((out / "manifest.json").read_text())["pixels_sha256"]
        proc = fl.start(cmd)
        if fl.FULL:
            at = rng.uniform(0.3, seconds)
        else:  # the fast trial kills it with its workers busy
            fl.wait_for(lambda: len(psutil.Process(proc.pid).children()) >= 2, 60)
            at = 0.5
        try:
            proc.wait(timeout=at)
            landed = "after the end"
        except subprocess.TimeoutExpired:
            landed = "during" if list(tmp_path.glob(".store.tmp-*")) else "start-up"
            os.kill(proc.pid, sig)
        _, err = proc.communicate(timeout=60)
        problems = []
        if fl.wait_session_gone(proc.pid, 3) is None:
            problems.append("workers outlived data_prep")
        fl.kill_session(proc.pid)
        if sig != signal.SIGKILL and "Traceback" in err:
            problems.append(err[-800:])
        try:
            ds = PreparedDataset(out, verify=True)
            new = ds.manifest["pixels_sha256"]
            lost = 0 if new == old or ds.count == 1500 else 1
        except Exception as e:
            lost, new = 1, None
            problems.append(f"store unreadable: {e}")
        fault_table.add(f"data_prep killed over an existing store ({signal.Signals(sig).name})", not problems, lost,
                        note=landed, detail=problems)
    again = fl.run([sys.executable, "-m", "data_prep", "--procedural", 64, "--out", out, "--resolution", 32,
                    "--no-progress"])
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".store"))
    fault_table.add("data_prep re-run after the kills cleans up", again.returncode == 0 and not left,
                    detail=left + [again.stderr[-500:]])
    for name in {r["fault"] for r in fault_table.rows if r["fault"].startswith("data_prep")}:
        _assert_all(fault_table, name)


def test_missing_rng_state_is_an_error(tmp_path, proc_store, reference, fault_table):
    """A checkpoint whose RNG state was removed (checksums rewritten to match) is refused: the
    resume would silently stop being exact (Accelerate only logs it at info level)."""
    from gan.training import checkpoint

    outdir = tmp_path / "m"
    shutil.copytree(reference["outdir"], outdir)
    newest = checkpoint.latest(fl.the_run(outdir))
    (newest / "random_states_0.pkl").unlink()
    fl.rewrite_manifests(newest)
    proc = fl.run(fl.train_cmd(proc_store, outdir))
    ok = proc.returncode == 2 and fl.one_line_error(proc) and "random_states_0.pkl is missing" in proc.stderr
    fault_table.add("RNG state removed from a checkpoint (checksums rewritten)", ok, detail=[proc.stderr[-800:]])
    _assert_all(fault_table, "RNG state removed from a checkpoint (checksums rewritten)")
