"""CLI: python -m data_prep SOURCE --out DIR --resolution R [options]."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import EXIT_DISK_FULL, DiskFull, UserError, disk_full, no_space_left, path_error
from .transforms import CROPS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m data_prep",
        description="Prepare an art collection for training: decode, normalize, crop, resize, dedup.",
        epilog="examples:\n"
               "  python -m data_prep ~/art --out data/myart --resolution 128\n"
               "  python -m data_prep --hf huggan/wikiart --where style=Impressionism --out data/impr --resolution 256\n"
               "  python -m data_prep --procedural 2000 --out data/proc --resolution 64",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("source (exactly one)")
    src.add_argument("folder", nargs="?", help="folder of images (searched recursively)")
    src.add_argument("--hf", metavar="NAME_OR_PATH", help="Hugging Face dataset id or local dataset path")
    src.add_argument("--procedural", type=int, metavar="N", help="N images of built-in procedural art")
    p.add_argument("--out", required=True, help="store directory to create or replace")
    p.add_argument("--resolution", type=int, required=True, help="output size R (power of two, 16-1024)")
    hf = p.add_argument_group("Hugging Face options")
    hf.add_argument("--split", default="train")
    hf.add_argument("--revision", default=None, help="dataset revision (branch, tag or commit)")
    hf.add_argument("--image-column", default=None, help="default: the first Image column")
    hf.add_argument("--label-column", default=None, help="column whose values become class labels")
    hf.add_argument("--where", action="append", default=[], metavar="COL=VALUE",
                    help="keep rows with this value (repeat: same column = OR, different columns = AND)")
    hf.add_argument("--streaming", action="store_true", help="stream instead of downloading the whole dataset")
    p.add_argument("--max-images", type=int, default=None, help="take at most this many source images")
    p.add_argument("--labels-from-folders", action="store_true", help="folder source: first-level subfolder = class")
    p.add_argument("--seed", type=int, default=0, help="procedural set and random crops")
    p.add_argument("--procedural-size", type=int, default=256, help=argparse.SUPPRESS)
    p.add_argument("--crop", choices=CROPS, default="center")
    p.add_argument("--crops-per-image", type=int, default=1, help="with --crop random")
    p.add_argument("--min-size", type=int, default=None, help="skip images whose short side is smaller (default R/2)")
    p.add_argument("--background", default="white", help="colour for transparency and padding (name or #rrggbb)")
    p.add_argument("--dedup", choices=("none", "exact", "near"), default="exact")
    p.add_argument("--max-failure-ratio", type=float, default=0.5)
    p.add_argument("--workers", type=int, default=0, help="processes (default: all cores)")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except DiskFull as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_DISK_FULL
    except OSError as e:  # e.g. the Hugging Face cache filling up during a download
        if not no_space_left(e, e.filename or "."):
            if path_error(e) is None:
                raise
            print(f"error: {path_error(e)} (any previous store is intact)", file=sys.stderr)
            return 2
        print(f"error: {disk_full(e.filename or '.', 'the previous store is intact; free space and run it again')}",
              file=sys.stderr)
        return EXIT_DISK_FULL
    except KeyboardInterrupt:
        print("interrupted: nothing was written (any previous store is intact)", file=sys.stderr)
        return 130


def _run(args) -> int:
    from PIL import ImageColor

    from . import pipeline, sources

    chosen = [x for x in (args.folder, args.hf, args.procedural) if x is not None]
    if len(chosen) != 1:
        raise UserError("give exactly one source: a FOLDER, --hf NAME or --procedural N")
    r = args.resolution
    if r < 16 or r > 1024 or r & (r - 1):
        raise UserError(f"--resolution {r} must be a power of two between 16 and 1024")
    if args.crops_per_image < 1 or (args.crops_per_image > 1 and args.crop != "random"):
        raise UserError("--crops-per-image needs --crop random and a value >= 1")
    if not 0 <= args.max_failure_ratio <= 1:
        raise UserError("--max-failure-ratio must be between 0 and 1")
    if args.max_images is not None and args.max_images < 1:
        raise UserError("--max-images must be positive")
    try:
        background = ImageColor.getrgb(args.background)[:3]
    except ValueError:
        raise UserError(f"--background {args.background!r} is not a colour; use a name or #rrggbb") from None
    if args.hf is None and (args.where or args.label_column or args.image_column or args.streaming):
        raise UserError("--where/--label-column/--image-column/--streaming apply only to --hf sources")

    if args.procedural is not None:
        source = sources.procedural_source(args.procedural, args.seed, args.procedural_size)
    elif args.hf is not None:
        source = sources.hf_source(args.hf, args.split, args.revision, args.image_column, args.label_column,
                                   args.where, args.streaming, args.max_images)
    else:
        source = sources.folder_source(args.folder, args.labels_from_folders, args.max_images)
    opts = pipeline.PrepOptions(
        resolution=r, crop=args.crop, crops_per_image=args.crops_per_image, min_size=args.min_size,
        background=tuple(background), dedup=args.dedup, max_failure_ratio=args.max_failure_ratio,
        seed=args.seed, workers=args.workers)
    record = {k: v for k, v in vars(args).items() if k not in ("no_progress", "workers")}
    summary = pipeline.run(source, Path(args.out), opts, record, progress=not args.no_progress)
    out = Path(args.out)
    skipped = ", ".join(f"{k}={v}" for k, v in sorted(summary["skipped"].items())) or "none"
    print(f"prepared {summary['count']} images at {r}px from {summary['inputs']} inputs (skipped: {skipped})")
    print(f"store:   {out}")
    print(f"preview: {out / 'preview.png'}")
    if summary["skipped"]:
        print(f"reasons: {out / 'rejected.jsonl'}")
    note = sources.unread_note(summary["source_counters"])
    if note:
        print(f"not read: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
