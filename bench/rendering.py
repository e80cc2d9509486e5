"""How well the mel prior speaks a text that is right, apart from lip reading: each clip's reference text
spoken in the face's voice on three timings — the clip's true phone timeline (what the corpus said when),
the phone aligner's Viterbi timing on the lips, and paced (engines.text.durations) at each `--weights` —
judged by pocketsphinx-GRID and whisper (≤ 1 per clip; also by sound, engines.eval.text.by_sound), paired
against the Viterbi timing, then per speaker. `--voice SPEAKER` speaks every clip in that corpus speaker's
voice instead (the identity of their first clip): how much of a judge's WER is the voice.

Run: `.venv/bin/python bench/rendering.py CORPUS --cache FEATURES [--split test] [--per-speaker 36]
[--weights 3] [--judges sphinx,whisper] [--voice spk010]`. The clips are bench/eval_table.py's `table_clips`
(the first `--per-speaker` GRID clips of each speaker); the corpus must be ours (the true timelines are the
.json beside each clip). Session 16, 108 test clips: true timeline 3.2 %, Viterbi 6.0 %, paced (weight 3)
4.3 % sphinx-GRID WER; the reference audio 3.9 %. Session 27, whisper ≤1 on the true timeline / paced: 37.5 /
36.1 % in the faces' own voices (the reference audio 37.5 %), 27.3 / 30.6 % all in the voice of spk010, the
one training speaker whose voice is piper's rather than mbrola's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval_table import clip_arguments, table_clips

from engines.clipsets import load_clips
from engines.eval.judges.asr import SphinxGrid, Whisper, errors, sound_errors
from engines.eval.stats import paired_ratio_ci, ratio_ci
from engines.synth.engine import Features, Synthesizer, SynthParams, silence_unseen
from engines.synth.models import SynthModels
from engines.synth.systems import clip_features
from engines.text.durations import paced_align
from engines.text.phones import align_text, timeline_labels

VITERBI = "aligner's Viterbi path"


def main() -> int:
    p = clip_arguments(__doc__, per_speaker=36)
    p.add_argument("--weights", default="3", help="duration weights of the paced rows, comma-separated")
    p.add_argument("--judges", default="sphinx,whisper", help="sphinx, whisper or both")
    p.add_argument("--voice", default="", help="a speaker of the corpus (any split) whose voice speaks "
                   "every clip; default: each face's own")
    args = p.parse_args()
    torch.set_num_threads(1)
    clips = table_clips(args.corpus, args.split, args.per_speaker)
    if not clips:
        print(f"{args.corpus}: no GRID clip in split {args.split}", file=sys.stderr)
        return 2
    judges = {name: {"sphinx": SphinxGrid, "whisper": Whisper}[name]() for name in args.judges.split(",")}
    synth = Synthesizer(SynthModels.load(asr=None, aligner="aligner", prior="prior"), SynthParams())
    voice = None
    if args.voice:
        everyone = [c for c in load_clips(args.corpus) if c.video is not None]
        theirs = [c for c in everyone if c.speaker_key == args.voice]
        if not theirs:
            known = sorted({c.speaker_key for c in everyone})
            print(f"{args.corpus}: no clip of speaker {args.voice!r}; speakers: {', '.join(known)}",
                  file=sys.stderr)
            return 2
        voice = synth.identity(Features.from_tracks(clip_features(theirs[0], args.cache or None)).face_crop)
    scores = [*judges, *(["whisper by sound"] if "whisper" in judges else [])]
    weights = [float(w) for w in args.weights.split(",")]
    rows = ["true timeline", VITERBI, *(f"paced, weight {w:g}" for w in weights)]
    errs = {(row, score): [] for row in rows for score in scores}
    for clip in tqdm(clips, unit="clip"):
        features = Features.from_tracks(clip_features(clip, args.cache or None))
        reading = synth.read(synth.frame_features(features.mouth_rois, features.lip_geometry))
        posteriors = synth.phone_posteriors(reading)
        truth = json.loads(clip.video.with_suffix(".json").read_text())["phones"]
        viterbi = align_text(posteriors, clip.text)
        paced = [paced_align(posteriors, clip.text, w) for w in weights]
        timings = [timeline_labels(truth, len(posteriors)), viterbi,
                   *(viterbi if labels is None else labels for labels in paced)]
        identity = synth.identity(features.face_crop) if voice is None else voice
        for row, labels in zip(rows, timings, strict=True):
            wav = synth.vocode(synth.speak(labels, identity))
            if features.valid is not None and not features.valid.all():
                wav = silence_unseen(wav, features.valid)
            for name, judge in judges.items():
                heard = judge.transcribe(wav)
                wrong, words = errors(clip.text, heard)[:2]
                errs[(row, name)].append((min(wrong, words), words))
                if name == "whisper":
                    by_sound = min(sound_errors(clip.text, heard), words)
                    errs[(row, "whisper by sound")].append((by_sound, words))
    speakers = [clip.speaker_key for clip in clips]
    print(f"{len(clips)} clips of {args.corpus} ({args.split}); the prior speaks each reference text in "
          f"{f'the voice of {args.voice}' if voice is not None else 'its face’s voice'}; ± half the 95 % "
          "interval; Δ: paired against the Viterbi timing\n")
    print("| timing | " + " | ".join(f"WER {j} | Δ {j}" for j in scores) + " |")
    print("|---|" + "---|---|" * len(scores))
    for row in rows:
        cells = []
        for name in scores:
            e, n = (np.array(v, float) for v in zip(*errs[(row, name)], strict=True))
            base = np.array([x for x, _ in errs[(VITERBI, name)]], float)
            c, d = ratio_ci(e, n), paired_ratio_ci(e, n, base, n)
            delta = f"{100 * d.value:+.1f} [{100 * d.low:+.1f}, {100 * d.high:+.1f}]"
            cells += [f"{100 * c.value:.1f} % ± {100 * c.half_width:.1f}", "" if row == VITERBI else delta]
        print(f"| {row} | " + " | ".join(cells) + " |")
    print("\nPer speaker (WER):\n\n| timing | speaker | " + " | ".join(scores) + " |")
    print("|---|---|" + "---|" * len(scores))
    for row in rows:
        for speaker in sorted(set(speakers)):
            cells = []
            for name in scores:
                mine = [v for v, who in zip(errs[(row, name)], speakers, strict=True) if who == speaker]
                cells.append(f"{100 * sum(e for e, _ in mine) / sum(n for _, n in mine):.1f} %")
            print(f"| {row} | {speaker} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
