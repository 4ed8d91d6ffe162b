"""Where a training step's time goes: each phase of the real Trainer timed on its own.

    python bench/phases.py [--device cuda] [--precision bf16] [--repeats 10] [-- TRAIN FLAGS]

Default train flags: StyleGAN2-ADA's single-GPU 256 px config (--preset stylegan256 --batch 16
--map 2 --r1-gamma 0.8192), on 256 procedural images made here. For every phase (loader, D,
lazy R1, G, lazy path length, EMA) it prints the median ms per call, how often it runs per step,
its share of a step, the kernels (CUDA) or ATen ops (CPU) it launches, and the s/kimg these add
up to. Then the same phases once more with PyTorch's native grouped-conv autograd for the
anti-aliasing filters instead of artgan's adjoint filters, and the ratio: measured in one run.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import train as train_cli  # noqa: E402
from gan.models import layers  # noqa: E402
from gan.training.ema import update_ema  # noqa: E402
from gan.training.loop import launch  # noqa: E402
from gan.training.setup import resolve  # noqa: E402

SG2ADA256 = ["--preset", "stylegan256", "--batch", "16", "--map", "2", "--r1-gamma", "0.8192"]


def native_filters(on: bool) -> None:
    """Route Blur/Upsample through plain autograd of the grouped convolution (the reference)."""
    if on:
        layers._Filter.apply = staticmethod(lambda x, k, name: layers._FILTERS[name][0](x, k))
    elif "apply" in vars(layers._Filter):
        del layers._Filter.apply


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


def launches(fn, device: str) -> int:
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=acts) as prof:
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
    events = prof.key_averages()
    if device == "cuda":
        return sum(e.count for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
    return sum(e.count for e in events if e.key.startswith("aten::"))


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
    ap.add_argument("--store", default=None, help="a prepared store (default: 256 procedural images)")
    ap.add_argument("train_flags", nargs="*", help="train.py flags after --")
    args = ap.parse_args()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda: no CUDA GPU is available here")
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    flags = args.train_flags or SG2ADA256
    with tempfile.TemporaryDirectory() as tmp:
        store = args.store
        if store is None:
            res = next((flags[i + 1] for i, f in enumerate(flags[:-1]) if f == "--resolution"), None)
            res = res or next((p[-3:] for p in flags if p.startswith(("stylegan", "fewshot"))), "256")
            store = str(Path(tmp) / "store")
            subprocess.run([sys.executable, "-m", "data_prep", "--procedural", "256", "--out", store,
                            "--resolution", res, "--no-progress"], check=True, stdout=subprocess.DEVNULL)
        parsed = train_cli.build_parser().parse_args(
            ["--data", store, "--outdir", str(Path(tmp) / "runs"), "--mixed-precision", args.precision,
             "--kimg", "1", "--aug", "ada"] + flags)
        trainer = launch(resolve(parsed))
        cfg = trainer.cfg
        results = {}
        for variant in ("artgan", "native"):
            native_filters(variant == "native")
            results[variant] = measure(trainer, device, args.repeats)
        native_filters(False)

    def step_ms(rows):
        return sum(r["ms"] * r["per_step"] for r in rows.values())

    print(f"\n{device}, {args.precision}, batch {cfg.batch}, flags: {' '.join(flags)}")
    print(f"{'phase':<7} {'per step':>8} {'ms/call':>9} {'launches':>9} {'share':>6}   "
          f"{'native ms':>9} {'launches':>9} {'native/ours':>11}")
    ours, ref = results["artgan"], results["native"]
    for name, r in ours.items():
        n = ref[name]
        print(f"{name:<7} {r['per_step']:>8.3g} {r['ms']:>9.2f} {r['launches']:>9} "
              f"{r['ms'] * r['per_step'] / step_ms(ours):>6.1%}   {n['ms']:>9.2f} {n['launches']:>9} "
              f"{n['ms'] / r['ms']:>10.2f}x")
    s_kimg = {k: step_ms(v) / cfg.batch for k, v in results.items()}  # ms per image = s per kimg
    print(f"phases add up to {s_kimg['artgan']:.2f} s/kimg ({1000 / s_kimg['artgan']:.1f} img/s); with the native "
          f"filters {s_kimg['native']:.2f} s/kimg: {s_kimg['native'] / s_kimg['artgan']:.2f}x")
    print(json.dumps({"bench": "phases", "device": device, "precision": args.precision, "batch": cfg.batch,
                      "flags": flags, "s_per_kimg": {k: round(v, 3) for k, v in s_kimg.items()},
                      "phases": results}))


if __name__ == "__main__":
    main()
