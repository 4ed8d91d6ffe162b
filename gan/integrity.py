"""Checksum manifests: `checksums.json` (sha256 per file) written last into every checkpoint
and export, verified before anything is loaded from them, so a damaged or modified file is
found instead of silently giving wrong weights. Folders written before manifests existed have
none and load as before."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

MANIFEST = "checksums.json"


def write_atomic(path: str | os.PathLike, write) -> Path:
    """`write(tmp_path)` then rename onto `path`: a crash or a full disk never leaves a truncated
    file under the final name, and the partial one is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(folder: str | os.PathLike) -> Path:
    """Hash every file under `folder` (a nested folder's own manifest included)."""
    folder = Path(folder)
    sums = {p.relative_to(folder).as_posix(): sha256_file(p)
            for p in sorted(folder.rglob("*")) if p.is_file() and p.relative_to(folder).as_posix() != MANIFEST}
    path = folder / MANIFEST
    path.write_text(json.dumps({"algorithm": "sha256", "files": sums}, indent=1))
    return path


def verify(folder: str | os.PathLike, only: tuple[str, ...] | None = None) -> str | None:
    """None when the folder matches its manifest (or has none); else what is wrong, e.g.
    'model.safetensors does not match its checksum'. `only`: check just these files."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.exists():
        return None
    try:
        sums = json.loads(path.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{MANIFEST} is unreadable"
    for rel, expected in sums.items():
        if only is not None and rel not in only:
            continue
        p = folder / rel
        if not p.is_file():
            return f"{rel} is missing"
        if sha256_file(p) != expected:
            return f"{rel} does not match its checksum"
    return None
