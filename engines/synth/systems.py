"""Our models as `voxsight eval` systems (engines.eval.systems.System), e.g.

    voxsight eval CORPUS --split test --system engines.synth.systems:lip2speech,nfe=4,w2=0
    voxsight eval CORPUS --split test --system engines.synth.systems:vocoder

Video features come from the training feature cache when `cache` names it (a clip's features are then
never tracked twice), else the tracker runs on the clip's video.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from engines.clipsets import Clip


def _features(clip: Clip, cache: str | None) -> dict[str, np.ndarray]:
    from engines.data.cache import FeatureCache
    from engines.data.loaders import FEATURES_VERSION, extract, track_video

    if clip.video is None:
        raise ValueError(f"clip {clip.id} has no video")
    if not cache:
        return track_video(clip.video)
    files = [clip.video] if clip.audio == clip.video else [clip.video, clip.audio]
    from engines.data.loaders import ClipRef

    ref = ClipRef(clip.id, "list", clip.video, clip.audio, clip.text, clip.speaker, clip.speaker)
    return FeatureCache(Path(cache), FEATURES_VERSION).get(files, lambda: extract(ref))


class Lip2Speech:
    """The offline synthesizer on each clip's video; `texts` keeps the lip-read text per clip."""

    def __init__(self, synthesizer: Any, cache: str | None, name: str) -> None:
        self.synthesizer, self.cache, self.name = synthesizer, cache, name
        self.about = f"lip2speech {synthesizer.params} on {synthesizer.models.describe()}"
        self.texts: dict[str, str] = {}
        self.seconds: dict[str, float] = {}
        self.speech_s = 0.0

    def generate(self, clip: Clip) -> np.ndarray:
        from engines.synth.engine import Features

        result = self.synthesizer.synthesize(Features.from_tracks(_features(clip, self.cache)))
        self.texts[clip.id] = result.text
        for stage, s in result.seconds.items():
            self.seconds[stage] = self.seconds.get(stage, 0.0) + s
        self.speech_s += result.duration_s
        return result.wav


def lip2speech(lipreader: str = "lipreader", melgen: str = "melgen", identity: str = "identity",
               asr: str = "asr", vocoder: str = "vocoder", cache: str = "", **params: Any) -> Lip2Speech:
    """Factory: model names or checkpoint paths, then any SynthParams field (nfe, w1, w2, sampler, ...)."""
    from engines.synth.engine import Synthesizer, SynthParams
    from engines.synth.models import SynthModels

    known = {f.name for f in dataclasses.fields(SynthParams)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"unknown lip2speech options {unknown}; known: {sorted(known)}")
    models = SynthModels.load(lipreader, melgen, identity, asr or None, vocoder)
    return Lip2Speech(Synthesizer(models, SynthParams(**params)), cache or None, "generated")


class Resynthesis:
    """The reference's mel through our vocoder (the eval's vocoder row, with trained weights)."""

    name = "vocoder (ours)"

    def __init__(self, weights: str) -> None:
        from engines.train.checkpoint import load_ref

        self.model = load_ref(weights, "vocoder").model.eval()
        self.about = f"reference → log-mel → our vocoder ({weights})"

    def generate(self, clip: Clip) -> np.ndarray:
        import torch

        from engines.audio.mel import log_mel, normalise, peak_normalise

        reference = clip.reference()
        mel = normalise(log_mel(peak_normalise(reference)))
        with torch.no_grad():
            wav = self.model(torch.from_numpy(mel)[None])[0].numpy()
        return wav[:len(reference)]


def vocoder(weights: str = "vocoder") -> Resynthesis:
    return Resynthesis(weights)
