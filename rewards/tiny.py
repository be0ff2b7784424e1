"""Tiny random reward models of the real architectures, saved the way users' are (for tests
and smoke runs, no download): a BLIP captioner and a PickScore-shaped CLIP."""

from __future__ import annotations

from pathlib import Path

import torch

# CLIP's BPE vocabulary, from the toy world's pipeline
TOY_CLIP_TOKENIZER = Path(__file__).resolve().parents[1] / "toyworld/assets/pipeline/tokenizer"
SMALL = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1}
SMALL_ATTENTION = {**SMALL, "num_attention_heads": 2}


def save_tiny_blip(folder: Path, seed: int = 0) -> Path:
    """BlipForConditionalGeneration with 1-layer, 32-wide text and vision towers and the
    bundled MiniLM's BERT tokenizer, saved with save_pretrained (safetensors)."""
    from transformers import (
        AutoTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    from rewards.scorers import default_bert_model

    tok = AutoTokenizer.from_pretrained(default_bert_model())
    config = BlipConfig(
        text_config={
            **SMALL_ATTENTION,
            "vocab_size": len(tok) + 1,
            "max_position_embeddings": 64,
            "bos_token_id": len(tok),  # BLIP's decoder start token, past the BERT vocabulary
            "sep_token_id": tok.sep_token_id,
            "eos_token_id": tok.sep_token_id,
            "pad_token_id": tok.pad_token_id,
        },
        vision_config={**SMALL_ATTENTION, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    torch.manual_seed(seed)
    BlipForConditionalGeneration(config).save_pretrained(folder)
    image_processor = BlipImageProcessor(size={"height": 32, "width": 32})
    BlipProcessor(image_processor=image_processor, tokenizer=tok).save_pretrained(folder)
    return folder


def save_tiny_clip(folder: Path, seed: int = 0) -> Path:
    """A transformers CLIPModel (PickScore's architecture) with 1-layer, 32-wide towers and
    its CLIPProcessor (the toy pipeline's CLIP tokenizer) in one folder."""
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTokenizer,
    )

    config = CLIPConfig(
        text_config={**SMALL_ATTENTION, "vocab_size": 49408, "max_position_embeddings": 16},
        vision_config={**SMALL_ATTENTION, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(folder)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    tokenizer = CLIPTokenizer.from_pretrained(TOY_CLIP_TOKENIZER)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder
