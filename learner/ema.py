"""`train.ema`: an exponential moving average of the LoRA, ema = d * ema + (1 - d) * w after
every optimizer step, starting at the LoRA the run starts from. It is what evaluation, the
training grid and the exported LoRA use; rollouts never sample with it (the PPO ratio
divides by the log-probs of the weights that sampled the batch)."""

from __future__ import annotations

import torch


class LoraAverage:
    def __init__(self, named: list[tuple[str, torch.nn.Parameter]], decay: float):
        self.named = named  # the LoRA parameters, by name as `lora_state` names them
        self.decay = decay
        self.reset()

    @torch.no_grad()
    def reset(self) -> None:
        """Start at the current LoRA (a run's first stage, or a resume from a checkpoint
        saved without an average)."""
        self.values = {n: p.detach().float().clone() for n, p in self.named}

    @torch.no_grad()
    def update(self) -> None:
        for n, p in self.named:
            self.values[n].mul_(self.decay).add_(p.detach().float(), alpha=1.0 - self.decay)

    def weights(self) -> dict[str, torch.Tensor]:
        """A flat float32 CPU copy."""
        return {n: t.detach().to("cpu", copy=True) for n, t in self.values.items()}

    def load(self, state: dict[str, torch.Tensor] | None, source: str = "") -> None:
        """From a checkpoint's average; None (a checkpoint without one): the current LoRA."""
        if state is None:
            self.reset()
            return
        names = [n for n, _ in self.named]
        if sorted(state) != sorted(names):
            missing = sorted(set(names) - set(state)) or sorted(set(state) - set(names))
            raise ValueError(f"{source}: EMA tensors do not match the LoRA (e.g. {missing[0]})")
        self.values = {n: state[n].to(p.device, torch.float32).clone() for n, p in self.named}
