"""Deterministic, resumable, rank-sharded stream of dataset indices, and batches gathered on the
device from a store held there whole.

Each epoch is a fresh permutation seeded by (seed, epoch); rank r takes every world-th
index. With `mirror`, an epoch covers every image and its mirror image (indices size..2*size-1,
which PreparedDataset reads mirrored): x-flips decided by the stream, not by an RNG. `start`
skips that many indices of this rank's stream without loading anything, which is how a
resumed run continues exactly where the checkpoint left off.
"""
from __future__ import annotations

import itertools
import warnings

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


class DeviceBatches:
    """Batches gathered from the whole uint8 store held in device memory: no loader process
    and no host->device copy of pixels per step, only of the batch's indices. The same images in
    the same order as the DataLoader path (the sampler's mirror indices included), converted
    by the dataset's own `normalize`, so a run may switch between the two on resume."""

    CHUNK = 1024  # images per host->device copy while loading (bounds the host memory used)

    def __init__(self, dataset, device: torch.device):
        n = dataset.count
        self.count = n
        self.images = torch.empty(dataset.images.shape, dtype=torch.uint8, device=device)
        with warnings.catch_warnings():
            # The store is a read-only memmap, only ever read here (copied to the device), so
            # torch.from_numpy's warning about non-writable arrays does not apply; a host copy of
            # each chunk just to silence it would read the whole store twice.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            for i in range(0, n, self.CHUNK):
                chunk = np.ascontiguousarray(dataset.images[i : i + self.CHUNK])
                self.images[i : i + self.CHUNK].copy_(torch.from_numpy(chunk))
        self.labels = torch.from_numpy(np.asarray(dataset.labels, dtype=np.int64)).to(device)
        self.device = device
        self.normalize = dataset.normalize  # the loader's own conversion: the same floats

    def batches(self, sampler: InfiniteSampler, micro: int):
        """An endless iterator of (images in [-1, 1], labels), `micro` indices from `sampler` each."""
        indices = iter(sampler)
        while True:
            idx = to_device_async(torch.tensor(list(itertools.islice(indices, micro)), dtype=torch.int64), self.device)
            mirror = idx >= self.count
            src = torch.where(mirror, idx - self.count, idx)
            x = self.images[src]
            x = torch.where(mirror[:, None, None, None], x.flip(3), x)
            yield self.normalize(x), self.labels[src]


def to_device_async(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`t` (on the host) copied to `device` without making the host wait for the GPU. A copy
    from pageable memory makes CUDA wait for every kernel already queued before it starts (a
    sync per step, which no host read shows); from pinned memory it is queued like a kernel.
    PyTorch's pinned-memory cache keeps the source until the copy has run."""
    if device.type == "cuda" and t.device.type == "cpu" and not t.is_pinned():
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


def fits_on_device(nbytes: int, device: torch.device, share: float = 0.25) -> bool:
    """Whether a store of `nbytes` takes at most `share` of the device's free memory."""
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= share * free
