"""Import LipVoicer's released MelGen denoiser (exp/LRS{2,3}/wnet_h512_d12_T400_betaT0.02/checkpoint/
1000000.pkl) into engines.models.melgen.MelGen.

The checkpoint is `{"model_state_dict": AudioVisualModel.state_dict(), ...}`, with three networks:
`net_diffwave.*` (the WaveNet denoiser, diffwave-sashimi names, weight-normed convs), `net_lipreading.*`
(the LRW ShuffleNetV2 + non-causal TCN lip encoder) and `net_facial.*` (ResNet-18 face encoder), plus
the CFG nulls `mouthroi_null` / `face_null` (random images fed through those encoders).

Only the denoiser is imported. The lip and face encoders are not ported: our visual front end is
causal with a declared look-ahead and runs on our own ROI/geometry features, and our identity encoder
reads the aligned face crop, so neither can reuse LipVoicer's weights. Consequently the released stack
expects LipVoicer's 640-d condition (128 face + 512 lip, in that order) that we cannot produce; build
the MelGen with `cond_dim` = our visual D + identity E, and its `cond_proj` (cond_dim → 640) and null
condition are new and must be trained (fine-tuning) before the imported denoiser is useful.

Key mapping (N: layer, M: upsampler; weight-norm pairs weight_g/weight_v, or the newer
parametrizations.weight.original0/original1, are folded into plain weights):
    init_conv.0.conv                                  → input_conv
    residual_layer.fc_t1 / fc_t2                      → step_embed.fc1 / fc2
    residual_layer.residual_blocks.N.fc_t             → layers.N.step_proj
    residual_layer.residual_blocks.N.dilated_conv_layer.conv → layers.N.conv
    residual_layer.residual_blocks.N.upsample_conv2d.M → layers.N.cond_upsample.M
    residual_layer.residual_blocks.N.mel_conv.conv    → layers.N.cond_conv
    residual_layer.residual_blocks.N.res_conv / skip_conv → layers.N.res_conv / skip_conv
    final_conv.0.conv / final_conv.2.conv             → output_conv / final_conv
The last block's res_conv is dropped: its output is discarded by their forward too, and MelGen has no
such layer (the outputs are identical).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from engines.models.melgen import MelGen, MelGenConfig

_BLOCK = r"residual_layer\.residual_blocks\.(\d+)\."
_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(f"^{a}$"), b) for a, b in (
    (r"init_conv\.0\.conv\.", "input_conv."),
    (r"residual_layer\.fc_t1\.", "step_embed.fc1."),
    (r"residual_layer\.fc_t2\.", "step_embed.fc2."),
    (_BLOCK + r"fc_t\.", r"layers.\1.step_proj."),
    (_BLOCK + r"dilated_conv_layer\.conv\.", r"layers.\1.conv."),
    (_BLOCK + r"upsample_conv2d\.(\d+)\.", r"layers.\1.cond_upsample.\2."),
    (_BLOCK + r"mel_conv\.conv\.", r"layers.\1.cond_conv."),
    (_BLOCK + r"res_conv\.", r"layers.\1.res_conv."),
    (_BLOCK + r"skip_conv\.", r"layers.\1.skip_conv."),
    (r"final_conv\.0\.conv\.", "output_conv."),
    (r"final_conv\.2\.conv\.", "final_conv."),
))
_ANCHOR = "residual_layer.fc_t1.weight"
_DENOISER_ROOTS = ("init_conv.", "residual_layer.", "final_conv.")
# Ours alone: the condition projection (when cond_dim != 640) and the null condition in feature space.
_NEW = re.compile(r"^(cond_proj\.|null_cond$)")
_WEIGHT_NORM = (("weight_g", "weight_v"),
                ("parametrizations.weight.original0", "parametrizations.weight.original1"))


@dataclass
class ImportReport:
    """What the import did: our keys loaded, ours left at their initial values, theirs not ported."""

    loaded: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def summary(self) -> str:
        roots = sorted({k.split(".")[0] for k in self.ignored})
        return (f"{len(self.loaded)} tensors loaded; new (to train): {', '.join(self.new) or 'none'}; "
                f"not ported: {len(self.ignored)} tensors under {', '.join(roots) or 'nothing'}")


def load_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """The model state dict of a released checkpoint file (tensors only: no code is unpickled)."""
    blob = torch.load(Path(path), map_location="cpu", weights_only=True)
    state = blob.get("model_state_dict", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path}: not a LipVoicer checkpoint (no model_state_dict of tensors)")
    return state


def _fold_weight_norm(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """weight_g/weight_v pairs → weight = g · v / ‖v‖ (norm over all dims but 0, as weight_norm(dim=0))."""
    out = dict(state)
    for key in list(out):
        for g_name, v_name in _WEIGHT_NORM:
            if key.endswith(g_name):
                stem = key[: -len(g_name)]
                g, v = out.pop(key).float(), out.pop(stem + v_name).float()
                norm = v.flatten(1).norm(dim=1).reshape(g.shape)
                out[stem + "weight"] = v * (g / norm)
    return out


def denoiser_prefix(state: Mapping[str, Tensor]) -> str:
    """The key prefix of the WaveNet denoiser ("net_diffwave." in the released checkpoints)."""
    anchors = [k for k in state if k.endswith(_ANCHOR)]
    if len(anchors) != 1:
        raise ValueError(f"expected one '{_ANCHOR}' key (the MelGen denoiser), found {len(anchors)}")
    return anchors[0][: -len(_ANCHOR)]


def map_state(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """(our MelGen keys → tensors, their keys not ported). Raises on a denoiser key of unknown layout."""
    prefix = denoiser_prefix(state)
    mapped, ignored, origin = {}, [], {}
    for key, value in _fold_weight_norm(state).items():
        name = key[len(prefix):] if key.startswith(prefix) else None
        if name is None or not name.startswith(_DENOISER_ROOTS):
            ignored.append(key)
            continue
        module, _, leaf = name.rpartition(".")
        for pattern, target in _RULES:
            if leaf in ("weight", "bias") and pattern.match(module + "."):
                ours = pattern.sub(target, module + ".") + leaf
                mapped[ours], origin[ours] = value, key
                break
        else:
            raise ValueError(f"unknown MelGen denoiser key {key!r}")
    # their last layer's residual 1×1 feeds nothing (only its skip is summed); ours has none
    last = max(int(k.split(".")[1]) for k in mapped if k.startswith("layers."))
    for leaf in ("weight", "bias"):
        ours = f"layers.{last}.res_conv.{leaf}"
        if ours in mapped:
            del mapped[ours]
            ignored.append(origin[ours])
    return mapped, sorted(ignored)


def config_from_state(state: Mapping[str, Tensor], cond_dim: int | None = None) -> MelGenConfig:
    """The MelGenConfig whose shapes match a released denoiser; `cond_dim` (default: the stack's own
    cond channels, 640) is what our condition will be."""
    return _config(map_state(state)[0], cond_dim)


def _config(mapped: Mapping[str, Tensor], cond_dim: int | None) -> MelGenConfig:
    layers = {int(k.split(".")[1]) for k in mapped if k.startswith("layers.")}
    upsample = sorted({int(k.split(".")[3]) for k in mapped if ".cond_upsample." in k})
    cond_channels = mapped["layers.0.cond_conv.weight"].shape[1]
    return MelGenConfig.lipvoicer(
        n_mels=mapped["input_conv.weight"].shape[1],
        num_res_layers=len(layers),
        res_channels=mapped["layers.0.step_proj.weight"].shape[0],
        skip_channels=mapped["layers.0.skip_conv.weight"].shape[0],
        kernel_size=mapped["layers.0.conv.weight"].shape[2],
        step_embed_in=mapped["step_embed.fc1.weight"].shape[1],
        step_embed_mid=mapped["step_embed.fc1.weight"].shape[0],
        step_embed_out=mapped["step_embed.fc2.weight"].shape[0],
        cond_channels=cond_channels,
        cond_dim=cond_dim or cond_channels,
        cond_upsample=tuple(mapped[f"layers.0.cond_upsample.{m}.weight"].shape[3] // 2 for m in upsample),
    )


def import_melgen(state: Mapping[str, Tensor], cond_dim: int | None = None) -> tuple[MelGen, ImportReport]:
    """A MelGen holding the released denoiser's weights (see the module docstring for what is new)."""
    mapped, ignored = map_state(state)
    model = MelGen(_config(mapped, cond_dim))
    result = model.load_state_dict(mapped, strict=False)
    if result.unexpected_keys:
        raise ValueError(f"checkpoint keys with no place in MelGen: {result.unexpected_keys}")
    unexplained = [k for k in result.missing_keys if not _NEW.match(k)]
    if unexplained:
        raise ValueError(f"MelGen keys the checkpoint does not provide: {unexplained}")
    return model, ImportReport(sorted(mapped), sorted(result.missing_keys), ignored)
