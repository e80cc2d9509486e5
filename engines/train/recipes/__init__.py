"""What `voxsight train MODEL` trains: per model name, a recipe that builds the model from its config,
its loss, its data and its validation. Each imports the model's modules only when it is used, so a
checkout without a model still trains the others (and says clearly what is missing).

A training config (engines/train/configs/MODEL.yaml) has four sections:
    model:  overrides of the model's config dataclass (nested configs as nested maps)
    train:  engines.train.loop.TrainConfig
    data:   DataOptions: which clips, which splits, windows
    recipe: the recipe's own options (the *Options dataclass of its module here)

Each model's recipe is the `recipe` function of the module of its name here, `fn(model, config, options,
data, train, ctx) -> Recipe`: `build` makes the model from its config first, under the training seed, so
its initial weights are repeatable; the recipe adds the loss, data, validation and any auxiliary module
(engines.train.loop.Trainer takes them as they are). What they share is in `common`; `conditions` keeps
the frozen lip reader's features (and identities) of whole clips for the recipes that train on them.

Data come from engines.data.loaders: features are cached there (process 0 extracts the missing ones
before training while the others wait). Random windows and augmentations are drawn from (seed, epoch,
item), so runs are repeatable and resumable (engines.train.loop).

    lipreader  mouth ROIs + lip geometry → CTC over characters (whole utterances: the text is the clip's),
               its options the per-clip augmentations of engines.train.augment
    asr        mel (clean at t = 0, or noised to x_t by the diffusion schedule) → CTC, as LipVoicer's
               noise-aware guidance ASR
    identity   face crop → unit embedding, trained to tell the training identities apart (a cosine
               classifier head that is not shipped)
    melgen     diffusion on mel windows (ε or x0 prediction: MelGenConfig.prediction), conditioned on a
               trained lip reader's features (front end, or front end and GRU states, computed once over
               whole clips, also of augmented lips) and the embedding of a trained identity encoder (both
               frozen), with condition dropout for classifier-free guidance
    aligner    a frozen lip reader's features → the phone at each mel step of the clip's phone timeline
    prior      phone labels (true, or as the aligner streams them) and an identity → mel, L1
    vocoder    normalised mel of a random audio segment (the clip's own, or the prior's) → waveform,
               multi-resolution STFT + mel L1
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engines.train import checkpoint
from engines.train.distributed import Context, derive_seed
from engines.train.recipes import aligner, asr, identity, lipreader, melgen, prior, vocoder
from engines.train.recipes.common import DataOptions, Recipe, RecipeError


@dataclass
class Spec:
    build: Callable[..., Recipe]
    module: str  # where the model and its config are (imported when the recipe is built)
    model: str
    config: str
    options: type | None = None


RECIPES: dict[str, Spec] = {
    "lipreader": Spec(lipreader.recipe, "engines.models.lipreader", "LipReader", "LipReaderConfig",
                      lipreader.LipReaderOptions),
    "asr": Spec(asr.recipe, "engines.models.asr", "ASR", "ASRConfig", asr.ASROptions),
    "identity": Spec(identity.recipe, "engines.models.identity", "IdentityEncoder", "IdentityConfig",
                     identity.IdentityOptions),
    "melgen": Spec(melgen.recipe, "engines.models.melgen", "MelGen", "MelGenConfig", melgen.MelGenOptions),
    "aligner": Spec(aligner.recipe, "engines.models.aligner", "PhoneAligner", "PhoneAlignerConfig",
                    aligner.AlignerOptions),
    "prior": Spec(prior.recipe, "engines.models.mel_prior", "MelPrior", "MelPriorConfig", prior.PriorOptions),
    "vocoder": Spec(vocoder.recipe, "engines.models.vocoder", "Vocoder", "VocoderConfig",
                    vocoder.VocoderOptions),
}


def build(name: str, sections: dict[str, Any], data: DataOptions, train: Any, ctx: Context) -> Recipe:
    """The recipe `name` from a training config's `model` and `recipe` sections; the model is built
    first, from generators seeded by the training seed (so its initial weights are repeatable)."""
    import importlib

    from engines.train.loop import seed_everything

    spec = RECIPES.get(name)
    if spec is None:
        raise RecipeError(f"unknown model {name!r}; known: {', '.join(RECIPES)}")
    if spec.options is None and sections.get("recipe"):
        raise RecipeError(f"the {name} recipe takes no options, got {sorted(sections['recipe'])}")
    try:
        module = importlib.import_module(spec.module)
        model_class, config_class = getattr(module, spec.model), getattr(module, spec.config)
        try:
            config = checkpoint.config_from_dict(config_class, sections.get("model") or {})
            options = (checkpoint.config_from_dict(spec.options, sections.get("recipe") or {})
                       if spec.options is not None else None)
        except (checkpoint.CheckpointError, TypeError, ValueError) as exc:
            raise RecipeError(f"{name}: bad model or recipe options: {exc}") from exc
        seed_everything(derive_seed(train.seed))
        return spec.build(model_class(config), config, options, data, train, ctx)
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("engines"):
            raise
        raise RecipeError(f"`voxsight train {name}` needs {exc.name}, which this checkout does not have "
                          "yet") from exc
