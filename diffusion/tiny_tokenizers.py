"""Tokenizers of the tiny pipelines, built offline: Stable Diffusion's CLIP BPE tokenizer from
the vocabulary that open_clip ships (token ids match Stable Diffusion's), and a small
T5-style unigram tokenizer over the toy world's words."""

from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path

import open_clip
from transformers import CLIPTokenizer, T5TokenizerFast


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2 / CLIP byte-level BPE alphabet: printable bytes map to themselves, the rest to
    # code points above 255, so every byte has a visible, non-whitespace symbol.
    keep = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = keep[:]
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(keep, map(chr, chars), strict=True))


def clip_tokenizer(max_length: int = 77, pad_token: str = "<|endoftext|>") -> CLIPTokenizer:
    """Stable Diffusion's CLIP tokenizer, rebuilt offline from open_clip's BPE file (SDXL's
    second tokenizer pads with "!")."""
    bpe = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    with gzip.open(bpe, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    alphabet = list(_bytes_to_unicode().values())
    vocab = alphabet + [a + "</w>" for a in alphabet]
    vocab += ["".join(m.split()) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file = Path(tmp) / "vocab.json"
        merges_file = Path(tmp) / "merges.txt"
        vocab_file.write_text(json.dumps({t: i for i, t in enumerate(vocab)}), encoding="utf-8")
        merges_file.write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
        tok = CLIPTokenizer(
            str(vocab_file),
            str(merges_file),
            model_max_length=max_length,
            pad_token=pad_token,
        )
        # load fully into memory before the files go away
        tok = CLIPTokenizer.from_pretrained(_save(tok, Path(tmp) / "tok"))
    return tok


def _save(tok: CLIPTokenizer, path: Path) -> str:
    tok.save_pretrained(str(path))
    return str(path)


def tiny_t5_tokenizer() -> T5TokenizerFast:
    """A T5-style (unigram, sentencepiece word marks) tokenizer built offline: the toy
    world's colour, shape and number words and single letters for the rest. It stands in
    for T5's 32k vocabulary, which cannot be rebuilt without a download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.processors import TemplateProcessing

    words = [
        "a",
        "an",
        "one",
        "two",
        "three",
        "red",
        "green",
        "blue",
        "yellow",
        "circle",
        "square",
        "triangle",
        "star",
    ]
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [("\u2581" + w, -1.0) for w in words] + [("s", -2.0)]
    pieces += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz"]
    tok = Tokenizer(models.Unigram(pieces, unk_id=2))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return T5TokenizerFast(
        tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", unk_token="<unk>", extra_ids=0
    )
