"""How styled and how varied a generator's samples are: the numbers behind style-guided
fine-tuning. Both are measured with the same VGG as the style loss (gan.style)."""
from __future__ import annotations

import torch

from ..style import CONTENT_NAME, StyleTarget, VGGFeatures, style_size


@torch.no_grad()
def style_report(images: torch.Tensor, target: StyleTarget, batch: int = 16) -> dict:
    """images: generator outputs in [-1, 1], (N, 3, R, R), N >= 2.

    style_distance: mean Gram distance of each image to the style images (the style loss).
    diversity: mean pairwise distance between the images' conv4_2 features (what is where),
    per feature element, so collapse toward one look shows as a drop."""
    dists, feats = [], []
    for i in range(0, len(images), batch):
        chunk = images[i : i + batch].to(target.vgg.mean.device)
        d, vgg_feats = target.distance_and_features(chunk)
        dists.append(d.cpu())
        feats.append(vgg_feats[CONTENT_NAME].float().flatten(1).cpu())
    f = torch.cat(feats)
    pair = torch.cdist(f, f) / f.shape[1] ** 0.5
    n = len(f)
    return {"style_distance": torch.cat(dists).mean().item(), "diversity": (pair.sum() / (n * (n - 1))).item()}


def sampled_style_report(sampler, seeds: list[int], cls, images: list, vgg_state, vgg: str = "vgg19") -> dict:
    """`style_report` of a generator's samples for `seeds` (a `gan.sampling.Sampler`) against the
    style images: class `cls` for a conditional model, or its classes in turn when None."""
    from ..sampling import latents_for_seeds

    target = StyleTarget(VGGFeatures(vgg_state, vgg).to(sampler.device), images, style_size(sampler.cfg.resolution))
    c_dim = sampler.cfg.c_dim
    out = []
    for i in range(0, len(seeds), 32):
        chunk = seeds[i : i + 32]
        if c_dim and cls is None:
            c = torch.tensor([s % c_dim for s in chunk])
        else:
            c = sampler.class_index(cls) if c_dim else None
        out.append(sampler.from_z(latents_for_seeds(chunk, sampler.cfg.z_dim), c))
    return style_report(torch.cat(out), target)
