"""The policy update: LoRA on the UNet, AdamW, interval-restricted PPO-clip or pairwise loss.

Training units are selected trajectories (PPO) or (best, worst) pairs of one trunk
(pairwise). Each epoch shuffles the units and, per unit, the order of its interval steps;
a batch of units is pushed through one shuffled step at a time, and the gradient of all
its steps (and `grad_accum` batches) is summed before one optimizer step.
With N data-parallel ranks (`learner.distributed`) each rank takes its shard of every
batch and the gradients are all-reduced before the step: the same update as one rank.
Memory options change how, not what: `train.micro_batch` cuts a rank's shard into pieces
whose gradients add up to the shard's, `train.gradient_checkpointing` recomputes the UNet's
activations in the backward pass, and `model.autocast` (`diffusion.pipeline.set_autocast`)
runs the UNet in half precision, with torch's GradScaler for fp16; the LoRA and its
optimizer state stay float32.
With `train.ema` the trainer also keeps an exponential moving average of the LoRA, updated
after every optimizer step: the weights that evaluation, the training grid and the exported
LoRA use. Rollouts never sample with it: the PPO ratio divides by the log-probs of the
weights that sampled the batch, and the average is not those weights (the update would be
off-policy from its first step).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from configs.schema import Config
from diffusion.lora import attach_lora, load_lora_state, lora_parameters, lora_state
from diffusion.pipeline import DiffusionModel
from diffusion.sampler import derive_seed
from diffusion.trajectory import TrajectoryBatch
from learner import losses, onpolicy
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
    # |ratio - 1| of the terms before the first optimizer step (learner.onpolicy)
    onpolicy_ratio_dev_max: float = 0.0
    onpolicy_ratio_dev_mean: float = 0.0
    onpolicy_transitions: int = 0
    onpolicy_exceeded: int = 0  # 1 when the max is above train.onpolicy_tolerance
    # latents through the UNet in training, all ranks: every trained latent counts its
    # forward and its backward pass (x2 with classifier-free guidance, as sampling's
    # unet_evaluations), a pretrained-model forward for the KL penalty counts once
    update_unet_evaluations: int = 0

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
        # fp16 gradients underflow without loss scaling; bf16 has float32's range
        fp16 = model.autocast == torch.float16
        self.scaler = torch.amp.GradScaler(model.device.type) if fp16 else None
        self._named = [(n, p) for n, p in model.unet.named_parameters() if "lora_" in n]
        self.ema: dict[str, torch.Tensor] | None = None
        if t.ema is not None:
            self.reset_ema()

    # -- weights -------------------------------------------------------------------------
    def weights(self) -> dict[str, torch.Tensor]:
        return lora_state(self.model.unet)

    def load_weights(self, state: dict[str, torch.Tensor], source: str = "") -> None:
        load_lora_state(self.model.unet, state, source)

    # -- exponential moving average (train.ema) ---------------------------------------------
    @torch.no_grad()
    def reset_ema(self) -> None:
        """Start the average at the current LoRA (a run's first stage, or a resume from a
        checkpoint saved without one)."""
        self.ema = {n: p.detach().float().clone() for n, p in self._named}

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.ema is None:
            return
        decay = self.cfg.train.ema
        for n, p in self._named:
            self.ema[n].mul_(decay).add_(p.detach().float(), alpha=1.0 - decay)

    def ema_weights(self) -> dict[str, torch.Tensor] | None:
        """The average as a flat CPU dict keyed as `weights()`; None with train.ema off."""
        if self.ema is None:
            return None
        return {n: t.detach().to("cpu", copy=True) for n, t in self.ema.items()}

    def load_ema(self, state: dict[str, torch.Tensor] | None, source: str = "") -> None:
        """Restore the average (train.ema on): from `state`, or, if the checkpoint has none,
        from the current LoRA. With train.ema off it is ignored."""
        if self.cfg.train.ema is None:
            self.ema = None
            return
        if state is None:
            self.reset_ema()
            return
        names = [n for n, _ in self._named]
        if sorted(state) != sorted(names):
            missing = sorted(set(names) - set(state)) or sorted(set(state) - set(names))
            raise ValueError(f"{source}: EMA tensors do not match the LoRA (e.g. {missing[0]})")
        self.ema = {n: state[n].to(p.device, torch.float32).clone() for n, p in self._named}

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
        eps = m.predict(*args, self.cfg.sampling.guidance_scale)
        _, lp = m.step(eps, t, x, self.cfg.sampling.eta, prev_sample=x_next)
        if not with_kl:
            return lp.float(), None
        if base_mean is None:
            base_mean = self._base_mean(x, t, cond, uncond)
        # both policies are Gaussians with the step's std, so per dimension KL = (mean gap)^2
        # / (2 std^2), averaged over dimensions as the log-prob is; the means are the
        # scheduler's (any prediction type), and the std is read off the log-density at the
        # policy's own mean, -log(std) - log(sqrt(2 pi))
        eta = self.cfg.sampling.eta
        mean, at_own = m.step(eps, t, x, eta, noise=torch.zeros_like(x))
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
            base = m.predict(*args, self.cfg.sampling.guidance_scale)
        finally:
            m.unet.enable_adapters()
        eta, zero = self.cfg.sampling.eta, torch.zeros_like(x)
        return m.step(base, t, x, eta, noise=zero)[0]

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
        bs = self._micro_batch()
        for lo in range(0, len(rows), bs):
            sub = rows_t[lo : lo + bs]
            cond = torch.stack([emb[batch.prompts[r]] for r in sub.tolist()])
            for j in range(batch.interval):
                x = batch.chain[sub, j].to(self.model.device, self.model.dtype)
                t = batch.timesteps[torch.full_like(sub, j)]
                out[lo : lo + len(sub), j] = self._base_mean(x, t, cond, uncond).cpu()
        return out

    def _micro_batch(self) -> int:
        return self.cfg.train.micro_batch or self.cfg.train.batch_size

    def _set_checkpointing(self) -> None:
        unet = self.model.unet
        if self.cfg.train.gradient_checkpointing != unet.is_gradient_checkpointing:
            if self.cfg.train.gradient_checkpointing:
                unet.enable_gradient_checkpointing()
            else:
                unet.disable_gradient_checkpointing()

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
        bs = self._micro_batch()
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
        w = self.model.noise_step_weights(self.cfg.sampling.eta)
        return w[self._step_index(timesteps)]

    # -- update --------------------------------------------------------------------------
    def update(
        self, batch: TrajectoryBatch, advantages: np.ndarray, selection: Selection, stage: int
    ) -> UpdateStats:
        """One stage's optimisation over the selected samples of `batch`. Every rank of
        `self.group` gets the whole batch and selection and trains its shard of each
        batch; all ranks return the same stats and hold the same LoRA afterwards."""
        cfg, group = self.cfg, self.group
        pairwise = cfg.loss.name == "pairwise"
        units = selection.pairs if pairwise else selection.index.reshape(-1, 1)
        stats = UpdateStats(samples=int(units.size))
        if len(units) == 0:
            return stats
        self._set_checkpointing()
        self.model.scheduler.set_timesteps(cfg.sampling.num_steps, device="cpu")
        emb, uncond = self._embeddings(batch)
        adv_all = torch.as_tensor(advantages, dtype=torch.float32)
        step_w = self.step_weights(batch.timesteps)  # per interval step
        # per interval step: whether the KL penalty covers it (loss.kl_from_step)
        kl_on = torch.as_tensor(self._step_index(batch.timesteps)) >= cfg.loss.kl_from_step
        kl_sum = 0.0
        guided = 1 if cfg.sampling.guidance_scale == 1.0 else 2
        evaluations = 0  # this rank's trained latents x guidance x 2 (forward and backward)
        s = batch.interval
        unit_cost = np.full(len(units), s * units.shape[1])  # trajectory-steps of each unit
        with_kl = cfg.loss.kl_coef > 0
        if with_kl:  # the pretrained model's means, computed once for all epochs
            kl_rows = np.unique(units)
            kl_pos = {int(r): i for i, r in enumerate(kl_rows)}
            base_means = self._shared_base_means(batch, kl_rows, emb, uncond)
            stats.update_unet_evaluations += len(kl_rows) * s * guided  # every rank's share

        def term(unit_rows: torch.Tensor, steps: torch.Tensor):
            """Loss, diagnostics, (new, old) log-probs and KLs of one step of some units."""
            nonlocal evaluations
            evaluations += unit_rows.numel() * guided * 2  # each is forwarded and backwarded
            terms, kls = [], []
            for col in range(unit_rows.shape[1]):
                rows = unit_rows[:, col]
                cond = torch.stack([emb[batch.prompts[r]] for r in rows.tolist()])
                base = base_means[[kl_pos[r] for r in rows.tolist()], steps] if with_kl else None
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
                loss, diag = losses.ppo_clip(new, old, adv_all[rows].to(new.device), cfg.loss, w)
            return loss, diag, terms, kls

        bs, accum = cfg.train.batch_size, cfg.train.grad_accum
        sums = dict.fromkeys(("loss", "approx_kl", "clip_fraction", "ratio_mean"), 0.0)
        n_terms, grad_norms = 0, []
        ratio_min, ratio_max = float("inf"), float("-inf")
        target_kl = cfg.train.target_kl
        step_kl, step_terms = 0.0, 0  # approx. KL of the terms since the last optimizer step
        check = onpolicy.RatioCheck()
        for epoch in range(cfg.train.epochs):
            if stats.kl_stopped:
                break
            order, step_plan = self._plan(len(units), s, stage, epoch)
            batches = [order[i : i + bs] for i in range(0, len(order), bs)]
            for b_idx, unit_idx in enumerate(batches):
                # this rank's shard of the batch in micro-batches, each one's loss scaled to
                # its part of the batch's mean
                mine = unit_idx[shard(unit_cost[unit_idx], group.size)[group.rank]]
                for piece in self._pieces(mine):
                    share = mean_share(len(piece), len(unit_idx))
                    unit_rows = torch.as_tensor(units[piece])  # [b, 1 or 2]
                    plan = torch.as_tensor(step_plan[piece])  # [b, s]
                    for j in range(s):
                        steps = plan[:, j]
                        loss, diag, terms, kls = term(unit_rows, steps)
                        if stats.optimizer_steps == 0:  # the weights that sampled the batch
                            for new, old, _ in terms:
                                check.add(new, old)
                        if with_kl:
                            kl_all = torch.cat(kls)  # the columns share `steps`
                            on = kl_on[steps].repeat(len(kls)).to(kl_all.device, kl_all.dtype)
                            loss = loss + cfg.loss.kl_coef * (kl_all * on).mean()
                            kl_sum += float(kl_all.detach().mean()) * share  # over every step
                        loss = loss * share
                        scaled = loss / (s * accum)
                        (scaled if self.scaler is None else self.scaler.scale(scaled)).backward()
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
                    if self._optimizer_step(grad_norms):
                        stats.optimizer_steps += 1
                        self._update_ema()
        keys = ("loss", "approx_kl", "clip_fraction", "ratio_mean")
        *totals, kl_sum, evaluations = group.sum([*(sums[k] for k in keys), kl_sum, evaluations])
        stats.update_unet_evaluations += int(round(evaluations))
        for k, total in zip(keys, totals, strict=True):
            setattr(stats, k, total / n_terms)
        stats.ratio_min, stats.ratio_max = group.min(ratio_min), group.max(ratio_max)
        stats.grad_norm = float(np.mean(grad_norms)) if grad_norms else 0.0
        stats.kl_base = kl_sum / n_terms
        for k, v in check.reduce(group, onpolicy.tolerance(cfg)).items():
            setattr(stats, k, v)
        return stats

    def _pieces(self, mine: np.ndarray) -> list[np.ndarray]:
        """A rank's shard of a batch as micro-batches of at most train.micro_batch units."""
        mb = self.cfg.train.micro_batch or max(1, len(mine))
        return [mine[i : i + mb] for i in range(0, len(mine), mb)]

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
