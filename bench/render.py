"""Talking-face renderer: speed, what the tracker sees, and realism against real GRID clips (issue 5).

Prints markdown tables:
  (a) render cost in ms per frame on one CPU core: p50 / p95 over clips (each clip's time / its frames),
      as CPU time of the rendering thread (OpenCV single-threaded, so this is the one-core cost even on a
      busy machine) and as wall-clock time; face models are built beforehand, once per photo, as the
      corpus does, and their build time is given too;
  (b) the tracker on rendered clips (engines.face.mesh.FaceMesh in video mode, a fresh one per clip, as
      the live tracker runs): frames with a face and lip features (%), and the Pearson correlation
      of its mouth opening (engines.face.lips: inner-lip gap in inter-ocular distances) with the
      rendered jaw_open, per clip (median, min);
  (c) realism: lip-geometry statistics of the rendered clips next to the real GRID clips in
      ../shared/real/grid-dev, both measured by the same tracker: opening range, opening speed,
      mouth width, and the spectrum of the opening signal (dominant frequency, centroid, band shares).
Writes out/contact_sheet_rendered_vs_real.png (whole frames, then 96x96 mouth ROIs; rendered rows first,
then real rows, each labelled) and out/render_opening.png (opening traces and mean spectra).

Speech comes from engines.data.speech (mbrola voices, gender-matched to the identity) speaking GRID
sentences (engines.data.text.grid_sentence), so phone timings and speaking rate are those of the corpus;
each utterance is centred in a 3 s window like a GRID clip.

Run: `.venv/bin/python bench/render.py [--identities N] [--clips N] [--cpu K] [--seed S]`.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FACES = SHARED / "faces"
GRID = SHARED / "real" / "grid-dev"
OUT = REPO / "out"
FPS = 25.0
GRID_FRAMES = 75  # 3 s
BANDS = ((0.5, 2.0), (2.0, 5.0), (5.0, 12.5))
GREY = (40, 40, 40)


@dataclass
class Clip:
    label: str
    frames: list[np.ndarray]
    opening: np.ndarray  # per frame, NaN where the tracker found no face
    width: np.ndarray
    landmarks: list[np.ndarray | None]
    jaw: np.ndarray | None = None  # rendered jaw_open (rendered clips only)
    render_ms: float = 0.0  # wall clock per frame
    render_cpu_ms: float = 0.0  # CPU time of the rendering thread per frame


def track(frames: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, list[np.ndarray | None]]:
    from engines.face.lips import lip_features
    from engines.face.mesh import FaceMesh

    opening, width, marks = [], [], []
    with FaceMesh(max_faces=1) as mesh:
        for frame in frames:
            faces = mesh.detect(frame)
            if faces:
                features = lip_features(faces[0].landmarks)
                opening.append(features.opening)
                width.append(features.width)
                marks.append(faces[0].landmarks)
            else:
                opening.append(np.nan)
                width.append(np.nan)
                marks.append(None)
    return np.array(opening), np.array(width), marks


def real_clips() -> list[Clip]:
    clips = []
    for path in sorted(GRID.glob("*.mpg")):
        capture = cv2.VideoCapture(str(path))
        frames = []
        while (got := capture.read())[0]:
            frames.append(got[1])
        opening, width, marks = track(frames)
        clips.append(Clip(f"GRID {path.stem}", frames, opening, width, marks))
    return clips


def rendered_clips(n_identities: int, n_clips: int, seed: int,
                   rest_open: float) -> tuple[list[Clip], list[float]]:
    from engines.data import identities, render, text, visemes
    from engines.data.phonemes import Phone
    from engines.data.speech import synthesize
    from engines.data.voices import voice_bank

    rng = np.random.default_rng(seed)
    found = identities.load(FACES)
    by_gender = {g: [i for i in found if i.gender == g] for g in ("female", "male")}
    chosen = [by_gender[g][k] for k in range(max(len(v) for v in by_gender.values()))
              for g in ("female", "male") if k < len(by_gender[g])][:n_identities]
    voices = [v for v in voice_bank(("mbrola",))]
    clips, build_ms = [], []
    for identity in tqdm(chosen, desc="identities"):
        photo = identity.photos[int(rng.integers(len(identity.photos)))]
        start = time.perf_counter()
        model = render.FaceModel.from_photo(photo)
        build_ms.append((time.perf_counter() - start) * 1e3)
        own = [v for v in voices if v.gender == identity.gender]
        for k in tqdm(range(n_clips), desc=identity.id, leave=False):
            voice = own[int(rng.integers(len(own)))]
            utterance = synthesize(text.grid_sentence(rng), voice)
            # Centred in a window as long as a GRID clip, so silence takes a similar share of both.
            n = max(round(utterance.duration_s * FPS), GRID_FRAMES)
            lead = (n / FPS - utterance.duration_s) / 2
            phones = [Phone(p.symbol, p.start_s + lead, p.dur_s, p.pitch) for p in utterance.phones]
            track_ = visemes.track(phones, n, FPS, rest_open=float(rng.uniform(0, rest_open)))
            start, cpu = time.perf_counter(), time.thread_time()
            frames = render.render_clip(model, track_, np.random.default_rng(rng.integers(1 << 32)))
            ms = (time.perf_counter() - start) * 1e3 / n
            cpu_ms = (time.thread_time() - cpu) * 1e3 / n
            opening, width, marks = track(list(frames))
            clips.append(Clip(f"{identity.id} {photo.stem} #{k}", list(frames), opening, width, marks,
                              track_[:, 0], ms, cpu_ms))
    return clips, build_ms


def spectrum(signal: np.ndarray, n_fft: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies and power of the mean-removed, Hann-windowed opening signal (NaNs interpolated)."""
    x = np.asarray(signal, np.float64)
    good = np.isfinite(x)
    x = np.interp(np.arange(len(x)), np.nonzero(good)[0], x[good]) if good.any() else np.zeros(len(x))
    x = (x - x.mean()) * np.hanning(len(x))
    power = np.abs(np.fft.rfft(x, n_fft)) ** 2
    return np.fft.rfftfreq(n_fft, 1 / FPS), power


def realism(clips: list[Clip]) -> dict[str, float]:
    opening = np.concatenate([c.opening for c in clips])
    opening = opening[np.isfinite(opening)]
    width = np.concatenate([c.width for c in clips])
    width = width[np.isfinite(width)]
    speed = np.concatenate([np.abs(np.diff(c.opening)) * FPS for c in clips])
    speed = speed[np.isfinite(speed)]
    dominant, centroid, shares = [], [], []
    for c in clips:
        freqs, power = spectrum(c.opening)
        band = (freqs >= 0.5) & (freqs <= 12.5)
        dominant.append(freqs[band][np.argmax(power[band])])
        centroid.append(float((freqs[band] * power[band]).sum() / max(power[band].sum(), 1e-12)))
        shares.append([power[(freqs >= lo) & (freqs < hi)].sum() / max(power[band].sum(), 1e-12)
                       for lo, hi in BANDS])
    per_clip_range = [np.nanmax(c.opening) - np.nanmin(c.opening) for c in clips]
    out = {
        "opening p5": np.percentile(opening, 5), "opening p50": np.percentile(opening, 50),
        "opening p95": np.percentile(opening, 95), "opening max": opening.max(),
        "opening range per clip (median)": float(np.median(per_clip_range)),
        "frames with opening > 0.05 (%)": 100 * float(np.mean(opening > 0.05)),
        "opening speed p50 (IOD/s)": np.percentile(speed, 50),
        "opening speed p95 (IOD/s)": np.percentile(speed, 95),
        "mouth width p5": np.percentile(width, 5), "mouth width p50": np.percentile(width, 50),
        "mouth width p95": np.percentile(width, 95),
        "mouth width p95 - p5 per clip (median)": float(np.median(
            [np.nanpercentile(c.width, 95) - np.nanpercentile(c.width, 5) for c in clips])),
        "dominant frequency (Hz, median)": float(np.median(dominant)),
        "spectral centroid (Hz, median)": float(np.median(centroid)),
    }
    for (lo, hi), share in zip(BANDS, np.mean(shares, axis=0), strict=True):
        out[f"power share {lo:g}-{hi:g} Hz (%)"] = 100 * float(share)
    return {k: float(v) for k, v in out.items()}


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    tile = tile.copy()
    cv2.putText(tile, text, (3, 12), cv2.FONT_HERSHEY_PLAIN, 0.8, (0, 0, 0), 2, cv2.LINE_AA)
    cv2.putText(tile, text, (3, 12), cv2.FONT_HERSHEY_PLAIN, 0.8, (0, 255, 255), 1, cv2.LINE_AA)
    return tile


def _pick(clips: list[Clip], count: int, rng: np.random.Generator) -> list[tuple[Clip, int]]:
    """`count` (clip, frame) pairs with a face, spread over the clips, half of them at open mouths."""
    picks = []
    for k in range(count):
        clip = clips[(k * len(clips)) // count]
        seen = np.nonzero(np.isfinite(clip.opening))[0]
        if not len(seen):
            continue
        order = seen[np.argsort(clip.opening[seen])]
        picks.append((clip, int(order[-1 - int(rng.integers(3))] if k % 2 else rng.choice(seen))))
    return picks


def contact_sheet(rendered: list[Clip], real: list[Clip], path: Path, seed: int) -> None:
    from engines.face.align import mouth_roi_96

    rng = np.random.default_rng(seed)
    cols = 6
    rows = []
    for name, clips, n_rows in (("rendered", rendered, 2), ("real", real, 1)):
        picks = _pick(clips, cols * n_rows, rng)
        tiles = [_label(cv2.resize(c.frames[i], (240, 192), interpolation=cv2.INTER_AREA),
                        f"{name}: {c.label} f{i}") for c, i in picks]
        rows += [np.hstack(tiles[r * cols:(r + 1) * cols]) for r in range(n_rows)]
    roi_cols = 15
    for clips, n_rows in ((rendered, 2), (real, 1)):
        picks = _pick(clips, roi_cols * n_rows, rng)
        tiles = [_label(cv2.cvtColor(mouth_roi_96(c.frames[i], c.landmarks[i]), cv2.COLOR_GRAY2BGR),
                        f"{c.opening[i]:.2f}") for c, i in picks]
        strip = [np.hstack(tiles[r * roi_cols:(r + 1) * roi_cols]) for r in range(n_rows)]
        rows += [cv2.copyMakeBorder(s, 0, 0, 0, cols * 240 - s.shape[1], cv2.BORDER_CONSTANT, value=GREY)
                 for s in strip]
    sheet = np.vstack([cv2.copyMakeBorder(r, 2, 0, 0, 0, cv2.BORDER_CONSTANT, value=GREY) for r in rows])
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), sheet)


def plot(rendered: list[Clip], real: list[Clip], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    for clips, colour, name in ((real, "tab:blue", "real GRID"), (rendered[:6], "tab:orange", "rendered")):
        for k, c in enumerate(clips[:3]):
            left.plot(np.arange(len(c.opening)) / FPS, c.opening, color=colour, alpha=0.8,
                      label=name if k == 0 else None)
        spectra = [spectrum(c.opening) for c in clips]
        freqs = spectra[0][0]
        mean = np.mean([p / max(p[freqs >= 0.5].sum(), 1e-12) for _, p in spectra], axis=0)
        right.plot(freqs, mean, color=colour, label=name)
    left.set(xlabel="time (s)", ylabel="inner-lip opening (inter-ocular distances)",
             title="opening over time")
    right.set(xlabel="frequency (Hz)", ylabel="power share", title="mean spectrum of the opening signal",
              xlim=(0, 12.5))
    left.legend()
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--identities", type=int, default=6, help="identities rendered (alternating genders)")
    ap.add_argument("--clips", type=int, default=10, help="clips per identity")
    ap.add_argument("--cpu", type=int, default=0, help="the one CPU core everything is pinned to")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rest-open", type=float, default=0.0,
                    help="jaw_open at rest, drawn per clip from [0, this] (0: lips closed, as the corpus)")
    args = ap.parse_args(argv)
    if not FACES.is_dir() or not GRID.is_dir():
        print(f"needs {FACES} and {GRID}", file=sys.stderr)
        return 2
    os.sched_setaffinity(0, {args.cpu})
    cv2.setNumThreads(1)

    rendered, build_ms = rendered_clips(args.identities, args.clips, args.seed, args.rest_open)
    real = real_clips()
    wall, cpu = np.array([c.render_ms for c in rendered]), np.array([c.render_cpu_ms for c in rendered])
    frames = sum(len(c.frames) for c in rendered)
    print(f"\n## (a) render cost, one core ({len(rendered)} clips, {frames} frames of 360x288; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)\n")
    print("| | ms/frame p50 | ms/frame p95 |\n|---|---|---|")
    print(f"| CPU time | {np.percentile(cpu, 50):.2f} | {np.percentile(cpu, 95):.2f} |")
    print(f"| wall clock | {np.percentile(wall, 50):.2f} | {np.percentile(wall, 95):.2f} |")
    print(f"\nface model (FaceModel.from_photo, once per photo): {np.median(build_ms):.0f} ms median")

    found = np.concatenate([np.isfinite(c.opening) for c in rendered])
    corr = [float(np.corrcoef(c.opening[m], c.jaw[m])[0, 1])
            for c in rendered if (m := np.isfinite(c.opening)).sum() > 2]
    print(f"\n## (b) the tracker on rendered clips ({args.identities} identities x {args.clips} clips)\n")
    print("| frames with face + mouth | opening vs jaw_open r, median | min | clips with r >= 0.8 |")
    print("|---|---|---|---|")
    print(f"| {100 * found.mean():.2f} % ({found.sum()}/{len(found)}) | {np.median(corr):.3f} "
          f"| {min(corr):.3f} | {sum(r >= 0.8 for r in corr)}/{len(corr)} |")

    ours, theirs = realism(rendered), realism(real)
    print(f"\n## (c) lip geometry, rendered ({len(rendered)} clips) vs real GRID ({len(real)} clips); "
          "units: inter-ocular distances\n")
    print("| statistic | rendered | real GRID |\n|---|---|---|")
    for key in ours:
        print(f"| {key} | {ours[key]:.3f} | {theirs[key]:.3f} |")

    sheet, curves = OUT / "contact_sheet_rendered_vs_real.png", OUT / "render_opening.png"
    contact_sheet(rendered, real, sheet, args.seed)
    plot(rendered, real, curves)
    print(f"\nwrote {sheet.relative_to(REPO)} and {curves.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
