"""The lip-to-speech synthesizer: mouth ROIs, lip geometry and a face crop in; lip-read text, mel and
speech out. One class serves the offline command (a whole utterance at once) and the streaming node
(windows with a carried lip-reader state and a fixed past), so both run the same steps:

    frame features (front end, per frame) → reader (temporal stack + GRU: CTC log-probs and the features
    MelGen hears) → text (CTC decoding) → condition (features + identity embedding) → mel (few-step
    sampler, classifier-free guidance w1, ASR guidance w2 toward the lip-read text) → waveform (vocoder,
    or Griffin-Lim)
With a phone aligner and mel prior loaded, the prior speaks in the face's voice, and its mel is the mel
(prior_mode speak) or MelGen's starting point at step prior_t (prior_mode refine). It speaks phones the
aligner reads on the reader's features (or the text reader's, for an aligner trained on it): either each
10-ms step's most likely phone, or the lip-read text's phones timed there (`prior_speaks`; by default the
text only when the GRID grammar decoded it, as open-vocabulary text spoken is heard worse than the phones,
and a stream, having no whole utterance to read a text from, always speaks the phones:
engines.synth.streaming). Sphinx-GRID hears either far better than MelGen's speech from the lips alone
(notes/history.md, sessions 13 and 20). A text timing no speech has (too many phones of 20 ms or less: the
aligner could not follow the lips, as on real faces) is not spoken: MelGen speaks from the lips, and the
result's `note` says why. A plausible one is spoken paced: timed again with each phone's typical length in
speech (engines.text.durations), which sphinx and whisper hear better than the aligner's timing alone.

The frame, reader, denoiser, vocoder, phone-aligner and mel-prior networks run on the chosen backend
(engines.backends: PyTorch, ONNX Runtime, TensorRT, with fallback); the identity encoder runs once per face
and the guidance ASR always runs in PyTorch, because guidance needs its gradient (engines/synth/graphs.py).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from engines.audio.mel import MELS_PER_FRAME, SAMPLES_PER_FRAME, VIDEO_FPS
from engines.audio.torch_mel import GriffinLim
from engines.diffusion.guidance import ASR_INPUTS, GuidedDenoiser
from engines.diffusion.sampling import sample_ddim, sample_ddpm, sample_dpmpp_2m
from engines.diffusion.schedule import DiffusionSchedule
from engines.face import lips
from engines.face.align import normalise_roi
from engines.models.lipreader import LipReaderOutput, condition_features
from engines.models.melgen import MelGen, join_condition
from engines.params import param
from engines.synth.models import SynthModels
from engines.text.charset import decode, encode
from engines.text.ctc import GRID_GRAMMAR, beam_search, best_sentence, greedy_decode, text_confidence
from engines.text.durations import paced_align
from engines.text.phones import align_text, phone_rescorer, short_phone_share

log = logging.getLogger(__name__)

SAMPLERS: dict[str, Callable[..., Tensor]] = {"ddpm": sample_ddpm, "ddim": sample_ddim,
                                               "dpmpp_2m": sample_dpmpp_2m}
DECODERS = ("greedy", "beam", "grid", "auto")
PRIOR_MODES = ("speak", "refine", "off")
PRIOR_SPEAKS = ("auto", "text", "phones")
OPENING = lips.FEATURE_LENGTH - 2  # index of the inner-lip opening in lip geometry (engines.face.lips)
SILENCE = -1.0  # the normalised mel of the log floor
# Each decoder's low-confidence line, set on synthetic data alone (session 26): midway between the 5th
# percentile of the main corpus's val GRID sentences as read and the 95th of the same clips played backwards,
# for both shipped readers (`bench/confidence.py CORPUS --split val --decode D` prints it: greedy 0.64-0.66,
# beam 0.65-0.67, grid 0.42-0.43). A grammar forces some GRID sentence out of any lips, and its sentences
# spell what the frames favour less often than an open decoder's own best text, so they score lower.
LOW_CONFIDENCE = {"greedy": 0.65, "beam": 0.65, "grid": 0.42}
# `auto`'s line for the start of a GRID sentence (a partial reading), below which the lips most likely say no
# GRID sentence: a start is read less surely than a whole, so grid's own line sent GRID starts to the open
# beam. Set on the main corpus's val split (119 GRID and 128 open sentences; the partial text shown at each
# speech hop against the words said so far; exp38/partial_threshold.py, notes/history.md session 38): WER was
# flat on the open sentences from 0.12 up (64.8-64.9 %) and rose on GRID ones from 31.6 % at 0.16 to 35.1 %
# at 0.42.
GRID_START_LINE = 0.16
GRAMMAR_DECODERS = ("grid", "auto")  # decoders that may read the GRID grammar (and re-rank its sentences)


@dataclass(frozen=True)
class SynthParams:
    nfe: int = param(4, "network evaluations per generated window (the 400-step reference: --sampler ddpm "
                        "--nfe 400)")
    sampler: str = param("dpmpp_2m", "diffusion sampler", choices=tuple(SAMPLERS))
    w1: float = param(1.0, "classifier-free guidance weight (LipVoicer: 2; 1 is better at 4 steps here)")
    w2: float = param(0.0, "ASR guidance weight toward the lip-read text: the fraction of the clean "
                           "estimate each guided step moves (guidance_step x0; 0.1 is the tested value); "
                           "LipVoicer: 1.5 with guidance_step eps. Off by default: it helps only with "
                           "mostly-right text (decode grid), by less than the noise on unseen faces, and "
                           "costs 1.5x the compute (NOTES.md)")
    asr_t_max: float = param(270.0, "ASR guidance acts on steps t ≤ this, of 400 (LipVoicer: 270)")
    guidance_step: str = param("x0", "size ASR guidance's push in the clean estimate (x0, for few steps) or "
                                     "as LipVoicer in ε (eps, for ~400 steps)", choices=("x0", "eps"))
    asr_input: str = param("x0_denoiser", "what the guidance ASR hears: x_t at its step (LipVoicer), the "
                                          "clean estimate at t = 0 (x0), or that estimate with the gradient "
                                          "taken through MelGen (x0_denoiser: one more backward pass per "
                                          "guided step, in PyTorch whatever the backend; the best of the "
                                          "three toward the reference text, 15.7 % against 19.0 %, NOTES.md)",
                           choices=ASR_INPUTS)
    decode: str = param("auto", "lip-read text decoding: greedy, beam (open vocabulary), grid (the GRID "
                                "command grammar), auto (grid when its text is read with at least grid's "
                                "low-confidence line, else beam: GRID commands get their grammar, other "
                                "speech its open text). Offline, 108 test GRID clips: transcript WER beam "
                                "30.6 %, grid 9.3 %, auto 10.0 %; 108 open sentences: beam 60.6 %, grid "
                                "99.1 %, auto 60.6 % (none read as GRID); the speech of the GRID clips, "
                                "whisper tiny.en WER beam 45.1 %, auto 38.6 % (notes/history.md, session "
                                "34). Live, partial texts are greedy under grid and auto", choices=DECODERS)
    beam_width: int = param(16, "CTC beam width")
    backend: str = param("torch", "network backend: torch, onnxruntime, tensorrt or auto (best available; "
                                  "falls back with a warning)",
                         choices=("torch", "onnxruntime", "tensorrt", "auto"))
    precision: str = param("fp32", "fp32 or fp16 (GPU backends)", choices=("fp32", "fp16"))
    seed: int = param(0, "seed of the sampler's noise (the same input gives the same speech)")
    prior_mode: str = param("speak", "with a phone aligner and mel prior loaded: the prior's mel is the "
                                     "speech (speak), or MelGen refines it from diffusion step prior_t with "
                                     "nfe steps (refine), or it is ignored (off: MelGen from noise on the "
                                     "lips alone)",
                            choices=PRIOR_MODES)
    prior_speaks: str = param("auto", "what the prior speaks: the lip-read text timed by the aligner (text; "
                                      "offline only: a stream has no whole utterance), each 10-ms step's "
                                      "most likely phone by the aligner (phones), or text when decoded with "
                                      "the GRID grammar and read with at least low_confidence, phones "
                                      "otherwise (auto). 108 test clips, sphinx-GRID / whisper WER: "
                                      "open-vocabulary text 17.3 / 52.2 %, phones 9.6 / 43.8 %, GRID-grammar "
                                      "text 10.2 / 39.8 %; open sentences under decode grid: their forced "
                                      "GRID text 91.2 %, gated (phones) 35.8 % whisper (NOTES.md)",
                              choices=PRIOR_SPEAKS)
    prior_t: int = param(99, "diffusion step (of 400) a refined prior's mel is noised to")
    phone_weight: float = param(0.25, "with a phone aligner loaded, offline GRID-grammar decoding ranks the "
                                      "beam's whole sentences by CTC log-probability + this × the aligner's "
                                      "log-posterior of their phones (0: CTC alone; 0.25 weighs its 100-Hz "
                                      "steps as the reader's 25-Hz frames)")
    duration_weight: float = param(3.0, "the prior speaks the text's phones timed by the aligner and by how "
                                        "long each phone lasts in speech (engines.text.durations), this "
                                        "weight on the latter; 0: the aligner's Viterbi path alone. The "
                                        "reference text so timed is heard at 4.3 % sphinx-GRID WER instead "
                                        "of 6.0 % (true timing: 3.2 %; bench/rendering.py)")
    still_threshold: float = param(0.01, "a mouth whose lip opening range (inter-ocular units) is below "
                                         "this is still: silence and no text. Streaming: over each hop, the "
                                         "hop before and the look-ahead; offline: over the whole clip (a "
                                         "reader of motion reads sentences into a still face's noise). "
                                         "Rendered corpus: 0 at rest; speech windows >= 0.017 (1st "
                                         "percentile)")
    pause_s: float = param(0.8, "offline only: a still stretch at least this long (the lip opening ranging "
                                "less than still_threshold over it) inside a video splits it into "
                                "utterances, each read and spoken on its own, from the middle of one pause "
                                "to the middle of the next (the live node's is StreamParams.end_pause_s); "
                                "0: the whole video is one utterance. Set on the train "
                                "split: 0.8 s cuts none of its 2,177 sentences, 0.64 s cuts 16 (a mouth held "
                                "round from 'two' into 'soon'), nor any of val's or test's; three test GRID "
                                "sentences in one video with 0.8 s pauses read at 10.0 % WER split, 73.5 % "
                                "whole (notes/history.md, session 39)")
    low_confidence: float = param(-1.0, "a transcript read with a confidence below this (engines.text.ctc."
                                        "text_confidence: per character, how surely the reader's output "
                                        "spells it) is flagged: offline a printed note, live a warning; with "
                                        "decode grid, offline, the prior then speaks the phones, not the "
                                        "text. Negative: the line of the decoder that read the text "
                                        "(LOW_CONFIDENCE: greedy and beam 0.65, grid 0.42, set on synthetic "
                                        "val clips; the real grid-dev faces, read at chance: 0.24-0.50 "
                                        "beam)")
    voice: str = param("", "a face photo or video whose voice every face speaks in (its middle frame with a "
                           "face in the first 10 s), for listeners who need one voice they learn once, "
                           "whoever talks; '' = each face in the voice that fits it. The voice matters to a "
                           "listener: whisper tiny.en hears our speech of 108 test GRID clips at 38.6 % WER "
                           "in the faces' own voices and 34.4 % in the voice of a photo of spk010 (the piper "
                           "training voice); decoded with beam, 45.1 and 37.5 %, and 49.5 % in the voice of "
                           "a photo of spk000 (mbrola); sphinx-GRID alike (notes/history.md, session 34)")
    max_short_phones: float = param(0.4, "the prior speaks only if at most this share of the text's phones "
                                         "is timed 20 ms or less (true timelines: at most 0.18 in any "
                                         "corpus clip; the aligner on unseen synthetic faces: at most 0.28; "
                                         "on the real grid-dev faces: 0.31-0.81, where it cannot follow the "
                                         "lips); above it MelGen speaks from the lips (1: never)")

    def __post_init__(self) -> None:
        if self.nfe < 1:
            raise ValueError(f"nfe must be >= 1, got {self.nfe}")
        if self.sampler != "ddpm" and self.nfe > 50:
            raise ValueError(f"{self.sampler} is a few-step sampler: nfe {self.nfe} > 50 (use ddpm)")
        if self.beam_width < 1:
            raise ValueError(f"beam_width must be >= 1, got {self.beam_width}")
        if not 0 <= self.asr_t_max < 400:
            raise ValueError(f"asr_t_max must be in [0, 400), got {self.asr_t_max}")
        if self.w1 < 0 or self.w2 < 0:
            raise ValueError(f"guidance weights must be >= 0, got w1 {self.w1}, w2 {self.w2}")
        if self.phone_weight < 0 or self.duration_weight < 0:
            raise ValueError(f"phone_weight and duration_weight must be >= 0, got {self.phone_weight}, "
                             f"{self.duration_weight}")
        if self.still_threshold < 0 or self.pause_s < 0:
            raise ValueError(f"still_threshold and pause_s must be >= 0, got {self.still_threshold}, "
                             f"{self.pause_s}")
        if not 0 <= self.max_short_phones <= 1:
            raise ValueError(f"max_short_phones must be in [0, 1], got {self.max_short_phones}")
        if not 0 <= self.prior_t < 400 or (self.prior_mode == "refine" and self.nfe > self.prior_t + 1):
            raise ValueError(f"prior_t must be in [0, 400) and leave room for nfe {self.nfe} steps, got "
                             f"{self.prior_t}")


@dataclass
class Features:
    """A face's per-frame inputs at 25 fps (engines.data.loaders.track_video gives them for a file)."""
    mouth_rois: np.ndarray  # (T, 88, 88) uint8
    lip_geometry: np.ndarray  # (T, 82) float32
    face_crop: np.ndarray  # (112, 112, 3) uint8 RGB
    valid: np.ndarray | None = None  # (T,) bool: the face was seen (else the nearest seen frame's values)

    def __post_init__(self) -> None:
        t = len(self.mouth_rois)
        if self.mouth_rois.ndim != 3 or self.lip_geometry.shape[0] != t:
            raise ValueError(f"expected mouth ROIs (T, H, W) and lip geometry (T, G) of equal T, got "
                             f"{self.mouth_rois.shape} and {self.lip_geometry.shape}")
        if self.mouth_rois.dtype != np.uint8:
            raise ValueError(f"expected uint8 mouth ROIs, got {self.mouth_rois.dtype}")
        if self.valid is not None and self.valid.shape != (t,):
            raise ValueError(f"expected one valid flag per frame ({t}), got {self.valid.shape}")
        if not np.isfinite(self.lip_geometry).all():
            raise ValueError("lip geometry has NaN or Inf values")
        if t == 0:
            raise ValueError("no frames")

    @classmethod
    def from_tracks(cls, tracked: dict[str, np.ndarray]) -> Features:
        return cls(tracked["mouth_rois"], tracked["lip_geometry"], tracked["face_crop"], tracked.get("valid"))

    def part(self, start: int, end: int) -> Features:
        """Frames [start, end) of the same face."""
        valid = None if self.valid is None else self.valid[start:end]
        return Features(self.mouth_rois[start:end], self.lip_geometry[start:end], self.face_crop, valid)


@dataclass
class Reading:
    """The lip reader's output for some frames: CTC log-probabilities (T, V), MelGen's features (1, T, C)
    and the GRU state after the last frame (carry it to the next window)."""
    log_probs: Tensor
    features: Tensor
    state: Tensor


@dataclass
class Decoded:
    """A lip-read text, the decoder that read it (for `decode auto`, grid or beam) and the CTC
    log-probabilities it was read from, for the reader's confidence in it, computed when asked for: a
    stream's partial texts carry theirs from hop to hop instead (engines.text.ctc.CtcForward). `read_as`:
    the text as the frames hold it, where `text` says more (a partial GRID sentence's word in progress,
    completed); the confidence is in what was read."""

    text: str
    decoder: str
    log_probs: Tensor = field(repr=False)
    read_as: str | None = None

    @cached_property
    def confidence(self) -> float:
        """engines.text.ctc.text_confidence of the text as read."""
        return text_confidence(self.log_probs, self.text if self.read_as is None else self.read_as)


@dataclass
class SynthResult:
    wav: np.ndarray  # float32 at 16 kHz
    text: str  # the lip-read text
    mel: Tensor  # (80, 4T) normalised mel
    seconds: dict[str, float] = field(default_factory=dict)  # compute time per stage
    note: str = ""  # what a user should know: why MelGen spoke instead of the prior, or why all is silence
    spoken: str = ""  # what spoke: the mel prior (the lips' phones or the text), MelGen, or nothing
    confidence: float = 0.0  # how surely the lip reader read `text` (engines.text.ctc.text_confidence)
    decoder: str = ""  # the decoder that read it (one of DECODERS; for auto, grid or beam)
    doubt: str = ""  # what to tell a listener about a text read with low confidence (`Synthesizer.doubt`)
    parts: list[tuple[float, SynthResult]] = field(default_factory=list)  # a video split at pauses: each
    # utterance's start (s) and result; the fields above then join them (Synthesizer.synthesize)

    @property
    def duration_s(self) -> float:
        return len(self.wav) / 16000


class Synthesizer:
    """Runs SynthModels with SynthParams; `backends` says which backend runs each network."""

    def __init__(self, models: SynthModels, params: SynthParams | None = None,
                 device: str | torch.device = "cpu", cache_dir: str | None = None, threads: int = 0) -> None:
        """`threads`: ONNX Runtime's intra-op threads for compiled graphs (0: its default, every core); a
        process sets PyTorch's itself (torch.set_num_threads), the setting being global."""
        self.models, self.params = models, params or SynthParams()
        self.device = torch.device(device)
        self.schedule = DiffusionSchedule()
        self.griffin_lim = GriffinLim() if models.vocoder is None else None
        self._local = threading.local()
        self._voice = self._embed(voice_face(self.params.voice)) if self.params.voice else None
        self._graph = self._graphs(cache_dir, threads)
        # guidance through the denoiser needs its gradient: PyTorch, whatever the backend
        self._grad_denoiser = (self._graph["denoiser"] if self.backends["denoiser"] == "torch"
                               else PreparedDenoiser(models.melgen))

    # ------------------------------------------------------------ networks

    def _graphs(self, cache_dir: str | None, threads: int) -> dict[str, Callable[..., Any]]:
        """Each network by graph name (engines/synth/graphs.py), on the params' backend; `backends` says
        which backend runs each."""
        if self.params.backend != "torch":
            try:
                return self._compiled_graphs(cache_dir, threads)
            except ValueError as exc:  # a model the graph builders cannot take: fall back, loudly
                log.warning("the %s backend cannot take these models (%s); running them in PyTorch",
                            self.params.backend, exc)
        return self._torch_graphs()

    def _torch_graphs(self) -> dict[str, Callable[..., Any]]:
        m = self.models
        frontend = m.lipreader.frontend
        graph = {"frame": frontend.frame, "temporal": frontend.temporal,
                 "reader": self._torch_reader, "denoiser": PreparedDenoiser(m.melgen),
                 "vocoder": m.vocoder if m.vocoder is not None else self.griffin_lim}
        if m.aligner is not None:
            graph.update(aligner=m.aligner, prior=m.prior)
        self.backends = dict.fromkeys(graph, "torch")
        if m.vocoder is None:
            self.backends["vocoder"] = "griffin-lim"
        return graph

    def _compiled_graphs(self, cache_dir: str | None, threads: int) -> dict[str, Callable[..., Any]]:
        m, p = self.models, self.params
        from engines.backends import BackendOptions, compile_graph
        from engines.synth import graphs

        specs = [graphs.frame_graph(m.lipreader.frontend), graphs.temporal_graph(m.lipreader.frontend),
                 graphs.reader_graph(m.lipreader), graphs.denoiser_graph(m.melgen)]
        if m.vocoder is not None:
            specs.append(graphs.vocoder_graph(m.vocoder))
        if m.aligner is not None:
            specs += [graphs.aligner_graph(m.aligner), graphs.prior_graph(m.prior)]
        options = BackendOptions(threads=threads)
        graph = {s.name: compile_graph(s, p.backend, self.device, p.precision, cache_dir, options)
                 for s in specs}
        self.backends = {name: g.backend for name, g in graph.items()}
        if m.vocoder is None:
            self.backends["vocoder"] = "griffin-lim"
            graph["vocoder"] = self.griffin_lim
        reader = graph["reader"]

        def read(visual: Tensor, state: Tensor) -> LipReaderOutput:
            log_probs, hidden, next_state = reader(visual, state)
            return LipReaderOutput(log_probs, visual, hidden, next_state)

        graph["reader"] = read
        return graph

    def _torch_reader(self, visual: Tensor, state: Tensor) -> LipReaderOutput:
        return self.models.lipreader.read(visual, state)

    @property
    def seconds(self) -> dict[str, float]:
        """Compute time per stage of this thread's calls since it last set `seconds` (the live node reads
        texts in a thread of their own, beside the audio's windows)."""
        if not hasattr(self._local, "seconds"):
            self._local.seconds = {}
        return self._local.seconds

    @seconds.setter
    def seconds(self, value: dict[str, float]) -> None:
        self._local.seconds = value

    @contextmanager
    def _timed(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        with torch.no_grad():
            yield
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start

    # ------------------------------------------------------------ steps

    def frame_features(self, mouth_rois: np.ndarray, lip_geometry: np.ndarray, context: int = 0) -> Tensor:
        """Per-frame front-end features (1, T − context, D) of uint8 ROIs (T, 88, 88) and lip geometry
        (T, 82): the first `context` frames only fill the front end's trailing normalisation (a stream's kept
        inputs)."""
        with self._timed("frame"):
            frontend = self.models.lipreader.frontend
            return self._graph["frame"](*frontend.normalise_inputs(*self._inputs(mouth_rois, lip_geometry),
                                                                   context=context))

    def _inputs(self, mouth_rois: np.ndarray, lip_geometry: np.ndarray) -> tuple[Tensor, Tensor]:
        roi = torch.from_numpy(normalise_roi(mouth_rois)).to(self.device)[None]
        return roi, torch.from_numpy(np.asarray(lip_geometry, np.float32)).to(self.device)[None]

    def initial_state(self) -> Tensor:
        c = self.models.lipreader.config
        return torch.zeros(c.gru_layers, 1, c.hidden, device=self.device)

    def read(self, frames: Tensor, state: Tensor | None = None, start: int = 0, count: int | None = None,
             ) -> Reading:
        """The lip reader from GRU `state` (None: the start of an utterance) over the outputs start ..
        start + count of the temporal stack run on per-frame features (1, T, D). Offline: the whole clip.
        Streaming: a window holding each output's receptive field (`receptive_field()`), and the state
        carried from the previous window, so every frame passes the GRU exactly once."""
        with self._timed("reader"):
            visual = self._graph["temporal"](frames)[:, start:None if count is None else start + count]
            out = self._graph["reader"](visual, self.initial_state() if state is None else state)
            return Reading(out.log_probs[0], condition_features(out, self.models.features), out.state)

    def receptive_field(self) -> tuple[int, int]:
        """(past, future) video frames one temporal-stack output depends on."""
        return self.models.lipreader.frontend.receptive_field()

    def identity(self, face_crop: np.ndarray) -> Tensor:
        """The identity embedding (1, E) that gives the face of an RGB face crop (112, 112, 3) uint8 its
        voice: the crop's own, or the `voice` face's."""
        return self._embed(face_crop) if self._voice is None else self._voice

    def _embed(self, face_crop: np.ndarray) -> Tensor:
        with self._timed("identity"):
            face = torch.from_numpy(np.ascontiguousarray(face_crop)).to(self.device).permute(2, 0, 1)
            return self.models.identity(face[None].float() / 255.0)

    def phone_posteriors(self, reading: Reading, compiled: bool = True) -> np.ndarray | None:
        """The phone aligner's log-posteriors (4T, C) of a whole utterance's reading, computed once for both
        their uses (re-ranking GRID-grammar text, timing the text the prior speaks); None without an aligner
        or when neither use is on. Not `compiled`: in PyTorch, whatever the backend (for a thread other than
        the one that runs the compiled graphs: a TensorRT execution context serves one thread)."""
        if self.models.aligner is None or not (self.reranks or self.prior_on):
            return None
        with self._timed("aligner"):
            return self.models.aligner.posteriors(reading.features[0], self._graph["aligner"] if compiled
                                                  else None)

    @property
    def reranks(self) -> bool:
        """Whether the aligner's phones re-rank decoded text (GRID-grammar decoding with a phone weight)."""
        return self.params.decode in GRAMMAR_DECODERS and self.params.phone_weight > 0

    @property
    def prior_on(self) -> bool:
        """The mel prior (with its aligner) is loaded and not turned off (prior_mode)."""
        return self.models.prior is not None and self.params.prior_mode != "off"

    def prior_speaks_text(self, reading: Decoded, doubt: bool = True) -> bool:
        """The prior speaks the lip-read text, not each step's most likely phone (`prior_speaks`): auto, a
        GRID-grammar text, unless (`doubt`) read below its low-confidence line (then most likely no GRID
        sentence)."""
        p = self.params
        trusted = not doubt or reading.confidence >= self.low_line("grid")
        grid_text = reading.decoder == "grid" and trusted
        return p.prior_speaks == "text" or (p.prior_speaks == "auto" and grid_text)

    def step_phones(self, features: Tensor) -> np.ndarray:
        """The most likely phone class of each aligner step (4T,) of reader features (T, D): what a stream's
        prior speaks."""
        with self._timed("aligner"):
            return self.models.aligner.posteriors(features, self._graph["aligner"]).argmax(axis=-1)

    def text_reading(self, features: Features, reading: Reading) -> Reading:
        """The reading the offline text is decoded from: the text reader's on the whole clip when one is
        loaded (PyTorch, whatever the backend), else `reading` itself."""
        reader = self.models.text_reader
        if reader is None:
            return reading
        with self._timed("text_reader"):
            out = reader(*self._inputs(features.mouth_rois, features.lip_geometry))
            return Reading(out.log_probs[0], condition_features(out, self.models.features), out.state)

    def decode(self, log_probs: Tensor, phones: np.ndarray | None = None, whole: bool = True) -> Decoded:
        """The lip-read text of CTC log-probabilities (T, V), the decoder that read it and the confidence in
        it; with the phone aligner's log-posteriors of the whole utterance (`phone_posteriors`), GRID-grammar
        decoding re-ranks its whole sentences by their phones. Not `whole`: the start of an utterance still
        going on, whose GRID sentence is not forced to completion (engines.text.ctc.best_sentence) and, under
        `auto`, is kept down to GRID_START_LINE before the open beam reads it instead; only its word in
        progress is completed, where one word of its slot begins so (WordGrammar.complete_word)."""
        with self._timed("decode"):
            p = self.params
            rescore = phone_rescorer(phones, p.phone_weight) if self.reranks and phones is not None else None
            decoder = "grid" if p.decode == "auto" else p.decode
            text = decode_text(log_probs, decoder, p.beam_width, rescore, whole)
            reading = Decoded(text, decoder, log_probs)
            # auto: below grid's own line (whatever low_confidence flags) the lips most likely said no GRID
            # sentence
            line = LOW_CONFIDENCE["grid"] if whole else GRID_START_LINE
            if p.decode == "auto" and reading.confidence < line:
                return Decoded(decode_text(log_probs, "beam", p.beam_width), "beam", log_probs)
            if not whole and reading.decoder == "grid":
                return Decoded(GRID_GRAMMAR.complete_word(text), "grid", log_probs, read_as=text)
            return reading

    def condition(self, features: Tensor, identity: Tensor) -> Tensor:
        return join_condition(features, identity)

    def generate(self, cond: Tensor, text: str, *, known: tuple[Tensor, Tensor] | None = None,
                 generator: torch.Generator | None = None, start: Tensor | None = None) -> Tensor:
        """A normalised mel (1, 80, 4T) for a condition (1, T, C), guided toward `text`; `known` (mask,
        values) in-paints a fixed part (a stream's past); `start` (1, 80, 4T), a mel to refine: noised to
        step prior_t and sampled from there (SDEdit)."""
        p, m = self.params, self.models
        with self._timed("mel"):
            ids = encode(text)
            w2 = p.w2 if ids and m.asr is not None else 0.0
            through = w2 != 0.0 and p.asr_input == "x0_denoiser"
            plain = self._graph["denoiser"]
            denoiser = GuidedDenoiser(self._grad_denoiser if through else plain, self.schedule, cond,
                                      m.melgen.null_cond, p.w1, asr=m.asr, text=ids or None, w2=w2,
                                      asr_t_max=p.asr_t_max, asr_input=p.asr_input, step=p.guidance_step)
            if generator is None:
                generator = torch.Generator(self.device).manual_seed(p.seed)
            x = torch.randn((1, m.melgen.config.n_mels, MELS_PER_FRAME * cond.shape[1]), generator=generator,
                            device=self.device)
            times = None
            if start is not None:
                times = self.schedule.timesteps(p.nfe, start=p.prior_t)
                x = self.schedule.q_sample(start, torch.tensor([float(p.prior_t)]), x)
            mask, values = known if known is not None else (None, None)
            mel = SAMPLERS[p.sampler](denoiser, x, self.schedule, p.nfe, fixed_mask=mask, fixed_values=values,
                                      generator=generator, clip_x0=True, timesteps=times)
            return mel.clamp(-1.0, 1.0)

    def prior_labels(self, phones: np.ndarray | None, text: str,
                     speak_text: bool) -> tuple[np.ndarray | None, str]:
        """What the prior speaks of a whole utterance (per-step phone classes), given the aligner's
        log-posteriors (`phone_posteriors`): each step's most likely phone, or with `speak_text` the text
        timed and paced; None when it says nothing, with why when the text's timing is no speech's."""
        if phones is None or not self.prior_on:
            return None, ""
        if not speak_text:
            return phones.argmax(axis=-1), ""
        labels = self.timing(phones, text)
        fallback = self.implausible(labels) if labels is not None else ""
        if fallback:
            log.info("%s", fallback)
        if labels is None or fallback:
            return None, fallback
        # judged on the aligner's own timing: paced, any text would look like speech
        return self.pace(phones, text, labels), ""

    def timing(self, phones: np.ndarray | None, text: str) -> np.ndarray | None:
        """Per-step phone classes (4T,) of `text` on the aligner's log-posteriors of the utterance
        (`phone_posteriors`): what the prior is to speak; None without them or a prior, with prior off, or
        with no text read (MelGen then speaks from the lips: the prior would say nothing)."""
        if phones is None or not self.prior_on or not text.strip():
            return None
        with self._timed("prior"):
            return align_text(phones, text)

    def pace(self, phones: np.ndarray, text: str, labels: np.ndarray) -> np.ndarray:
        """The timing the prior speaks: `text`'s phones on the aligner's log-posteriors and the phones'
        duration distributions (`duration_weight`), or the aligner's own timing `labels` with weight 0."""
        if self.params.duration_weight == 0:
            return labels
        with self._timed("prior"):
            paced = paced_align(phones, text, self.params.duration_weight)
        return labels if paced is None else paced

    def implausible(self, labels: np.ndarray) -> str:
        """Why a timing is no speech's (too many phones of 20 ms or less), or "" when it could be."""
        share = short_phone_share(labels)
        if share <= self.params.max_short_phones:
            return ""
        return (f"the aligner times {share:.0%} of the text's phones at 20 ms or less (max_short_phones "
                f"{self.params.max_short_phones:.0%}): it cannot follow these lips; MelGen speaks from them")

    def speak(self, labels: np.ndarray, identity: Tensor) -> Tensor:
        """The mel prior's mel (1, 80, 4T) of per-step phone classes (`timing`) in the face's voice."""
        with self._timed("prior"):
            return self._graph["prior"](torch.from_numpy(labels).to(self.device)[None], identity)

    def vocode(self, mel: Tensor) -> np.ndarray:
        """16 kHz float32 speech of a normalised mel (1, 80, F)."""
        with self._timed("vocoder"):
            return self._graph["vocoder"](mel)[0].float().cpu().numpy()

    # ------------------------------------------------------------ a whole video

    def synthesize(self, features: Features, guide_text: str | None = None) -> SynthResult:
        """Speech for a whole video (offline), split at its pauses (`pause_s`) into utterances, each read and
        spoken on its own: their speech and mel joined in time, their texts in order, the least sure one's
        confidence, decoder and doubt. `guide_text` (an evaluation's reference text, to measure synthesis
        apart from lip-reading errors) replaces the lip-read text as ASR guidance's target and as the text
        the mel prior speaks, if it speaks text; the video is then one utterance, and the result's text stays
        the lip-read one."""
        pause = round(self.params.pause_s * VIDEO_FPS) if guide_text is None else 0
        spans = utterance_spans(features.lip_geometry[:, OPENING], pause, self.params.still_threshold)
        if len(spans) == 1:
            return self._utterance(features, guide_text)
        parts = [(a / VIDEO_FPS, self._utterance(features.part(a, b))) for a, b in spans]
        results = [r for _, r in parts]
        least = min((r for r in results if r.text), key=lambda r: r.confidence, default=results[0])
        text = " ".join(r.text for r in results if r.text)
        seconds: Counter[str] = Counter()
        for r in results:
            seconds.update(r.seconds)
        return SynthResult(np.concatenate([r.wav for r in results]), text,
                           torch.cat([r.mel for r in results], dim=1), dict(seconds),
                           "; ".join(dict.fromkeys(r.note for r in results if r.note)),
                           "; ".join(dict.fromkeys(r.spoken for r in results)), least.confidence,
                           least.decoder, least.doubt, parts)

    def _utterance(self, features: Features, guide_text: str | None = None) -> SynthResult:
        """Speech for one utterance, with the compute it took."""
        self.seconds = {}
        still = self.mouth_still(features)
        if still:
            log.info("%s", still)
            frames = len(features.mouth_rois)
            mel = torch.full((self.models.melgen.config.n_mels, MELS_PER_FRAME * frames), SILENCE)
            silence = np.zeros(frames * SAMPLES_PER_FRAME, np.float32)
            return SynthResult(silence, "", mel, {}, still, "nothing")
        reading = self.read(self.frame_features(features.mouth_rois, features.lip_geometry))
        text_reading = self.text_reading(features, reading)
        timed = text_reading if self.models.aligner_reads == "text_reader" else reading
        phones = self.phone_posteriors(timed)
        decoded = self.decode(text_reading.log_probs, phones)
        text = decoded.text
        said = text if guide_text is None else guide_text
        identity = self.identity(features.face_crop)
        speak_text = self.prior_speaks_text(decoded, doubt=guide_text is None)
        labels, fallback = self.prior_labels(phones, said, speak_text)
        prior = self.speak(labels, identity) if labels is not None else None
        speaks = "text" if speak_text else "phones read on the lips"
        what = f"the mel prior, speaking the {speaks}"
        if prior is not None and self.params.prior_mode == "speak":
            mel, spoken = prior, what
        else:
            mel = self.generate(self.condition(reading.features, identity), said, start=prior)
            spoken = "MelGen, from the lips" if prior is None else f"MelGen, refining {what}"
        wav = self.vocode(mel)
        if features.valid is not None and not features.valid.all():
            wav = silence_unseen(wav, features.valid)
        return SynthResult(wav, text, mel[0], dict(self.seconds), fallback, spoken, decoded.confidence,
                           decoded.decoder, self.doubt(decoded.confidence, decoded.decoder))

    def low_line(self, decoder: str = "") -> float:
        """The confidence below which a text read by `decoder` (default: the params' own) is doubted. (Texts
        of `auto` carry the decoder that read them; auto itself is held to grid's line, the one it keeps a
        GRID text by.)"""
        line = self.params.low_confidence
        decoder = decoder or self.params.decode
        return line if line >= 0 else LOW_CONFIDENCE["grid" if decoder == "auto" else decoder]

    def doubt(self, confidence: float, decoder: str = "") -> str:
        """What to tell a listener about a text that `decoder` (default: the params' own) read with this
        confidence: "" when it is not low."""
        line = self.low_line(decoder)
        if confidence >= line:
            return ""
        return (f"the lips were read with low confidence ({confidence:.2f} < low_confidence {line:.2f}): the "
                f"speech may not say what was said")

    def mouth_still(self, features: Features) -> str:
        """Why a whole clip is silence (its seen frames' lip opening never ranges over `still_threshold`), or
        "" when its mouth moves."""
        seen = features.lip_geometry[:, OPENING] if features.valid is None else \
            features.lip_geometry[features.valid, OPENING]
        moved = opening_range(seen)
        if moved >= self.params.still_threshold:
            return ""
        return (f"the mouth never moves (lip opening range {moved:.3f} < still_threshold "
                f"{self.params.still_threshold}): silence, no text")


def decode_text(log_probs: Tensor, decoding: str, beam_width: int,
                rescore: Callable[[list[str]], Sequence[float]] | None = None, whole: bool = True) -> str:
    """The text of CTC log-probabilities (T, V) by greedy, beam or grid decoding (SynthParams.decode; auto is
    Synthesizer.decode's choice between grid and beam); `rescore` re-ranks GRID-grammar decoding's whole
    sentences (engines.text.phones.phone_rescorer); `whole`: the frames hold a whole sentence
    (engines.text.ctc.best_sentence)."""
    if decoding not in ("greedy", "beam", "grid"):
        raise ValueError(f"no decoder {decoding!r} here: greedy, beam or grid")
    if decoding == "greedy":
        return decode(greedy_decode(log_probs))
    if decoding == "grid":
        return best_sentence(log_probs.float().cpu(), beam_width, GRID_GRAMMAR, rescore, whole)
    hyps = beam_search(log_probs.float().cpu(), beam_width)
    return hyps[0].text if hyps else ""


def utterance_spans(opening: np.ndarray, pause_frames: int, still_threshold: float) -> list[tuple[int, int]]:
    """[start, end) of each utterance of a video whose per-frame lip opening is `opening` (T,): it splits at
    every stretch of at least `pause_frames` frames (0: never) over which the opening ranges less than
    `still_threshold` and that has moving frames on both sides, in the stretch's middle, so each utterance
    keeps half of the still frames around it (as a clip of one sentence has its own)."""
    t = len(opening)
    if pause_frames < 1 or t <= pause_frames:
        return [(0, t)]
    windows = np.lib.stride_tricks.sliding_window_view(np.asarray(opening, np.float64), pause_frames)
    starts = (np.ptp(windows, axis=1) < still_threshold).astype(np.int64)
    still = np.zeros(t + 2, bool)  # padded with moving frames at both ends
    still[1:-1] = np.convolve(starts, np.ones(pause_frames, np.int64)) > 0  # frames inside a still window
    edges = np.flatnonzero(np.diff(still.astype(np.int8)))  # starts and ends of still runs, in pairs
    cuts = [(a + b) // 2 for a, b in zip(edges[::2], edges[1::2], strict=True) if a > 0 and b < t]
    bounds = [0, *cuts, t]
    return list(itertools.pairwise(bounds))


def opening_range(opening: np.ndarray | Tensor) -> float:
    """How far a run of frames' lip opening (OPENING) ranges, in inter-ocular units (0 for no frame): below
    SynthParams.still_threshold the mouth is still, offline over a clip and streaming over a hop."""
    return float(opening.max() - opening.min()) if len(opening) else 0.0


class PreparedDenoiser:
    """MelGen as a `(x, t, cond) -> ε̂` callable that computes the condition path once per condition
    (a sampler calls it nfe times with the same condition)."""

    def __init__(self, melgen: MelGen) -> None:
        self.melgen = melgen
        self._cond: Tensor | None = None
        self._prepared: Any = None

    def __call__(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        if cond is not self._cond:
            self._cond, self._prepared = cond, self.melgen.prepare(cond)
        return self.melgen(x, t, self._prepared)


VOICE_FRAMES = 250  # a voice video's first 10 s: a long one must not hold up a node's start


def voice_face(path: str) -> np.ndarray:
    """The face crop (112, 112, 3) uint8 RGB of a photo or video that gives every face its voice
    (SynthParams.voice): its middle frame with a face among the first VOICE_FRAMES."""
    from engines.data.loaders import track_video

    if not Path(path).is_file():
        raise ValueError(f"voice {path}: no such file")
    try:
        tracked = track_video(Path(path), max_frames=VOICE_FRAMES)
    except ValueError as exc:  # PyAV's, for a file that is no photo or video
        raise ValueError(f"voice {path}: {exc}") from exc
    if not tracked["valid"].any():
        raise ValueError(f"voice {path}: no face to take a voice from")
    return tracked["face_crop"]


def silence_unseen(wav: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The speech with the spans of frames where no face was seen set to silence (never speech made up
    from a face that was not there)."""
    per_frame = len(wav) // len(valid)
    gate = np.repeat(valid.astype(np.float32), per_frame)
    out = wav.copy()
    out[:len(gate)] *= gate
    return out
