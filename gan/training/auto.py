"""`--preset auto`: the preset for a store on a device, chosen by a pure function of their facts
(so it is unit-tested without training), with the reasons printed beside it.

The recipe numbers come from runs on real clip art (bench/quality.py --evaluate; docs/experiments.md,
"The first half hours" onward); the CPU speed constant from bench/train.py on a 2-core EPYC.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..config import PRESETS, TrainConfig

SMALL = 5000  # up to this many images: the small-collection model (FastGAN-style)
# D's 16 px layout score with LeCam (--d-layout 16 --lecam-weight 0.3), auto's choice under 1,000
# images on a CPU until bench/quality.py's halves were found split by index (a store keeps its
# source's order, so B was the animals' mammals, say): against random halves auto's seed-3 half
# hour on 281 clip-art animals scored SWD 46.3 without the pair and 50.5 with it (16 px: 41.8
# against 51.6); on 381 clip-art people 47.2 without and 40.5 with. One fair win and one loss is a
# tie, no reason for 4% more FLOPs a step, so auto leaves it out; the flags stay.
# From this many images a CPU half hour trains fastgan at twice fastgan64's learning rate (4e-4 for G
# and D). Against random halves (seed 3, 30 kimg, float32, one core each) it won on the real art of
# at least 1,000 images, every level: EmojiOne's 1,789 emoji SWD 29.8 against 49.5, clip-art icons'
# 1,761 37.8 against 48.1, the emoji's seed 4 35.7 against 48.7; it lost on the procedural set's
# 2,000 (83.5 against 69.0), an exception real art outvotes. Below, it lost or tied (D likely
# memorizes sooner): 281 clip-art animals 56.9 against 46.3, 381 people 48.6 against 47.2.
FAST_LR_FROM, FAST_LR = 1000, 4e-4
# The user's flags `choose` names in its reasons or leaves alone: the widths, D's layout score and
# LeCam, the run's batch and length (so that the reason lines and the time they name are for the run
# that trains), and the learning rates (auto's faster rate then stays off).
WIDTH_KEYS, LAYOUT_KEYS, LENGTH_KEYS = {"g_channels", "d_channels"}, {"d_layout", "lecam_weight"}, {"batch", "kimg"}
LR_KEYS = {"lr_g", "lr_d"}
MATCH_KEYS = {"match_weight", "match_perceptual", "match_size", "match_frac", "match_bank"}
SPEED_KEYS = {"d_lite0"}  # the user's feature critics: a CPU's half hour holds fewer images (CPU_CRITICS_SPEED)
RECON_KEYS = {"recon_interval", "recon_weight"}  # D's decoders, as the critics' line names them
USER_KEYS = WIDTH_KEYS | LAYOUT_KEYS | LENGTH_KEYS | LR_KEYS | MATCH_KEYS | SPEED_KEYS | RECON_KEYS
# Training FLOP/s this code reaches, to turn a model's FLOPs into an estimate before any step has
# run (the trainer then prints the speed it measures), in FLOPs as gan.training.flops counts a step
# (D's decoders included), on 2 CPU cores: in bf16 measured with bench/train.py on a 2-core EPYC with
# AVX512-BF16 (fastgan64 at batch 16, 58.0 img/s at 2.80 GFLOP per image: 162 GFLOP/s), in float32
# on a 2-core AVX2-only EPYC, the kind of CPU that trains in float32 (20.8 img/s: 58 GFLOP/s).
CPU_FLOPS_2_CORES = {"bf16": 162e9, "no": 58e9, "fp16": 20e9,
                     # bf16 on a CPU without bf16 instructions (oneDNN emulates it): matmul and conv
                     # both ran at 0.6-0.7 GFLOP/s per core on an AVX2-only EPYC, fp32 at 35
                     "bf16-emulated": 1.4e9}
# Other core counts scale as cores^CPU_CORE_EXPONENT: the threads of a step's many small ops share
# poorly. One core of that EPYC alone (taskset, one thread) ran fastgan64 at 37.5 img/s, 0.65 of two.
CPU_CORE_EXPONENT = 0.63
# The rate of other architectures' counted FLOPs relative to fastgan's, measured in the same
# bench/train.py run in bf16: dcgan64 at its batch 64, 108.8 img/s at 2.27 GFLOP, against fastgan64's
# 54.7 at 2.80 before the spectral-norm change (1.6x); after it dcgan64 109.8, against fastgan64's
# 50.6 in that run (1.8x) and 58.0 in an earlier one (1.5x).
CPU_ARCH_SPEED = {"dcgan": 1.6}
# --d-lite0's critics run EfficientNet-Lite0, whose depthwise convs are few FLOPs but slow ones: the
# FLOP count saw a run with them (and --recon-interval 4) as no dearer than the recipe, where its
# first steps measured 0.74x the recipe's speed, on one core (28.5 against 38.7 img/s) and on both
# (41.9 against about 57; the start-up said 2.2 hours for what took 3.3). Measured on CPUs only.
# Measured again later, in the same sessions as the recipe: 0.81x on both cores (50.6 against 62.3 img/s,
# one run after the other, their first 2.5 minutes) and 0.8-0.84x on one core each, side by side for
# 100 minutes (29-33 against 38-41); the estimate takes 0.8 (the trainer sizes the run again anyway).
CPU_CRITICS_SPEED = 0.8
# Where this process has measured its matmul rate (gan.precision.matmul_flops, the peak bench/train.py
# reports MFU against), a CPU run's rate is that times the share of it fastgan64 reaches at batch 16
# (bench/train.py's MFU on 2 cores): float32 0.56 on a 2-core AVX2-only EPYC (35.3 img/s, a faster
# one than the 58 GFLOP/s above: a constant planned its half hour as 18 minutes there), bf16 0.50-0.56
# (median of five 0.525) on the AVX512-BF16 EPYC since the resampling and spectral-norm ops were
# rewritten (0.37-0.40 before; one core of it: 39 img/s against a 203 GFLOP/s matmul, 0.55). Those
# runs timed fastgan64's first 40 steps, before its matching bank was full and the pulls ran; timed
# with them (bench/train.py now fills the bank first), bf16 ran at 0.455 and 0.462 of the peak where
# the old window gave 0.485 in the same session, so 0.46. CPUs differ twice over in speed; the
# measurement follows the one in use.
CPU_EFFICIENCY = {"no": 0.56, "bf16": 0.46}
# A labelled store (--labels-from-folders, --label-column) trains class-conditional unless the user
# says --no-cond: G draws each class and D judges each (class-conditional batch norm, projection).
# On the procedural set's four styles (2,000 images, 45 kimg on one core, bf16) the conditional
# runs scored SWD 48.6 and 44.5 against 66.9 and 68.2 without (seeds 3 and 4; the layout level 2.16x
# and 1.65x the floor against 4.08x and 3.67x, fd 131 and 134 against 197 and 195), each style drawn
# apart where the unconditional runs blended them into colour washes (docs/experiments.md, "A
# labelled store trains class-conditional"). Classes need images to learn from: under
# COND_MIN_PER_CLASS on average (a guard, not a measured edge) auto leaves them out and says so.
COND_MIN_PER_CLASS = 50
# A GPU's training rate from FLOPs: one H200 (torch 2.11, bf16, eager) trained StyleGAN2-ADA's 256 px
# config (bench/train.py sg2ada256, 369 GFLOP an image) at 40.5 TFLOP/s. A small model is paid in
# kernel launches, not arithmetic: fastgan64 (2.8 GFLOP) ran 17.4 steps a second at batch 16 there
# (278 img/s in bf16, 267 in float32, 0.8 TFLOP/s), so a step takes at least 1/GPU_STEPS_PER_S seconds.
# Eager figures: torch.compile (a GPU's default) launches fewer kernels a step, so this errs long.
GPU_FLOPS = 40e12
GPU_STEPS_PER_S = 17.0
CPU_MINUTES = 30  # what a CPU run aims at: the half hour (what it draws: CPU_RECORD)
# Where fastgan's recipe on a CPU drew its first pictures a person could name, per resolution, in
# kimg, from the runs on record (docs/experiments.md, "Past the half hour at 64 px" and "At 32 px, and
# three times the images"). A CPU's half hour (70-140 kimg at 64 px) drew the collections' colours,
# textures and rough forms, nothing to name, on clip art, emoji and procedural art, seeds 3 and 4;
# carried on, the emoji's grid at 331 kimg held a yellow smiling face and round flag-like discs and
# the clip-art people's at 315 blue stick figures with heads, among fragments; at 32 px the emoji at
# 400 kimg a bus, faces and flags. Sizes not measured get no line: the record says nothing of them.
CPU_RECORD = {32: 400, 64: 330}
# The same with --d-lite0's critics: the clip-art people carried on to 200 kimg drew a face with
# eyes and a mouth, yellow faces and a small standing figure among solid outlined shapes ("The
# critics past 200 kimg"); one collection, seed 3.
CPU_RECORD_CRITICS = {64: 200}
# Projected GAN's critics (--d-lite0 4 with --recon-interval 4) are auto's choice for a CPU run of at least
# CRITICS_FROM_MINUTES (the user's --minutes, or the time their --kimg takes at the critics' speed) at
# 64 px or more, unless the run is class-conditional (with the classes, the labelled procedural set
# lost SWD to the recipe on two seeds, its layout level 3.5-4.6x the floor against 1.8-2.0x). In the
# half hour auto keeps the recipe: there the critics see a quarter fewer images and, though Lite0's
# judges and the eye favoured them on every real collection, SWD's layout level (the target)
# favoured the recipe or tied, and the procedural set lost by every judge.
# Past it the critics drew as much as the recipe in the same wall time or more: the clip-art people's
# first faces and a standing figure at 200 kimg, where the recipe's 315 kimg drew fragments and stick
# figures; the emoji at 90 kimg what the recipe drew at 331, in half the time; the clip-art animals
# (one core, 100 minutes each) solid birds and horse-like silhouettes at 187 kimg against the recipe's
# torn, more colourful ones at 236, fd 137 against 164, precision 0.74 against 0.50, SWD 31.6 against
# 28.9 (the layout level 1.38x the floor against 0.82x). Lite0's judges favoured the critics on all
# three, SWD the recipe (docs/experiments.md, "The critics past 200 kimg", "The critics past the half hour").
CRITICS_FROM_MINUTES = 60
CRITICS_MIN_RES = 64  # measured at 64 px; at 32 px Lite0's last map is 2 px
CRITICS_STAGES, CRITICS_RECON_INTERVAL = 4, 4
MIN_KIMG = 10.0  # the shortest run auto plans on a CPU, however slow the CPU


def cpu_schedule(kimg: float) -> dict:
    """A CPU run's length and what follows from it: about ten progress grids and four checkpoints
    a run (each recalibrates G_ema's batch norm, 512 G forwards, 8 s of one core at 64px, so more
    would eat into a CPU's half hour)."""
    return dict(kimg=float(kimg), snap=max(1.0, round(kimg / 10)), checkpoint_every=max(5.0, round(kimg / 4)))


@dataclass(frozen=True)
class StoreFacts:
    images: int
    resolution: int
    classes: int = 0
    # The user's --cond (True) or --no-cond (False), or neither (None: auto decides from the classes).
    # False also where the run conditions on its own clusters (--clusters) instead.
    cond: bool | None = None


@dataclass(frozen=True)
class DeviceFacts:
    kind: str  # "cpu" | "cuda" | "mps"
    count: int = 1  # processes (GPUs) the run will use
    cpus: int = 1  # cores available to this process (CPU training)
    bf16: bool = True  # bf16 runs fast here (a CPU without bf16 instructions emulates it: gan.precision)
    # Matmul FLOP/s this process measured per --mixed-precision value ("no", "bf16"; CPU only): the
    # estimate scales it by CPU_EFFICIENCY. Empty: the constants above.
    matmul: dict = field(default_factory=dict)


@dataclass
class AutoChoice:
    model: dict
    train: dict
    reasons: list  # one line each: what was chosen and why
    cond: bool = False  # class-conditional on the store's labels


def fastgan_widths(res: int, gpu: bool) -> tuple[int, int]:
    """(G, D) channels at 64px: thin on a CPU (where every conv is paid for in minutes), FastGAN's
    own width on a GPU."""
    if not gpu:
        return 16, 16
    return (64, 64) if res <= 256 else (32, 32)


def choose(store: StoreFacts, device: DeviceFacts, train_flops=None, minutes: float = 0.0,
           user: dict | None = None) -> AutoChoice:
    """The preset for `store` on `device`. `train_flops(model_dict, train_dict) -> FLOPs per real image`
    (gan.training.flops) sizes a CPU run to CPU_MINUTES (or a longer `minutes`, the user's --minutes);
    without it the length is by images. `user`: the user's own flags among USER_KEYS, which win over
    the choice: `g_channels` / `d_channels` (what the reason line and the length are then for),
    `d_layout` / `lecam_weight` (a reason line names them), `batch` / `kimg` (the
    reason line names them, and on a CPU the time they take), `lr_g` / `lr_d` (auto's learning
    rate then stays fastgan64's and the user's flags set it)."""
    gpu = device.kind == "cuda"
    n, res = store.images, store.resolution
    reasons = []
    if gpu and n > SMALL and res >= 64:
        big = res >= 256
        model = dict(arch="stylegan", channel_base=16384, channel_max=512, mapping_layers=8 if n >= 20000 else 2)
        # StyleGAN2-ADA's configs: longer for more images, lighter R1 at lower resolutions.
        train = dict(kimg=25000 if big else 10000, batch=64 if big else 32, r1_gamma=1.0 if big else 0.1,
                     ema_kimg=20.0 if big else 10.0, pl_weight=2.0 if big else 0.0,
                     aug="ada" if n < 50000 else "none", mixed_precision="bf16")
        reasons.append(f"stylegan: {n:,} images at {res}px on a GPU; a collection this size carries a StyleGAN "
                       "(mapping network, style mixing, truncation)")
        return AutoChoice(model, train, reasons, _conditioning(store, reasons))
    g, d = fastgan_widths(res, gpu)
    user = user or {}
    g, d = user.get("g_channels", g), user.get("d_channels", d)
    # The recipe is fastgan64's (bench/quality.py sweeps, docs/experiments.md): FastGAN's Adam (lr 2e-4, betas
    # 0.5/0.999; 4e-4 on a CPU from FAST_LR_FROM images, above), hinge
    # (logistic scored alike, relativistic with R1+R2 worse), a small batch (more updates per image
    # seen), ADA from p 0.2 that adapts quickly (always-on augmentation leaked stripes into samples)
    # and stops at 0.7 (past it, on the procedural set, its colours and shifts leaked into longer runs),
    # and the model's default spectral norm in G and D (clean fills and outlines, then larger
    # figures, where plain models gave speckled blobs; width 32 at the same minutes was muddier:
    # fewer images seen), and nearest-fake matching at weight 5 with the perceptual pull at 4
    # (gan.training.matching). Projected GAN's critics (--d-lite0 4) won image for image on the
    # clip-art animals but cost a quarter to a third of a CPU's speed: in the half hour SWD lost on the animals
    # and people and every judge on the procedural set; one process on both cores for 30 minutes they
    # won the animals but the people's layout level went outside the 1.5x (1.57x against the
    # recipe's 1.30x), so auto leaves them out of the half hour; longer runs get them (CRITICS_FROM_MINUTES).
    recipe = PRESETS["fastgan64"]
    model = {**recipe["model"], "g_channels": g, "d_channels": d}
    del model["resolution"]  # the store's
    why = (f"{n:,} images, a small collection (up to {SMALL:,})" if n <= SMALL else
           f"{n:,} images on a CPU, where a StyleGAN at {res}px would take days")
    mine = " (as your flags set)" if WIDTH_KEYS & user.keys() else ""
    reasons.append(f"fastgan (the small-collection model), G/D width {g}/{d}{mine}: {why}")
    train = dict(recipe["train"])
    train.update({k: user[k] for k in MATCH_KEYS & user.keys()})
    if n > SMALL:
        train["aug"] = "none" if n >= 20000 else "ada"
    held = {k: v for k, v in user.items() if k in LAYOUT_KEYS}
    if "d_layout" in held:
        model["d_layout"] = held["d_layout"]
    if "lecam_weight" in held:
        train["lecam_weight"] = held["lecam_weight"]
    set_kimg, set_batch = user.get("kimg"), user.get("batch")
    if gpu:
        train.update(batch=set_batch or 32, ema_kimg=10.0, kimg=set_kimg or (2000 if n > 1000 else 1000), snap=20.0,
                     checkpoint_every=100.0)
        reasons.append(f"{_length(train, user)} on {device.count} GPU(s)")
    else:
        if not device.bf16:
            train["mixed_precision"] = "no"  # emulated bf16 is many times slower than float32
        precision = train["mixed_precision"]
        critics = user.get("d_lite0", 0) > 0  # the user's feature critics: their speed, their record
        per_kimg = _per_kimg(train_flops, model, train, res, device, precision, critics)
        budget = max(minutes, CPU_MINUTES)  # a longer --minutes: a run that long (a shorter one ends it)
        # A run of CRITICS_FROM_MINUTES or more (the user's --minutes, or the time their --kimg takes with
        # the critics) trains with Projected GAN's critics, unless the user's --d-lite0 says otherwise.
        offer = per_kimg is not None and "d_lite0" not in user and res >= CRITICS_MIN_RES
        conditional = _conditional(store)
        critics_line, c_per_kimg = None, None
        if offer:
            every = user.get("recon_interval", CRITICS_RECON_INTERVAL)  # the user's --recon-interval wins
            c_model, c_train = {**model, "d_lite0": CRITICS_STAGES}, {**train, "recon_interval": every}
            c_per_kimg = _per_kimg(train_flops, c_model, c_train, res, device, precision, True)
            planned = set_kimg * c_per_kimg / 60 if set_kimg else budget
            if minutes:  # the user's clock ends it first
                planned = min(planned, minutes)
            long = duration(planned * 60)
            if planned >= CRITICS_FROM_MINUTES and conditional:
                critics_line = (f"no feature critics, though this run is {long} long: judging each class, they "
                                "still drew the labelled procedural set's layout twice as far off as the recipe "
                                f"(--d-lite0 {CRITICS_STAGES} to add them)")
            elif planned >= CRITICS_FROM_MINUTES:
                model, train, per_kimg, critics = c_model, c_train, c_per_kimg, True
                mine = " (as you set)" if "recon_interval" in user else ""
                decoders = "" if user.get("recon_weight", 1.0) <= 0 else f", D's decoders one step in {every}{mine}"
                critics_line = (f"Projected GAN's critics (--d-lite0 {CRITICS_STAGES}{decoders}): this run is {long} "
                                "long; past the half hour they drew as much a person could name as the recipe in the "
                                "same time or more (the clip-art people's first faces), with better fd and precision "
                                "and worse SWD (--d-lite0 0 for the recipe alone)")
        kimg = max(MIN_KIMG, round(budget * 60 / per_kimg)) if per_kimg else 100.0
        if set_batch:
            train["batch"] = set_batch
        if set_kimg:  # the user's length: the time it takes, and where --minutes ends it first
            kimg = set_kimg
            budget = kimg * per_kimg / 60 if per_kimg else 0  # minutes, unrounded: a short run says its seconds
        train.update(cpu_schedule(kimg))
        if not set_kimg:  # a matmul's estimate: the trainer sizes the run again from its first steps
            train["resize_minutes"] = float(budget)
        how = "bf16" if precision == "bf16" else "float32 (this CPU has no bf16 instructions)"
        peak = device.matmul.get(precision, 0.0) if per_kimg else 0.0
        speed = f", from a matmul measured here at {peak / 1e9:.0f} GFLOP/s" if peak > 0 else ""
        span = duration(budget * 60) if set_kimg else f"{budget:g} minutes"  # auto's own: its half hour as such
        when = f"about {span}" if budget else "time unknown"
        sooner = bool(minutes) and minutes < budget  # the clock stops it first; --resume carries it on
        if set_kimg:
            change = f"; --minutes {minutes:g} ends it sooner" if sooner else ""
        elif sooner:
            change = (f"; the first steps' speed sizes it again; --minutes {minutes:g} ends it sooner "
                      "(--resume carries it on)")
        else:
            change = "; the first steps' speed sizes it again (--kimg or --minutes to change)"
        reasons.append(f"{_length(train, user)}: {when} on {device.cpus} CPU core(s) in {how}{speed}{change}")
        if critics_line:
            reasons.append(critics_line)
        # A shorter run is told what a longer one draws: with the critics where auto would add them to it.
        longer = (offer and not critics and not conditional and res in CPU_RECORD_CRITICS
                  and CPU_RECORD_CRITICS[res] * c_per_kimg / 60 >= CRITICS_FROM_MINUTES)
        if longer and kimg < CPU_RECORD_CRITICS[res]:
            expect = cpu_expectation(res, kimg, c_per_kimg, critics=True)
        else:
            expect = cpu_expectation(res, kimg, per_kimg, critics=critics)
        if expect is not None:
            reasons.append(expect)
        if n >= FAST_LR_FROM and not LR_KEYS & user.keys():  # the user's --lr-g / --lr-d win
            train.update(lr_g=FAST_LR, lr_d=FAST_LR)
            reasons.append(f"learning rate {FAST_LR:g} for G and D ({recipe['train']['lr_g']:g} below "
                           f"{FAST_LR_FROM:,} images, where it lost)")
    reasons.append(_matching_line(train, user))
    if held:  # auto leaves them out (above); the user's own values, named
        layout, lecam = model.get("d_layout", 0), train.get("lecam_weight", 0.0)
        parts = []
        if layout:
            parts.append(f"D also scores a {layout} px copy of each image")
        if lecam:
            parts.append(f"LeCam at {lecam:g}")
        what = ", ".join(parts) or "D's layout score and LeCam off"
        given = " and ".join(f"--{k.replace('_', '-')} {v:g}" for k, v in sorted(held.items()))
        reasons.append(f"{what} ({given}, as you set)")
    return AutoChoice(model, train, reasons, _conditioning(store, reasons))


def _per_kimg(train_flops, model: dict, train: dict, res: int, device: DeviceFacts, precision: str,
              critics: bool) -> float | None:
    """The estimate's seconds a kimg for this model and step on a CPU (None without a FLOP count)."""
    if train_flops is None:
        return None
    return estimate_seconds(train_flops({**model, "resolution": res}, train), 1.0, device, precision, critics=critics)


def cpu_expectation(res: int, kimg: float, per_kimg: float | None, critics: bool = False) -> str | None:
    """What a CPU run of `kimg` at `res` px can be expected to draw, from CPU_RECORD (or, for a run
    with --d-lite0's `critics`, CPU_RECORD_CRITICS; None where nothing was measured at that size),
    with the length that drew more and how long it takes here (`per_kimg`: the estimate's seconds a kimg)."""
    record = CPU_RECORD_CRITICS if critics else CPU_RECORD
    if res not in record:
        return None
    first = record[res]
    runs, their = ("the run on record with --d-lite0's critics", "its") if critics else ("the runs on record", "their")
    if kimg >= first:
        return (f"what to expect: at {res} px {runs} drew {their} first pictures a person could name, "
                f"among fragments, by {first} kimg")
    takes = f", about {duration(first * per_kimg)} here" if per_kimg else ""
    return (f"what to expect from {kimg:g} kimg: the collection's colours, textures and rough forms, not yet "
            f"pictures a person would name; at {res} px {runs} drew {their} first ones, among fragments, "
            f"at about {first} kimg (--kimg {first}{takes})")


def _conditioning(store: StoreFacts, reasons: list) -> bool:
    """Whether the run is class-conditional: the user's --cond / --no-cond, else on for a store with
    at least 2 classes of COND_MIN_PER_CLASS images each on average. Adds a line where auto decided."""
    cond = _conditional(store)
    if store.cond is not None or store.classes < 2:
        return cond
    each = store.images / store.classes
    if not cond:
        reasons.append(f"unconditional: the store's {store.classes:,} classes hold {each:.0f} images each on average, "
                       f"under the {COND_MIN_PER_CLASS} auto asks of a class (--cond for a class-conditional model)")
        return False
    reasons.append(f"class-conditional on the store's {store.classes:,} classes ({each:,.0f} images each on average): "
                   "G draws each class and D judges each (--no-cond for one model of them all)")
    return True


def _conditional(store: StoreFacts) -> bool:
    """Whether the run will be class-conditional (what _conditioning decides, without its line)."""
    if store.cond is not None or store.classes < 2:
        return bool(store.cond)
    return store.images / store.classes >= COND_MIN_PER_CLASS


def _matching_line(train: dict, user: dict) -> str:
    """What nearest-fake matching does in this run: its share of reals, its two pulls and their
    weights, each marked where the user's flag set it."""
    mine = lambda key: ", as you set" if key in user else ""  # noqa: E731  (inside a pull's brackets)
    said = lambda key: " (as you set)" if key in user else ""  # noqa: E731  (after a share or a bank)
    size = train.get("match_size", TrainConfig.match_size)
    pulls = ([f"at {size} px (weight {train['match_weight']:g}{mine('match_weight')})"] if train["match_weight"] > 0
             else [])
    if train["match_perceptual"] > 0:
        pulls.append(f"in EfficientNet-Lite0's early features (weight {train['match_perceptual']:g}"
                     f"{mine('match_perceptual')})")
    if not pulls:
        return "nearest-fake matching off (as you set)"
    frac = train.get("match_frac", TrainConfig.match_frac)
    share = {0.5: "half", 1.0: "all"}.get(frac, f"{frac:g}") + said("match_frac")
    offs = "".join(f"; {what} off, as you set" for key, what in (("match_weight", "the thumbnail pull"),
                                                                 ("match_perceptual", "the perceptual pull"))
                   if key in user and train[key] <= 0)
    bank = train.get("match_bank", TrainConfig.match_bank)
    return f"nearest-fake matching: {share} of each batch's reals pull their nearest of the last {bank:,} fakes" \
           f"{said('match_bank')} toward them {' and '.join(pulls)}{offs}"


def _length(train: dict, user: dict) -> str:
    """'batch B, K kimg', each followed by '(as you set)' where the user's flag gave it."""
    mine = lambda key: " (as you set)" if key in user else ""  # noqa: E731
    return f"batch {train['batch']}{mine('batch')}, {train['kimg']:g} kimg{mine('kimg')}"


def estimate_seconds(train_flops: float, kimg: float, device: DeviceFacts, precision: str,
                     arch: str = "fastgan", batch: int = 0, critics: bool = False) -> float:
    """Wall seconds for `kimg` at `train_flops` per image, before any step has been measured.
    `batch` (the whole step's, all GPUs together) bounds a GPU's rate by its steps a second;
    `critics`: the run has --d-lite0's feature critics."""
    if device.kind == "cuda":
        rate = GPU_FLOPS * device.count
        if batch:
            rate = min(rate, GPU_STEPS_PER_S * batch * train_flops)
    else:
        key = "bf16-emulated" if precision == "bf16" and not device.bf16 else precision
        measured = device.matmul.get(key, 0.0) if key in CPU_EFFICIENCY else 0.0
        if measured > 0:  # every process measured its own threads' rate
            rate = measured * CPU_EFFICIENCY[key] * max(1, device.count)
        else:
            rate = CPU_FLOPS_2_CORES.get(key, CPU_FLOPS_2_CORES["no"]) * (max(1, device.cpus) / 2) ** CPU_CORE_EXPONENT
        rate *= CPU_ARCH_SPEED.get(arch, 1.0) * (CPU_CRITICS_SPEED if critics else 1.0)
    return kimg * 1000 * train_flops / rate


def duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "unknown"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} minutes"
    return f"{seconds / 3600:.1f} hours"
