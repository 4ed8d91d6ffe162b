"""Parsed train.py flags -> a validated plan (configs, store, run dir, checkpoint).

Shared by train.py and bench/train.py. The flag table is derived from the config
dataclasses (gan.config.cli_fields); presets and store checks live here, not in the CLI.
"""
from __future__ import annotations

import functools
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..config import AUTO_CLUSTERS, PRESETS, ModelConfig, TrainConfig, cli_fields
from ..errors import UserError
from ..integrity import verify
from ..models import REGISTRY, arch_of, check_config, nearest_sizes
from . import checkpoint, rundir

# (flag, key, type, help, choices); key is a TrainConfig field or "model.<field>".
OVERRIDES = [(flag, key, typ, help_, tuple(REGISTRY) if key == "model.arch" else choices)
             for flag, key, typ, help_, choices in cli_fields()]
ARCH_DEFAULTS = {"dcgan": {"z_dim": 100}, "stylegan": {}, "fastgan": {"z_dim": 256, "g_channels": 32, "d_channels": 32}}


@dataclass
class Plan:
    mcfg: ModelConfig
    cfg: TrainConfig
    dataset: object  # data_prep.store.PreparedDataset
    run_dir: Path | None = None  # set when resuming
    ckpt: Path | None = None  # checkpoint to resume from
    notes: list = field(default_factory=list)  # one-line messages for the user
    base: object = None  # finetune.BaseModel for a new run with --from
    style_images: list = field(default_factory=list)  # PIL images for style-guided training
    vgg_state: dict | None = None  # VGG weights for the style loss (None: seeded random)
    restart_in: Path | None = None  # --resume auto on a run stopped before its first checkpoint: start over in it


def is_main() -> bool:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0


def explicit_overrides(args) -> dict:
    """{key: value} for every override flag given on the command line."""
    vals = {key: getattr(args, flag[2:].replace("-", "_")) for flag, key, *_ in OVERRIDES}
    return {k: v for k, v in vals.items() if v is not None}


def open_store(path: str):
    from data_prep.store import PreparedDataset

    return PreparedDataset(path)


def preset_resolution(args) -> int | None:
    return PRESETS.get(args.preset or "", {}).get("model", {}).get("resolution")  # auto: the store's


def default_name(args, store_resolution: int) -> str:
    """<store>-<preset or arch>; when a preset's resolution differs from the store's, the run
    is named by what it trains: <store>-<arch><store resolution>."""
    store = Path(args.data.rstrip("/")).name if args.data else "run"
    res = preset_resolution(args)
    if args.preset and (res is None or res == store_resolution):
        return f"{store}-{args.preset}"
    arch = args.arch or PRESETS.get(args.preset or "", {}).get("model", {}).get("arch", "stylegan")
    return f"{store}-{arch}{store_resolution}" if args.preset else f"{store}-{arch}"


def resolve(args) -> Plan:
    """Everything train.py needs before the Accelerator exists; raises UserError on bad input."""
    if getattr(args, "from_model", None) and not args.preset:
        args.preset = "finetune"
    elif not args.preset and getattr(args, "arch", None) is None:
        args.preset = "auto"  # no preset and no --arch: chosen from the store and the device
    plan = _resolve(args)
    check_arch_flags(plan.mcfg, explicit_overrides(args))
    _style_setup(plan, args)
    return plan


# Training flags only some architectures act on: (flag, config key, what the architecture needs, what it
# is, whether a value of 0 asks for nothing). Given to another architecture they are refused, not ignored.
ARCH_FLAGS = (
    ("--recon-weight", "recon_weight", "self_supervised", "reconstruction of its reals in D", True),
    ("--recon-interval", "recon_interval", "self_supervised", "reconstruction of its reals in D", False),
    ("--pl-weight", "pl_weight", "path_length", "path-length regularization", True),
    ("--pl-interval", "pl_interval", "path_length", "path-length regularization", False),
    ("--style-mixing", "style_mixing", "style_mixing", "style mixing", True),
)


def check_arch_flags(mcfg: ModelConfig, explicit: dict) -> None:
    """A flag the run's architecture has no use for is a one-line error, not a silent no-op (0 for a
    weight or probability asks for nothing and passes)."""
    arch = arch_of(mcfg)
    for flag, key, needs, what, zero_is_off in ARCH_FLAGS:
        if key not in explicit or getattr(arch, needs) or (zero_is_off and explicit[key] == 0):
            continue
        has = [name for name, a in REGISTRY.items() if getattr(a, needs)]
        raise UserError(f"{flag}: --arch {mcfg.arch} has no {what} ({', '.join(has)} has); leave {flag} out")


def _style_setup(plan: Plan, args) -> None:
    """Validate and load what style-guided training needs, before anything is written."""
    from ..style import read_style_images
    from . import finetune

    cfg = plan.cfg
    if plan.ckpt is None:
        cfg.style_images = [str(p) for p in (getattr(args, "style_image", None) or [])]
        if cfg.style_images:
            plan.style_images = read_style_images(cfg.style_images)
    elif cfg.style_images:
        plan.style_images = finetune.run_style_images(plan.run_dir)
        if len(plan.style_images) != len(cfg.style_images):
            raise UserError(f"{plan.run_dir}/style is missing style images the run was started with")
    elif getattr(args, "style_image", None):
        raise UserError("--style-image cannot be added when resuming; start a fine-tune run with --from the checkpoint")
    if cfg.style_weight < 0:
        raise UserError("--style-weight must be >= 0")
    for name, v in (("--style-every", cfg.style_every), ("--style-batch", cfg.style_batch)):
        if v < 1:
            raise UserError(f"{name} must be positive")
    if plan.style_images:
        from ..style import load_vgg_state

        plan.vgg_state = load_vgg_state(cfg.vgg_weights or None, cfg.vgg)


def _resolve(args) -> Plan:
    explicit = explicit_overrides(args)
    run_dir = ckpt = restart_in = None
    dataset = open_store(args.data) if args.data else None
    if args.resume and args.resume != "auto":
        target = checkpoint.run_dir_of(Path(args.resume))
        if (target / checkpoint.STATE).exists():
            ckpt, run_dir = target, target.parent.parent
            problem = verify(ckpt)
            if problem:
                good = checkpoint.newest_good(run_dir, exclude=ckpt)
                raise UserError(f"--resume {ckpt}: {problem} (damaged or modified); "
                                + (f"resume from {good} instead" if good else "no other checkpoint of the run verifies"))
        elif (target / "config.json").exists():
            run_dir, ckpt = target, _good_checkpoint(target)
            if ckpt is None:
                raise UserError(f"--resume {target}: the run has no complete checkpoint yet")
        else:
            raise UserError(f"--resume {target}: not a checkpoint dir (no {checkpoint.STATE}) or run dir (no config.json)")
    elif args.resume == "auto":
        if args.run_dir:
            run_dir = Path(args.run_dir)
            if not (run_dir / "config.json").exists():
                raise UserError(f"--run-dir {run_dir} is not a run dir (no config.json)")
        elif dataset is not None:
            run_dir = rundir.newest_run(Path(args.outdir), args.name or default_name(args, dataset.resolution))
        ckpt = _good_checkpoint(run_dir) if run_dir else None
        if ckpt is None:
            if dataset is None:
                raise UserError("--resume auto found nothing to resume: pass --data STORE (and the same --name/"
                                "--preset as the run), or --run-dir RUN")
            if run_dir is not None and not args.run_dir:
                # Stopped before its first checkpoint: nothing to lose, and a new run dir beside it
                # would leave the old one (and its partial checkpoint) behind for ever.
                restart_in = run_dir
            if is_main():
                print(f"resume auto: {restart_in} stopped before its first checkpoint; starting it over"
                      if restart_in else "resume auto: no complete checkpoint found, starting a new run", file=sys.stderr)
            run_dir = None

    if ckpt is not None:
        problem = checkpoint.resume_problem(ckpt, int(os.environ.get("RANK", "0")))
        if problem:
            raise UserError(problem)
        mcfg, cfg, _ = rundir.read_config(run_dir)
        cond = getattr(args, "cond", None)
        if cond is not None and cond != bool(mcfg.c_dim):  # --cond / --no-cond against what the run is
            flag, run_is, other = (("--cond", "unconditional", "a conditional") if cond else
                                   ("--no-cond", "class-conditional", "an unconditional"))
            raise UserError(f"{flag}: the run being resumed ({run_dir}) is {run_is}; resume it without {flag}, "
                            f"or start {other} run under another --name")
        for k, v in explicit.items():
            if k.startswith("model.") and getattr(mcfg, k[6:]) != v:
                raise UserError(f"cannot change {k[6:]} when resuming ({getattr(mcfg, k[6:])} in the run, {v} given)")
            if not k.startswith("model."):
                setattr(cfg, k, v)
        if "kimg" in explicit:  # the user's length: auto's first steps no longer size it
            cfg.resize_minutes = 0.0
        budget = ""
        if cfg.minutes and "minutes" not in explicit:
            # --minutes is a budget for one invocation, not part of the run: a new length given
            # alone (--kimg) runs to it; a plain resume gets the saved budget again, and says so.
            if "kimg" in explicit:
                budget = (f"resume: --kimg {cfg.kimg:g} given without --minutes, so the run's --minutes {cfg.minutes:g} "
                          "no longer stops it (add --minutes N for a budget)")
                cfg.minutes = 0.0
            else:
                budget = (f"resume: the run's --minutes {cfg.minutes:g} applies again: at most {cfg.minutes:g} more "
                          "minutes of training (--minutes 0 for no limit)")
        if args.data:
            cfg.data = args.data
        plan = Plan(mcfg, cfg, dataset or open_store(cfg.data), run_dir, ckpt)
        if budget:
            plan.notes.append(budget)
        if any(not k.startswith("model.") for k in explicit):  # the numbers given to carry it on
            check_ranges(plan)
        _launcher_precision(plan, "mixed_precision" in explicit, resuming=True)
        _device_precision(plan, "mixed_precision" in explicit)
        _check_resume(plan)
        return plan

    if dataset is None:
        raise UserError("--data STORE is required (prepare one with python -m data_prep)")
    auto_notes = []
    cond = getattr(args, "cond", None)  # --cond, --no-cond, or neither (auto decides; other presets: off)
    if args.preset == "auto":
        # --clusters conditions the run on its own clusters instead of the store's classes
        said = False if cond is None and explicit.get("model.clusters") else cond
        preset, auto_notes = auto_preset(dataset, explicit, cond=said)
        cond = preset["cond"]
    elif args.preset and args.preset not in PRESETS:
        raise UserError(f"unknown preset {args.preset!r}; choose from auto, {', '.join(PRESETS)}")
    else:
        preset = PRESETS.get(args.preset or "", {"model": {}, "train": {}})
    if getattr(args, "from_model", None):
        plan = _resolve_from(args, explicit, dataset, preset)
        plan.restart_in = restart_in
        return plan
    if getattr(args, "cls", None) is not None:
        raise UserError("--class is for fine-tuning a conditional model (--from) on an unlabelled store")
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
    cfg.name = args.name or default_name(args, dataset.resolution)
    plan = Plan(mcfg, cfg, dataset, notes=list(auto_notes))
    _finalize_new(plan, explicit.get("model.resolution"), bool(cond), preset_resolution(args))
    _launcher_precision(plan, "mixed_precision" in explicit)
    _device_precision(plan, "mixed_precision" in explicit)
    _settle_new(plan)
    plan.restart_in = restart_in
    return plan


def device_facts():
    """What `--preset auto` needs of the machine this process trains on."""
    import torch

    from ..precision import bf16_fast
    from .auto import DeviceFacts

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if torch.cuda.is_available():
        return DeviceFacts("cuda", count=world, cpus=os.cpu_count() or 1)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    fast = bf16_fast("cpu")[0]
    return DeviceFacts("cpu", count=world, cpus=max(1, min(cpus, torch.get_num_threads()) * world), bf16=fast,
                       matmul=_cpu_matmul(fast))


@functools.lru_cache(maxsize=None)
def _cpu_matmul(bf16: bool) -> dict:
    """This CPU's own matmul rate (0.3 s each, once a process), in the precisions a run here trains
    in fast: a constant from one CPU is off by 2x on another, and auto's half hour is sized from it."""
    import torch

    from ..precision import matmul_flops

    return {"no": matmul_flops(torch.float32), **({"bf16": matmul_flops(torch.bfloat16)} if bf16 else {})}


def auto_preset(dataset, explicit: dict, cond: bool | None = None) -> tuple[dict, list]:
    """`--preset auto` for this store on this machine: the preset (with "cond", whether the run is
    class-conditional) and one line per choice. `cond`: the user's --cond / --no-cond, or None."""
    from ..clusters import cluster_count
    from .auto import USER_KEYS, StoreFacts, choose
    from .flops import run_summary

    store = StoreFacts(len(dataset), dataset.resolution, dataset.num_classes, cond)
    device = device_facts()
    # The run's own step, as far as the user's flags change its FLOPs (--recon-weight 0 drops D's
    # decoders, --grad-accum N draws fresh fakes for G), so the half hour is sized for that step.
    run_keys = ("grad_accum", "recon_weight", "recon_interval", "match_perceptual", "match_frac")

    def train_flops(model: dict, train: dict | None = None) -> float:
        mcfg = ModelConfig(**{**model, **{k[6:]: v for k, v in explicit.items() if k.startswith("model.")},
                              "resolution": dataset.resolution})
        if mcfg.clusters == AUTO_CLUSTERS:  # decided from the store later; the count barely changes the FLOPs
            mcfg.clusters = cluster_count(len(dataset))
        # The recipe's step (its perceptual pull), as the user's flags change it.
        run = TrainConfig(**{k: v for k, v in {**(train or {}), **explicit}.items() if k in run_keys})
        return run_summary(mcfg, run)["train_flops"]

    user = {k.removeprefix("model."): v for k, v in explicit.items() if k.removeprefix("model.") in USER_KEYS}
    choice = choose(store, device, train_flops, minutes=explicit.get("minutes", 0.0), user=user)
    notes = [f"preset auto: {line}" for line in choice.reasons]
    return {"model": choice.model, "train": choice.train, "cond": choice.cond}, notes


def _resolve_from(args, explicit: dict, dataset, preset: dict) -> Plan:
    """A new run that starts from a trained model: its architecture and training settings, the
    preset (default: finetune) on top, explicit flags last."""
    from . import finetune

    base = finetune.load_base(args.from_model)
    fixed = finetune.check_fit(base, {k: v for k, v in explicit.items() if k.startswith("model.")}, dataset,
                               args.cls, bool(args.cond))
    mcfg = ModelConfig.from_dict(base.mcfg.to_dict())
    keep = {k: v for k, v in base.train.items() if k not in ("data", "outdir", "name", "preset", "init_from",
                                                              "fixed_class", "style_images", "freeze_d",
                                                              "resize_minutes")}
    cfg = TrainConfig.from_dict({**keep, **preset["train"]})
    for k, v in explicit.items():
        if not k.startswith("model."):
            setattr(cfg, k, v)
    cfg.betas = tuple(cfg.betas)
    cfg.data, cfg.preset, cfg.outdir = args.data, args.preset or "", args.outdir
    cfg.name = args.name or default_name(args, dataset.resolution)
    cfg.init_from, cfg.fixed_class = str(args.from_model), fixed
    plan = Plan(mcfg, cfg, dataset, base=base)
    _launcher_precision(plan, "mixed_precision" in explicit)
    _device_precision(plan, "mixed_precision" in explicit)
    _settle_new(plan)
    return plan


def _launcher_env() -> str:
    """The precision `accelerate launch` / `accelerate config` hands every process ("no" when none)."""
    return os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()


def _launcher_precision(plan: Plan, explicit: bool, resuming: bool = False) -> None:
    """`accelerate launch --mixed_precision X`, or the precision chosen in `accelerate config`,
    reaches every process as ACCELERATE_MIXED_PRECISION; artgan hands Accelerate its own
    precision, which would override it without a word. A launcher's bf16 or fp16 is the user's
    choice: a new run takes it unless --mixed-precision is given. An explicit flag, or a resumed
    run's own precision, wins with a note. ("no" is also what the launcher sets when nothing was
    chosen, so it changes nothing.)"""
    from ..precision import label

    cfg = plan.cfg
    env = _launcher_env()
    if env in ("no", cfg.mixed_precision):
        return
    if env not in ("bf16", "fp16"):
        plan.notes.append(f"note: accelerate's mixed precision {env} is not one artgan trains in; training in "
                          f"{cfg.mixed_precision} (--mixed-precision no|bf16|fp16)")
    elif explicit:
        plan.notes.append(f"note: --mixed-precision {cfg.mixed_precision} overrides accelerate's {env}")
    elif resuming:
        plan.notes.append(f"note: the run trains in {label(cfg.mixed_precision)}, as it started; accelerate's {env} is not "
                          f"applied (--mixed-precision {env} changes it)")
    else:
        cfg.mixed_precision = env
        plan.notes.append(f"note: mixed precision {env}, from accelerate launch / accelerate config "
                          "(--mixed-precision overrides it)")


def _device_precision(plan: Plan, explicit: bool) -> None:
    """bf16 from a preset, auto or a resumed run becomes float32 on a CPU without bf16 instructions,
    where it is emulated many times slower (gan.precision); asked for by --mixed-precision or the
    launcher, it stays, with a note."""
    cfg = plan.cfg
    if cfg.mixed_precision != "bf16":
        return
    from ..precision import bf16_fast, choose
    from .runtime import training_device

    launcher = _launcher_env() == "bf16"
    cfg.mixed_precision, note = choose("bf16", explicit or launcher, *bf16_fast(training_device()),
                                       asked_by="" if explicit else "accelerate launch / accelerate config")
    if note:
        plan.notes.append(note)


def _good_checkpoint(run_dir: Path) -> Path | None:
    """Newest checkpoint that verifies (damaged ones skipped with a warning naming the file);
    None when the run has none yet; an error when it has some but none verifies."""
    warn = (lambda m: print(m, file=sys.stderr)) if is_main() else None
    good = checkpoint.newest_good(run_dir, warn=warn)
    if good is None and checkpoint.complete_checkpoints(run_dir):
        raise UserError(f"no checkpoint of {run_dir} verifies (see the warnings above); nothing to resume from")
    return good


def _check_resume(plan: Plan) -> None:
    mcfg, ds = plan.mcfg, plan.dataset
    if mcfg.resolution != ds.resolution:
        raise UserError(f"the store is {ds.resolution}px but the run's model is {mcfg.resolution}px; "
                        "prepare the store at the model's resolution")
    if mcfg.c_dim and plan.cfg.fixed_class < 0 and mcfg.c_dim != ds.num_classes:  # --class runs: one class
        raise UserError(f"the run is conditional on {mcfg.c_dim} classes but the store has {ds.num_classes}")


def _finalize_new(plan: Plan, explicit_resolution: int | None, cond: bool, preset_res: int | None) -> None:
    """Fit a new run's config to the store and validate what the store decides."""
    mcfg, cfg, ds = plan.mcfg, plan.cfg, plan.dataset
    res = ds.resolution
    supported = arch_of(mcfg).resolutions
    if explicit_resolution is not None and explicit_resolution != res:
        if explicit_resolution not in supported:
            raise UserError(f"--resolution {explicit_resolution}: {mcfg.arch} trains at "
                            f"{', '.join(map(str, supported))}px; the nearest are "
                            f"{nearest_sizes(explicit_resolution, supported)} (the store {cfg.data} is {res}px)")
        raise UserError(f"--resolution {explicit_resolution} but the store {cfg.data} is {res}px; "
                        f"prepare it again with --resolution {explicit_resolution} or drop the flag")
    if preset_res is not None and preset_res != res:
        plan.notes.append(f"note: preset {cfg.preset} is tuned for {preset_res}px but the store is {res}px: "
                          f"training a {res}px {mcfg.arch} with the preset's other settings (run name {cfg.name})")
    mcfg.resolution = res
    if mcfg.clusters == AUTO_CLUSTERS:
        from ..clusters import cluster_count

        mcfg.clusters = cluster_count(len(ds))
        plan.notes.append(f"clusters: {mcfg.clusters} for {len(ds):,} images (--clusters auto: about sqrt(images / 8))")
    if mcfg.clusters > len(ds) // 2:
        raise UserError(f"--clusters {mcfg.clusters}: the store {cfg.data} has {len(ds):,} images, too few for that many "
                        f"clusters; use at most {max(2, len(ds) // 2)}, auto, or 0")
    if cond:
        if ds.num_classes < 2:
            raise UserError(f"--cond needs a store with at least 2 classes; {cfg.data} has {ds.num_classes} "
                            "(use --labels-from-folders or --label-column when preparing)")
        mcfg.c_dim, mcfg.class_names = ds.num_classes, list(ds.class_names)
    check_config(mcfg)  # after the store's classes: --clusters and --cond exclude each other


def _settle_new(plan: Plan) -> None:
    """What every new run (from scratch or --from) decides last: augmentation for the store's
    size, FreezeD's range, every number's range."""
    cfg, ds = plan.cfg, plan.dataset
    if cfg.aug == "auto":
        cfg.aug = "ada" if len(ds) < 10000 else "none"
    check_ranges(plan)


def check_ranges(plan: Plan) -> None:
    """Every training number within its range: a new run's, and a resumed run's after the flags
    given to carry it on."""
    from .finetune import discriminator_depth

    cfg = plan.cfg
    depth = discriminator_depth(plan.mcfg)
    if not 0 <= cfg.freeze_d <= depth:
        raise UserError(f"--freeze-d {cfg.freeze_d}: this discriminator has {depth} blocks; use 0..{depth}")
    for name, ok in (("--batch", cfg.batch >= 1), ("--grad-accum", cfg.grad_accum >= 1), ("--kimg", cfg.kimg > 0),
                     ("--keep", cfg.keep >= 1), ("--snap", cfg.snap > 0), ("--checkpoint-every", cfg.checkpoint_every > 0),
                     ("--r1-interval", cfg.r1_interval >= 1), ("--pl-interval", cfg.pl_interval >= 1),
                     ("--recon-interval", cfg.recon_interval >= 1),
                     ("--match-size", cfg.match_size >= 1), ("--match-bank", cfg.match_bank >= 1)):
        if not ok:
            raise UserError(f"{name} must be positive")
    for name, v in (("--r1-gamma", cfg.r1_gamma), ("--r2-gamma", cfg.r2_gamma), ("--recon-weight", cfg.recon_weight),
                    ("--match-weight", cfg.match_weight), ("--match-perceptual", cfg.match_perceptual),
                    ("--lecam-weight", cfg.lecam_weight),
                    ("--pl-weight", cfg.pl_weight), ("--lr-g", cfg.lr_g), ("--minutes", cfg.minutes),
                    ("--lr-d", cfg.lr_d), ("--ema-kimg", cfg.ema_kimg), ("--ema-rampup", cfg.ema_rampup),
                    ("--workers", cfg.workers)):
        if v < 0:
            raise UserError(f"{name} must be >= 0")
    from .matching import matched_count, matching_on
    from .runtime import micro_batch

    micro = micro_batch(cfg.batch, int(os.environ.get("WORLD_SIZE", "1")), cfg.grad_accum)  # refuse before a run dir exists
    if matching_on(cfg) and matched_count(micro, cfg.match_frac) == 0:
        raise UserError(f"--match-frac {cfg.match_frac:g} of a micro-batch of {micro} matches no real image, so "
                        f"--match-weight and --match-perceptual would do nothing: use --match-frac {1 / micro:.2g} "
                        "or more, or set both to 0")
    for flag, value in (("--match-perceptual", cfg.match_perceptual), ("--d-lite0", plan.mcfg.d_lite0)):
        if value > 0:  # both need EfficientNet-Lite0's weights
            from ..metrics.fid import MetricUnavailable
            from ..metrics.lite0 import weights_path

            try:
                weights_path()
            except MetricUnavailable as e:
                raise UserError(f"{flag} {value:g}: {e}; or {flag} 0") from None
    if cfg.metrics:
        from ..metrics import parse_metrics

        parse_metrics(cfg.metrics)
        if cfg.metrics_num < 2:
            raise UserError("--metrics-num must be at least 2")
    if cfg.apa == "on" and cfg.aug != "ada":
        raise UserError(f"--apa on shows D some fakes as reals as far as ADA measures D overfitting, and this run has "
                        f"--aug {cfg.aug}: use --aug ada, or leave --apa off")
    if cfg.aug_geom == "on" and cfg.aug == "none":
        raise UserError("--aug-geom on scales and rotates what D's augmentation shows it, and this run has none (--aug none, "
                        "or auto's choice from 10,000 images): add --aug ada, or leave --aug-geom off")
    for name, v in (("--aug-p", cfg.aug_p), ("--ada-p-max", cfg.ada_p_max), ("--style-mixing", cfg.style_mixing),
                    ("--match-frac", cfg.match_frac)):
        if not 0 <= v <= 1:
            raise UserError(f"{name} must be between 0 and 1")


def estimate(mcfg: ModelConfig, cfg: TrainConfig) -> str:
    """The run's length on this machine from its FLOPs, before any step (training measures it)."""
    from ..precision import label
    from .auto import duration, estimate_seconds
    from .flops import run_summary

    dev = device_facts()
    secs = estimate_seconds(run_summary(mcfg, cfg)["train_flops"], cfg.kimg, dev, cfg.mixed_precision, mcfg.arch,
                            cfg.batch, critics=mcfg.d_lite0 > 0)
    where = f"{dev.count} GPU(s)" if dev.kind == "cuda" else f"{dev.cpus} CPU core(s)"
    # A run auto sized to the user's --minutes (resize_minutes: the trainer sizes it again from its first
    # steps) ends at that budget, not cut by it, whatever its rounded kimg estimates to.
    cut = cfg.minutes and cfg.minutes * 60 < secs and cfg.resize_minutes != cfg.minutes
    budget = f", stopped by --minutes {cfg.minutes:g}" if cut else ""
    return f"estimated {duration(secs)} on {where} in {label(cfg.mixed_precision)}{budget} (training prints the measured time)"


def describe(mcfg: ModelConfig, cfg: TrainConfig) -> str:
    from .flops import run_summary

    s = run_summary(mcfg, cfg)
    lines = [json.dumps({"model": mcfg.to_dict(), "train": cfg.to_dict()}, indent=2),
             f"G: {s['g_params'] / 1e6:.2f}M params, {s['g_flops'] / 1e9:.3f} GFLOP/img forward",
             f"D: {s['d_params'] / 1e6:.2f}M params"
             + (f" (and {s['d_frozen'] / 1e6:.2f}M frozen)" if s["d_frozen"] else "")
             + f", {s['d_flops'] / 1e9:.3f} GFLOP/img forward",
             *([f"D's decoders: {s['decoder_flops'] / 1e9:.3f} GFLOP/img forward, on reals"] if s["decoder_flops"] else []),
             *([f"perceptual pull: {s['pull_flops'] / 1e9:.3f} GFLOP per real image (Lite0 on the matched pairs)"]
               if s["pull_flops"] else []),
             f"training: ~{s['train_flops'] / 1e9:.2f} GFLOP per real image (a step's forward and backward passes)"]
    return "\n".join(lines)
