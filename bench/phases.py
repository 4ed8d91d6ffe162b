"""Where a training step's time goes: each phase of the real Trainer timed on its own.

    python bench/phases.py [--device cuda] [--precision bf16] [--repeats 10] [-- TRAIN FLAGS]

Default train flags: StyleGAN2-ADA's single-GPU 256 px config (--preset stylegan256 --batch 16
--map 2 --r1-gamma 0.8192), on 256 procedural images made here, with ADA at p = 0.2 (so the
augmentation runs, as it does once ADA reacts; `-- --aug none` leaves it out). For every phase
(loader, D, lazy R1, G, lazy path length, EMA) it prints the median ms per call, how often it
runs per step, its share of a step, the kernels it launches (counted by CUDA; on CPU, the ATen
ops and compiled kernels that would be launches on a GPU), and the s/kimg these add up to.
Then the same phases with other implementations, in the same run (`--variants`): "taps" (the
[1,3,3,1] filters as shifted slices and adds: elementwise, no grouped convolution, any
derivative order; a candidate for GPUs, where compile can fuse it), "native" (PyTorch's own
autograd of the grouped convolution, what artgan used before) and "filter_first" (StyleGAN's
upsampling convs run the way models saved before config version 2 run them: upsample, then
convolve at the full resolution) and "channels_last" (G, D and G_ema's weights in NHWC, so the
convolutions, the eager R1 and path-length ones included, run channels-last; on this 2-core
CPU a wash, 1.02x the time; on GPUs cuDNN's bf16 kernels want NHWC).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import train as train_cli  # noqa: E402
from gan.config import PRESETS, ModelConfig  # noqa: E402
from gan.models import layers  # noqa: E402
from gan.training.ema import update_ema  # noqa: E402
from gan.training.loop import launch  # noqa: E402
from gan.training.setup import resolve  # noqa: E402

VARIANTS = ("artgan", "taps", "native", "filter_first", "channels_last")  # filters; old up-convs; layout
SG2ADA256 = ["--preset", "stylegan256", "--batch", "16", "--map", "2", "--r1-gamma", "0.8192"]


def _fir4(x: torch.Tensor, outer: float, inner: float) -> torch.Tensor:
    """The symmetric 4-tap filter [outer, inner, inner, outer] along width, then height, as
    shifted slices (each axis shrinks by 3)."""
    x = (x[..., :-3] + x[..., 3:]) * outer + (x[..., 1:-2] + x[..., 2:-1]) * inner
    return (x[..., :-3, :] + x[..., 3:, :]) * outer + (x[..., 1:-2, :] + x[..., 2:-1, :]) * inner


def taps_blur(x: torch.Tensor) -> torch.Tensor:
    """Blur: replicate padding, then [1,3,3,1]/8 along width and height."""
    return _fir4(F.pad(x, (1, 2, 1, 2), mode="replicate"), 0.125, 0.375)


def taps_up(x: torch.Tensor) -> torch.Tensor:
    """Upsample: per axis, even outputs (3 x[m] + x[m-1]) / 4 and odd (3 x[m] + x[m+1]) / 4,
    zero outside: the polyphase form of the stride-2 transposed [1,3,3,1] filter (gain 4)."""
    for dim in (-1, -2):
        n = x.shape[dim]
        xp = F.pad(x, (1, 1) if dim == -1 else (0, 0, 1, 1))
        even = x * 0.75 + xp.narrow(dim, 0, n) * 0.25
        odd = x * 0.75 + xp.narrow(dim, 2, n) * 0.25
        x = torch.stack([even, odd], dim=dim).flatten(dim - 1, dim)
    return x


def taps_smooth(x: torch.Tensor) -> torch.Tensor:
    """The filter after a stride-2 transposed conv: zero padding 1, then [1,3,3,1]/4 per axis."""
    return _fir4(F.pad(x, (1, 1, 1, 1)), 0.25, 0.75)


def taps_down(x: torch.Tensor) -> torch.Tensor:
    """Downsample: the blur, then every second pixel."""
    return taps_blur(x)[:, :, ::2, ::2]


TAPS = {"blur": taps_blur, "down": taps_down, "up": taps_up, "smooth": taps_smooth}


def use_up_conv(trainer, variant: str) -> None:
    """StyleGAN's upsampling convs as this version builds them, or "filter_first" (same weights)."""
    for model in (trainer.G, trainer.G_ema):
        for m in model.modules():
            if isinstance(m, layers.ModulatedConv2d):
                m.up_conv = "filter_first" if variant == "filter_first" else "transposed"


def use_filters(variant: str) -> None:
    """artgan's adjoint filters, the slice-and-add "taps", or PyTorch's "native" grouped-conv autograd."""
    if "apply" in vars(layers._Filter):
        del layers._Filter.apply
    if variant == "native":
        layers._Filter.apply = staticmethod(lambda x, k, name: layers._FILTERS[name][0](x, k))
    elif variant == "taps":
        layers._Filter.apply = staticmethod(lambda x, k, name: TAPS[name](x))


def use_memory_format(trainer, variant: str) -> None:
    """G, D and G_ema's 4-D weights channels-last ("channels_last": convolutions then run NHWC and
    hand NHWC activations on), or the usual contiguous NCHW."""
    fmt = torch.channels_last if variant == "channels_last" else torch.contiguous_format
    for model in (trainer.G, trainer.D, trainer.G_ema):
        model.to(memory_format=fmt)


def check_taps() -> None:
    x = torch.randn(2, 3, 8, 6, dtype=torch.float64)
    for name, fn in TAPS.items():
        k = layers._fir_kernel().double() * (1 if name in ("blur", "down") else 4)
        assert torch.allclose(fn(x), layers._FILTERS[name][0](x, k), atol=1e-12), name


def phases(trainer) -> dict:
    t, stats = trainer, {}
    cfg = t.cfg
    out = {"loader": (lambda: t._next_real(), 1.0), "D": (lambda: t._d_phase(stats), 1.0),
           "G": (lambda: t._g_phase(stats), 1.0),
           "EMA": (lambda: update_ema(t.G_ema, t._unwrap(t.G), cfg.batch, 10 ** 6, cfg.ema_kimg, cfg.ema_rampup), 1.0)}
    if cfg.r1_gamma > 0:
        out["R1"] = (lambda: t._d_reg_phase(stats), 1.0 / cfg.r1_interval)
    if t._pl_on():
        out["PL"] = (lambda: t._g_reg_phase(stats), 1.0 / cfg.pl_interval)
    return out


# ATen ops that launch no kernel: views, allocations, metadata.
NO_KERNEL = {"view", "as_strided", "t", "transpose", "unsqueeze", "squeeze", "expand", "slice", "select", "permute",
             "detach", "alias", "_unsafe_view", "unbind", "split", "split_with_sizes", "narrow", "_reshape_alias",
             "reshape", "flatten", "view_as", "expand_as", "contiguous", "empty", "empty_strided", "empty_like",
             "lift_fresh", "resolve_conj", "resolve_neg", "to", "_to_copy", "result_type", "is_nonzero"}


def launches(fn, device: str) -> int:
    """Kernel launches of one call: counted by CUDA itself on a GPU. On CPU, the closest
    equivalent: ATen ops called from Python (not from inside another ATen op) that do work
    (no views, allocations or no-op casts; `to` that copies counts as its copy_), plus the
    kernels of compiled graphs."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=acts) as prof:
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
    if device == "cuda":
        return sum(e.count for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA)
    n = 0
    for e in prof.events():
        if "_cpp_fused_" in e.name:  # inductor's C++ kernels (profiled: see main)
            n += 1
        elif e.name.startswith("aten::"):
            parent = e.cpu_parent
            while parent is not None and not parent.name.startswith("aten::"):
                parent = parent.cpu_parent
            if parent is None and e.name[6:] not in NO_KERNEL:
                n += 1
            elif parent is not None and parent.name in ("aten::to", "aten::_to_copy") and e.name == "aten::copy_":
                n += 1  # a cast that copies
    return n


def measure(trainer, device: str, repeats: int) -> dict:
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    trainer._d_phase({})  # _last_real for the phases that reuse the D phase's batch
    rows = {}
    for name, (fn, per_step) in phases(trainer).items():
        for _ in range(2):  # warm-up: allocator, cuDNN autotuning
            fn()
        sync()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t)
        rows[name] = {"ms": statistics.median(times) * 1000, "per_step": per_step, "launches": launches(fn, device)}
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--precision", choices=("no", "bf16", "fp16"), default="bf16")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--variants", default=",".join(VARIANTS), help="which of " + ", ".join(VARIANTS))
    ap.add_argument("--store", default=None, help="a prepared store (default: 256 procedural images)")
    ap.add_argument("train_flags", nargs="*", help="train.py flags after --")
    args = ap.parse_args()
    variants = args.variants.split(",")
    if "artgan" not in variants or not set(variants) <= set(VARIANTS):
        sys.exit(f"error: --variants: a comma-separated subset of {','.join(VARIANTS)} that includes artgan")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda: no CUDA GPU is available here")
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        import torch._inductor.config as inductor_config  # `as`: a bare `import torch...` here would make torch local

        inductor_config.cpp.enable_kernel_profile = True  # compiled kernels show in the profiler
    flags = args.train_flags or SG2ADA256
    with tempfile.TemporaryDirectory() as tmp:
        store = args.store
        if store is None:
            # The store decides the resolution: make it the one asked for, else the preset's.
            preset = next((flags[i + 1] for i, f in enumerate(flags[:-1]) if f == "--preset"), None)
            res = next((flags[i + 1] for i, f in enumerate(flags[:-1]) if f == "--resolution"), None)
            res = res or str(PRESETS.get(preset, {}).get("model", {}).get("resolution", ModelConfig().resolution))
            store = str(Path(tmp) / "store")
            subprocess.run([sys.executable, "-m", "data_prep", "--procedural", "256", "--out", store,
                            "--resolution", res, "--no-progress"], check=True, stdout=subprocess.DEVNULL)
        parsed = train_cli.build_parser().parse_args(
            ["--data", store, "--outdir", str(Path(tmp) / "runs"), "--mixed-precision", args.precision,
             "--kimg", "1", "--aug", "ada", "--aug-p", "0.2"] + flags)
        trainer = launch(resolve(parsed))
        cfg = trainer.cfg
        check_taps()
        results = {}
        for variant in variants:
            use_filters(variant)
            use_up_conv(trainer, variant)
            use_memory_format(trainer, variant)
            results[variant] = measure(trainer, device, args.repeats)
            # As soon as measured: a run stopped at a time limit keeps the variants so far.
            print(f"measured {variant}: " + json.dumps(results[variant]), flush=True)
        use_filters("artgan")
        use_up_conv(trainer, "artgan")
        use_memory_format(trainer, "artgan")

    def step_ms(rows):
        return sum(r["ms"] * r["per_step"] for r in rows.values())

    print(f"\n{device}, {args.precision}, batch {cfg.batch}, flags: {' '.join(flags)}")
    ours = results["artgan"]
    print(f"{'phase':<7} {'per step':>8} {'share':>6}" + "".join(f" {v + ' ms':>10} {'launches':>9}" for v in variants))
    for name, r in ours.items():
        print(f"{name:<7} {r['per_step']:>8.3g} {r['ms'] * r['per_step'] / step_ms(ours):>6.1%}"
              + "".join(f" {results[v][name]['ms']:>10.2f} {results[v][name]['launches']:>9}" for v in variants))
    s_kimg = {k: step_ms(v) / cfg.batch for k, v in results.items()}  # ms per image = s per kimg
    print("phases add up to " + ", ".join(f"{v} {s_kimg[v]:.2f} s/kimg ({s_kimg[v] / s_kimg['artgan']:.2f}x artgan's time)"
                                          for v in variants))
    print(json.dumps({"bench": "phases", "device": device, "precision": args.precision, "batch": cfg.batch,
                      "flags": flags, "s_per_kimg": {k: round(v, 3) for k, v in s_kimg.items()},
                      "phases": results}))


if __name__ == "__main__":
    main()
