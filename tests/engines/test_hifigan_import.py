"""HiFi-GAN: LipVoicer's released generator layout loads key for key; lengths; the small variant."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from engines.audio.torch_mel import denormalize
from engines.importers.hifigan import load_lipvoicer_hifigan
from engines.models.hifigan import HiFiGAN, HiFiGANConfig

# LipVoicer hifi_gan/config.json (yochaiye/LipVoicer), written out here rather than taken from our config
RELEASED = {"upsample_rates": [2, 5, 4, 4], "upsample_kernel_sizes": [16, 15, 4, 4],
            "upsample_initial_channel": 512, "resblock_kernel_sizes": [3, 7, 11], "num_mels": 80}


def released_generator(seed: int = 0) -> dict[str, torch.Tensor]:
    """A `g_02400000["generator"]`-shaped state dict (jik876 Generator, old weight_norm: g/v/bias)."""
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}

    def normed(name: str, shape: tuple[int, ...], bias: int) -> None:
        v = torch.randn(shape, generator=gen) * 0.01
        state[f"{name}.weight_g"] = torch.linalg.vector_norm(v, dim=(1, 2), keepdim=True) * (
            1 + torch.rand((shape[0], 1, 1), generator=gen))
        state[f"{name}.weight_v"] = v
        state[f"{name}.bias"] = torch.randn(bias, generator=gen) * 0.01

    ch = RELEASED["upsample_initial_channel"]
    normed("conv_pre", (ch, RELEASED["num_mels"], 7), ch)
    for i, k in enumerate(RELEASED["upsample_kernel_sizes"]):
        # ConvTranspose1d weights are (in, out, k)
        normed(f"ups.{i}", (ch // 2**i, ch // 2 ** (i + 1), k), ch // 2 ** (i + 1))
    for i in range(4):
        c = ch // 2 ** (i + 1)
        for j, k in enumerate(RELEASED["resblock_kernel_sizes"]):
            for convs in ("convs1", "convs2"):
                for m in range(3):
                    normed(f"resblocks.{3 * i + j}.{convs}.{m}", (c, c, k), c)
    normed("conv_post", (1, ch // 16, 7), 1)
    return state


@pytest.fixture(scope="module")
def released() -> dict[str, torch.Tensor]:
    return released_generator()


def test_every_released_key_maps_and_a_forward_gives_160_samples_per_frame(released: dict) -> None:
    assert len(released) == 3 * (1 + 4 + 4 * 3 * 2 * 3 + 1)  # g, v, bias of each of the 78 convs
    assert 13.5e6 < sum(t.numel() for t in released.values()) < 14e6  # V1 size (13.9 M at 22 kHz)
    model = load_lipvoicer_hifigan({"generator": released}, remove_weight_norm=False)
    ours = model.state_dict()
    assert len(ours) == len(released)
    for name, tensor in released.items():
        prefix, _, leaf = name.rpartition(".")
        mapped = {"weight_g": f"{prefix}.parametrizations.weight.original0",
                  "weight_v": f"{prefix}.parametrizations.weight.original1"}.get(leaf, name)
        assert torch.equal(ours[mapped], tensor), name
    with torch.inference_mode():
        wav = model(torch.randn(2, 80, 12) * 0.3 - 0.4)
    assert wav.shape == (2, 12 * 160) and wav.abs().max() <= 1


def test_weight_norm_is_the_originals_and_folding_keeps_the_output(released: dict) -> None:
    kept = load_lipvoicer_hifigan(released, remove_weight_norm=False)
    folded = load_lipvoicer_hifigan(released)
    mel = torch.randn(1, 80, 9) * 0.3 - 0.4
    g, v = released["conv_pre.weight_g"], released["conv_pre.weight_v"]
    weight = g * v / torch.linalg.vector_norm(v, dim=(1, 2), keepdim=True)
    with torch.inference_mode():
        expected = F.conv1d(denormalize(mel), weight, released["conv_pre.bias"], padding=3)
        assert torch.allclose(folded.conv_pre(denormalize(mel)), expected, atol=1e-5)
        assert torch.allclose(kept(mel), folded(mel), atol=1e-5)
    assert not any("parametrizations" in k for k in folded.state_dict())


def test_a_generator_saved_without_weight_norm_and_a_checkpoint_file_load_too(released: dict,
                                                                              tmp_path: Path) -> None:
    reference = load_lipvoicer_hifigan(released)
    plain = reference.state_dict()  # folded: conv.weight + conv.bias only
    path = tmp_path / "g_02400000"
    torch.save({"generator": released, "steps": 2400000}, path)
    mel = torch.randn(1, 80, 5) * 0.3 - 0.4
    with torch.inference_mode():
        assert torch.allclose(load_lipvoicer_hifigan(plain)(mel), reference(mel), atol=1e-5)
        assert torch.equal(load_lipvoicer_hifigan(path)(mel), reference(mel))


def test_a_checkpoint_of_another_layout_is_refused_with_the_reasons(released: dict) -> None:
    broken = dict(released)
    del broken["conv_post.bias"]
    broken["mpd.0.weight"] = torch.zeros(1)
    broken["conv_pre.weight_v"] = torch.zeros(512, 80, 5)
    with pytest.raises(ValueError, match="3 problems") as info:
        load_lipvoicer_hifigan(broken)
    assert "missing conv_post.bias" in str(info.value) and "unexpected mpd.0.weight" in str(info.value)
    assert "conv_pre.weight_v: checkpoint (512, 80, 5) vs model (512, 80, 7)" in str(info.value)
    with pytest.raises(ValueError, match="state dict"):
        load_lipvoicer_hifigan({"generator": {"conv_pre.weight_g": "not a tensor"}})


def test_small_variant_keeps_the_hop_and_is_much_smaller() -> None:
    small = HiFiGAN(HiFiGANConfig.small()).remove_weight_norm()
    assert sum(p.numel() for p in small.parameters()) < 2e6
    with torch.inference_mode():
        assert small(torch.randn(1, 80, 7)).shape == (1, 7 * 160)
    with pytest.raises(ValueError, match="multiply to"):
        HiFiGAN(HiFiGANConfig(upsample_rates=(8, 8, 4), upsample_kernel_sizes=(16, 16, 8)))
