"""The trainer's state in and out: the counters, checkpoints (save, load, each process's own
state) and divergence handling (read the steps' outcomes, restore the last checkpoint).

`TrainerState` is mixed into `loop.Trainer` and uses its models, optimizers, Accelerator and
configs; the files themselves are written by `checkpoint.py`.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import UserError
from . import checkpoint
from .phases import BAD, SKIPPED
from .runtime import checksum

OVERFLOW_PATIENCE = 50  # consecutive scaler-skipped steps that count as divergence


class Counters:
    """Progress and schedule state, checkpointed alongside the models."""

    def __init__(self):
        self.cur_nimg = 0  # real images shown to D, all processes
        self.step = 0  # completed iterations (D + G update)
        self.data_pos = 0  # indices consumed from this process's sampler stream
        self.lr_scale = 1.0  # lowered after divergence
        self.pl_mean = 0.0
        self.lecam_real = 0.0  # LeCam's moving averages of D's mean real and fake logits
        self.lecam_fake = 0.0
        self.restores = 0

    def state_dict(self) -> dict:
        d = dict(vars(self))
        for k in ("pl_mean", "lecam_real", "lecam_fake"):  # kept on the device while training (no per-step sync)
            d[k] = float(d[k])
        return d

    def load_state_dict(self, d: dict) -> None:
        for k, v in d.items():
            setattr(self, k, v)


class TrainerState:
    def _weights_finite(self) -> bool:
        """Every weight finite on every process (one host sync: called before checkpoints)."""
        models = (self._unwrap(self.G), self._unwrap(self.D), self.G_ema)
        found = (~torch.stack([torch.isfinite(p.detach()).all() for m in models for p in m.parameters()]).all()).float()
        if self.acc.num_processes > 1:
            found = self.acc.reduce(found, "max")  # Accelerate's reduce knows sum, mean and max
        return not bool(found > 0)

    def save_checkpoint(self, metric: dict | None = None) -> Path:
        state = {"cur_nimg": self.counters.cur_nimg, "step": self.counters.step, "aug_p": self.aug.p,
                 "data_pos_rank0": self.counters.data_pos, "lr_scale": self.counters.lr_scale,
                 "world_size": self.acc.num_processes, "metric": metric}
        self._check_sync()
        ranks = self._gather_rank_state()  # collective: before the main-process-only write
        banks = self._gather_banks()
        path = checkpoint.save(self.acc, self.run_dir, self.counters.cur_nimg, state, self._export,
                               lambda folder: self._save_trainer_state(folder, ranks, banks))
        if self.acc.is_main_process:
            checkpoint.rotate(self.run_dir, self.cfg.keep)
        self.acc.wait_for_everyone()
        self.last_ckpt = path
        return path

    def _check_sync(self) -> None:
        """Multi-process: verify every rank holds identical G, G_ema and D before saving."""
        if self.acc.num_processes == 1:
            return
        sums = torch.stack([checksum(self._unwrap(self.G)), checksum(self.G_ema), checksum(self._unwrap(self.D))])
        gathered = self.acc.gather(sums.to(self.acc.device)[None]).cpu()
        if not torch.equal(gathered.min(0).values, gathered.max(0).values):
            raise RuntimeError(f"processes hold different weights (checksums {gathered.tolist()})")
        if self.acc.is_main_process:
            with open(self.run_dir / "events.jsonl", "a") as f:
                f.write(json.dumps({"kimg": self.counters.cur_nimg / 1000, "event": "ranks in sync",
                                    "processes": self.acc.num_processes, "checksums": sums.tolist()}) + "\n")

    def _save_trainer_state(self, folder: Path, ranks: dict, banks: dict | None = None) -> None:
        from safetensors.torch import save_file

        save_file({k: v.detach().cpu().contiguous() for k, v in self.G_ema.state_dict().items()},
                  str(folder / checkpoint.G_EMA))
        if banks:
            save_file(banks, str(folder / checkpoint.BANK))
        (folder / checkpoint.TRAINER).write_text(json.dumps(
            {"counters": self.counters.state_dict(), "aug": self.aug.state_dict(), "ranks": ranks}, indent=1))

    def _gather_rank_state(self) -> dict:
        """State each process keeps for itself (collective): the path-length mean and the ADA
        statistics gathered since the last update. Only the main process writes the trainer
        state, so without these every process would resume with the main one's values and
        a multi-process resume would not be exact."""
        mine = torch.stack([torch.as_tensor(v, dtype=torch.float64).detach().cpu().reshape(())
                            for v in (self.counters.pl_mean, *self.aug.pending())])
        every = self.acc.gather(mine.to(self.acc.device)[None]).cpu() if self.acc.num_processes > 1 else mine[None]
        return {"pl_mean": every[:, 0].tolist(), "aug_sum": every[:, 1].tolist(), "aug_n": every[:, 2].tolist()}

    def _gather_banks(self) -> dict | None:
        """Every process's matching bank (collective), stacked by process: (processes, ...)."""
        if self.bank is None:
            return None
        out = {}
        for k, v in self.bank.state_dict().items():
            every = self.acc.gather(v[None]) if self.acc.num_processes > 1 else v[None]
            out[k] = every.detach().cpu().contiguous()
        return out

    def _restore_bank(self, ckpt: Path) -> None:
        """This process's bank as saved (another process count: process i takes saved process
        i's, modulo; a checkpoint without one, or of another shape, leaves it empty)."""
        from safetensors.torch import load_file

        if self.bank is None or not (ckpt / checkpoint.BANK).is_file():
            return
        saved = load_file(str(ckpt / checkpoint.BANK))
        me = self.acc.process_index % saved["z"].shape[0]
        self.bank.load_state_dict({k: v[me].to(self.acc.device) for k, v in saved.items()})

    def _restore_rank_state(self, ranks: dict | None) -> None:
        if not ranks:
            return
        me, world = self.acc.process_index, self.acc.num_processes
        if len(ranks["pl_mean"]) == world:
            self.counters.pl_mean = ranks["pl_mean"][me]
            self.aug.set_pending(ranks["aug_sum"][me], ranks["aug_n"][me])
        else:  # another process count: the main process carries every partial ADA statistic
            self.counters.pl_mean = ranks["pl_mean"][0]
            self.aug.set_pending(sum(ranks["aug_sum"]) if me == 0 else 0.0, sum(ranks["aug_n"]) if me == 0 else 0)

    def _load(self, ckpt: Path) -> None:
        from safetensors.torch import load_file

        ckpt = Path(ckpt)  # checked by setup.resolve (checkpoint.resume_problem) on every process,
        self.acc.load_state(str(ckpt))  # or written by this run (a restore after non-finite steps)
        try:
            self.G_ema.load_state_dict(load_file(str(ckpt / checkpoint.G_EMA)))  # copied onto G_ema's device
            self._calibrated = False
            st = json.loads((ckpt / checkpoint.TRAINER).read_text())
            self.counters.load_state_dict(st["counters"])
            self.aug.load_state_dict(st["aug"])
            self._restore_rank_state(st.get("ranks"))
            self._restore_bank(ckpt)
        except (OSError, ValueError, KeyError, RuntimeError, TypeError, IndexError) as e:
            raise UserError(f"{ckpt}: cannot read the trainer state ({str(e).splitlines()[0][:160]})") from None
        self.last_ckpt = ckpt
        self._set_optimizer_settings()

    def _set_optimizer_settings(self) -> None:
        """The run's learning rates (times the restores' scale) and betas on both optimizers: after a
        checkpoint loads, whose optimizer state carries the values it was saved with."""
        for opt, base, betas in zip((self.opt_G, self.opt_D), self.base_lrs, self.base_betas):
            for g in opt.param_groups:
                g["lr"], g["betas"] = base * self.counters.lr_scale, betas

    def _recover(self, why: str) -> None:
        """Back to the last checkpoint with halved learning rates; `why` (what went wrong) is
        logged. After 3 restores training stops: the run keeps diverging."""
        if self.counters.restores >= 3:
            raise UserError(f"training diverged repeatedly ({why}, after 3 restores with lower learning rates); "
                            "try a lower --lr-g/--lr-d, a higher --r1-gamma or --mixed-precision no")
        restores, scale = self.counters.restores + 1, self.counters.lr_scale * 0.5
        self._load(self.last_ckpt)
        self.counters.restores, self.counters.lr_scale = restores, scale
        self._set_optimizer_settings()
        self._make_loader()
        self._log(f"{why}: restored {self.last_ckpt.name}, learning rates x{scale:g}")

    def _settle(self) -> bool:
        """Read the outcomes of the steps since the last call (one host sync) and act on the
        streaks, in step order: `nan_patience` BAD steps in a row, or OVERFLOW_PATIENCE
        scaler-skipped ones, restore the last checkpoint with halved learning rates (the steps
        after the streak are dropped with it). True if it restored."""
        if not self._outcomes:
            return False
        steps, flags = zip(*self._outcomes)
        self._outcomes = []
        for step, code in zip(steps, torch.stack(flags).tolist()):
            if code >= BAD:  # a BAD step leaves the overflow streak as it was
                self._bad += 1
                self._log(f"step {step}: non-finite loss or gradient, step skipped ({self._bad} in a row)")
            else:
                self._bad = 0
                self._overflow = self._overflow + 1 if code >= SKIPPED else 0
                self.overflows += code >= SKIPPED
                if self._overflow >= OVERFLOW_PATIENCE:
                    self._log(f"step {step}: fp16 gradients overflowed {self._overflow} steps in a row "
                              "(the loss scale cannot settle)")
            if self._bad >= self.cfg.nan_patience or self._overflow >= OVERFLOW_PATIENCE:
                why = (f"non-finite losses or gradients for {self._bad} steps" if self._bad >= self.cfg.nan_patience
                       else f"fp16 gradients overflowed for {self._overflow} steps")
                self._bad = self._overflow = 0
                self._recover(why)
                return True
        return False
