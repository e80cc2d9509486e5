"""The judges that synthetic signals can check (the learned ones are checked on real speech in
test_eval_degradations.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engines.eval import mel
from engines.eval.clips import Clip
from engines.eval.judges import RefClip, fit, make_judges
from engines.eval.judges.signal import EnergyMae, Pitch, Stoi, f0_stats
from engines.eval.judges.speaker import SpeakerId
from engines.eval.judges.sync import av_offset

RATE = 16000


def voice(f0: float, formants: tuple[float, ...], seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """A vowel-like harmonic complex with a slow F0 glide, gated into syllables: a stand-in speaker."""
    t = np.arange(int(seconds * RATE)) / RATE
    pitch = f0 * (1 + 0.05 * np.sin(2 * np.pi * 1.5 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / RATE
    signal = np.zeros_like(t)
    for k in range(1, int(4000 / f0)):
        gain = sum(np.exp(-(((k * f0) - f) / 150.0) ** 2) for f in formants) + 0.02
        signal += gain * np.sin(k * phase)
    gate = (np.sin(2 * np.pi * 3 * t + np.random.default_rng(seed).uniform(0, 1)) > -0.3).astype(float)
    envelope = np.convolve(gate, np.ones(400) / 400, "same")
    return (0.3 * signal * envelope / np.abs(signal).max()).astype(np.float32)


def ref_of(audio: np.ndarray, clip_id: str = "c", speaker: str | None = None) -> RefClip:
    return RefClip(Clip(clip_id, Path(f"{clip_id}.wav"), speaker=speaker), audio)


def test_av_offset_finds_a_known_lag() -> None:
    rng = np.random.default_rng(1)
    frames = np.convolve(rng.random(100), np.ones(3) / 3, "same")  # 4 s of mouth opening at 25 fps
    times = np.arange(100) / 25
    envelope_times = np.arange(400) / mel.FRAME_RATE
    for lag_ms in (120.0, -80.0, 0.0):
        envelope = np.interp(envelope_times - lag_ms / 1000, times, frames) + rng.normal(0, 0.01, 400)
        offset, corr = av_offset(times, frames, envelope)
        assert offset == pytest.approx(lag_ms, abs=10)
        assert corr > 0.9


def test_av_offset_needs_a_face_and_a_moving_envelope() -> None:
    times = np.arange(100) / 25
    opening = np.random.default_rng(2).random(100)
    assert np.isnan(av_offset(times, opening, np.full(400, -11.5))[0])  # silence: nothing to align
    opening[:60] = np.nan  # the face was found in 40 % of the frames
    assert np.isnan(av_offset(times, opening, np.random.default_rng(3).random(400))[0])


def test_f0_of_low_and_high_voices() -> None:
    low, high = voice(110, (700, 1200)), voice(220, (700, 1200))
    median, spread = f0_stats(low)
    assert median == pytest.approx(110, rel=0.03)
    assert 0.5 < spread < 2.5  # ±5 % glide ≈ 1.7 semitones
    scores = Pitch().score(high, ref_of(low))
    assert scores["f0_err_st"] == pytest.approx(12.0, abs=0.5)
    assert np.isnan(f0_stats(np.zeros(RATE, np.float32))[0])


def test_energy_mae() -> None:
    sound = np.random.default_rng(0).normal(0, 0.1, RATE).astype(np.float32)  # every mel bin above the floor
    judge = EnergyMae()
    assert judge.score(sound, ref_of(sound))["energy_mae"] == 0.0
    assert judge.score(0.5 * sound, ref_of(sound))["energy_mae"] == pytest.approx(np.log(2), abs=0.01)
    assert judge.score(np.zeros_like(sound), ref_of(sound))["energy_mae"] > 5


def test_stoi_of_itself_and_of_noise() -> None:
    speech = voice(150, (500, 1500))
    ref = ref_of(speech)
    assert Stoi().score(speech, ref)["stoi"] == pytest.approx(1.0, abs=1e-6)
    noise = np.random.default_rng(0).normal(0, np.sqrt(np.mean(speech**2)), len(speech))
    noisy = (speech + noise).astype(np.float32)
    scores = Stoi().score(noisy, ref)
    assert scores["stoi"] < 0.9 and scores["estoi"] < scores["stoi"]


def test_speaker_identification() -> None:
    voices = {"a": voice(110, (600, 1100, 2400)), "b": voice(210, (850, 1600, 2900)),
              "c": voice(150, (400, 2000))}
    refs = {cid: ref_of(audio, cid, speaker=cid.upper()) for cid, audio in voices.items()}
    judge = SpeakerId()
    rows: dict[str, dict] = {"same": {}, "quieter and later": {}, "swapped": {}, "silent": {}}
    for cid, audio in voices.items():
        other = voices["b" if cid != "b" else "a"]
        rows["same"][cid] = judge.score(audio, refs[cid])
        rows["quieter and later"][cid] = judge.score(0.3 * np.roll(audio, 3200), refs[cid])
        rows["swapped"][cid] = judge.score(other, refs[cid])
        rows["silent"][cid] = judge.score(np.zeros_like(audio), refs[cid])
    judge.finish(rows, refs)
    ids = {row: [v["spk_id"] for v in values.values()] for row, values in rows.items()}
    assert ids == {"same": [1, 1, 1], "quieter and later": [1, 1, 1], "swapped": [0, 0, 0],
                   "silent": [0, 0, 0]}
    assert all(v["spk_margin"] > 0.5 for v in rows["same"].values())


def test_speaker_identification_needs_two_speakers() -> None:
    audio = voice(120, (700, 1200))
    refs = {"a": ref_of(audio, "a", "S"), "b": ref_of(audio, "b", "S")}
    judge = SpeakerId()
    rows = {"x": {cid: judge.score(audio, r) for cid, r in refs.items()}}
    judge.finish(rows, refs)
    assert all(np.isnan(v["spk_id"]) for v in rows["x"].values())


def test_fit_and_judge_names() -> None:
    x = np.arange(5, dtype=np.float32)
    assert fit(x, 3).tolist() == [0, 1, 2] and fit(x, 7).tolist() == [0, 1, 2, 3, 4, 0, 0]
    assert [j.name for j in make_judges(["energy", "stoi"])] == ["stoi", "energy"]  # canonical order
    with pytest.raises(ValueError, match="unknown judge"):
        make_judges(["stoi", "pesq"])


def test_griffin_lim_keeps_the_mel() -> None:
    speech = voice(130, (700, 1200, 2500))
    log_mel = mel.log_mel(speech)
    assert log_mel.shape == (80, 1 + len(speech) // mel.HOP)
    audio = mel.griffin_lim(log_mel, len(speech), n_iter=16)
    assert len(audio) == len(speech)
    assert np.mean(np.abs(mel.energy(audio) - mel.energy(speech))) < 0.3


def test_a_hallucinated_transcript_counts_at_most_every_word_wrong_in_the_capped_whisper_wer() -> None:
    from engines.eval.judges.asr import Whisper

    judge = Whisper()
    clip = RefClip(Clip("c", Path("c.wav"), text="bin blue at f two now"), np.zeros(RATE, np.float32))
    judge.transcribe = lambda audio: "thank you for watching " * 10  # what whisper may answer mumble with
    scores = judge.score(np.zeros(RATE, np.float32), clip)
    assert scores["_w_n"] == 6 and scores["_w_err"] == 40
    assert scores["wer_whisper"] == pytest.approx(40 / 6) and scores["wer_whisper_capped"] == 1.0
    assert scores["wer_whisper_sound"] == 1.0
    judge.transcribe = lambda audio: "been blue at f two"
    scores = judge.score(np.zeros(RATE, np.float32), clip)
    assert scores["wer_whisper"] == scores["wer_whisper_capped"] == pytest.approx(2 / 6)
    assert scores["wer_whisper_sound"] == pytest.approx(1 / 6)
