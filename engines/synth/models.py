"""The trained networks one synthesizer needs, loaded together and checked against each other.

A MelGen is trained on the features of one particular lip reader and identity encoder (their weight
digests are in its checkpoint's training-data summary): pairing it with others would feed it inputs it
never saw, so `SynthModels.load` refuses a mismatch unless told otherwise. So are the phone aligner (on a
lip reader) and the mel prior (on an aligner and an identity encoder), which speak the phones read on the
lips.
A second lip reader may read the offline text (`text_reader`), one that needs whole clips included. Its
text is all that is used, unless the aligner was trained on it: the aligner then times that reader's
features (`aligner_reads`), which follow lips the shipped reader's may not (real faces; NOTES.md).

Offline, the defaults (`DEFAULT_TEXT_READER`, `DEFAULT_ALIGNER`) are such a pair: the motion reader reads the
text and the aligner trained on it re-ranks and times it (since session 19: 10.2 % pocketsphinx-GRID WER on
108 unseen-face test clips against 11.3 % for the lip reader with its own aligner, whisper 39.8 % against
44.1 %). A stream's prior speaks the phones the shipped `aligner` reads on the shipped `lipreader`'s
features, window by window; the motion reader, which needs whole clips, reads each ended utterance's text
again (since session 36), re-ranked by that aligner.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from engines.models.lipreader import CONDITION_FEATURES
from engines.train import checkpoint

log = logging.getLogger(__name__)

GRIFFIN_LIM = "griffin-lim"
DEFAULT_TEXT_READER = "lipreader-motion"
DEFAULT_ALIGNER = "aligner-motion"  # trained on DEFAULT_TEXT_READER's features


class ModelMismatch(ValueError):
    """Models that were not trained to work together."""


@dataclass
class SynthModels:
    lipreader: nn.Module  # engines.models.lipreader.LipReader
    melgen: nn.Module  # engines.models.melgen.MelGen
    identity: nn.Module  # engines.models.identity.IdentityEncoder
    asr: nn.Module | None  # engines.models.asr.ASR, for ASR guidance
    vocoder: nn.Module | None  # engines.models.vocoder.Vocoder; None: Griffin-Lim
    features: str  # the lip-reader features the MelGen hears (engines.models.lipreader.condition_features)
    sources: dict[str, str]  # model → where it was loaded from
    aligner: nn.Module | None = None  # engines.models.aligner.PhoneAligner, times the text's phones
    prior: nn.Module | None = None  # engines.models.mel_prior.MelPrior, speaks them
    text_reader: nn.Module | None = None  # a LipReader whose CTC gives the offline text, not lipreader's
    aligner_reads: str = "lipreader"  # whose features the aligner times: lipreader or text_reader

    @classmethod
    def load(cls, lipreader: str = "lipreader", melgen: str = "melgen", identity: str = "identity",
             asr: str | None = "asr", vocoder: str | None = "vocoder", device: str | torch.device = "cpu",
             strict: bool = True, aligner: str | None = None, prior: str | None = None,
             text_reader: str | None = None) -> SynthModels:
        """Each model from a checkpoint path or a shipped name; `asr` None: no ASR guidance, `vocoder` None
        or "griffin-lim": Griffin-Lim; `aligner` and `prior` (both or neither) speak phones read on the lips;
        `text_reader` (None: `lipreader` reads it) reads the offline text. With
        `strict`, a model trained on other weights than those it is loaded with is refused
        (ModelMismatch); otherwise a warning."""
        if (aligner is None) != (prior is None):
            raise ModelMismatch("the mel prior speaks phones its aligner times: give both or neither")
        loaded = {"lipreader": checkpoint.load_ref(lipreader, "lipreader", device),
                  "melgen": checkpoint.load_ref(melgen, "melgen", device),
                  "identity": checkpoint.load_ref(identity, "identity", device)}
        if asr is not None:
            loaded["asr"] = checkpoint.load_ref(asr, "asr", device)
        if vocoder not in (None, GRIFFIN_LIM):
            loaded["vocoder"] = checkpoint.load_ref(vocoder, "vocoder", device)
        if aligner is not None:  # and so prior
            loaded["aligner"] = checkpoint.load_ref(aligner, "aligner", device)
            loaded["prior"] = checkpoint.load_ref(prior, "prior", device)
        if text_reader is not None:
            loaded["text_reader"] = checkpoint.load_ref(text_reader, "lipreader", device)
            check_text_reader(loaded["text_reader"].model, loaded["lipreader"].model)
        reads = aligner_reads(loaded)
        pairs = {"melgen": ("lipreader", "identity"), "aligner": (reads,), "prior": ("aligner", "identity")}
        for model, bases in pairs.items():
            if model not in loaded:
                continue
            summary = loaded[model].data_summary
            for name in bases:
                kind = loaded[name].kind
                expected = summary.get(f"{kind}_digest")
                found = checkpoint.weights_digest(loaded[name].model)
                if expected is not None and expected != found:
                    message = (f"{loaded[model].path} was trained on {kind} weights {expected}, but "
                               f"{loaded[name].path} has {found}: use the {kind} it was trained with")
                    if model == "aligner":
                        message += (" (as the text reader: an aligner times the text on the reader it was "
                                    "trained on), or an aligner trained on this one")
                    if strict:
                        raise ModelMismatch(message)
                    log.warning(message)
        summary = loaded["melgen"].data_summary
        features = summary.get("features", "visual")
        check_condition(loaded["melgen"].model, loaded["lipreader"].model, loaded["identity"].model, features)
        models = {k: c.model.eval().requires_grad_(False) for k, c in loaded.items()}
        if "aligner" in loaded:
            check_phones(loaded["aligner"].model, loaded["prior"].model, loaded[reads].model,
                         loaded["identity"].model, loaded["aligner"].data_summary.get("features", "reader"),
                         features)
        return cls(lipreader=models["lipreader"], melgen=models["melgen"], identity=models["identity"],
                   asr=models.get("asr"), vocoder=models.get("vocoder"), features=features,
                   sources={k: str(c.path) for k, c in loaded.items()}, aligner=models.get("aligner"),
                   prior=models.get("prior"), text_reader=models.get("text_reader"),
                   aligner_reads=reads)

    def describe(self) -> dict[str, Any]:
        """What runs, for logs and reports."""
        return {**self.sources, "features": self.features, "aligner_reads": self.aligner_reads,
                "vocoder": self.sources.get("vocoder", GRIFFIN_LIM), "asr": self.sources.get("asr", "none")}


def aligner_reads(loaded: dict[str, Any]) -> str:
    """The reader whose features the aligner times: the text reader when the aligner was trained on it,
    else the lip reader (which `load` then checks)."""
    if "aligner" not in loaded or "text_reader" not in loaded:
        return "lipreader"
    trained_on = loaded["aligner"].data_summary.get("lipreader_digest")
    text_reader = checkpoint.weights_digest(loaded["text_reader"].model)
    return "text_reader" if trained_on == text_reader else "lipreader"


def check_text_reader(text_reader: nn.Module, lipreader: nn.Module) -> None:
    """ModelMismatch unless the text reader takes the inputs the lip reader takes: the frames given to one
    are read by the other."""
    a, b = text_reader.config.frontend, lipreader.config.frontend
    if (a.roi_size, a.geometry_dim) != (b.roi_size, b.geometry_dim):
        raise ModelMismatch(f"the text reader reads {a.roi_size}-pixel mouth ROIs and {a.geometry_dim} lip "
                            f"geometry values, the lip reader {b.roi_size} and {b.geometry_dim}")


def check_condition(melgen: nn.Module, lipreader: nn.Module, identity: nn.Module, features: str) -> None:
    """ModelMismatch unless the lip reader's `features` and the identity embedding make the condition the
    MelGen takes: with other sizes it could never run, whatever `strict` says."""
    if features not in CONDITION_FEATURES:
        raise ModelMismatch(f"the MelGen hears lip-reader features {features!r}, which this code lacks "
                            f"(known: {', '.join(CONDITION_FEATURES)})")
    made = lipreader.condition_dim(features) + identity.config.embed_dim
    if made != melgen.config.cond_dim:
        raise ModelMismatch(f"the MelGen takes {melgen.config.cond_dim} condition values per frame, but the "
                            f"lip reader's {features!r} features and the identity embedding make {made}")


def check_phones(aligner: nn.Module, prior: nn.Module, lipreader: nn.Module, identity: nn.Module,
                 features: str, melgen_features: str) -> None:
    """ModelMismatch unless the aligner reads the lip-reader features MelGen hears (the synthesizer
    computes one kind), steps once per mel frame, and the prior speaks its phone classes in the identity
    embedding's voice."""
    from engines.audio.mel import MELS_PER_FRAME

    a, p = aligner.config, prior.config
    if features != melgen_features or lipreader.condition_dim(features) != a.feature_dim:
        raise ModelMismatch(f"the aligner reads the lip reader's {features!r} features ({a.feature_dim} "
                            f"values), MelGen hears its {melgen_features!r} ones")
    if a.steps_per_frame != MELS_PER_FRAME or a.classes != p.classes:
        raise ModelMismatch(f"the aligner times {a.classes} phone classes {a.steps_per_frame} times a frame; "
                            f"the prior speaks {p.classes}, {MELS_PER_FRAME} mel frames a frame")
    if identity.config.embed_dim != p.identity_dim:
        raise ModelMismatch(f"the prior takes {p.identity_dim} identity values, the encoder gives "
                            f"{identity.config.embed_dim}")
