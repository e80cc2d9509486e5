"""Derived faces: new training identities morphed from pairs of a corpus's training people.

Why: the lip reader and MelGen learn from the faces they see, and ../shared/faces gives ten training
people; unseen faces are read far worse than seen ones (NOTES.md, #6). A morph of two people is a
plausible third face whose shape, skin, lips and teeth lie between theirs, so a folder of morphs widens
what training sees without touching the test people.

One morph (`morph`): both photos are placed on one canvas by their eyes (engines.data.render's placement),
their 468 mesh points averaged with weight `alpha` toward B, the averaged points (plus the canvas border)
triangulated, each photo warped onto them triangle by triangle (one cv2.remap each), and the two blended
with the same weight.

A folder (`make_folder`): for every pair of the corpus's *training* identities (speakers.json; test
identities are never used), `per_pair` morphs, each from a photo of either person drawn from the seed with
alpha in [0.35, 0.65]. The folder's speakers.csv names each derived identity "A+B", gives it the gender
and pins the voice of one of the two, drawn per pair (the `voice` column, engines.data.identities), so a
corpus made from the folder has only training speakers with training voices:

    voxsight data morph --corpus /work/data/voxsight-corpus --out /work/data/faces-morph
    voxsight data synth --out /work/data/morph-corpus --faces /work/data/faces-morph --hours 1.5 ...
"""

from __future__ import annotations

import csv
import itertools
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
from scipy.spatial import Delaunay
from tqdm import tqdm

from engines.data.render import N_MESH, place_photo, placement
from engines.face.mesh import FaceMesh

SIZE = (600, 600)  # canvas of a morph: the eyes 120 px apart, the whole head inside
ALPHA_RANGE = (0.35, 0.65)
_STREAM = 0x6D0F  # the morph plan's own random stream under the seed


def _placed(image: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The photo on the canvas and its mesh points in canvas pixels."""
    matrix = placement(landmarks, SIZE, 0)
    canvas = place_photo(image, matrix, SIZE)
    return canvas, landmarks[:N_MESH, :2] @ matrix[:, :2].T + matrix[:, 2]


def _border() -> np.ndarray:
    w, h = SIZE[0] - 1, SIZE[1] - 1
    xs, ys = np.linspace(0, w, 5), np.linspace(0, h, 5)
    return np.array([(x, 0) for x in xs] + [(x, h) for x in xs] + [(0, y) for y in ys[1:-1]]
                    + [(w, y) for y in ys[1:-1]], np.float64)


def _warp(image: np.ndarray, src: np.ndarray, dst: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """`image` warped so that points `src` land on `dst`, piecewise affine over `triangles` of dst."""
    labels = np.full(SIZE[::-1], -1, np.int32)
    for k, tri in enumerate(triangles):
        cv2.fillConvexPoly(labels, np.round(dst[tri]).astype(np.int32), int(k))
    # Per triangle, the affine map dst → src; pixels take their triangle's map.
    maps = np.stack([cv2.getAffineTransform(dst[tri].astype(np.float32), src[tri].astype(np.float32))
                     for tri in triangles])
    ys, xs = np.mgrid[0:SIZE[1], 0:SIZE[0]].astype(np.float32)
    m = maps[np.maximum(labels, 0)]
    map_x = m[..., 0, 0] * xs + m[..., 0, 1] * ys + m[..., 0, 2]
    map_y = m[..., 1, 0] * xs + m[..., 1, 1] * ys + m[..., 1, 2]
    map_x, map_y = np.where(labels < 0, xs, map_x), np.where(labels < 0, ys, map_y)
    return cv2.remap(image, map_x.astype(np.float32), map_y.astype(np.float32), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def morph(image_a: np.ndarray, landmarks_a: np.ndarray, image_b: np.ndarray, landmarks_b: np.ndarray,
          alpha: float) -> np.ndarray:
    """The face between A (alpha 0) and B (alpha 1), BGR uint8 of SIZE (module docstring). Landmarks are
    the (478, ≥2) mesh points of each photo in its own pixels."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    canvas_a, pts_a = _placed(image_a, landmarks_a)
    canvas_b, pts_b = _placed(image_b, landmarks_b)
    border = _border()
    pts_a, pts_b = np.vstack([pts_a, border]), np.vstack([pts_b, border])
    target = (1 - alpha) * pts_a + alpha * pts_b
    triangles = Delaunay(target).simplices
    warped_a = _warp(canvas_a, pts_a, target, triangles).astype(np.float32)
    warped_b = _warp(canvas_b, pts_b, target, triangles).astype(np.float32)
    return np.clip((1 - alpha) * warped_a + alpha * warped_b + 0.5, 0, 255).astype(np.uint8)


def training_people(corpus: Path, faces: Path) -> list[dict]:
    """The corpus's training identities with their gender, voice and photos in `faces` (speakers.json)."""
    path = Path(corpus) / "speakers.json"
    if not path.is_file():
        raise ValueError(f"{corpus}: no speakers.json (not a corpus made by `voxsight data synth`)")
    people = [{"identity": s["identity"], "gender": s["gender"], "voice": s["voice"],
               "photos": [Path(faces) / p for p in s["photos"]]}
              for s in json.loads(path.read_text()) if s["split"] == "train"]
    missing = [str(p) for person in people for p in person["photos"] if not p.is_file()]
    if missing:
        raise ValueError(f"{faces}: photos of the corpus's speakers are missing: {missing[:3]}")
    if len(people) < 2:
        raise ValueError(f"{corpus}: morphs need at least two training identities, found {len(people)}")
    return people


def make_folder(corpus: Path, faces: Path, out: Path, per_pair: int = 2, seed: int = 0,
                progress: bool = True) -> dict:
    """A folder of morphs of the corpus's training people with its speakers.csv (module docstring);
    returns a summary. Photos in which the mesh finds no face are skipped (and counted). The folder
    is made beside `out` and renamed at the end: an `out` that exists is whole, a stopped run starts over."""
    if per_pair < 1:
        raise ValueError(f"per_pair must be at least 1, got {per_pair}")
    if out.is_dir() and any(out.iterdir()):
        raise ValueError(f"{out}: not empty; give a new folder")
    people = training_people(corpus, faces)
    rng = np.random.default_rng([seed, _STREAM])
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    rows, skipped = [], 0
    pairs = list(itertools.combinations(people, 2))
    with FaceMesh(max_faces=1, static=True) as mesh:
        meshes: dict[Path, tuple[np.ndarray, np.ndarray] | None] = {}

        def photo(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
            if path not in meshes:
                image = cv2.imread(str(path), cv2.IMREAD_COLOR)
                found = mesh.detect(image) if image is not None else []
                meshes[path] = (image, found[0].landmarks) if found else None
            return meshes[path]

        for a, b in tqdm(pairs, desc="morphing pairs", disable=not progress):
            name = f"{a['identity']}+{b['identity']}"
            lead = (a, b)[int(rng.integers(2))]  # whose gender and voice the derived person has
            for k in range(per_pair):
                alpha = float(rng.uniform(*ALPHA_RANGE))
                pa, pb = (photo(p[int(rng.integers(len(p)))]) for p in (a["photos"], b["photos"]))
                if pa is None or pb is None:
                    skipped += 1
                    continue
                image = morph(pa[0], pa[1], pb[0], pb[1], alpha)
                if not mesh.detect(image):
                    skipped += 1
                    continue
                file = f"{name}-{k}.jpg"
                cv2.imwrite(str(partial / file), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
                rows.append((file, name, lead["gender"], lead["voice"]))
    with open(partial / "speakers.csv", "w", newline="") as f:
        f.write(f"# Morphs of the training people of {Path(corpus).resolve()} (engines.data.morph, seed "
                f"{seed}); each pair has the gender and voice of one of its two people.\n")
        writer = csv.writer(f)
        writer.writerow(("file", "identity", "gender", "voice"))
        writer.writerows(rows)
    if out.is_dir():
        out.rmdir()
    partial.rename(out)
    return {"identities": len({r[1] for r in rows}), "photos": len(rows), "skipped": skipped,
            "pairs": len(pairs), "out": str(out)}
