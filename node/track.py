"""`voxsight track VIDEO [--overlay OUT.mp4] [--json TRACKS.json] [--policy P] [param:=value ...]`.

Runs the tracker node's pipeline (face mesh, tracking, target selection) offline over a video file, as
fast as it decodes, on media time; a truncated or corrupt file is tracked as far as it decodes, and
said so. Writes, if asked, the overlay video (boxes, ids, lip contours; the target in red) and a JSON
of every frame: its index, media time, status and, per track, id, state, bbox, score, mouth centre,
mouth opening and whether it is the selected target. Prints a summary: frames, frames with a face,
each track's lifetime, and the mouth-centre jitter (frame to frame, after removing slow head motion).
The parameters are the tracker node's (`voxsight run tracker --help-params`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from engines.face.smoothing import jitter
from node.params import ParamError, build, parse_assignment
from node.tracker import TrackerNodeParams, draw_overlay, make_pipeline
from streams.sources import SourceError, VideoFileSource


def _frame_record(index: int, pts_s: float, faces: int, tracks: list, target: int) -> dict:
    return {
        "frame": index, "t": round(pts_s, 4), "status": "ok" if faces else "no_face", "target": target,
        "tracks": [{"id": t.id, "state": t.state, "bbox": [round(v, 2) for v in t.bbox],
                    "score": round(t.score, 4), "mouth_centre": [round(v, 2) for v in t.mouth_centre],
                    "mouth_opening": round(t.mouth_opening, 5), "selected": t.id == target}
                   for t in tracks],
    }


def summarise(frames: list[dict]) -> dict:
    """Frames, frames with a face, and per track: first/last frame, frames seen, mouth-centre jitter
    (pixels, and in widths of the face box) over its detected frames."""
    per_track: dict[int, dict] = {}
    for f in frames:
        for t in f["tracks"]:
            rec = per_track.setdefault(t["id"], {"first": f["frame"], "centres": [], "widths": []})
            rec["last"] = f["frame"]
            if t["state"] != "coasting":
                rec["centres"].append(t["mouth_centre"])
                rec["widths"].append(t["bbox"][2])
    tracks = {}
    for track_id, rec in per_track.items():
        centres = np.array(rec["centres"], dtype=np.float64).reshape(-1, 2)
        px = jitter(centres) if len(centres) >= 2 else 0.0
        width = float(np.median(rec["widths"])) if rec["widths"] else 0.0
        tracks[track_id] = {"first": rec["first"], "last": rec["last"], "frames": len(rec["centres"]),
                            "jitter_px": round(px, 4),
                            "jitter_face": round(px / width, 6) if width else 0.0}
    return {"frames": len(frames), "frames_with_face": sum(f["status"] == "ok" for f in frames),
            "frames_with_target": sum(f["target"] != -1 for f in frames), "tracks": tracks}


def _print_summary(path: Path, summary: dict, fps: float) -> None:
    n = summary["frames"]
    print(f"{path}: {n} frames, a face in {summary['frames_with_face']} "
          f"({100 * summary['frames_with_face'] / max(n, 1):.1f} %), a target in "
          f"{summary['frames_with_target']}; {len(summary['tracks'])} track(s)")
    for track_id, t in summary["tracks"].items():
        span_s = (t["last"] - t["first"] + 1) / fps
        print(f"  track {track_id}: frames {t['first']}-{t['last']} ({span_s:.2f} s, detected in "
              f"{t['frames']}), mouth-centre jitter {t['jitter_px']:.3f} px "
              f"({100 * t['jitter_face']:.3f} % of the face width)")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="voxsight track", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("video", type=Path)
    ap.add_argument("params", nargs="*", metavar="param:=value", help="tracker parameter overrides")
    ap.add_argument("--overlay", type=Path, help="write the overlay video here (.mp4)")
    ap.add_argument("--json", type=Path, help="write the per-frame tracks here")
    ap.add_argument("--policy", help="target policy: largest | central | active_speaker | id:<n>")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = ap.parse_intermixed_args(argv)
    try:
        overrides = dict(parse_assignment(p) for p in args.params)
        if args.policy:
            overrides["policy"] = args.policy
        params = build(TrackerNodeParams, overrides)
        pipeline = make_pipeline(params)
    except (ParamError, ValueError) as exc:
        print(f"voxsight track: {exc}", file=sys.stderr)
        return 2
    try:
        source = VideoFileSource(args.video, realtime=False)
    except SourceError as exc:
        print(f"voxsight track: {exc}", file=sys.stderr)
        return 2
    writer = None
    if args.overlay:
        args.overlay.parent.mkdir(parents=True, exist_ok=True)
        writer = cv2.VideoWriter(str(args.overlay), cv2.VideoWriter_fourcc(*"mp4v"), source.fps,
                                 source.frame_size)
        if not writer.isOpened():
            print(f"voxsight track: cannot write {args.overlay}", file=sys.stderr)
            return 2
    frames: list[dict] = []
    try:
        with source, tqdm(total=source.frames_expected or None, unit="frame", disable=args.no_progress,
                          desc=args.video.name) as bar:
            for frame in source:
                faces, tracks, target = pipeline.process(frame.image, frame.pts_s)
                frames.append(_frame_record(frame.index, frame.pts_s, faces, tracks, target))
                if writer is not None:
                    writer.write(draw_overlay(frame.image, tracks, target))
                bar.update()
    finally:
        pipeline.close()
        if writer is not None:
            writer.release()
    if source.missing_frames:
        print(f"voxsight track: warning: {args.video} ended after {source.frames_decoded} of the "
              f"{source.frames_expected} frames it declares (truncated or corrupt?)", file=sys.stderr)
    summary = summarise(frames)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"video": str(args.video), "fps": source.fps,
                                         "width": source.frame_size[0], "height": source.frame_size[1],
                                         "policy": params.policy, "summary": summary, "frames": frames}))
    _print_summary(args.video, summary, source.fps)
    return 0
