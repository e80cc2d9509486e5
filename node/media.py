"""`voxsight media pattern -o PATH`: write the test-pattern clip the launch files and tests use."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import cv2
from tqdm import tqdm

from streams.sources import PatternSource, SourceError


def _size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)x(\d+)", text)
    if m is None:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}")
    return int(m[1]), int(m[2])


def write_pattern(path: Path, seconds: float, size: tuple[int, int], fps: float) -> int:
    """Encode `seconds` of the test pattern as MPEG-4 (mp4v) into `path`; the number of frames."""
    frames = round(seconds * fps)
    if frames < 1:
        raise SourceError(f"{seconds} s at {fps} fps is not even one frame")
    pattern = PatternSource(*size, fps=fps, frames=frames, realtime=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise SourceError(f"cannot write {path}: OpenCV has no mp4v encoder for it")
    try:
        with pattern:
            for frame in tqdm(pattern, total=frames, unit="frame", desc=path.name):
                writer.write(frame.image)
    finally:
        writer.release()
    return frames


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="voxsight media", description=__doc__)
    sub = ap.add_subparsers(dest="what", required=True)
    pat = sub.add_parser("pattern", help="a clip of the synthetic test pattern (frame numbers coded in it)")
    pat.add_argument("-o", "--output", type=Path, required=True, help="the .mp4 to write")
    pat.add_argument("--seconds", type=float, default=10.0, help="clip length (default 10)")
    pat.add_argument("--size", type=_size, default=(320, 240), metavar="WxH",
                     help="frame size (default 320x240)")
    pat.add_argument("--fps", type=float, default=25.0, help="frame rate (default 25)")
    args = ap.parse_args(argv)
    try:
        frames = write_pattern(args.output, args.seconds, args.size, args.fps)
    except SourceError as exc:
        print(f"voxsight media: {exc}", file=sys.stderr)
        return 1
    kib = args.output.stat().st_size / 1024
    print(f"wrote {args.output}: {frames} frames, {args.size[0]}x{args.size[1]} at {args.fps:g} fps, "
          f"{kib:.0f} KiB")
    return 0
