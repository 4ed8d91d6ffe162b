"""Fine-tuning toward a style: start from a trained model (`--from`, with FreezeD) and/or pull
G toward style images with the VGG Gram loss (`--style-image`).

The base model is read from safetensors only: a run dir or checkpoint dir gives G, D and G_ema
(G and D from the checkpoint's model files, G_ema from its export), an export or Hub id gives G
and G_ema (D then starts fresh, with a warning).
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import ModelConfig
from ..errors import UserError
from ..style import read_style_images


@dataclass
class BaseModel:
    source: str  # what the user passed to --from
    mcfg: ModelConfig
    train: dict  # the base run's TrainConfig as a dict ({} when unknown)
    G: dict  # state dicts
    G_ema: dict
    D: dict | None  # None: an export without a discriminator


def load_base(spec: str) -> BaseModel:
    from safetensors.torch import load_file

    from ..export import CONFIG, WEIGHTS, resolve_model
    from ..integrity import verify
    from . import checkpoint

    folder = resolve_model(spec, flag="--from")  # the export folder (G_ema + config.json)
    ckpt = folder.parent if (folder.parent / checkpoint.STATE).exists() else None  # G and D live there
    problem = verify(folder) or (verify(ckpt, only=("model.safetensors", "model_1.safetensors")) if ckpt else None)
    if problem:
        raise UserError(f"--from {spec}: {problem} (damaged or modified); start from another checkpoint")
    try:
        meta = json.loads((folder / CONFIG).read_text())
        mcfg = ModelConfig.from_dict(meta["model"])
        g_ema = load_file(str(folder / WEIGHTS))
        G = load_file(str(ckpt / "model.safetensors")) if ckpt and (ckpt / "model.safetensors").exists() else g_ema
        D = load_file(str(ckpt / "model_1.safetensors")) if ckpt and (ckpt / "model_1.safetensors").exists() else None
    except UserError:
        raise
    except Exception as e:  # malformed JSON, SafetensorError, missing keys
        first = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"--from {spec}: cannot read the model ({first})") from None
    return BaseModel(spec, mcfg, dict(meta.get("train") or {}), G, g_ema, D)


def apply_base(base: BaseModel, G: torch.nn.Module, D: torch.nn.Module, G_ema: torch.nn.Module) -> None:
    """Load the base weights into freshly built models (strict: same architecture)."""
    try:
        G.load_state_dict(base.G, strict=True)
        G_ema.load_state_dict(base.G_ema, strict=True)
        if base.D is not None:
            D.load_state_dict(base.D, strict=True)
    except RuntimeError as e:
        raise UserError(f"--from {base.source}: the weights do not fit the model ({str(e).splitlines()[0][:200]})") from None
    if base.D is None:
        print(f"warning: --from {base.source} has no discriminator (an export): D starts from scratch; "
              "a run dir or checkpoint dir gives a better start", file=sys.stderr)


def check_fit(base: BaseModel, explicit_model: dict, dataset, fixed_class: str | None, cond: bool) -> int:
    """Mismatches between the base model and the store or flags are user errors that say what
    differs. Returns the fixed class index for an unlabelled store (-1: use the store's labels)."""
    m = base.mcfg
    for key, value in explicit_model.items():
        name = key[6:]
        if getattr(m, name) != value:
            raise UserError(f"--from {base.source}: the model has {name} {getattr(m, name)}, --{name.replace('_', '-')} "
                            f"{value} was given; fine-tuning keeps the architecture (drop the flag)")
    if dataset.resolution != m.resolution:
        raise UserError(f"--from {base.source}: the model makes {m.resolution}px images but the store {dataset.root} "
                        f"is {dataset.resolution}px; prepare it with --resolution {m.resolution}")
    if not m.c_dim:
        if cond or fixed_class is not None:
            raise UserError(f"--from {base.source}: the model is unconditional; drop --cond/--class")
        return -1
    names = list(m.class_names)
    if fixed_class is not None:
        if fixed_class not in names:
            raise UserError(f"--class {fixed_class!r}: the model's classes are {', '.join(names)}")
        return names.index(fixed_class)
    if dataset.num_classes == 0:
        raise UserError(f"--from {base.source}: the model is conditional on {', '.join(names)} but the store has no "
                        "labels; pass --class NAME to fine-tune every image as that class")
    if list(dataset.class_names) != names:
        raise UserError(f"--from {base.source}: the model's classes ({', '.join(names)}) differ from the store's "
                        f"({', '.join(dataset.class_names)}); pass --class NAME to treat every image as one class")
    return -1


def discriminator_depth(mcfg: ModelConfig) -> int:
    """Blocks D has between its input and its head (DCGAN and StyleGAN alike: one per halving)."""
    return int(math.log2(mcfg.resolution)) - 2


def freeze_blocks(D: torch.nn.Module, k: int) -> None:
    """FreezeD (Mo et al. 2020): the first k blocks (the input side) keep their weights."""
    for block in D.input_blocks()[:k]:
        block.requires_grad_(False)


def save_style_images(images: list, run_dir: Path) -> None:
    """Copies in the run dir, so a resume does not depend on the original files."""
    folder = Path(run_dir) / "style"
    folder.mkdir(exist_ok=True)
    for i, im in enumerate(images):
        im.save(folder / f"style{i}.png")


def run_style_images(run_dir: Path) -> list:
    return read_style_images([str(p) for p in sorted((Path(run_dir) / "style").glob("style*.png"))])
