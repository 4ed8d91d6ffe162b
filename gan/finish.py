"""Finishing of generated and refined images: colour matching, detail, 2x upscaling.

- colour: match the mean and covariance of the image's CIELAB colours to a reference (the
  training store or an image) with the linear Monge-Kantorovich map, the closest linear
  transport between the two Gaussians: palettes move, structure stays.
- detail: unsharp mask whose threshold leaves low-contrast differences (GAN noise, grain)
  alone and whose radius follows the image size.
- upscale2: 2x Lanczos resampling.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from .errors import UserError

STEPS = ("colour", "detail", "upscale2")
_ALIASES = {"color": "colour"}

# sRGB (D65) <-> XYZ
_M = np.array([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]])
_M_INV = np.linalg.inv(_M)
_WHITE = _M.sum(axis=1)


def parse_steps(spec: str) -> list[str]:
    steps = [_ALIASES.get(s.strip(), s.strip()) for s in spec.split(",") if s.strip()]
    bad = [s for s in steps if s not in STEPS]
    if bad or not steps:
        raise UserError(f"--finish {spec!r}: choose from {', '.join(STEPS)} (comma-separated)")
    return list(dict.fromkeys(steps))


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 or float in [0, 255] -> CIELAB (D65)."""
    c = np.asarray(rgb, np.float64) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = lin @ _M.T / _WHITE
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """CIELAB -> (..., 3) uint8, clipped to the sRGB gamut."""
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], -1)
    xyz = np.where(f > 6 / 29, f ** 3, 3 * (6 / 29) ** 2 * (f - 4 / 29)) * _WHITE
    lin = np.clip(xyz @ _M_INV.T, 0, 1)
    c = np.where(lin <= 0.0031308, lin * 12.92, 1.055 * lin ** (1 / 2.4) - 0.055)
    return np.clip(np.round(c * 255), 0, 255).astype(np.uint8)


def colour_stats(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of CIELAB colours of (..., 3) RGB pixels."""
    lab = rgb_to_lab(pixels).reshape(-1, 3)
    return lab.mean(0), np.cov(lab, rowvar=False) + np.eye(3) * 1e-6


def reference_stats(path: str | Path, flag: str = "--finish-ref",
                    max_images: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """Colour statistics of a prepared store (up to `max_images`, spread over it) or an image;
    `flag` names the option that gave `path` in an unreadable file's one-line error."""
    p = Path(path)
    if p.is_dir():
        from data_prep.store import PreparedDataset

        ds = PreparedDataset(p)
        idx = np.linspace(0, len(ds) - 1, min(max_images, len(ds))).round().astype(int)
        return colour_stats(np.asarray(ds.images[np.unique(idx)]).transpose(0, 2, 3, 1))
    from data_prep.images import read_image_arg

    return colour_stats(np.asarray(read_image_arg(p, flag, "a prepared store or readable image")))


def _sqrtm(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def match_colour(img: Image.Image, ref: tuple[np.ndarray, np.ndarray]) -> Image.Image:
    """Monge-Kantorovich linear colour transfer in CIELAB toward `ref` = (mean, cov)."""
    lab = rgb_to_lab(np.asarray(img.convert("RGB")))
    mu_s, cov_s = colour_stats(np.asarray(img.convert("RGB")))
    mu_r, cov_r = ref
    s_half = _sqrtm(cov_s)
    s_inv = np.linalg.inv(s_half)
    a = s_inv @ _sqrtm(s_half @ cov_r @ s_half) @ s_inv
    out = (lab - mu_s) @ a.T + mu_r
    return Image.fromarray(lab_to_rgb(out))


def sharpen(img: Image.Image) -> Image.Image:
    """Unsharp mask; differences under 3 levels (noise, grain) are left as they are."""
    radius = max(0.8, min(img.size) / 256 * 1.5)
    return img.filter(ImageFilter.UnsharpMask(radius=radius, percent=70, threshold=3))


def upscale2(img: Image.Image) -> Image.Image:
    return img.resize((img.width * 2, img.height * 2), Image.LANCZOS)


def finish(img: Image.Image, steps: list[str], ref: tuple | None = None) -> Image.Image:
    """Apply `steps` in the canonical order colour -> detail -> upscale2."""
    if "colour" in steps:
        if ref is None:
            raise UserError("--finish colour needs a reference: --finish-ref STORE_OR_IMAGE")
        img = match_colour(img, ref)
    if "detail" in steps:
        img = sharpen(img)
    if "upscale2" in steps:
        img = upscale2(img)
    return img
