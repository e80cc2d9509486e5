"""The synthetic audio-visual corpus: plan, generate in parallel, resume, summarise.

Layout: OUT/{train,val,test}/SPEAKER/CLIP.{mp4,wav,txt,json} (+ CLIP.noisy-KIND.wav), with at OUT's root
corpus.json (the settings that define the content), speakers.json (every speaker: identity, voice,
split), babble.npz (the crowd the babble copies mix: utterances of train speakers, made once from the
seed), manifest.jsonl (one line per clip of the corpus, in clip order) and summary.json (hours and clips
per split, size, speed). The manifest also marks OUT as our corpus for engines.clipsets.

Each clip's .json: id, index, seed and clip_seed, split, speaker, identity, gender, voice (a
engines.data.voices id), kind (grid | open), text, photo, fps, sample_rate, frames, duration_s, phones
([symbol, start_s, dur_s], pauses "_" included), viseme_params and visemes (one row per video frame),
render (the RenderParams; the clip's own pose, light and noise are drawn from its seed), crf, noisy
([{kind, snr_db, file}]) and files (written last: the clip is complete).

Determinism: clip i is planned from its own seed, derived from (seed, i) (numpy SeedSequence), and
generated from it alone: speaker (round-robin over a seed-shuffled speaker order, so every speaker gets
its share), split, sentence kind (GRID with probability `grid_fraction`, else open vocabulary),
sentence, photo of the identity, render, compression and noise. So the same seed gives the same files,
in any number of processes, and `--hours H` is the shortest prefix of that sequence of clips lasting H.
That holds on one machine: another one, or other versions of the tools (`made_with`), can make slightly
other bytes (session 30: session 1's code and today's made the bundled demo clip again, alike, but 1.2
grey levels from session 1's file on average), so summary.json keeps a digest of each split's files of
each kind, and figures measured on two corpora compare only where their test splits' digests match.

Sentence split: a fixed ~20 % of sentences (a hash of the words: the same in every corpus) is reserved
for val and test; train never says them. val = those sentences spoken by train speakers (about
`val_fraction` of their clips); test = test speakers (engines.data.speakers: unseen faces AND unseen
voice settings) saying them.

Resuming: a clip is complete when its .json (renamed into place last, engines.data.mux) and the files it
lists exist; a rerun skips complete clips and regenerates the rest. The settings in corpus.json must
match (another seed or face folder would mix two corpora: refused); corpus.json also keeps a hash of
the generator's code, and a rerun by changed code is warned that older clips may differ. Clips that this
run made beyond its target (the processes still busy when the target was reached) are deleted, so the
folder holds exactly the corpus the command describes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing
import os
import resource
import shutil
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from engines.audio.mel import SAMPLES_PER_FRAME, fit_to_frames
from engines.data import mux
from engines.data.speakers import TEST_FRACTION, Speaker, assign, split_sizes

log = logging.getLogger(__name__)

CORPUS_VERSION = 1
FPS = 25
SAMPLE_RATE = 16000
NOISE_KINDS = ("babble", "machine", "reverb")
MANIFEST, SETTINGS, SPEAKERS, SUMMARY = "manifest.jsonl", "corpus.json", "speakers.json", "summary.json"
BABBLE = "babble.npz"
BABBLE_TALKERS = 12
SPLITS = ("train", "val", "test")


class CorpusError(Exception):
    """A corpus that cannot be made as asked (bad settings, a folder made with other settings)."""


@dataclass(frozen=True)
class Settings:
    """What defines a corpus's content (corpus.json). How much of it and how fast are run options."""

    seed: int = 0
    faces: str = ""
    grid_fraction: float = 0.5
    noisy: tuple[str, ...] = NOISE_KINDS
    val_fraction: float = 0.1
    test_fraction: float = TEST_FRACTION
    crf: tuple[float, float] = (23.0, 28.0)
    snr_db: tuple[float, float] = (0.0, 20.0)
    closure: float = 0.0  # engines.data.visemes: how far tongue consonants close the mouth (0: as before)
    rest_open: float = 0.0  # each clip's mouth rests open by a draw in [0, rest_open] (0: closed, as before)
    version: int = CORPUS_VERSION

    def check(self) -> None:
        problems = [msg for bad, msg in (
            (not 0 <= self.grid_fraction <= 1, "grid fraction must be in [0, 1]"),
            (not 0 <= self.val_fraction < 1, "val fraction must be in [0, 1)"),
            (not 0 <= self.test_fraction < 1, "test fraction must be in [0, 1)"),
            (bool(set(self.noisy) - set(NOISE_KINDS)), f"unknown noise kind(s) "
             f"{sorted(set(self.noisy) - set(NOISE_KINDS))}; known: {', '.join(NOISE_KINDS)}"),
            (not 0 <= self.crf[0] <= self.crf[1] <= 51, "crf range must be within [0, 51]"),
            (self.snr_db[0] > self.snr_db[1], "snr range must be low, high"),
            (not 0 <= self.closure <= 1, "closure must be in [0, 1]"),
            (not 0 <= self.rest_open <= 1, "rest_open must be in [0, 1]"),
        ) if bad]
        if problems:
            raise CorpusError("; ".join(problems))

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class ClipSpec:
    """Everything one clip is made from (planned in the main process, made in a worker)."""

    index: int
    seed: int  # the clip's own seed, derived from (corpus seed, index)
    split: str
    speaker: Speaker
    kind: str  # grid | open
    text: str
    photo: Path

    @property
    def id(self) -> str:
        return f"{self.split}/{self.speaker.id}/u{self.index:06d}"


@dataclass
class ClipResult:
    id: str
    index: int
    duration_s: float
    record: dict  # the manifest line
    made: bool  # False: found complete on disk
    stage_cpu_s: dict[str, float] = field(default_factory=dict)


def held_out_sentence(text: str, fraction: float = TEST_FRACTION) -> bool:
    """Whether a sentence is reserved for val and test (module docstring)."""
    digest = hashlib.blake2b(" ".join(text.lower().split()).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 1000 < round(fraction * 1000)


def cpu_seconds() -> float:
    """CPU time of this process and of the children it has waited for (mbrola, espeak-ng; pool workers):
    the cost of synthesis whatever else shares the cores."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def clip_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


class Planner:
    """Clip i of the corpus made with `settings` (module docstring)."""

    def __init__(self, settings: Settings, speakers: Sequence[Speaker]) -> None:
        from engines.data import text

        self.settings = settings
        self.speakers = list(speakers)
        rng = np.random.default_rng([settings.seed, 0x0D0E])
        self.order = [self.speakers[i] for i in rng.permutation(len(self.speakers))]
        sentences = text.open_sentences()
        self.open = {held: [s for s in sentences if held_out_sentence(s, settings.test_fraction) == held]
                     for held in (False, True)}
        if not self.open[False] or not self.open[True]:
            raise CorpusError("the open-vocabulary sentences do not split into train and held-out ones")
        self._grid = text.grid_sentence

    def spec(self, index: int) -> ClipSpec:
        s = self.settings
        seed = clip_seed(s.seed, index)
        rng = np.random.default_rng(seed)
        speaker = self.order[index % len(self.order)]
        split = "test" if speaker.split == "test" else ("val" if rng.random() < s.val_fraction else "train")
        held = split != "train"
        kind = "grid" if rng.random() < s.grid_fraction else "open"
        if kind == "grid":
            sentence = self._grid(rng)
            while held_out_sentence(sentence, s.test_fraction) != held:
                sentence = self._grid(rng)
        else:
            pool = self.open[held]
            sentence = pool[int(rng.integers(len(pool)))]
        photos = speaker.identity.photos
        return ClipSpec(index, seed, split, speaker, kind, sentence, photos[int(rng.integers(len(photos)))])


# ---------------------------------------------------------------- making one clip (in a worker)

_FACES: dict[Path, object] = {}


def _face_model(photo: Path) -> object:
    from engines.data import render

    if photo not in _FACES:
        _FACES[photo] = render.FaceModel.from_photo(photo)
    return _FACES[photo]


def _rounded(values: np.ndarray, places: int = 4) -> list:
    return np.round(np.asarray(values, np.float64), places).tolist()


@lru_cache(maxsize=2)
def _babble_sources(path: Path) -> list[np.ndarray]:
    with np.load(path) as data:
        return [data[k] for k in sorted(data.files)]


def babble_bank(out: Path, settings: Settings, planner: Planner) -> Path:
    """OUT/babble.npz: BABBLE_TALKERS utterances of train speakers saying train sentences, the voices of
    the babble copies (made once, from the seed alone, so every process mixes the same crowd)."""
    from engines.data import speech

    path = out / BABBLE
    if path.is_file():
        return path
    rng = np.random.default_rng([settings.seed, 0xBAB])
    talkers = [s for s in planner.speakers if s.split == "train"]
    sources = {}
    for k in range(BABBLE_TALKERS):
        voice = talkers[int(rng.integers(len(talkers)))].voice
        sentence = planner.open[False][int(rng.integers(len(planner.open[False])))]
        sources[f"u{k:02d}"] = speech.synthesize(sentence, voice).audio
    tmp = path.with_name(f"babble.{os.getpid()}{mux.PART}.npz")
    np.savez(tmp, **sources)
    os.replace(tmp, path)
    return path


def make_clip(spec: ClipSpec, settings: Settings, out: Path) -> ClipResult:
    """Generate and write one clip (speech, mouth track, face video, noisy copies)."""
    from engines.data import noise, render, speech, visemes

    stage: dict[str, float] = {}
    t0 = cpu_seconds()
    # a fourth stream for the mouth at rest, so that corpora made without it keep their draws
    streams = np.random.SeedSequence(spec.seed).spawn(4)
    render_rng, noise_rng, mux_rng, rest_rng = (np.random.default_rng(s) for s in streams)
    voice = spec.speaker.voice
    utterance = speech.synthesize(spec.text, voice)
    n_frames = math.ceil(len(utterance.audio) / SAMPLES_PER_FRAME)
    audio = fit_to_frames(utterance.audio, n_frames)
    stage["speech"] = cpu_seconds() - t0

    t0 = cpu_seconds()
    rest_open = round(float(rest_rng.uniform(0.0, settings.rest_open)), 3) if settings.rest_open else 0.0
    track = visemes.track(utterance.phones, n_frames, float(FPS), rest_open, settings.closure)
    params = render.RenderParams()  # render_clip draws the clip's own pose, light and noise from its rng
    frames = render.render_clip(_face_model(spec.photo), track, render_rng, params)
    stage["render"] = cpu_seconds() - t0

    t0 = cpu_seconds()
    noisy, noisy_meta = {}, []
    for kind in settings.noisy:
        snr = float(noise_rng.uniform(*settings.snr_db))
        crowd = _babble_sources(out / BABBLE) if kind == "babble" else None
        noisy[kind] = noise.noisy_copy(audio, kind, noise_rng, snr, babble_sources=crowd)
        name = mux.noisy_name(Path(spec.id), kind).name
        noisy_meta.append({"kind": kind, "snr_db": round(snr, 2), "file": name})
    stage["noise"] = cpu_seconds() - t0

    t0 = cpu_seconds()
    crf = round(float(mux_rng.uniform(*settings.crf)), 1)
    meta = {
        "id": spec.id, "index": spec.index, "seed": settings.seed, "clip_seed": spec.seed,
        "split": spec.split, "speaker": spec.speaker.id, "identity": spec.speaker.identity.id,
        "gender": spec.speaker.gender, "voice": voice.id, "kind": spec.kind, "text": spec.text,
        "photo": spec.photo.name, "fps": FPS, "sample_rate": SAMPLE_RATE, "frames": n_frames,
        "duration_s": n_frames / FPS,
        "phones": [[p.symbol, round(p.start_s, 4), round(p.dur_s, 4)] for p in utterance.phones],
        "viseme_params": list(visemes.VISEME_PARAMS), "visemes": _rounded(track), "closure": settings.closure,
        "rest_open": rest_open,
        "render": _jsonable(params), "crf": crf, "noisy": noisy_meta,
    }
    mux.write_clip(out / spec.id, frames, audio, spec.text, meta, crf, noisy)
    stage["encode"] = cpu_seconds() - t0
    return ClipResult(spec.id, spec.index, n_frames / FPS, manifest_line(meta), True, stage)


def _jsonable(params: object) -> object:
    value = asdict(params) if hasattr(params, "__dataclass_fields__") else dict(vars(params))
    return json.loads(json.dumps(value, default=lambda v: _rounded(v) if isinstance(v, np.ndarray)
                                 else str(v)))


def manifest_line(meta: dict) -> dict:
    keys = ("id", "split", "speaker", "identity", "gender", "voice", "kind", "text", "frames", "duration_s")
    return {**{k: meta[k] for k in keys}, "noisy": [n["kind"] for n in meta.get("noisy", [])]}


def existing(spec: ClipSpec, out: Path) -> ClipResult | None:
    """The clip as found complete on disk, or None (then any partial files of it are deleted)."""
    stem = out / spec.id
    if mux.is_complete(stem):
        meta = json.loads(stem.with_name(stem.name + ".json").read_text())
        return ClipResult(spec.id, spec.index, float(meta["duration_s"]), manifest_line(meta), False)
    mux.remove_clip(stem)
    return None


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # one clip per core: no thread pools fighting over the cores


def _make(args: tuple[ClipSpec, Settings, Path]) -> ClipResult:
    return make_clip(*args)


class _Inline:
    """The pool interface for jobs=1: work in this process."""

    class _Done:
        def __init__(self, value: ClipResult) -> None:
            self.value = value

        def get(self) -> ClipResult:
            return self.value

    def apply_async(self, fn: Callable, args: tuple) -> _Done:
        return self._Done(fn(*args))

    def terminate(self) -> None:
        pass

    def join(self) -> None:
        pass


# ---------------------------------------------------------------- the corpus


def speakers_for(settings: Settings) -> list[Speaker]:
    from engines.data import identities, voices

    faces = Path(settings.faces)
    if not faces.is_dir():
        raise CorpusError(f"{faces}: no such folder of face photos")
    found = identities.load(faces)
    if not found:
        raise CorpusError(f"{faces}: no usable face photo")
    return assign(found, voices.voice_bank(), settings.seed, settings.test_fraction)


GENERATOR_MODULES = ("text", "phonemes", "voices", "speech", "noise", "visemes", "render", "identities",
                     "speakers", "mux", "corpus")


def code_fingerprint() -> str:
    """A hash of the generator's source: clips made by different code may differ for the same seed."""
    digest = hashlib.blake2b(digest_size=8)
    for name in GENERATOR_MODULES:
        digest.update((Path(__file__).with_name(f"{name}.py")).read_bytes())
    return digest.hexdigest()


def _check_settings(out: Path, settings: Settings) -> None:
    """Refuse a folder made with other settings; warn when the generator code changed since it was begun."""
    path = out / SETTINGS
    wanted = settings.to_json()
    code = code_fingerprint()
    if path.is_file():
        # a setting added since the folder was begun has a default that makes what older code made
        found = {**Settings().to_json(), **json.loads(path.read_text())}
        made_by = found.pop("code", None)
        differ = sorted(k for k in set(found) | set(wanted) if found.get(k) != wanted.get(k))
        if differ:
            raise CorpusError(f"{out} holds a corpus made with other settings ({', '.join(differ)}: "
                              f"{[found.get(k) for k in differ]} there, {[wanted.get(k) for k in differ]} "
                              "asked); use another --out or the same settings")
        if made_by != code:
            log.warning("%s was begun by other generator code (%s, now %s): its older clips may differ from "
                        "what this code makes from the same seed", out, made_by, code)
    else:
        out.mkdir(parents=True, exist_ok=True)
        _write_json(path, {**wanted, "code": code})


def _write_json(path: Path, value: object, lines: bool = False) -> None:
    tmp = path.with_name(path.name + mux.PART)
    text = "".join(json.dumps(v) + "\n" for v in value) if lines else json.dumps(value, indent=1)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _size(out: Path) -> int:
    return sum(p.stat().st_size for p in out.rglob("*") if p.is_file())


@dataclass
class RunOptions:
    hours: float | None = None
    clips: int | None = None
    jobs: int = 0  # 0: every core
    progress: bool = True

    def target(self) -> tuple[str, float]:
        if (self.hours is None) == (self.clips is None):
            raise CorpusError("give exactly one of hours or clips")
        if self.hours is not None:
            if not self.hours > 0:
                raise CorpusError("hours must be > 0")
            return "hours", self.hours * 3600.0
        if self.clips is None or self.clips < 1:
            raise CorpusError("clips must be >= 1")
        return "clips", float(self.clips)


def synth(out: Path | str, settings: Settings, options: RunOptions) -> dict:
    """Make (or complete) the corpus in `out`; returns the summary (also written to summary.json)."""
    from tqdm import tqdm

    out = Path(out)
    settings.check()
    unit, target = options.target()
    jobs = options.jobs or os.cpu_count() or 1
    started, cpu_started = time.perf_counter(), cpu_seconds()
    speakers = speakers_for(settings)
    if not any(s.split == "train" for s in speakers):
        raise CorpusError("no train speakers: too few identities or voices")
    planner = Planner(settings, speakers)
    _check_settings(out, settings)
    for stray in out.rglob(f"*{mux.PART}*"):  # left by an interrupted run
        stray.unlink()
    if "babble" in settings.noisy:
        babble_bank(out, settings, planner)
    _write_json(out / SPEAKERS, [{"id": s.id, "identity": s.identity.id, "gender": s.gender,
                                  "voice": s.voice.id, "split": s.split,
                                  "photos": [p.name for p in s.identity.photos]} for s in speakers])
    results: list[ClipResult] = []
    made_s, stage = 0.0, dict.fromkeys(("speech", "render", "noise", "encode"), 0.0)
    done = 0.0
    pool = _Inline() if jobs == 1 else multiprocessing.get_context("spawn").Pool(jobs, _init_worker)
    in_flight: deque = deque()  # (spec, ClipResult found on disk | AsyncResult), in clip order
    index = 0
    minutes = ("{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} min of speech "
               "[{elapsed}<{remaining}{postfix}]")
    bar = tqdm(total=round(target) if unit == "clips" else round(target / 60, 1), unit="clip",
               bar_format=None if unit == "clips" else minutes, desc=f"corpus {out.name}",
               disable=not options.progress)
    try:
        while done < target:
            while len(in_flight) < 2 * jobs:  # a short queue: little is made beyond the target
                spec = planner.spec(index)
                found = existing(spec, out)
                in_flight.append((spec, found or pool.apply_async(_make, ((spec, settings, out),))))
                index += 1
            _, pending = in_flight.popleft()
            result = pending if isinstance(pending, ClipResult) else pending.get()
            results.append(result)
            done += result.duration_s if unit == "hours" else 1
            if result.made:
                made_s += result.duration_s
                for k, v in result.stage_cpu_s.items():
                    stage[k] += v
            # The last clip overruns the target; the bar stops at its total.
            bar.update(min(round(result.duration_s / 60, 4) if unit == "hours" else 1, bar.total - bar.n))
            bar.set_postfix_str(f"{made_s / max(time.perf_counter() - started, 1e-9):.1f}x real time")
    finally:
        bar.close()
        pool.terminate()
        pool.join()
        for spec, pending in in_flight:  # started by this run beyond the target (or interrupted): not kept
            if not isinstance(pending, ClipResult):
                mux.remove_clip(out / spec.id)
    _prune_empty(out)
    _write_json(out / MANIFEST, [r.record for r in results], lines=True)
    summary = summarise(out, results, speakers, time.perf_counter() - started, cpu_seconds() - cpu_started,
                        made_s, stage, jobs)
    _write_json(out / SUMMARY, summary)
    return summary


def _prune_empty(out: Path) -> None:
    for split in SPLITS:
        for folder in sorted((out / split).glob("*")) if (out / split).is_dir() else []:
            if folder.is_dir() and not any(folder.iterdir()):
                shutil.rmtree(folder)


def summarise(out: Path, results: Sequence[ClipResult], speakers: Sequence[Speaker], wall_s: float,
              cpu_s: float, made_s: float, stage: dict[str, float], jobs: int) -> dict:
    """The corpus in figures. Speed: x_real_time is seconds of speech made per second of wall time (what
    the machine gave, shared or not); cpu_x_real_time is the same on `jobs` cores used by nothing else:
    speech seconds / (CPU seconds of the whole run, every process, / jobs)."""
    per_split = {split: [r for r in results if r.record["split"] == split] for split in SPLITS}
    size = _size(out)
    hours = sum(r.duration_s for r in results) / 3600
    return {
        "clips": {k: len(v) for k, v in per_split.items()},
        "hours": {k: round(sum(r.duration_s for r in v) / 3600, 4) for k, v in per_split.items()},
        "speakers": {k: len({r.record["speaker"] for r in v}) for k, v in per_split.items()},
        "kinds": {k: sum(r.record["kind"] == k for r in results) for k in ("grid", "open")},
        "total_clips": len(results), "total_hours": round(hours, 4),
        "speaker_split": split_sizes(speakers),
        "size_bytes": size, "mb_per_hour": round(size / 1e6 / hours, 1) if hours else None,
        "jobs": jobs, "wall_s": round(wall_s, 1), "made_clips": sum(r.made for r in results),
        "made_s": round(made_s, 1), "x_real_time": round(made_s / wall_s, 2) if wall_s > 0 else None,
        "cpu_s": round(cpu_s, 1), "cpu_x_real_time": round(made_s * jobs / cpu_s, 2) if cpu_s > 0 else None,
        "stage_cpu_s": {k: round(v, 1) for k, v in stage.items()},
        "digests": content_digests(out, [r.record for r in results]),
        "made_with": tool_versions(),
    }


def content_digests(out: Path, records: Sequence[dict]) -> dict[str, dict[str, str]]:
    """Per split, per kind of clip file (mp4, wav, json, txt, noisy-KIND.wav), a hash of those files' bytes
    in the order of `records` (manifest lines; module docstring: where the same seed need not make the same
    bytes)."""
    hashes: dict[str, dict[str, hashlib.blake2b]] = {}
    for record in records:
        stem = out / record["id"]
        for path in sorted(stem.parent.glob(f"{stem.name}.*")):
            kind = path.name[len(stem.name) + 1:]
            split = hashes.setdefault(record["split"], {})
            split.setdefault(kind, hashlib.blake2b(digest_size=8)).update(path.read_bytes())
    return {split: {kind: h.hexdigest() for kind, h in sorted(kinds.items())}
            for split, kinds in sorted(hashes.items())}


def tool_versions() -> dict[str, str]:
    """What shapes a clip's bytes besides our code, settings and seed: the rendering, encoding and speech
    libraries, and the CPU (their SIMD paths)."""
    import subprocess
    from importlib import metadata

    import av
    import cv2

    def package(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "absent"

    try:
        espeak = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, timeout=10,
                                check=False).stdout.split("Data at")[0].strip()
    except (OSError, subprocess.TimeoutExpired):
        espeak = "absent"
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    models = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return {"numpy": np.__version__, "opencv": cv2.__version__, "av": av.__version__,
            "libavcodec": ".".join(map(str, av.library_versions["libavcodec"])),
            "piper-tts": package("piper-tts"), "espeak-ng": espeak, "cpu": models[0] if models else "unknown"}
