"""The training loop: set-up, scheduling, logging, snapshots, metrics, signals, faults.

Mixed into the Trainer: the phases of one step (`phases.py`) and its state in and out, i.e.
counters, checkpoints and divergence handling (`state.py`). Models come from the registry,
losses are pure functions, checkpoint files are written by `checkpoint.py`.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm import tqdm

from .. import clusters as clustering
from ..augment import AdaptiveP
from ..config import ModelConfig, TrainConfig
from ..errors import DiskFull, UserError, disk_full, no_space_left
from ..export import save_generator
from ..models import arch_of, build_discriminator, build_generator
from ..sampling import grid_cols, latents_for_seeds, save_grid
from . import checkpoint, finetune
from .auto import MIN_KIMG, cpu_schedule, duration
from .data import DeviceBatches, InfiniteSampler, fits_on_device, to_device_async
from .ema import recalibrate_batchnorm, update_ema
from .matching import FeaturePull, LatentBank, matching_on
from .phases import Phases
from .runtime import BufferSync, Compiler, compile_backend, is_oom, micro_batch, next_multiple
from .state import Counters, TrainerState


WARMUP_STEPS = 3  # steps excluded from the steady-state img/s (allocator and kernel warm-up)
ETA_AFTER_S = 30.0  # seconds of the steady window before the measured ETA is printed
# A run auto sized to N minutes keeps this many times its start-up (the first checkpoint and progress
# grid) for the rest: about ten grids and four checkpoints, each about half of the first pair.
RESIZE_OVERHEAD = 7.0


class Trainer(Phases, TrainerState):
    def __init__(self, acc: Accelerator, model_cfg: ModelConfig, cfg: TrainConfig, dataset, run_dir: Path,
                 resume_from: Path | None = None, faults: dict | None = None, base=None,
                 style_images: list | None = None, vgg_state: dict | None = None):
        self.mcfg, self.cfg, self.dataset, self.run_dir = model_cfg, cfg, dataset, Path(run_dir)
        self.arch = arch_of(model_cfg)  # what G can do: style mixing, path length, noise modes
        self.acc = acc
        self.micro = micro_batch(cfg.batch, self.acc.num_processes, cfg.grad_accum)  # per-process micro-batch
        set_seed(cfg.seed)  # identical initial weights on every process
        G, D = build_generator(model_cfg), build_discriminator(model_cfg)
        self.G_ema = build_generator(model_cfg).requires_grad_(False)
        self.G_ema.load_state_dict(G.state_dict())
        self._calibrated = False  # G_ema's BN statistics are its own (recalibrated) since its last change
        if base is not None and resume_from is None:
            finetune.apply_base(base, G, D, self.G_ema)  # --from: start from the trained model
        finetune.freeze_blocks(D, cfg.freeze_d)
        self._d_trainable = [p for p in D.parameters() if p.requires_grad]
        set_seed(cfg.seed, device_specific=True)  # but different latents / augmentations per process
        # Lazy regularization: scale the betas and lr so the effective optimizer matches an
        # every-step regularized one (StyleGAN2, Appendix B).
        def opt(params, lr, interval):
            ratio = interval / (interval + 1) if interval else 1.0
            b1, b2 = cfg.betas
            # fused: one kernel for every parameter, and it can skip a step on the device.
            return torch.optim.Adam(params, lr=lr * ratio, betas=(b1 ** ratio, b2 ** ratio), eps=1e-8, fused=True)
        g_int = cfg.pl_interval if self._pl_on() else 0
        d_int = cfg.r1_interval if self._reg_on() else 0
        opt_G, opt_D = opt(G.parameters(), cfg.lr_g, g_int), opt(self._d_trainable, cfg.lr_d, d_int)
        self.base_lrs = [opt_G.param_groups[0]["lr"], opt_D.param_groups[0]["lr"]]
        # Re-applied after a checkpoint loads (its optimizer state carries the old run's): a resume
        # with --betas or --lr-g/--lr-d trains with the values given.
        self.base_betas = [opt_G.param_groups[0]["betas"], opt_D.param_groups[0]["betas"]]
        # Test hooks, from the caller only: "scaler" gives a CPU run fp16's GradScaler logic.
        self.faults = {k: set(v) for k, v in (faults or {}).items()}
        if "scaler" in self.faults and self.acc.scaler is None:
            self.acc.scaler = torch.amp.GradScaler(self.acc.device.type)
        self.G, self.D, self.opt_G, self.opt_D = self.acc.prepare(G, D, opt_G, opt_D)
        self.sync_buffers = BufferSync(self.acc.num_processes, G, D)  # what DDP's broadcast_buffers did
        if "old_ddp" in self.faults:  # test hook: DDP before torch 2.12 on CI's newer torch
            _bump_versions_like_old_ddp(self.acc.process_index, self.G, self.D)
        self.G_ema.to(self.acc.device)
        compiling = cfg.compile == "on" or (cfg.compile == "auto" and self.acc.device.type == "cuda")
        self.compiled = Compiler(compiling, self._log, compile_backend(self.faults), cfg.compile_mode)
        self._p_device = None  # (aug p, that p as a device tensor) for the compiled augmentation
        self._shared_fake = None  # this step's fakes with G's graph, from the D phase to the G phase
        self._match = None  # (matched latents, their reals' thumbnails, the reals): the G phase's pull targets
        self.bank = (LatentBank(cfg.match_bank, model_cfg.z_dim, min(cfg.match_size, model_cfg.resolution),
                                self.acc.device) if matching_on(cfg) else None)
        self.pull = FeaturePull(self.acc.device) if cfg.match_perceptual > 0 else None
        if compiling and self.acc.is_main_process:
            print("torch.compile on: the first steps compile G, D and the augmentation (a minute or so); --compile off skips it")
        adaptive = cfg.aug == "ada"
        self.aug = AdaptiveP(cfg.aug_p if cfg.aug in ("ada", "fixed") else 0.0, cfg.ada_target, cfg.batch,
                             cfg.ada_interval, cfg.ada_kimg, adaptive, cfg.ada_p_max, pseudo=cfg.apa == "on")
        self.style = None  # style-guided training: Gram targets of the style images
        if style_images:
            from ..style import StyleTarget, VGGFeatures, style_size

            dtype = torch.bfloat16 if cfg.mixed_precision == "bf16" else torch.float32
            vgg = VGGFeatures(vgg_state, cfg.vgg).to(self.acc.device).with_dtype(dtype)
            self.style = StyleTarget(vgg, style_images, style_size(model_cfg.resolution))
        # G_ema, the ADA controller and the counters are saved by `_save_trainer_state` as
        # safetensors + JSON, not through Accelerate's custom-object pickle (a pickle in a run dir
        # someone shared would run code on resume).
        self.counters = Counters()
        self.evaluator = None
        self.last_metrics: dict = {}
        if cfg.metrics:
            from ..metrics import Evaluator, parse_metrics

            self.metric_names = parse_metrics(cfg.metrics)
            world = acc.num_processes
            self.evaluator = Evaluator(
                self.metric_names, dataset, cfg.metrics_num, self.run_dir / "metrics_cache", acc.device,
                acc.process_index, world, gather=(lambda t: acc.gather(t)) if world > 1 else None,
                log=lambda m: acc.is_main_process and tqdm.write(m))
        # What train() lets go of when it ends (set by launch): the main process's lock on the run dir.
        self.held = contextlib.ExitStack()
        self.overflows = 0  # scaler-skipped steps in this process's run (logged)
        self._outcomes: list = []  # (step, outcome tensor) not yet read by `_settle`
        self._bad = self._overflow = 0  # current streaks of BAD / SKIPPED steps
        self.stop_signal: int | None = None
        self.last_ckpt: Path | None = None
        # Benchmarks: wait for the device where the steady window opens and closes (two syncs
        # in the run), so queued work is timed where it runs. Off in training: no step waits.
        self.sync_timing = False
        self.steady_window: tuple | None = None  # (first image, last image, t0, t1) of that window, set by train()
        self._device_data = None  # DeviceBatches: the store in device memory
        nbytes = self.dataset.images.nbytes
        if cfg.data_on_device == "on" or (cfg.data_on_device == "auto" and fits_on_device(nbytes, self.acc.device)):
            try:
                self._device_data = DeviceBatches(self.dataset, self.acc.device)
            except Exception as e:
                if not is_oom(e):
                    raise
                raise UserError(f"the store ({nbytes / 2 ** 30:.1f} GiB) does not fit in {self.acc.device} memory "
                                "next to the models: use --data-on-device off") from None
            if self.acc.is_main_process:
                print(f"training images on {self.acc.device}: {nbytes / 2 ** 20:,.0f} MiB, batches gathered there")
        if resume_from is not None:
            self._load(resume_from)
        elif base is None:  # a base model brings its own tracked mean w
            self._init_w_avg()
        if model_cfg.clusters:
            self._cluster(fresh=resume_from is None and base is None, refit=resume_from is None)
        self._make_loader()

    def _cluster(self, fresh: bool, refit: bool) -> None:
        """A self-conditioned run's clusters: the dataset's labels become each image's cluster. A new
        run finds them (k-means on thumbnails) and keeps their centroids in G; a resumed one reads
        them back from G; one started from a model (--from) puts the new store's images in the
        base's clusters (`refit`: each cluster's share of the latent follows its share of this store)."""
        G = self._unwrap(self.G)
        images = self.dataset.images
        if fresh:
            centroids, labels = clustering.kmeans(clustering.thumbnails(images), self.mcfg.clusters, self.cfg.seed)
        else:
            centroids = G.cluster_centroids.detach().cpu()
            labels = clustering.assign(images, centroids)
        sizes = torch.bincount(labels, minlength=self.mcfg.clusters)
        if refit:  # a new run (fresh) or --from: the intervals follow this store's shares
            edges = clustering.edges(sizes.double())
            for g in (G, self.G_ema):
                g.cluster_centroids.copy_(centroids)
                g.cluster_edges.copy_(edges.float())
        self.dataset.labels = labels.numpy().astype(np.int64)
        if self._device_data is not None:
            self._device_data.labels = labels.to(self.acc.device)
        if self.acc.is_main_process and fresh:
            print(f"clusters: {self.mcfg.clusters} of {len(labels):,} images by layout and colour "
                  f"(sizes {', '.join(map(str, sorted(sizes.tolist(), reverse=True)))}); G reads one from each latent")

    # ------------------------------------------------------------------ data
    def _make_loader(self) -> None:
        sampler = InfiniteSampler(len(self.dataset), self.acc.process_index, self.acc.num_processes,
                                  self.cfg.seed, start=self.counters.data_pos, mirror=self.cfg.xflip)
        if self._device_data is not None:
            self._batches = self._device_data.batches(sampler, self.micro)
            return
        loader = torch.utils.data.DataLoader(self.dataset, batch_size=self.micro, sampler=sampler,
                                             collate_fn=type(self.dataset).collate, num_workers=self.cfg.workers,
                                             worker_init_fn=partial(type(self.dataset).worker_init, os.getpid()),
                                             drop_last=True,
                                             # Pinned batches: their copy to the GPU does not wait
                                             # for the queued kernels (see data.to_device_async).
                                             pin_memory=self.acc.device.type == "cuda",
                                             # Own generator: creating an iterator must not consume the
                                             # global RNG, or a resumed run would diverge from an unbroken one.
                                             generator=torch.Generator().manual_seed(self.cfg.seed))
        self._batches = iter(loader)

    def _next_real(self):
        x, c = next(self._batches)
        self.counters.data_pos += x.shape[0]
        if self.mcfg.c_dim and self.cfg.fixed_class >= 0:  # conditional base model, unlabelled store
            c = torch.full((x.shape[0],), self.cfg.fixed_class, dtype=torch.long, device=self.acc.device)
        # The store's classes, or a self-conditioned run's clusters (the dataset's labels, set in _cluster)
        c = to_device_async(c, self.acc.device) if self.mcfg.c_dim or self.mcfg.clusters else None
        return to_device_async(x, self.acc.device), c

    @torch.no_grad()
    def _init_w_avg(self) -> None:
        """Start the tracked mean w (truncation's centre) at the mean of the initial mapping,
        not at zero, so it is the mean w from the first step on; the D phase then tracks it."""
        if not self.arch.mapping:
            return
        G = self._unwrap(self.G)
        gen = torch.Generator().manual_seed(self.cfg.seed)
        z = torch.randn(1024, self.mcfg.z_dim, generator=gen).to(self.acc.device)
        c = (torch.randint(0, self.mcfg.c_dim, (1024,), generator=gen).to(self.acc.device)
             if self.mcfg.c_dim else None)
        G.mapping.w_avg.copy_(G.mapping(z, c)[:, 0].float().mean(0))
        self.G_ema.mapping.w_avg.copy_(G.mapping.w_avg)
        self._calibrated = False

    def _evaluate(self) -> dict | None:
        """Metrics of G_ema on every process (sharded); logged by the main one. Returns the
        ranking metric for the checkpoint, or None."""
        from ..metrics import primary_value
        from ..sampling import Sampler

        self._recalibrate()
        t = time.perf_counter()
        sampler = Sampler(self.G_ema, self.mcfg, self.acc.device, self.cfg.mixed_precision)
        values = self.evaluator.evaluate(sampler, self.dataset.manifest_hash)
        self.last_metrics = values
        kimg = self.counters.cur_nimg / 1000
        if self.acc.is_main_process and values:
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps({"kimg": kimg, "num": self.evaluator.total,
                                    "seconds": round(time.perf_counter() - t, 2), **values}) + "\n")
            tqdm.write(f"metrics at {kimg:g} kimg: " + ", ".join(f"{k} {v:.4g}" for k, v in values.items()))
        if values:
            self.acc.log({f"Metrics/{k}": v for k, v in values.items()}, step=self.counters.cur_nimg)
        best = primary_value(self.evaluator.names, values)
        return {"name": best[0], "value": best[1]} if best else None

    def _export(self, folder: Path) -> None:
        self._recalibrate()
        save_generator(self.G_ema, self.mcfg, folder, extra={
            "train": self.cfg.to_dict(), "kimg": self.counters.cur_nimg / 1000,
            "dataset": getattr(self.dataset, "manifest", {}).get("source", {}),
            "metrics": self.last_metrics})

    def _recalibrate(self) -> None:
        """Once per state of G_ema: a snapshot, an export and metrics at the same step share it
        (it is deterministic, and at 64 px it costs seconds of a CPU's training)."""
        if not self._calibrated:
            with self.acc.autocast():
                recalibrate_batchnorm(self.G_ema, self.mcfg.z_dim, self.mcfg.c_dim, self.acc.device)
            self._calibrated = True
        self.G_ema.eval()

    # ------------------------------------------------------------------ main loop
    def _on_signal(self, signum, frame):
        self.stop_signal = signum

    def train(self) -> int:
        cfg, acc, ctr = self.cfg, self.acc, self.counters
        main = acc.is_main_process
        total = round(cfg.kimg * 1000)  # round, not int(): 0.384 * 1000 is 383.99999...

        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        seeds = list(range(min(64, max(16, 4 * max(self.mcfg.c_dim, 1)))))
        grid_z, grid_c = self._grid_inputs(seeds)
        # The bar ends where training really ends: the first multiple of the batch past `total`
        # (a bar whose count overshoots its total drops the total from its display).
        def bar_end(total: int) -> int:
            return ctr.cur_nimg + max(0, -(-(total - ctr.cur_nimg) // cfg.batch)) * cfg.batch

        bar = tqdm(total=bar_end(total), initial=ctr.cur_nimg, unit="img", unit_scale=True,
                   disable=not main, dynamic_ncols=True, desc="train")
        next_snap = next_multiple(ctr.cur_nimg, cfg.snap * 1000)
        next_ckpt = next_multiple(ctr.cur_nimg, cfg.checkpoint_every * 1000)
        metric_every = (cfg.metrics_every or cfg.checkpoint_every) * 1000
        next_metric = next_multiple(ctr.cur_nimg, metric_every)
        t0, n0 = time.perf_counter(), ctr.cur_nimg
        deadline = t0 + cfg.minutes * 60 if cfg.minutes > 0 else None  # --minutes: this session's budget
        eta_due = None  # when the measured-speed estimate is printed: ETA_AFTER_S into the steady window
        t_steady = n_steady = None
        steps_here = 0  # steps of this session (a resumed run's counters start far from 0)
        steps_steady = 0  # of those, steps that ran as every later step will (see _full_step)
        # Auto sized a new CPU run from a matmul timed at start-up; its first steps size it again.
        resize = cfg.resize_minutes > 0 and n0 == 0
        stats: dict = {}
        try:
            if main:  # inside: a full disk here is reported like any other write's
                acc.init_trackers("tb", config={k: (str(v) if isinstance(v, (list, tuple, dict)) else v)
                                               for k, v in cfg.to_dict().items()})
            if self.last_ckpt is None:
                self.save_checkpoint()  # a restore point before the first step
                self._snapshot(grid_z, grid_c)
            t_loop = time.perf_counter()
            while ctr.cur_nimg < total:
                if ctr.step in self.faults.get("oom", ()):
                    raise torch.OutOfMemoryError("injected out of memory")
                ada_now = cfg.aug == "ada" and ctr.step % cfg.ada_interval == 0
                if self.compiled.cudagraphs:
                    # A new step: the CUDA graphs may reuse their output memory of the last one
                    # (what the host keeps of a step, losses and outcomes, is computed eagerly).
                    torch.compiler.cudagraph_mark_step_begin()
                self.sync_buffers()
                full = self._full_step()  # before the step: a bank filled by this step pulls from the next
                try:
                    outcome = self._step(stats)
                except Exception as e:
                    if not self.compiled.failed(e):
                        raise
                    # A compile failure surfaces in a phase's first call or backward: this step
                    # runs again eagerly (a phase that had already stepped has stepped twice).
                    self.opt_D.zero_grad(set_to_none=True)
                    self.opt_G.zero_grad(set_to_none=True)
                    outcome = self._step(stats)
                self._outcomes.append((ctr.step, outcome))
                if ada_now:  # reads its statistics on the host: a sync every ada_interval steps
                    self.aug.update(lambda t: acc.reduce(t.to(acc.device), "sum").cpu())
                self.faults.get("overflow", set()).discard(ctr.step)  # injected once, like "nan"
                if ctr.step in self.faults.get("nanweight", ()):  # weights damaged behind the step's back
                    self.faults["nanweight"].discard(ctr.step)
                    with torch.no_grad():
                        next(self._unwrap(self.G).parameters()).view(-1)[0] = float("nan")
                ctr.step += 1
                # A skipped step (found non-finite on the device) still consumed its batch.
                ctr.cur_nimg += cfg.batch
                update_ema(self.G_ema, self._unwrap(self.G), cfg.batch, ctr.cur_nimg, cfg.ema_kimg, cfg.ema_rampup)
                self._calibrated = False
                done = ctr.cur_nimg >= total
                steps_here += 1
                steps_steady += full
                if steps_steady == WARMUP_STEPS or (done and t_steady is not None):
                    # The window closes with the last step, before the final snapshot/checkpoint.
                    if self.sync_timing and self.acc.device.type == "cuda":
                        torch.cuda.synchronize(self.acc.device)
                    if t_steady is None:
                        t_steady, n_steady = time.perf_counter(), ctr.cur_nimg
                        eta_due = t_steady + ETA_AFTER_S
                    else:
                        self.steady_window = (n_steady, ctr.cur_nimg, t_steady, time.perf_counter())
                bar.update(cfg.batch)
                due_log = ctr.step % cfg.log_every == 0
                due_snap = ctr.cur_nimg >= next_snap or done
                due_metric = self.evaluator is not None and (ctr.cur_nimg >= next_metric or done)
                due_ckpt = ctr.cur_nimg >= next_ckpt or done or due_metric
                # The host reads the steps' outcomes only where it stops anyway (logs, ADA,
                # snapshots, checkpoints, a signal): between them the GPU never waits for Python.
                settle = due_log or due_snap or due_ckpt or ada_now
                stop = self._stop_requested(settle)
                if (eta_due is not None and t_steady is not None and ctr.cur_nimg > n_steady
                        and self._agreed(time.perf_counter() >= eta_due or steps_here in self.faults.get("eta", ()),
                                         settle)):
                    eta_due = None
                    rate = self._rate_since((n_steady, t_steady))  # one figure for the length and the ETA
                    if resize and not done:
                        total = self._resize(t0, t_loop, rate)
                        bar.total = bar_end(total)
                        bar.refresh()
                        next_snap = next_multiple(ctr.cur_nimg, cfg.snap * 1000)
                        next_ckpt = next_multiple(ctr.cur_nimg, cfg.checkpoint_every * 1000)
                        metric_every = (cfg.metrics_every or cfg.checkpoint_every) * 1000
                        next_metric = next_multiple(ctr.cur_nimg, metric_every)
                        done = ctr.cur_nimg >= total  # a run already past what its minutes reach
                        due_snap, due_ckpt = due_snap or done, due_ckpt or done
                    self._print_eta(total, deadline, rate)
                out_of_time = not done and self._time_up(deadline, settle)
                if out_of_time:
                    due_ckpt = due_snap = True
                if settle or stop or out_of_time:  # read the steps' outcomes before the checkpoint
                    if self._settle():  # diverged: back to the last checkpoint
                        bar.n = ctr.cur_nimg
                        continue
                if due_log:
                    self._log_progress(stats, (ctr.cur_nimg - n0) / max(time.perf_counter() - t0, 1e-9), bar)
                if due_snap:
                    self._snapshot(grid_z, grid_c)
                    next_snap = next_multiple(ctr.cur_nimg, cfg.snap * 1000)
                if due_ckpt or stop:
                    if not self._weights_finite():  # never write non-finite weights
                        self._recover("non-finite weights before a checkpoint")
                        bar.n = ctr.cur_nimg
                        continue
                    metric = self._evaluate() if due_metric else None
                    if due_metric:
                        next_metric = next_multiple(ctr.cur_nimg, metric_every)
                    path = self.save_checkpoint(metric)
                    next_ckpt = next_multiple(ctr.cur_nimg, cfg.checkpoint_every * 1000)
                    if stop:
                        self._log(f"stopped by signal at {ctr.cur_nimg / 1000:.1f} kimg; checkpoint {path}; "
                                  "continue with --resume auto")
                        return 128 + self.stop_signal if self.stop_signal else 130
                if out_of_time:
                    self._log(f"--minutes {cfg.minutes:g} reached at {ctr.cur_nimg / 1000:.1f} of {cfg.kimg:g} kimg; "
                              f"checkpoint {self.last_ckpt}; continue with --resume auto")
                    return 0
        except DiskFull:
            raise
        except Exception as e:
            if is_oom(e):
                raise UserError(f"out of memory with a per-device batch of {self.micro}: try a smaller --batch "
                                f"or --grad-accum {cfg.grad_accum * 2}") from None
            if no_space_left(e, self.run_dir):  # a sample grid, a log line: the checkpoints are intact
                raise disk_full(getattr(e, "filename", None) or self.run_dir,
                                (f"the last checkpoint {self.last_ckpt.name} is intact" if self.last_ckpt else
                                 "no checkpoint was written yet") + "; free space and --resume auto") from None
            raise
        finally:
            failing = sys.exc_info()[1]
            bar.close()
            for s, h in old.items():
                signal.signal(s, h)
            try:
                acc.end_training()
            except OSError:  # the trackers' last flush on a full disk must not hide the first error
                if failing is None:
                    raise
            finally:
                self.held.close()
        self._log(f"done: {ctr.cur_nimg / 1000:.1f} kimg; model exported to {self.last_ckpt / 'export'}")
        return 0

    def _full_step(self) -> bool:
        """Whether the next step does all that every later step will, so that its time counts toward
        the measured speed. Not while nearest-fake matching fills its bank: both pulls start once it
        is full (2,048 fakes in auto: 128 steps at batch 16). On a 2-core CPU auto's emoji run timed
        those steps at 73.6 img/s and planned 131 kimg for its half hour, which reached 105; timed
        after them, the same run measures about 64 and plans 114."""
        return self.bank is None or self.bank.full

    def _time_up(self, deadline: float | None, settle: bool) -> bool:
        """--minutes has run out (on the main process's clock, agreed like a signal)."""
        return deadline is not None and self._agreed(time.perf_counter() >= deadline, settle)

    def _resize(self, t0: float, t_loop: float, rate: float) -> int:
        """--preset auto on a CPU sized this run to `resize_minutes` from a matmul timed at start-up,
        which misses a CPU's real speed by up to twice (threads, caches, other work on the machine).
        Now that steps have been timed (at `rate` images a second), the length becomes what that
        speed reaches in those minutes, counted from the session's start `t0`, less the progress
        grids and checkpoints still to come (RESIZE_OVERHEAD times the start-up's, which ended at
        `t_loop`). Every process takes the same length; config.json keeps it, so a resume trains to
        it and never sizes it again. Returns the new total in images."""
        cfg, ctr = self.cfg, self.counters
        left = cfg.resize_minutes * 60 - (time.perf_counter() - t0) - RESIZE_OVERHEAD * (t_loop - t0)
        kimg = max(MIN_KIMG, float(int((ctr.cur_nimg + rate * max(0.0, left)) / 1000)))
        if self.acc.num_processes > 1:  # their clocks differ by a little: the longest
            kimg = float(self.acc.reduce(torch.tensor(kimg, device=self.acc.device), "max"))
        planned, minutes = cfg.kimg, cfg.resize_minutes
        schedule = {**cpu_schedule(kimg), "resize_minutes": 0.0}
        for k, v in schedule.items():
            setattr(cfg, k, v)
        if self.acc.is_main_process:
            from . import rundir

            rundir.update_train(self.run_dir, schedule)
            self._log(f"preset auto: {rate:.1f} img/s measured here: {minutes:g} minutes reach {kimg:g} kimg, "
                      f"the run's length now (the start-up estimate planned {planned:g}; --kimg sets your own)")
        return round(cfg.kimg * 1000)

    def _rate_since(self, mark: tuple) -> float:
        """Images a second since `mark` (images, time); 0 before any image or time has passed."""
        n, t = mark
        dt = time.perf_counter() - t
        return (self.counters.cur_nimg - n) / dt if dt > 0 and self.counters.cur_nimg > n else 0.0

    def _print_eta(self, total: int, deadline: float | None, rate: float) -> None:
        """Once, after the first steps: the speed measured since the end of this session's warm-up
        (`rate`, images a second) and when the run ends."""
        if not self.acc.is_main_process or rate <= 0:
            return
        left = max(0, total - self.counters.cur_nimg) / rate
        msg = f"measured {rate:.1f} img/s here: {self.cfg.kimg:g} kimg ends in about {duration(left)}"
        if deadline is not None and deadline - time.perf_counter() < left:
            reach = (self.counters.cur_nimg + rate * max(0.0, deadline - time.perf_counter())) / 1000
            msg += f"; --minutes {self.cfg.minutes:g} stops it first, near {reach:.0f} kimg"
        self._log(msg)

    @property
    def steady_img_per_s(self) -> float | None:
        """End-to-end img/s after the warm-up steps (None for a run too short to have a window)."""
        if self.steady_window is None or self.steady_window[1] <= self.steady_window[0]:
            return None
        n0, n1, t0, t1 = self.steady_window
        return (n1 - n0) / (t1 - t0)

    def _log_progress(self, stats: dict, rate: float, bar) -> None:
        """The step's statistics to the trackers and the progress bar (one host read for all)."""
        values = dict(zip(stats, torch.stack([v.float() for v in stats.values()]).tolist()))
        scalars = {f"Loss/{k[5:]}": v for k, v in values.items() if k.startswith("loss_")}
        if self.style is not None:
            scalars["Style/weight"] = self.cfg.style_weight
        if self.acc.scaler is not None:
            scalars.update({"AMP/scale": self.acc.scaler.get_scale(), "AMP/skipped_steps": self.overflows})
        scalars.update({"Logits/real": values.get("logits_real", 0.0), "Logits/fake": values.get("logits_fake", 0.0),
                        "Aug/p": self.aug.p, "Aug/rt": self.aug.last_rt, "Speed/img_per_s": rate,
                        **({"Aug/apa": self.aug.pseudo} if self.aug.pseudo_on else {}),
                        "LR/G": self.opt_G.param_groups[0]["lr"], "LR/D": self.opt_D.param_groups[0]["lr"],
                        "Progress/kimg": self.counters.cur_nimg / 1000})
        self.acc.log(scalars, step=self.counters.cur_nimg)
        if self.acc.is_main_process:  # the same figures as JSON lines, for readers without TensorBoard (the studio)
            with open(self.run_dir / "stats.jsonl", "a") as f:
                f.write(json.dumps({"kimg": self.counters.cur_nimg / 1000, **scalars}) + "\n")
        bar.set_postfix(D=f"{values.get('loss_D', 0):.3f}", G=f"{values.get('loss_G', 0):.3f}",
                        p=f"{self.aug.p:.2f}" + (f"/{self.aug.pseudo:.2f}" if self.aug.pseudo_on else ""),
                        ips=f"{rate:.0f}", refresh=False)

    def _log(self, msg: str) -> None:
        """A line on the console and in events.jsonl (main process)."""
        if self.acc.is_main_process:
            tqdm.write(msg)
            with open(self.run_dir / "events.jsonl", "a") as f:
                f.write(json.dumps({"kimg": self.counters.cur_nimg / 1000, "event": msg}) + "\n")

    def _stop_requested(self, settle: bool) -> bool:
        """A SIGINT/SIGTERM arrived (on any process)."""
        stop = self._agreed(self.stop_signal is not None, settle)
        if stop and self.stop_signal is None:
            self.stop_signal = signal.SIGTERM
        return stop

    def _agreed(self, local: bool, settle: bool) -> bool:
        """`local` on any process. With several processes they agree at the settle points only
        (a collective), so every one acts after the same step."""
        if self.acc.num_processes == 1:
            return local
        if not settle:
            return False
        return bool(self.acc.reduce(torch.tensor(float(local), device=self.acc.device), "max") > 0)

    def _grid_inputs(self, seeds):
        z = latents_for_seeds(seeds, self.mcfg.z_dim).to(self.acc.device)
        c = (torch.arange(len(seeds), device=self.acc.device) % self.mcfg.c_dim) if self.mcfg.c_dim else None
        return z, c

    @torch.no_grad()
    def _snapshot(self, z, c) -> None:
        if not self.acc.is_main_process:
            return
        self._recalibrate()
        with self.acc.autocast():
            kw = {"noise": "const"} if self.arch.noise_modes else {}
            imgs = self.G_ema(z, c, **kw).float()
        path = self.run_dir / "samples" / f"fakes_{checkpoint.name_for(self.counters.cur_nimg)}.png"
        grid = save_grid(imgs, path, cols=grid_cols(len(imgs)))
        tracker = self.acc.get_tracker("tensorboard", unwrap=True)
        if tracker is not None and hasattr(tracker, "add_image"):
            tracker.add_image("samples", np.asarray(grid), self.counters.cur_nimg, dataformats="HWC")


def launch(plan, command: list | None = None, faults: dict | None = None) -> Trainer:
    """The Accelerator, the run dir (new, or the resumed one with its config refreshed) and a
    Trainer ready to `train()`, from a `setup.resolve` plan."""
    from . import rundir
    from .runtime import make_accelerator, set_kernel_choice, share_run_dir

    cfg = plan.cfg
    if "TORCHELASTIC_RUN_ID" in os.environ:  # a rank under torchrun / accelerate launch
        from data_prep.store import die_with_parent

        # The launcher killed (even with -9): every rank gets SIGTERM, checkpoints together and exits.
        die_with_parent(os.getppid(), signal.SIGTERM)
    acc = make_accelerator(cfg.mixed_precision, cfg.outdir)
    set_kernel_choice(cfg.deterministic == "on", acc.device)  # before any model touches the GPU
    extra = {"data_manifest_hash": plan.dataset.manifest_hash, "command": list(command or [])}
    # What every process must agree on (checked by share_run_dir when there are several).
    facts = {"store": plan.dataset.manifest_hash, "resume": plan.ckpt.name if plan.ckpt is not None else None}
    # The run dir's lock: released if start-up fails, else handed to the Trainer (train() releases it).
    with contextlib.ExitStack() as held:

        def _locked(run: Path) -> Path:
            """The main process locks the run dir before writing in it (a second train.py on it stops)."""
            held.enter_context(rundir.RunLock(run))
            return run

        try:
            if plan.ckpt is not None:
                run_dir = share_run_dir(acc, lambda: _locked(plan.run_dir), facts)
                if acc.is_main_process:
                    rundir.write_config(run_dir, plan.mcfg, cfg, extra)
            elif plan.restart_in is not None:
                run_dir = share_run_dir(acc, lambda: rundir.restart(_locked(plan.restart_in), plan.mcfg, cfg, extra),
                                        facts)
            else:
                run_dir = share_run_dir(acc, lambda: _locked(rundir.create(Path(cfg.outdir), cfg.name, plan.mcfg, cfg,
                                                                           extra)), facts, new=True)
            if acc.is_main_process and plan.ckpt is None and plan.style_images:
                finetune.save_style_images(plan.style_images, run_dir)
        except OSError as e:
            where = getattr(e, "filename", None) or cfg.outdir
            if not no_space_left(e, where):
                raise UserError(f"cannot write the run dir in --outdir {cfg.outdir} ({e.strerror or e}: {where}); "
                                "pick a folder you can write to") from None
            raise disk_full(where, ("the run's checkpoints are intact" if plan.ckpt is not None else
                                    "nothing was trained yet") + "; free space and run the command again") from None
        if acc.is_main_process:
            print(f"run dir: {run_dir}")
        trainer = Trainer(acc, plan.mcfg, cfg, plan.dataset, run_dir, resume_from=plan.ckpt, faults=faults,
                          base=plan.base, style_images=plan.style_images, vgg_state=plan.vgg_state)
        trainer.held = held.pop_all()
    return trainer


def _bump_versions_like_old_ddp(rank: int, *models) -> None:
    """Test hook ("old_ddp"): do to each DDP-wrapped model what DDP's buffer broadcast did at every
    forward before torch 2.12, whatever torch runs: copy into every buffer (artgan asks DDP to ignore
    none) on ranks other than 0, bumping their version counters. Training must not depend on DDP's
    buffer sync (BufferSync)."""
    for m in models:
        if rank == 0 or not getattr(m, "forward_sync_buffers", getattr(m, "broadcast_buffers", False)):
            continue
        synced = list(m.module.buffers())

        def bump(module, args, synced=synced):
            with torch.no_grad():
                for b in synced:
                    b.copy_(b.clone())
        m.register_forward_pre_hook(bump)
