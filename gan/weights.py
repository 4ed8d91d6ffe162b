"""Pretrained weights fetched and cached the standard torch.hub way, loaded without
unpickling code. Offline and uncached is an error that names the file to supply."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .errors import UserError


def hub_path(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def ensure_cached(url: str, what: str, flag: str, error=UserError) -> Path:
    """Path of the cached file for `url`, downloading it if possible."""
    path = hub_path(url)
    if not path.exists():
        try:
            torch.hub.load_state_dict_from_url(url, progress=True)
        except Exception:
            raise error(f"{what} weights are not cached and cannot be downloaded: put {path.name} (from {url}) "
                        f"at {path}, or pass {flag} PATH") from None
    return path


def load_state_file(path: str | os.PathLike, what: str, flag: str, error=UserError) -> dict:
    """A state dict from .safetensors or a tensors-only torch file (weights_only=True)."""
    p = Path(path)
    if not p.is_file():
        raise error(f"{flag} {path}: no such file")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(p))
        return torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:
        raise error(f"{flag} {path}: not a readable {what} state dict ({type(e).__name__})") from None
