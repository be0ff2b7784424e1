"""The policy pi_theta as the update reads it: the log-probs of a batch's interval
transitions under the diffusion model with its LoRA and, for the KL penalty
(`loss.kl_coef`), the pretrained model's step means (the LoRA off) and the closed-form KL
between the two. `learner.update.PolicyTrainer` is a Policy with an optimizer: these
methods read the weights and never change them.

Transitions are batched as the update batches them (`train.micro_batch`, else
`train.batch_size`), so that the log-probs here equal the ones the update computes.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from configs.schema import Config
from diffusion.pipeline import DiffusionModel
from diffusion.trajectory import TrajectoryBatch
from learner.distributed import Collective


class Policy:
    """The diffusion model (with its LoRA) and the config it samples and trains with."""

    def __init__(self, model: DiffusionModel, cfg: Config, group: Collective | None = None):
        self.model = model
        self.cfg = cfg
        self.group = group or Collective()

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
        4x64x64 latents: 0.7 GB). Each rank computes those of the rows it holds (a row in
        two ranks' shares, in different epochs, is computed by both)."""
        rows_t = torch.as_tensor(rows)
        out = torch.zeros((len(rows), batch.interval, *batch.chain.shape[2:]))
        bs = self._micro_batch()
        for lo in range(0, len(rows), bs):
            at = torch.arange(lo, min(lo + bs, len(rows)))
            sub = rows_t[at]
            cond = torch.stack([emb[batch.prompts[r]] for r in sub.tolist()])
            for j in range(batch.interval):
                x = batch.chain[sub, j].to(self.model.device, self.model.dtype)
                t = batch.timesteps[torch.full_like(sub, j)]
                out[at, j] = self._base_mean(x, t, cond, uncond).cpu()
        return out

    def _embeddings(self, batch: TrajectoryBatch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Each distinct prompt's conditioning, and the empty prompt's."""
        unique = list(dict.fromkeys(batch.prompts))
        enc = self.model.encode_prompts(unique) if unique else []  # a rank may hold no rows
        return {p: enc[i] for i, p in enumerate(unique)}, self.model.encode_prompts([""])

    def _step_index(self, timesteps: torch.Tensor) -> list[int]:
        """Each timestep's index in the scheduler's sequence (its DDIM step)."""
        index = {int(t): i for i, t in enumerate(self.model.scheduler.timesteps.tolist())}
        return [index[int(t)] for t in timesteps.tolist()]

    def _micro_batch(self) -> int:
        return self.cfg.train.micro_batch or self.cfg.train.batch_size
