"""Refine an image toward one or more style images (Gatys et al. 2016): optimize pixels so
VGG19 Gram matrices match the style while conv4_2 features stay close to the content.
Coarse-to-fine above 256 px: each scale starts from the upsampled result of the last."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from .style import VGGFeatures, content_loss, gram, style_loss, tv_loss

BASE_SIZE = 256


@dataclass
class RefineOptions:
    steps: int = 300  # optimizer steps at the first scale (later scales: a third, 50 <= n <= steps)
    size: int = 256  # long side of the result, pixels
    style_weight: float = 1e5
    content_weight: float = 1.0
    tv_weight: float = 1e-2
    optimizer: str = "lbfgs"  # lbfgs | adam
    init: str = "content"  # content | noise
    preserve_color: bool = False  # keep the content's colours, transfer only luminance structure
    precision: str = "no"  # VGG compute dtype: bf16 (fast; adam only) | no (float32)
    seed: int = 0  # noise init

    def __post_init__(self):
        """Refuse what cannot work, in one line naming generate.py's flag, before any work."""
        from .errors import UserError

        if self.steps < 1 or not 32 <= self.size <= 4096:
            raise UserError("--steps must be >= 1 and --size between 32 and 4096")
        for flag, v in (("--style-weight", self.style_weight), ("--content-weight", self.content_weight),
                        ("--tv-weight", self.tv_weight)):
            if not v >= 0:
                raise UserError(f"{flag} must be >= 0")
        # Measured: with bf16 features LBFGS's strong-Wolfe line search sees no decrease in the
        # rounded loss and stops at the start image; without the line search bf16's noisy
        # gradients spoil its curvature pairs and the loss grows. Adam is bf16's optimizer.
        if self.optimizer == "lbfgs" and self.precision == "bf16":
            raise UserError("--optimizer lbfgs needs float32 VGG features (its line search cannot see bf16-rounded "
                            "losses and makes no progress): use --optimizer adam for bf16, or --vgg-precision no")


def auto_precision(optimizer: str, device) -> str:
    """--vgg-precision auto: bf16 with adam where bf16 is fast on `device`; float32 with lbfgs (its
    line search needs an exact objective) and on a CPU without bf16 instructions, which emulates
    bf16 many times slower (gan.precision)."""
    from .precision import bf16_fast

    return "bf16" if optimizer == "adam" and bf16_fast(device)[0] else "no"


def blend_weights(spec: str | None, n: int) -> list[float]:
    """--style-blend "0.7,0.3" for `n` style images as weights summing to 1 (None: equal)."""
    from .errors import UserError

    if not spec:
        return [1.0 / n] * n
    try:
        blend = [float(x) for x in spec.split(",")]
    except ValueError:
        raise UserError(f"--style-blend {spec!r}: comma-separated numbers, one per --style") from None
    if len(blend) != n or any(not b >= 0 for b in blend) or not 0 < sum(blend) < float("inf"):
        raise UserError(f"--style-blend needs {n} non-negative weights, one per --style")
    return [b / sum(blend) for b in blend]


def to_tensor(img: Image.Image, long_side: int) -> torch.Tensor:
    w, h = img.size
    s = long_side / max(w, h)
    img = img.convert("RGB").resize((max(8, round(w * s)), max(8, round(h * s))), Image.LANCZOS)
    return torch.from_numpy(np.asarray(img, np.float32) / 255.0).permute(2, 0, 1)[None].contiguous()


def to_image(x: torch.Tensor) -> Image.Image:
    arr = (x[0].detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(arr)


def scales(size: int) -> list[int]:
    out = [size]
    while out[-1] > BASE_SIZE:
        out.append(max(BASE_SIZE, out[-1] // 2))
    return out[::-1]


class _Objective:
    def __init__(self, vgg: VGGFeatures, content: torch.Tensor, styles: list[torch.Tensor], blend: list[float],
                 opts: RefineOptions):
        self.opts = opts
        # An explicit dtype for VGG's weights and activations instead of autocast: the same
        # casts on every device (CUDA and CPU autocast cast different op lists, and a bf16
        # activation meeting a float32 gradient crashed Adam on CUDA). Losses stay float32.
        self.vgg = vgg.with_dtype(torch.bfloat16 if opts.precision == "bf16" else torch.float32)
        with torch.no_grad():
            self.content_target = self.features(content)["conv4_2"]
            grams = None
            for s, wgt in zip(styles, blend):
                g = {k: gram(v) * wgt for k, v in self.features(s).items() if k != "conv4_2"}
                grams = g if grams is None else {k: grams[k] + g[k] for k in g}
        self.style_targets = grams

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: v.float() for k, v in self.vgg(x).items()}

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        # The loss is always that of the image in range: pixels outside [0, 1] cannot lower it,
        # so what an optimizer reports is what gets saved.
        x = x.clamp(0, 1)
        feats = self.features(x)
        ls = style_loss(feats, self.style_targets)
        lc = content_loss(feats, self.content_target)
        lt = tv_loss(x)
        o = self.opts
        total = o.style_weight * ls + o.content_weight * lc + o.tv_weight * lt
        return total, {"style": float(ls.detach()), "content": float(lc.detach()), "tv": float(lt.detach()),
                       "total": float(total.detach())}


def refine(content: Image.Image, styles: list[Image.Image], blend: list[float], vgg: VGGFeatures,
           opts: RefineOptions, device="cpu", progress: bool = True, on_step=None) -> tuple[Image.Image, dict]:
    """Returns (refined image, report with per-scale loss histories and start/end losses).
    `on_step(done, total, losses)` is called after every optimizer evaluation, over all scales
    (the studio's progress bar); an exception it raises (a cancel) ends the refine."""
    vgg = vgg.to(device)
    result = None
    report: dict = {"scales": [], "history": []}
    gen = torch.Generator().manual_seed(opts.seed)
    plan = scales(opts.size)
    budget = [opts.steps if k == 0 else max(opts.steps // 3, min(opts.steps, 50)) for k in range(len(plan))]
    done = 0

    def step_done(parts):
        nonlocal done
        done += 1
        bar.update(1)
        bar.set_postfix(style=f"{parts['style']:.3g}", content=f"{parts['content']:.3g}", refresh=False)
        if on_step is not None:
            on_step(done, sum(budget), parts)

    for k, size in enumerate(plan):
        c = to_tensor(content, size).to(device)
        s = [to_tensor(im, size).to(device) for im in styles]
        obj = _Objective(vgg, c, s, blend, opts)
        if result is None:
            x0 = c.clone().contiguous() if opts.init == "content" else torch.rand(c.shape, generator=gen).to(device)
        else:
            x0 = F.interpolate(result, size=c.shape[-2:], mode="bicubic", align_corners=False).clamp(0, 1).contiguous()
        x = x0.requires_grad_(True)
        # Later scales only polish: a third of the steps, at least 50 but never more than asked for.
        steps = budget[k]
        with torch.no_grad():
            _, start = obj(x)
        hist: list[dict] = []
        bar = tqdm(total=steps, desc=f"refine {c.shape[-1]}x{c.shape[-2]}", disable=not progress, dynamic_ncols=True)
        if opts.optimizer == "adam":
            opt = torch.optim.Adam([x], lr=0.02)
            for _ in range(steps):
                opt.zero_grad()
                loss, parts = obj(x)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    x.clamp_(0, 1)
                hist.append(parts)
                step_done(parts)
        else:
            # Zero tolerances: run the requested number of evaluations; with bf16 features a step
            # can leave the loss bit-identical, which the default tolerances read as convergence.
            opt = torch.optim.LBFGS([x], lr=1.0, max_iter=steps, max_eval=steps, history_size=50,
                                    tolerance_grad=0.0, tolerance_change=0.0, line_search_fn="strong_wolfe")

            def closure():
                opt.zero_grad()
                loss, parts = obj(x)
                loss.backward()
                if len(hist) < steps:
                    hist.append(parts)
                    step_done(parts)
                return loss

            opt.step(closure)
            with torch.no_grad():
                x.clamp_(0, 1)
        bar.close()
        result = x.detach()
        if k == len(plan) - 1:
            # The final report is measured on the image exactly as saved (8-bit, colours kept).
            out = to_image(result)
            if opts.preserve_color:
                out = _keep_colors(out, content.convert("RGB").resize(out.size, Image.LANCZOS))
            final = to_tensor(out, max(out.size)).to(device)  # same size: no resampling
        else:
            final = result
        with torch.no_grad():
            _, end = obj(final)
        report["scales"].append({"size": list(c.shape[-2:]), "steps": len(hist), "start": start, "end": end})
        report["history"].append(hist)
    report["start"] = report["scales"][0]["start"]
    report["end"] = report["scales"][-1]["end"]
    return out, report


def losses_of(image: Image.Image, content: Image.Image, styles: list[Image.Image], blend: list[float],
              vgg: VGGFeatures, opts: RefineOptions, device="cpu") -> dict:
    """The refine objective's parts for `image` (e.g. a saved result) at its own size."""
    vgg = vgg.to(device)
    size = max(image.size)
    obj = _Objective(vgg, to_tensor(content, size).to(device), [to_tensor(s, size).to(device) for s in styles],
                     blend, opts)
    x = to_tensor(image, size).to(device)
    with torch.no_grad():
        return obj(x)[1]


def _keep_colors(result: Image.Image, content: Image.Image) -> Image.Image:
    """Luminance from the result, chroma from the content (Gatys et al. 2016b)."""
    y, _, _ = result.convert("YCbCr").split()
    _, cb, cr = content.convert("YCbCr").split()
    return Image.merge("YCbCr", (y, cb, cr)).convert("RGB")


def strip(images: list[Image.Image], height: int) -> Image.Image:
    tiles = [im.convert("RGB").resize((max(1, round(im.width * height / im.height)), height), Image.LANCZOS)
             for im in images]
    gap = max(2, height // 64)
    out = Image.new("RGB", (sum(t.width for t in tiles) + gap * (len(tiles) - 1), height), (255, 255, 255))
    x = 0
    for t in tiles:
        out.paste(t, (x, 0))
        x += t.width + gap
    return out
