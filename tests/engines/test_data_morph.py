"""Derived faces (engines.data.morph): a morph is a face, a folder of them holds only training people,
pins their voices, and the corpus made from it has only training speakers; training joins two corpora."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from engines.data import identities, loaders
from engines.data.corpus import RunOptions, Settings, synth
from engines.data.identities import Identity
from engines.data.morph import SIZE, make_folder, morph
from engines.data.speakers import assign
from engines.data.voices import voice_bank
from engines.face.mesh import FaceMesh
from engines.train.recipes.common import DataOptions, summarize
from tests.helpers import SHARED

FACES = SHARED / "faces"
pytestmark = pytest.mark.skipif(not FACES.is_dir(), reason=f"no face photos at {FACES}")


def _mesh(path: Path) -> tuple[np.ndarray, np.ndarray]:
    image = cv2.imread(str(path))
    with FaceMesh(max_faces=1, static=True) as mesh:
        (face,) = mesh.detect(image)
    return image, face.landmarks


def test_a_morph_is_a_face_between_its_two_people() -> None:
    (a, pa), (b, pb) = _mesh(FACES / "img1.jpg"), _mesh(FACES / "img13.jpg")
    half = morph(a, pa, b, pb, 0.5)
    assert half.shape == (SIZE[1], SIZE[0], 3) and half.dtype == np.uint8
    with FaceMesh(max_faces=1, static=True) as mesh:
        faces = {alpha: mesh.detect(morph(a, pa, b, pb, alpha)) for alpha in (0.0, 0.5, 1.0)}
    assert all(len(found) == 1 for found in faces.values())
    # The mouth width (in eye distances) of the half morph lies between the two people's.
    def mouth(points: np.ndarray) -> float:
        width = np.linalg.norm(points[61, :2] - points[291, :2])
        return float(width / np.linalg.norm(points[33, :2] - points[263, :2]))
    widths = {alpha: mouth(found[0].landmarks) for alpha, found in faces.items()}
    low, high = sorted((widths[0.0], widths[1.0]))
    assert low - 0.02 <= widths[0.5] <= high + 0.02
    with pytest.raises(ValueError, match="alpha"):
        morph(a, pa, b, pb, 1.5)


def _corpus_record(root: Path) -> Path:
    """A speakers.json as `voxsight data synth` writes it: two training people and a test person."""
    root.mkdir()
    speakers = [
        {"id": "spk000", "identity": "anna", "gender": "female", "voice": "mbrola-us1-p1.00-r1.00",
         "split": "train", "photos": ["img1.jpg", "img2.jpg"]},
        {"id": "spk001", "identity": "bob", "gender": "male", "voice": "mbrola-us2-p1.00-r1.00",
         "split": "train", "photos": ["img13.jpg"]},
        {"id": "spk002", "identity": "carl", "gender": "male", "voice": "mbrola-us3-p1.00-r1.00",
         "split": "test", "photos": ["img16.jpg"]},
    ]
    (root / "speakers.json").write_text(json.dumps(speakers))
    return root


def test_a_morph_folder_holds_training_people_only_with_their_voices(tmp_path: Path) -> None:
    corpus = _corpus_record(tmp_path / "corpus")
    out = tmp_path / "morphs"
    stopped = tmp_path / "morphs.partial"  # what a stopped run leaves: cleared, never taken for the folder
    stopped.mkdir()
    (stopped / "half.jpg").write_bytes(b"")
    summary = make_folder(corpus, FACES, out, per_pair=2, seed=1, progress=False)
    assert not stopped.exists() and not (out / "half.jpg").exists()
    assert summary == {"identities": 1, "photos": 2, "skipped": 0, "pairs": 1, "out": str(out)}
    (found,) = identities.load(out)
    assert found.id == "anna+bob" and len(found.photos) == 2
    assert (found.gender, found.voice) in {("female", "mbrola-us1-p1.00-r1.00"),
                                           ("male", "mbrola-us2-p1.00-r1.00")}
    with pytest.raises(ValueError, match="not empty"):
        make_folder(corpus, FACES, out, progress=False)
    with pytest.raises(ValueError, match="per_pair"):
        make_folder(corpus, FACES, tmp_path / "none", per_pair=0, progress=False)
    with pytest.raises(ValueError, match=r"no speakers\.json"):
        make_folder(tmp_path, FACES, tmp_path / "other", progress=False)


def test_pinned_voices_make_training_speakers_and_leave_the_split_alone() -> None:
    people = [Identity(f"p{i:02d}", "female" if i % 3 else "male", (Path(f"p{i}.jpg"),)) for i in range(12)]
    derived = [Identity("p01+p02", "female", (Path("m.jpg"),), "mbrola-us1-p0.85-r0.90"),
               Identity("p00+p03", "male", (Path("n.jpg"),), "piper-joe-us-p1.00-r1.00")]
    bank = voice_bank()
    plain = assign(people, bank, seed=3)
    joined = assign(people + derived, bank, seed=3)
    by_identity = {s.identity.id: s for s in joined}
    for speaker in plain:  # the people split exactly as without the derived faces
        twin = by_identity[speaker.identity.id]
        assert (twin.split, twin.voice) == (speaker.split, speaker.voice)
    for identity in derived:
        speaker = by_identity[identity.id]
        assert speaker.split == "train" and speaker.voice.id == identity.voice
    with pytest.raises(ValueError, match="not in the bank"):
        assign([Identity("x", "male", (Path("x.jpg"),), "mbrola-zz9-p1.00-r1.00")], bank, seed=3)


def test_training_joins_two_corpora_with_distinct_ids(tmp_path: Path) -> None:
    folders = []
    for name, seed in (("base", 5), ("extra", 6)):
        folders.append(tmp_path / name)
        synth(folders[-1], Settings(seed=seed, faces=str(FACES), noisy=(), val_fraction=0.0),
              RunOptions(clips=2, jobs=1, progress=False))
    joined = loaders.load(folders, tmp_path / "cache", split=None)
    assert len(joined) == 4 and len({ref.id for ref in joined.clips}) == 4
    assert {ref.id.split("/", 1)[0] for ref in joined.clips} == {"base", "extra"}
    assert all(ref.speaker.split("/", 1)[0] in ("base", "extra") for ref in joined.clips)
    data = DataOptions(source=",".join(map(str, folders)), cache=str(tmp_path / "cache"), split="all")
    summary = summarize(data, joined.clips)
    assert summary["clips"] == 4 and [s["corpus"]["seed"] for s in summary["sources"]] == [5, 6]
    manifests = [json.loads(line) for folder in folders
                 for line in (folder / "manifest.jsonl").read_text().splitlines()]
    assert summary["hours"] == pytest.approx(sum(r["duration_s"] for r in manifests) / 3600, abs=1e-4)
    with pytest.raises(ValueError, match="no clip"):
        loaders.load(folders, tmp_path / "cache", split="nonexistent")
