"""Run directories: runs/00003-<name>/ with config.json, checkpoints/, samples/, tb/."""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
from pathlib import Path

from ..config import CONFIG_VERSION, ModelConfig, TrainConfig
from ..errors import UserError

_RUN = re.compile(r"^(\d{5})-(.+)$")
LOCK = ".lock"  # held (flock) by the main process of the train.py that trains the run


def runs_in(outdir: Path) -> list[Path]:
    outdir = Path(outdir)
    if not outdir.is_dir():
        return []
    return sorted((p for p in outdir.iterdir() if p.is_dir() and _RUN.match(p.name)), key=lambda p: p.name)


def create(outdir: Path, name: str, model_cfg: ModelConfig, cfg: TrainConfig, extra: dict) -> Path:
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    ids = [int(_RUN.match(p.name).group(1)) for p in runs_in(outdir)]
    nxt = max(ids, default=-1) + 1
    while True:
        run = outdir / f"{nxt:05d}-{name}"
        try:
            run.mkdir()
            break
        except FileExistsError:
            nxt += 1
    try:
        write_config(run, model_cfg, cfg, extra)
    except BaseException:  # e.g. a full disk: no run dir without a config is left to trip later runs
        shutil.rmtree(run, ignore_errors=True)
        raise
    return run


def restart(run: Path, model_cfg: ModelConfig, cfg: TrainConfig, extra: dict) -> Path:
    """Start a run over in its own dir (it stopped before its first checkpoint): new config,
    half-written checkpoints removed."""
    from .checkpoint import clean_partial

    clean_partial(run)
    write_config(run, model_cfg, cfg, extra)
    return run


def write_config(run: Path, model_cfg: ModelConfig, cfg: TrainConfig, extra: dict) -> None:
    _write(run, {"artgan_config_version": CONFIG_VERSION, "model": model_cfg.to_dict(), "train": cfg.to_dict(), **extra})


def update_train(run: Path, changes: dict) -> None:
    """Replace some of config.json's training settings (what a resume reads), the rest as written."""
    data = json.loads((run / "config.json").read_text())
    data["train"].update(changes)
    _write(run, data)


def _write(run: Path, data: dict) -> None:
    tmp = run / ".config.json.tmp"
    try:
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(run / "config.json")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_config(run: Path) -> tuple[ModelConfig, TrainConfig, dict]:
    try:
        data = json.loads((Path(run) / "config.json").read_text())
        return ModelConfig.from_dict(data["model"]), TrainConfig.from_dict(data["train"]), data
    except FileNotFoundError:
        raise UserError(f"{run} is not a run dir (no config.json)") from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:  # ValueError: bad JSON or not text
        raise UserError(f"{run}/config.json is malformed ({str(e)[:160]}); start a new run") from None


def newest_run(outdir: Path, name: str) -> Path | None:
    matches = [p for p in runs_in(outdir) if _RUN.match(p.name).group(2) == name]
    return matches[-1] if matches else None


class RunLock:
    """An exclusive lock on a run dir while one train.py trains it, so a second one (a command
    run twice, two terminals) cannot interleave its checkpoints with the first's. An flock: the
    kernel releases it when the process ends, even by kill -9, so a crash never leaves a stale
    lock. Where the filesystem has no locks (or no fcntl), runs are not locked."""

    def __init__(self, run: Path):
        self.fd: int | None = None
        try:
            import fcntl
        except ImportError:
            return
        fd = os.open(Path(run) / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise UserError(f"{run} is being trained by another train.py ({holder}); wait for it to end, "
                            "or start a separate run with another --name") from None
        except OSError:
            os.close(fd)
            return
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()
