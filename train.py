"""Train a GAN on a prepared store: python train.py --data STORE --preset demo

Same code on one CPU/GPU (`python train.py`) and many (`accelerate launch train.py`).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

# (flag, TrainConfig field or "model.<field>", type, help)
OVERRIDES = [
    ("--arch", "model.arch", str, "dcgan | stylegan"),
    ("--resolution", "model.resolution", int, "must match the store (default: the store's)"),
    ("--z-dim", "model.z_dim", int, "latent size"),
    ("--w-dim", "model.w_dim", int, "StyleGAN w size"),
    ("--map", "model.mapping_layers", int, "StyleGAN mapping layers"),
    ("--channel-base", "model.channel_base", int, "StyleGAN width: channels = min(base / res, max)"),
    ("--channel-max", "model.channel_max", int, "StyleGAN max channels"),
    ("--g-channels", "model.g_channels", int, "DCGAN G width"),
    ("--d-channels", "model.d_channels", int, "DCGAN D width"),
    ("--kimg", "kimg", float, "training length in thousands of real images"),
    ("--batch", "batch", int, "global batch over all processes"),
    ("--grad-accum", "grad_accum", int, "gradient accumulation steps"),
    ("--lr-g", "lr_g", float, "generator learning rate"),
    ("--lr-d", "lr_d", float, "discriminator learning rate"),
    ("--loss", "loss", str, "logistic | hinge"),
    ("--r1-gamma", "r1_gamma", float, "R1 weight (0 disables)"),
    ("--r1-interval", "r1_interval", int, "lazy R1 every N D steps"),
    ("--pl-weight", "pl_weight", float, "StyleGAN path-length weight (0 disables)"),
    ("--style-mixing", "style_mixing", float, "StyleGAN style-mixing probability"),
    ("--aug", "aug", str, "auto | ada | fixed | none"),
    ("--aug-p", "aug_p", float, "initial (ada) or fixed augmentation probability"),
    ("--ada-target", "ada_target", float, "ADA target for E[sign(D(real))]"),
    ("--ema-kimg", "ema_kimg", float, "G_ema half-life in kimg"),
    ("--mixed-precision", "mixed_precision", str, "no | bf16 | fp16"),
    ("--snap", "snap", float, "sample grid every N kimg"),
    ("--checkpoint-every", "checkpoint_every", float, "checkpoint every N kimg"),
    ("--keep", "keep", int, "checkpoints to keep (plus the best by metric)"),
    ("--seed", "seed", int, "random seed"),
    ("--workers", "workers", int, "DataLoader worker processes"),
    ("--metrics", "metrics", str, "evaluate G_ema during training: swd[,fid,kid,pr]"),
    ("--metrics-every", "metrics_every", float, "kimg between evaluations (default: every checkpoint)"),
    ("--metrics-num", "metrics_num", int, "images per evaluation"),
]
CHOICES = {"model.arch": ("dcgan", "stylegan"), "loss": ("logistic", "hinge"), "aug": ("auto", "ada", "fixed", "none"),
           "mixed_precision": ("no", "bf16", "fp16")}
ARCH_DEFAULTS = {"dcgan": {"z_dim": 100}, "stylegan": {}}


def build_parser() -> argparse.ArgumentParser:
    from gan.config import PRESETS

    p = argparse.ArgumentParser(prog="train.py", description="Train a GAN on a prepared store (python -m data_prep).",
                                epilog="example: python train.py --data data/proc --preset demo")
    p.add_argument("--data", help="prepared store directory")
    p.add_argument("--preset", help=f"one of: {', '.join(PRESETS)}")
    p.add_argument("--cond", action="store_true", help="class-conditional on the store's labels")
    p.add_argument("--outdir", default="runs", help="parent directory of run dirs")
    p.add_argument("--name", default=None, help="run name (default: <store>-<preset or arch>)")
    p.add_argument("--resume", default=None, metavar="auto|PATH",
                   help="auto: newest complete checkpoint of the newest run with this name (or --run-dir); "
                        "PATH: a checkpoint dir or run dir")
    p.add_argument("--run-dir", default=None, help="with --resume auto: the run to continue")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config, model sizes and FLOPs; exit")
    for flag, field, typ, help_ in OVERRIDES:
        p.add_argument(flag, type=typ, default=None, help=help_, choices=CHOICES.get(field))
    p.add_argument("--debug-faults", default="", help=argparse.SUPPRESS)
    return p


def is_main() -> bool:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0


def resolve(args):
    """-> (model_cfg, train_cfg, run_dir or None, checkpoint or None)."""
    from gan.config import PRESETS, ModelConfig, TrainConfig
    from gan.errors import UserError
    from gan.training import checkpoint, rundir

    explicit = {field: getattr(args, flag[2:].replace("-", "_")) for flag, field, _, _ in OVERRIDES}
    explicit = {k: v for k, v in explicit.items() if v is not None}
    if args.debug_faults:
        explicit["debug_faults"] = args.debug_faults
    run_dir = ckpt = None
    if args.resume and args.resume != "auto":
        target = Path(args.resume)
        if (target / checkpoint.STATE).exists():
            ckpt, run_dir = target, target.parent.parent
        elif (target / "config.json").exists():
            run_dir, ckpt = target, checkpoint.latest(target)
            if ckpt is None:
                raise UserError(f"--resume {target}: the run has no complete checkpoint yet")
        else:
            raise UserError(f"--resume {target}: not a checkpoint dir (no {checkpoint.STATE}) or run dir (no config.json)")
    elif args.resume == "auto":
        if args.run_dir:
            run_dir = Path(args.run_dir)
            if not (run_dir / "config.json").exists():
                raise UserError(f"--run-dir {run_dir} is not a run dir (no config.json)")
        elif args.data:
            run_dir = rundir.newest_run(Path(args.outdir), args.name or default_name(args))
        ckpt = checkpoint.latest(run_dir) if run_dir else None
        if ckpt is None:
            run_dir = None
            if is_main():
                print("resume auto: no complete checkpoint found, starting a new run", file=sys.stderr)

    if ckpt is not None:
        mcfg, cfg, _ = rundir.read_config(run_dir)
        for k, v in explicit.items():
            if k.startswith("model.") and getattr(mcfg, k[6:]) != v:
                raise UserError(f"cannot change {k[6:]} when resuming ({getattr(mcfg, k[6:])} in the run, {v} given)")
            if not k.startswith("model."):
                setattr(cfg, k, v)
        if args.data:
            cfg.data = args.data
        return mcfg, cfg, run_dir, ckpt

    if not args.data:
        raise UserError("--data STORE is required (prepare one with python -m data_prep)")
    if args.preset and args.preset not in PRESETS:
        raise UserError(f"unknown preset {args.preset!r}; choose from {', '.join(PRESETS)}")
    preset = PRESETS.get(args.preset or "", {"model": {}, "train": {}})
    arch = explicit.get("model.arch", preset["model"].get("arch", "stylegan"))
    mcfg = ModelConfig(**{**ARCH_DEFAULTS[arch], **preset["model"]})
    cfg = TrainConfig(**preset["train"])
    for k, v in explicit.items():
        if k.startswith("model."):
            setattr(mcfg, k[6:], v)
        else:
            setattr(cfg, k, v)
    cfg.betas = tuple(cfg.betas)
    cfg.data, cfg.preset, cfg.outdir = args.data, args.preset or "", args.outdir
    cfg.name = args.name or default_name(args)
    return mcfg, cfg, None, None


def default_name(args) -> str:
    store = Path(args.data.rstrip("/")).name if args.data else "run"
    return f"{store}-{args.preset or args.arch or 'stylegan'}"


def finalize(mcfg, cfg, dataset, explicit_resolution: int | None, cond: bool, resuming: bool) -> None:
    """Fit the config to the store and validate what the store decides."""
    from gan.errors import UserError
    from gan.models import check_config

    res = dataset.resolution
    if resuming:
        if mcfg.resolution != res:
            raise UserError(f"the store is {res}px but the run's model is {mcfg.resolution}px; "
                            "prepare the store at the model's resolution")
        if mcfg.c_dim and mcfg.c_dim != dataset.num_classes:
            raise UserError(f"the run is conditional on {mcfg.c_dim} classes but the store has {dataset.num_classes}")
        return
    if explicit_resolution is not None and explicit_resolution != res:
        raise UserError(f"--resolution {explicit_resolution} but the store {cfg.data} is {res}px; "
                        f"prepare it again with --resolution {explicit_resolution} or drop the flag")
    mcfg.resolution = res
    check_config(mcfg)
    if cond:
        if dataset.num_classes < 2:
            raise UserError(f"--cond needs a store with at least 2 classes; {cfg.data} has {dataset.num_classes} "
                            "(use --labels-from-folders or --label-column when preparing)")
        mcfg.c_dim, mcfg.class_names = dataset.num_classes, list(dataset.class_names)
    if cfg.aug == "auto":
        cfg.aug = "ada" if len(dataset) < 10000 else "none"
    for name, ok in (("--batch", cfg.batch >= 1), ("--grad-accum", cfg.grad_accum >= 1), ("--kimg", cfg.kimg > 0),
                     ("--keep", cfg.keep >= 1), ("--snap", cfg.snap > 0), ("--checkpoint-every", cfg.checkpoint_every > 0)):
        if not ok:
            raise UserError(f"{name} must be positive")
    from gan.training.runtime import micro_batch

    micro_batch(cfg.batch, int(os.environ.get("WORLD_SIZE", "1")), cfg.grad_accum)  # refuse before a run dir exists
    if cfg.metrics:
        from gan.metrics import parse_metrics

        parse_metrics(cfg.metrics)
        if cfg.metrics_num < 2:
            raise UserError("--metrics-num must be at least 2")
    if not 0 <= cfg.aug_p <= 1:
        raise UserError("--aug-p must be between 0 and 1")


def describe(mcfg, cfg) -> str:
    from gan.training.flops import model_summary

    s = model_summary(mcfg)
    lines = [json.dumps({"model": mcfg.to_dict(), "train": cfg.to_dict()}, indent=2),
             f"G: {s['g_params'] / 1e6:.2f}M params, {s['g_flops'] / 1e9:.3f} GFLOP/img forward",
             f"D: {s['d_params'] / 1e6:.2f}M params, {s['d_flops'] / 1e9:.3f} GFLOP/img forward",
             f"training: ~{s['train_flops'] / 1e9:.2f} GFLOP per real image (4 G + 9 D forward-equivalents)"]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from data_prep.errors import UserError as PrepError
    from gan.errors import UserError

    try:
        return _run(args)
    except (UserError, PrepError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _run(args) -> int:
    from data_prep.store import PreparedDataset, manifest_hash
    from gan.training import rundir
    from gan.training.loop import Trainer
    from gan.training.runtime import make_accelerator, share_run_dir

    mcfg, cfg, run_dir, ckpt = resolve(args)
    dataset = PreparedDataset(cfg.data, xflip=cfg.xflip)
    finalize(mcfg, cfg, dataset, args.resolution, args.cond, resuming=ckpt is not None)
    if args.dry_run:
        print(describe(mcfg, cfg))
        print(f"dry run: would train {cfg.kimg:g} kimg on {len(dataset)} images from {cfg.data}")
        return 0
    if is_main():
        print(describe(mcfg, cfg) if ckpt is None else f"resuming {ckpt}")
    acc = make_accelerator(cfg.mixed_precision, cfg.outdir)
    extra = {"data_manifest_hash": manifest_hash(cfg.data), "command": sys.argv}
    if ckpt is not None:
        run_dir = share_run_dir(acc, lambda: run_dir)
        if acc.is_main_process:
            rundir.write_config(run_dir, mcfg, cfg, extra)
    else:
        run_dir = share_run_dir(acc, lambda: rundir.create(Path(cfg.outdir), cfg.name, mcfg, cfg, extra))
    if acc.is_main_process:
        print(f"run dir: {run_dir}")
    trainer = Trainer(acc, mcfg, cfg, dataset, run_dir, resume_from=ckpt)
    return trainer.train()


if __name__ == "__main__":
    sys.exit(main())
