"""Sampling img/s per preset (batch 64, fp32 vs bf16) and refine speed/quality.

Refine: 256 px, 300 LBFGS steps, one style image, fp32 vs bf16 autocast through VGG19;
prints seconds per step, end-to-end seconds and the final style loss of both, so speed is
never bought with quality silently. Uses torchvision's VGG19 ImageNet weights when
cached, else random weights (said in the output: losses are then not comparable to real
Gatys losses, timings are).
    python bench/generate.py [--presets demo,dcgan64,stylegan128] [--refine-steps 300] [--device cuda]
On a GPU, issue 8's refine target is `--refine-size 512 --refine-steps 300` in at most 10 s.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from data_prep.procedural import render
from gan.config import PRESETS, ModelConfig
from gan.errors import UserError
from gan.models import build_generator
from gan.refine import RefineOptions, refine
from gan.sampling import Sampler, latents_for_seeds
from gan.style import VGGFeatures, load_vgg_state

RES = {"demo": 32, "dcgan64": 64, "stylegan128": 128, "stylegan256": 256}


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def sample_rate(preset: str, precision: str, batch: int, seconds: float, device: str) -> float:
    m = dict(PRESETS[preset]["model"])
    m.setdefault("resolution", RES[preset])
    if m["arch"] == "dcgan":
        m.setdefault("z_dim", 100)
    cfg = ModelConfig(**m)
    sampler = Sampler(build_generator(cfg).to(device), cfg, device, precision)
    z = latents_for_seeds(range(batch), cfg.z_dim).to(device)
    sampler.from_z(z, None)
    sync(device)
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        sampler.from_z(z, None)
        n += batch
        if n % (batch * 10) == 0:
            sync(device)  # the clock counts finished images
    sync(device)
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default="demo,dcgan64,stylegan128")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--refine-steps", type=int, default=300)
    ap.add_argument("--refine-size", type=int, default=256)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--vgg-weights", default=None,
                    help="refine's VGG19: a weights file or 'random' (default: cached ImageNet weights, else random)")
    args = ap.parse_args()
    rows = []
    for preset in args.presets.split(","):
        r = {p: sample_rate(preset, p, args.batch, args.seconds, args.device) for p in ("no", "bf16")}
        rows.append({"preset": preset, "fp32_img_per_s": round(r["no"], 1), "bf16_img_per_s": round(r["bf16"], 1),
                     "bf16_speedup": round(r["bf16"] / r["no"], 2)})
    print(f"sampling on {args.device}, batch {args.batch}")
    print(f"{'preset':<12} {'fp32 img/s':>11} {'bf16 img/s':>11} {'bf16/fp32':>10}")
    for r in rows:
        print(f"{r['preset']:<12} {r['fp32_img_per_s']:>11} {r['bf16_img_per_s']:>11} {r['bf16_speedup']:>10}")

    if args.vgg_weights:  # a file, or "random": no download attempted (a machine without internet may hang on one)
        state, weights = load_vgg_state(args.vgg_weights), args.vgg_weights
    else:
        try:
            state, weights = load_vgg_state(None), "imagenet"
        except UserError:
            state, weights = load_vgg_state("random"), "random"
    vgg = VGGFeatures(state)
    content, _ = render(11, 0, 256)
    style, _ = render(3, 1, 256)
    ref = {}
    # LBFGS in fp32 (the quality reference) vs Adam in bf16 (the fast mode; LBFGS's line search
    # cannot work with a bf16 objective).
    for prec, optimizer in (("no", "lbfgs"), ("no", "adam"), ("bf16", "adam")):
        opts = RefineOptions(steps=args.refine_steps, size=args.refine_size, precision=prec, optimizer=optimizer)
        t = time.perf_counter()
        _, report = refine(content, [style], [1.0], vgg, opts, device=args.device, progress=False)
        sync(args.device)
        wall = time.perf_counter() - t
        steps = sum(s["steps"] for s in report["scales"])
        ref[f"{optimizer}-{'fp32' if prec == 'no' else 'bf16'}"] = {"seconds": round(wall, 1), "s_per_step": round(wall / max(steps, 1), 4),
                     "style_start": report["start"]["style"], "style_end": report["end"]["style"],
                     "content_end": report["end"]["content"]}
    print(f"\nrefine on {args.device}, {args.refine_size}px, {args.refine_steps} steps, VGG19 weights: {weights}")
    for mode, r in ref.items():
        print(f"  {mode:<11}: {r['seconds']:.1f} s ({r['s_per_step']:.3f} s/step), "
              f"style loss {r['style_start']:.4g} -> {r['style_end']:.4g}, content {r['content_end']:.4g}")
    a, b = ref["adam-fp32"], ref["adam-bf16"]
    print(f"  adam: bf16 speedup {a['s_per_step'] / b['s_per_step']:.2f}x per step, "
          f"final style loss bf16/fp32 {b['style_end'] / max(a['style_end'], 1e-12):.2f}")
    print(json.dumps({"bench": "generate", "device": args.device, "sampling": rows, "refine": ref, "vgg_weights": weights}))


if __name__ == "__main__":
    main()
