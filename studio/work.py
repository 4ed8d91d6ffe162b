"""What the studio makes, through the same gan.sampling / gan.project / gan.refine / gan.finish
calls generate.py makes, each with the generate.py command that makes the same file."""
from __future__ import annotations

import io
import shlex
import tempfile
import threading
from pathlib import Path

from PIL import Image

from gan.errors import UserError

MAX_SEEDS = 256  # per request
MAX_FRAMES = 240
MAX_STEPS = 2000


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def command(sub: str, *args, **flags) -> str:
    """`python generate.py SUB ARGS --flag value ...`, shell-quoted; None and False flags are left out,
    True is a bare flag, a list repeats the flag."""
    parts = ["python", "generate.py", sub, *map(str, args)]
    for k, v in flags.items():
        flag = "--" + k.rstrip("_").replace("_", "-")
        for one in v if isinstance(v, list) else [v]:
            if one is None or one is False:
                continue
            parts += [flag] if one is True else [flag, str(one)]
    return shlex.join(parts)


def trunc_value(text: str | None) -> float:
    try:
        t = float(text) if text not in (None, "") else 1.0
    except ValueError:
        raise UserError(f"truncation {text!r} is not a number") from None
    if not 0.0 <= t <= 1.0:
        raise UserError(f"truncation {t} must be between 0 and 1")
    return t


def _trunc_flag(t: float):
    return None if t == 1.0 else repr(t)  # repr round-trips: the command parses the same float


def seeds_value(text: str, limit: int = MAX_SEEDS) -> list[int]:
    from gan.sampling import parse_seeds

    seeds = parse_seeds(text)
    if len(seeds) > limit:
        raise UserError(f"{len(seeds)} seeds at once; ask for at most {limit}")
    return seeds


def seed_images(loaded, seeds: list[int], cls: str | None, trunc: float) -> list[bytes]:
    """PNG bytes of each seed, rendered as `generate.py sample` renders them (32 at a time)."""
    from gan.sampling import to_uint8

    sampler = loaded.sampler
    c = sampler.class_index(cls)
    return [png(Image.fromarray(to_uint8(img[None])[0])) for _, img in sampler.seeds(seeds, c, trunc, 32)]


def sample_command(loaded, seed: int, cls: str | None, trunc: float) -> str:
    return command("sample", model=loaded.model_arg, seeds=seed, class_=cls, trunc=_trunc_flag(trunc), out="out/")


def mix(loaded, rows: str, cols: str, layers: str, cls: str | None, trunc: float) -> tuple[bytes, str]:
    from gan.sampling import mixing_grid, mixing_layers

    sampler = loaded.sampler
    if not sampler.arch.style_mixing:
        raise UserError(f"style mixing is not supported for {sampler.cfg.arch} (it needs a StyleGAN model)")
    r, k = seeds_value(rows, 16), seeds_value(cols, 16)
    grid = mixing_grid(sampler, r, k, mixing_layers(layers, sampler.G.num_ws), sampler.class_index(cls), trunc)
    return png(grid), command("mix", model=loaded.model_arg, rows=rows, cols=cols, layers=layers, class_=cls,
                              trunc=_trunc_flag(trunc), out="mix.png")


def walk(loaded, seeds: list[int] | None, latents: list[tuple[str, dict]] | None, frames: int, fps: int,
         loop: bool, cls: str | None, trunc: float, fmt: str) -> tuple[bytes, str]:
    """A GIF (or MP4) walk through seeds, or through projected latents [(file name, latent)]."""
    import torch

    from gan.sampling import interpolation_frames, require_mp4_writer, walk_frames, write_animation

    if not 2 <= frames <= MAX_FRAMES or not 1 <= fps <= 60:
        raise UserError(f"frames must be 2-{MAX_FRAMES} and fps 1-60")
    n = len(seeds if seeds is not None else latents)
    if n < 2 and not loop:
        raise UserError("a walk needs at least two waypoints")
    if fmt == "mp4":
        require_mp4_writer()
    sampler = loaded.sampler
    if seeds is not None:
        imgs = interpolation_frames(sampler, seeds, frames, loop, sampler.class_index(cls), trunc)
        cmd = command("interpolate", model=loaded.model_arg, seeds=",".join(map(str, seeds)), class_=cls,
                      trunc=_trunc_flag(trunc), frames=frames, fps=fps, loop=loop, out=f"walk.{fmt}")
    else:
        classes = {lat["c"] for _, lat in latents}
        if len(classes) > 1:
            raise UserError("these projections were made for different classes; walk one class at a time")
        keys = torch.cat([lat["latent"] for _, lat in latents])
        imgs = walk_frames(sampler, keys, frames, loop, classes.pop())
        cmd = command("interpolate", model=loaded.model_arg, latent=[name for name, _ in latents], frames=frames,
                      fps=fps, loop=loop, out=f"walk.{fmt}")
    with tempfile.TemporaryDirectory(prefix="artgan-studio-") as tmp:
        out = write_animation(imgs, Path(tmp) / f"walk.{fmt}", fps)
        return out.read_bytes(), cmd


class VGG:
    """VGG19 features, loaded on first use and shared by every job (one loads at a time)."""

    def __init__(self, weights: str | None):
        self.weights = weights
        self._vgg = None
        self._lock = threading.Lock()

    def get(self):
        from gan.style import VGGFeatures, load_vgg_state

        with self._lock:
            if self._vgg is None:
                self._vgg = VGGFeatures(load_vgg_state(self.weights, "vgg19"), "vgg19")
            return self._vgg

    def flag(self) -> str | None:
        return self.weights


def project_job(loaded, vgg: VGG, target: Image.Image, target_name: str, steps: int, cls: str | None, job) -> dict:
    from gan.project import ProjectOptions, latent_bytes, project, target_tensor
    from gan.refine import strip
    from gan.sampling import to_uint8

    if not 1 <= steps <= MAX_STEPS:
        raise UserError(f"steps must be 1-{MAX_STEPS}")
    sampler = loaded.sampler
    c = sampler.class_index(cls)
    latent, img, report = project(sampler, target, vgg.get(), ProjectOptions(steps=steps), c, progress=False,
                                  on_step=job.progress)
    res = sampler.cfg.resolution
    pic = Image.fromarray(to_uint8(img)[0])
    goal = Image.fromarray(to_uint8(target_tensor(target, res))[0])
    stem = Path(target_name).stem
    return {"psnr": round(report["end"]["psnr"], 2), "distance": report["end"]["distance"],
            "command": command("project", target_name, model=loaded.model_arg, class_=cls, steps=steps,
                               vgg_weights=vgg.flag(), out="out/"),
            "_files": {f"{stem}_projected.png": png(pic), f"{stem}_strip.png": png(strip([goal, pic], max(res, 256))),
                       f"{stem}_latent.safetensors": latent_bytes(latent, sampler, cls, loaded.model_arg)},
            "_latent": {"space": latent["space"], "latent": latent["latent"], "c": c}, "name": stem}


def refine_job(loaded, vgg: VGG, content: Image.Image, content_arg: dict, styles: list[tuple[str, Image.Image]],
               weights: list[float], opts: dict, finish_steps: list[str], finish_ref, job) -> dict:
    """content_arg: {"seeds": N, "class_": .., "trunc": ..} or {"content": file name}: the command's
    content flags. finish_ref: (the --finish-ref value, colour statistics) or None."""
    from gan.finish import finish
    from gan.refine import RefineOptions, auto_precision, blend_weights, refine, strip
    from gan.style import MIN_STYLE_SIDE

    for name, im in styles:
        if min(im.size) < MIN_STYLE_SIDE:
            raise UserError(f"style image {name} is {im.size[0]}x{im.size[1]}px; style images need at least "
                            f"{MIN_STYLE_SIDE}px on the short side")
    if not 1 <= opts["steps"] <= MAX_STEPS:
        raise UserError(f"steps must be 1-{MAX_STEPS}")
    ro = RefineOptions(steps=opts["steps"], size=opts["size"], style_weight=opts["style_weight"], optimizer="adam",
                       preserve_color=opts["preserve_color"],
                       precision=auto_precision("adam", loaded.sampler.device))  # generate.py's --vgg-precision auto
    blend_spec = ",".join(f"{w:g}" for w in weights) if len(styles) > 1 else None
    blend = blend_weights(blend_spec, len(styles))
    result, report = refine(content, [im for _, im in styles], blend, vgg.get(), ro, device=loaded.sampler.device,
                            progress=False, on_step=job.progress)
    before = content.resize(result.size, Image.LANCZOS)
    prefix = f"seed{content_arg['seeds']:04d}" if "seeds" in content_arg else Path(content_arg["content"]).stem
    files = {f"{prefix}_refined.png": png(result),
             f"{prefix}_strip.png": png(strip([before, styles[0][1], result], result.height))}
    if finish_steps:
        files[f"{prefix}_finished.png"] = png(finish(result, finish_steps, finish_ref[1] if finish_ref else None))
    model = loaded.model_arg if "seeds" in content_arg else None
    cmd = command("refine", model=model, **{k: v for k, v in content_arg.items()},
                  style=[name for name, _ in styles], style_blend=blend_spec, steps=ro.steps, size=ro.size,
                  style_weight=repr(ro.style_weight), optimizer="adam", preserve_color=ro.preserve_color,
                  finish=",".join(finish_steps) or None, finish_ref=finish_ref[0] if finish_ref else None,
                  vgg_weights=vgg.flag(), out="out/")
    s0, s1 = report["start"]["style"], report["end"]["style"]
    return {"style_start": s0, "style_end": s1, "command": cmd, "_files": files, "name": prefix}


def decode_upload(data: bytes, name: str) -> Image.Image:
    """An uploaded file, read by data_prep's safe decoder (bombs, truncation, non-images refused)."""
    from data_prep.images import WHITE, Rejected, open_image, to_rgb

    try:
        img, _ = open_image(bytes(data))
        return to_rgb(img, WHITE)
    except Rejected as e:
        what = {"not_an_image": "not an image", "decompression_bomb": "too many pixels (a decompression bomb?)",
                "empty_file": "an empty file", "truncated": "a truncated image"}.get(e.reason, "a damaged image")
        raise UserError(f"{name}: {what} ({e.detail[:120]})" if e.detail else f"{name}: {what}") from None
