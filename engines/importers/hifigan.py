"""LipVoicer's released HiFi-GAN generator (`hifi_gan/g_02400000`) into `engines.models.hifigan.HiFiGAN`.

The release is a `{"generator": state_dict, ...}` checkpoint of jik876's Generator with the old
`torch.nn.utils.weight_norm`: each normed conv has `weight_g` (magnitude, (out, 1, 1); (in, 1, 1) for
the transposed convs, weight_norm's dim 0) and `weight_v` (direction) plus `bias`, under the names
conv_pre, ups.N, resblocks.N.convs1.M / convs2.M and conv_post. Our module keeps those names and uses
the parametrization API, so g → `parametrizations.weight.original0` and v → `original1`. A generator
saved after `remove_weight_norm` (plain `weight`) loads too: g is then the weight's norm.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from engines.models.hifigan import HiFiGAN, HiFiGANConfig

_G, _V = "parametrizations.weight.original0", "parametrizations.weight.original1"


def generator_state(checkpoint: Mapping[str, object] | str | Path) -> dict[str, Tensor]:
    """The generator's tensors from a checkpoint file, a `{"generator": ...}` dict, or the bare state dict."""
    if isinstance(checkpoint, str | Path):
        checkpoint = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = checkpoint.get("generator", checkpoint)
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError("not a HiFi-GAN generator state dict (expected tensors, or a 'generator' entry)")
    return dict(state)


def _renamed(name: str, tensor: Tensor) -> dict[str, Tensor]:
    """One released tensor under our parameter name(s) (module docstring)."""
    prefix, _, leaf = name.rpartition(".")
    if leaf == "weight_g":
        return {f"{prefix}.{_G}": tensor}
    if leaf == "weight_v":
        return {f"{prefix}.{_V}": tensor}
    if leaf == "weight":
        g = torch.linalg.vector_norm(tensor, dim=tuple(range(1, tensor.dim())), keepdim=True)
        return {f"{prefix}.{_G}": g, f"{prefix}.{_V}": tensor}
    return {name: tensor}


def load_lipvoicer_hifigan(checkpoint: Mapping[str, object] | str | Path, config: HiFiGANConfig | None = None,
                           *, remove_weight_norm: bool = True) -> HiFiGAN:
    """A HiFiGAN in eval mode holding the released weights; weight norm folded unless asked to keep it.

    Raises ValueError naming every missing, unexpected or mis-shaped tensor: a checkpoint of another
    layout fails loudly rather than loading half.
    """
    model = HiFiGAN(config or HiFiGANConfig())
    ours = model.state_dict()
    mapped, problems = {}, []
    for name, tensor in generator_state(checkpoint).items():
        renamed = _renamed(name, tensor)
        if not renamed.keys() <= ours.keys():
            problems.append(f"unexpected {name}")
        elif tensor.shape != (want := ours[list(renamed)[-1]].shape):  # a plain weight is compared with v
            problems.append(f"{name}: checkpoint {tuple(tensor.shape)} vs model {tuple(want)}")
        mapped.update(renamed)
    problems += [f"missing {k}" for k in ours.keys() - mapped.keys()]
    if problems:
        shown = "; ".join(sorted(problems)[:8])
        raise ValueError(f"HiFi-GAN checkpoint does not fit the layout ({len(problems)} problems): {shown}")
    model.load_state_dict(mapped)
    model.eval()
    return model.remove_weight_norm() if remove_weight_norm else model
