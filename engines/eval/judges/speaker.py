"""Speaker identification: is each generated voice closer to its own speaker's reference than to the
other speakers' references?

Embedding: the long-term average spectrum and its spread — per bin of the judge's log-mel (mel.py), the
mean minus its mean over the bins (so the level does not matter) and the standard deviation, over the
frames within 30 dB of the clip's loudest: the classic text-independent voice summary (vocal tract
and voice quality), cheap and with no trained weights. Every embedding is centred on the mean of all
reference embeddings (what the speakers have in common) before cosine similarity; a speaker's model is
the mean of its reference clips' embeddings (a clip with no known speaker is its own speaker, see
clips.py). It is a voice-match test for clean outputs: broadband noise fills the spectrum and can move
a voice towards another speaker (MFCC means and spreads were tried first: Griffin-Lim resynthesis of a
reference already fooled them).

Per clip: `spk_id` 1 when its own speaker's model is the most similar, else 0 (silent output: 0);
`spk_margin` = similarity to its own speaker − the best other speaker's. Needs two speakers or more,
else NaN.
"""

from __future__ import annotations

import numpy as np

from engines.eval import mel
from engines.eval.judges.base import Judge, Metric, RefClip, Scores

NAN = float("nan")
FLOOR_DB = 30.0
MIN_FRAMES = 10


def embedding(audio: np.ndarray) -> np.ndarray | None:
    """The (160,) embedding of the module docstring; None for silence (nothing above the mel floor)."""
    log_mel = mel.log_mel(audio)
    loudness = log_mel.mean(axis=0)
    floor = np.log(mel.LOG_FLOOR)
    frames = log_mel[:, (loudness > loudness.max() - FLOOR_DB / 20 * np.log(10)) & (loudness > floor + 1.0)]
    if frames.shape[1] < MIN_FRAMES:
        return None
    spectrum = frames.mean(axis=1)
    return np.concatenate([spectrum - spectrum.mean(), frames.std(axis=1)])


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


class SpeakerId(Judge):
    name = "speaker"
    metrics = (
        Metric("spk_id", "speaker ID", "higher", 1, percent=True, group="match"),
        Metric("spk_margin", "speaker margin", "higher", table=False, group="match"),
    )

    def score(self, audio: np.ndarray, ref: RefClip) -> Scores:
        ref.memo("speaker", lambda: embedding(ref.audio))
        return {"_spk_embedding": embedding(audio)}

    def finish(self, rows: dict[str, dict[str, Scores]], refs: dict[str, RefClip]) -> None:
        references = {cid: r.cache.get("speaker") for cid, r in refs.items()}
        references = {cid: e for cid, e in references.items() if e is not None}
        speakers: dict[str, list[np.ndarray]] = {}
        for cid, e in references.items():
            speakers.setdefault(refs[cid].clip.speaker_key, []).append(e)
        if len(speakers) < 2:
            for row in rows.values():
                for scores in row.values():
                    scores.update(spk_id=NAN, spk_margin=NAN)
            return
        centre = np.mean(list(references.values()), axis=0)
        models = {s: np.mean(es, axis=0) - centre for s, es in speakers.items()}
        for row in rows.values():
            for cid, scores in row.items():
                generated = scores.get("_spk_embedding")
                own = refs[cid].clip.speaker_key
                if generated is None or own not in models:
                    scores.update(spk_id=0.0 if own in models else NAN, spk_margin=NAN)
                    continue
                similarity = {s: _cosine(generated - centre, m) for s, m in models.items()}
                best_other = max(v for s, v in similarity.items() if s != own)
                scores.update(spk_id=float(similarity[own] > best_other),
                              spk_margin=similarity[own] - best_other)
