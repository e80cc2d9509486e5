from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F

from engines.models.asr import ASR, ASRConfig
from engines.models.frontend import (
    VisualFrontend,
    VisualFrontendConfig,
    clip_motion,
    jitter_motion,
    normalize_roi,
    trailing_motion,
)
from engines.models.identity import IdentityConfig, IdentityEncoder
from engines.models.lipreader import LipReader, LipReaderConfig
from engines.models.melgen import CondUpsample, MelGen, MelGenConfig, join_condition, timestep_embedding
from engines.text.charset import VOCAB_SIZE, decode, encode
from engines.text.ctc import greedy_decode

TINY_FRONTEND = VisualFrontendConfig(channels=(4, 8), roi_pool=1, geometry_hidden=8, dim=16,
                                     dilations=(1, 2, 1))


def visual_inputs(batch: int, frames: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, frames, 88, 88, generator=g), torch.randn(batch, frames, 82, generator=g)



def test_frontend_shapes_and_roi_normalisation() -> None:
    model = VisualFrontend(TINY_FRONTEND).eval()
    roi, geometry = visual_inputs(2, 7)
    assert model(roi, geometry).shape == (2, 7, 16)
    assert normalize_roi(torch.full((1, 1, 88, 88), 255, dtype=torch.uint8)).max().item() == pytest.approx(
        (1 - 0.421) / 0.165)
    with pytest.raises(ValueError):
        model(roi[:, :, :80, :80], geometry)
    with pytest.raises(ValueError):
        model(roi, geometry[:, :, :10])


@pytest.mark.parametrize(("lookahead", "mean_window"), [(0, 0), (2, 0), (4, 0), (2, 5)])
def test_frontend_sees_exactly_its_receptive_field(lookahead: int, mean_window: int) -> None:
    config = dataclasses.replace(TINY_FRONTEND, lookahead_frames=lookahead, mean_window=mean_window)
    model = VisualFrontend(config).eval()
    past, future = model.receptive_field()
    assert (past, future) == (config.span - lookahead + max(mean_window - 1, 0), lookahead)
    frames, t = 30, 15
    roi, geometry = visual_inputs(1, frames)
    base = model(roi, geometry)

    def changed_at(k: int) -> torch.Tensor:
        """Outputs that differ from `base` when frame k alone is changed."""
        r, g = roi.clone(), geometry.clone()
        r[:, k] += 1.0
        g[:, k] -= 1.0
        return (model(r, g) - base).abs().amax(dim=2)[0] > 1e-6

    # Frame k changes exactly the outputs k - future ... k + past.
    for k in (t - past - 1, t - past, t, t + future, t + future + 1):
        if 0 <= k < frames:
            diff = changed_at(k)
            expected = torch.zeros(frames, dtype=torch.bool)
            expected[max(0, k - future): k + past + 1] = True
            assert torch.equal(diff, expected), f"frame {k}"


@pytest.mark.parametrize("mean_window", [0, 6])
def test_frontend_streaming_window_matches_whole_clip(mean_window: int) -> None:
    model = VisualFrontend(dataclasses.replace(TINY_FRONTEND, mean_window=mean_window)).eval()
    past, future = model.receptive_field()
    roi, geometry = visual_inputs(1, 40)
    whole = model(roi, geometry)
    frames = model.frame_features(roi, geometry)
    start, stop = 16, 22  # outputs wanted; the window adds the context the receptive field needs
    window = model.temporal(frames[:, start - past: stop + future])
    torch.testing.assert_close(window[:, past: past + stop - start], whole[:, start:stop])


def test_frontend_rejects_lookahead_beyond_its_span_and_a_mean_window_of_one_frame() -> None:
    with pytest.raises(ValueError):
        VisualFrontendConfig(dilations=(1,), kernel_size=3, lookahead_frames=3)
    for window in (-1, 1):
        with pytest.raises(ValueError, match="mean_window"):
            VisualFrontendConfig(mean_window=window)


def test_lipreader_shapes_state_and_config_round_trip() -> None:
    config = LipReaderConfig(frontend=TINY_FRONTEND, hidden=24)
    model = LipReader(config).eval()
    roi, geometry = visual_inputs(2, 10)
    out = model(roi, geometry)
    assert out.log_probs.shape == (2, 10, VOCAB_SIZE)
    assert out.visual.shape == (2, 10, 16) and out.hidden.shape == (2, 10, 24)
    assert out.state.shape == (1, 2, 24)
    torch.testing.assert_close(out.log_probs.exp().sum(-1), torch.ones(2, 10))
    first = model.read(out.visual[:, :4])
    second = model.read(out.visual[:, 4:], first.state)  # a streaming chunk carries the GRU state
    torch.testing.assert_close(torch.cat((first.log_probs, second.log_probs), 1), out.log_probs)


@pytest.mark.parametrize("config", [VisualFrontendConfig(), LipReaderConfig(frontend=TINY_FRONTEND),
                                    ASRConfig(), IdentityConfig(), MelGenConfig(), MelGenConfig.lipvoicer()])
def test_configs_survive_a_json_checkpoint(config: object) -> None:
    plain = json.loads(json.dumps(dataclasses.asdict(config)))  # tuples come back as lists
    assert type(config)(**plain) == config


def test_lipreader_overfits_one_sentence() -> None:
    config = LipReaderConfig(frontend=dataclasses.replace(TINY_FRONTEND, dim=32), hidden=64, dropout=0.0)
    model = LipReader(config)
    roi, geometry = visual_inputs(1, 20, seed=1)
    target = torch.tensor([encode("bin blue")])
    lengths = torch.tensor([20]), torch.tensor([target.shape[1]])
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):
        loss = F.ctc_loss(model(roi, geometry).log_probs.transpose(0, 1), target, *lengths)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        assert decode(greedy_decode(model(roi, geometry).log_probs[0])) == "bin blue"


def test_timestep_embedding_is_diffwaves_sinusoid() -> None:
    emb = timestep_embedding(torch.tensor([0, 1, 2.5]), 128)
    assert emb.shape == (3, 128)
    torch.testing.assert_close(emb[0], torch.cat((torch.zeros(64), torch.ones(64))))
    # frequencies 10^(-4k/63): the first is 1, the last 1e-4
    assert emb[1, 0].item() == pytest.approx(math.sin(1.0))
    assert emb[2, 63].item() == pytest.approx(math.sin(2.5e-4), rel=1e-4)
    assert emb[2, 127].item() == pytest.approx(math.cos(2.5e-4))


def test_asr_subsamples_by_four_and_hears_the_step() -> None:
    model = ASR(ASRConfig(channels=32, num_layers=2)).eval()
    mel = torch.randn(2, 80, 100, requires_grad=True)
    log_probs = model(mel, torch.tensor([0, 300]))
    assert log_probs.shape == (2, 25, VOCAB_SIZE)
    assert model(torch.randn(1, 80, 98)).shape == (1, 25, VOCAB_SIZE)
    same_mel = mel[:1].expand(2, -1, -1)
    by_step = model(same_mel, torch.tensor([0, 300]))
    assert not torch.allclose(by_step[0], by_step[1])  # the step embedding reaches the output
    # what ASR guidance needs: the CTC loss's gradient with respect to the mel
    target = torch.tensor([encode("bin blue")] * 2)
    loss = F.ctc_loss(log_probs.transpose(0, 1), target, torch.tensor([25, 25]), torch.tensor([8, 8]))
    (grad,) = torch.autograd.grad(loss, mel)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_identity_embeddings_are_unit_vectors() -> None:
    model = IdentityEncoder(IdentityConfig(channels=(8, 16))).eval()
    faces = torch.rand(3, 3, 112, 112)
    emb = model(faces)
    assert emb.shape == (3, 128)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))
    assert not torch.allclose(emb[0], emb[1])
    with pytest.raises(ValueError):
        model(torch.rand(1, 3, 96, 96))


TINY_MELGEN = MelGenConfig(num_res_layers=3, res_channels=16, skip_channels=12, step_embed_mid=32,
                           step_embed_out=32, cond_dim=20, cond_channels=20, dilation_cycle=2)


@pytest.mark.parametrize("stride", [2, 4])
def test_cond_upsample_is_lipvoicers_transposed_conv(stride: int) -> None:
    up = CondUpsample(stride)
    x = torch.randn(2, 1, 9, 6)
    expected = F.conv_transpose2d(x, up.weight, up.bias, stride=(1, stride), padding=(1, stride // 2))
    assert up(x).shape == (2, 1, 9, 6 * stride)
    torch.testing.assert_close(up(x), expected)


def test_melgen_predicts_zero_at_init_and_keeps_the_shape() -> None:
    model = MelGen(TINY_MELGEN)
    x = torch.randn(2, 80, 40)
    eps = model(x, torch.tensor([3, 399]), torch.randn(2, 10, 20))
    assert eps.shape == x.shape
    assert torch.count_nonzero(eps) == 0


def test_melgen_gradient_reaches_every_parameter() -> None:
    model = MelGen(TINY_MELGEN)
    with torch.no_grad():  # past the zero init, as after the first optimiser step
        model.final_conv.weight.normal_(std=0.1)
    x = torch.randn(2, 80, 40)
    cond = torch.cat((torch.randn(1, 10, 20), model.null_condition(1, 10)))  # one row dropped, as in CFG
    loss = (model(x, torch.tensor([5, 200]), cond) - torch.randn_like(x)).abs().mean()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_melgen_condition_paths() -> None:
    model = MelGen(TINY_MELGEN)
    with torch.no_grad():
        model.final_conv.weight.normal_(std=0.1)
    x, t = torch.randn(2, 80, 38), torch.tensor([7, 7])
    visual, identity = torch.randn(2, 10, 12), F.normalize(torch.randn(2, 8), dim=1)
    cond = join_condition(visual, identity)
    assert cond.shape == (2, 10, 20) and torch.equal(cond[:, 3, 12:], identity)
    prepared = model.prepare(cond)
    assert prepared.frames == 40  # 4 mel frames per video frame; the input may be shorter
    torch.testing.assert_close(model(x, t, prepared), model(x, t, cond))
    torch.testing.assert_close(model(x, 7, cond), model(x, t, cond))
    # CFG: conditional and null rows in one batch equal the two separate calls
    both = model(torch.cat((x[:1], x[:1])), t, torch.cat((cond[:1], model.null_condition(1, 10))))
    torch.testing.assert_close(both[1:], model(x[:1], t[:1], model.null_condition(1, 10)))
    assert not torch.allclose(both[0], both[1])
    with pytest.raises(ValueError):
        model(torch.randn(2, 80, 44), t, cond)  # longer than the condition
    with pytest.raises(ValueError):
        model(x, t, torch.randn(2, 10, 21))


def test_melgen_projects_a_condition_of_another_size() -> None:
    model = MelGen(dataclasses.replace(TINY_MELGEN, cond_dim=9))
    assert isinstance(model.cond_proj, torch.nn.Linear) and model.null_cond.shape == (9,)
    assert model(torch.randn(1, 80, 8), 1, torch.randn(1, 2, 9)).shape == (1, 80, 8)
    fixed = MelGen(dataclasses.replace(TINY_MELGEN, learned_null=False))
    assert "null_cond" not in dict(fixed.named_parameters())


def test_melgen_lipvoicer_size() -> None:
    config = MelGenConfig.lipvoicer()
    assert (config.num_res_layers, config.res_channels, config.cond_dim) == (12, 512, 640)
    with torch.device("meta"):  # shapes only: no memory for 37 M weights
        model = MelGen(config)
    wavenet = sum(p.numel() for name, p in model.named_parameters() if name != "null_cond")
    # LipVoicer's wavenet, ≈ 36.9 M (papers.md §1.1), less its last layer's unused residual 1×1
    assert wavenet + 512 * 512 + 512 == 36_893_064
    with pytest.raises(ValueError):
        MelGenConfig(cond_upsample=(2, 4))


def test_melgen_predicting_x0_returns_the_eps_of_its_clean_estimate() -> None:
    from engines.diffusion.sampling import diffusion_loss
    from engines.diffusion.schedule import DiffusionSchedule

    torch.manual_seed(0)
    model = MelGen(MelGenConfig(prediction="x0", num_res_layers=2, res_channels=8, skip_channels=8,
                                cond_dim=16, cond_channels=16))
    torch.nn.init.normal_(model.final_conv.weight)
    raw: dict[str, torch.Tensor] = {}

    def keep(module: torch.nn.Module, inputs: object, out: torch.Tensor) -> None:
        raw["x0"] = out

    model.final_conv.register_forward_hook(keep)
    x_t, cond, t = torch.randn(2, 80, 40), torch.randn(2, 10, 16), torch.tensor([3.5, 250.0])
    eps = model(x_t, t, cond)
    ab = DiffusionSchedule().alpha_bar_at(t).float().reshape(-1, 1, 1)
    torch.testing.assert_close((x_t - (1 - ab).sqrt() * eps) / ab.sqrt(), raw["x0"], atol=1e-4, rtol=1e-4)
    # the x0 loss measures the network's own output against the data
    x0 = torch.randn(2, 80, 40)
    generator = torch.Generator().manual_seed(1)
    loss = diffusion_loss(model, x0, cond, DiffusionSchedule(), 0.0, None, "l1", generator=generator,
                          target="x0")
    generator = torch.Generator().manual_seed(1)
    diffusion_loss(model, x0, cond, DiffusionSchedule(), 0.0, None, "l1", generator=generator)
    assert loss.item() == pytest.approx((raw["x0"] - x0).abs().mean().item(), rel=1e-3)


def test_a_deeper_melgen_grows_from_a_trained_one_as_the_same_function() -> None:
    torch.manual_seed(0)
    small = MelGen(TINY_MELGEN).eval()
    with torch.no_grad():  # past the zero init, so the output means something
        small.final_conv.weight.normal_(std=0.1)
    deep = MelGen(dataclasses.replace(small.config, num_res_layers=small.config.num_res_layers + 3)).eval()
    config = json.loads(json.dumps(dataclasses.asdict(small.config)))  # as a checkpoint holds it
    deep.load_state_dict(deep.adopt_weights(small.state_dict(), config))
    x, t, cond = torch.randn(2, 80, 40), torch.tensor([3.0, 300.0]), torch.randn(2, 10, 20)
    torch.testing.assert_close(deep(x, t, cond), small(x, t, cond), atol=1e-5, rtol=1e-4)
    for other in (dataclasses.replace(small.config, res_channels=16), small.config):
        with pytest.raises(ValueError, match="deeper"):
            MelGen(other).adopt_weights(small.state_dict(), config)  # wider, or not deeper


def test_a_lipreader_with_a_mean_window_starts_from_one_without() -> None:
    plain = LipReader(LipReaderConfig(frontend=TINY_FRONTEND, hidden=24))
    config = json.loads(json.dumps(dataclasses.asdict(plain.config)))  # as a checkpoint holds it
    normed = LipReader(LipReaderConfig(frontend=dataclasses.replace(TINY_FRONTEND, mean_window=8), hidden=24))
    normed.load_state_dict(normed.adopt_weights(plain.state_dict(), config))
    for name, weight in plain.state_dict().items():
        torch.testing.assert_close(normed.state_dict()[name], weight)
    wider = LipReader(LipReaderConfig(frontend=TINY_FRONTEND, hidden=32))
    with pytest.raises(ValueError, match="mean_window"):
        wider.adopt_weights(plain.state_dict(), config)


def test_a_mean_window_removes_whatever_every_frame_shares() -> None:
    torch.manual_seed(0)
    model = VisualFrontend(dataclasses.replace(TINY_FRONTEND, mean_window=5)).eval()
    roi, geometry = visual_inputs(1, 20)
    frames = model.frame_features(roi, geometry)
    look = torch.randn(1, 1, frames.shape[2])  # a face's static look, as the per-frame features hold it
    torch.testing.assert_close(model.temporal(frames + look), model.temporal(frames), atol=1e-5, rtol=1e-4)
    plain = VisualFrontend(TINY_FRONTEND).eval()
    assert not torch.allclose(plain.temporal(frames + look), plain.temporal(frames), atol=1e-3)


def test_clip_motion_keeps_how_each_clip_moves_whatever_its_gain_and_offset() -> None:
    roi, geometry = visual_inputs(2, 9, seed=3)
    motion = clip_motion(roi)
    # another light, another camera (equal up to the scale's eps)
    assert torch.allclose(clip_motion(roi * 3.0 + 5.0), motion, rtol=2e-3, atol=1e-3)
    smaller = clip_motion(geometry * 0.5)  # a smaller mouth
    assert torch.allclose(smaller, clip_motion(geometry), rtol=2e-3, atol=1e-3)
    # each clip on its own scale: the clip's median frame is 0, 90 % of its frames within about one unit
    assert motion[0].median(dim=0).values.abs().max() < 1e-5
    rms = motion.reshape(2, 9, -1).square().mean(dim=2).sqrt()
    assert torch.allclose(torch.quantile(rms, 0.9, dim=1), torch.ones(2), atol=0.01)
    still = clip_motion(torch.ones(1, 5, 4, 4))
    assert torch.equal(still, torch.zeros_like(still))  # no motion stays no motion, not noise blown up


def test_span_motion_ignores_how_long_the_face_is_still_before_and_after() -> None:
    roi, geometry = visual_inputs(1, 12, seed=7)

    def hold(x: torch.Tensor, before: int, after: int) -> torch.Tensor:
        return torch.cat((x[:, :1].expand(1, before, *x.shape[2:]), x,
                          x[:, -1:].expand(1, after, *x.shape[2:])), 1)

    for x in (roi, geometry):
        long, short = hold(x, 30, 20), hold(x, 3, 4)
        assert torch.allclose(clip_motion(long, span=True)[:, 30:42], clip_motion(short, span=True)[:, 3:15],
                              atol=1e-5)
        assert not torch.allclose(clip_motion(long)[:, 30:42], clip_motion(short)[:, 3:15], atol=1e-2)
    still = clip_motion(torch.ones(1, 5, 4, 4), span=True)
    assert torch.equal(still, torch.zeros_like(still))


def test_trailing_motion_looks_only_back_over_its_window_whatever_the_gain_and_offset() -> None:
    roi, geometry = visual_inputs(2, 20, seed=8)
    for x in (roi, geometry):
        motion = trailing_motion(x, 6)
        assert torch.allclose(trailing_motion(x * 3.0 + 5.0, 6), motion, rtol=2e-3, atol=1e-3)
        later = x.clone()
        later[:, 12:] = 9.0  # what comes later changes nothing before it
        assert torch.allclose(trailing_motion(later, 6)[:, :12], motion[:, :12], atol=1e-6)
        earlier = x.clone()
        earlier[:, :6] = -4.0  # nor does what left the window: frame 11 looks back over frames 6..11
        assert torch.allclose(trailing_motion(earlier, 6)[:, 11:], motion[:, 11:], atol=1e-6)
        # the kept inputs before a stream's new frames give them what the whole clip gives
        assert torch.allclose(trailing_motion(x[:, 9:], 6, context=5), motion[:, 14:], atol=1e-6)
        # no frame moves more than its window's largest motion: a start after stillness stays in bounds
        rms = motion.reshape(2, 20, -1).square().mean(dim=2).sqrt()
        assert rms.max() <= 1.0 + 1e-6
    still = trailing_motion(torch.ones(1, 5, 4, 4), 3)
    assert torch.equal(still, torch.zeros_like(still))
    # a mouth nearly still after moving a lot, away from the origin: float32 keeps its small motion
    settling = torch.randn(1, 40, 88, 88, generator=torch.Generator().manual_seed(3)) * 0.01
    settling[:, :10] *= 300.0
    settling += 5.0
    exact = trailing_motion(settling.double(), 6)
    assert exact[:, 20:].abs().amax() > 1.0  # the small motion, in units of its own window
    assert torch.allclose(trailing_motion(settling, 6).double(), exact, atol=2e-3)
    padded = roi.clone()
    padded[1, 15:] = 7.0
    out = trailing_motion(padded, 6, torch.tensor([20, 15]))
    assert torch.allclose(out[1, :15], trailing_motion(roi[1:, :15], 6)[0], atol=1e-6)
    assert torch.equal(out[1, 15:], torch.zeros_like(out[1, 15:]))


def test_only_a_trailing_front_end_takes_context_frames() -> None:
    roi, geometry = visual_inputs(1, 10, seed=9)
    trailing = VisualFrontend(dataclasses.replace(TINY_FRONTEND, normalise="trailing", normalise_window=4))
    trailing.eval()
    whole = trailing.frame_features(roi, geometry)
    kept = trailing.frame(*trailing.normalise_inputs(roi[:, 3:], geometry[:, 3:], context=3))
    torch.testing.assert_close(kept, whole[:, 6:], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="only normalise trailing"):
        VisualFrontend(TINY_FRONTEND).normalise_inputs(roi, geometry, context=3)
    with pytest.raises(ValueError, match="normalise_window"):
        dataclasses.replace(TINY_FRONTEND, normalise_window=0)


def test_a_reader_fine_tunes_onto_another_normalisation_and_nothing_else() -> None:
    from engines.train.checkpoint import config_dict

    clip = LipReaderConfig(frontend=dataclasses.replace(TINY_FRONTEND, normalise="clip"), hidden=8)
    weights = LipReader(clip).state_dict()
    span = LipReader(dataclasses.replace(clip, frontend=dataclasses.replace(clip.frontend, normalise="span")))
    span.load_state_dict(span.adopt_weights(weights, config_dict(clip)))
    wider = LipReader(dataclasses.replace(clip, hidden=16))
    with pytest.raises(ValueError, match="only the front end's mean_window, normalise"):
        wider.adopt_weights(weights, config_dict(clip))


def test_clip_motion_of_a_padded_batch_equals_each_clip_alone() -> None:
    roi, _ = visual_inputs(2, 8, seed=4)
    padded = roi.clone()
    padded[1, 5:] = 7.0  # a shorter clip padded with anything
    out = clip_motion(padded, torch.tensor([8, 5]))
    assert torch.allclose(out[1, :5], clip_motion(roi[1:, :5])[0], atol=1e-5)
    assert torch.equal(out[1, 5:], torch.zeros_like(out[1, 5:]))
    assert torch.allclose(out[0], clip_motion(roi[:1])[0], atol=1e-5)


def test_motion_jitter_scales_each_clip_as_one_and_leaves_padding_and_evaluation_alone() -> None:
    roi, geometry = visual_inputs(2, 8, seed=6)
    torch.manual_seed(0)
    lengths = torch.tensor([8, 5])
    scaled_roi, scaled_geometry = jitter_motion((roi, geometry), lengths, gain=0.5, noise=0.0)
    for b, n in enumerate(lengths.tolist()):
        factor = scaled_roi[b, :n] / roi[b, :n]
        assert torch.allclose(factor, factor.flatten()[0].expand_as(factor))  # one factor per clip...
        assert torch.allclose(scaled_geometry[b, :n] / geometry[b, :n], factor.flatten()[0].expand(n, 82))
        assert 0.6 < factor.flatten()[0] < 1.65  # ...within e^±0.5 (...for both inputs)
    assert torch.equal(scaled_roi[1, 5:], torch.zeros_like(scaled_roi[1, 5:]))
    noisy, = jitter_motion((torch.zeros(1, 400, 4, 4),), None, gain=0.0, noise=0.1)
    assert abs(noisy.std().item() - 0.1) < 0.01
    frontend = VisualFrontend(dataclasses.replace(TINY_FRONTEND, normalise="clip", motion_gain=0.3,
                                                  motion_noise=0.05))
    with torch.no_grad():
        assert torch.equal(frontend.eval()(roi, geometry), frontend(roi, geometry))  # only in training
        assert not torch.equal(frontend.train().frame_features(roi, geometry),
                               frontend.eval().frame_features(roi, geometry))


def test_a_clip_normalised_reader_reads_a_padded_batch_as_each_clip_alone() -> None:
    reader = LipReader(LipReaderConfig(frontend=dataclasses.replace(TINY_FRONTEND, normalise="clip"),
                                       hidden=8)).eval()
    roi, geometry = visual_inputs(2, 10, seed=5)
    with torch.no_grad():
        batch = reader(roi, geometry, lengths=torch.tensor([10, 6])).log_probs
        alone = reader(roi[1:, :6], geometry[1:, :6]).log_probs
    inside = 6 - reader.frontend.receptive_field()[1]  # later outputs look ahead into the padding
    assert torch.allclose(batch[1, :inside], alone[0, :inside], atol=1e-5)
    with pytest.raises(ValueError, match="normalise"):
        VisualFrontendConfig(normalise="frame")
