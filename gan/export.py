"""Save and load a generator as `model.safetensors` + `config.json` (+ README model card).

Loading never unpickles: weights come from safetensors only, config from JSON.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .config import CONFIG_VERSION, ModelConfig
from .errors import UserError
from .models import build_generator

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def save_generator(G: torch.nn.Module, cfg: ModelConfig, out: str | os.PathLike, extra: dict | None = None) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in G.state_dict().items()}
    save_file(state, str(out / WEIGHTS), metadata={"format": "pt", "artgan_config_version": str(CONFIG_VERSION)})
    meta = {"artgan_config_version": CONFIG_VERSION, "model": cfg.to_dict(), **(extra or {})}
    (out / CONFIG).write_text(json.dumps(meta, indent=2))
    return out


def load_generator(folder: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, ModelConfig, dict]:
    folder = Path(folder)
    try:
        meta = json.loads((folder / CONFIG).read_text())
    except FileNotFoundError:
        raise UserError(f"{folder} has no {CONFIG}; pass a run dir, checkpoint dir or exported model folder") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{folder / CONFIG} is malformed ({e})") from None
    version = meta.get("artgan_config_version")
    if not isinstance(version, int) or version > CONFIG_VERSION:
        raise UserError(f"{folder} was written by an incompatible artgan (config version {version!r}, "
                        f"this artgan reads <= {CONFIG_VERSION}); upgrade artgan")
    try:
        cfg = ModelConfig.from_dict(meta["model"])
        G = build_generator(cfg)
        state = load_file(str(folder / WEIGHTS), device="cpu")
        G.load_state_dict(state, strict=True)
    except UserError:
        raise
    except FileNotFoundError:
        raise UserError(f"{folder} has no {WEIGHTS}") from None
    except Exception as e:  # SafetensorError, size mismatch, missing keys, bad config fields
        first = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"cannot load the generator in {folder}: {first}") from None
    return G.to(device).eval().requires_grad_(False), cfg, meta
