"""The toy world's CLIP: an open_clip architecture named `toy-clip`, and a scorer.

The architecture is a JSON config (`toy-clip.json`) registered with open_clip, so the
model loads exactly like a stock one once registered:

    register_toy_clip()
    model, _, preprocess = open_clip.create_model_and_transforms(
        "toy-clip", pretrained="toyworld/assets/clip/toy_clip.safetensors")

The score of an image for a caption is the cosine of the L2-normalised embeddings, as the
paper's CLIPScore reward (ViT-H-14) is.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import open_clip
import torch

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
CLIP_DIR = ASSETS_DIR / "clip"
ARCH = "toy-clip"
CONFIG_NAME = f"{ARCH}.json"
CHECKPOINT_NAME = "toy_clip.safetensors"


def toy_clip_config(
    embed_dim: int = 64,
    vision_width: int = 64,
    vision_layers: int = 3,
    text_width: int = 32,
    text_layers: int = 2,
    context_length: int = 16,
) -> dict:
    """open_clip model config: a ViT on 32 px images (4 px patches: an 8 x 8 grid) and a
    causal text transformer over open_clip's default (CLIP BPE) tokenizer."""
    return {
        "embed_dim": embed_dim,
        # quick_gelu, as transformers' CLIPTextModel: the text tower can seed the pipeline's
        "quick_gelu": True,
        "vision_cfg": {
            "image_size": 32,
            "patch_size": 4,
            "layers": vision_layers,
            "width": vision_width,
            "head_width": 16,
            "mlp_ratio": 4.0,
        },
        "text_cfg": {
            "context_length": context_length,
            "vocab_size": 49408,
            "width": text_width,
            "heads": 4,
            "layers": text_layers,
        },
    }


def write_config(directory: Path, config: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CONFIG_NAME
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return path


def register_toy_clip(directory: str | Path = CLIP_DIR) -> None:
    """Make `toy-clip` (the config in `directory`) known to open_clip. Registering another
    directory's config later replaces it (e.g. a micro build's)."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: build the toy world first (python -m toyworld.build)"
        )
    wanted = json.loads(path.read_text(encoding="utf-8"))
    if open_clip.get_model_config(ARCH) != wanted:
        open_clip.add_model_config(path)


def load_toy_clip(
    directory: str | Path = CLIP_DIR, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, object]:
    """(model in eval mode, tokenizer) from `directory`/toy_clip.safetensors via open_clip."""
    register_toy_clip(directory)
    model, _, _ = open_clip.create_model_and_transforms(
        ARCH, pretrained=str(Path(directory) / CHECKPOINT_NAME), device=device
    )
    return model.eval(), open_clip.get_tokenizer(ARCH)


def image_tensor(images: torch.Tensor | np.ndarray, model: torch.nn.Module) -> torch.Tensor:
    """uint8 [N, 3, H, W] (or [N, H, W, 3]) -> the normalised float input of the vision tower
    (the same mean / std as open_clip's preprocess; toy images are already 32 px)."""
    x = torch.as_tensor(np.asarray(images) if isinstance(images, np.ndarray) else images)
    if x.ndim == 4 and x.shape[-1] == 3 and x.shape[1] != 3:
        x = x.permute(0, 3, 1, 2)
    cfg = model.visual.preprocess_cfg
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    size = model.visual.image_size
    size = size[0] if isinstance(size, tuple | list) else size
    x = x.float() / 255.0
    if x.shape[-1] != size:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bicubic", antialias=True)
    return (x - mean) / std


class ToyClipScorer:
    """cosine(image, caption) with the toy CLIP; rewards are computed in batches."""

    def __init__(self, directory: str | Path = CLIP_DIR, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.model, self.tokenizer = load_toy_clip(directory, self.device)

    @torch.no_grad()
    def text_embeddings(self, captions: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(list(captions)).to(self.device)
        return self.model.encode_text(tokens, normalize=True).float().cpu()

    @torch.no_grad()
    def image_embeddings(self, images: torch.Tensor | np.ndarray, batch: int = 256) -> torch.Tensor:
        x = image_tensor(images, self.model)
        out = [
            self.model.encode_image(x[lo : lo + batch].to(self.device), normalize=True).float()
            for lo in range(0, len(x), batch)
        ]
        return torch.cat(out).cpu()

    def score(self, images: torch.Tensor | np.ndarray, prompts: list[str]) -> np.ndarray:
        """float64 [N]: cosine of image i and prompt i."""
        unique = list(dict.fromkeys(prompts))
        text = self.text_embeddings(unique)
        rows = torch.tensor([unique.index(p) for p in prompts])
        image = self.image_embeddings(images)
        return (image * text[rows]).sum(-1).double().numpy()

    __call__ = score
