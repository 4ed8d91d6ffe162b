"""Training throughput per preset x precision, with model FLOP utilization (MFU).

End to end: data loading, augmentation, all loss phases, EMA and logging are inside the
timed window, from the end of the warm-up steps (with nearest-fake matching, those after its bank
of recent fakes is full, when its pulls start) to the end of the last step (periodic
checkpoints and sample grids are pushed past the end; the final ones are outside the
window). Peak matmul FLOP/s for bf16 and fp32 are measured in the same run (before the rows and
after them, the higher kept), so ratios are comparable on a shared, noisy machine. FLOPs per image
are gan.training.flops's count of a real step (D's decoders included).
    python bench/train.py [--presets demo,dcgan64,stylegan128] [--precisions no,bf16] [--device cuda]
                          [--train-flags="--recon-interval 4"]   (train.py flags added to every row)

On CUDA the presets run at their own batch (the CPU-sized batches below are CPU-only) for
longer, and `sg2ada256` is StyleGAN2-ADA's single-GPU 256 px config (--preset stylegan256
--batch 16 --map 2 --r1-gamma 0.8192). Prints s/kimg, img/s, TFLOP/s, MFU against the
matmul peak measured in the same run, and peak memory (CUDA allocator peak, or max RSS on CPU).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

# This file is also named train.py: put the repo root first so `import train` is the CLI.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import train as train_cli  # noqa: E402
from gan.config import TrainConfig  # noqa: E402
from gan.precision import matmul_flops  # noqa: E402
from gan.training.flops import run_summary  # noqa: E402
from gan.training.loop import launch  # noqa: E402
from gan.training.matching import matching_on  # noqa: E402
from gan.training.setup import resolve  # noqa: E402

# images per preset for the timed run (enough steps to pass warm-up): CPU, CUDA
KIMG = {"demo": (3.2, 40), "dcgan64": (1.28, 40), "fastgan64": (0.64, 40), "stylegan128": (0.128, 4), "stylegan256": (0.064, 4),
        "fewshot256": (0.064, 2), "sg2ada256": (0.064, 2)}
# CPU-sized batches for the StyleGAN presets (their own batch is meant for GPUs)
BATCH = {"stylegan128": 16, "stylegan256": 8, "fewshot256": 8, "sg2ada256": 8}
RES = {"demo": 32, "dcgan64": 64, "fastgan64": 64, "stylegan128": 128, "stylegan256": 256, "fewshot256": 256, "sg2ada256": 256}
# Bench configurations that are a preset plus flags.
CONFIGS = {"sg2ada256": ("stylegan256", ["--batch", "16", "--map", "2", "--r1-gamma", "0.8192"])}


def mfu(row: dict, peaks: dict) -> float:
    """The row's achieved FLOP/s over the matmul peak of its precision (float32's for others)."""
    return round(row["achieved_tflops"] * 1e12 / peaks.get(row["precision"], peaks["no"]), 3)


def run_preset(name: str, precision: str, store: Path, tmp: Path, batch: int | None, device: str,
               compile_: str = "auto", compile_mode: str = "default", kimg: float | None = None,
               train_flags: list | None = None) -> dict:
    preset, extra = CONFIGS.get(name, (name, []))
    cpu_batch = ["--batch", str(BATCH[name])] if device == "cpu" and name in BATCH else []
    args = train_cli.build_parser().parse_args(
        ["--data", str(store), "--preset", preset, "--mixed-precision", precision,
         "--kimg", str(kimg or KIMG[name][device == "cuda"]), "--snap", "1e6", "--checkpoint-every", "1e6",
         "--outdir", str(tmp / "runs"), "--aug", "ada", "--compile", compile_,
         "--compile-mode", compile_mode] + extra + cpu_batch + (["--batch", str(batch)] if batch else [])
        + (train_flags or []))
    plan = resolve(args)
    mcfg, cfg = plan.mcfg, plan.cfg
    if matching_on(cfg):  # the timed window opens once matching's bank is full (Trainer._full_step): fill it first
        cfg.kimg += math.ceil(cfg.match_bank / cfg.batch) * cfg.batch / 1000
    cfg.name = f"{name}-{precision}"
    trainer = launch(plan)
    trainer.sync_timing = True  # the steady window opens and closes with the device's queue drained
    trainer.train()
    flops = run_summary(mcfg, cfg)["train_flops"]
    ips = trainer.steady_img_per_s or 0.0
    if device == "cuda":
        peak_gib = torch.cuda.max_memory_allocated() / 2 ** 30
    else:
        import resource

        peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux
    return {"preset": name, "precision": precision, **({"train_flags": " ".join(train_flags)} if train_flags else {}),
            "batch": cfg.batch, "compile": cfg.compile,
            "compile_mode": cfg.compile_mode, "img_per_s": round(ips, 1),
            "s_per_kimg": round(1000 / ips, 2) if ips else None, "peak_mem_gib": round(peak_gib, 2),
            "train_gflop_per_img": round(flops / 1e9, 3), "achieved_tflops": round(ips * flops / 1e12, 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default="demo,dcgan64,stylegan128")
    ap.add_argument("--precisions", default=None,
                    help="default: no,bf16; only no on a CPU without bf16 instructions, where bf16 is emulated "
                         "(fastgan64 had not finished 0.64 kimg in 10 minutes there); name bf16 to measure it anyway")
    ap.add_argument("--batch", type=int, default=None, help="override the presets' batch")
    ap.add_argument("--kimg", type=float, default=None, help="override each run's timed length (kimg; 3 warm-up steps come first, and with "
                         "nearest-fake matching the steps that fill its bank)")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    choices = {f.name: f.metadata.get("choices") for f in dataclasses.fields(TrainConfig)}  # train.py's own
    ap.add_argument("--compile", choices=choices["compile"], default="auto",
                    help="train.py's --compile (auto: on with a GPU); compile time is inside the warm-up steps")
    ap.add_argument("--compile-mode", choices=choices["compile_mode"], default="default",
                    help="train.py's --compile-mode (reduce-overhead: CUDA graphs)")
    ap.add_argument("--train-flags", default="", help='train.py flags added to every row, one string '
                    '(e.g. "--recon-interval 4"); the FLOPs per image are the run\'s with them')
    ap.add_argument("--peak-seconds", type=float, default=1.5, help="time per matmul peak measurement")
    ap.add_argument("--single", default=None, help=argparse.SUPPRESS)  # PRESET,PRECISION,STORE,TMP
    args = ap.parse_args()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda: no CUDA GPU is available here")
    if args.single:
        # Accelerate's state is per process: each measurement runs in its own interpreter.
        preset, prec, store, tmp = args.single.split(",")
        print("ROW " + json.dumps(run_preset(preset, prec, Path(store), Path(tmp), args.batch, device, args.compile,
                                                  args.compile_mode, args.kimg, shlex.split(args.train_flags))))
        return
    if args.precisions is None:  # the parent's choice; each --single child is told its precision
        from gan.precision import bf16_fast

        fast, why = bf16_fast(device)
        args.precisions = "no,bf16" if fast else "no"
        if not fast:
            print(f"note: no bf16 rows: {why}, where bf16 is emulated and runs many times slower (--precisions "
                  "no,bf16 measures it anyway)", flush=True)
    dtypes = {"no": torch.float32, "bf16": torch.bfloat16, **({"fp16": torch.float16} if device == "cuda" else {})}

    def measure_peaks() -> dict:
        return {k: matmul_flops(dt, device, args.peak_seconds) for k, dt in dtypes.items()}

    # Measured before the rows and again after them, the higher kept: on a shared machine a
    # neighbour's burst only ever lowers a measurement, and a low peak would flatter the MFU.
    first = measure_peaks()
    env = dict(os.environ, **({"CUDA_VISIBLE_DEVICES": ""} if device == "cpu" else {}))
    rows, failed = [], []
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        for preset in args.presets.split(","):
            store = tmp / f"store{RES[preset]}"
            if not store.exists():
                subprocess.run([sys.executable, "-m", "data_prep", "--procedural", "512", "--out", str(store),
                                "--resolution", str(RES[preset]), "--no-progress"], check=True, stdout=subprocess.DEVNULL)
            for prec in args.precisions.split(","):
                cmd = [sys.executable, __file__, "--single", f"{preset},{prec},{store},{tmp / (preset + prec)}",
                       "--device", device, "--compile", args.compile, "--compile-mode", args.compile_mode]
                if args.batch:
                    cmd += ["--batch", str(args.batch)]
                if args.kimg:
                    cmd += ["--kimg", str(args.kimg)]
                if args.train_flags:
                    cmd += [f"--train-flags={args.train_flags}"]  # "=": a value that starts with "--"
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                found = [l for l in proc.stdout.splitlines() if l.startswith("ROW ")]
                if proc.returncode != 0 or not found:
                    # One failed configuration (a compile error, out of memory) must not cost
                    # the others' figures: say why and go on.
                    tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
                    print(f"FAILED {preset} {prec} (exit {proc.returncode}): {tail[-600:]}", flush=True)
                    failed.append(f"{preset} {prec}")
                    continue
                row = json.loads(found[0][4:])
                rows.append(row)
                # Each row as soon as it is measured (its MFU against the first peaks; the table's
                # against the higher of both): a run stopped at a time limit keeps the rows so far.
                print("row " + json.dumps({**row, "mfu": mfu(row, first)}), flush=True)
    last = measure_peaks()
    peaks = {k: max(first[k], last[k]) for k in dtypes}
    for row in rows:
        row["mfu"] = mfu(row, peaks)
    print(f"\nmatmul peak here ({device}), the higher of two measurements (before the rows: "
          + ", ".join(f"{k} {first[k] / 1e12:.3f}" for k in dtypes) + "; after: "
          + ", ".join(f"{k} {last[k] / 1e12:.3f}" for k in dtypes) + " TFLOP/s):")
    print(f"matmul peak here ({device}): fp32 {peaks['no'] / 1e12:.3f} TFLOP/s, bf16 {peaks['bf16'] / 1e12:.3f} "
          f"TFLOP/s (bf16/fp32 {peaks['bf16'] / peaks['no']:.2f}x)")
    print(f"{'preset':<12} {'prec':<5} {'batch':>5} {'img/s':>8} {'s/kimg':>8} {'GFLOP/img':>10} {'TFLOP/s':>8} "
          f"{'MFU':>6} {'peak GiB':>8}")
    for r in rows:
        print(f"{r['preset']:<12} {r['precision']:<5} {r['batch']:>5} {r['img_per_s']:>8} {r['s_per_kimg']!s:>8} "
              f"{r['train_gflop_per_img']:>10} {r['achieved_tflops']:>8} {r['mfu']:>6} {r['peak_mem_gib']:>8}")
    for preset in dict.fromkeys(r["preset"] for r in rows):
        by = {r["precision"]: r["img_per_s"] for r in rows if r["preset"] == preset}
        if by.get("no") and by.get("bf16"):
            print(f"{preset}: bf16 / fp32 img/s = {by['bf16'] / by['no']:.2f}x")
    print(json.dumps({"bench": "train", "peak_tflops": {k: round(v / 1e12, 3) for k, v in peaks.items()}, "rows": rows,
                      "failed": failed}))
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
