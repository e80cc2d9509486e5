"""The synthetic corpus: layout, determinism, resuming, speaker splits, the mp4 it writes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from engines.clipsets import detect_layout, load_clips, read_audio
from engines.data import cli, mux
from engines.data.corpus import (
    MANIFEST,
    CorpusError,
    RunOptions,
    Settings,
    content_digests,
    held_out_sentence,
    synth,
)
from engines.data.identities import Identity
from engines.data.speakers import assign
from engines.data.voices import voice_bank
from tests.helpers import SHARED

FACES = SHARED / "faces"
needs_faces = pytest.mark.skipif(not FACES.is_dir(), reason=f"no face photos at {FACES}")
# Four people (two per gender, so each gender can hold one out for test), from the shared photos.
PEOPLE = (("img1.jpg", "female"), ("img2.jpg", "female"), ("img3.jpg", "male"), ("img4.jpg", "male"))


def face_folder(root: Path) -> Path:
    root.mkdir(parents=True)
    lines = ["file,identity,gender"]
    for n, (name, gender) in enumerate(PEOPLE):
        (root / name).symlink_to(FACES / name)
        lines.append(f"{name},person{n},{gender}")
    (root / "speakers.csv").write_text("\n".join(lines) + "\n")
    return root


def settings(faces: Path, **overrides) -> Settings:
    return Settings(**{"seed": 4, "faces": str(faces), "val_fraction": 0.3, **overrides})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    if not FACES.is_dir():
        pytest.skip(f"no face photos at {FACES}")
    root = tmp_path_factory.mktemp("corpus")
    faces = face_folder(root / "faces")
    out = root / "a"
    summary = synth(out, settings(faces), RunOptions(clips=6, jobs=2, progress=False))
    return out, faces, summary


def copy_of(out: Path, tmp_path: Path) -> Path:
    """A copy of the module's corpus to change (the fixture's is shared by every test)."""
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    return copy


def clip_jsons(out: Path) -> dict[str, dict]:
    return {p.relative_to(out).as_posix(): json.loads(p.read_text())
            for p in sorted(out.glob("*/*/*.json"))}


@needs_faces
def test_layout_files_and_manifest(corpus: tuple[Path, Path, dict]) -> None:
    out, _, summary = corpus
    lines = [json.loads(line) for line in (out / MANIFEST).read_text().splitlines()]
    assert len(lines) == 6 == summary["total_clips"] == summary["made_clips"]
    for line in lines:
        split, speaker, name = line["id"].split("/")
        assert split in ("train", "val", "test") and split == line["split"] and speaker == line["speaker"]
        stem = out / line["id"]
        meta = json.loads(stem.with_suffix(".json").read_text())
        on_disk = sorted(p.name for p in stem.parent.glob(f"{name}.*"))
        assert sorted([*meta["files"], f"{name}.json"]) == on_disk
        assert {n["kind"] for n in meta["noisy"]} == {"babble", "machine", "reverb"}
        assert stem.with_suffix(".txt").read_text().strip() == meta["text"]
        assert len(meta["visemes"]) == meta["frames"] and len(meta["visemes"][0]) == 5
        assert meta["phones"][0][0] == "_" and meta["phones"][-1][1] + meta["phones"][-1][2] > 0
        assert meta["kind"] in ("grid", "open") and meta["voice"] and meta["identity"]
        audio = read_audio(stem.with_suffix(".wav"))
        assert len(audio) == meta["frames"] * 640  # whole video frames of audio
        noisy = read_audio(mux.noisy_name(stem, "babble"))
        assert len(noisy) == len(audio) and not np.allclose(noisy, audio)
    assert not list(out.rglob(f"*{mux.PART}"))
    # The judges' reader sees the same clips, and not the noisy copies as clips of their own.
    assert detect_layout(out) == "corpus"
    assert sorted(c.id for c in load_clips(out)) == sorted(line["id"] for line in lines)


@needs_faces
def test_splits_hold_out_identities_voices_and_sentences(corpus: tuple[Path, Path, dict]) -> None:
    out, _, _ = corpus
    speakers = json.loads((out / "speakers.json").read_text())
    by_split = {side: [s for s in speakers if s["split"] == side] for side in ("train", "test")}
    assert by_split["train"] and by_split["test"]
    for key in ("identity", "voice"):
        assert not {s[key] for s in by_split["train"]} & {s[key] for s in by_split["test"]}
    voices = {v.id: v for v in voice_bank()}
    assert all(voices[s["voice"]].gender == s["gender"] for s in speakers)
    clips = clip_jsons(out)
    splits = {s["id"]: s["split"] for s in speakers}
    assert {meta["split"] for meta in clips.values()} == {"train", "val", "test"}
    for meta in clips.values():
        assert splits[meta["speaker"]] == ("test" if meta["split"] == "test" else "train")
        assert held_out_sentence(meta["text"]) == (meta["split"] != "train")


def test_speaker_assignment_is_gender_consistent_and_seeded() -> None:
    people = [Identity(f"p{i:02d}", "female" if i % 3 else "male", (Path(f"p{i}.jpg"),)) for i in range(30)]
    bank = voice_bank()
    speakers = assign(people, bank, seed=5)
    assert len(speakers) == 30 and len({s.identity.id for s in speakers}) == 30
    assert all(s.voice.gender == s.gender for s in speakers)
    train = [s for s in speakers if s.split == "train"]
    test = [s for s in speakers if s.split == "test"]
    assert {s.gender for s in test} == {"female", "male"}
    assert not {s.voice.id for s in train} & {s.voice.id for s in test}
    assert assign(people, bank, seed=5) == speakers
    assert assign(people, bank, seed=6) != speakers


@needs_faces
def test_same_seed_same_files(corpus: tuple[Path, Path, dict], tmp_path: Path) -> None:
    out, faces, _ = corpus
    again = tmp_path / "b"
    synth(again, settings(faces), RunOptions(clips=6, jobs=1, progress=False))
    names = sorted(p.relative_to(out) for p in out.glob("*/*/*") if p.suffix in (".json", ".wav"))
    assert names == sorted(p.relative_to(again) for p in again.glob("*/*/*") if p.suffix in (".json", ".wav"))
    for name in names:
        assert (out / name).read_bytes() == (again / name).read_bytes(), name


@needs_faces
def test_summary_digests_each_kind_of_file_per_split(corpus: tuple[Path, Path, dict], tmp_path: Path) -> None:
    out, _, summary = corpus
    records = [json.loads(line) for line in (out / MANIFEST).read_text().splitlines()]
    digests = summary["digests"]
    assert digests == content_digests(out, records)
    assert set(digests) == {r["split"] for r in records}
    for kinds in digests.values():
        assert {"mp4", "wav", "json", "txt", "noisy-babble.wav"} <= set(kinds)
    assert {"opencv", "av", "libavcodec", "espeak-ng", "cpu"} <= set(summary["made_with"])
    # one changed byte of one test clip's video: only the test split's mp4 digest moves
    copy = copy_of(out, tmp_path)
    video = sorted((copy / "test").glob("*/*.mp4"))[0]
    data = bytearray(video.read_bytes())
    data[len(data) // 2] ^= 1
    video.write_bytes(bytes(data))
    changed = content_digests(copy, records)
    assert changed["test"]["mp4"] != digests["test"]["mp4"]
    changed["test"]["mp4"] = digests["test"]["mp4"]
    assert changed == digests


@needs_faces
def test_rerun_makes_only_the_missing_clip(corpus: tuple[Path, Path, dict], tmp_path: Path) -> None:
    out, faces, _ = corpus
    copy = copy_of(out, tmp_path)
    victim = sorted(copy.glob("*/*/*.json"))[2].with_suffix("")
    original = {p.name: p.read_bytes() for p in victim.parent.glob(f"{victim.name}.*") if p.suffix != ".mp4"}
    mux.remove_clip(victim)
    (victim.parent / f"{victim.name}.wav{mux.PART}").write_bytes(b"half a file")  # as a crash leaves it
    others = {p: p.stat().st_mtime_ns for p in copy.glob("*/*/*.*") if not p.name.startswith(victim.name)}
    code = cli.main(["synth", "--out", str(copy), "--clips", "6", "--seed", "4", "--faces", str(faces),
                     "--val-fraction", "0.3", "--jobs", "1", "--no-progress"])
    assert code == 0
    summary = json.loads((copy / "summary.json").read_text())
    assert summary["made_clips"] == 1 and summary["total_clips"] == 6
    assert {p: p.stat().st_mtime_ns for p in others} == others
    assert {p.name: p.read_bytes() for p in victim.parent.glob(f"{victim.name}.*") if p.suffix != ".mp4"} \
        == original
    assert not list(copy.rglob(f"*{mux.PART}"))


@needs_faces
def test_other_settings_in_the_same_folder_are_refused(corpus: tuple[Path, Path, dict]) -> None:
    out, faces, _ = corpus
    before = (out / MANIFEST).read_bytes()
    with pytest.raises(CorpusError, match="seed"):
        synth(out, settings(faces, seed=5), RunOptions(clips=6, jobs=1, progress=False))
    assert cli.main(["synth", "--out", str(out), "--clips", "6", "--faces", str(faces), "--no-progress"]) == 2
    assert (out / MANIFEST).read_bytes() == before


@needs_faces
def test_a_corpus_begun_before_a_setting_existed_resumes_with_its_default(corpus: tuple[Path, Path, dict],
                                                                        tmp_path: Path) -> None:
    out, faces, _ = corpus
    copy = copy_of(out, tmp_path)
    recorded = json.loads((copy / "corpus.json").read_text())
    del recorded["closure"], recorded["rest_open"]  # as sessions before 23 wrote it
    (copy / "corpus.json").write_text(json.dumps(recorded))
    args = ["synth", "--out", str(copy), "--clips", "6", "--seed", "4", "--faces", str(faces),
            "--val-fraction", "0.3", "--jobs", "1", "--no-progress"]
    assert cli.main(args) == 0
    assert json.loads((copy / "summary.json").read_text())["made_clips"] == 0
    assert all(meta["closure"] == 0.0 == meta["rest_open"] for meta in clip_jsons(copy).values())
    assert cli.main([*args, "--closure", "1"]) == 2  # other mouths than the folder's clips have
    assert cli.main([*args, "--rest-open", "0.3"]) == 2
    with pytest.raises(CorpusError, match="closure"):
        settings(faces, closure=1.5).check()
    with pytest.raises(CorpusError, match="rest_open"):
        settings(faces, rest_open=-0.1).check()


@needs_faces
def test_rest_open_draws_each_clips_mouth_at_rest_and_keeps_everything_else(corpus: tuple[Path, Path, dict],
                                                                           tmp_path: Path) -> None:
    """The same clips with mouths that rest a little open: only the mouth track (and so the video) differs."""
    out, faces, _ = corpus
    other = tmp_path / "rest"
    synth(other, settings(faces, rest_open=0.3, noisy=()), RunOptions(clips=6, jobs=2, progress=False))
    closed, rest = clip_jsons(out), clip_jsons(other)
    assert closed.keys() == rest.keys()
    draws = [meta["rest_open"] for meta in rest.values()]
    assert all(0.0 <= d <= 0.3 for d in draws) and len(set(draws)) == len(draws)
    opened = []
    for name, meta in rest.items():
        before = closed[name]
        same = ("text", "phones", "render")
        assert [meta[k] for k in same] == [before[k] for k in same]
        wav = Path(name).with_suffix(".wav")
        assert (out / wav).read_bytes() == (other / wav).read_bytes()
        # the first frame is the pause before speech: the mouth at rest
        opened.append(np.asarray(meta["visemes"])[0, 0] - np.asarray(before["visemes"])[0, 0])
    assert min(opened) >= 0.0 and max(opened) > 0.05


@needs_faces
def test_mp4_has_h264_video_and_aac_audio_of_the_clip_length(corpus: tuple[Path, Path, dict]) -> None:
    import av

    out, _, _ = corpus
    meta = next(iter(clip_jsons(out).values()))
    stem = out / meta["id"]
    with av.open(str(stem.with_suffix(".mp4"))) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert video.codec_context.name == "h264" and audio.codec_context.name == "aac"
        assert float(video.average_rate) == 25.0 and (video.width, video.height) == (360, 288)
        frames = sum(1 for _ in container.decode(video))
    assert frames == meta["frames"]
    track = read_audio(stem.with_suffix(".mp4"))
    wav = read_audio(stem.with_suffix(".wav"))
    assert 0 <= len(track) - len(wav) <= 1024  # AAC pads its last frame
    n = len(wav)
    lag = int(np.argmax(np.correlate(track[:n], wav[4000:n - 4000], "valid"))) - 4000
    assert abs(lag) <= 16  # in sync with the clean target to 1 ms


@needs_faces
def test_hours_is_the_shortest_prefix_of_clips_that_lasts_that_long(corpus: tuple[Path, Path, dict],
                                                                    tmp_path: Path) -> None:
    out, faces, _ = corpus
    copy = copy_of(out, tmp_path)
    durations = [json.loads(line)["duration_s"] for line in (out / MANIFEST).read_text().splitlines()]
    hours = (sum(durations[:3]) - 0.01) / 3600
    summary = synth(copy, settings(faces), RunOptions(hours=hours, jobs=1, progress=False))
    assert summary["total_clips"] == 3 and summary["made_clips"] == 0  # found complete, nothing remade
    assert (copy / MANIFEST).read_text().splitlines() == (out / MANIFEST).read_text().splitlines()[:3]
