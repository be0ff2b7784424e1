"""What `toyworld.build` builds: the sizes and training of the toy world's models, as the
shipped build (`FULL`), a smaller-latent variant (`LATENT8`) and a tiny one for the tests
(`MICRO`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from toyworld import models
from toyworld.clip import toy_clip_config
from toyworld.train_clip import ClipTraining
from toyworld.train_unet import UnetTraining
from toyworld.train_vae import VaeTraining


@dataclass(frozen=True)
class BuildSettings:
    pipeline: models.PipelineSize = models.PipelineSize()
    clip_arch: dict = field(default_factory=toy_clip_config)
    images_per_caption: int = 48
    vae: VaeTraining = VaeTraining()
    unet: UnetTraining = UnetTraining()
    # The late exposure: after pretraining, the UNet trains on the pretraining renders plus
    # `exposure_renders` renders of each default train prompt (a pretraining caption has
    # `images_per_caption`), so that a default pair gets about 70 % of the samples a
    # pretraining caption gets, and gets them late: the pretrained model then draws those
    # pairs sometimes (20-70 % exact leaves RL room both ways), as Stable Diffusion has seen
    # most of what it is asked for a little. 0 steps: none.
    exposure: UnetTraining = UnetTraining(steps=450, lr=1e-3)
    exposure_renders: int = 160
    clip: ClipTraining = ClipTraining()
    eval_images: int = 520  # per split: 26 per prompt of a 20-prompt set
    retrieval_renders: int = 700

    def __post_init__(self) -> None:
        text = self.clip_arch["text_cfg"]
        shared = (text["width"], text["layers"], text["context_length"])
        wanted = (self.pipeline.text_width, self.pipeline.text_layers, self.pipeline.max_length)
        if shared != wanted:
            raise ValueError(
                f"the pipeline's text encoder is the CLIP text tower: (width, layers, context) "
                f"{wanted} != CLIP {shared}"
            )


FULL = BuildSettings()
# `--latent-size 8`: a VAE with two downsamplings (4 x 8 x 8 latents, a quarter of the noise
# dimensions per step) and cross-attention at 8 x 8 and 4 x 4; not the shipped world.
LATENT8 = BuildSettings(pipeline=models.PipelineSize(vae_channels=(16, 32, 64), top_attention=True))
MICRO = BuildSettings(
    pipeline=models.MICRO,
    clip_arch=toy_clip_config(
        embed_dim=16, vision_width=16, vision_layers=1, text_width=16, text_layers=1
    ),
    images_per_caption=1,
    vae=VaeTraining(steps=3, batch_size=8),
    unet=UnetTraining(steps=3, batch_size=8),
    exposure=UnetTraining(steps=3, batch_size=8),
    exposure_renders=1,
    clip=ClipTraining(steps=3, anchors=8, renders_per_spec=1),
    eval_images=8,
    retrieval_renders=16,
)
