"""The policy update: LoRA on the UNet, AdamW, interval-restricted PPO-clip or pairwise loss.

Training units are selected trajectories (PPO) or (best, worst) pairs of one trunk
(pairwise). Each epoch shuffles the units and, per unit, the order of its interval steps;
a micro-batch of units is pushed through one shuffled step at a time, and the gradient of
all its steps (and `grad_accum` micro-batches) is summed before one optimizer step.
With N data-parallel ranks (`learner.distributed`) each rank takes its shard of every
micro-batch and the gradients are all-reduced before the step: the same update as one rank.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from configs.schema import Config
from diffusion.ddim import ddim_step_with_logprob, noise_step_weights
from diffusion.lora import attach_lora, load_lora_state, lora_parameters, lora_state
from diffusion.pipeline import DiffusionModel
from diffusion.sampler import derive_seed, guided_noise
from diffusion.trajectory import TrajectoryBatch
from learner import losses
from learner.distributed import Collective, mean_share, shard
from learner.selection import Selection


@dataclass
class UpdateStats:
    loss: float = 0.0
    approx_kl: float = 0.0
    clip_fraction: float = 0.0
    ratio_mean: float = 1.0
    ratio_min: float = 1.0
    ratio_max: float = 1.0
    grad_norm: float = 0.0
    optimizer_steps: int = 0
    samples: int = 0
    kl_stopped: int = 0  # 1 when train.target_kl ended the update early
    kl_base: float = 0.0  # mean KL from the pretrained model per trained transition (kl_coef > 0)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


class PolicyTrainer:
    """Holds the trainable LoRA and its optimizer. Plain torch: the Ray learner wraps it."""

    def __init__(self, model: DiffusionModel, cfg: Config, group: Collective | None = None):
        self.model = model
        self.cfg = cfg
        self.group = group or Collective()
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

    # -- weights -------------------------------------------------------------------------
    def weights(self) -> dict[str, torch.Tensor]:
        return lora_state(self.model.unet)

    def load_weights(self, state: dict[str, torch.Tensor], source: str = "") -> None:
        load_lora_state(self.model.unet, state, source)

    # -- forward -------------------------------------------------------------------------
    def _forward(
        self,
        batch: TrajectoryBatch,
        rows: torch.Tensor,
        steps: torch.Tensor,
        cond: torch.Tensor,
        uncond: torch.Tensor,
        with_kl: bool = False,
        base_mean: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(log pi_theta, KL from the pretrained model) of transitions (rows[i], steps[i]);
        the KL only `with_kl`, from `base_mean` (the pretrained model's step means of these
        transitions, `_base_means`) or else from a base-model forward here."""
        m = self.model
        x = batch.chain[rows, steps].to(m.device, m.dtype)
        x_next = batch.chain[rows, steps + 1].to(m.device, m.dtype)
        t = batch.timesteps[steps]
        args = (x, t.to(m.device), cond, uncond.expand(len(rows), -1, -1))
        eps = guided_noise(m.unet, *args, self.cfg.sampling.guidance_scale)
        _, lp = ddim_step_with_logprob(
            m.scheduler, eps, t, x, eta=self.cfg.sampling.eta, prev_sample=x_next
        )
        if not with_kl:
            return lp.float(), None
        if base_mean is None:
            base_mean = self._base_mean(x, t, cond, uncond)
        # both policies are Gaussians with the step's std, so per dimension KL = (mean gap)^2
        # / (2 std^2), averaged over dimensions as the log-prob is; the means are the
        # scheduler's (any prediction type), and the std is read off the log-density at the
        # policy's own mean, -log(std) - log(sqrt(2 pi))
        eta = self.cfg.sampling.eta
        mean, at_own = ddim_step_with_logprob(
            m.scheduler, eps, t, x, eta=eta, noise=torch.zeros_like(x)
        )
        var = torch.exp(-2.0 * (at_own.detach().double() + 0.5 * math.log(2 * math.pi)))
        gap = (mean.float() - base_mean.to(mean.device).float()).pow(2)
        return lp.float(), gap.mean(dim=tuple(range(1, x.ndim))) / (2.0 * var.float())

    @torch.no_grad()
    def _base_mean(
        self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor
    ) -> torch.Tensor:
        """The pretrained model's (the UNet with its LoRA off) step means from latents `x`
        at timesteps `t`: what the KL penalty measures the policy's means against."""
        m = self.model
        m.unet.disable_adapters()
        try:
            args = (x, t.to(m.device), cond, uncond.expand(len(x), -1, -1))
            base = guided_noise(m.unet, *args, self.cfg.sampling.guidance_scale)
        finally:
            m.unet.enable_adapters()
        eta, zero = self.cfg.sampling.eta, torch.zeros_like(x)
        return ddim_step_with_logprob(m.scheduler, base, t, x, eta=eta, noise=zero)[0]

    def _base_means(
        self,
        batch: TrajectoryBatch,
        rows: np.ndarray,
        emb: dict[str, torch.Tensor],
        uncond: torch.Tensor,
    ) -> torch.Tensor:
        """`_base_mean` of every interval transition of `rows` [len(rows), s, ...], once
        per stage: the LoRA is off, so they do not change over the update's epochs. Kept
        on the CPU in float32 (at SD-1.4 scale, 512 selected trajectories x 20 steps of
        4x64x64 latents: 0.7 GB)."""
        rows_t = torch.as_tensor(rows)
        out = torch.empty((len(rows), batch.interval, *batch.chain.shape[2:]))
        bs = self.cfg.train.batch_size
        for lo in range(0, len(rows), bs):
            sub = rows_t[lo : lo + bs]
            cond = torch.stack([emb[batch.prompts[r]] for r in sub.tolist()])
            for j in range(batch.interval):
                x = batch.chain[sub, j].to(self.model.device, self.model.dtype)
                t = batch.timesteps[torch.full_like(sub, j)]
                out[lo : lo + len(sub), j] = self._base_mean(x, t, cond, uncond).cpu()
        return out

    def _step_index(self, timesteps: torch.Tensor) -> list[int]:
        index = {int(t): i for i, t in enumerate(self.model.scheduler.timesteps.tolist())}
        return [index[int(t)] for t in timesteps.tolist()]

    def _embeddings(self, batch: TrajectoryBatch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        unique = list(dict.fromkeys(batch.prompts))
        enc = self.model.encode_prompts(unique)
        return {p: enc[i] for i, p in enumerate(unique)}, self.model.encode_prompts([""])

    def _plan(self, n_units: int, s: int, stage: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(derive_seed(self.cfg.seed, stage, epoch, 0x5EED))
        order = rng.permutation(n_units)
        if self.cfg.train.shuffle_timesteps:
            steps = (
                np.stack([rng.permutation(s) for _ in range(n_units)])
                if n_units
                else np.zeros((0, s), int)
            )
        else:
            steps = np.tile(np.arange(s), (n_units, 1))
        return order, steps

    @torch.no_grad()
    def log_probs(self, batch: TrajectoryBatch) -> torch.Tensor:
        """log pi_theta of every interval transition [N, s], batched as `update` batches them."""
        self.model.scheduler.set_timesteps(self.cfg.sampling.num_steps, device="cpu")
        emb, uncond = self._embeddings(batch)
        out = torch.zeros(len(batch), batch.interval)
        bs = self.cfg.train.batch_size
        for lo in range(0, len(batch), bs):
            rows = torch.arange(lo, min(lo + bs, len(batch)))
            cond = torch.stack([emb[batch.prompts[r]] for r in rows.tolist()])
            for j in range(batch.interval):
                steps = torch.full_like(rows, j)
                out[rows, j] = self._forward(batch, rows, steps, cond, uncond)[0].cpu()
        return out

    def step_weights(self, timesteps: torch.Tensor) -> torch.Tensor:
        """The loss weight of each given timestep (loss.step_weight; scheduler timesteps set)."""
        if self.cfg.loss.step_weight == "none":
            return torch.ones(len(timesteps))
        w = noise_step_weights(self.model.scheduler, self.cfg.sampling.eta)
        return w[self._step_index(timesteps)]

    # -- update --------------------------------------------------------------------------
    def update(
        self, batch: TrajectoryBatch, advantages: np.ndarray, selection: Selection, stage: int
    ) -> UpdateStats:
        """One stage's optimisation over the selected samples of `batch`. Every rank of
        `self.group` gets the whole batch and selection and trains its shard of each
        micro-batch; all ranks return the same stats and hold the same LoRA afterwards."""
        cfg, group = self.cfg, self.group
        pairwise = cfg.loss.name == "pairwise"
        units = selection.pairs if pairwise else selection.index.reshape(-1, 1)
        stats = UpdateStats(samples=int(units.size))
        if len(units) == 0:
            return stats
        self.model.scheduler.set_timesteps(cfg.sampling.num_steps, device="cpu")
        emb, uncond = self._embeddings(batch)
        adv_all = torch.as_tensor(advantages, dtype=torch.float32)
        step_w = self.step_weights(batch.timesteps)  # per interval step
        # per interval step: whether the KL penalty covers it (loss.kl_from_step)
        kl_on = torch.as_tensor(self._step_index(batch.timesteps)) >= cfg.loss.kl_from_step
        kl_sum = 0.0
        s = batch.interval
        unit_cost = np.full(len(units), s * units.shape[1])  # trajectory-steps of each unit
        with_kl = cfg.loss.kl_coef > 0
        if with_kl:  # the pretrained model's means, computed once for all epochs
            kl_rows = np.unique(units)
            kl_pos = {int(r): i for i, r in enumerate(kl_rows)}
            base_means = self._shared_base_means(batch, kl_rows, emb, uncond)
        bs, accum = cfg.train.batch_size, cfg.train.grad_accum
        sums = dict.fromkeys(("loss", "approx_kl", "clip_fraction", "ratio_mean"), 0.0)
        n_terms, grad_norms = 0, []
        ratio_min, ratio_max = float("inf"), float("-inf")
        target_kl = cfg.train.target_kl
        step_kl, step_terms = 0.0, 0  # approx. KL of the terms since the last optimizer step
        for epoch in range(cfg.train.epochs):
            if stats.kl_stopped:
                break
            order, step_plan = self._plan(len(units), s, stage, epoch)
            batches = [order[i : i + bs] for i in range(0, len(order), bs)]
            for b_idx, unit_idx in enumerate(batches):
                # this rank's shard of the micro-batch, its loss scaled to the global mean
                mine = unit_idx[shard(unit_cost[unit_idx], group.size)[group.rank]]
                share = mean_share(len(mine), len(unit_idx))
                unit_rows = torch.as_tensor(units[mine])  # [b, 1 or 2]
                plan = torch.as_tensor(step_plan[mine])  # [b, s]
                for j in range(s if len(mine) else 0):
                    steps = plan[:, j]
                    terms, kls = [], []
                    for col in range(unit_rows.shape[1]):
                        rows = unit_rows[:, col]
                        cond = torch.stack([emb[batch.prompts[r]] for r in rows.tolist()])
                        base = (
                            base_means[[kl_pos[r] for r in rows.tolist()], steps]
                            if with_kl
                            else None
                        )
                        new, kl = self._forward(batch, rows, steps, cond, uncond, with_kl, base)
                        old = batch.log_probs[rows, steps].to(new.device)
                        terms.append((new, old, rows))
                        kls.append(kl)
                    w = step_w[steps].to(terms[0][0].device)
                    if pairwise:
                        (nw, ow, _), (nl, ol, _) = terms
                        loss, diag = losses.pairwise(nw, ow, nl, ol, cfg.loss, w)
                    else:
                        new, old, rows = terms[0]
                        loss, diag = losses.ppo_clip(
                            new, old, adv_all[rows].to(new.device), cfg.loss, w
                        )
                    if with_kl:
                        kl_all = torch.cat(kls)  # the columns share `steps`
                        on = kl_on[steps].repeat(len(kls)).to(kl_all.device, kl_all.dtype)
                        loss = loss + cfg.loss.kl_coef * (kl_all * on).mean()
                        kl_sum += float(kl_all.detach().mean()) * share  # logged over every step
                    loss = loss * share
                    (loss / (s * accum)).backward()
                    sums["loss"] += float(loss.detach())
                    for k in ("approx_kl", "clip_fraction", "ratio_mean"):
                        sums[k] += float(diag[k]) * share
                    ratio_min = min(ratio_min, float(diag["ratio_min"]))
                    ratio_max = max(ratio_max, float(diag["ratio_max"]))
                    step_kl += float(diag["approx_kl"]) * share
                n_terms += s
                step_terms += s
                if (b_idx + 1) % accum == 0 or b_idx == len(batches) - 1:
                    if target_kl is not None:
                        (step_kl,) = group.sum([step_kl])  # every rank decides on the global KL
                        if step_kl / step_terms > target_kl:
                            # the policy has already moved this far from the one that sampled
                            # the batch: stop before the step (PPO early stopping)
                            self.optimizer.zero_grad(set_to_none=True)
                            stats.kl_stopped = 1
                            break
                    step_kl, step_terms = 0.0, 0
                    group.sum_grads(self.params)
                    # the norm of the summed gradient: the same on every rank, so is the clip
                    norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.train.max_grad_norm)
                    grad_norms.append(float(norm))
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    stats.optimizer_steps += 1
        keys = ("loss", "approx_kl", "clip_fraction", "ratio_mean")
        *totals, kl_sum = group.sum([*(sums[k] for k in keys), kl_sum])
        for k, total in zip(keys, totals, strict=True):
            setattr(stats, k, total / n_terms)
        stats.ratio_min, stats.ratio_max = group.min(ratio_min), group.max(ratio_max)
        stats.grad_norm = float(np.mean(grad_norms)) if grad_norms else 0.0
        stats.kl_base = kl_sum / n_terms
        return stats

    def _shared_base_means(
        self,
        batch: TrajectoryBatch,
        rows: np.ndarray,
        emb: dict[str, torch.Tensor],
        uncond: torch.Tensor,
    ) -> torch.Tensor:
        """`_base_means` of `rows`, each rank computing its shard and the ranks summing the
        zero-padded results (x + 0 is exact, so every rank holds the owners' values)."""
        group = self.group
        if group.size == 1:
            return self._base_means(batch, rows, emb, uncond)
        mine = shard(np.full(len(rows), batch.interval), group.size)[group.rank]
        out = torch.zeros((len(rows), batch.interval, *batch.chain.shape[2:]))
        if len(mine):
            out[mine] = self._base_means(batch, rows[mine], emb, uncond)
        return group.sum_tensor(out)
