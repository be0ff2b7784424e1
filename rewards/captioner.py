"""Image captioners for the BERTScore reward: images uint8 [N, 3, H, W] -> N strings.

`captioner:` of a bert_score term (or evaluation's) is
- 'toy' (the default): the toy world's describer, exact on toy images, nothing else;
- a local folder or a hub id of a transformers image-to-text model saved as safetensors:
  BLIP (`BlipForConditionalGeneration`, captions with no prompt) or a LLaVA-style
  vision-language model (`AutoModelForImageTextToText`, asked `captioner_prompt` through
  its chat template; only the generated tokens are kept).
Settings under the term's `options`: captioner_prompt, captioner_max_tokens (default 30),
captioner_batch_size (default 16). Generation is greedy, so a caption is a function of the
image. On CUDA the model runs in bfloat16, elsewhere in float32.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from configs.load import resolve_path
from configs.schema import RewardTerm
from rewards.registry import RewardSetupError

TOY = "toy"
DEFAULT_PROMPT = "Describe this image in one sentence."

Captioner = Callable[[torch.Tensor], list[str]]


def captioner_source(term: RewardTerm, where: str) -> str:
    """'toy', a local folder, or a hub id; a path that does not exist is refused here."""
    spec = term.captioner or TOY
    if spec == TOY:
        return TOY
    path = resolve_path(spec)
    if path.is_dir():
        return str(path)
    if spec.startswith((".", "/", "~")) or path.exists() or spec.count("/") > 1:
        raise RewardSetupError(
            f"{where}.captioner = {spec!r}: no such model folder (a folder saved by "
            "save_pretrained, or a hub id 'org/name')"
        )
    return spec  # a hub id


def _option(term: RewardTerm, where: str, key: str, kind: type, default):
    value = term.options.get(key, default)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise RewardSetupError(f"{where}.options.{key} = {value!r}: expected {kind.__name__}")
    if kind is int and value < 1:
        raise RewardSetupError(f"{where}.options.{key} = {value!r}: must be >= 1")
    return value


def load_captioner(term: RewardTerm, device: torch.device, where: str) -> Captioner:
    source = captioner_source(term, where)
    if source == TOY:
        return toy_captioner
    return TransformersCaptioner(
        source,
        device,
        where,
        prompt=_option(term, where, "captioner_prompt", str, DEFAULT_PROMPT),
        max_tokens=_option(term, where, "captioner_max_tokens", int, 30),
        batch_size=_option(term, where, "captioner_batch_size", int, 16),
    )


def toy_captioner(images: torch.Tensor) -> list[str]:
    from toyworld.checker import describe

    return [describe(im) for im in images.permute(0, 2, 3, 1).cpu().numpy()]


class TransformersCaptioner:
    """A transformers image-to-text model and its processor, loaded from safetensors only."""

    def __init__(
        self,
        source: str,
        device: torch.device,
        where: str,
        prompt: str = DEFAULT_PROMPT,
        max_tokens: int = 30,
        batch_size: int = 16,
    ):
        import transformers as tf

        self.device, self.max_tokens, self.batch_size = device, max_tokens, batch_size
        self.dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        try:
            config = tf.AutoConfig.from_pretrained(source)
            self.processor = tf.AutoProcessor.from_pretrained(source)
            self.blip = config.model_type == "blip"
            cls = tf.BlipForConditionalGeneration if self.blip else tf.AutoModelForImageTextToText
            model = cls.from_pretrained(source, use_safetensors=True, dtype=self.dtype)
        except (OSError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RewardSetupError(
                f"{where}.captioner = {source!r}: cannot load an image-to-text model with "
                f"safetensors weights ({first})"
            ) from None
        self.model = model.to(device).eval().requires_grad_(False)
        self.text = None if self.blip else self._chat_prompt(prompt)

    def _chat_prompt(self, instruction: str) -> str:
        message = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]}
        ]
        if getattr(self.processor, "chat_template", None):
            return self.processor.apply_chat_template(message, add_generation_prompt=True)
        return instruction

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> list[str]:
        from PIL import Image

        captions: list[str] = []
        for chunk in images.split(self.batch_size):
            pil = [Image.fromarray(im) for im in chunk.permute(0, 2, 3, 1).cpu().numpy()]
            if self.text is None:
                inputs = self.processor(images=pil, return_tensors="pt")
            else:
                texts = [self.text] * len(pil)
                inputs = self.processor(images=pil, text=texts, return_tensors="pt", padding=True)
            inputs = {
                k: v.to(self.device, self.dtype if v.is_floating_point() else v.dtype)
                for k, v in inputs.items()
            }
            out = self.model.generate(**inputs, max_new_tokens=self.max_tokens, do_sample=False)
            if self.text is not None:  # a decoder-only model repeats its prompt first
                out = out[:, inputs["input_ids"].shape[1] :]
            decoded = self.processor.batch_decode(out, skip_special_tokens=True)
            captions += [c.strip() for c in decoded]
        return captions
