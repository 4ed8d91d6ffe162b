"""Typed configuration, written into every run dir, checkpoint and export, so any model
can be rebuilt from its files alone. Standard library only.

A field declared with `opt(...)` is also a train.py flag: its help text, flag name and
choices live here, once (gan.training.setup builds the parser table from them).
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Callable

# 2: ModelConfig.up_conv (StyleGAN's transposed up-convs); older artgan would build the other convs.
CONFIG_VERSION = 2


def opt(default, help: str, flag: str | None = None, choices: tuple | None = None, parse=None):
    """A config field that train.py exposes as `--flag` (default: --field-name). `parse`: the
    flag's argparse type (default: the default's type)."""
    return field(default=default, metadata={"help": help, "flag": flag, "choices": choices, "parse": parse})


def adam_betas(text: str) -> tuple:
    """'B1,B2' -> (B1, B2), each in [0, 1): the --betas flag's type (argparse reports its error)."""
    try:
        b = tuple(float(x) for x in text.split(","))
    except ValueError:
        b = ()
    if len(b) != 2 or not all(0.0 <= x < 1.0 for x in b):
        raise argparse.ArgumentTypeError(f"{text!r}: give two numbers in [0, 1) separated by a comma, like 0.5,0.999")
    return b


G_OUTS = ("tanh", "linear")  # ModelConfig.g_out (checked by models.check_config)
AUTO_CLUSTERS = -1  # --clusters auto, until the store's size decides it (gan.training.setup)


def cluster_arg(text: str) -> int:
    """'auto' or a count >= 0: the --clusters flag's type."""
    if text == "auto":
        return AUTO_CLUSTERS
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of clusters (0: none) or auto")
    return n


@dataclass
class ModelConfig:
    arch: str = opt("stylegan", "dcgan | stylegan | fastgan")  # registry name
    resolution: int = opt(64, "must match the store (default: the store's)")  # output size (power of two)
    c_dim: int = 0  # number of classes; 0 = unconditional
    class_names: list = field(default_factory=list)  # names for c_dim classes, in label order
    z_dim: int = opt(512, "latent size")
    w_dim: int = opt(512, "StyleGAN w size")
    mapping_layers: int = opt(8, "StyleGAN mapping layers", flag="--map")
    channel_base: int = opt(16384, "StyleGAN width: channels = min(base / res, max)")
    channel_max: int = opt(512, "StyleGAN max channels")
    g_channels: int = opt(64, "DCGAN G width (channels of its last block); FastGAN: G's channels at 64px")
    d_channels: int = opt(64, "DCGAN D width (channels of its first block); FastGAN: D's channels at 64px")
    mbstd_group: int = 4  # StyleGAN D minibatch-stddev group size
    # StyleGAN G's upsampling convs: "transposed" (stride 2 at the low resolution, then the
    # anti-aliasing filter; a quarter of the multiply-adds) or "filter_first" (models saved
    # before this field existed; same function away from the 1-pixel border).
    up_conv: str = "transposed"
    # FastGAN: spectral norm on every conv of G, and on the convs of D's blocks and head (as
    # FastGAN's own G and D; on clip art D's turned speckled blobs into clean fills and outlines,
    # G's then gave larger, more detailed figures). Configs saved before these fields existed
    # read False, so their exports load and their checkpoints resume into the models they were.
    g_spectral_norm: bool = True
    d_spectral_norm: bool = True
    # FastGAN D: besides the whole image's score, a score for each cell of its d_patch x d_patch
    # feature map (0: none), each judged by the loss as the whole image is, half the loss each.
    d_patch: int = opt(0, "fastgan D: also score each cell of its NxN feature map (4 up to half the resolution; "
                          "0: the whole image only)")

    # FastGAN D: besides its scores, one for the image shrunk to d_layout px, through a short path
    # of its own (FastGAN's D also judges a small copy of the image); 0: none.
    d_layout: int = opt(0, "fastgan D: also score the image shrunk to NxN px (8 up to half the resolution) "
                           "through a short path of its own; 0: none")
    # FastGAN D: Projected GAN's critics (Sauer et al. 2021) on the frozen feature maps of
    # EfficientNet-Lite0's first d_lite0 stages, beside D's own scores; 0: none.
    d_lite0: int = opt(0, "fastgan D: also score the image in frozen EfficientNet-Lite0 features, a critic on each of "
                          "its first N stages (Projected GAN; 1-4); 0: none")
    # FastGAN: self-attention (SAGAN) in G and D at attn x attn px: each position of that feature
    # map also sees every other, so a figure's far parts can agree; 0: none.
    attn: int = opt(0, "fastgan: self-attention in G and D at NxN px (8 up to half the resolution); 0: none")
    # FastGAN: self-conditioning on the collection's own clusters (gan.clusters): G reads the
    # cluster from its first latent coordinate, D scores each image against its cluster; 0: none.
    clusters: int = opt(0, "fastgan: condition G and D on N clusters of the collection's thumbnails, read from the "
                           "latent (self-conditioning; users still sample by seed alone); auto: about sqrt(images / 8); "
                           "0: none", parse=cluster_arg)

    # FastGAN G's last activation: tanh (FastGAN's own, the default of models saved before the field)
    # or linear (StyleGAN's: no saturation at the collection's flat white or black grounds; what
    # leaves the range is clipped only when a picture is written).
    g_out: str = opt("tanh", "fastgan G's output: tanh (FastGAN's) | linear (StyleGAN's: no saturation at flat grounds)",
                     choices=G_OUTS)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """A saved config; one saved before `up_conv` (or the spectral norm fields) existed keeps
        the convs it was trained with."""
        return _from_dict(cls, {"up_conv": "filter_first", "g_spectral_norm": False, "d_spectral_norm": False, **d})


@dataclass
class TrainConfig:
    data: str = ""  # prepared store directory
    outdir: str = "runs"  # parent of run dirs
    name: str = ""  # run name suffix (default: store name + preset)
    preset: str = ""
    kimg: float = opt(100.0, "training length in thousands of real images shown to D")
    minutes: float = opt(0.0, "stop after N minutes of training in this session with a checkpoint and exit 0 "
                              "(--resume auto carries the run on); 0: no limit")
    # Set by --preset auto on a CPU, where it sized `kimg` to this many minutes from a matmul timed at
    # start-up: the trainer sizes it again, once, from the speed of its own first steps (0: never).
    resize_minutes: float = 0.0
    batch: int = opt(32, "global batch over all processes")
    grad_accum: int = opt(1, "gradient accumulation steps")
    lr_g: float = opt(0.0025, "generator learning rate")
    lr_d: float = opt(0.0025, "discriminator learning rate")
    betas: tuple = opt((0.0, 0.99), "Adam's beta1,beta2 for G and D (StyleGAN2: 0,0.99; FastGAN and DCGAN: "
                                    "0.5,0.999)", parse=adam_betas)
    loss: str = opt("logistic", "adversarial loss: logistic (non-saturating) | hinge | relativistic (R3GAN's "
                                "pairing; use with --r2-gamma)", choices=("logistic", "hinge", "relativistic"))
    r1_gamma: float = opt(1.0, "R1 weight: gradient penalty on reals (0 disables)")
    r2_gamma: float = opt(0.0, "R2 weight: gradient penalty on generated images (R3GAN: the same as R1's)")
    lecam_weight: float = opt(0.0, "LeCam regularization (Tseng et al. 2021): D's real (fake) logits pulled toward the "
                                   "moving average of its fake (real) ones, with this weight (0 disables)")
    recon_weight: float = opt(1.0, "weight of D's reconstruction loss on reals (architectures whose D decodes: fastgan)")
    recon_interval: int = opt(1, "lazy reconstruction: D decodes its reals every N D steps, the loss scaled by N "
                                 "(as lazy R1; the decoders cost more FLOPs than the rest of fastgan's D)")
    match_weight: float = opt(0.0, "pull G's fake nearest each of some reals toward it at thumbnail size, with this "
                                   "weight (Inclusive GAN's reconstruction; 0 disables)")
    match_frac: float = opt(0.5, "fraction of each batch's reals given their nearest recent fake's latent")
    match_size: int = opt(16, "thumbnail size (px) that matching and the pull compare at")
    match_bank: int = opt(256, "recent fakes (latents and thumbnails) that matching searches")
    match_perceptual: float = opt(0.0, "also pull each matched fake toward its real image in EfficientNet-Lite0's early "
                                       "feature maps (LPIPS's distance), with this weight (4 in fastgan64 and auto; "
                                       "0 disables)")
    r1_interval: int = opt(16, "lazy R1: every N D steps, scaled by N")
    pl_weight: float = opt(0.0, "StyleGAN path-length weight (0 disables)")
    pl_interval: int = opt(4, "lazy path length: every N G steps")
    style_mixing: float = opt(0.9, "StyleGAN style-mixing probability")
    aug: str = opt("auto", "auto (ada below 10k images) | ada | fixed | none", choices=("auto", "ada", "fixed", "none"))
    aug_p: float = opt(0.0, "initial (ada) or fixed augmentation probability")
    ada_target: float = opt(0.6, "ADA target for E[sign(D(real))]")
    ada_interval: int = 4  # steps between p updates
    ada_kimg: float = opt(100.0, "ADA speed: p can go 0 -> 1 in this many kimg")
    ada_p_max: float = opt(1.0, "the most ADA's p may reach (augmentations leak into G's images as p nears 1)")
    apa: str = opt("off", "on: adaptive pseudo augmentation (APA): D is shown some of G's images as real, with a "
                   "probability that ADA's measure of D's overfitting raises and lowers (needs --aug ada)",
                   choices=("on", "off"))
    aug_geom: str = opt("off", "on: D's augmentation also scales and rotates (ADA's geometric group), each with "
                        "probability p", choices=("on", "off"))
    ema_kimg: float = opt(10.0, "G_ema half-life in kimg")
    ema_rampup: float = opt(0.05, "G_ema half-life at most this fraction of the images seen so far (0: none)")
    mixed_precision: str = opt("no", "no | bf16 | fp16", choices=("no", "bf16", "fp16"))
    compile: str = opt("auto", "torch.compile G and D for the main phases: auto (on with a GPU) | on | off",
                       choices=("auto", "on", "off"))
    compile_mode: str = opt("default", "torch.compile's mode when compiling: default | reduce-overhead (CUDA "
                                       "graphs: fewer kernel launches at small batches, more GPU memory) | "
                                       "max-autotune | max-autotune-no-cudagraphs",
                            choices=("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"))
    snap: float = opt(10.0, "sample grid every N kimg")
    checkpoint_every: float = opt(50.0, "checkpoint every N kimg")
    keep: int = opt(3, "checkpoints to keep (plus the best by metric)")
    seed: int = opt(0, "random seed")
    workers: int = opt(0, "DataLoader worker processes")
    data_on_device: str = opt("auto", "hold the whole store in GPU memory and gather batches there: auto (when it "
                                      "takes at most a quarter of the free memory) | on | off", choices=("auto", "on", "off"))
    deterministic: str = opt("off", "on: the same run repeated or resumed gives the same weights on a GPU too "
                                    "(deterministic kernels, no cuDNN autotuning; slower there). A CPU run is "
                                    "reproducible either way", choices=("off", "on"))
    log_every: int = opt(20, "steps between scalar logs (TensorBoard, progress bar)")
    nan_patience: int = 4  # consecutive non-finite steps before restoring a checkpoint
    xflip: bool = True  # random horizontal flips of reals
    metrics: str = opt("", "evaluate G_ema during training: swd[,fid,kid,pr,lite0]")
    metrics_every: float = opt(0.0, "kimg between evaluations (default: every checkpoint)")
    metrics_num: int = opt(2000, "images per evaluation")
    # Fine-tuning toward a style (gan.training.finetune).
    init_from: str = ""  # --from: the model this run started from ("" = from scratch)
    fixed_class: int = -1  # conditional base model on an unlabelled store: every image is this class
    freeze_d: int = opt(0, "fine-tuning: freeze the first K discriminator blocks (FreezeD)")
    style_images: list = field(default_factory=list)  # --style-image paths (copies live in the run dir)
    style_weight: float = opt(30.0, "weight of the VGG Gram style loss in G's objective (with --style-image)")
    style_every: int = opt(4, "a style-loss step every N steps, scaled by N (like lazy regularization)")
    style_batch: int = opt(4, "generated images per style-loss step")
    vgg: str = opt("vgg19", "feature network of the style loss", choices=("vgg19", "vgg16"))
    vgg_weights: str = opt("", "VGG weights file, or 'random' (tests, offline demos); default: torchvision's "
                               "cached ImageNet weights")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        obj = _from_dict(cls, d)
        obj.betas = tuple(obj.betas)
        return obj


def _from_dict(cls, d: dict):
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})


def cli_fields() -> list[tuple[str, str, Callable, str, tuple | None]]:
    """(flag, key, type, help, choices) for every `opt` field; key is 'model.<name>' or '<name>', type
    the flag's argparse type (the field's `parse`, else its default's type)."""
    out = []
    for cls, prefix in ((ModelConfig, "model."), (TrainConfig, "")):
        for f in dataclasses.fields(cls):
            if "help" in f.metadata:
                flag = f.metadata["flag"] or "--" + f.name.replace("_", "-")
                out.append((flag, prefix + f.name, f.metadata["parse"] or type(f.default), f.metadata["help"],
                            f.metadata["choices"]))
    return out


# Presets: starting points; explicit CLI flags override any field. A preset that names a
# resolution is tuned for it; on a store of another size train.py says so and names the run
# by the size it really trains at.
PRESETS: dict[str, dict] = {
    # Tiny and fast: minutes on 2 CPU cores at 32px. A higher lr than classic DCGAN's 2e-4
    # reaches recognizable styles in a few thousand steps on the procedural set. What limits it
    # there is G's updates, not images seen: batch 32 trains at ~0.8x batch 64's img/s with twice
    # the steps, and its samples at equal minutes have cleaner stripes and grids (batch 16: a
    # class collapsed). Width 32 rather than 48: twice the steps per minute, and in the 5 minutes
    # of make demo on a CPU without bf16 (float32, 98 against 57 kimg) cleaner stripes and
    # colour-field bands (SWD 48.7 against 58.4). Nearest-fake matching at weight 5: in 8 minutes
    # on one core, clean two-colour waves and round blobs on dark grounds where the run without it
    # had rainbow speckle (SWD 33.9 against 62.4). `make demo` adds --cond (the four styles as classes).
    "demo": dict(model=dict(arch="dcgan", g_channels=32, d_channels=32, z_dim=64),
                 train=dict(kimg=250, batch=32, lr_g=6e-4, lr_d=6e-4, betas=(0.5, 0.999), r1_gamma=0.05,
                            aug="none", ema_kimg=2.0, mixed_precision="bf16", snap=50, checkpoint_every=100,
                            match_weight=5.0)),
    # The classic DCGAN (3.6M-parameter G, 2.8M-parameter D at 64px).
    "dcgan64": dict(model=dict(arch="dcgan", resolution=64, g_channels=64, d_channels=64, z_dim=100),
                    train=dict(kimg=2000, batch=64, lr_g=2e-4, lr_d=2e-4, betas=(0.5, 0.999), r1_gamma=0.0,
                               ema_kimg=5.0)),
    # The small-collection model at 64px, sized for a CPU: the recipe --preset auto picks there.
    # Nearest-fake matching at weight 5 (docs/experiments.md: clean outlined shapes in flat fills where the
    # same minutes without it gave ragged, speckled blobs; weight 1 between the two). ADA's p held
    # at 0.7 at most: on the procedural set p reached 1 by 40 kimg and the colours and the panels'
    # bars leaked across every style; capped, the same run from 30 to 60 kimg scored SWD 66.2
    # against 74.5 (docs/experiments.md, "Longer than the half hour"). The clip art stays below it at 100 kimg.
    # The matched fakes also pulled toward their reals in Lite0's early features at weight 4 (the
    # thumbnail pull sets a figure's place and colours, this one its edges and parts): animals SWD 32.6
    # against 58.9, emoji 22.7 against 30.1, precision up on both (docs/experiments.md, "The perceptual
    # pull at weight 4"); weight 1 was between the two, weight 8 lost variety. Matching searches the
    # last 2,048 fakes, not 256: each real finds a nearer, more nearly its own fake (IMLE's many
    # candidates per real); people SWD 24.9 against 30.8 and precision 0.36 against 0.25, animals
    # 29.0 against 32.6 and 0.51 against 0.37 (docs/experiments.md, "A bank of 2,048 fakes").
    "fastgan64": dict(model=dict(arch="fastgan", resolution=64, z_dim=256, g_channels=16, d_channels=16),
                      train=dict(kimg=60, batch=16, lr_g=2e-4, lr_d=2e-4, betas=(0.5, 0.999), loss="hinge",
                                 r1_gamma=0.0, aug="ada", aug_p=0.2, ada_kimg=20, ada_p_max=0.7, ema_kimg=2.0,
                                 match_weight=5.0, match_perceptual=4.0, match_bank=2048, mixed_precision="bf16",
                                 snap=5,
                                 checkpoint_every=20)),
    "stylegan128": dict(model=dict(arch="stylegan", resolution=128, channel_base=16384, channel_max=512),
                        train=dict(kimg=10000, batch=32, r1_gamma=0.1, ema_kimg=10.0)),
    "stylegan256": dict(model=dict(arch="stylegan", resolution=256, channel_base=16384, channel_max=512),
                        train=dict(kimg=25000, batch=64, r1_gamma=1.0, ema_kimg=20.0, pl_weight=2.0)),
    # A few hundred images: adaptive augmentation on, stronger R1.
    "fewshot256": dict(model=dict(arch="stylegan", resolution=256, channel_base=16384, channel_max=512,
                                  mapping_layers=2),
                       train=dict(kimg=5000, batch=32, r1_gamma=2.0, ema_kimg=10.0, aug="ada")),
    # With --from (the default there): 20-500 images of a style. The architecture, learning rates
    # and loss come from the base run; this shortens the run, turns adaptive augmentation on and
    # lets it react within a few kimg, and averages G over a short horizon.
    "finetune": dict(model=dict(),
                     train=dict(kimg=40, aug="ada", ada_kimg=10, ema_kimg=1.0, ema_rampup=0.0, snap=5,
                                checkpoint_every=10, freeze_d=1)),
}
