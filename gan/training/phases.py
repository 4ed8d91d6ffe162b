"""One training step, phase by phase: D main, lazy R1, G main, lazy path length, style.

`Phases` is mixed into `loop.Trainer` and uses its models, optimizers, Accelerator, configs and
counters. The losses are `gan.losses`' pure functions; this is where they meet the optimizers.
Nothing here reads a tensor on the host: a phase returns its outcome as a device tensor, and a
step whose loss or gradients are non-finite is skipped by the optimizer on the device.
"""
from __future__ import annotations

import contextlib

import torch

from .. import clusters as clustering
from .. import losses
from ..augment import apply_augment, augment, pseudo_reals
from ..models.layers import power_iteration
from .matching import matched_count, thumbnails

# Outcome of a step, worst highest, as a 0-dim device tensor (the host reads a batch of them at
# once in `Trainer._settle`, never one per step). SKIPPED: fp16's GradScaler found inf/NaN
# gradients, skipped the update and lowered its scale (normal while the scale settles). BAD: a
# non-finite loss, or non-finite gradients without a scaler: divergence, counted toward a
# restore. Either way the optimizer skipped the update on the device (fused Adam's `found_inf`).
OK, SKIPPED, BAD = 0, 1, 2


class Phases:
    def _unwrap(self, m):
        return self.acc.unwrap_model(m)

    def _z(self, n: int, c=None) -> torch.Tensor:
        """`n` fresh latents; a self-conditioned G's inside the intervals of clusters `c` (gan.clusters)."""
        z = torch.randn(n, self.mcfg.z_dim, device=self.acc.device)
        if self.mcfg.clusters and c is not None:
            z[:, 0] = clustering.z0_for(c[:n], self._unwrap(self.G).cluster_edges)
        return z

    def _reg_on(self) -> bool:
        return self.cfg.r1_gamma > 0 or self.cfg.r2_gamma > 0

    def _recon_on(self) -> bool:
        return self.arch.self_supervised and self.cfg.recon_weight > 0

    def _all_of_d(self) -> torch.Tensor:
        """0, with every trainable D parameter in its graph. DDP's reducer waits for a gradient of
        each, so a phase whose loss leaves some out (R1's logits, a D step without fastgan's
        decoders) adds this to its loss."""
        return sum(p.reshape(-1)[0] for p in self._d_trainable).float() * 0

    def _pl_on(self) -> bool:
        return self.cfg.pl_weight > 0 and self.arch.path_length

    def _gen(self, G, z, c, update_w_avg: bool = False):
        kw = {}
        if self.arch.style_mixing:
            kw["style_mixing"] = self.cfg.style_mixing
        if self.arch.mapping:
            kw["update_w_avg"] = update_w_avg
        return G(z, c if self.mcfg.c_dim else None, **kw)  # a self-conditioned G reads its cluster from z

    def _augment(self, x: torch.Tensor, compiled: bool = True) -> torch.Tensor:
        """What D sees of `x`. The main phases run the augmentation compiled (with the models):
        eagerly it is some 50 small ops, each a kernel launch on a GPU. R1 differentiates through
        it twice, which a compiled graph cannot, so it passes `compiled=False`."""
        p, geom = self.aug.p, self.cfg.aug_geom == "on"
        if p <= 0:
            return x
        if not (compiled and self.compiled.enabled):
            return augment(x, p, geom=geom)
        if self._p_device is None or self._p_device[0] != p:  # a fill kernel, no host->device copy
            self._p_device = (p, torch.full((), p, device=x.device))
        return augment(x, self._p_device[1], apply=self.compiled(apply_augment), geom=geom)

    def _sync_last(self, model, i: int):
        """Gradient accumulation: all-reduce only on the last micro-batch of a phase."""
        return self.acc.no_sync(model) if i < self.cfg.grad_accum - 1 else contextlib.nullcontext()

    def _grad_scale(self) -> torch.Tensor | None:
        """fp16's current loss scale as a device tensor (no host sync), or None without a scaler."""
        if self.acc.scaler is None:
            return None
        return self.acc.scaler.scale(torch.ones((), device=self.acc.device))

    @staticmethod
    def _nonfinite(loss: torch.Tensor) -> torch.Tensor:
        return (~torch.isfinite(loss.detach().float())).float()

    def _apply(self, opt, model, bad: torch.Tensor) -> torch.Tensor:
        """The optimizer step, skipped on the device when `bad` (a non-finite loss) or any
        gradient is non-finite. Returns the outcome as a device tensor: no host sync."""
        grads = [p.grad for p in self._unwrap(model).parameters() if p.grad is not None]
        if self.acc.scaler is not None:
            # fp16: the scaler unscales, skips the update on inf/NaN gradients and backs off.
            if grads and self.counters.step in self.faults.get("overflow", ()):
                grads[0].view(-1)[0] = float("inf")
            before = self._grad_scale()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return torch.maximum((self._grad_scale() < before).float() * SKIPPED, bad * BAD)
        found = bad.detach().clone()
        if grads:  # sets `found` to 1 if any gradient holds inf/NaN (GradScaler's kernel, scale 1)
            torch._amp_foreach_non_finite_check_and_unscale_(grads, found, torch.ones((), device=found.device))
        if self.acc.num_processes > 1:  # every process skips the same steps
            found = self.acc.reduce(found, "max")
        inner = opt.optimizer
        inner.found_inf = found  # read by fused Adam: the update is skipped on the device
        try:
            opt.step()
        finally:
            del inner.found_inf
        opt.zero_grad(set_to_none=True)
        return found * BAD

    def _backward_apply(self, loss, opt, model, before_step=None) -> torch.Tensor:
        """A lazy phase's update: backward, optional `before_step`, step (skipped on the device
        if the loss or a gradient is non-finite)."""
        bad = self._nonfinite(loss)
        self.acc.backward(loss)
        if before_step is not None:
            before_step()
        return self._apply(opt, model, bad)

    def _step_z(self, real: torch.Tensor, c) -> torch.Tensor:
        """This micro-batch's latents. With matching on (and the bank full: the first steps fill
        it), the first `match_frac` reals are matched to the latents of the recent fakes nearest
        them, kept with their thumbnails for the G phase's pull."""
        self._match = None
        k = matched_count(real.shape[0], self.cfg.match_frac) if self.bank is not None and self.bank.full else 0
        if k:
            self._match = (self.bank.nearest(real[:k], c[:k] if c is not None else None),
                           thumbnails(real[:k], self.bank.thumb), real[:k])
        return self._latents(real.shape[0], c)

    def _latents(self, n: int, c) -> torch.Tensor:
        """`n` fresh latents, the step's matched ones first (the D phase's and the G phase's fakes alike)."""
        z = self._z(n, c)
        if self._match is not None:
            z[:self._match[0].shape[0]] = self._match[0]
        return z

    def _match_loss(self, fake: torch.Tensor, stats: dict):
        """L1 between the matched fakes' thumbnails and their reals', and with --match-perceptual
        their distance in Lite0's feature maps (0 without a match)."""
        if self._match is None:
            return 0.0
        _, target, real = self._match
        matched = fake[:target.shape[0]]
        dist = (thumbnails(matched, self.bank.thumb) - target).abs().mean()
        stats["loss_match"] = dist.detach()
        loss = dist * self.cfg.match_weight
        if self.pull is not None:
            feat = self.pull(matched, real)
            stats["loss_perceptual"] = feat.detach()
            loss = loss + feat * self.cfg.match_perceptual
        return loss

    def _d_phase(self, stats: dict) -> torch.Tensor:
        cfg, acc = self.cfg, self.acc
        G = self._unwrap(self.G)
        bad = torch.zeros((), device=acc.device)
        shared = self.arch.shares_fakes(cfg.grad_accum)
        for i in range(cfg.grad_accum):
            real, c = self._next_real()
            z = self._step_z(real, c)
            # The mean w used for truncation is tracked here, on fakes D is about to see.
            if shared:  # with G's graph, kept for the G phase (self.G: DDP all-reduces its backward)
                with acc.autocast():
                    self._shared_fake = self._gen(self.compiled(self.G), z, c, update_w_avg=True)
                fake = self._shared_fake.detach()
            else:
                with torch.no_grad(), acc.autocast():
                    fake = self._gen(self.compiled(G), z, c, update_w_avg=True)
            if self.bank is not None:
                self.bank.add(z, fake, c)
            shown = pseudo_reals(real, fake, self.aug.pseudo) if self.aug.pseudo > 0 else real  # APA
            # DDP decides at forward time whether backward all-reduces: wrap both.
            with self._sync_last(self.D, i):
                with acc.autocast():
                    D_fast = self.compiled(self.D)
                    real_logits, fake_logits, recon = self._score_pair(D_fast, shown, fake, c)
                    real32, fake32 = real_logits.float(), fake_logits.float()
                    loss = losses.d_loss(cfg.loss, real32, fake32)
                    if cfg.lecam_weight > 0:
                        loss = loss + self._lecam(real32, fake32, stats) * cfg.lecam_weight
                    if recon is not None:
                        loss = loss + recon.mean() * (cfg.recon_weight * cfg.recon_interval)
                        stats["loss_recon"] = recon.detach().mean()
                    elif self.arch.self_supervised and acc.num_processes > 1:  # --recon-weight 0, or lazy
                        loss = loss + self._all_of_d()
                if self.counters.step in self.faults.get("nan", ()):
                    self.faults["nan"].discard(self.counters.step)
                    loss = loss * float("nan")
                # ADA reads D's own whole-image score (the first), not those of cells, a small copy or critics
                self.aug.accumulate(real_logits[:, :1])
                bad = torch.maximum(bad, self._nonfinite(loss))
                acc.backward(loss / cfg.grad_accum)  # a non-finite one: the step is skipped on the device
            stats["loss_D"] = loss.detach()
            stats["logits_real"] = real_logits.detach().float().mean()
            stats["logits_fake"] = fake_logits.detach().float().mean()
        # For R2 and the paired G loss: this step's last fakes, and D's logits on its last reals
        # (taken before D's update: one D forward fewer per G step than a fresh one).
        self._last_real = (real, c)
        self._last_fake = fake
        self._last_real_logits = real_logits.detach().float()
        return self._apply(self.opt_D, self.D, bad)

    def _score_pair(self, D, real: torch.Tensor, fake: torch.Tensor, c):
        """D's logits on the (augmented) reals and fakes, and, where D is self-supervised, its
        reconstruction loss on those reals (else None). One D call where the architecture scores
        groups (`Arch.grouped_scores`: the same values as two calls, in fewer, larger ops)."""
        recon_on = self._recon_on() and self.counters.step % self.cfg.recon_interval == 0
        if self.arch.grouped_scores and real.shape[0] == fake.shape[0]:
            real, fake = self._augment(real), self._augment(fake.float())
            both, cc = torch.cat([real, fake.to(real.dtype)]), None if c is None else torch.cat([c, c])
            logits, recon = D(both, cc, recon=True, groups=2) if recon_on else (D(both, cc, groups=2), None)
            real_logits, fake_logits = logits.chunk(2)
            return real_logits, fake_logits, recon
        real = self._augment(real)
        real_logits, recon = D(real, c, recon=True) if recon_on else (D(real, c), None)
        return real_logits, D(self._augment(fake.float()), c), recon

    def _lecam(self, real_logits: torch.Tensor, fake_logits: torch.Tensor, stats: dict) -> torch.Tensor:
        """LeCam's regularizer (Tseng et al., CVPR 2021): real logits above the moving average of the
        fake ones, and fake logits below that of the real ones, squared. It keeps D's scores from
        running apart on a small collection. The averages (decay 0.99) are of every process's logits
        (one all-reduce), so every process holds, and a checkpoint saves, the same two numbers."""
        means = torch.stack([real_logits.detach().mean(), fake_logits.detach().mean()])
        if self.acc.num_processes > 1:
            means = self.acc.reduce(means, "mean")
        old = torch.stack([torch.as_tensor(v, dtype=torch.float32, device=means.device)
                           for v in (self.counters.lecam_real, self.counters.lecam_fake)])
        new = torch.where(torch.isfinite(means), old.lerp(means, 0.01), old)
        self.counters.lecam_real, self.counters.lecam_fake = new[0].detach(), new[1].detach()
        reg = (torch.relu(real_logits - new[1]).square().mean() + torch.relu(new[0] - fake_logits).square().mean())
        stats["loss_lecam"] = reg.detach()
        return reg

    def _d_reg_phase(self, stats: dict) -> torch.Tensor:
        """Lazy R1 on reals and R2 on fakes (both: one backward, one step)."""
        cfg = self.cfg
        real, c = self._last_real
        scale = self._grad_scale()
        loss, pens = 0.0, {}
        for key, gamma, x in (("loss_R1", cfg.r1_gamma, real), ("loss_R2", cfg.r2_gamma, self._last_fake)):
            if gamma <= 0:
                continue
            x = x.detach().float().requires_grad_(True)
            with self.acc.autocast():
                logits = self.D(self._augment(x, compiled=False), c)
            pen = losses.r1_penalty(logits, x, scale)
            pens[key] = pen.detach().mean()
            loss = loss + pen.mean() * (gamma / 2) * cfg.r1_interval
        # The logits do not reach the parts only other phases use (fastgan's decoders).
        loss = loss + self._all_of_d()
        return self._backward_apply(loss, self.opt_D, self.D, before_step=lambda: stats.update(pens))

    def _g_phase(self, stats: dict) -> torch.Tensor:
        cfg, acc = self.cfg, self.acc
        D = self._unwrap(self.D)
        for p in self._d_trainable:  # FreezeD's frozen blocks stay frozen afterwards
            p.requires_grad_(False)
        _, c = self._last_real
        bad = torch.zeros((), device=acc.device)
        try:
            for i in range(cfg.grad_accum):
                with acc.autocast(), self._sync_last(self.G, i):
                    fake, self._shared_fake = self._shared_fake, None
                    if fake is None:  # fresh fakes; the matched latents first, as in the D phase
                        fake = self._gen(self.compiled(self.G), self._latents(self.micro, c), c)
                    logits = self.compiled(D)(self._augment(fake.float()), c)
                    loss = losses.g_loss(cfg.loss, logits.float(), self._last_real_logits)
                    loss = loss + self._match_loss(fake, stats)
                    bad = torch.maximum(bad, self._nonfinite(loss))
                    acc.backward(loss / cfg.grad_accum)
                stats["loss_G"] = loss.detach()
        finally:
            for p in self._d_trainable:
                p.requires_grad_(True)
        return self._apply(self.opt_G, self.G, bad)

    def _g_style_phase(self, stats: dict) -> torch.Tensor:
        """Style-guided training: the VGG Gram distance of a few of G's samples to the style
        images, added to G's objective every `style_every` steps (scaled by it)."""
        _, c = self._last_real
        n = min(self.cfg.style_batch, self.micro)
        with self.acc.autocast():
            fake = self._gen(self.G, self._z(n, c), c[:n] if c is not None else None)
        dist = self.style.distance(fake)
        loss = dist.mean() * self.cfg.style_weight * self.cfg.style_every
        return self._backward_apply(loss, self.opt_G, self.G,
                                    before_step=lambda: stats.update(loss_style=dist.detach().mean()))

    def _g_reg_phase(self, stats: dict) -> torch.Tensor:
        """Path-length regularization (StyleGAN). Runs on the unwrapped G, so gradients are
        averaged across processes by hand."""
        G = self._unwrap(self.G)
        _, c = self._last_real
        n = max(1, self.micro // 2)
        with self.acc.autocast():
            ws = G.mapping(self._z(n), c[:n] if c is not None else None)
            ws.requires_grad_(True)
            img = G.synthesis(ws)
        old_mean = torch.as_tensor(self.counters.pl_mean, dtype=torch.float32, device=img.device)
        scale = self._grad_scale()
        penalty, new_mean = losses.path_length(img, ws, old_mean, scale=scale)
        loss = penalty.mean() * self.cfg.pl_weight * self.cfg.pl_interval + img.float().mean() * 0

        def before_step():
            if self.acc.num_processes > 1:  # G is unwrapped here: no DDP all-reduce
                grads = [p.grad for p in G.parameters() if p.grad is not None]
                # One collective for all of them, not one per parameter.
                flat = self.acc.reduce(torch.cat([g.reshape(-1) for g in grads]), "mean")
                for g, part in zip(grads, flat.split([g.numel() for g in grads])):
                    g.copy_(part.view_as(g))
            # An overflowing (scaler-skipped) step must not poison the running mean.
            self.counters.pl_mean = torch.where(torch.isfinite(new_mean), new_mean, old_mean).detach()
            stats["loss_PL"] = penalty.detach().mean()

        return self._backward_apply(loss, self.opt_G, self.G, before_step=before_step)

    def _step(self, stats: dict) -> torch.Tensor:
        """One iteration: D, lazy R1, G, lazy path length, style; the worst phase outcome."""
        cfg, step = self.cfg, self.counters.step
        self._shared_fake = None  # not a failed step's (the loop reruns a step a compile failure broke)
        power_iteration(self._unwrap(self.D))  # spectral norms' estimates: once a step, outside any graph
        power_iteration(self._unwrap(self.G))
        outcome = self._d_phase(stats)
        if self._reg_on() and step % cfg.r1_interval == 0:
            outcome = torch.maximum(outcome, self._d_reg_phase(stats))
        outcome = torch.maximum(outcome, self._g_phase(stats))
        if self._pl_on() and step % cfg.pl_interval == 0:
            outcome = torch.maximum(outcome, self._g_reg_phase(stats))
        if self.style is not None and step % cfg.style_every == 0:
            outcome = torch.maximum(outcome, self._g_style_phase(stats))
        return outcome
