"""`voxsight lip2speech VIDEO -o OUT.wav`: speech for the target face of a silent video, offline (the whole
video at once, split at its pauses into utterances: --pause-s). Prints the lip-read text with the reader's
confidence in it (each utterance's, when there are several), and the compute time per stage.

    voxsight lip2speech clip.mp4 -o speech.wav [--nfe 4] [--w1 1] [--w2 0.1] [--backend onnxruntime]
                       [--decode grid] [--vocoder griffin-lim] [--melgen runs/melgen/latest.pt]
                       [--prior-mode speak|refine|off] [--prior-speaks auto|text|phones]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from engines.params import add_arguments, part


def parser() -> argparse.ArgumentParser:
    from engines.synth.engine import SynthParams
    from engines.synth.models import DEFAULT_ALIGNER, DEFAULT_TEXT_READER

    p = argparse.ArgumentParser(prog="voxsight lip2speech", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("video", type=Path, help="a video file with a talking face (any container PyAV reads)")
    p.add_argument("-o", "--output", type=Path, required=True, help="the WAV to write (16 kHz mono)")
    for model in ("lipreader", "melgen", "identity", "asr", "vocoder"):
        p.add_argument(f"--{model}", default=model,
                       help=f"{model} weights: a shipped name or a checkpoint path (default: {model})"
                       + ("; 'griffin-lim' for the zero-weight vocoder" if model == "vocoder" else "")
                       + ("; not loaded with --w2 0" if model == "asr" else ""))
    for model, default in (("aligner", DEFAULT_ALIGNER), ("prior", "prior")):
        p.add_argument(f"--{model}", default=default, help=f"{model} weights to speak the lips' phones or "
                       f"the lip-read text with: a shipped name or a checkpoint path (default: "
                       f"{default}); '' for none, with the other (see --prior-mode, --prior-speaks)")
    p.add_argument("--text-reader", default=DEFAULT_TEXT_READER,
                   help=f"the lip reader that reads the text (a shipped name or a checkpoint path; default "
                        f"{DEFAULT_TEXT_READER}, which reads each clip's motion and which the default "
                        f"--aligner was trained on); '': --lipreader reads it, then with --aligner aligner")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    add_arguments(p, SynthParams)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from engines.synth.engine import Features, Synthesizer, SynthParams
    from engines.synth.models import SynthModels

    try:
        if not args.video.is_file():
            raise ValueError(f"{args.video}: no such file")
        params = part(args, SynthParams)
        # the guidance ASR is only loaded to guide: --w2 0 runs without its weights
        models = SynthModels.load(args.lipreader, args.melgen, args.identity, args.asr if params.w2 else None,
                                  args.vocoder, args.device, aligner=args.aligner or None,
                                  prior=args.prior or None, text_reader=args.text_reader or None)
        synthesizer = Synthesizer(models, params, args.device)
        from engines.data.loaders import track_video

        tracked = track_video(args.video)
        if not tracked["valid"].any():
            raise ValueError(f"{args.video}: no face found in any frame")
        result = synthesizer.synthesize(Features.from_tracks(tracked))
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"voxsight lip2speech: {exc}", file=sys.stderr)
        return 1
    import soundfile

    args.output.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(args.output, result.wav, 16000, subtype="PCM_16")
    seen = int(tracked["valid"].sum())
    print(f"lip-read: {result.text} (confidence {result.confidence:.2f})")
    for start, said in result.parts:
        print(f"  {start:7.2f}–{start + said.duration_s:.2f} s: {said.text or '(silence)'}"
              + (f" (confidence {said.confidence:.2f})" if said.text else ""))
    voice = f", in the voice of {params.voice}" if params.voice else ""
    print(f"spoken by: {result.spoken}{voice}")
    for note in (result.note, result.doubt):
        if note:
            print(f"note: {note}")
    print(f"wrote {args.output}: {result.duration_s:.2f} s of speech; face seen in {seen}/"
          f"{len(tracked['valid'])} frames; backends {synthesizer.backends}")
    total = sum(result.seconds.values())
    print("compute: " + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in result.seconds.items())
          + f"; total {total:.2f} s = {total / max(result.duration_s, 1e-9):.2f} s per second of speech")
    return 0
