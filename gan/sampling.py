"""Seeds -> latents -> images. One RNG per seed, so an image depends only on
(model, seed, class, truncation), never on batch size or order."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .integrity import write_atomic


def latents_for_seeds(seeds, z_dim: int) -> torch.Tensor:
    return torch.stack([torch.randn(z_dim, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


def to_uint8(imgs: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W, 3) uint8."""
    x = (imgs.detach().float().clamp(-1, 1) + 1) * 127.5
    return x.round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def grid_cols(n: int) -> int:
    """Columns for a grid of n images: the near-square shape with no empty cell (32 -> 4x8,
    64 -> 8x8), or, when n has no such factoring (a prime), the one with the fewest empty cells."""
    if n <= 3:
        return max(n, 1)
    side = int(np.ceil(np.sqrt(n)))
    for cols in range(side, 2 * side + 1):  # never more than about 4x wider than tall
        if n % cols == 0 and n // cols <= cols:
            return cols
    return min(range(side, 2 * side + 1), key=lambda c: (-(-n // c) * c - n, c))


def grid_image(imgs: torch.Tensor, cols: int) -> Image.Image:
    arr = to_uint8(imgs)
    n, h, w, _ = arr.shape
    cols = max(1, min(cols, n))
    rows = (n + cols - 1) // cols
    canvas = np.zeros((rows * h, cols * w, 3), np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        canvas[r * h : (r + 1) * h, c * w : (c + 1) * w] = arr[i]
    return Image.fromarray(canvas)


def save_png(img: Image.Image, path: str | os.PathLike) -> Path:
    """Write atomically: a crash never leaves a truncated PNG behind."""
    return write_atomic(path, lambda tmp: img.save(tmp, format="PNG"))


def save_grid(imgs: torch.Tensor, path: str | os.PathLike, cols: int = 8) -> Image.Image:
    grid = grid_image(imgs, cols)
    save_png(grid, path)
    return grid


def require_mp4_writer() -> None:
    """MP4 needs the optional imageio-ffmpeg: say so before any work."""
    try:
        import imageio.v2 as imageio  # noqa: F401
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        from .errors import UserError

        raise UserError("MP4 needs imageio-ffmpeg: pip install 'artgan[video]' (or write a .gif)") from None


def write_animation(frames: list[np.ndarray], out: str | os.PathLike, fps: int) -> Path:
    """uint8 HWC frames to a looping .gif or an .mp4 (by `out`'s suffix), atomically: written
    under a temporary name with the same suffix (the writers choose the format by it), then renamed."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp-{os.getpid()}{out.suffix}")
    try:
        if out.suffix.lower() == ".gif":
            pics = [Image.fromarray(f) for f in frames]
            pics[0].save(tmp, save_all=True, append_images=pics[1:], duration=round(1000 / fps), loop=0)
        else:
            require_mp4_writer()
            import imageio.v2 as imageio

            imageio.mimwrite(tmp, frames, fps=fps, macro_block_size=1)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


MAX_SEED = 2 ** 32 - 1


def parse_seeds(spec: str) -> list[int]:
    """'0-63,100' -> [0..63, 100]. Ranges are inclusive; order is kept, repeats dropped."""
    from .errors import UserError

    out: list[int] = []
    if not spec or not spec.strip():
        raise UserError("--seeds is empty; use e.g. 0-63 or 1,5,9")
    for part in spec.split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        try:
            if sep:
                a, b = int(lo), int(hi)
            else:
                a = b = int(part)
        except ValueError:
            raise UserError(f"--seeds: {part!r} is not a seed or range (use e.g. 0-63,100; seeds are "
                            f"integers 0..{MAX_SEED})") from None
        if lo.strip() == "" and sep:
            raise UserError(f"--seeds: negative seed in {part!r}; seeds are integers 0..{MAX_SEED}")
        if a > b:
            raise UserError(f"--seeds: range {part!r} runs backwards; write {b}-{a}")
        if a < 0 or b > MAX_SEED:
            raise UserError(f"--seeds: {part!r} is outside 0..{MAX_SEED}")
        if b - a > 1_000_000:
            raise UserError(f"--seeds: range {part!r} has more than a million seeds")
        out.extend(range(a, b + 1))
    return list(dict.fromkeys(out))


class Sampler:
    """Turns (seed, class, truncation) into images with a loaded generator."""

    def __init__(self, G: torch.nn.Module, cfg, device="cpu", precision: str = "no"):
        self.G = G.to(device).eval()
        self.cfg = cfg
        self.device = torch.device(device)
        self.precision = precision  # "no" | "bf16" | "fp16": autocast dtype for synthesis
        from .models import arch_of

        self.arch = arch_of(cfg)  # capabilities: mapping network (truncation / walks in w), mixing
        self._w_means: dict = {}

    def _autocast(self):
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def class_index(self, name: str | None) -> int | None:
        from .errors import UserError

        if name is None:
            if self.cfg.c_dim:
                raise UserError(f"this model is class-conditional; pass --class (one of: {', '.join(self.cfg.class_names)})")
            return None
        if not self.cfg.c_dim:
            raise UserError("this model is unconditional; drop --class")
        if name in self.cfg.class_names:
            return self.cfg.class_names.index(name)
        raise UserError(f"unknown class {name!r}; valid classes: {', '.join(self.cfg.class_names)}")

    def _c(self, n: int, c):
        """c: None, one class index for all n, or a tensor of n class indices."""
        if c is None:
            return None
        if isinstance(c, torch.Tensor):
            return c.to(self.device, torch.long)
        return torch.full((n,), c, dtype=torch.long, device=self.device)

    @torch.no_grad()
    def w_mean(self, c: int | None) -> torch.Tensor:
        """Mean w of the class over 4096 fixed latents, or the w_avg tracked during training;
        models saved before w_avg was tracked (all zeros) get the 4096-latent mean too."""
        if c is None and bool(self.G.mapping.w_avg.any()):
            return self.G.mapping.w_avg
        if c not in self._w_means:
            z = torch.randn(4096, self.cfg.z_dim, generator=torch.Generator().manual_seed(123)).to(self.device)
            self._w_means[c] = self.G.mapping(z, self._c(4096, c))[:, 0].float().mean(0)
        return self._w_means[c]

    @torch.no_grad()
    def ws(self, z: torch.Tensor, c: int | torch.Tensor | None, trunc: float) -> torch.Tensor:
        ws = self.G.mapping(z.to(self.device), self._c(len(z), c))
        if trunc != 1.0:
            if isinstance(c, torch.Tensor):  # each latent toward its own class's mean
                mean = torch.stack([self.w_mean(k) for k in c.tolist()])[:, None]
            else:
                mean = self.w_mean(c)
            ws = mean.lerp(ws, trunc)
        return ws

    @torch.no_grad()
    def synth(self, ws: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            return self.G.synthesis(ws, noise="const").float()

    def truncate_z(self, z: torch.Tensor, trunc: float) -> torch.Tensor:
        """Truncation in z (models without a mapping network): z pulled toward 0, except a
        self-conditioned model's first coordinate, which picks the cluster (gan.clusters) and
        would otherwise draw the middle clusters only."""
        if trunc == 1.0:
            return z
        if self.cfg.clusters:
            return torch.cat([z[:, :1], z[:, 1:] * trunc], 1)
        return z * trunc

    @torch.no_grad()
    def from_z(self, z: torch.Tensor, c: int | torch.Tensor | None, trunc: float = 1.0) -> torch.Tensor:
        if self.arch.mapping:
            return self.synth(self.ws(z, c, trunc))
        with self._autocast():
            return self.G(self.truncate_z(z.to(self.device), trunc), self._c(len(z), c)).float()

    def render(self, latents: torch.Tensor, c=None) -> torch.Tensor:
        """Images of latents on this device: one w each for every layer (StyleGAN, the fixed noise
        inputs) or one z each (DCGAN). Differentiable: `gan.project` optimizes through it, and
        walks and saved latents render through it too, so a projected latent renders the same."""
        with self._autocast():
            if self.arch.mapping:
                return self.G.synthesis(latents[:, None, :].expand(-1, self.G.num_ws, -1), noise="const").float()
            return self.G(latents, self._c(len(latents), c)).float()

    @torch.no_grad()
    def from_latent(self, lat: dict) -> torch.Tensor:
        """The image of a projected latent (`gan.project.read_latent`)."""
        return self.render(lat["latent"].to(self.device), lat["c"])

    def seeds(self, seeds: list[int], c, trunc: float = 1.0, batch: int = 32):
        """Yield (seed, image tensor) in seed order, `batch` at a time. `c`: None, one class index
        for every seed, or a tensor of one class index per seed."""
        for i in range(0, len(seeds), batch):
            chunk = seeds[i : i + batch]
            cc = c[i : i + batch] if isinstance(c, torch.Tensor) else c
            imgs = self.from_z(latents_for_seeds(chunk, self.cfg.z_dim), cc, trunc)
            yield from zip(chunk, imgs.cpu())


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    an, bn = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = torch.acos((an * bn).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


def interpolation_frames(sampler: Sampler, seeds: list[int], frames: int, loop: bool, c: int | None,
                         trunc: float, batch: int = 16) -> list[np.ndarray]:
    """`frames` images walking through `seeds` (back to the first when `loop`):
    slerp in z for DCGAN, lerp in w for StyleGAN."""
    z = latents_for_seeds(seeds, sampler.cfg.z_dim)
    keys = sampler.ws(z, c, trunc)[:, 0] if sampler.arch.mapping else sampler.truncate_z(z, trunc)
    return walk_frames(sampler, keys, frames, loop, c, batch)


def walk_frames(sampler: Sampler, keys: torch.Tensor, frames: int, loop: bool, c: int | None,
                batch: int = 16) -> list[np.ndarray]:
    """`frames` images walking through the waypoints `keys` (one w each for StyleGAN, one z each
    for DCGAN; seeds' or projected latents), back to the first when `loop`."""
    if loop:
        keys = torch.cat([keys, keys[:1]])
    segments = len(keys) - 1
    # Positions along the path, evenly spaced; with loop the last frame stops short of the start.
    pos = np.linspace(0, segments, frames, endpoint=not loop) if frames > 1 else np.zeros(1)
    points = []
    for p in pos:
        i = min(int(p), segments - 1)
        t = float(p - i)
        a, b = keys[i], keys[i + 1]
        points.append(a.lerp(b, t) if sampler.arch.mapping else slerp(a, b, t))
    points = torch.stack(points)
    out = []
    with torch.no_grad():
        for i in range(0, len(points), batch):
            out.extend(to_uint8(sampler.render(points[i : i + batch].to(sampler.device), c)))
    return out


LAYER_GROUPS = {"coarse": (0, 4), "middle": (4, 8), "fine": (8, None)}


def mixing_layers(spec: str, num_ws: int) -> range:
    """coarse | middle | fine | a-b (inclusive w indices) -> range of w indices taken from the column seed."""
    from .errors import UserError

    if spec in LAYER_GROUPS:
        a, b = LAYER_GROUPS[spec]
        r = range(min(a, num_ws), num_ws if b is None else min(b, num_ws))
    else:
        try:
            lo, _, hi = spec.partition("-")
            r = range(int(lo), int(hi) + 1)
        except ValueError:
            raise UserError(f"--layers {spec!r}: use coarse, middle, fine or a range like 0-3") from None
        if r.start < 0 or r.stop > num_ws or len(r) == 0:
            raise UserError(f"--layers {spec!r}: this model has w layers 0-{num_ws - 1}")
    if len(r) == 0:
        raise UserError(f"--layers {spec}: this model has only {num_ws} w layers; use a range like 0-{num_ws - 1}")
    return r


@torch.no_grad()
def mixing_grid(sampler: Sampler, rows: list[int], cols: list[int], layers: range, c: int | None,
                trunc: float) -> Image.Image:
    """Top row: column seeds; left column: row seeds; cell (r, c): row seed with the
    column seed's styles on `layers`."""
    zr, zc = latents_for_seeds(rows, sampler.cfg.z_dim), latents_for_seeds(cols, sampler.cfg.z_dim)
    wr, wc = sampler.ws(zr, c, trunc), sampler.ws(zc, c, trunc)
    row_imgs, col_imgs = to_uint8(sampler.synth(wr)), to_uint8(sampler.synth(wc))
    res = row_imgs.shape[1]
    canvas = np.full(((len(rows) + 1) * res, (len(cols) + 1) * res, 3), 255, np.uint8)
    for j, im in enumerate(col_imgs):
        canvas[:res, (j + 1) * res : (j + 2) * res] = im
    idx = torch.tensor(list(layers), device=wr.device)
    for i, im in enumerate(row_imgs):
        canvas[(i + 1) * res : (i + 2) * res, :res] = im
        mixed = wr[i : i + 1].repeat(len(cols), 1, 1)
        mixed[:, idx] = wc[:, idx]
        for j, m in enumerate(to_uint8(sampler.synth(mixed))):
            canvas[(i + 1) * res : (i + 2) * res, (j + 1) * res : (j + 2) * res] = m
    return Image.fromarray(canvas)
