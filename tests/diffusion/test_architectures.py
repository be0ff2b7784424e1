"""Random-weight Stable Diffusion folders: written whole, loaded by the project and by diffusers."""

from __future__ import annotations

import torch
from diffusers import StableDiffusionPipeline

from configs.schema import ModelConfig
from diffusion.architectures import SD15, SD15_REDUCED, build_networks, main
from diffusion.pipeline import load_model


def test_the_reduced_variant_keeps_sd15s_block_structure():
    with torch.device("meta"):
        full, _, full_text = build_networks(SD15)
        small, small_vae, small_text = build_networks(SD15_REDUCED)
    for key in ("down_block_types", "up_block_types", "layers_per_block", "in_channels"):
        assert small.config[key] == full.config[key], key
    assert len(small.config.block_out_channels) == len(full.config.block_out_channels)
    assert small_text.config.num_hidden_layers == full_text.config.num_hidden_layers
    assert small_vae.config.scaling_factor == 0.18215
    assert (
        sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in full.parameters()) / 50
    )


def test_the_command_writes_a_folder_both_loaders_read(tmp_path, capsys):
    out = tmp_path / "sd15-reduced"
    assert main(["--arch", "sd15-reduced", "--out", str(out)]) == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no leftovers
    assert main(["--arch", "sd15-reduced", "--out", str(out)]) == 2  # never overwrites
    assert "not an empty folder" in capsys.readouterr().err

    stock = StableDiffusionPipeline.from_pretrained(str(out), local_files_only=True)
    ours = load_model(ModelConfig(pretrained=str(out), device="cpu"), torch.device("cpu"))
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([500])
    ctx = torch.randn(1, 77, SD15_REDUCED.text_width)
    with torch.no_grad():
        a = stock.unet(x, t, encoder_hidden_states=ctx).sample
        b = ours.unet(x, t, encoder_hidden_states=ctx).sample
    assert a.shape == (1, 4, 8, 8) and torch.equal(a, b)
    assert stock.vae.config.sample_size == 64
