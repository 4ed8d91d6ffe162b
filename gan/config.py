"""Typed configuration, written into every run dir, checkpoint and export, so any model
can be rebuilt from its files alone. Standard library only."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

CONFIG_VERSION = 1


@dataclass
class ModelConfig:
    arch: str = "stylegan"  # registry name: dcgan | stylegan
    resolution: int = 64  # output size (power of two)
    c_dim: int = 0  # number of classes; 0 = unconditional
    class_names: list = field(default_factory=list)  # names for c_dim classes, in label order
    z_dim: int = 512  # latent size
    w_dim: int = 512  # StyleGAN intermediate latent size
    mapping_layers: int = 8  # StyleGAN mapping-network depth
    channel_base: int = 16384  # StyleGAN width: channels at res r = min(base // r, max)
    channel_max: int = 512
    g_channels: int = 64  # DCGAN width of the last G block (ngf)
    d_channels: int = 64  # DCGAN width of the first D block (ndf)
    mbstd_group: int = 4  # StyleGAN D minibatch-stddev group size

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        return _from_dict(cls, d)


@dataclass
class TrainConfig:
    data: str = ""  # prepared store directory
    outdir: str = "runs"  # parent of run dirs
    name: str = ""  # run name suffix (default: store name + preset)
    preset: str = ""
    kimg: float = 100.0  # training length in thousands of real images shown to D
    batch: int = 32  # global batch (all processes, before accumulation split)
    grad_accum: int = 1
    lr_g: float = 0.0025
    lr_d: float = 0.0025
    betas: tuple = (0.0, 0.99)
    loss: str = "logistic"  # logistic (non-saturating) | hinge
    r1_gamma: float = 1.0  # 0 disables R1
    r1_interval: int = 16  # lazy R1: every N D steps, scaled by N
    pl_weight: float = 0.0  # StyleGAN path-length regularization; 0 disables
    pl_interval: int = 4
    style_mixing: float = 0.9  # StyleGAN style-mixing probability
    aug: str = "auto"  # auto (ada below 10k images) | ada | fixed | none
    aug_p: float = 0.0  # initial / fixed augmentation probability
    ada_target: float = 0.6
    ada_interval: int = 4  # steps between p updates
    ada_kimg: float = 100.0  # p can go 0 -> 1 in this many kimg
    ema_kimg: float = 10.0  # G_ema half-life
    ema_rampup: float = 0.05  # half-life <= this fraction of images seen; 0 disables
    mixed_precision: str = "no"  # no | bf16 | fp16
    snap: float = 10.0  # sample grid every N kimg
    checkpoint_every: float = 50.0  # kimg
    keep: int = 3  # checkpoints kept (plus the best by metric)
    seed: int = 0
    workers: int = 0  # DataLoader worker processes
    log_every: int = 20  # steps between scalar logs
    nan_patience: int = 4  # consecutive non-finite steps before restoring a checkpoint
    xflip: bool = True  # random horizontal flips of reals
    metrics: str = ""  # comma-separated: swd, fid, kid, pr ("" = none)
    metrics_every: float = 0.0  # kimg between evaluations (0: at every checkpoint)
    metrics_num: int = 2000  # generated (and real) images per evaluation
    debug_faults: str = ""  # test hooks: "nan@12,13" / "oom@3"

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


# Presets: starting points; explicit CLI flags override any field.
PRESETS: dict[str, dict] = {
    # Tiny and fast: minutes on 2 CPU cores at 32px. A higher lr than classic DCGAN's 2e-4
    # reaches recognizable styles in a few thousand steps on the procedural set.
    "demo": dict(model=dict(arch="dcgan", g_channels=48, d_channels=48, z_dim=64),
                 train=dict(kimg=200, batch=64, lr_g=6e-4, lr_d=6e-4, betas=(0.5, 0.999), r1_gamma=0.05,
                            aug="none", ema_kimg=2.0, mixed_precision="bf16", snap=50, checkpoint_every=100)),
    # The classic DCGAN (3.6M-parameter G, 2.8M-parameter D at 64px).
    "dcgan64": dict(model=dict(arch="dcgan", resolution=64, g_channels=64, d_channels=64, z_dim=100),
                    train=dict(kimg=2000, batch=64, lr_g=2e-4, lr_d=2e-4, betas=(0.5, 0.999), r1_gamma=0.0,
                               ema_kimg=5.0)),
    "stylegan128": dict(model=dict(arch="stylegan", resolution=128, channel_base=16384, channel_max=512),
                        train=dict(kimg=10000, batch=32, r1_gamma=0.1, ema_kimg=10.0)),
    "stylegan256": dict(model=dict(arch="stylegan", resolution=256, channel_base=16384, channel_max=512),
                        train=dict(kimg=25000, batch=64, r1_gamma=1.0, ema_kimg=20.0, pl_weight=2.0)),
    # A few hundred images: adaptive augmentation on, stronger R1.
    "fewshot256": dict(model=dict(arch="stylegan", resolution=256, channel_base=16384, channel_max=512,
                                  mapping_layers=2),
                       train=dict(kimg=5000, batch=32, r1_gamma=2.0, ema_kimg=10.0, aug="ada")),
}
