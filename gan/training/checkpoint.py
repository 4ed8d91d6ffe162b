"""Complete, atomic, rotated checkpoints on top of Accelerate's save_state/load_state.

Layout: run/checkpoints/kimg000120/ (kimg000120.064/ off whole kimg) holds Accelerate's state (G and D as safetensors,
optimizers, scaler, every process's RNG state; all loaded with weights_only), our
g_ema.safetensors and trainer_state.json (counters, data position, ADA state: no pickle),
state.json (summary, metric), export/ (G_ema as safetensors + config.json for generate.py)
and checksums.json, written last. It is built as checkpoints/.tmp-kimg000120, fsynced and
renamed, so a directory without the .tmp- prefix is always complete.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..errors import disk_full, no_space_left
from ..integrity import write_manifest
# The layout (names, which checkpoints are complete) lives in gan.layout, below both training and
# the readers of a run; its names stay importable from here.
from ..layout import (PREFIX, STATE, broken_checkpoints, complete_checkpoints, latest, name_for,  # noqa: F401
                      newest_good, read_state, run_dir_of)

G_EMA = "g_ema.safetensors"  # G_ema's weights and buffers (as trained, before BN re-calibration)
BANK = "match_bank.safetensors"  # --match-weight: each process's bank of recent fakes (gan.training.matching)
TRAINER = "trainer_state.json"  # counters and ADA state: JSON, never a pickle


def _fsync_tree(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for f in files:
            fd = os.open(os.path.join(dirpath, f), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fd = os.open(dirpath, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save(accelerator, run_dir: Path, nimg: int, state: dict, export_fn, trainer_fn=None) -> Path | None:
    """Collective: every process calls it. Returns the final path on the main process."""
    ckpt_root = Path(run_dir) / "checkpoints"
    final = ckpt_root / name_for(nimg)
    tmp = ckpt_root / f".tmp-{final.name}"
    if accelerator.is_main_process:
        clean_partial(run_dir)
        ckpt_root.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            if trainer_fn is not None:
                trainer_fn(tmp)  # before the export: its BN re-calibration changes G_ema's buffers
            export_fn(tmp / "export")
            (tmp / STATE).write_text(json.dumps(state, indent=2))
            write_manifest(tmp)  # last: it covers every file above, the export's own manifest included
            _fsync_tree(tmp)
            if final.exists():  # same kimg written twice (e.g. signal right after a periodic save)
                _remove(final)
            os.rename(tmp, final)
            fd = os.open(ckpt_root, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
    except Exception as e:
        full = no_space_left(e, tmp)  # before the partial files go: removing them frees the space
        shutil.rmtree(tmp, ignore_errors=True)
        if not full:
            raise
        prev = latest(run_dir)
        raise disk_full(tmp, (f"the previous checkpoint {prev.name} is intact" if prev is not None else
                              "no checkpoint was written yet") + "; free space and --resume auto") from None
    accelerator.wait_for_everyone()
    return final


def _remove(ckpt: Path) -> None:
    """Delete a checkpoint: first renamed out of sight (one atomic step), so a kill mid-delete
    never leaves a half-deleted checkpoint under a complete-looking name."""
    gone = ckpt.with_name(f".del-{ckpt.name}")
    shutil.rmtree(gone, ignore_errors=True)
    os.rename(ckpt, gone)
    shutil.rmtree(gone, ignore_errors=True)


def clean_partial(run_dir: Path) -> list[Path]:
    """Remove what a killed or failed save or delete left (.tmp-kimg…, .del-kimg…)."""
    root = Path(run_dir) / "checkpoints"
    stale = sorted([*root.glob(".tmp-*"), *root.glob(".del-*")]) if root.is_dir() else []
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return stale


def trainer_state_problem(ckpt: Path) -> str | None:
    """Why `ckpt` cannot be resumed without unpickling, or None. artgan writes its trainer state
    as JSON + safetensors; a custom-object pickle (Accelerate loads those with weights_only=False)
    is either from elsewhere or from an older artgan, and is never loaded."""
    ckpt = Path(ckpt)
    pickles = sorted(p.name for p in ckpt.glob("custom_checkpoint_*"))
    if not (ckpt / TRAINER).exists():
        return (f"{ckpt} was written by an older artgan that pickled its trainer state; it is not loaded (a "
                f"pickle can run code). Start a new run from its weights with --from {ckpt}")
    if pickles:
        return (f"{ckpt} holds {', '.join(pickles)}, which artgan never writes; refusing to load it (a pickle "
                "can run code). Delete those files if you know where they came from")
    return None


def resume_problem(ckpt: Path, rank: int = 0) -> str | None:
    """Why process `rank` cannot resume `ckpt` safely and exactly (one sentence), or None."""
    problem = trainer_state_problem(ckpt)
    if problem is None and (why := _unreadable(Path(ckpt), rank)):
        problem = f"{ckpt}: {why}; refusing to resume from it"
    return problem


def _unreadable(ckpt: Path, rank: int) -> str | None:
    """What in `ckpt` process `rank` cannot read, or None: a safetensors file whose
    header does not parse, a torch file that is not plain tensors (opened with weights_only, as
    Accelerate opens it, so nothing in it runs), or this process's RNG state missing or unreadable
    (Accelerate only logs that at info level and the resume silently stops being exact)."""
    from accelerate.utils import load
    from safetensors import safe_open

    ckpt = Path(ckpt)
    rng = f"random_states_{rank}.pkl"
    for p in sorted(ckpt.glob("*.safetensors")):
        try:
            with safe_open(str(p), framework="pt") as f:
                f.keys()
        except Exception as e:
            return f"{p.name} is not a readable safetensors file ({_first_line(e)})"
    try:
        trainer = json.loads((ckpt / TRAINER).read_text())
        if not {"counters", "aug"} <= trainer.keys():
            return f"{TRAINER} lacks the counters or augmentation state"
    except (OSError, ValueError, AttributeError) as e:
        return f"{TRAINER} is unreadable ({_first_line(e)})"
    # Each process checks its own RNG state; the main one also the shared files (optimizers, scaler).
    mine = [p for p in sorted(ckpt.iterdir()) if p.suffix in (".bin", ".pt", ".pkl")
            and (p.name == rng or (rank == 0 and not p.name.startswith("random_states_")))]
    for p in mine:
        try:
            obj = load(p, map_location="cpu")
        except Exception as e:
            return f"{p.name} is not a plain tensor file ({_first_line(e)})"
        if p.name == rng and not (isinstance(obj, dict) and {"random_state", "numpy_random_seed",
                                                              "torch_manual_seed"} <= obj.keys()):
            return f"{rng} does not hold a random state"
    saved = (read_state(ckpt) or {}).get("world_size", 1)
    if rank < saved and not (ckpt / rng).is_file():
        return f"{rng} is missing: process {rank}'s random state would be lost and the resume would not be exact"
    return None


def _first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:160]}"


def rotate(run_dir: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` checkpoints and the best one by metric (lower is better)."""
    ck = complete_checkpoints(run_dir)
    keep_set = {p for _, p in ck[-keep:]} if keep > 0 else set()
    scored = [(st["metric"]["value"], p) for _, p in ck
              if (st := read_state(p)) and isinstance(st.get("metric"), dict)
              and isinstance(st["metric"].get("value"), (int, float))]
    if scored:
        keep_set.add(min(scored)[1])
    removed = []
    for _, p in ck:
        if p not in keep_set:
            _remove(p)
            removed.append(p)
    return removed
