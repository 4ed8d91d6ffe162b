"""Deterministic, resumable, rank-sharded stream of dataset indices.

Each epoch is a fresh permutation seeded by (seed, epoch); rank r takes every world-th
index. With `mirror`, an epoch covers every image and its mirror image (indices size..2*size-1,
which PreparedDataset reads mirrored): x-flips decided by the stream, not by an RNG. `start`
skips that many indices of this rank's stream without loading anything, which is how a
resumed run continues exactly where the checkpoint left off.
"""
from __future__ import annotations

import numpy as np
import torch


class InfiniteSampler(torch.utils.data.Sampler):
    def __init__(self, size: int, rank: int, world: int, seed: int, start: int = 0, mirror: bool = False):
        self.size = size * 2 if mirror else size  # indices per epoch
        self.rank, self.world = rank, world
        self.seed = seed
        self.start = start  # indices of this rank's stream already consumed

    def __iter__(self):
        per_epoch = len(range(self.rank, self.size, self.world))
        epoch, offset = divmod(self.start, per_epoch) if per_epoch else (0, 0)
        while True:
            perm = np.random.default_rng([self.seed, epoch]).permutation(self.size)
            mine = perm[self.rank :: self.world]
            for i in mine[offset:]:
                yield int(i)
            epoch, offset = epoch + 1, 0
