"""How intelligible the corpus voices are, and how fast they synthesize (issue 5's audio check).

For every base voice setting of the bank (and, for comparison, plain espeak-ng voices that the bank
leaves out): pocketsphinx with the GRID grammar on GRID sentences, and whisper tiny.en on the
open-vocabulary sentences; WER per voice, and synthesis speed (seconds of audio per second of CPU).

    .venv/bin/python bench/corpus_audio.py [--grid 20] [--open 20] [--voices mbrola-us1-p1.00-r1.00 ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines.data import text
from engines.data.speech import SAMPLE_RATE, espeak_audio, synthesize
from engines.data.voices import Voice, make_voice, voice_bank
from engines.eval.judges.asr import SphinxGrid, Whisper, errors

# raw espeak-ng voices, measured for the record (the bank leaves them out)
ESPEAK_VOICES = (make_voice("espeak", "en-us", "male"), make_voice("espeak", "en-us+f3", "female"),
                 make_voice("espeak", "en-gb+m3", "male"))


def speak(sentence: str, voice: Voice) -> np.ndarray:
    if voice.engine == "espeak":
        return espeak_audio(sentence, voice.name)
    return synthesize(sentence, voice).audio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=20, help="GRID sentences per voice")
    parser.add_argument("--open", type=int, default=20, help="open-vocabulary sentences per voice")
    parser.add_argument("--voices", nargs="*", help="voice ids (default: each base voice at p1.00 r1.00)")
    parser.add_argument("--bank", action="store_true", help="every voice setting of the bank")
    parser.add_argument("--no-espeak", action="store_true", help="skip the raw espeak-ng comparison")
    args = parser.parse_args(argv)

    bank = {v.id: v for v in voice_bank()}
    if args.bank:
        voices = list(bank.values())
    elif args.voices:
        voices = [bank[i] for i in args.voices]
    else:
        voices = [v for v in bank.values() if v.pitch_factor == 1.0 and v.rate_factor == 1.0]
    if not args.no_espeak:
        voices += list(ESPEAK_VOICES)
    sphinx, whisper = SphinxGrid(), Whisper()
    rng = np.random.default_rng(5)
    grid = [text.grid_sentence(rng) for _ in range(args.grid)]
    sentences = text.open_sentences()
    rows = []
    for k, voice in enumerate(tqdm(voices, desc="voices")):
        counts = {"sphinx": [0, 0], "whisper": [0, 0]}
        synth_s = audio_s = 0.0
        open_part = [sentences[(k * args.open + i) % len(sentences)] for i in range(args.open)]
        for judge, name, batch in ((sphinx, "sphinx", grid), (whisper, "whisper", open_part)):
            for sentence in batch:
                start = time.perf_counter()
                audio = speak(sentence, voice)
                synth_s += time.perf_counter() - start
                audio_s += len(audio) / SAMPLE_RATE
                err, n, _, _ = errors(sentence, judge.transcribe(audio))
                counts[name][0] += err
                counts[name][1] += n
        rows.append((voice.id, counts["sphinx"], counts["whisper"], audio_s / max(synth_s, 1e-9)))
    print(f"\n| voice | sphinx-GRID WER ({args.grid} sentences) | whisper tiny.en WER ({args.open} open "
          "sentences) | synthesis x real time (1 process, wall clock) |")
    print("|---|---|---|---|")
    for voice_id, (s_err, s_n), (w_err, w_n), speed in rows:
        print(f"| {voice_id} | {100 * s_err / max(s_n, 1):.1f} % ({s_err}/{s_n}) "
              f"| {100 * w_err / max(w_n, 1):.1f} % ({w_err}/{w_n}) | {speed:.0f} |")
    if len(rows) > len({voice_id.rsplit("-", 2)[0] for voice_id, *_ in rows}):
        print("\n| base voice (all its settings) | sphinx-GRID WER | whisper tiny.en WER |\n|---|---|---|")
        totals: dict[str, list[int]] = {}
        for voice_id, sphinx_counts, whisper_counts, _ in rows:
            total = totals.setdefault(voice_id.rsplit("-", 2)[0], [0, 0, 0, 0])
            for i, value in enumerate((*sphinx_counts, *whisper_counts)):
                total[i] += value
        for base, (s_err, s_n, w_err, w_n) in totals.items():
            print(f"| {base} | {100 * s_err / max(s_n, 1):.1f} % ({s_err}/{s_n}) "
                  f"| {100 * w_err / max(w_n, 1):.1f} % ({w_err}/{w_n}) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
