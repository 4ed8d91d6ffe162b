"""Where a run keeps its checkpoints, and which of them count: the on-disk layout that training
writes (gan.training.checkpoint) and that every reader of a run (gan.export, the studio, bench/)
finds models by. A leaf module: no torch, no accelerate, so readers need not reach up into training.

run/checkpoints/kimg000120/ (kimg000120.064/ off whole kimg): state.json (summary, metric),
export/ (the generator for generate.py), checksums.json (written last), and training's own files.
A checkpoint is complete when its state.json reads and its export/ exists; partial ones are named
.tmp-kimg... until they are renamed into place.
"""
from __future__ import annotations

import json
from pathlib import Path

from .integrity import verify

STATE = "state.json"  # a checkpoint's summary: cur_nimg, kimg, metric
PREFIX = "kimg"


def name_for(nimg: int) -> str:
    """kimg000120 for a whole kimg, kimg000120.064 otherwise: a function of the image count
    alone, so an interrupted and resumed run names its checkpoints as an unbroken one does."""
    whole, frac = divmod(int(nimg), 1000)
    return f"{PREFIX}{whole:06d}" + (f".{frac:03d}" if frac else "")


def read_state(ckpt: Path) -> dict | None:
    try:
        st = json.loads((Path(ckpt) / STATE).read_text())
    except (OSError, ValueError):  # ValueError: not JSON, not even text
        return None
    return st if isinstance(st, dict) and isinstance(st.get("cur_nimg"), int) else None


def _complete_state(ckpt: Path) -> dict | None:
    """The state of a complete checkpoint dir (its state.json reads and its export/ exists), else None."""
    st = read_state(ckpt)
    return st if st is not None and (Path(ckpt) / "export").is_dir() else None


def is_complete(ckpt: Path) -> bool:
    """`ckpt` is a complete checkpoint dir (a reader may point at one instead of at its run)."""
    return _complete_state(ckpt) is not None


def complete_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(nimg, path) of complete checkpoints, oldest first; partial (.tmp-) ones ignored."""
    root = Path(run_dir) / "checkpoints"
    out = []
    if root.is_dir():
        for p in root.iterdir():
            if p.is_dir() and p.name.startswith(PREFIX):
                st = _complete_state(p)
                if st is not None:
                    out.append((int(st["cur_nimg"]), p))
    return sorted(out)


def run_dir_of(path: Path) -> Path:
    """`path`, or the run itself when `path` is a run's checkpoints/ folder (where users point)."""
    path = Path(path)
    return path.parent if path.name == "checkpoints" and (path.parent / "config.json").exists() else path


def latest(run_dir: Path) -> Path | None:
    ck = complete_checkpoints(run_dir)
    return ck[-1][1] if ck else None


def broken_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint dirs (not .tmp-) without a readable state.json or export: damaged after the save."""
    root = Path(run_dir) / "checkpoints"
    complete = {p for _, p in complete_checkpoints(run_dir)}
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p not in complete) \
        if root.is_dir() else []


def newest_good(run_dir: Path, exclude: Path | None = None, warn=None) -> Path | None:
    """The newest complete checkpoint whose files match its checksum manifest; each damaged one
    passed over is reported through `warn` with the file that failed."""
    if warn is not None:
        for path in broken_checkpoints(run_dir):
            warn(f"warning: skipping checkpoint {path}: {STATE} is unreadable or export/ is missing")
    for _, path in reversed(complete_checkpoints(run_dir)):
        if exclude is not None and Path(path).resolve() == Path(exclude).resolve():
            continue
        problem = verify(path)
        if problem is None:
            return path
        if warn is not None:
            warn(f"warning: skipping checkpoint {path}: {problem}")
    return None
