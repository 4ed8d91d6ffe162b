"""Art sources: a Hugging Face dataset, a folder, or the built-in procedural set.

Each source yields `Item`s in a deterministic order. Payloads are cheap to pass to a
worker process (a path, encoded bytes, or procedural coordinates); decoding happens there.
This is the only module that imports `datasets`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .errors import UserError

def _readable_extensions() -> frozenset:
    """The raster formats the folder source reads: the common ones, the JPEG spellings, and the
    formats artists' and games' files come in that this Pillow decodes (AVIF from Pillow 11.3 on)."""
    from PIL import Image, features

    known = set(Image.registered_extensions())
    exts = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
    exts |= {".jfif", ".jpe", ".apng", ".tga", ".qoi"} & known
    if ".avif" in known and features.check("avif"):
        exts.add(".avif")
    return frozenset(exts)


IMAGE_EXTENSIONS = _readable_extensions()

# Image files the folder source does not read, and what to do about them: reported after a run
# (and in the error when a folder holds nothing else), so a collection of them is never skipped
# without a word.
_RASTERIZE = "vector art: rasterize them first, e.g. rsvg-convert -w 1024 in.svg -o out.png"
_EXPORT = "export PNG or JPEG copies from the program that made them"
UNREAD_FORMATS = {
    **dict.fromkeys((".svg", ".svgz", ".ai", ".eps", ".pdf"), _RASTERIZE),
    **dict.fromkeys((".heic", ".heif"), "pip install pillow-heif, or convert them to JPEG"),
    ".avif": "needs Pillow 11.3 or newer (pip install -U pillow), or convert them to PNG",
    ".jxl": "convert them to PNG, e.g. djxl in.jxl out.png",
    **dict.fromkeys((".psd", ".kra", ".xcf", ".clip", ".procreate"), _EXPORT),
    **dict.fromkeys((".cr2", ".cr3", ".nef", ".arw", ".dng", ".orf", ".rw2", ".raf"),
                    "camera raw: develop them to JPEG or TIFF first"),
}


def counts_as_image(name: str) -> bool:
    """Whether a folder entry named `name` is one the folder source reads (hidden ones are not)."""
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS


def unread_note(counters: dict) -> str | None:
    """One line on the image files a folder source left unread (`counters["unread_formats"]`:
    extension -> count), with what to do about each kind; None when there were none."""
    unread = counters.get("unread_formats") or {}
    if not unread:
        return None
    by_advice: dict[str, list[str]] = {}
    for ext, n in sorted(unread.items(), key=lambda kv: (-kv[1], kv[0])):
        by_advice.setdefault(UNREAD_FORMATS[ext], []).append(f"{n} {ext}")
    return "; ".join(f"{', '.join(files)} ({advice})" for advice, files in by_advice.items())


@dataclass
class Item:
    id: str  # stable, human-readable source id (relative path, split[row], proc-000123)
    kind: str  # "path" | "bytes" | "procedural" | "reject"
    payload: object  # path str, bytes, (seed, index, size), or (reason, detail)
    label: str | None = None  # class name, resolved to an integer when the store is written


@dataclass
class Source:
    description: dict  # what goes into the manifest's "source" entry
    items: Iterator[Item]
    total: int | None  # number of items when known up front (for the progress bar)
    class_order: list[str] | None = None  # preferred class order (ClassLabel order); else sorted
    counters: dict = field(default_factory=dict)  # e.g. rows removed by --where, ignored files


# ---------------------------------------------------------------------------- folder
def _walk(root: Path, counters: dict) -> Iterator[tuple[str, Path | None, str | None]]:
    """Yield (relative id, path or None, rejection reason) recursively in sorted order,
    following directory symlinks once each and reporting loops instead of recursing."""
    seen: set[str] = set()

    def visit(d: Path, rel: str):
        try:
            real = os.path.realpath(d)
        except OSError:
            real = str(d)
        if real in seen:
            yield rel or ".", None, "symlink_loop"
            return
        seen.add(real)
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError as e:
            yield rel or ".", None, f"unreadable:{e.strerror}"
            return
        for e in entries:
            if e.name.startswith("."):
                counters["hidden_skipped"] = counters.get("hidden_skipped", 0) + 1
                continue
            child = f"{rel}/{e.name}" if rel else e.name
            try:
                is_dir = e.is_dir()  # follows symlinks
                is_file = e.is_file()
            except OSError:
                is_dir = is_file = False
            if is_dir:
                yield from visit(Path(e.path), child)
            elif counts_as_image(e.name):
                if is_file:
                    yield child, Path(e.path), None
                else:
                    # Dangling or self-referencing symlink, socket, fifo, ...
                    yield child, None, "unreadable:broken or looping symlink, or not a regular file"
            else:
                counters["non_image_skipped"] = counters.get("non_image_skipped", 0) + 1
                ext = Path(e.name).suffix.lower()
                if ext in UNREAD_FORMATS:
                    unread = counters.setdefault("unread_formats", {})
                    unread[ext] = unread.get(ext, 0) + 1

    yield from visit(root, "")


def folder_source(path: str, labels_from_folders: bool, max_images: int | None) -> Source:
    root = Path(path)
    if not root.exists():
        raise UserError(f"source folder {path!r} does not exist; pass an existing folder of images")
    if not root.is_dir():
        raise UserError(f"source {path!r} is not a folder; pass a folder of images, --hf NAME or --procedural N")
    counters: dict = {}
    listing = list(_walk(root, counters))  # paths only: small even for huge collections
    classes = None
    if labels_from_folders:
        classes = sorted({rel.split("/")[0] for rel, p, r in listing if "/" in rel and p is not None})
        if not classes:
            raise UserError(f"--labels-from-folders: {path!r} has no subfolders with images; "
                            "put each class in its own subfolder")
    n_images = sum(1 for _, p, _ in listing if p is not None)
    if max_images is not None and n_images > max_images:
        keep, out = 0, []
        for entry in listing:
            if entry[1] is not None:
                if keep >= max_images:
                    continue
                keep += 1
            out.append(entry)
        listing = out

    def items():
        for rel, p, reason in listing:
            if p is None:
                r, _, detail = reason.partition(":")
                yield Item(rel, "reject", (r, detail))
                continue
            label = None
            if labels_from_folders:
                if "/" not in rel:
                    yield Item(rel, "reject", ("unlabelled", "file is not inside a class subfolder"))
                    continue
                label = rel.split("/")[0]
            yield Item(rel, "path", str(p), label)

    desc = {"kind": "folder", "path": str(root.resolve()), "labels_from_folders": labels_from_folders}
    return Source(desc, items(), len(listing), classes, counters)


# ---------------------------------------------------------------------------- procedural
def procedural_source(n: int, seed: int, size: int) -> Source:
    from .procedural import STYLES

    if n <= 0:
        raise UserError(f"--procedural needs a positive number of images, got {n}")

    def items():
        for i in range(n):
            yield Item(f"proc-{i:06d}", "procedural", (seed, i, size), STYLES[i % len(STYLES)])

    desc = {"kind": "procedural", "count": n, "seed": seed, "render_size": size, "styles": list(STYLES)}
    return Source(desc, items(), n, list(STYLES))


# ---------------------------------------------------------------------------- Hugging Face
def _parse_where(where: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for w in where:
        col, sep, val = w.partition("=")
        if not sep or not col or not val:
            raise UserError(f"--where {w!r} is not COLUMN=VALUE (for example --where style=Impressionism)")
        out.setdefault(col.strip(), []).append(val.strip())
    return out


def _load_hf(name: str, split: str, revision: str | None, streaming: bool):
    import datasets

    p = Path(name)
    try:
        if p.exists() and any((p / f).exists() for f in ("state.json", "dataset_dict.json", "dataset_info.json")) \
                and not any(p.glob("*.parquet")):
            ds = datasets.load_from_disk(str(p))
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise UserError(f"split {split!r} not in {name!r}; available: {', '.join(ds)}")
                ds = ds[split]
            return ds.to_iterable_dataset() if streaming else ds
        return datasets.load_dataset(str(p) if p.exists() else name, split=split,
                                     revision=revision, streaming=streaming)
    except UserError:
        raise
    except ValueError as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "split" in msg.lower():
            raise UserError(f"dataset {name!r}: {msg}; pick one with --split") from None
        raise UserError(f"cannot load dataset {name!r}: {msg}") from None
    except Exception as e:  # DatasetNotFoundError, ConnectionError, FileNotFoundError, ...
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise UserError(f"cannot load dataset {name!r} ({type(e).__name__}: {first}); check the name, "
                        "your network / HF_TOKEN, or pass a local dataset path") from None


def hf_source(name: str, split: str, revision: str | None, image_column: str | None,
              label_column: str | None, where: list[str], streaming: bool, max_images: int | None) -> Source:
    import datasets

    ds = _load_hf(name, split, revision, streaming)
    features = ds.features
    if features is None:
        raise UserError(f"dataset {name!r} does not declare its columns in streaming mode; "
                        "drop --streaming or pass a dataset with features")
    columns = list(features)
    if image_column is None:
        image_cols = [c for c, f in features.items() if isinstance(f, datasets.Image)]
        if not image_cols:
            raise UserError(f"no image column found in {name!r}; columns: {', '.join(columns)}; "
                            "pass --image-column")
        image_column = image_cols[0]
    elif image_column not in features:
        raise UserError(f"--image-column {image_column!r} not in {name!r}; columns: {', '.join(columns)}")
    filters = _parse_where(where)
    for col in list(filters) + ([label_column] if label_column else []):
        if col not in features:
            raise UserError(f"unknown column {col!r} in {name!r}; columns: {', '.join(columns)}")

    def valid_values(col: str) -> list[str] | None:
        f = features[col]
        if isinstance(f, datasets.ClassLabel):
            return list(f.names)
        if not streaming:
            return sorted(str(v) for v in ds.unique(col))
        return None  # unknown without reading the stream

    wanted: dict[str, set] = {}
    for col, values in filters.items():
        valid = valid_values(col)
        if valid is not None:
            bad = [v for v in values if v not in valid]
            if bad:
                shown = ", ".join(valid[:60]) + (" ..." if len(valid) > 60 else "")
                raise UserError(f"--where {col}={bad[0]}: no such value; valid values: {shown}")
        wanted[col] = set(values)

    class_order = None
    if label_column is not None and isinstance(features[label_column], datasets.ClassLabel):
        class_order = list(features[label_column].names)

    def name_of(col: str, value) -> str:
        f = features[col]
        if isinstance(f, datasets.ClassLabel) and isinstance(value, int):
            return f.int2str(value)
        return str(value)

    if isinstance(features[image_column], datasets.Image):
        ds = ds.cast_column(image_column, datasets.Image(decode=False))
    keep = [image_column] + sorted(set(filters) | ({label_column} if label_column else set()))
    ds = ds.select_columns(keep)
    counters = {"filtered_out": 0}
    total = None if streaming else len(ds)
    if total is not None and not filters and max_images is not None:
        total = min(total, max_images)

    def items():
        taken = 0
        for row_index, row in enumerate(ds):
            if any(name_of(c, row[c]) not in vals for c, vals in wanted.items()):
                counters["filtered_out"] += 1
                continue
            if max_images is not None and taken >= max_images:
                return
            taken += 1
            item_id = f"{split}[{row_index}]"
            label = name_of(label_column, row[label_column]) if label_column else None
            value = row[image_column]
            if isinstance(value, dict):
                data, path = value.get("bytes"), value.get("path")
                if data is not None:
                    yield Item(item_id, "bytes", bytes(data), label)
                elif path:
                    yield Item(item_id, "path", path, label)
                else:
                    yield Item(item_id, "reject", ("empty_file", "row has no image bytes or path"), label)
            elif isinstance(value, (bytes, bytearray)):
                yield Item(item_id, "bytes", bytes(value), label)
            elif isinstance(value, str):
                yield Item(item_id, "path", value, label)
            else:
                yield Item(item_id, "reject", ("not_an_image", f"column holds {type(value).__name__}"), label)

    desc = {"kind": "huggingface", "name": name, "split": split, "revision": revision,
            "image_column": image_column, "label_column": label_column, "where": filters,
            "streaming": streaming, "fingerprint": getattr(ds, "_fingerprint", None)}
    return Source(desc, items(), total, class_order, counters)
