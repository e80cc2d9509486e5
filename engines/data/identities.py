"""Face identities: which photos of a folder show the same person, and the gender they present.

A folder of photos says who is who in a `speakers.csv` beside them (`file,identity,gender`, gender
"female" or "male"; lines starting with "#" are comments). An optional `voice` column pins an identity to
a voice setting of engines.data.voices (engines.data.speakers then makes it a training speaker with that
voice): derived faces (engines.data.morph) use it to keep the voices of the people they come from.
The project's own test photos (../shared/faces) have no such file; their labels ship as
engines/data/faces_shared.csv, made by looking at them (its header says how), and are used for any
folder without a speakers.csv whose photos are all listed there.

`load` keeps only photos in which the face tracker (engines.face.mesh, static mode) finds a face; the
others are skipped with a warning, and so is an identity left without photos.
"""

from __future__ import annotations

import csv
import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import cv2

from engines.face.mesh import FaceMesh

log = logging.getLogger(__name__)

LABELS = "speakers.csv"
SHARED_LABELS = Path(__file__).with_name("faces_shared.csv")
GENDERS = ("female", "male")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass(frozen=True)
class Identity:
    id: str
    gender: str  # "female" | "male"
    photos: tuple[Path, ...]
    voice: str | None = None  # a pinned voice id (module docstring)


@dataclass(frozen=True)
class Label:
    identity: str
    gender: str
    voice: str | None = None


def read_labels(path: Path) -> dict[str, Label]:
    """file name → Label from a `file,identity,gender[,voice]` CSV; ValueError naming the bad line."""
    text = path.read_text().splitlines()
    rows = csv.DictReader(line for line in text if line.strip() and not line.lstrip().startswith("#"))
    if rows.fieldnames is None or not {"file", "identity", "gender"} <= set(rows.fieldnames):
        raise ValueError(f"{path}: expected a header 'file,identity,gender', got {rows.fieldnames}")
    labels: dict[str, Label] = {}
    for row in rows:
        name, identity = (row["file"] or "").strip(), (row["identity"] or "").strip()
        gender = (row["gender"] or "").strip().lower()
        if not name or not identity or gender not in GENDERS:
            raise ValueError(f"{path}: bad row {row} (need a file, an identity and a gender in {GENDERS})")
        label = Label(identity, gender, (row.get("voice") or "").strip() or None)
        if name in labels and labels[name] != label:
            raise ValueError(f"{path}: {name} is labelled twice, differently")
        labels[name] = label
    return labels


def _labels_for(folder: Path, photos: list[Path]) -> dict[str, Label]:
    own = folder / LABELS
    if own.is_file():
        return read_labels(own)
    shared = read_labels(SHARED_LABELS)
    if photos and all(p.name in shared for p in photos):
        return shared
    raise ValueError(f"{folder}: no {LABELS} (file,identity,gender per photo) and its photos are not the "
                     f"ones labelled in {SHARED_LABELS.name}")


def _has_face(path: Path, mesh: FaceMesh) -> bool:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return image is not None and bool(mesh.detect(image))


def load(folder: str | Path, check_faces: bool = True) -> list[Identity]:
    """The identities of the photos in `folder` (module docstring), sorted by id, photos by name."""
    folder = Path(folder)
    photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    labels = _labels_for(folder, photos)
    for name in sorted(set(labels) - {p.name for p in photos}):
        log.warning("%s: %s is labelled but missing, skipped", folder, name)
    groups: dict[Label, list[Path]] = defaultdict(list)
    kinds: dict[str, set[Label]] = defaultdict(set)
    with FaceMesh(max_faces=1, static=True) as mesh:
        for photo in photos:
            if photo.name not in labels:
                log.warning("%s: %s has no label, skipped", folder, photo.name)
                continue
            if check_faces and not _has_face(photo, mesh):
                log.warning("%s: no face found in %s, skipped", folder, photo.name)
                continue
            label = labels[photo.name]
            groups[label].append(photo)
            kinds[label.identity].add(label)
    mixed = sorted(i for i, k in kinds.items() if len({label.gender for label in k}) > 1)
    if mixed:
        raise ValueError(f"{folder}: identities labelled with more than one gender: {mixed}")
    mixed = sorted(i for i, k in kinds.items() if len({label.voice for label in k}) > 1)
    if mixed:
        raise ValueError(f"{folder}: identities labelled with more than one voice: {mixed}")
    return [Identity(label.identity, label.gender, tuple(paths), label.voice)
            for label, paths in sorted(groups.items(), key=lambda item: item[0].identity)]
