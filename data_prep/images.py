"""Safe image decoding: full load, EXIF orientation, every mode normalized to RGB.

Failures raise `Rejected(reason, detail)`; the pipeline records them and goes on.
Pillow's decompression-bomb limit is kept and its warning is promoted to a rejection,
so an image is never half-decoded or silently truncated.
"""
from __future__ import annotations

import io
import os
import struct
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Reasons that count as a failed input (as opposed to a deliberate skip).
FAILURE_REASONS = {"corrupt", "truncated", "not_an_image", "empty_file", "decompression_bomb", "unreadable"}


class Rejected(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def open_image(src, draft_to: tuple[int, str] | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """Open and fully decode `src` (path or bytes); returns (image, size in the file).
    `draft_to`: (side needed, 'crop'|'pad') lets JPEG decode at a reduced DCT scale
    that still covers the target, which is several times faster for large photos."""
    try:
        if isinstance(src, (bytes, bytearray)):
            if not src:
                raise Rejected("empty_file", "0 bytes")
            fp = io.BytesIO(src)
        else:
            if os.path.getsize(src) == 0:
                raise Rejected("empty_file", "0 bytes")
            fp = open(src, "rb")
    except Rejected:
        raise
    except OSError as e:
        raise Rejected("unreadable", e.strerror or str(e)) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                img = Image.open(fp)
                img.seek(0)  # first frame of animations
                size = img.size
                if draft_to is not None and img.format == "JPEG":
                    need, fit = draft_to
                    w, h = img.size
                    side = min(w, h) if fit == "crop" else max(w, h)
                    if side > need:
                        scale = need / side
                        img.draft("RGB", (max(1, int(w * scale + 0.999)), max(1, int(h * scale + 0.999))))
                img.load()
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
                raise Rejected("decompression_bomb", str(e).split(".")[0]) from None
            except UnidentifiedImageError:
                raise Rejected("not_an_image", "unrecognized format") from None
            except OSError as e:
                msg = str(e)
                # "broken data stream" is a decoder error inside the data (flipped bits), not an early end.
                if "truncated" in msg:
                    raise Rejected("truncated", msg) from None
                raise Rejected("corrupt", msg) from None
            except (SyntaxError, ValueError, TypeError, IndexError, EOFError, struct.error) as e:
                raise Rejected("corrupt", f"{type(e).__name__}: {e}") from None
        return img, size
    finally:
        fp.close()


WHITE = (255, 255, 255)


def read_rgb(path) -> Image.Image:
    """One image file as 8-bit RGB in memory, read the way data_prep reads a collection (`to_rgb`:
    EXIF orientation applied, 16-bit and float images scaled rather than clipped to white,
    transparency on white); for style, content and reference images. Raises what Pillow raises
    (FileNotFoundError, OSError, ValueError, Image.DecompressionBombError)."""
    with Image.open(path) as im:
        im.load()
        out = to_rgb(im, WHITE)
        return out.copy() if out is im else out  # closing `im` frees its pixels


def read_image_arg(path, flag: str, expected: str = "a readable image") -> Image.Image:
    """`read_rgb` for an image a user named with `flag`: a missing or unreadable file is a
    `UserError`, one line naming the flag and the file."""
    from .errors import UserError

    try:
        return read_rgb(path)
    except FileNotFoundError:
        raise UserError(f"{flag} {path}: no such file") from None
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise UserError(f"{flag} {path}: not {expected} ({str(e).splitlines()[0][:120]})") from None


def to_rgb(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """EXIF-transpose and normalize any Pillow mode to 8-bit RGB."""
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # malformed EXIF must not drop an otherwise good image
        pass
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if mode == "F":
            lo, hi = float(arr.min()), float(arr.max())
            arr = (arr - lo) / (hi - lo or 1.0) * 255.0
        elif arr.max() > 255:
            arr = arr / 257.0  # 16-bit range onto 8-bit
        arr = np.clip(arr + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    elif mode in ("LA", "PA", "La", "RGBa"):
        img = img.convert("RGBA")
    elif mode == "L" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        canvas = Image.new("RGB", img.size, background)
        canvas.paste(img, mask=img.getchannel("A"))
        return canvas
    return img.convert("RGB")
