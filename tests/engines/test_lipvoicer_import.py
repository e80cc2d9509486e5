"""The LipVoicer MelGen importer, on state dicts built here with the released layout (diffwave-sashimi
names, weight-normed convs, LipVoicer's AudioVisualModel wrapper) and checked against an independent
functional reimplementation of their forward pass (models/wavenet.py at yochaiye/LipVoicer@7045104)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from engines.importers.lipvoicer import config_from_state, import_melgen, load_checkpoint, map_state
from engines.models.melgen import MelGen


def released_state(layers: int = 12, res: int = 512, skip: int = 512, cond: int = 640, t_in: int = 128,
                   t_mid: int = 512, t_out: int = 512, upsample: tuple[int, ...] = (2, 2),
                   parametrized: bool = False) -> dict[str, Tensor]:
    """A random AudioVisualModel state dict with LipVoicer's key names and shapes."""
    g_name, v_name = (("parametrizations.weight.original0", "parametrizations.weight.original1")
                      if parametrized else ("weight_g", "weight_v"))
    state: dict[str, Tensor] = {}

    def normed(name: str, shape: tuple[int, ...], bias: int) -> None:
        state[f"{name}.{v_name}"] = torch.randn(shape) / math.sqrt(math.prod(shape[1:]))
        state[f"{name}.{g_name}"] = torch.rand((shape[0],) + (1,) * (len(shape) - 1)) + 0.5
        state[f"{name}.bias"] = torch.randn(bias) * 0.1

    def linear(name: str, out: int, inp: int) -> None:
        state[f"{name}.weight"] = torch.randn(out, inp) / math.sqrt(inp)
        state[f"{name}.bias"] = torch.randn(out) * 0.1

    p = "net_diffwave."
    normed(p + "init_conv.0.conv", (res, 80, 1), res)
    linear(p + "residual_layer.fc_t1", t_mid, t_in)
    linear(p + "residual_layer.fc_t2", t_out, t_mid)
    for n in range(layers):
        b = f"{p}residual_layer.residual_blocks.{n}."
        linear(b + "fc_t", res, t_out)
        normed(b + "dilated_conv_layer.conv", (2 * res, res, 3), 2 * res)
        for m, s in enumerate(upsample):
            normed(b + f"upsample_conv2d.{m}", (1, 1, 3, 2 * s), 1)
        normed(b + "mel_conv.conv", (2 * res, cond, 1), 2 * res)
        normed(b + "res_conv", (res, res, 1), res)
        normed(b + "skip_conv", (skip, res, 1), skip)
    normed(p + "final_conv.0.conv", (skip, skip, 1), skip)
    state[p + "final_conv.2.conv.weight"] = torch.randn(80, skip, 1) * 0.01  # zero-init, then trained
    state[p + "final_conv.2.conv.bias"] = torch.randn(80) * 0.01
    # the parts that are not ported: lip encoder, face encoder, CFG null images
    state["net_lipreading.frontend3D.0.weight"] = torch.randn(24, 1, 5, 7, 7)
    state["net_lipreading.tcn.tcn_output.weight"] = torch.randn(500, 512)
    state["net_facial.fc.weight"] = torch.randn(128, 512)
    state["mouthroi_null"] = torch.randn(1, 1, 1, 88, 88)
    state["face_null"] = torch.randn(1, 3, 224, 224)
    return state


def reference_forward(state: dict[str, Tensor], x: Tensor, t: Tensor, cond_bct: Tensor, layers: int,
                      upsample: tuple[int, ...] = (2, 2)) -> Tensor:
    """LipVoicer's WaveNet forward, written from their code with their key names; cond is (B, C, T)."""
    sd = {k.removeprefix("net_diffwave."): v for k, v in state.items()}

    def w(name: str) -> Tensor:
        return torch._weight_norm(sd[f"{name}.weight_v"], sd[f"{name}.weight_g"], 0)

    half = 64
    freqs = torch.exp(torch.arange(half) * -(math.log(10000) / (half - 1)))
    emb = t.view(-1, 1).float() * freqs
    emb = torch.cat((torch.sin(emb), torch.cos(emb)), 1)
    emb = F.silu(F.linear(emb, sd["residual_layer.fc_t1.weight"], sd["residual_layer.fc_t1.bias"]))
    emb = F.silu(F.linear(emb, sd["residual_layer.fc_t2.weight"], sd["residual_layer.fc_t2.bias"]))
    h = F.relu(F.conv1d(x, w("init_conv.0.conv"), sd["init_conv.0.conv.bias"]))
    length, skip = x.shape[2], 0
    for n in range(layers):
        b = f"residual_layer.residual_blocks.{n}."
        y = h + F.linear(emb, sd[b + "fc_t.weight"], sd[b + "fc_t.bias"])[:, :, None]
        y = F.conv1d(y, w(b + "dilated_conv_layer.conv"), sd[b + "dilated_conv_layer.conv.bias"], padding=1)
        c = cond_bct[:, None]
        for m, s in enumerate(upsample):
            up = f"upsample_conv2d.{m}"
            c = F.leaky_relu(F.conv_transpose2d(c, w(b + up), sd[b + up + ".bias"], stride=(1, s),
                                                padding=(1, s // 2)), 0.4)
        c = c[:, 0, :, :length]
        y = y + F.conv1d(c, w(b + "mel_conv.conv"), sd[b + "mel_conv.conv.bias"])
        r = h.shape[1]
        out = torch.tanh(y[:, :r]) * torch.sigmoid(y[:, r:])
        res = F.conv1d(out, w(b + "res_conv"), sd[b + "res_conv.bias"])
        h = (h + res) * math.sqrt(0.5)
        skip = skip + F.conv1d(out, w(b + "skip_conv"), sd[b + "skip_conv.bias"])
    skip = skip * math.sqrt(1.0 / layers)
    out = F.relu(F.conv1d(skip, w("final_conv.0.conv"), sd["final_conv.0.conv.bias"]))
    return F.conv1d(out, sd["final_conv.2.conv.weight"], sd["final_conv.2.conv.bias"])


SMALL = dict(layers=3, res=16, skip=12, cond=24, t_mid=32, t_out=20)


def test_published_shapes_map_completely_and_run() -> None:
    state = released_state()
    model, report = import_melgen(state)
    config = model.config
    shape = (config.num_res_layers, config.res_channels, config.skip_channels, config.cond_dim,
             config.cond_channels, config.step_embed_mid, config.cond_upsample)
    assert shape == (12, 512, 512, 640, 640, 512, (2, 2))
    ours = dict(model.named_parameters())
    assert set(report.loaded) | set(report.new) == set(ours)
    assert report.new == ["null_cond"]  # the condition is theirs (640): no projection needed
    denoiser = [k for k in state if k.startswith("net_diffwave.")]
    # every denoiser tensor has a place (weight-norm pairs fold into one), bar the last unused res_conv
    assert len(report.loaded) == len(denoiser) - len([k for k in denoiser if k.endswith("_g")]) - 2
    assert "net_diffwave.residual_layer.residual_blocks.11.res_conv.weight" in report.ignored
    assert {k.split(".")[0] for k in report.ignored} == {"net_lipreading", "net_facial", "mouthroi_null",
                                                          "face_null", "net_diffwave"}
    assert "not ported" in report.summary()
    with torch.no_grad():
        eps = model(torch.randn(2, 80, 20), torch.tensor([10, 300]), torch.randn(2, 5, 640))
    assert eps.shape == (2, 80, 20) and torch.isfinite(eps).all()


def test_our_condition_size_gets_a_new_projection() -> None:
    model, report = import_melgen(released_state(**SMALL), cond_dim=10)
    assert report.new == ["cond_proj.bias", "cond_proj.weight", "null_cond"]
    assert model(torch.randn(1, 80, 8), 3, torch.randn(1, 2, 10)).shape == (1, 80, 8)


@pytest.mark.parametrize("parametrized", [False, True])
def test_imported_model_computes_what_lipvoicers_does(parametrized: bool) -> None:
    state = released_state(**SMALL, parametrized=parametrized)
    model, _ = import_melgen(state)
    # the reference reads weight_g/weight_v: the same tensors under the older names
    reference_state = {k.replace("parametrizations.weight.original0", "weight_g")
                       .replace("parametrizations.weight.original1", "weight_v"): v for k, v in state.items()}
    x, t, cond = torch.randn(2, 80, 30), torch.tensor([0, 123]), torch.randn(2, 8, 24)
    with torch.no_grad():
        ours = model(x, t, cond)
        theirs = reference_forward(reference_state, x, t, cond.transpose(1, 2), SMALL["layers"])
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def test_checkpoint_file_round_trip(tmp_path) -> None:
    state = released_state(**SMALL)
    path = tmp_path / "1000000.pkl"
    torch.save({"model_state_dict": state, "optimizer_state_dict": {"state": {}, "param_groups": []}}, path)
    loaded = load_checkpoint(path)
    assert set(loaded) == set(state)
    assert config_from_state(loaded).num_res_layers == 3
    model, _ = import_melgen(loaded)
    assert isinstance(model, MelGen)
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError):
        load_checkpoint(tmp_path / "other.pt")


def test_unknown_layouts_are_refused() -> None:
    state = released_state(**SMALL)
    state["net_diffwave.residual_layer.residual_blocks.0.new_gate.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="unknown MelGen denoiser key"):
        map_state(state)
    with pytest.raises(ValueError, match="fc_t1"):
        map_state({"net_facial.fc.weight": torch.zeros(1)})
