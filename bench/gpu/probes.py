"""The workloads bench.gpu times and sizes, each one call of the family interface
(`DiffusionModel.predict` / `step` / `decode`) as the sampler and the update make it."""

from __future__ import annotations

from collections.abc import Callable

import torch

from configs.schema import Config
from diffusion.pipeline import DiffusionModel

PROMPTS = (
    "a cat riding a bike",
    "a dog playing chess",
    "a horse washing the dishes",
    "a monkey reading a book",
    "a rabbit flying a kite",
    "a bear playing the piano",
    "a fox cooking dinner",
    "an owl writing a letter",
)


def split_timestep(model: DiffusionModel, cfg: Config) -> torch.Tensor:
    """The integer timestep key of the interval's first step (the schedule set as the
    sampler sets it)."""
    steps = cfg.sampling.num_steps
    model.scheduler.set_timesteps(steps, device="cpu")
    return model.scheduler.timesteps.long()[steps - cfg.schedule.start]


def _latents(model: DiffusionModel, n: int, seed: int, count: int) -> list[torch.Tensor]:
    g = torch.Generator(device="cpu").manual_seed(seed)
    shape = (n, *model.latent_shape)
    return [torch.randn(shape, generator=g).to(model.device, model.dtype) for _ in range(count)]


def _conditioning(model: DiffusionModel, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    cond = model.encode_prompts([PROMPTS[0]]).expand(n, -1, -1)
    uncond = model.encode_prompts([""]).expand(n, -1, -1)
    return cond, uncond


def forward_probe(model: DiffusionModel, cfg: Config, n: int) -> Callable[[], None]:
    """One guided denoiser evaluation of n latents, as the sampler makes it (under CFG the
    denoiser sees 2n rows)."""
    (x,) = _latents(model, n, 1, 1)
    t = split_timestep(model, cfg).expand(n).to(model.device)
    cond, uncond = _conditioning(model, n)
    scale = cfg.sampling.guidance_scale

    @torch.no_grad()
    def run() -> None:
        model.predict(x, t, cond, uncond, scale)

    return run


def train_probe(
    model: DiffusionModel, cfg: Config, params: list[torch.nn.Parameter], n: int
) -> Callable[[], None]:
    """One training term as PolicyTrainer.update computes it, for n trajectories: a guided
    denoiser forward with the LoRA, the family step's log-prob of given next latents,
    backward."""
    x, x_next = _latents(model, n, 2, 2)
    t = split_timestep(model, cfg).expand(n)
    cond, uncond = _conditioning(model, n)

    def run() -> None:
        try:
            out = model.predict(x, t.to(model.device), cond, uncond, cfg.sampling.guidance_scale)
            _, lp = model.step(out, t, x, cfg.sampling.eta, prev_sample=x_next)
            lp.float().mean().backward()
        finally:
            for p in params:
                p.grad = None

    return run


def sampling_probe(model: DiffusionModel, cfg: Config, n: int) -> Callable[[], None]:
    """What one sampler micro-batch of n latents holds at once: a guided denoiser step, the
    family's recorded policy step, and the VAE decode of n latents (sample_branches decodes
    in micro-batches too)."""
    x, noise = _latents(model, n, 3, 2)
    t = split_timestep(model, cfg).expand(n)
    cond, uncond = _conditioning(model, n)

    @torch.no_grad()
    def run() -> None:
        out = model.predict(x, t.to(model.device), cond, uncond, cfg.sampling.guidance_scale)
        nxt, _ = model.step(out, t, x, cfg.sampling.eta, noise=noise)
        model.decode(nxt, n)

    return run
