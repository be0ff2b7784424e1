"""Train the toy CLIP contrastively on renders, with hard negatives.

Each step draws B anchor captions (weighted toward the forms RL prompts use), one render of
each, and one near miss per anchor (see `toyworld.scenes`): a render of a caption one step
away, or the anchor's scene with an extra object. Two losses, each with every *other* true
pairing masked out (a layout may show several true captions):
  image -> caption: over all 684 captions of the grammar;
  caption -> image: over the batch's images, where the near misses are the hard negatives
                    (the direction a per-prompt reward compares).
Half the images are blurred and noised a little, like a diffusion model's samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from tqdm import tqdm

from toyworld.clip import ARCH, image_tensor
from toyworld.grammar import all_specs, caption
from toyworld.render import render, sample_scene
from toyworld.scenes import (
    CAPTION_INDEX,
    CAPTIONS,
    NEAR_MISS_KINDS,
    add_object,
    mirror,
    near_miss,
    reshape,
    swap_colours,
)
from toyworld.scenes import scene_truth as truth_of
from toyworld.train_vae import lr_at, optimiser_step, smoothed

# anchor forms: share of each in a batch
FORM_WEIGHTS = {"single": 0.1, "counting": 0.15, "and": 0.25, "relation": 0.5}
# hard negatives: near-miss captions (scenes.NEAR_MISS_KINDS) and edits of the anchor scene
_MISS = {
    "colour": 1,
    "shape": 1,
    "bind": 1,
    "relation": 1,
    "missing": 1,
    "extra": 1,
    "count": 1,
    "mirror": 3,
    "recolour": 1.5,
}
MISS_KINDS = tuple(_MISS)


def miss_weights(shape_weight: float = 1.0) -> np.ndarray:
    """Probabilities of MISS_KINDS, with the caption-level shape near miss weighted
    `shape_weight` instead of 1."""
    w = np.array([shape_weight if k == "shape" else v for k, v in _MISS.items()], dtype=float)
    return w / w.sum()


MISS_WEIGHTS = miss_weights()


@dataclass(frozen=True)
class ClipTraining:
    steps: int = 600
    anchors: int = 96  # images per step: twice this
    lr: float = 2e-3
    renders_per_spec: int = 12
    degrade_share: float = 0.5
    # extra shape hard negatives, off by default: the share of negatives that are the anchor's
    # own scene with one object reshaped in place, and the weight of the caption-level shape
    # near miss among the other kinds (1 = the others')
    reshape_share: float = 0.0
    shape_weight: float = 1.0


def _form(spec) -> str:
    if len(spec.objects) == 1:
        return "single"
    if spec.is_counting:
        return "counting"
    return "and" if spec.relation is None else "relation"


class RenderPool:
    """Pre-rendered images of every spec of the grammar, with their true captions."""

    def __init__(self, per_spec: int, seed: int, progress: bool = True):
        rng = np.random.default_rng(seed)
        self.specs = all_specs()
        self.forms: dict[str, list[int]] = {}
        for i, spec in enumerate(self.specs):
            self.forms.setdefault(_form(spec), []).append(i)
        n = len(self.specs) * per_spec
        self.images = np.empty((n, 32, 32, 3), dtype=np.uint8)
        self.scenes = []
        self.truth: list[list[int]] = []
        for i in tqdm(range(n), desc="clip renders", disable=not progress, mininterval=2):
            scene = sample_scene(self.specs[i // per_spec], rng)
            self.images[i] = render(scene)
            self.scenes.append(scene)
            self.truth.append(truth_of(scene))
        self.per_spec = per_spec
        self.spec_index = {spec: i for i, spec in enumerate(self.specs)}

    def row(self, spec_id: int, rng: np.random.Generator) -> int:
        return spec_id * self.per_spec + int(rng.integers(self.per_spec))


def _near_miss_image(
    pool: RenderPool,
    spec,
    scene,
    rng: np.random.Generator,
    weights: np.ndarray = MISS_WEIGHTS,
    reshape_share: float = 0.0,
):
    """A hard negative for an anchor: mostly a render of a near-miss caption; for two
    different objects often the anchor's own scene mirrored (relation reversed) or with
    its colours swapped (binding broken): the same pixels but for what is wrong. A
    `reshape_share` of them are the anchor's scene with one object reshaped in place."""
    if reshape_share > 0 and rng.random() < reshape_share:
        edited = reshape(scene, rng)
        return render(edited), truth_of(edited)
    while True:
        kind = MISS_KINDS[int(rng.choice(len(MISS_KINDS), p=weights))]
        edited = None
        if kind == "mirror" and len(spec.objects) == 2 and not spec.is_counting:
            axis = {"left of": "x", "right of": "x", "above": "y", "below": "y"}.get(
                spec.relation, str(rng.choice(["x", "y"]))
            )
            edited = mirror(scene, axis)
        elif kind == "recolour":
            edited = swap_colours(scene)
        elif kind == "extra":
            edited = add_object(scene, rng)
        elif kind in NEAR_MISS_KINDS:
            miss = near_miss(spec, kind, rng)
            if miss is not None:
                row = pool.row(pool.spec_index[miss], rng)
                return pool.images[row], pool.truth[row]
        if edited is not None:
            return render(edited), truth_of(edited)


def _batch(pool: RenderPool, rng: np.random.Generator, cfg: ClipTraining, miss_p: np.ndarray):
    """2 * cfg.anchors images (anchors first, then one near miss each, its kind drawn with
    probabilities `miss_p`), their true captions, and the anchors' caption ids."""
    forms = list(FORM_WEIGHTS)
    weights = np.array(list(FORM_WEIGHTS.values()))
    form_ids = rng.choice(len(forms), size=cfg.anchors, p=weights / weights.sum())
    images, truths, anchor_caps, anchor_specs, anchor_rows = [], [], [], [], []
    for f in form_ids:
        ids = pool.forms[forms[int(f)]]
        spec_id = ids[int(rng.integers(len(ids)))]
        row = pool.row(spec_id, rng)
        images.append(pool.images[row])
        truths.append(pool.truth[row])
        anchor_caps.append(CAPTION_INDEX[caption(pool.specs[spec_id])])
        anchor_specs.append(pool.specs[spec_id])
        anchor_rows.append(row)
    for spec, row in zip(anchor_specs, anchor_rows, strict=True):
        image, truth = _near_miss_image(
            pool, spec, pool.scenes[row], rng, miss_p, cfg.reshape_share
        )
        images.append(image)
        truths.append(truth)
    return np.stack(images), truths, anchor_caps


def _degrade(x: torch.Tensor, share: float, gen: torch.Generator) -> torch.Tensor:
    """Blur (sigma 0.3-1.1 px) and noise (std up to 12/255) a random share of the batch,
    on uint8-scaled floats [N, 3, H, W] in [0, 255]."""
    pick = torch.rand(len(x), generator=gen) < share
    if not pick.any():
        return x
    sigma = 0.3 + 0.8 * float(torch.rand(1, generator=gen))
    taps = torch.exp(-0.5 * (torch.arange(-2, 3).float() / sigma) ** 2)
    taps = taps / taps.sum()
    y = x[pick]
    y = F.pad(y, (2, 2, 2, 2), mode="replicate")
    y = F.conv2d(y, taps.view(1, 1, 1, 5).repeat(3, 1, 1, 1), groups=3)
    y = F.conv2d(y, taps.view(1, 1, 5, 1).repeat(3, 1, 1, 1), groups=3)
    noise_std = 12.0 * torch.rand(len(y), 1, 1, 1, generator=gen)
    y = (y + noise_std * torch.randn(y.shape, generator=gen)).clamp(0, 255).round()
    out = x.clone()
    out[pick] = y
    return out


def train_clip(
    model: torch.nn.Module, pool: RenderPool, cfg: ClipTraining, seed: int, progress: bool = True
) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    tokens = open_clip.get_tokenizer(ARCH)(CAPTIONS)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.05)
    model.train()
    running = None
    miss_p = miss_weights(cfg.shape_weight)
    bar = tqdm(range(cfg.steps), desc="clip", disable=not progress, mininterval=2)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg.steps, cfg.lr, warmup=50)
        images, truths, anchor_caps = _batch(pool, rng, cfg, miss_p)
        n = len(images)
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
        x = _degrade(x, cfg.degrade_share, gen)
        img = model.encode_image(image_tensor(x.round().to(torch.uint8), model), normalize=True)
        txt = model.encode_text(tokens, normalize=True)
        scale = model.logit_scale.exp().clamp(max=100)
        true = torch.zeros(n, len(CAPTIONS), dtype=torch.bool)
        for i, t in enumerate(truths):
            true[i, t] = True
        logits = scale * img @ txt.T  # [n, captions]

        # image -> caption: the anchor's own caption (a random true one for near misses)
        target = torch.tensor(
            [
                anchor_caps[i] if i < cfg.anchors else (truths[i][0] if truths[i] else -1)
                for i in range(n)
            ]
        )
        has = target >= 0
        masked = logits[has].masked_fill(true[has], float("-inf"))
        masked[torch.arange(int(has.sum())), target[has]] = logits[has, target[has]]
        loss_i2t = F.cross_entropy(masked, target[has])

        # caption -> image: anchor a's caption against all images, other true ones masked
        cap = torch.tensor(anchor_caps)
        col = logits[:, cap].T  # [anchors, n]
        other_true = true[:, cap].T.clone()
        other_true[torch.arange(cfg.anchors), torch.arange(cfg.anchors)] = False
        loss_t2i = F.cross_entropy(
            col.masked_fill(other_true, float("-inf")), torch.arange(cfg.anchors)
        )
        loss = (loss_i2t + loss_t2i) / 2
        optimiser_step(opt, loss, model.parameters())
        running = smoothed(running, float(loss.detach()))
        if step % 25 == 0:
            bar.set_postfix(loss=f"{running:.3f}")
    model.eval()
    return {"clip_loss": float(running or 0.0)}
