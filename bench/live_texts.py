"""The live node's transcripts on a corpus split, made as the node makes them: the streaming synthesizer fed
each clip's tracked features frame by frame, each chunk's text read after its audio (`read_text`).

Run: `.venv/bin/python bench/live_texts.py CORPUS --cache FEATURES [--split test] [--per-speaker 36]
[--kind grid|open] [--tail-s 1] [--row end_pause_s=0 --row ...]`.

The clips are bench/eval_table.py's `table_clips` (`--kind open`: the open-vocabulary ones). One table row
per `--row` (StreamParams and SynthParams fields, comma-separated; none: the defaults):
- final WER: the utterances' final texts of a clip joined, against its reference text;
- clips cut: clips whose one sentence came out as more than one utterance;
- partial WER: at each speech hop, the transcript shown so far (the finals before it and the utterance's
  latest partial text) against the words said by the time the hop comes out, its look-ahead seen (each
  word's end from the corpus's phone timeline, engines.text.phones.word_ends), pooled over hops
  ("instants");
- whole text / final after the last speech hop: when the transcript shown first equals the final one, and
  when the final one comes, after the end of the last hop voiced (medians and 90th percentiles over clips);
  each clip's last frame is held `--tail-s` (1 s), a speaker who stops and stays in view;
- text compute per second of video: `read_text`'s wall time, one thread.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval_table import clip_arguments, table_clips

from engines.audio.mel import SAMPLE_RATE, VIDEO_FPS
from engines.clipsets import Clip
from engines.eval.judges.asr import errors
from engines.eval.systems import make_system
from engines.synth.engine import Features
from engines.synth.streaming import frames_of
from engines.synth.systems import StreamedLip2Speech, clip_features
from engines.text.normalize import normalize
from engines.text.phones import word_ends

STREAMED = "engines.synth.systems:lip2speech_stream"


def clip_texts(system: StreamedLip2Speech, clip: Clip, tail_frames: int) -> dict[str, Any]:
    """One clip streamed, its last frame held `tail_frames` more: its finals, the partial instants' errors and
    words, the text compute, and when the last utterance's text was whole and final after the last speech."""
    streamer = system.streamer
    streamer.reset()
    features = Features.from_tracks(clip_features(clip, system.cache))
    if tail_frames:  # the speaker stops and stays in view, still: a pause, not the end of the stream
        held = np.repeat(np.arange(len(features.mouth_rois)), [1] * (len(features.mouth_rois) - 1) +
                         [1 + tail_frames])
        features = Features(features.mouth_rois[held], features.lip_geometry[held], features.face_crop,
                            None if features.valid is None else features.valid[held])
    chunks = [c for frame in frames_of(features) for c in streamer.push(frame, texts=False)]
    chunks += streamer.flush(texts=False)
    meta = json.loads(clip.video.with_suffix(".json").read_text())
    ends, words = word_ends(clip.text, meta["phones"]), normalize(clip.text).split()
    finals, partial, text_s, said_s = [], "", 0.0, 0.0
    ahead_s = streamer.params.lookahead_frames / VIDEO_FPS  # seen by the time a chunk comes out
    instant_errors = instant_words = instants = 0
    spoke_until, shown_at = 0.0, []  # the last speech hop's end; each chunk's end with the text shown then
    for chunk in chunks:
        start = time.perf_counter()
        streamer.read_text(chunk)
        text_s += time.perf_counter() - start
        said_s += len(chunk.wav) / SAMPLE_RATE
        if chunk.final_text:
            finals.append(chunk.text)
            partial = ""
        elif chunk.text:
            partial = chunk.text
        shown = " ".join(t for t in (*finals, partial) if t)
        shown_at.append((said_s, shown, chunk.final_text))
        if not chunk.silent:
            spoke_until = said_s
            said = " ".join(w for w, end in zip(words, ends, strict=True) if end <= said_s + ahead_s)
            e, n, _, _ = errors(said, shown) if said else (len(shown.split()), 0, 0, 0)
            instant_errors, instant_words, instants = instant_errors + e, instant_words + n, instants + 1
    final = " ".join(t for t in finals if t)
    e, n, _, _ = errors(clip.text, final)
    final_at = next((t for t, _, ended in shown_at if ended and t >= spoke_until), said_s)
    whole_at = next((t for t, text, _ in shown_at if t >= spoke_until and text == final), final_at)
    return {"final": (e, n), "cut": len(finals) > 1, "partial": (instant_errors, instant_words, instants),
            "text_s": text_s, "speech_s": said_s, "final_after": final_at - spoke_until,
            "whole_after": whole_at - spoke_until}


def main() -> int:
    p = clip_arguments(__doc__, per_speaker=36)
    p.add_argument("--kind", choices=("grid", "open"), default="grid")
    p.add_argument("--tail-s", type=float, default=1.0, help="hold each clip's last frame this long "
                   "(a pause after the sentence, so that the utterance ends as it would live, not at the "
                   "stream's end; 0: none)")
    p.add_argument("--row", action="append", default=[], help="settings of one row, e.g. end_pause_s=0; "
                   "repeatable (default: one row of the defaults)")
    args = p.parse_args()
    torch.set_num_threads(1)
    clips = table_clips(args.corpus, args.split, args.per_speaker, args.kind)
    if not clips:
        print(f"{args.corpus}: no {args.kind} clip in split {args.split}", file=sys.stderr)
        return 2
    print(f"`{shlex.join(sys.argv)}`: {len(clips)} {args.kind} clips of {args.split}\n")
    print("| settings | final WER | clips cut | partial WER (instants) | whole text / final after the last "
          "speech hop, median (p90) | text compute per s of video |")
    print("|---|---|---|---|---|---|")
    for row in args.row or [""]:
        # the node's partial readings, which the eval's streamed row leaves out, unless the row says
        system = make_system(",".join(x for x in (STREAMED, f"cache={args.cache}" if args.cache else "",
                                                  "partial_text_s=0.4", row) if x))
        tail = round(args.tail_s * VIDEO_FPS)
        results = [clip_texts(system, clip, tail) for clip in tqdm(clips, desc=row or "defaults")]
        final = [sum(r["final"][i] for r in results) for i in (0, 1)]
        partial = [sum(r["partial"][i] for r in results) for i in (0, 1, 2)]
        text_s, speech_s = (sum(r[k] for r in results) for k in ("text_s", "speech_s"))
        print(f"| {row or 'defaults'} | {100 * final[0] / final[1]:.1f} % | {sum(r['cut'] for r in results)} "
              f"| {100 * partial[0] / max(partial[1], 1):.1f} % ({partial[2]}) "
              f"| {delays(results, 'whole_after')} / {delays(results, 'final_after')} "
              f"| {1000 * text_s / speech_s:.0f} ms |", flush=True)
    return 0


def delays(results: list[dict[str, Any]], key: str) -> str:
    seconds = np.array([r[key] for r in results])
    return f"{1000 * np.median(seconds):.0f} ({1000 * np.percentile(seconds, 90):.0f}) ms"


if __name__ == "__main__":
    sys.exit(main())
