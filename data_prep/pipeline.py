"""Run a source through decode → normalize → crop/resize → dedup → store, in a process pool.

Order is preserved (results are consumed in submission order) and every random choice is
seeded from (seed, item index), so the same arguments on the same source give
byte-identical pixels and labels. At most a bounded window of items is in flight, so
memory does not grow with the size of the source.
"""
from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import procedural, transforms
from .errors import UserError, disk_full, no_space_left
from .images import FAILURE_REASONS, Rejected, open_image, to_rgb
from .sources import Item, Source, unread_note
from .store import StoreWriter, check_output_dir, die_with_parent

CHUNK = 16  # items per task sent to a worker: amortizes inter-process overhead


@dataclass(frozen=True)
class PrepOptions:
    resolution: int
    crop: str = "center"
    crops_per_image: int = 1
    min_size: int | None = None  # default: resolution // 2
    background: tuple = (255, 255, 255)
    dedup: str = "exact"  # none | exact | near
    near_threshold: int = 4  # max differing bits of the 64-bit dHash for --dedup near
    max_failure_ratio: float = 0.5
    seed: int = 0
    workers: int = 0  # 0: all cores

    @property
    def min_side(self) -> int:
        return self.min_size if self.min_size is not None else self.resolution // 2


def _process(item: Item, index: int, opts: PrepOptions):
    """Returns ("ok", crops[CHW uint8], source sha, dhash) or ("reject", reason, detail)."""
    try:
        if item.kind == "reject":
            reason, detail = item.payload
            return ("reject", reason, detail)
        if item.kind == "procedural":
            seed, i, size = item.payload
            img, _ = procedural.render(seed, i, size)
            src_size = img.size
        else:
            need = opts.resolution
            if opts.crop == "random":
                need = int(np.ceil(need / transforms.RANDOM_MIN_SCALE))
            img, src_size = open_image(item.payload, draft_to=(need, "pad" if opts.crop == "pad" else "crop"))
            img = to_rgb(img, opts.background)
        orig_w, orig_h = src_size
        if min(orig_w, orig_h) < opts.min_side:
            return ("reject", "too_small", f"{orig_w}x{orig_h} < --min-size {opts.min_side}")
        sha = hashlib.sha256(img.tobytes()).hexdigest()
        rng = np.random.default_rng([opts.seed & 0xFFFFFFFF, index])
        out = transforms.crops(img, opts.crop, opts.resolution, opts.background, opts.crops_per_image, rng)
        chws = [np.asarray(c, dtype=np.uint8).transpose(2, 0, 1).copy() for c in out]
        return ("ok", chws, sha, transforms.dhash(img))
    except Rejected as r:
        return ("reject", r.reason, r.detail)
    except MemoryError:
        return ("reject", "decompression_bomb", "out of memory while decoding")


def _process_chunk(chunk: list[tuple[int, Item]], opts: PrepOptions):
    return [_process(item, i, opts) for i, item in chunk]


def _ordered_map(chunks, opts: PrepOptions, workers: int):
    """Yield results chunk by chunk in order, with a bounded number in flight."""
    if workers <= 1:
        for chunk in chunks:
            yield chunk, _process_chunk(chunk, opts)
        return
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
        window: deque = deque()
        it = iter(chunks)
        for chunk in islice(it, workers * 4):
            window.append((chunk, pool.submit(_process_chunk, chunk, opts)))
        while window:
            chunk, fut = window.popleft()
            result = fut.result()
            nxt = next(it, None)
            if nxt is not None:
                window.append((nxt, pool.submit(_process_chunk, nxt, opts)))
            yield chunk, result


def _chunks(items, size: int):
    buf = []
    for i, item in enumerate(items):
        buf.append((i, item))
        if len(buf) == size:
            yield buf
            buf = []
    if buf:
        yield buf


class _NearIndex:
    """Near-duplicate lookup on 64-bit hashes: by pigeonhole, two hashes within
    `threshold` bits agree exactly on at least one of `threshold + 1` bands."""

    def __init__(self, threshold: int):
        self.threshold = threshold
        n = threshold + 1
        edges = np.linspace(0, 64, n + 1).astype(int)
        self.bands = [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]
        self.tables: list[dict] = [dict() for _ in self.bands]

    def _keys(self, h: int):
        for (a, b) in self.bands:
            yield (h >> a) & ((1 << (b - a)) - 1)

    def seen(self, h: int) -> bool:
        for table, key in zip(self.tables, self._keys(h)):
            for other in table.get(key, ()):
                if bin(h ^ other).count("1") <= self.threshold:
                    return True
        return False

    def add(self, h: int) -> None:
        for table, key in zip(self.tables, self._keys(h)):
            table.setdefault(key, []).append(h)


def run(source: Source, out: Path, opts: PrepOptions, args_record: dict, progress: bool = True) -> dict:
    """Prepare `source` into the store at `out`; returns the manifest's summary fields."""
    out = Path(out)
    check_output_dir(out)
    workers = opts.workers or os.cpu_count() or 1
    writer = StoreWriter(out, opts.resolution)
    skipped: Counter = Counter()
    seen_sha: set[str] = set()
    near = _NearIndex(opts.near_threshold) if opts.dedup == "near" else None
    inputs = 0
    try:
        bar = tqdm(total=source.total, unit="img", desc="prepare", disable=not progress, dynamic_ncols=True)
        for chunk, results in _ordered_map(_chunks(source.items, CHUNK), opts, workers):
            for (_, item), res in zip(chunk, results):
                inputs += 1
                if res[0] == "reject":
                    skipped[res[1]] += 1
                    writer.reject(item.id, res[1], res[2])
                    continue
                _, chws, sha, dh = res
                if opts.dedup != "none":
                    if sha in seen_sha:
                        skipped["duplicate"] += 1
                        writer.reject(item.id, "duplicate", "identical pixels to an earlier image")
                        continue
                    seen_sha.add(sha)
                if near is not None:
                    if near.seen(dh):
                        skipped["near_duplicate"] += 1
                        writer.reject(item.id, "near_duplicate", f"dHash within {opts.near_threshold} bits of an earlier image")
                        continue
                    near.add(dh)
                for k, chw in enumerate(chws):
                    writer.add(chw, item.label, item.id if len(chws) == 1 else f"{item.id}#crop{k}")
            bar.update(len(chunk))
            bar.set_postfix(kept=len(writer), skipped=sum(skipped.values()), refresh=False)
        bar.close()
        failed = sum(v for k, v in skipped.items() if k in FAILURE_REASONS)
        if inputs == 0:
            note = unread_note(source.counters)
            if note:
                raise UserError(f"the folder holds no image artgan reads, only: {note}")
            raise UserError("the source has no images (after filters); check the path, --where and --split")
        if len(writer) == 0:
            top = ", ".join(f"{k}={v}" for k, v in skipped.most_common(4))
            raise UserError(f"no usable images remain out of {inputs} ({top}); see the reasons above, "
                            f"lower --min-size or check the source")
        if failed / inputs > opts.max_failure_ratio:
            top = ", ".join(f"{k}={v}" for k, v in skipped.most_common(4) if k in FAILURE_REASONS)
            raise UserError(f"{failed} of {inputs} inputs failed to decode ({top}), more than "
                            f"--max-failure-ratio {opts.max_failure_ratio}; fix the source or raise the ratio")
        manifest = {
            "source": source.description,
            "arguments": args_record,
            "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(opts).items()},
            "inputs": inputs,
            "skipped": dict(sorted(skipped.items())),
            "source_counters": dict(source.counters),
        }
        writer.commit(manifest, source.class_order)
    except BaseException as e:
        full = isinstance(e, Exception) and no_space_left(e, writer.tmp)  # before abort frees the space
        writer.abort()
        if full:
            raise disk_full(out, (f"the previous store {out} is intact" if (out / "manifest.json").exists()
                                         else "nothing was written") + "; free space and run it again") from None
        raise
    return {"count": len(writer), "inputs": inputs, "skipped": dict(skipped), "out": str(out),
            "source_counters": dict(source.counters)}
