from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from engines.eval.clips import Clip, detect_layout, load_clips, read_audio, wav_for
from tests.helpers import SHARED

GRID_DEV = SHARED / "real" / "grid-dev"


def tone(seconds: float, rate: int, hz: float = 440.0) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * hz * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


def write_video(path: Path, seconds: float, audio_start_s: float, rate: int = 48000) -> None:
    """A 25 fps video whose audio track (440 Hz, stereo) starts `audio_start_s` after its first frame."""
    import av

    with av.open(str(path), "w") as out:
        video = out.add_stream("mpeg4", rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = out.add_stream("pcm_s16le", rate=rate, layout="stereo")
        audio.time_base = Fraction(1, rate)
        for i in range(int(seconds * 25)):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 8 * i % 255, np.uint8), format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode())
        samples = (tone(seconds - audio_start_s, rate) * 32767).astype(np.int16)
        for start in range(0, len(samples), 1024):
            block = samples[start:start + 1024]
            frame = av.AudioFrame.from_ndarray(np.stack([block, block]).T.reshape(1, -1).copy(), format="s16",
                                               layout="stereo")
            frame.sample_rate = rate
            frame.pts = round(audio_start_s * rate) + start
            out.mux(audio.encode(frame))
        out.mux(audio.encode())


def test_audio_track_is_aligned_to_the_first_video_frame(tmp_path: Path) -> None:
    video = tmp_path / "late.mkv"
    write_video(video, seconds=1.0, audio_start_s=0.2)
    audio = read_audio(video)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert np.abs(audio[:3100]).max() < 1e-3  # the 200 ms before the audio starts is silence
    assert np.abs(audio[3300:6000]).max() > 0.4
    assert abs(len(audio) - 16000) < 400
    assert not audio.flags.writeable


def test_audio_files_are_resampled_to_16k_mono(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    sf.write(path, np.stack([tone(0.5, 44100), tone(0.5, 44100)], axis=1), 44100)
    audio = read_audio(path)
    assert len(audio) == 8000
    spectrum = np.abs(np.fft.rfft(audio))
    assert abs(np.argmax(spectrum) * 16000 / len(audio) - 440) < 3


def test_corpus_layout_with_splits_transcripts_and_speakers(tmp_path: Path) -> None:
    layout = (("test", "a/clip1", "spk3"), ("test", "a/clip2", None), ("train", "x", "spk1"))
    for split, name, speaker in layout:
        stem = tmp_path / split / name
        stem.parent.mkdir(parents=True, exist_ok=True)
        sf.write(f"{stem}.wav", tone(0.3, 16000), 16000)
        Path(f"{stem}.txt").write_text(f"the sentence of {name}\n")
        if speaker:
            Path(f"{stem}.json").write_text(json.dumps({"speaker": speaker, "phones": []}))
    assert detect_layout(tmp_path) == "corpus"
    clips = load_clips(tmp_path, split="test")
    assert [c.id for c in clips] == ["test/a/clip1", "test/a/clip2"]
    assert clips[0].text == "the sentence of a/clip1" and clips[0].speaker == "spk3"
    assert clips[1].speaker is None and clips[1].speaker_key == "clip:test/a/clip2"
    assert clips[0].audio == tmp_path / "test/a/clip1.wav" and clips[0].video is None
    assert len(load_clips(tmp_path)) == 3 and len(load_clips(tmp_path, limit=1)) == 1


def test_corpus_video_with_its_own_wav(tmp_path: Path) -> None:
    write_video(tmp_path / "c.mp4", seconds=0.4, audio_start_s=0.0)
    sf.write(tmp_path / "c.wav", tone(0.4, 16000), 16000)
    (clip,) = load_clips(tmp_path, layout="corpus")
    assert clip.video == tmp_path / "c.mp4" and clip.audio == tmp_path / "c.wav" and clip.text is None


def test_grid_layout_reads_align_files_else_decodes_names(tmp_path: Path) -> None:
    for speaker in ("s1", "s2"):
        (tmp_path / speaker / "video").mkdir(parents=True)
        (tmp_path / speaker / "video" / "bbaf2n.mpg").write_bytes(b"")
    (tmp_path / "s1" / "align").mkdir()
    (tmp_path / "s1" / "align" / "bbaf2n.align").write_text(
        "0 23750 sil\n23750 29500 bin\n29500 34000 blue\n34000 35500 at\n35500 41000 f\n"
        "41000 47250 two\n47250 53000 again\n53000 74500 sil\n")
    assert detect_layout(tmp_path) == "grid"
    clips = load_clips(tmp_path)
    assert [(c.id, c.speaker, c.text) for c in clips] == [
        ("s1/video/bbaf2n", "s1", "bin blue at f two again"),  # the .align file wins
        ("s2/video/bbaf2n", "s2", "bin blue at f two now"),
    ]


def test_lrs3_layout(tmp_path: Path) -> None:
    folder = tmp_path / "test" / "0Fi83BHQsMA"
    folder.mkdir(parents=True)
    (folder / "00002.mp4").write_bytes(b"")
    (folder / "00002.txt").write_text("Text:  WHEN I WAS 12\nConf:  4\n\n"
                                      "WORD START END ASDSCORE\nWHEN 0.1 0.2 1.0\n")
    (tmp_path / "pretrain").mkdir()
    assert detect_layout(tmp_path) == "lrs3"
    (clip,) = load_clips(tmp_path, split="test")
    assert (clip.id, clip.text, clip.speaker) == ("test/0Fi83BHQsMA/00002", "WHEN I WAS 12", "0Fi83BHQsMA")
    assert clip.audio == folder / "00002.mp4"


def test_list_file(tmp_path: Path) -> None:
    sf.write(tmp_path / "one.wav", tone(0.2, 16000), 16000)
    sf.write(tmp_path / "lbax4n.wav", tone(0.2, 16000), 16000)
    (tmp_path / "sub").mkdir()
    sf.write(tmp_path / "sub" / "two.wav", tone(0.2, 16000), 16000)
    (tmp_path / "sub" / "two.txt").write_text("from the side file")
    listing = tmp_path / "clips.txt"
    listing.write_text("# clips\none.wav\tgiven here  # comment\n\nsub/two.wav\nlbax4n.wav\n")
    assert detect_layout(listing) == "list"
    clips = load_clips(listing)
    assert [(c.id, c.text) for c in clips] == [  # the list's order
        ("one", "given here"), ("two", "from the side file"), ("lbax4n", "lay blue at x four now")]
    listing.write_text("one.wav\nnothere.wav\n")
    with pytest.raises(ValueError, match=r"clips.txt:2: no such file"):
        load_clips(listing)


def test_bad_sources_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no clips"):
        load_clips(tmp_path)
    with pytest.raises(ValueError, match="no such file"):
        load_clips(tmp_path / "missing")
    with pytest.raises(ValueError, match="unknown layout"):
        load_clips(tmp_path, layout="timit")
    (tmp_path / "x.wav").write_bytes(b"not a wav")
    with pytest.raises(ValueError, match=r"x\.wav: cannot read"):
        read_audio(tmp_path / "x.wav")
    (tmp_path / "x.mp4").write_bytes(b"not a video either")
    with pytest.raises(ValueError, match=r"x\.mp4: cannot decode"):
        read_audio(tmp_path / "x.mp4")


def test_generated_wavs_are_found_by_clip_id_or_basename(tmp_path: Path) -> None:
    (tmp_path / "test" / "a").mkdir(parents=True)
    (tmp_path / "test" / "a" / "c1.wav").write_bytes(b"")
    (tmp_path / "c2.wav").write_bytes(b"")
    assert wav_for(tmp_path, Clip("test/a/c1", Path("x"))) == tmp_path / "test" / "a" / "c1.wav"
    assert wav_for(tmp_path, Clip("test/b/c2", Path("x"))) == tmp_path / "c2.wav"
    assert wav_for(tmp_path, Clip("c3", Path("x"))) is None


@pytest.mark.skipif(not any(GRID_DEV.glob("*.mpg")), reason=f"no GRID clips in {GRID_DEV}")
def test_real_grid_clips() -> None:
    clips = load_clips(GRID_DEV)
    assert [c.text for c in clips] == [
        "bin blue at f two now", "bin red by k seven now", "lay blue at x four now"]
    audio = clips[0].reference()
    assert len(audio) == pytest.approx(2.98 * 16000, rel=0.01)  # 44.1 kHz stereo → 16 kHz mono
    assert 0.05 < np.sqrt(np.mean(audio**2)) < 0.5
