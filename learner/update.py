"""The policy update: LoRA on the UNet, AdamW, interval-restricted PPO-clip or pairwise loss.

Training units are selected trajectories (PPO) or (best, worst) pairs of one trunk
(pairwise). Each epoch shuffles the units and, per unit, the order of its interval steps;
a batch of units is pushed through one shuffled step at a time, and the gradient of all
its steps (and `grad_accum` batches) is summed before one optimizer step.
With N data-parallel ranks (`learner.distributed`) each rank takes its share of every
batch and the gradients are all-reduced before the step: the same update as one rank. The
batches are known before the update (`learner.update_plan`), so a rank is handed only the
rows it trains.
Memory options change how, not what: `train.micro_batch` cuts a rank's shard into pieces
whose gradients add up to the shard's, `train.gradient_checkpointing` recomputes the UNet's
activations in the backward pass, and `model.autocast` (`diffusion.pipeline.set_autocast`)
runs the UNet in half precision, with torch's GradScaler for fp16; the LoRA and its
optimizer state stay float32.
With `train.ema` the trainer also keeps a moving average of the LoRA (`learner.ema`).
The log-probs and KL terms come from the policy it extends (`learner.policy`), the
update's records (what its terms share, running sums, statistics) from `learner.update_parts`.
"""

from __future__ import annotations

import numpy as np
import torch

from configs.schema import Config
from diffusion.lora import attach_lora, load_lora_state, lora_parameters, lora_state
from diffusion.pipeline import DiffusionModel
from diffusion.trajectory import TrajectoryBatch
from learner import losses, onpolicy
from learner.distributed import Collective, mean_share
from learner.ema import LoraAverage
from learner.policy import Policy
from learner.selection import Selection
from learner.update_parts import Tally, UpdateStats, Work
from learner.update_plan import epoch_batches, held_rows, rank_share, training_units, unit_costs


class PolicyTrainer(Policy):
    """Holds the trainable LoRA and its optimizer. Plain torch: the Ray learner wraps it."""

    def __init__(self, model: DiffusionModel, cfg: Config, group: Collective | None = None):
        super().__init__(model, cfg, group)
        attach_lora(model.unet, cfg.train.lora, seed=cfg.seed)
        self.params = lora_parameters(model.unet)
        for p in self.params:
            # LoRA weights train in fp32 even when the base model runs in half precision
            p.data = p.data.float()
            p.requires_grad_(True)
        t = cfg.train
        self.optimizer = torch.optim.AdamW(
            self.params, lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay
        )
        # fp16 gradients underflow without loss scaling; bf16 has float32's range
        fp16 = model.autocast == torch.float16
        self.scaler = torch.amp.GradScaler(model.device.type) if fp16 else None
        self._named = [(n, p) for n, p in model.unet.named_parameters() if "lora_" in n]
        self.ema = None if t.ema is None else LoraAverage(self._named, t.ema)

    # -- weights -------------------------------------------------------------------------
    def weights(self) -> dict[str, torch.Tensor]:
        return lora_state(self.model.unet)

    def load_weights(self, state: dict[str, torch.Tensor], source: str = "") -> None:
        load_lora_state(self.model.unet, state, source)

    # -- exponential moving average (train.ema) ---------------------------------------------
    def ema_weights(self) -> dict[str, torch.Tensor] | None:
        """The average as a flat CPU dict keyed as `weights()`; None with train.ema off."""
        return None if self.ema is None else self.ema.weights()

    def load_ema(self, state: dict[str, torch.Tensor] | None, source: str = "") -> None:
        """Restore the average (train.ema on): from `state`, or, if the checkpoint has none,
        from the current LoRA. With train.ema off it is ignored."""
        if self.ema is not None:
            self.ema.load(state, source)

    # -- update --------------------------------------------------------------------------
    def update(
        self, batch: TrajectoryBatch, advantages: np.ndarray, selection: Selection, stage: int
    ) -> UpdateStats:
        """One stage's optimisation over the selected samples. `selection` numbers the
        rows and `advantages` are per row in that numbering. One rank is handed them all
        (`batch`'s rows); rank r of N (`self.group`) only the rows it trains,
        `held_rows(cfg, selection, stage, N)[r]`, in ascending order. Each rank trains its
        share of each batch; all ranks return the same stats and hold the same LoRA."""
        units = training_units(self.cfg, selection)
        stats = UpdateStats(samples=int(units.size))
        if len(units) == 0:
            return stats
        group = self.group
        if group.size > 1:
            held = held_rows(self.cfg, selection, stage, group.size)[group.rank]
            if len(batch) != len(held):
                raise ValueError(
                    f"stage {stage}: learner rank {group.rank} of {group.size} was handed "
                    f"{len(batch)} trajectories; its share of the update needs {len(held)}"
                )
            local = np.full(len(advantages), -1, dtype=np.int64)  # row -> its place in batch
            local[held] = np.arange(len(held))
            units, advantages = local[units], advantages[held]
        work = self._prepare(batch, units, advantages, stats)
        tally, check = Tally(), onpolicy.RatioCheck()
        for epoch in range(self.cfg.train.epochs):
            for unit_idx, step_plan, ends_step in epoch_batches(
                self.cfg, len(units), batch.interval, stage, epoch
            ):
                first = stats.optimizer_steps == 0  # the weights that sampled the batch
                self._accumulate(work, unit_idx, step_plan, tally, check if first else None)
                if not ends_step:
                    continue
                if self._kl_exceeded(tally):
                    # the policy has already moved this far from the one that sampled the
                    # batch: stop before the step (PPO early stopping)
                    self.optimizer.zero_grad(set_to_none=True)
                    stats.kl_stopped = 1
                    break
                if self._optimizer_step(tally.grad_norms):
                    stats.optimizer_steps += 1
                    if self.ema is not None:
                        self.ema.update()
            if stats.kl_stopped:
                break
        tally.finish(stats, self.group)
        for k, v in check.reduce(self.group, onpolicy.tolerance(self.cfg)).items():
            setattr(stats, k, v)
        return stats

    def _prepare(
        self, batch: TrajectoryBatch, units: np.ndarray, advantages: np.ndarray, stats
    ) -> Work:
        """What every term of the update shares: embeddings, advantages, step weights and,
        with the KL penalty, the pretrained model's step means (once for all epochs, of the
        rows this rank holds). `units` number `batch`'s rows (-1: a row another rank holds),
        `advantages` are `batch`'s."""
        cfg = self.cfg
        self._set_checkpointing()
        self.model.scheduler.set_timesteps(cfg.sampling.num_steps, device="cpu")
        emb, uncond = self._embeddings(batch)
        s = batch.interval
        work = Work(
            batch=batch,
            units=units,
            unit_cost=unit_costs(units, s),
            advantages=torch.as_tensor(advantages, dtype=torch.float32),
            emb=emb,
            uncond=uncond,
            step_weights=self.step_weights(batch.timesteps),
            # per interval step: whether the KL penalty covers it (loss.kl_from_step)
            kl_on=torch.as_tensor(self._step_index(batch.timesteps)) >= cfg.loss.kl_from_step,
            guided=self.model.passes(cfg.sampling.guidance_scale),
        )
        if cfg.loss.kl_coef > 0:
            kl_rows = np.unique(units[units >= 0])
            work.kl_pos = {int(r): i for i, r in enumerate(kl_rows)}
            work.base_means = self._base_means(batch, kl_rows, emb, uncond)
            (evaluations,) = self.group.sum([float(len(kl_rows) * s * work.guided)])
            stats.update_unet_evaluations += int(evaluations)  # all ranks'
        return work

    def _set_checkpointing(self) -> None:
        unet = self.model.unet
        if self.cfg.train.gradient_checkpointing != unet.is_gradient_checkpointing:
            if self.cfg.train.gradient_checkpointing:
                unet.enable_gradient_checkpointing()
            else:
                unet.disable_gradient_checkpointing()

    def _accumulate(
        self,
        work: Work,
        unit_idx: np.ndarray,
        step_plan: np.ndarray,
        tally: Tally,
        check: onpolicy.RatioCheck | None,
    ) -> None:
        """The gradient of one optimizer batch, added to the parameters' .grad: this rank's
        shard in micro-batches, one shuffled interval step of them at a time, each loss
        scaled to its part of the batch's mean. `check` (before the first optimizer step)
        records the on-policy ratios."""
        s, group = work.batch.interval, self.group
        accum = self.cfg.train.grad_accum
        mine = rank_share(unit_idx, work.unit_cost, group.rank, group.size)
        if (work.units[mine] < 0).any():
            raise RuntimeError(f"learner rank {group.rank}: a unit of its share is not held")
        for piece in self._pieces(mine):
            share = mean_share(len(piece), len(unit_idx))
            unit_rows = torch.as_tensor(work.units[piece])  # [b, 1 or 2]
            plan = torch.as_tensor(step_plan[piece])  # [b, s]
            for j in range(s):
                loss, diag, terms, kl = self._term(work, unit_rows, plan[:, j], tally)
                if check is not None:
                    for new, old in terms:
                        check.add(new, old)
                if kl is not None:  # (penalty, its plain mean over every step)
                    loss = loss + self.cfg.loss.kl_coef * kl[0]
                    tally.kl_base += kl[1] * share
                loss = loss * share
                scaled = loss / (s * accum)
                (scaled if self.scaler is None else self.scaler.scale(scaled)).backward()
                tally.add(loss, diag, share)
        tally.terms += s

    def _pieces(self, mine: np.ndarray) -> list[np.ndarray]:
        """A rank's shard of a batch as micro-batches of at most train.micro_batch units."""
        mb = self.cfg.train.micro_batch or max(1, len(mine))
        return [mine[i : i + mb] for i in range(0, len(mine), mb)]

    def _term(self, work: Work, unit_rows: torch.Tensor, steps: torch.Tensor, tally: Tally):
        """One interval step of some units: the loss, its diagnostics, the (new, old)
        log-probs of each column and, with the KL penalty, (the penalty over the steps it
        covers, the plain mean KL) (else None)."""
        batch, cfg = work.batch, self.cfg
        tally.evaluations += unit_rows.numel() * work.guided * 2  # forward and backward
        terms, kls = [], []
        for col in range(unit_rows.shape[1]):
            rows = unit_rows[:, col]
            cond = torch.stack([work.emb[batch.prompts[r]] for r in rows.tolist()])
            base = None
            if work.base_means is not None:
                base = work.base_means[[work.kl_pos[r] for r in rows.tolist()], steps]
            with_kl = work.base_means is not None
            new, kl = self._forward(batch, rows, steps, cond, work.uncond, with_kl, base)
            terms.append((new, batch.log_probs[rows, steps].to(new.device)))
            kls.append(kl)
        w = work.step_weights[steps].to(terms[0][0].device)
        if cfg.loss.name == "pairwise":
            (nw, ow), (nl, ol) = terms
            loss, diag = losses.pairwise(nw, ow, nl, ol, cfg.loss, w)
        else:
            ((new, old),) = terms
            adv = work.advantages[unit_rows[:, 0]].to(new.device)
            loss, diag = losses.ppo_clip(new, old, adv, cfg.loss, w)
        if work.base_means is None:
            return loss, diag, terms, None
        kl_all = torch.cat(kls)  # the columns share `steps`
        on = work.kl_on[steps].repeat(len(kls)).to(kl_all.device, kl_all.dtype)
        return loss, diag, terms, ((kl_all * on).mean(), float(kl_all.detach().mean()))

    def _kl_exceeded(self, tally: Tally) -> bool:
        """train.target_kl: the approx. KL of the terms since the last optimizer step, over
        every rank (so that all ranks decide alike), above the target."""
        target = self.cfg.train.target_kl
        step_kl, step_terms = tally.step_kl, tally.terms - tally.terms_at_step
        tally.step_kl, tally.terms_at_step = 0.0, tally.terms
        if target is None:
            return False
        (step_kl,) = self.group.sum([step_kl])
        return step_kl / step_terms > target

    def _optimizer_step(self, grad_norms: list[float]) -> bool:
        """All-reduce, clip and apply the summed gradient; False when fp16 loss scaling
        found an overflow and skipped the step (the scale is lowered for the next one)."""
        self.group.sum_grads(self.params)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        # the norm of the summed gradient: the same on every rank, so is the clip
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.train.max_grad_norm)
        if self.scaler is None:
            grad_norms.append(float(norm))
            self.optimizer.step()
            stepped = True
        else:
            self.scaler.step(self.optimizer)  # skips the step on inf / NaN gradients
            self.scaler.update()
            stepped = bool(torch.isfinite(norm))
            if stepped:
                grad_norms.append(float(norm))
        self.optimizer.zero_grad(set_to_none=True)
        return stepped
