"""Shared pieces of the fault-injection suite: the tiny training command, comparing final
weights with an uninterrupted run, damaging files, hostile pickles, process checks, and
running a scenario on a small filesystem (a real tmpfs where the machine allows it, else an
injected ENOSPC from inject/sitecustomize.py)."""
from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
FULL = os.environ.get("ARTGAN_FAULTS") == "full"  # `make faults`: every trial; `make test`: a fast subset


def trials(full: int, fast: int) -> int:
    return full if FULL else fast


def env(**extra) -> dict:
    e = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1")
    e.update({k: str(v) for k, v in extra.items()})
    return e


# ---------------------------------------------------------------------------- the run under attack
TINY = ["--arch", "dcgan", "--g-channels", "8", "--d-channels", "8", "--z-dim", "16", "--batch", "16"]


def train_cmd(store, outdir, kimg=0.32, every=0.064, keep=2, extra=()) -> list[str]:
    """The command a user re-runs after any failure: it resumes the newest good checkpoint."""
    return [sys.executable, str(ROOT / "train.py"), "--data", str(store), *TINY, "--kimg", str(kimg),
            "--checkpoint-every", str(every), "--snap", str(every * 2), "--keep", str(keep),
            "--outdir", str(outdir), "--name", "f", "--resume", "auto", *extra]


def run(cmd, timeout=300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=ROOT, capture_output=True, text=True, env=kw.pop("env", env()),
                          timeout=timeout, **kw)


def start(cmd, **kw) -> subprocess.Popen:
    """In its own session, so every process it starts can be found (and must be gone) later."""
    return subprocess.Popen([str(c) for c in cmd], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=kw.pop("env", env()), start_new_session=True, **kw)


def the_run(outdir) -> Path:
    runs = [p for p in Path(outdir).iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(runs) == 1, runs
    return runs[0]


def final_state(run: Path) -> dict:
    """Every tensor and counter the newest checkpoint holds (weights, optimizers, RNG, EMA,
    export), for a bit-for-bit comparison with an uninterrupted run."""
    from gan.training import checkpoint

    ck = checkpoint.latest(run)
    out = {"name": ck.name, "trainer": json.loads((ck / checkpoint.TRAINER).read_text())}
    for p in sorted(ck.rglob("*")):
        rel = p.relative_to(ck).as_posix()
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            out[rel] = load_file(str(p))
        elif p.suffix in (".bin", ".pkl", ".pt"):
            from accelerate.utils import load

            out[rel] = load(p, map_location="cpu")
    return out


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype \
            and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if hasattr(a, "shape") and hasattr(b, "shape"):  # numpy RNG state
        return bool((a == b).all())
    return a == b


def lost_checkpoints(run: Path) -> list[str]:
    """Complete checkpoints (renamed into place) that no longer verify: data a fault destroyed."""
    from gan.integrity import verify
    from gan.training import checkpoint

    return [f"{p.name}: {why}" for _, p in checkpoint.complete_checkpoints(run) if (why := verify(p))]


def leftovers(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").glob(".tmp-*"))


# ---------------------------------------------------------------------------- processes
def session_alive(sid: int) -> list[int]:
    """Processes still running in session `sid` (zombies excluded)."""
    alive = []
    for p in psutil.process_iter(["pid", "status"]):
        try:
            if os.getsid(p.pid) == sid and p.info["status"] != psutil.STATUS_ZOMBIE:
                alive.append(p.pid)
        except (ProcessLookupError, PermissionError, psutil.Error):
            pass
    return alive


def wait_session_gone(sid: int, timeout: float) -> float | None:
    """Seconds until no process of the session is left, or None if some outlive `timeout`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if not session_alive(sid):
            return time.monotonic() - t0
        time.sleep(0.05)
    return None


def kill_session(sid: int) -> None:
    for pid in session_alive(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_for(cond, timeout: float, every: float = 0.05) -> bool:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return True
        time.sleep(every)
    return False


def one_line_error(proc) -> bool:
    """A failure the user can act on: no traceback, exactly one `error:` line."""
    err = proc.stderr or ""
    return "Traceback" not in err and len([l for l in err.splitlines() if l.startswith("error:")]) == 1


# ---------------------------------------------------------------------------- damage
def flip(path: Path, n: int = 64, seed: int = 0) -> None:
    data = bytearray(path.read_bytes())
    rng = random.Random(seed)
    for _ in range(n if data else 0):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


class Payload:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant_payload(path: Path, marker: Path) -> None:
    """Replace `path` with a pickle that creates `marker` when loaded: torch's zip format for
    torch files (what torch.load would open), a raw pickle for anything else."""
    if path.suffix in (".bin", ".pt", ".pkl"):
        torch.save({"state": Payload(marker)}, path)
    else:
        path.write_bytes(pickle.dumps(Payload(marker)))


def rewrite_manifests(folder: Path) -> None:
    """What an attacker does next: make the checksums match the planted file."""
    from gan.integrity import MANIFEST, write_manifest

    for m in sorted(folder.rglob(MANIFEST), key=lambda p: -len(p.parts)):  # nested (export) first
        write_manifest(m.parent)


# ---------------------------------------------------------------------------- small filesystems
def small_fs_mode() -> str:
    """'tmpfs' where a private tmpfs can be mounted (root, or an unprivileged user namespace),
    else 'injected'. ARTGAN_FAULTS_DISK=injected forces the injection."""
    if os.environ.get("ARTGAN_FAULTS_DISK") == "injected" or not shutil.which("unshare"):
        return "injected"
    import tempfile

    d = tempfile.mkdtemp()
    try:
        probe = subprocess.run(_unshare() + ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", d], capture_output=True,
                               timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "injected"
    finally:
        os.rmdir(d)
    return "tmpfs" if probe.returncode == 0 else "injected"


def _unshare() -> list[str]:
    # A private mount namespace: the tmpfs vanishes with the scenario, nothing to unmount.
    return ["unshare", "-m", "--propagation", "private"] if os.geteuid() == 0 else ["unshare", "-rm"]


def run_scenario(name: str, workdir: Path, mode: str, **args) -> dict:
    """Run scenarios.py NAME in a subprocess (inside a private mount namespace for tmpfs) and
    return the JSON outcome it writes."""
    result = workdir / f"{name}.json"
    cmd = [sys.executable, str(HERE / "scenarios.py"), name, "--work", str(workdir), "--mode", mode,
           "--result", str(result), "--args", json.dumps({k: str(v) for k, v in args.items()})]
    if mode == "tmpfs":
        cmd = _unshare() + cmd
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env(PYTHONPATH=str(ROOT)), timeout=600)
    if not result.exists():
        raise AssertionError(f"scenario {name} wrote no result (exit {proc.returncode})\n{proc.stdout}\n{proc.stderr}")
    return json.loads(result.read_text())
