"""The vocoder's recipe: normalised mel of a random audio segment (the clip's own, or the mel prior's) →
waveform, multi-resolution STFT + mel L1."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from engines.params import param
from engines.train import checkpoint
from engines.train.distributed import Context, derive_seed
from engines.train.recipes.aligner import true_labels
from engines.train.recipes.common import (
    DataOptions,
    Recipe,
    RecipeError,
    batches,
    load_frozen,
    load_samples,
    source_of,
    split_name,
    summarize,
)
from engines.train.recipes.prior import clip_identities


@dataclass
class VocoderOptions:
    segment_frames: int = param(32, "mel frames per training segment (32 = 5120 samples, as HiFi-GAN's)")
    stft_weight: float = param(1.0, "weight of the multi-resolution STFT loss")
    mel_weight: float = param(1.0, "weight of the log-mel L1 loss")
    prior: str = param("", "a trained mel prior (checkpoint path or shipped name): voice its mel of each "
                           "clip, spoken on the clip's true phone timeline with the clip's identity "
                           "embedding, instead of the audio's own mel (fine-tune a trained vocoder with "
                           "init_from): the prior's mel is smoother than speech's, and a vocoder that has "
                           "only heard real mel voices it blurred")
    identity: str = param("identity", "the identity encoder the prior was trained with (with `prior`)")
    prior_fraction: float = param(1.0, "with `prior`: the share of training segments whose input is the "
                                       "prior's mel; the others keep their audio's own mel, so one vocoder "
                                       "voices both the prior's mel and MelGen's speech-like mel")


class AudioSegments(Dataset):
    """Peak-normalised random segments of the clips' reference audio, drawn from (seed, epoch, index)
    (fixed segments from the start when `seed` is None); shorter clips are zero-padded."""

    def __init__(self, clips: Sequence[Any], samples: int, seed: int | None) -> None:
        self.clips, self.samples, self.seed, self.epoch = list(clips), samples, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        from engines.audio.mel import peak_normalise
        from engines.clipsets import read_audio

        audio = peak_normalise(read_audio(self.clips[index].audio))
        spare = len(audio) - self.samples
        start = 0
        if spare > 0 and self.seed is not None:
            rng = np.random.default_rng(derive_seed(self.seed, self.epoch, index))
            start = int(rng.integers(0, spare + 1))
        out = np.zeros(self.samples, np.float32)
        part = audio[start:start + self.samples]
        out[:len(part)] = part
        return {"wav": torch.from_numpy(out)}


class PriorSegments(AudioSegments):
    """AudioSegments that start on a mel frame, each with the mel prior's mel over the same frames (`mels`:
    clip id → (80, F), the audio's own mel frames) and whether the vocoder is to hear it (`prior`, drawn
    with probability `fraction`; else the audio's own mel)."""

    def __init__(self, clips: Sequence[Any], mels: dict[str, torch.Tensor], frames: int,
                 seed: int | None, fraction: float = 1.0) -> None:
        from engines.audio.torch_mel import HOP

        super().__init__(clips, frames * HOP, seed)
        self.mels, self.frames, self.fraction = mels, frames, fraction

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        from engines.audio.mel import MELS_PER_FRAME, fit_to_frames, peak_normalise
        from engines.audio.torch_mel import HOP
        from engines.clipsets import read_audio

        clip = self.clips[index]
        prior_mel = self.mels[clip.id].float()
        # the audio as the feature cache cut it for the clip's mel (engines.data.loaders.audio_features)
        audio = fit_to_frames(peak_normalise(read_audio(clip.audio)), prior_mel.shape[1] // MELS_PER_FRAME)
        spare = prior_mel.shape[1] - self.frames
        start, use_prior = 0, True
        if self.seed is not None:
            rng = np.random.default_rng(derive_seed(self.seed, self.epoch, index))
            start = int(rng.integers(0, spare + 1)) if spare > 0 else 0
            use_prior = bool(rng.uniform() < self.fraction)
        wav = np.zeros(self.samples, np.float32)
        part = audio[start * HOP:start * HOP + self.samples]
        wav[:len(part)] = part
        mel = torch.full((prior_mel.shape[0], self.frames), -1.0)
        seg = prior_mel[:, start:start + self.frames]
        mel[:, :seg.shape[1]] = seg
        return {"wav": torch.from_numpy(wav), "mel": mel, "prior": torch.tensor(use_prior)}


def prior_mels(samples: Any, mel_prior: nn.Module, identity_encoder: nn.Module) -> dict[str, torch.Tensor]:
    """The mel prior's mel (80, F) of every clip of `samples`, spoken on its true phone timeline with its
    own identity embedding."""
    from engines.audio.mel import MELS_PER_FRAME

    known = clip_identities(samples, identity_encoder)
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for clip in samples.clips:
            identity, frames = known[clip.id]
            labels = true_labels(clip, frames, MELS_PER_FRAME)
            out[clip.id] = mel_prior(labels[None], identity[None])[0].half()
    return out


def recipe(model: nn.Module, config: Any, options: VocoderOptions, data: DataOptions, train: Any,
            ctx: Context) -> Recipe:
    from engines.audio.torch_mel import HOP, LogMel, normalize
    from engines.data.loaders import list_clips
    from engines.models.vocoder import vocoder_losses

    if not data.source:
        raise RecipeError("no training data: give --data DIR (or data.source in the config)")
    if not 0 < options.prior_fraction <= 1:
        raise RecipeError(f"prior_fraction must be in (0, 1], got {options.prior_fraction}")
    logmel = LogMel()
    n = options.segment_frames * HOP

    def losses(batch: dict[str, Any], model: nn.Module) -> dict[str, torch.Tensor]:
        wav = batch["wav"]
        logmel.to(wav.device)
        mel = normalize(logmel(wav)[..., :options.segment_frames])
        if "prior" in batch:
            mel = torch.where(batch["prior"][:, None, None], batch["mel"].to(mel.device), mel)
        return vocoder_losses(model(mel), wav, logmel, stft_weight=options.stft_weight,
                              mel_weight=options.mel_weight)

    def loss_fn(batch: dict[str, Any], model: nn.Module) -> tuple[torch.Tensor, dict[str, Any]]:
        parts = losses(batch, model)
        return parts.pop("total"), parts

    def validate(model: nn.Module) -> dict[str, float]:
        parts = [losses(batch, model) for batch in batches(val, train.batch_size, ctx.device,
                                                           torch.utils.data.default_collate)]
        return {k: float(np.mean([p[k].item() for p in parts])) for k in parts[0]}

    if options.prior:  # loaded once for both splits and the digest
        mel_prior = load_frozen(options.prior, "prior")
        identity_encoder = load_frozen(options.identity, "identity")

    def segments(split: str, limit: int, seed: int | None) -> tuple[Sequence[Any], Dataset]:
        if not options.prior:
            clips = list_clips(source_of(data), data.layout, split_name(split), limit or None)
            return clips, AudioSegments(clips, n, seed)
        samples = load_samples(data, split, limit, ctx)
        mels = prior_mels(samples, mel_prior, identity_encoder)
        fraction = options.prior_fraction if seed is not None else 1.0  # validation: the prior's mel
        return samples.clips, PriorSegments(samples.clips, mels, options.segment_frames, seed, fraction)

    clips, dataset = segments(data.split, data.limit, train.seed)
    val = segments(data.val_split, data.val_limit, None)[1] if data.val_split else None
    summary = summarize(data, clips)
    if options.prior:
        summary.update(prior=options.prior, identity=options.identity, prior_fraction=options.prior_fraction,
                       prior_digest=checkpoint.weights_digest(mel_prior))
    return Recipe(model, config, loss_fn, dataset, summary, None, validate if val is not None else None)
