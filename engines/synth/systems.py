"""Our models as `voxsight eval` systems (engines.eval.systems.System), e.g.

    voxsight eval CORPUS --split test --system engines.synth.systems:lip2speech,nfe=4,w2=0
    voxsight eval CORPUS --split test --system engines.synth.systems:lip2speech_stream,nfe=4,hop_frames=5
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
from engines.synth.models import DEFAULT_ALIGNER, DEFAULT_TEXT_READER


def clip_features(clip: Clip, cache: str | None) -> dict[str, np.ndarray]:
    """A clip's tracked face (engines.data.loaders.track_video's arrays), from the feature cache if given."""
    from engines.data.cache import FeatureCache
    from engines.data.loaders import FEATURES_VERSION, ClipRef, extract, track_video

    if clip.video is None:
        raise ValueError(f"clip {clip.id} has no video")
    if not cache:
        return track_video(clip.video)
    ref = ClipRef(clip.id, "list", clip.video, clip.audio, clip.text, clip.speaker, clip.speaker)
    return FeatureCache(Path(cache), FEATURES_VERSION).get(ref.files, lambda: extract(ref))


class Lip2Speech:
    """The offline synthesizer on each clip's video; `texts` keeps the lip-read text per clip. With
    `guide_reference`, a diagnostic row, never a system a user can run: ASR guidance steers toward the clip's
    reference text instead of the lip-read one (how far guidance gets with every word right)."""

    def __init__(self, synthesizer: Any, cache: str | None, name: str, guide_reference: bool = False) -> None:
        self.synthesizer, self.cache, self.name = synthesizer, cache, name
        self.guide_reference = guide_reference
        target = ", guided toward the reference text" if guide_reference else ""
        self.about = f"lip2speech {synthesizer.params}{target} on {synthesizer.models.describe()}"
        self.texts: dict[str, str] = {}
        # fallbacks and doubts (engines.synth.engine.Synthesizer.doubt), moved into the eval report's problems
        # after each clip
        self.notes: list[str] = []
        self.seconds: dict[str, float] = {}
        self.speech_s = 0.0

    def generate(self, clip: Clip) -> np.ndarray:
        from engines.synth.engine import Features

        if self.guide_reference and not clip.text:
            raise ValueError(f"clip {clip.id} has no reference text to guide toward")
        guide = clip.text if self.guide_reference else None
        result = self.synthesizer.synthesize(Features.from_tracks(clip_features(clip, self.cache)), guide)
        self.texts[clip.id] = result.text
        self.notes += [note for note in (result.note, result.doubt) if note]
        for stage, s in result.seconds.items():
            self.seconds[stage] = self.seconds.get(stage, 0.0) + s
        self.speech_s += result.duration_s
        return result.wav


def lip2speech(lipreader: str = "lipreader", melgen: str = "melgen", identity: str = "identity",
               asr: str = "asr", vocoder: str = "vocoder", cache: str = "", guide: str = "lipread",
               aligner: str = DEFAULT_ALIGNER, prior: str = "prior", text_reader: str = DEFAULT_TEXT_READER,
               **params: Any) -> Lip2Speech:
    """Factory: model names or checkpoint paths (the ASR only for w2 > 0; aligner and prior, both or
    neither ('' for none), to speak the lip-read text; `text_reader`, the lip reader that reads the
    text, '' for `lipreader` itself, then with aligner=aligner), `guide` (ASR guidance toward the
    lip-read text, or toward the clip's `reference` text: the diagnostic row, also the text the prior
    speaks), then any SynthParams field (nfe, w1, w2, sampler, prior_mode, voice, ...)."""
    if guide not in ("lipread", "reference"):
        raise ValueError(f"guide must be 'lipread' or 'reference', got {guide!r}")
    from engines.synth.engine import Synthesizer, SynthParams
    from engines.synth.models import SynthModels

    known = {f.name for f in dataclasses.fields(SynthParams)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"unknown lip2speech options {unknown}; known: {sorted(known)}")
    synth_params = SynthParams(**params)
    models = SynthModels.load(lipreader, melgen, identity, asr if asr and synth_params.w2 else None, vocoder,
                              aligner=aligner or None, prior=prior or None, text_reader=text_reader or None)
    return Lip2Speech(Synthesizer(models, synth_params), cache or None, "generated", guide == "reference")


class StreamedLip2Speech(Lip2Speech):
    """The streaming synthesizer fed each clip's features frame by frame, as the live node feeds it; the
    clip's text is its utterances' final texts."""

    def __init__(self, streamer: Any, cache: str | None, name: str) -> None:
        super().__init__(streamer.synthesizer, cache, name)
        self.streamer = streamer
        self.about = f"lip2speech streamed {streamer.params}, {self.about.removeprefix('lip2speech ')}"

    def generate(self, clip: Clip) -> np.ndarray:
        from engines.synth.engine import Features
        from engines.synth.streaming import frames_of, stream

        chunks = stream(self.streamer, frames_of(Features.from_tracks(clip_features(clip, self.cache))))
        self.texts[clip.id] = " ".join(c.text for c in chunks if c.final_text and c.text)
        for chunk in chunks:
            for stage, s in chunk.seconds.items():
                self.seconds[stage] = self.seconds.get(stage, 0.0) + s
        wav = np.concatenate([c.wav for c in chunks])
        self.speech_s += len(wav) / 16000
        return wav


def lip2speech_stream(lipreader: str = "lipreader", melgen: str = "melgen", identity: str = "identity",
                      asr: str = "asr", vocoder: str = "vocoder", cache: str = "", aligner: str = "aligner",
                      prior: str = "prior", text_reader: str = DEFAULT_TEXT_READER,
                      **params: Any) -> StreamedLip2Speech:
    """Factory: as `lip2speech` (the aligner one trained on `lipreader`, the streaming reader; the text reader
    reads each ended utterance again, as the live node's does), plus any StreamParams field (hop_frames,
    lookahead_frames, ...; partial_text_s 0 unless given)."""
    from engines.synth.engine import Synthesizer, SynthParams
    from engines.synth.models import SynthModels
    from engines.synth.streaming import StreamingSynthesizer, StreamParams

    kinds = {kind: {f.name for f in dataclasses.fields(kind)} for kind in (SynthParams, StreamParams)}
    unknown = sorted(set(params).difference(*kinds.values()))
    if unknown:
        raise ValueError(f"unknown lip2speech_stream options {unknown}; known: "
                         f"{sorted(set().union(*kinds.values()))}")
    # the eval scores final texts: partial readings, unless asked for, would be compute thrown away (the
    # speech is the same either way)
    params = {"partial_text_s": 0.0, **params}
    synth_params, stream_params = (kind(**{k: v for k, v in params.items() if k in names})
                                   for kind, names in kinds.items())
    models = SynthModels.load(lipreader, melgen, identity, asr if asr and synth_params.w2 else None, vocoder,
                              aligner=aligner or None, prior=prior or None, text_reader=text_reader or None)
    streamer = StreamingSynthesizer(Synthesizer(models, synth_params), stream_params)
    return StreamedLip2Speech(streamer, cache or None, "streamed")


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
