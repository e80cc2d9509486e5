"""Learned quality judges: DNSMOS (speechmos's bundled ONNX models) and silero-vad agreement.

DNSMOS: SIG (speech), BAK (background), OVRL and P.808 MOS, non-personalised; speechmos loops a clip
shorter than 9 s until it is 9 s long, as the DNS challenge's own script does.
VAD agreement: silero-vad (ONNX, bundled) speech probability per 32 ms window of the generated and of
the reference audio, thresholded at 0.5; the fraction of windows where the two decisions agree.
"""

from __future__ import annotations

import warnings

import numpy as np

from engines.eval import mel
from engines.eval.judges.base import Judge, Metric, RefClip, Scores, fit

VAD_THRESHOLD = 0.5


class Dnsmos(Judge):
    name = "dnsmos"
    metrics = (
        Metric("dnsmos_sig", "DNSMOS SIG", "higher"),
        Metric("dnsmos_bak", "DNSMOS BAK", "higher"),
        Metric("dnsmos_ovrl", "DNSMOS OVRL", "higher"),
        Metric("dnsmos_p808", "DNSMOS P.808", "higher", table=False),
    )

    def score(self, audio: np.ndarray, ref: RefClip) -> Scores:
        from speechmos import dnsmos

        result = dnsmos.run(np.clip(audio, -1.0, 1.0).astype(np.float32), mel.SAMPLE_RATE)
        return {"dnsmos_sig": float(result["sig_mos"]), "dnsmos_bak": float(result["bak_mos"]),
                "dnsmos_ovrl": float(result["ovrl_mos"]), "dnsmos_p808": float(result["p808_mos"])}


class VadAgreement(Judge):
    name = "vad"
    metrics = (
        Metric("vad_agreement", "VAD agree", "higher", group="match"),
        Metric("vad_speech", "speech fraction", "", table=False, group="match"),
    )

    def __init__(self) -> None:
        self._model = None

    def speech(self, audio: np.ndarray) -> np.ndarray:
        """Per 32 ms window: is it speech?"""
        import torch

        if self._model is None:
            from silero_vad import load_silero_vad

            with warnings.catch_warnings():  # its own use of a deprecated importlib.resources call
                warnings.simplefilter("ignore", DeprecationWarning)
                self._model = load_silero_vad(onnx=True)
        probability = self._model.audio_forward(torch.from_numpy(np.ascontiguousarray(audio, np.float32)),
                                                mel.SAMPLE_RATE)
        return probability.numpy()[0] > VAD_THRESHOLD

    def score(self, audio: np.ndarray, ref: RefClip) -> Scores:
        reference = ref.memo("vad", lambda: self.speech(ref.audio))
        generated = self.speech(fit(audio, len(ref.audio)))
        return {"vad_agreement": float(np.mean(generated == reference)),
                "vad_speech": float(generated.mean())}
