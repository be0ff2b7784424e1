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


# a LLaVA-1.5-style conversation: the image, the instruction, then the answer
LLAVA_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] | upper }}: {% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{{ '\\n' }}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def save_tiny_llava(folder: Path, seed: int = 0) -> Path:
    """LlavaForConditionalGeneration (a 1-layer CLIP vision tower, a 1-layer Llama) and its
    LlavaProcessor with a chat template; the toy CLIP tokenizer plus an <image> token."""
    from transformers import (
        AutoTokenizer,
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tok = AutoTokenizer.from_pretrained(TOY_CLIP_TOKENIZER)
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    tok.model_max_length = 128  # the prompt holds one token per image patch
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**SMALL_ATTENTION, image_size=32, patch_size=8),
        text_config=LlamaConfig(
            **SMALL_ATTENTION,
            vocab_size=len(tok),
            num_key_value_heads=2,
            max_position_embeddings=128,
            pad_token_id=tok.pad_token_id,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
        ),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
    )
    torch.manual_seed(seed)
    LlavaForConditionalGeneration(config).save_pretrained(folder)
    LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        ),
        tokenizer=tok,
        patch_size=8,
        vision_feature_select_strategy="full",
        chat_template=LLAVA_TEMPLATE,
        image_token="<image>",
    ).save_pretrained(folder)
    return folder
