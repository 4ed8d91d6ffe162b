"""Disk-full scenarios, each run in its own process: with --mode tmpfs inside a private mount
namespace on a real tmpfs too small for the job (then remounted larger: "free space"), with
--mode injected on the normal disk with ENOSPC injected into one write (inject/). Each writes
a JSON outcome: survived, data_lost, code_executed, note.

    python tests/faults/scenarios.py checkpoint --work DIR --mode tmpfs --result R.json --args '{...}'
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import faultlib as fl  # noqa: E402

INJECT = str(Path(__file__).resolve().parent / "inject")


class Disk:
    """The filesystem the scenario writes to: a tmpfs of `size` (tmpfs mode) or a plain folder."""

    def __init__(self, work: Path, mode: str, size: str):
        self.mode, self.path = mode, work / "fs"
        self.path.mkdir(parents=True, exist_ok=True)
        if mode == "tmpfs":
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(self.path)], check=True)

    def env(self, inject: str) -> dict:
        """The environment of the command that must hit the full disk."""
        return fl.env() if self.mode == "tmpfs" else fl.env(ARTGAN_TEST_ENOSPC=inject, PYTHONPATH=INJECT)

    def free_space(self) -> None:
        if self.mode == "tmpfs":
            subprocess.run(["mount", "-o", "remount,size=256m", str(self.path)], check=True)


def digest(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*"))


def disk_full_reported(proc) -> list[str]:
    problems = []
    if proc.returncode != 28:
        problems.append(f"exit {proc.returncode}, not 28")
    if not fl.one_line_error(proc):
        problems.append("not a one-line error: " + proc.stderr[-600:])
    elif "no space left on" not in proc.stderr:
        problems.append("the error does not say the disk is full: " + proc.stderr[-300:])
    return problems


def checkpoint(disk: Disk, a: dict) -> dict:
    """Training fills the disk while writing a checkpoint (or a sample grid); after freeing space,
    --resume auto ends bit-identical to an uninterrupted run."""
    runs = disk.path / "runs"
    cmd = fl.train_cmd(a["store"], runs, kimg=float(a["kimg"]))
    proc = fl.run(cmd, env=disk.env("trainer_state.json@3"))
    problems = disk_full_reported(proc)
    run = fl.the_run(runs)
    intact = [line for line in proc.stderr.splitlines() if "is intact" in line]
    lost = fl.lost_checkpoints(run)
    if fl.leftovers(run):
        problems.append(f"partial checkpoint left: {fl.leftovers(run)}")
    disk.free_space()
    again = fl.run(cmd)
    if again.returncode != 0:
        problems.append(f"--resume auto after freeing space: exit {again.returncode}\n{again.stderr[-1500:]}")
    elif not fl.same(fl.final_state(run), fl.final_state(Path(a["ref"]))):
        lost.append("final weights differ from the uninterrupted run")
    return {"survived": not problems, "data_lost": len(lost), "problems": problems + lost,
            "note": (intact[0].split("; ")[-2] if intact else "")}


def startup(disk: Disk, a: dict) -> dict:
    """Training starts on a disk that is already full: one line, exit 28, no half-made run dir
    left behind (a later --resume auto would trip on it); after freeing space the same command
    trains to the uninterrupted run's weights."""
    runs = disk.path / "runs"
    filler = disk.path / "filler"
    if disk.mode == "tmpfs":  # fill it up
        with open(filler, "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass
    cmd = fl.train_cmd(a["store"], runs, kimg=float(a["kimg"]))
    proc = fl.run(cmd, env=disk.env(".config.json.tmp@1"))
    problems = disk_full_reported(proc)
    left = sorted(p.name for p in runs.iterdir()) if runs.exists() else []
    if left:
        problems.append(f"left behind in --outdir: {left}")
    filler.unlink(missing_ok=True)
    disk.free_space()
    again = fl.run(cmd)
    lost = []
    if again.returncode != 0:
        problems.append(f"the same command after freeing space: exit {again.returncode}\n{again.stderr[-1500:]}")
    elif not fl.same(fl.final_state(fl.the_run(runs)), fl.final_state(Path(a["ref"]))):
        lost.append("final weights differ from the uninterrupted run")
    return {"survived": not problems, "data_lost": len(lost), "problems": problems + lost}


def store(disk: Disk, a: dict) -> dict:
    """data_prep over an existing store runs out of space: the old store is intact."""
    out = disk.path / "store"
    first = fl.run([sys.executable, "-m", "data_prep", "--procedural", "100", "--out", out, "--resolution", "32",
                    "--no-progress"])
    assert first.returncode == 0, first.stderr
    before = digest(out)
    cmd = [sys.executable, "-m", "data_prep", "--procedural", "700", "--seed", "1", "--out", out, "--resolution", "32",
           "--no-progress", "--workers", "2"]
    proc = fl.run(cmd, env=disk.env("images.u8@1"))
    problems = disk_full_reported(proc)
    lost = [] if digest(out) == before else ["the old store changed"]
    if hidden(disk.path):
        problems.append(f"left behind: {hidden(disk.path)}")
    disk.free_space()
    again = fl.run(cmd)
    if again.returncode != 0 or json.loads((out / "manifest.json").read_text())["count"] != 700:
        problems.append(f"the same command after freeing space: exit {again.returncode} {again.stderr[-500:]}")
    return {"survived": not problems, "data_lost": len(lost), "problems": problems + lost}


def export(disk: Disk, a: dict) -> dict:
    """generate.py export runs out of space: nothing half-written under the target name."""
    out = disk.path / "exported"
    cmd = [sys.executable, fl.ROOT / "generate.py", "export", "--model", a["model"], "--out", out]
    proc = fl.run(cmd, env=disk.env("README.md@1"))
    problems = disk_full_reported(proc)
    if out.exists() or hidden(disk.path):
        problems.append(f"left behind: {sorted(p.name for p in disk.path.iterdir())}")
    disk.free_space()
    again = fl.run(cmd)
    if again.returncode != 0:
        problems.append(f"export after freeing space: exit {again.returncode} {again.stderr[-500:]}")
    return {"survived": not problems, "data_lost": 0, "problems": problems}


def samples(disk: Disk, a: dict) -> dict:
    """generate.py sample runs out of space midway: every file written is a complete PNG."""
    from PIL import Image

    out = disk.path / "samples"
    cmd = [sys.executable, fl.ROOT / "generate.py", "sample", "--model", a["model"], "--seeds", "0-299", "--grid",
           "--out", out]
    proc = fl.run(cmd, env=disk.env("seed0040@1"))
    problems = disk_full_reported(proc)
    written = sorted(out.glob("*.png")) if out.exists() else []
    broken = []
    for p in written:
        try:
            with Image.open(p) as im:
                im.load()
        except Exception as e:
            broken.append(f"{p.name}: {e}")
    if hidden(disk.path):
        problems.append(f"left behind: {hidden(disk.path)}")
    disk.free_space()
    again = fl.run(cmd)
    if again.returncode != 0 or len(list(out.glob("seed*.png"))) != 300:
        problems.append(f"sample after freeing space: exit {again.returncode} {again.stderr[-500:]}")
    return {"survived": not problems, "data_lost": len(broken), "problems": problems + broken,
            "note": f"{len(written)} complete files before the disk filled"}


SIZES = {"checkpoint": "1500k", "startup": "64k", "store": "700k", "export": "48k", "samples": "120k"}
SCENARIOS = {"checkpoint": checkpoint, "startup": startup, "store": store, "export": export, "samples": samples}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("name", choices=SCENARIOS)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--mode", choices=("tmpfs", "injected"), required=True)
    p.add_argument("--result", type=Path, required=True)
    p.add_argument("--args", default="{}")
    args = p.parse_args()
    a = json.loads(args.args)
    disk = Disk(args.work, args.mode, a.get("size", SIZES[args.name]))
    outcome = SCENARIOS[args.name](disk, a)
    outcome.setdefault("code_executed", 0)
    args.result.write_text(json.dumps(outcome, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
