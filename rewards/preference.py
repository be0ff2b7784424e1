"""Standard reward models people compare with (registered as `pickscore` and `aesthetic`).

- pickscore: PickScore (Kirstain et al. 2023, "Pick-a-Pic: An Open Dataset of User
  Preferences for Text-to-Image Generation"): a CLIP-H fine-tuned on human preferences,
  scored as its authors do, logit_scale.exp() * cosine(image, prompt) (about 20 to 23 for
  good images). `model`: hub id or folder of the CLIPModel (default
  yuvalkirstain/PickScore_v1); `options.processor`: the CLIPProcessor's (default the model
  folder where it holds one, else laion/CLIP-ViT-H-14-laion2B-s32B-b79K).
- aesthetic: the LAION aesthetic predictor (christophschuhmann/improved-aesthetic-predictor,
  the one behind LAION-Aesthetics and DDPO's aesthetic reward): linear layers over the
  L2-normalised open_clip image embedding of ViT-L/14 (`model`, default ViT-L-14;
  `checkpoint`, default 'openai', as for clip_score). `options.head`: the MLP's weights as
  a .safetensors file with keys layers.<i>.weight / layers.<i>.bias (the published
  sac+logos+ava1-l14-linearMSE.pth converted once; its layers have no activation between
  them, so the head is their composition). Scores on a 1 to 10 scale.
Both load weights from safetensors only.
"""

from __future__ import annotations

import re

import numpy as np
import torch

from configs.load import resolve_path
from configs.schema import RewardTerm
from rewards.registry import Reward, RewardSetupError
from rewards.scorers import ClipScore, clip_checkpoint

PICKSCORE_MODEL = "yuvalkirstain/PickScore_v1"
PICKSCORE_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"


def hf_source(spec: str, field: str) -> str:
    """A local folder (resolved) or a hub id; a missing path is refused here."""
    path = resolve_path(spec)
    if path.is_dir():
        return str(path)
    if spec.startswith((".", "/", "~")) or path.exists() or spec.count("/") > 1:
        raise RewardSetupError(f"{field} = {spec!r}: no such model folder")
    return spec


def check_term(term: RewardTerm, index: int) -> None:
    """What can be checked before loading: folders and files named in the term."""
    where = f"rewards.{index}"
    if term.name == "pickscore":
        hf_source(term.model or PICKSCORE_MODEL, f"{where}.model")
        if isinstance(term.options.get("processor"), str):
            hf_source(term.options["processor"], f"{where}.options.processor")
    else:
        load_head(term.options.get("head"), f"{where}.options.head")
        clip_checkpoint(term, index)


class PickScore(Reward):
    def setup(self, term: RewardTerm, device: torch.device) -> None:
        from transformers import CLIPModel, CLIPProcessor

        model = hf_source(term.model or PICKSCORE_MODEL, self.field("model"))
        processor = term.options.get("processor")
        if processor is None:
            names = ("preprocessor_config.json", "processor_config.json")
            has_own = any((resolve_path(model) / n).is_file() for n in names)
            processor = model if has_own else PICKSCORE_PROCESSOR
        processor = hf_source(str(processor), self.field("options.processor"))
        try:
            self.processor = CLIPProcessor.from_pretrained(processor)
        except (OSError, ValueError) as exc:
            raise RewardSetupError(
                f"{self.field('options.processor')} = {processor!r}: cannot load a "
                f"CLIPProcessor ({_first_line(exc)})"
            ) from None
        try:
            clip = CLIPModel.from_pretrained(model, use_safetensors=True)
        except (OSError, ValueError) as exc:
            raise RewardSetupError(
                f"{self.field('model')} = {model!r}: cannot load a CLIPModel with "
                f"safetensors weights ({_first_line(exc)})"
            ) from None
        self.model = clip.to(device).eval().requires_grad_(False)
        self.device = device

    @torch.no_grad()
    def score(self, images: torch.Tensor, prompts: list[str]) -> np.ndarray:
        from PIL import Image

        unique = list(dict.fromkeys(prompts))
        pil = [Image.fromarray(im) for im in images.permute(0, 2, 3, 1).cpu().numpy()]
        inputs = self.processor(
            images=pil, text=unique, padding=True, truncation=True, return_tensors="pt"
        ).to(self.device)
        logits = self.model(**inputs).logits_per_image  # [N, U]: scale * cosine
        rows = torch.tensor([unique.index(p) for p in prompts], device=self.device)
        return logits.gather(1, rows[:, None])[:, 0].double().cpu().numpy()


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_head(path_spec: object, field: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The aesthetic MLP's (weight, bias) pairs in layer order, checked to chain."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not isinstance(path_spec, str) or not path_spec:
        raise RewardSetupError(f"{field} = {path_spec!r}: the MLP's .safetensors file is needed")
    path = resolve_path(path_spec)
    if path.suffix != ".safetensors" or not path.is_file():
        what = (
            "only .safetensors files are loaded (no pickle)" if path.is_file() else "no such file"
        )
        raise RewardSetupError(f"{field} = {path_spec!r}: {what}")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise RewardSetupError(f"{field} = {path_spec!r}: unreadable ({exc})") from None
    index = sorted(
        int(m.group(1)) for k in state if (m := re.fullmatch(r"layers\.(\d+)\.weight", k))
    )
    if not index or any(f"layers.{i}.bias" not in state for i in index):
        raise RewardSetupError(
            f"{field} = {path_spec!r}: expected tensors layers.<i>.weight and layers.<i>.bias"
        )
    layers = [
        (state[f"layers.{i}.weight"].float(), state[f"layers.{i}.bias"].float()) for i in index
    ]
    for (w, _), (nxt, _) in zip(layers, layers[1:], strict=False):
        if nxt.shape[1] != w.shape[0]:
            raise RewardSetupError(f"{field} = {path_spec!r}: layer shapes do not chain")
    if layers[-1][0].shape[0] != 1:
        raise RewardSetupError(f"{field} = {path_spec!r}: the last layer must give one score")
    return layers


class Aesthetic(ClipScore):
    def setup(self, term: RewardTerm, device: torch.device) -> None:
        layers = load_head(term.options.get("head"), self.field("options.head"))
        clip_term = term.model_copy(
            update={"model": term.model or "ViT-L-14", "checkpoint": term.checkpoint or "openai"}
        )
        super().setup(clip_term, device)
        width = self.model.visual.output_dim
        if layers[0][0].shape[1] != width:
            raise RewardSetupError(
                f"{self.field('options.head')}: the MLP takes {layers[0][0].shape[1]} inputs, "
                f"{clip_term.model} embeds images in {width}"
            )
        self.layers = [(w.to(device), b.to(device)) for w, b in layers]

    @torch.no_grad()
    def score(self, images: torch.Tensor, prompts: list[str]) -> np.ndarray:
        x = self.embed_images(images)  # L2-normalised, as the predictor was trained
        for w, b in self.layers:
            x = x @ w.T + b
        return x[:, 0].double().cpu().numpy()
