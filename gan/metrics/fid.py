"""FID, KID and precision/recall as functions of feature batches (N, D), plus the
Inception-v3 feature extractor of the standard FID weights (via torch-fidelity)."""
from __future__ import annotations

import numpy as np
import torch

from ..weights import ensure_cached, load_state_file

class MetricUnavailable(Exception):
    """A metric's network or library is missing; the message says how to supply it."""


def fid_from_features(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    return fid_from_stats(mu1, s1, mu2, s2)


def fid_from_stats(mu1, s1, mu2, s2) -> float:
    """||mu1 - mu2||^2 + tr(s1) + tr(s2) - 2 tr(sqrt(s1 s2)). The last trace is the sum of the square
    roots of s1 s2's eigenvalues (real and non-negative for two covariances; rounding's tiny negative
    ones count as 0): the same number as scipy's sqrtm gives, 2-3x sooner at 1,280 features, and
    without sqrtm's "singular matrix" warnings when there are fewer images than features."""
    s1, s2 = np.asarray(s1, np.float64), np.asarray(s2, np.float64)
    eig = np.linalg.eigvals(s1 @ s2).real
    trace_sqrt = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    return float(((np.asarray(mu1) - np.asarray(mu2)) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt)


def kid_from_features(a: np.ndarray, b: np.ndarray, subsets: int = 100, subset_size: int = 1000,
                      seed: int = 0) -> tuple[float, float]:
    """Unbiased MMD^2 with the cubic polynomial kernel, mean and std over random subsets."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    m = min(subset_size, len(a), len(b))
    d = a.shape[1]
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        vals.append((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                    - 2 * kxy.mean())
    return float(np.mean(vals)), float(np.std(vals))


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3, chunk: int = 1024) -> dict:
    """Improved precision/recall (Kynkaanniemi et al. 2019): a sample is covered by a set
    when it lies within the k-NN radius of some member of that set."""
    real, fake = torch.as_tensor(real).float(), torch.as_tensor(fake).float()

    def radii(x):
        r = []
        for i in range(0, len(x), chunk):
            dist = torch.cdist(x[i : i + chunk], x)
            r.append(dist.kthvalue(k + 1, dim=1).values)  # +1: distance to itself is 0
        return torch.cat(r)

    def coverage(samples, manifold, rad):
        hit = []
        for i in range(0, len(samples), chunk):
            dist = torch.cdist(samples[i : i + chunk], manifold)
            hit.append((dist <= rad[None]).any(dim=1))
        return float(torch.cat(hit).float().mean())

    return {"precision": coverage(fake, real, radii(real)), "recall": coverage(real, fake, radii(fake))}


class InceptionFeatures:
    """2048-d pool features of the FID Inception-v3 (TF-ported weights), uint8 images in."""

    def __init__(self, device, weights: str | None = None):
        try:
            from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3, FeatureExtractorInceptionV3
        except ImportError:
            raise MetricUnavailable("FID/KID/PR need torch-fidelity: pip install 'artgan[metrics]'") from None
        if weights:
            # Validate with weights_only=True first: torch-fidelity itself unpickles a given file.
            load_state_file(weights, "Inception-v3", "--inception-weights", MetricUnavailable)
        else:
            ensure_cached(URL_INCEPTION_V3, "FID Inception-v3", "--inception-weights", MetricUnavailable)
        # Without a path torch-fidelity reads the torch.hub cache that ensure_cached filled.
        self.net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                               feature_extractor_weights_path=weights).to(device).eval()
        self.device = device

    @torch.no_grad()
    def __call__(self, images_uint8: torch.Tensor) -> torch.Tensor:
        return self.net(images_uint8.to(self.device))[0].float().cpu()
