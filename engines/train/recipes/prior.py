"""The mel prior's recipe: phone labels (true, or as the aligner streams them) and an identity → mel, with
L1 against the clip's mel."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from engines.params import param
from engines.train import checkpoint
from engines.train.distributed import Context
from engines.train.recipes.aligner import true_labels
from engines.train.recipes.common import (
    DataOptions,
    Recipe,
    RecipeError,
    Windows,
    batches,
    collate,
    load_frozen,
    load_samples,
    summarize,
)
from engines.train.recipes.conditions import ConditionCache


@dataclass
class PriorOptions:
    lipreader: str = param("lipreader", "trained lip reader whose features the aligner reads")
    aligner: str = param("aligner", "trained phone aligner on that reader (checkpoint path or shipped name)")
    identity: str = param("identity", "trained identity encoder (checkpoint path or shipped name)")
    features: str = param("reader", "the lip-reader features the aligner was trained on",
                          choices=("visual", "reader"))
    timing: str = param("aligner", "the phone timing it learns to speak: the aligner's, of each transcript "
                                   "on the clip's lips (as the prior is timed when it speaks; the prior is "
                                   "then tied to that aligner), the corpus's true timeline (mel targets "
                                   "exactly in step with their phones; no aligner needed), or the aligner's "
                                   "most likely phone of each step with its look-ahead cut at the training "
                                   "window's end (stream: what the live node's prior hears, errors and all)",
                        choices=("aligner", "truth", "stream"))


def clip_identities(samples: Any, identity_encoder: nn.Module) -> dict[str, tuple[torch.Tensor, int]]:
    """Per clip: its identity embedding (E,) and its length in mel frames."""
    from tqdm import tqdm

    from engines.data.loaders import TorchSamples

    items = TorchSamples(samples, window=0)
    out = {}
    with torch.no_grad():
        for i in tqdm(range(len(items)), unit="clip", desc="identities"):
            it = items[i]
            out[it["id"]] = (identity_encoder(it["face"][None])[0], it["mel"].shape[1])
    return out


class StreamedPhones:
    """Each step's most likely phone of one clip as a stream reads it: the aligner over the reader's
    features (T, D) cut at a frame, as the live node cuts each window at its look-ahead. A cut changes only
    the steps of the aligner's look-ahead before it, so the whole clip's phones are kept once and, for
    every cut, only those steps."""

    def __init__(self, phone_aligner: nn.Module, features: torch.Tensor) -> None:
        frames = features.shape[0]
        self.steps = phone_aligner.config.steps_per_frame
        self.future = phone_aligner.receptive_field()[1]
        cuts = torch.arange(1, frames + 1)
        with torch.no_grad():  # row c − 1 reads the first c frames, as a sequence that long
            rows = phone_aligner(features[None].float().expand(frames, -1, -1), cuts).argmax(dim=-1)
        self.whole = rows[-1].to(torch.uint8)
        tail = self.steps * self.future
        self.tails = torch.zeros((frames, tail), dtype=torch.uint8)
        for c in range(1, frames + 1):
            part = rows[c - 1, max(0, self.steps * c - tail):self.steps * c]
            self.tails[c - 1, tail - len(part):] = part.to(torch.uint8)

    def window(self, start: int, frames: int) -> torch.Tensor:
        """Labels (steps · frames',) of frames [start, start + frames) read with the features cut at the
        window's end (frames' ≤ frames where the clip ends first)."""
        cut = min(start + frames, len(self.tails))
        out = self.whole[self.steps * start:self.steps * cut].long()
        fresh = self.steps * min(self.future, cut - start)
        if fresh:
            out[-fresh:] = self.tails[cut - 1, -fresh:].long()
        return out

    def committed(self, hop: int, lookahead: int) -> torch.Tensor:
        """The clip's labels (steps · frames,) as the live node commits them: each hop [s, s + hop) read with
        the features cut `lookahead` frames past it."""
        frames = len(self.tails)
        return torch.cat([self.window(s, min(hop, frames - s) + lookahead)[:self.steps * min(hop, frames - s)]
                          for s in range(0, frames, hop)])


def recipe(model: nn.Module, config: Any, options: PriorOptions, data: DataOptions, train: Any,
          ctx: Context) -> Recipe:
    from engines.audio.mel import MELS_PER_FRAME
    from engines.text.phones import N_CLASSES

    identity_encoder = load_frozen(options.identity, "identity")
    if identity_encoder.config.embed_dim != config.identity_dim:
        raise RecipeError(f"the identity embedding has {identity_encoder.config.embed_dim} values; set "
                          "model.identity_dim")
    # On true timelines the prior depends on no aligner (any aligner may time it when it speaks).
    timed = options.timing != "truth"
    reader = load_frozen(options.lipreader, "lipreader") if timed else None
    phone_aligner = load_frozen(options.aligner, "aligner") if timed else None
    classes = phone_aligner.config.classes if phone_aligner is not None else N_CLASSES
    if classes != config.classes:
        raise RecipeError(f"the aligner knows {classes} phone classes, the prior {config.classes}")
    steps = phone_aligner.config.steps_per_frame if phone_aligner is not None else MELS_PER_FRAME
    Labels = Callable[[str, int, int], torch.Tensor]  # (clip, start, frames) → the window's labels

    def prepared(split: str, limit: int) -> tuple[Any, Labels, dict[str, torch.Tensor]]:
        """Per clip: its phone labels (the aligner's timing of its transcript, the true timeline, or the
        aligner's phones as streamed) and its identity embedding."""
        samples = load_samples(data, split, limit, ctx)
        if phone_aligner is None:
            known = clip_identities(samples, identity_encoder)
            whole = {clip.id: true_labels(clip, known[clip.id][1], steps) for clip in samples.clips}
            identities = {clip: identity for clip, (identity, _) in known.items()}
        else:
            from tqdm import tqdm

            feature_dim = reader.condition_dim(options.features)
            conds = ConditionCache(samples, reader, identity_encoder, options.features, ctx.main).conds
            identities = {clip: cond[0][0, feature_dim:].float() for clip, cond in conds.items()}
            features = {clip: cond[0][:, :feature_dim].float() for clip, cond in conds.items()}
            if options.timing == "stream":
                streamed = {clip: StreamedPhones(phone_aligner, f)
                            for clip, f in tqdm(features.items(), unit="clip", desc="streamed phones",
                                                disable=not ctx.main)}
                return samples, lambda clip, start, frames: streamed[clip].window(start, frames), identities
            texts = {clip.id: clip.text or "" for clip in samples.clips}
            whole = {clip: torch.from_numpy(phone_aligner.align(f, texts[clip]))
                     for clip, f in features.items()}
        return (samples, lambda clip, start, frames: whole[clip][steps * start:steps * (start + frames)],
                identities)

    samples, labels, identities = prepared(data.split, data.limit)

    def l1(batch: dict[str, Any], model: nn.Module, labels: Labels, identities: dict[str, torch.Tensor]
           ) -> torch.Tensor:
        mel = batch["mel"]
        lab = torch.zeros((mel.shape[0], mel.shape[2]), dtype=torch.long)
        windows = zip(lab, batch["id"], batch["start"].tolist(), batch["lengths"].tolist(), strict=True)
        for row, clip, start, frames in windows:
            part = labels(clip, start, frames)
            row[:len(part)] = part
        identity = torch.stack([identities[clip] for clip in batch["id"]])
        return (model(lab.to(ctx.device), identity.to(ctx.device)) - mel).abs().mean()

    def loss_fn(batch: dict[str, Any], model: nn.Module) -> tuple[torch.Tensor, dict[str, Any]]:
        return l1(batch, model, labels, identities), {}

    validate = None
    if data.val_split:
        val_samples, val_labels, val_identities = prepared(data.val_split, data.val_limit)
        val = Windows(val_samples, 0, 0)

        def validate(model: nn.Module) -> dict[str, float]:
            with torch.no_grad():
                return {"loss": float(np.mean([l1(batch, model, val_labels, val_identities).item()
                                               for batch in batches(val, train.batch_size, ctx.device)]))}

    summary = {**summarize(data, samples.clips), "timing": options.timing, "identity": options.identity,
               "identity_digest": checkpoint.weights_digest(identity_encoder)}
    if timed:
        summary.update(lipreader=options.lipreader, aligner=options.aligner, features=options.features,
                       lipreader_digest=checkpoint.weights_digest(reader),
                       aligner_digest=checkpoint.weights_digest(phone_aligner))
    return Recipe(model, config, loss_fn, Windows(samples, data.window, train.seed), summary, collate,
                  validate)
