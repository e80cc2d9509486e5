"""The trained networks one synthesizer needs, loaded together and checked against each other.

A MelGen is trained on the features of one particular lip reader and identity encoder (their weight
digests are in its checkpoint's training-data summary): pairing it with others would feed it inputs it
never saw, so `SynthModels.load` refuses a mismatch unless told otherwise.
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

    @classmethod
    def load(cls, lipreader: str = "lipreader", melgen: str = "melgen", identity: str = "identity",
             asr: str | None = "asr", vocoder: str | None = "vocoder", device: str | torch.device = "cpu",
             strict: bool = True) -> SynthModels:
        """Each model from a checkpoint path or a shipped name; `asr` None: no ASR guidance, `vocoder` None
        or "griffin-lim": Griffin-Lim. With `strict`, a MelGen trained on other lip-reader or identity
        weights is refused (ModelMismatch); otherwise a warning."""
        loaded = {"lipreader": checkpoint.load_ref(lipreader, "lipreader", device),
                  "melgen": checkpoint.load_ref(melgen, "melgen", device),
                  "identity": checkpoint.load_ref(identity, "identity", device)}
        if asr is not None:
            loaded["asr"] = checkpoint.load_ref(asr, "asr", device)
        if vocoder not in (None, GRIFFIN_LIM):
            loaded["vocoder"] = checkpoint.load_ref(vocoder, "vocoder", device)
        summary = loaded["melgen"].data_summary
        for kind in ("lipreader", "identity"):
            expected = summary.get(f"{kind}_digest")
            found = checkpoint.weights_digest(loaded[kind].model)
            if expected is not None and expected != found:
                message = (f"{melgen} was trained on {kind} weights {expected}, but {loaded[kind].path} has "
                           f"{found}: use the {kind} it was trained with")
                if strict:
                    raise ModelMismatch(message)
                log.warning(message)
        features = summary.get("features", "visual")
        check_condition(loaded["melgen"].model, loaded["lipreader"].model, loaded["identity"].model, features)
        models = {k: c.model.eval().requires_grad_(False) for k, c in loaded.items()}
        return cls(lipreader=models["lipreader"], melgen=models["melgen"], identity=models["identity"],
                   asr=models.get("asr"), vocoder=models.get("vocoder"), features=features,
                   sources={k: str(c.path) for k, c in loaded.items()})

    def describe(self) -> dict[str, Any]:
        """What runs, for logs and reports."""
        return {**self.sources, "features": self.features,
                "vocoder": self.sources.get("vocoder", GRIFFIN_LIM), "asr": self.sources.get("asr", "none")}


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
