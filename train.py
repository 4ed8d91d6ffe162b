"""Train a GAN on a prepared store: python train.py --data STORE --preset demo

Same code on one CPU/GPU (`python train.py`) and many (`accelerate launch train.py`).
"""
from __future__ import annotations

import argparse
import os
import sys


def build_parser() -> argparse.ArgumentParser:
    from gan.config import PRESETS
    from gan.training.setup import OVERRIDES

    p = argparse.ArgumentParser(prog="train.py", description="Train a GAN on a prepared store (python -m data_prep).",
                                epilog="example: python train.py --data data/proc --preset demo")
    p.add_argument("--data", help="prepared store directory")
    p.add_argument("--preset", help=f"auto (the default without --arch: chosen from the store and the machine) or one of: {', '.join(PRESETS)}")
    p.add_argument("--cond", action=argparse.BooleanOptionalAction, default=None,
                   help="class-conditional on the store's labels (--preset auto: on for a labelled store with "
                        "enough images a class; --no-cond: off)")
    p.add_argument("--outdir", default="runs", help="parent directory of run dirs")
    p.add_argument("--name", default=None, help="run name (default: <store>-<preset or arch>)")
    p.add_argument("--resume", default=None, metavar="auto|PATH",
                   help="auto: newest complete checkpoint of the newest run with this name (or --run-dir); "
                        "PATH: a checkpoint dir or run dir")
    p.add_argument("--run-dir", default=None, help="with --resume auto: the run to continue")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config, model sizes and FLOPs; exit")
    f = p.add_argument_group("fine-tune toward a style")
    f.add_argument("--from", dest="from_model", default=None, metavar="MODEL",
                   help="start from this model (run dir, checkpoint dir, export or Hub id); preset finetune by default")
    f.add_argument("--style-image", action="append", default=None, metavar="IMAGE",
                   help="add the VGG Gram style loss toward this image to G's objective (repeat to blend)")
    f.add_argument("--class", dest="cls", default=None, metavar="NAME",
                   help="conditional --from model on an unlabelled store: train every image as this class")
    for flag, _, typ, help_, choices in OVERRIDES:
        p.add_argument(flag, type=typ, default=None, help=help_, choices=choices)
    return p


def _in_import(frame) -> bool:
    """Whether `frame` runs inside an import (importlib's frames are on its stack)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _interrupt(signum, frame):
    if _in_import(frame):
        # An exception raised inside an import can leave a half-initialized module behind that the
        # interpreter then trips over (numpy's lazy attributes recursed without end: a traceback
        # instead of the one line). Start-up's writes are atomic renames: end the process here.
        print(INTERRUPTED, file=sys.stderr, flush=True)
        os._exit(128 + signum)
    raise KeyboardInterrupt(signum)


INTERRUPTED = "interrupted; checkpoints already written are intact (continue with --resume auto)"


def _interrupted(e: KeyboardInterrupt) -> int:
    import signal

    signum = e.args[0] if e.args and isinstance(e.args[0], int) else signal.SIGINT
    print(INTERRUPTED, file=sys.stderr)
    return 128 + signum


def main(argv=None) -> int:
    from gan.errors import EXIT_DISK_FULL, DiskFull, UserError, path_error

    try:
        args = build_parser().parse_args(argv)
        return _run(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except DiskFull as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_DISK_FULL
    except OSError as e:  # a path that cannot be read or written (the checkpoints already written are intact)
        if path_error(e) is None:
            raise
        print(f"error: {path_error(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        return _interrupted(e)


def _run(args) -> int:
    from gan.training.setup import describe, estimate, is_main, resolve

    plan = resolve(args)
    mcfg, cfg = plan.mcfg, plan.cfg
    if is_main():
        for note in plan.notes:
            print(note, file=sys.stderr)
    if args.dry_run:
        print(describe(mcfg, cfg))
        print(f"dry run: would train {cfg.kimg:g} kimg on {len(plan.dataset)} images from {cfg.data}; "
              f"{estimate(mcfg, cfg)}")
        return 0
    if is_main():
        print(describe(mcfg, cfg) if plan.ckpt is None else f"resuming {plan.ckpt}")
    from gan.training.loop import launch
    from gan.training.runtime import faults_from_env

    return launch(plan, command=sys.argv, faults=faults_from_env()).train()


if __name__ == "__main__":
    import signal

    # Whenever the trainer is not handling SIGINT/SIGTERM itself (it checkpoints and exits),
    # both end the process with one line and exit 128+signal: during the imports, start-up,
    # and after training, instead of a traceback or a silent death.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        code = main()
    except KeyboardInterrupt as e:
        code = _interrupted(e)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(code)
