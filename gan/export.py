"""Save and load a generator as `model.safetensors` + `config.json` (+ README model card).

Loading never unpickles: weights come from safetensors only, config from JSON.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .config import CONFIG_VERSION, ModelConfig
from .errors import UserError
from .integrity import verify, write_manifest
from .layout import STATE, latest, newest_good, run_dir_of
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
    write_manifest(out)
    return out


def load_generator(folder: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, ModelConfig, dict]:
    folder = Path(folder)
    damaged = verify(folder, only=(WEIGHTS, CONFIG))
    if damaged:
        raise UserError(f"{folder}: {damaged} (damaged or modified); {_good_alternative(folder)}")
    try:
        meta = json.loads((folder / CONFIG).read_text())
    except FileNotFoundError:
        raise UserError(f"{folder} has no {CONFIG}; pass a run dir, checkpoint dir or exported model folder") from None
    except ValueError as e:  # not JSON, or not even text
        raise UserError(f"{folder / CONFIG} is malformed ({str(e)[:160]})") from None
    if not isinstance(meta, dict):
        raise UserError(f"{folder / CONFIG} is malformed (not a JSON object)")
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


def _good_alternative(folder: Path) -> str:
    """Name a checkpoint of the same run that verifies, when the folder is a checkpoint's export."""
    ckpt = folder.parent
    if (ckpt / STATE).exists() and ckpt.parent.name == "checkpoints":
        good = newest_good(ckpt.parent.parent, exclude=ckpt)
        if good is not None:
            return f"use --model {good} (the newest checkpoint that verifies)"
        return "no other checkpoint of this run verifies"
    return "export the model again from its run"


def resolve_model(spec: str, flag: str = "--model") -> Path:
    """A run dir (newest checkpoint's G_ema), a checkpoint dir, an exported folder, or a Hub id."""
    p = Path(spec)
    if p.exists():
        if (p / WEIGHTS).exists() and (p / CONFIG).exists():
            return p
        if (p / STATE).exists():
            return p / "export"
        p = run_dir_of(p)
        if (p / "checkpoints").is_dir() or (p / CONFIG).exists():
            ck = latest(p)
            if ck is None:
                raise UserError(f"{flag} {spec}: the run has no complete checkpoint yet")
            return ck / "export"
        pickles = [f.name for f in p.glob("*") if f.suffix in (".pt", ".pth", ".pkl", ".bin")] if p.is_dir() else []
        if pickles:
            raise UserError(f"{flag} {spec}: only safetensors models are loaded (found {', '.join(pickles)}); "
                            "export a model with `generate.py export`")
        raise UserError(f"{flag} {spec}: not a run dir, checkpoint dir or exported model "
                        f"(needs {WEIGHTS} + {CONFIG})")
    # A Hub id is owner/name; when `owner` is a local folder (runs/00009-x) the user meant a path.
    if spec.count("/") == 1 and not spec.startswith((".", "/", "~")) and not p.parent.is_dir():
        return _download(spec, flag)
    raise UserError(f"{flag} {spec}: no such file or directory")


def _download(repo_id: str, flag: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import GatedRepoError, RepositoryNotFoundError

    try:
        return Path(snapshot_download(repo_id, allow_patterns=[WEIGHTS, CONFIG, "README.md"]))
    except (RepositoryNotFoundError, GatedRepoError) as e:
        raise UserError(f"{flag} {repo_id}: no such local path, and the Hub has no model by that id you can "
                        f"read ({type(e).__name__}); check the id, or log in with `hf auth login` for a "
                        "private model") from None
    except Exception as e:  # offline, DNS, timeouts, HF_HUB_OFFLINE with nothing cached
        raise UserError(f"{flag} {repo_id}: no such local path, and the Hub could not be reached "
                        f"({type(e).__name__}); check your network, or pass a local model folder") from None


MODEL_CARD = """---
library_name: artgan
tags: [gan, art, {arch}]
---
# {name}

A {arch} generator trained with [artgan](https://pypi.org/project/artgan/).

| | |
|---|---|
| resolution | {resolution}x{resolution} |
| architecture | {arch} (z_dim {z_dim}{cond}) |
| trained | {kimg} kimg |
| data | {data} |
| metrics | {metrics} |

![samples](samples.png)

```bash
python generate.py sample --model {hub_or_path} --seeds 0-15 --grid --out out/
```
Files: `model.safetensors` (G_ema weights), `config.json` (everything needed to rebuild it).
"""


# Dataset fields that describe the data without revealing the trainer's machine.
_CARD_DATA = {"kind", "name", "split", "revision", "label_column", "where", "count", "seed", "styles",
              "labels_from_folders"}


def _public_data(data: dict) -> str:
    """Dataset description for a shared model card: no local paths (a Hub dataset id stays)."""
    out = []
    for k, v in data.items():
        if k not in _CARD_DATA or v in (None, "", [], {}, False):
            continue
        if k == "name" and (str(v).startswith(("/", ".", "~")) or Path(str(v)).exists()):
            v = "a local dataset"
        out.append(f"{k}={v}")
    return ", ".join(out) or "unknown"


def write_model_card(folder: Path, meta: dict, name: str, hub_or_path: str) -> None:
    m = meta["model"]
    data_desc = _public_data(meta.get("dataset") or {})
    metrics = meta.get("metrics") or {}
    card = MODEL_CARD.format(
        name=name, arch=m["arch"], resolution=m["resolution"], z_dim=m["z_dim"],
        cond=f", {m['c_dim']} classes: {', '.join(m['class_names'])}" if m.get("c_dim") else ", unconditional",
        kimg=meta.get("kimg", "?"), data=data_desc,
        metrics=", ".join(f"{k} {v:.4g}" for k, v in metrics.items()) or "none recorded", hub_or_path=hub_or_path)
    (folder / "README.md").write_text(card)


def export_model(src: Path, out: Path, name: str) -> Path:
    """A shareable folder at `out` (new or empty): the model's weights and config, a 4x4 grid of
    samples, a model card titled `name`, checksums; files with the user's umask modes. Built
    in a temporary folder beside `out` and renamed into place: complete or absent."""
    from .sampling import Sampler, grid_image, latents_for_seeds, save_png

    G, cfg, meta = load_generator(src)  # validates before anything is written
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out} exists and is not an empty directory; pick a new one")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent if out.parent.exists() else None))
    try:
        shutil.copy2(src / WEIGHTS, tmp / WEIGHTS)
        shutil.copy2(src / CONFIG, tmp / CONFIG)
        sampler = Sampler(G, cfg)
        seeds = list(range(16))
        if cfg.c_dim:
            imgs = torch.cat([sampler.from_z(latents_for_seeds(seeds[:4], cfg.z_dim), k) for k in range(cfg.c_dim)])
        else:
            imgs = sampler.from_z(latents_for_seeds(seeds, cfg.z_dim), None)
        save_png(grid_image(imgs, 4), tmp / "samples.png")
        write_model_card(tmp, meta, name, name)
        write_manifest(tmp)
        _shareable_modes(tmp)
        rename_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def rename_into_place(tmp: Path, out: Path) -> None:
    """A folder built under a temporary name becomes `out` (absent or empty) in one rename, with
    the mode any new folder gets under the user's umask (mkdtemp makes 0700)."""
    os.chmod(tmp, 0o777 & ~_umask())
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.rmdir()
    os.rename(tmp, out)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _shareable_modes(folder: Path) -> None:
    """Copies keep their source's mode: give an export's files the modes any new file gets under
    the user's umask, since it is meant to be shared."""
    umask = _umask()
    for f in folder.iterdir():
        os.chmod(f, 0o666 & ~umask)


def push_to_hub(folder: Path, repo_id: str, private: bool = False) -> None:
    """Upload an exported folder to a Hub model repo (created if missing); a failure is one
    line that says what to do, and the local export stays complete."""
    try:
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=str(folder))
    except Exception as e:
        raise UserError(f"push to {repo_id} failed ({type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]}); "
                        f"the export in {folder} is complete: {_push_hint(e)}") from None


def _push_hint(e: Exception) -> str:
    """What to do after a failed upload: log in only when the Hub refused us, else the network."""
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

    status = getattr(getattr(e, "response", None), "status_code", None)
    if isinstance(e, LocalTokenNotFoundError) or (isinstance(e, HfHubHTTPError) and status in (401, 403)):
        return "log in with `hf auth login` (a token with write access) and retry"
    if isinstance(e, HfHubHTTPError) and status is not None:
        return f"the Hub answered HTTP {status}; check the repo id and retry"
    return "the Hub could not be reached; check your network (and that HF_HUB_OFFLINE is unset) and retry"
