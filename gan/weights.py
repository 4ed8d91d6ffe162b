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


def available(url: str) -> bool:
    """True when the file for `url` is cached or can be downloaded now; prints nothing."""
    import contextlib
    import io

    if hub_path(url).exists():
        return True
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            torch.hub.load_state_dict_from_url(url, progress=False)
    except Exception:
        return False
    return hub_path(url).exists()


# torchvision's VGG19_Weights / VGG16_Weights.IMAGENET1K_V1.url (a test keeps them equal), so
# neither the check below nor the style loss imports torchvision: that takes 1-2 s per process.
VGG_URLS = {"vgg19": "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
            "vgg16": "https://download.pytorch.org/models/vgg16-397923af.pth"}


def _main(argv: list[str]) -> int:
    """python -m gan.weights vgg19: exit 0 if the VGG19 ImageNet weights are (now) cached, 1 if not."""
    urls = {"vgg19": VGG_URLS["vgg19"]}
    if len(argv) != 1 or argv[0] not in urls:
        print(f"usage: python -m gan.weights {{{','.join(urls)}}}")
        return 2
    return 0 if available(urls[argv[0]]) else 1


if __name__ == "__main__":
    import sys

    sys.exit(_main(sys.argv[1:]))
