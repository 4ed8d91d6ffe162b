"""The prepared store: uint8 pixels (N, 3, R, R) in one raw memory-mappable file,
int64 labels, manifest.json, preview.png and rejected.jsonl.

Written atomically: everything is built in a hidden sibling directory, fsynced, then
renamed into place, so an interrupted run never leaves a half store or damages the old one.
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .errors import UserError

PIXELS = "images.u8"
LABELS = "labels.npy"
MANIFEST = "manifest.json"
PREVIEW = "preview.png"
REJECTED = "rejected.jsonl"
FORMAT_VERSION = 1


def artgan_version() -> str:
    try:
        from importlib.metadata import version

        return version("artgan")
    except Exception:
        return "0+unknown"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_output_dir(out: Path) -> None:
    """Refuse to replace anything that is not a prepared store, and an --out whose folder cannot
    be made or written to (before any work)."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        os.rmdir(tempfile.mkdtemp(prefix=f".{out.name}.probe-", dir=out.parent))  # where the store is built
    except OSError as e:
        why = "a file is in the way" if isinstance(e, (FileExistsError, NotADirectoryError)) else e.strerror or e
        raise UserError(f"--out {out}: cannot write in the folder {out.parent} ({why}); pick another --out") from None
    if out.exists():
        if not out.is_dir():
            raise UserError(f"--out {out} is a file; pass a new or existing store directory")
        if any(out.iterdir()) and not (out / MANIFEST).exists():
            raise UserError(f"--out {out} is a non-empty directory that is not a prepared store; "
                            "refusing to overwrite it, pick another --out")


class StoreWriter:
    """Append images, then `commit` (atomic rename) or `abort` (remove the temporary dir)."""

    def __init__(self, out: Path, resolution: int):
        self.out = Path(out)
        self.resolution = resolution
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._clean_stale()
        self.tmp = self.out.parent / f".{self.out.name}.tmp-{os.getpid()}"
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir()
        self._pixels = open(self.tmp / PIXELS, "wb")
        self._rejected = open(self.tmp / REJECTED, "w", encoding="utf-8")
        self._hash = hashlib.sha256()
        self.labels: list[str | None] = []
        self.entries: list[dict] = []

    def _clean_stale(self) -> None:
        """Undo what a killed run left: its temporary store goes, an old store it had moved aside goes back."""
        recover_store(self.out)
        for p in _left_by_dead(self.out, "tmp"):
            shutil.rmtree(p, ignore_errors=True)

    def add(self, chw: np.ndarray, label: str | None, source_id: str) -> None:
        data = np.ascontiguousarray(chw, dtype=np.uint8).tobytes()
        self._pixels.write(data)
        self._hash.update(data)
        self.labels.append(label)
        self.entries.append({"id": source_id, "sha256": hashlib.sha256(data).hexdigest()})

    def reject(self, source_id: str, reason: str, detail: str = "") -> None:
        self._rejected.write(json.dumps({"id": source_id, "reason": reason, "detail": detail},
                                        ensure_ascii=False) + "\n")

    def __len__(self) -> int:
        return len(self.entries)

    def commit(self, manifest: dict, class_order: list[str] | None) -> Path:
        self._pixels.flush()
        os.fsync(self._pixels.fileno())
        self._pixels.close()
        self._rejected.flush()
        os.fsync(self._rejected.fileno())
        self._rejected.close()

        present = {x for x in self.labels if x is not None}
        if present:
            order = [c for c in (class_order or []) if c in present]
            order += sorted(present - set(order))
            index = {c: i for i, c in enumerate(order)}
            labels = np.array([index[x] if x is not None else -1 for x in self.labels], np.int64)
        else:
            order = []
            labels = np.full(len(self.labels), -1, np.int64)
        np.save(self.tmp / LABELS, labels)
        for e, lab in zip(self.entries, labels.tolist()):
            e["label"] = lab
        manifest = dict(manifest, format=FORMAT_VERSION, artgan_version=artgan_version(),
                        resolution=self.resolution, count=len(self.entries), layout="NCHW uint8",
                        class_names=order, pixels_sha256=self._hash.hexdigest(), images=self.entries)
        with open(self.tmp / MANIFEST, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1, ensure_ascii=False)
            f.flush()
            os.fsync(f.fileno())
        preview_grid(self._preview_images(labels)).save(self.tmp / PREVIEW)
        _fsync_dir(self.tmp)

        if self.out.exists() and _exchange(self.tmp, self.out):
            old = self.tmp  # the old store, swapped out in one atomic step
        else:
            # No atomic exchange here: a kill between the two renames leaves the old store in
            # .old-PID, which the next writer or reader puts back (recover_store).
            old = None
            if self.out.exists():
                old = self.out.parent / f".{self.out.name}.old-{os.getpid()}"
                os.rename(self.out, old)
            os.rename(self.tmp, self.out)
        _fsync_dir(self.out.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.out

    def _preview_images(self, labels: np.ndarray, n: int = 64) -> list[np.ndarray]:
        """Up to n images spread over the whole store, classes taking turns, so the preview
        shows every class and not just the first files in sorted order."""
        if not len(labels):
            return []
        r = self.resolution
        pixels = np.memmap(self.tmp / PIXELS, dtype=np.uint8, mode="r", shape=(len(labels), 3, r, r))
        picks = preview_indices(labels, n)
        return [np.asarray(pixels[i]).transpose(1, 2, 0) for i in picks]

    def abort(self) -> None:
        for f in (self._pixels, self._rejected):
            try:
                f.close()
            except OSError:  # its buffered tail cannot be written (disk full): the file goes anyway
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)


def die_with_parent(parent: int, sig: int | None = None) -> None:
    """Worker initializer (data_prep's pool, the trainer's DataLoader): a worker gets `sig`
    (default SIGKILL) when the process that started it dies, SIGKILL included, instead of living
    on re-parented to init. Linux prctl; elsewhere a no-op."""
    import signal

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, sig or signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            return
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)


def _left_by_dead(out: Path, kind: str) -> list[Path]:
    """.<out>.<kind>-PID siblings whose process is gone."""
    found = []
    for p in sorted(Path(out).parent.glob(f".{Path(out).name}.{kind}-*")):
        pid = p.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _pid_alive(int(pid)):
            found.append(p)
    return found


def recover_store(out: Path) -> None:
    """A run killed between moving the old store aside and renaming the new one in (only where
    no atomic exchange exists) left the complete old store in .<out>.old-PID: put it back."""
    for p in _left_by_dead(out, "old"):
        if not Path(out).exists() and (p / MANIFEST).exists():
            os.rename(p, out)
        else:
            shutil.rmtree(p, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where
    the system or filesystem cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        at_fdcwd, rename_exchange = -100, 2
        ok = libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0
    except (OSError, AttributeError):
        return False
    return ok


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def preview_indices(labels: np.ndarray, n: int) -> list[int]:
    """n indices: classes round-robin (unlabelled images form one group), evenly spaced within each."""
    groups = [np.flatnonzero(labels == k) for k in np.unique(labels)]
    quota = [0] * len(groups)
    total = min(n, len(labels))
    while sum(quota) < total:
        for g in range(len(groups)):
            if quota[g] < len(groups[g]) and sum(quota) < total:
                quota[g] += 1
    picks = [grp[np.linspace(0, len(grp) - 1, q).round().astype(int)] for grp, q in zip(groups, quota) if q]
    # Interleave so each row of the grid mixes classes.
    out = []
    for i in range(max((len(p) for p in picks), default=0)):
        out.extend(int(p[i]) for p in picks if i < len(p))
    return out


def preview_grid(images: list[np.ndarray], cols: int = 8, tile: int = 128) -> Image.Image:
    """Grid of HWC uint8 images, tiles at most `tile` pixels wide."""
    if not images:
        return Image.new("RGB", (tile, tile), (0, 0, 0))
    size = min(tile, images[0].shape[0])
    cols = min(cols, len(images))
    rows = (len(images) + cols - 1) // cols
    grid = Image.new("RGB", (cols * size, rows * size), (0, 0, 0))
    for i, im in enumerate(images):
        t = Image.fromarray(im)
        if t.size[0] != size:
            t = t.resize((size, size), Image.LANCZOS)
        grid.paste(t, ((i % cols) * size, (i // cols) * size))
    return grid


def read_manifest(path: str | os.PathLike) -> dict:
    root = Path(path)
    if not root.is_dir():
        recover_store(root)
    if not root.is_dir():
        raise UserError(f"prepared store {str(root)!r} not found; create it with `python -m data_prep ... --out {root}`")
    try:
        with open(root / MANIFEST, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        if _holds_images(root):  # the user's art itself: say how to prepare it
            store = shlex.quote(f"data/{root.name}")
            raise UserError(f"{root} is a folder of images, not a prepared store; prepare it first: python -m data_prep "
                            f"{shlex.quote(str(root))} --out {store} --resolution 128 (then --data {store})") from None
        raise UserError(f"{root} is not a prepared store (no {MANIFEST}); create it with python -m data_prep") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{root / MANIFEST} is malformed ({e}); re-run python -m data_prep") from None
    for key in ("resolution", "count", "class_names", "images"):
        if key not in manifest:
            raise UserError(f"{root / MANIFEST} lacks {key!r}; re-run python -m data_prep")
    if manifest.get("format", 0) > FORMAT_VERSION:
        raise UserError(f"{root} was written by a newer artgan (store format {manifest['format']}); upgrade artgan")
    return manifest


def _holds_images(root: Path, depth: int = 2) -> bool:
    """Whether `root` or a subfolder (up to `depth` levels) holds an image file; stops at the first."""
    from .sources import counts_as_image

    try:
        entries = list(os.scandir(root))
    except OSError:
        return False
    if any(counts_as_image(e.name) and e.is_file() for e in entries):
        return True
    return depth > 1 and any(e.is_dir() and not e.name.startswith(".") and _holds_images(Path(e.path), depth - 1)
                             for e in entries[:256])


def manifest_hash(path: str | os.PathLike) -> str:
    """Identity of a store's contents, used as a cache key (e.g. real-image features)."""
    return hashlib.sha256((Path(path) / MANIFEST).read_bytes()).hexdigest()[:16]


class PreparedDataset(torch.utils.data.Dataset):
    """Images in [-1, 1] as float tensors (3, R, R) with integer labels, read via memmap.

    Implements `__getitems__` so a DataLoader fetches a whole batch with one fancy-index
    on the memmap and one vectorized conversion, instead of per-item Python work.
    """

    def __init__(self, path: str | os.PathLike, verify: bool = False):
        self.root = Path(path)
        self.manifest = read_manifest(self.root)
        self.resolution = int(self.manifest["resolution"])
        self.count = int(self.manifest["count"])
        self.class_names = list(self.manifest["class_names"])
        tune_allocator()
        shape = (self.count, 3, self.resolution, self.resolution)
        pixels = self.root / PIXELS
        expected = int(np.prod(shape))
        actual = pixels.stat().st_size if pixels.exists() else -1
        if actual != expected:
            raise UserError(f"store {self.root} is inconsistent: {PIXELS} has {actual} bytes, manifest says "
                            f"{self.count} images of {self.resolution}px ({expected} bytes); re-run python -m data_prep")
        try:
            self.labels = np.load(self.root / LABELS)
        except (OSError, ValueError) as e:
            raise UserError(f"store {self.root}: cannot read {LABELS} ({e}); re-run python -m data_prep") from None
        if self.labels.shape != (self.count,):
            raise UserError(f"store {self.root} is inconsistent: {len(self.labels)} labels for {self.count} images")
        self.images = np.memmap(pixels, dtype=np.uint8, mode="r", shape=shape)
        entries = self.manifest["images"]
        if len(entries) != self.count:
            raise UserError(f"store {self.root} is inconsistent: manifest lists {len(entries)} images, count {self.count}")
        check = range(self.count) if verify else sorted({0, self.count - 1} if self.count else set())
        for i in check:
            if hashlib.sha256(self.images[i].tobytes()).hexdigest() != entries[i]["sha256"]:
                raise UserError(f"store {self.root} is corrupt: image {i} does not match its manifest "
                                "checksum; re-run python -m data_prep")

    @property
    def manifest_hash(self) -> str:
        """Identity of this store's contents (cache key for real-image features)."""
        return manifest_hash(self.root)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return self.count

    @staticmethod
    def normalize(images: torch.Tensor) -> torch.Tensor:
        """uint8 images (on any device) -> float32 in [-1, 1], as training sees them."""
        return images.to(torch.float32).mul_(2.0 / 255.0).sub_(1.0)

    @classmethod
    def _convert(cls, batch: np.ndarray) -> torch.Tensor:
        return cls.normalize(torch.from_numpy(batch))

    def __getitem__(self, i: int):
        return self._convert(self._read(np.array([i], np.int64)))[0], int(self.labels[i % self.count])

    def _read(self, idx: np.ndarray) -> np.ndarray:
        """uint8 images for `idx`; an index in [count, 2*count) is image i - count mirrored
        left-right (how x-flip augmentation is asked for: a function of the index, so it is
        the same in any worker process and after a resume, unlike a random flip)."""
        mirror = idx >= self.count
        src = np.where(mirror, idx - self.count, idx)
        order = np.argsort(src, kind="stable")  # sorted reads are sequential on disk
        batch = np.empty((len(idx),) + self.images.shape[1:], np.uint8)
        batch[order] = self.images[src[order]]
        batch[mirror] = batch[mirror, :, :, ::-1]  # while still uint8: a quarter of the bytes of float
        return batch

    def __getitems__(self, indices: list[int]):
        idx = np.asarray(indices, dtype=np.int64)
        x = self._convert(self._read(idx))
        labels = torch.from_numpy(self.labels[idx % self.count])
        return _Batch(zip(x.unbind(0), labels.tolist()), images=x, labels=labels)

    @staticmethod
    def worker_init(parent: int, worker_id: int) -> None:
        """DataLoader worker_init_fn (bind `parent`, the trainer's pid): the worker dies with
        the trainer (PyTorch's own check of the parent only runs between batches)."""
        die_with_parent(parent)

    @staticmethod
    def collate(samples):
        """DataLoader collate_fn: a batch from `__getitems__` is already stacked, so hand
        it over as is (saves a full copy); anything else goes through default_collate."""
        if isinstance(samples, _Batch):
            return samples.images, samples.labels
        return torch.utils.data.default_collate(samples)


class _Batch(list):
    """List of (image, label) samples that also carries them stacked."""

    def __init__(self, samples, images: torch.Tensor, labels: torch.Tensor):
        super().__init__(samples)
        self.images = images
        self.labels = labels


def tune_allocator() -> None:
    """Keep freed large blocks mapped in this process (glibc only).

    By default glibc serves multi-MB tensors with fresh mmap()s and unmaps them on free,
    so every batch pays page faults on ~50 MB of new pages; that alone cost 4-6x on
    uint8->float conversion and CPU training steps here. Raising the mmap and trim
    thresholds lets allocations reuse already-faulted heap pages.
    """
    global _TUNED
    if _TUNED or not sys.platform.startswith("linux"):
        return
    _TUNED = True
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1 << 31)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


_TUNED = False
