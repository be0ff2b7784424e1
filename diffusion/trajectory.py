"""The typed container that carries branch samples from rollout to reward to learner."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class TrajectoryBatch:
    """N branch trajectories of one stage, restricted to the training interval.

    Shapes (N trajectories, s interval steps, latent C x H x W):
      prompts    list[str], N
      trunk_ids  int64 [N]   global trunk index within the stage
      branch_ids int64 [N]   0..K-1 within the trunk
      timesteps  int64 [s]   the interval's timesteps, shared by all rows
      chain      float [N, s + 1, C, H, W]  x at the split point, then each next latent;
                 step j goes chain[:, j] -> chain[:, j + 1] (stored once, no duplicate)
      log_probs  float [N, s]  log pi_old of each interval transition (mean over dims)
      images     uint8 [N, 3, H_img, W_img]  the decoded final images
    Trunk steps are never stored: they are never trained.
    """

    prompts: list[str]
    trunk_ids: torch.Tensor
    branch_ids: torch.Tensor
    timesteps: torch.Tensor
    chain: torch.Tensor
    log_probs: torch.Tensor
    images: torch.Tensor

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def latents(self) -> torch.Tensor:
        return self.chain[:, :-1]

    @property
    def next_latents(self) -> torch.Tensor:
        return self.chain[:, 1:]

    @property
    def interval(self) -> int:
        return int(self.timesteps.numel())

    def select(self, index: torch.Tensor | list[int]) -> TrajectoryBatch:
        idx = torch.as_tensor(index, dtype=torch.long)
        return TrajectoryBatch(
            prompts=[self.prompts[i] for i in idx.tolist()],
            trunk_ids=self.trunk_ids[idx],
            branch_ids=self.branch_ids[idx],
            timesteps=self.timesteps,
            chain=self.chain[idx],
            log_probs=self.log_probs[idx],
            images=self.images[idx] if len(self.images) else self.images,
        )

    def without_images(self) -> TrajectoryBatch:
        """The training part only (what the learner needs; images went to the rewards)."""
        return TrajectoryBatch(
            self.prompts,
            self.trunk_ids,
            self.branch_ids,
            self.timesteps,
            self.chain,
            self.log_probs,
            self.images[:0],
        )

    def nbytes(self) -> int:
        return sum(
            getattr(self, f.name).element_size() * getattr(self, f.name).numel()
            for f in fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        )

    @staticmethod
    def cat(batches: list[TrajectoryBatch]) -> TrajectoryBatch:
        """Concatenate, ordered by (trunk id, branch id) so results never depend on
        which worker produced which part. Parts without rows keep the interval."""
        if not batches:
            raise ValueError("no trajectory batches to concatenate")
        steps = batches[0].timesteps
        for b in batches[1:]:
            if not torch.equal(b.timesteps, steps):
                raise ValueError("trajectory batches of different intervals cannot be joined")
        joined = TrajectoryBatch(
            prompts=[p for b in batches for p in b.prompts],
            trunk_ids=torch.cat([b.trunk_ids for b in batches]),
            branch_ids=torch.cat([b.branch_ids for b in batches]),
            timesteps=steps,
            chain=torch.cat([b.chain for b in batches]),
            log_probs=torch.cat([b.log_probs for b in batches]),
            images=torch.cat([b.images for b in batches]),
        )
        width = int(joined.branch_ids.max()) + 1 if len(joined) else 1
        key = joined.trunk_ids * width + joined.branch_ids
        return joined.select(torch.argsort(key))
