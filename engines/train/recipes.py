"""What `voxsight train MODEL` trains: per model name, a recipe that builds the model from its config,
its loss, its data and its validation. Each imports the model's modules only when it is used, so a
checkout without a model still trains the others (and says clearly what is missing).

A training config (engines/train/configs/MODEL.yaml) has four sections:
    model:  overrides of the model's config dataclass (nested configs as nested maps)
    train:  engines.train.loop.TrainConfig
    data:   DataOptions: which clips, which splits, windows
    recipe: the recipe's own options (its *Options dataclass below)

A recipe is `fn(model, config, options, data, train, ctx) -> Recipe`: `build` makes the model from its
config first, under the training seed, so its initial weights are repeatable; the recipe adds the loss,
data, validation and any auxiliary module (engines.train.loop.Trainer takes them as they are).

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
    vocoder    normalised mel of a random audio segment → waveform, multi-resolution STFT + mel L1
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from engines.models.lengths import frame_mask
from engines.params import param
from engines.train import checkpoint, distributed
from engines.train.augment import LipAugment, augment_lips, draw_move, move_onset
from engines.train.distributed import Context, derive_seed

log = logging.getLogger(__name__)


class RecipeError(ValueError):
    """A recipe that cannot be built as configured: the message says why."""


@dataclass
class DataOptions:
    source: str = param("", "clips to train on: a corpus folder (ours, GRID, LRS3) or a list file; several "
                            "joined by commas (e.g. a corpus and its morph corpus)")
    cache: str = param("runs/features", "feature cache folder (engines.data.loaders)")
    layout: str = param("auto", "layout of the source (auto, corpus, grid, lrs3, list)")
    split: str = param("train", "split to train on ('all': every clip)")
    val_split: str = param("val", "split to validate on ('all': every clip, '': no validation)")
    window: int = param(0, "video frames per training item, cut at random (0: whole clips)")
    limit: int = param(0, "at most this many training clips (0: all)")
    val_limit: int = param(32, "at most this many validation clips")
    jobs: int = param(0, "processes extracting missing features (0: one per CPU core)")


@dataclass
class Recipe:
    model: nn.Module
    model_config: Any
    loss_fn: Callable[[Any, nn.Module], tuple[torch.Tensor, dict[str, Any]]]
    dataset: Dataset
    data_summary: dict[str, Any]
    collate: Callable[[list], Any] | None = None
    validate: Callable[[nn.Module], dict[str, float]] | None = None
    aux: nn.Module | None = None


@dataclass
class Spec:
    build: Callable[..., Recipe]
    module: str  # where the model and its config are (imported when the recipe is built)
    model: str
    config: str
    options: type | None = None


# ---------------------------------------------------------------- data


def load_samples(data: DataOptions, split: str, limit: int, ctx: Context) -> Any:
    """The (cached) samples of one split; process 0 extracts missing features while the others wait."""
    from engines.data import loaders

    if not data.source:
        raise RecipeError("no training data: give --data DIR (or data.source in the config)")
    samples = loaders.load(source_of(data), data.cache, data.layout, split_name(split), limit or None)
    if ctx.main:
        samples.prepare(jobs=data.jobs or os.cpu_count() or 1)
    distributed.barrier(ctx)
    return samples


def sources(data: DataOptions) -> list[str]:
    """The folders of `data.source` (comma separated)."""
    return [part.strip() for part in data.source.split(",") if part.strip()]


def source_of(data: DataOptions) -> str | list[str]:
    """`data.source` as engines.data.loaders takes it: one folder, or the list of folders to join."""
    folders = sources(data)
    return folders if len(folders) > 1 else data.source


def split_name(split: str) -> str | None:
    """A config's split as engines.data.loaders takes it (None: every clip)."""
    return None if split in ("", "all") else split


def summarize(data: DataOptions, clips: Sequence[Any]) -> dict[str, Any]:
    """The training-data summary a checkpoint records: where, how many, and the corpus's own record of
    how it was made (its settings, seed included) when the source is our corpus; for several sources,
    that record per source under "sources"."""
    roots = [Path(folder).resolve() for folder in sources(data)]
    joined = len(roots) > 1
    out: dict[str, Any] = {
        "source": ",".join(map(str, roots)), "layout": clips[0].layout if clips else data.layout,
        "split": split_name(data.split) or "all", "clips": len(clips),
        "speakers": len({c.speaker for c in clips}),
        "identities": len({c.identity or c.speaker for c in clips}), "window_frames": data.window,
    }
    from engines.data.loaders import joined_name

    ids = {c.id for c in clips}
    seconds, records = None, []
    for root in roots:
        record: dict[str, Any] = {"source": str(root)}
        manifest = root / "manifest.jsonl"
        if manifest.is_file():  # our corpus: clip durations without opening the clips
            lines = map(json.loads, manifest.read_text().splitlines())
            seconds = (seconds or 0.0) + sum(r.get("duration_s", 0.0) for r in lines
                                             if (joined_name(root, r["id"]) if joined else r["id"]) in ids)
        for name, key in (("corpus.json", "corpus"), ("summary.json", "corpus_summary")):
            path = root / name
            if path.is_file():
                found = json.loads(path.read_text())
                if key == "corpus_summary":
                    keys = ("total_hours", "hours", "total_clips", "speakers")
                    found = {k: found[k] for k in keys if k in found}
                record[key] = found
        records.append(record)
    if seconds is not None:
        out["hours"] = round(seconds / 3600, 4)
    if joined:
        out["sources"] = records
    elif records:
        out.update({k: v for k, v in records[0].items() if k != "source"})
    return out


class Windows(Dataset):
    """engines.data.loaders.TorchSamples items whose random window (and augmentation, when given) depends
    on (seed, epoch, index) only, not on the order items are read in or on which worker reads them."""

    def __init__(self, samples: Any, window: int, seed: int, augment: LipAugment | None = None,
                 variants: int = 1) -> None:
        from engines.data.loaders import TorchSamples

        self.items = TorchSamples(samples, window=window)
        self.seed, self.epoch = seed, 0
        self.augment = augment if augment is not None and augment.active else None
        self.variants = variants  # each item names one of this many precomputed conditions (ConditionCache)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        self.items.rng = rng = np.random.default_rng(derive_seed(self.seed, self.epoch, index))
        item = self.items[index]
        if self.variants > 1:
            item["variant"] = int(rng.integers(self.variants))
        return augment_lips(item, self.augment, rng) if self.augment is not None else item


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """A batch of TorchSamples items, padded to the longest: video (B, T, 88, 88), lips (B, T, 82),
    mel (B, 80, 4T) (padding −1: silence), face (B, 3, 112, 112), lengths (B,) in video frames, valid
    (B, T), CTC targets (concatenated ids) and target_lengths (B,), and the strings."""
    from engines.text.charset import encode

    lengths = torch.tensor([it["lips"].shape[0] for it in items])
    t_max, b = int(lengths.max()), len(items)
    first = items[0]
    video = first["video"].new_zeros((b, t_max, *first["video"].shape[-2:]))
    lips = first["lips"].new_zeros((b, t_max, first["lips"].shape[-1]))
    mel = first["mel"].new_full((b, first["mel"].shape[0], 4 * t_max), -1.0)
    valid = torch.zeros((b, t_max), dtype=torch.bool)
    for i, it in enumerate(items):
        n = it["lips"].shape[0]
        video[i, :n] = it["video"][0]
        lips[i, :n] = it["lips"]
        mel[i, :, :it["mel"].shape[1]] = it["mel"]
        valid[i, :n] = it["valid"]
    ids = [encode(it["text"]) for it in items]
    return {"video": video, "lips": lips, "mel": mel, "face": torch.stack([it["face"] for it in items]),
            "lengths": lengths, "valid": valid,
            "targets": torch.tensor([i for seq in ids for i in seq], dtype=torch.long),
            "target_lengths": torch.tensor([len(seq) for seq in ids], dtype=torch.long),
            "text": [it["text"] for it in items], "speaker": [it["speaker"] for it in items],
            "id": [it["id"] for it in items], "start": torch.tensor([it["start"] for it in items]),
            "variant": torch.tensor([it.get("variant", 0) for it in items])}


def batches(dataset: Dataset, batch_size: int, device: torch.device,
            make: Callable[[list], Any] = collate) -> Iterator[Any]:
    """A validation set in order, in batches, on `device`."""
    from engines.train.loop import to_device

    for lo in range(0, len(dataset), batch_size):
        yield to_device(make([dataset[i] for i in range(lo, min(len(dataset), lo + batch_size))]), device)


def ctc_loss(log_probs: torch.Tensor, batch: dict[str, Any], lengths: torch.Tensor) -> torch.Tensor:
    """CTC of (B, T, V) log-probabilities against the batch's text (per-target-length mean)."""
    return F.ctc_loss(log_probs.transpose(0, 1).float(), batch["targets"], lengths, batch["target_lengths"],
                      blank=0, zero_infinity=True)


def edit_distance(a: Sequence[Any], b: Sequence[Any]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        diag, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            diag, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diag + (x != y))
    return row[-1]


def ctc_cer(log_probs: torch.Tensor, batch: dict[str, Any], lengths: torch.Tensor) -> tuple[int, int]:
    """(character errors, reference characters) of greedy CTC decoding over a batch."""
    from engines.text.charset import decode, encode
    from engines.text.ctc import greedy_decode

    errors = chars = 0
    for lp, n, text in zip(log_probs, lengths.tolist(), batch["text"], strict=True):
        ref = decode(encode(text))
        errors += edit_distance(decode(greedy_decode(lp[:n])), ref)
        chars += len(ref)
    return errors, chars


def load_frozen(ref: str, kind: str) -> nn.Module:
    """A trained model to condition on: a checkpoint path, or the name of shipped weights."""
    try:
        return checkpoint.load_ref(ref, kind).model.eval().requires_grad_(False)
    except checkpoint.CheckpointError as exc:
        raise RecipeError(str(exc)) from exc


# ---------------------------------------------------------------- lip reader


@dataclass(frozen=True)
class LipReaderOptions(LipAugment):
    speaker_adversary: float = param(0.0, "weight of a face classifier on the clip-mean front-end features, "
                                          "trained through gradient reversal so the features forget whose "
                                          "face it is (0: off)")


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: float) -> torch.Tensor:
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.weight * grad, None


class SpeakerAdversary(nn.Module):
    """Which training face a clip shows, from its front-end features averaged over its frames. Its loss
    trains it as usual, while the gradient reaching the front end is reversed and scaled by `weight`
    (domain-adversarial training): the ten training faces are few enough that a reader learns them, and
    what it learns of a face is no help on the next one."""

    def __init__(self, dim: int, faces: int, weight: float) -> None:
        super().__init__()
        self.weight = weight
        self.net = nn.Sequential(nn.Linear(dim, 128), nn.GELU(), nn.Linear(128, faces))

    def forward(self, visual: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = frame_mask(lengths, visual.shape[1], visual)
        mean = (visual * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return self.net(_ReverseGradient.apply(mean, self.weight))


def lipreader(model: nn.Module, config: Any, options: LipReaderOptions, data: DataOptions, train: Any,
              ctx: Context) -> Recipe:
    samples = load_samples(data, data.split, data.limit, ctx)
    val = Windows(load_samples(data, data.val_split, data.val_limit, ctx), 0, 0) if data.val_split else None
    faces = {c.id: c.identity or c.speaker for c in samples.clips}
    labels = {name: i for i, name in enumerate(sorted(set(faces.values())))}
    adversary = None
    if options.speaker_adversary > 0:
        if len(labels) < 2:
            raise RecipeError(f"speaker_adversary needs clips of 2 or more faces, found {sorted(labels)}")
        adversary = SpeakerAdversary(config.frontend.dim, len(labels), options.speaker_adversary)

    def loss_fn(batch: dict[str, Any], model: nn.Module) -> tuple[torch.Tensor, dict[str, Any]]:
        out = model(batch["video"], batch["lips"], lengths=batch["lengths"])
        loss = ctc_loss(out.log_probs, batch, batch["lengths"])
        if adversary is None:
            return loss, {}
        logits = adversary(out.visual, batch["lengths"])
        target = torch.tensor([labels[faces[i]] for i in batch["id"]], device=logits.device)
        accuracy = (logits.argmax(1) == target).float().mean()
        return loss + F.cross_entropy(logits, target), {"ctc": loss.detach(), "face_acc": accuracy}

    def validate(model: nn.Module) -> dict[str, float]:
        errors = chars = 0
        losses = []
        for batch in batches(val, train.batch_size, ctx.device):
            log_probs = model(batch["video"], batch["lips"], lengths=batch["lengths"]).log_probs
            losses.append(ctc_loss(log_probs, batch, batch["lengths"]).item())
            e, c = ctc_cer(log_probs, batch, batch["lengths"])
            errors, chars = errors + e, chars + c
        return {"loss": float(np.mean(losses)), "cer": errors / max(1, chars)}

    summary = {**summarize(data, samples.clips), "faces": len(labels)}
    return Recipe(model, config, loss_fn, Windows(samples, data.window, train.seed, options), summary,
                  collate, validate if val is not None else None, aux=adversary)


# ---------------------------------------------------------------- guidance ASR


@dataclass
class ASROptions:
    clean_fraction: float = param(0.25, "share of samples trained on the clean mel (t = 0)")
    t_max: int = param(400, "noisy samples draw t uniformly from 1..t_max − 1 (guidance uses t ≤ 270)")
    val_t: int = param(135, "diffusion step of the noisy validation CER (besides t = 0)")


def asr(model: nn.Module, config: Any, options: ASROptions, data: DataOptions, train: Any,
        ctx: Context) -> Recipe:
    from engines.diffusion.schedule import DiffusionSchedule

    schedule = DiffusionSchedule()
    if not 1 < options.t_max <= schedule.T:
        raise RecipeError(f"recipe.t_max must be in 2..{schedule.T}")
    samples = load_samples(data, data.split, data.limit, ctx)
    val = Windows(load_samples(data, data.val_split, data.val_limit, ctx), 0, 0) if data.val_split else None

    def noised(mel: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(mel.shape, generator=generator, device=mel.device)
        return torch.where((t > 0)[:, None, None], schedule.q_sample(mel, t, noise), mel)

    def loss_fn(batch: dict[str, Any], model: nn.Module) -> tuple[torch.Tensor, dict[str, Any]]:
        mel = batch["mel"]
        b = mel.shape[0]
        t = torch.randint(1, options.t_max, (b,), device=mel.device)
        t = torch.where(torch.rand(b, device=mel.device) < options.clean_fraction, torch.zeros_like(t), t)
        loss = ctc_loss(model(noised(mel, t), t.float()), batch, batch["lengths"])
        return loss, {"clean_share": (t == 0).float().mean()}

    def validate(model: nn.Module) -> dict[str, float]:
        out = {}
        for step in (0, options.val_t):
            generator = torch.Generator(ctx.device).manual_seed(step)
            errors = chars = 0
            for batch in batches(val, train.batch_size, ctx.device):
                t = torch.full((batch["mel"].shape[0],), step, device=ctx.device)
                e, c = ctc_cer(model(noised(batch["mel"], t, generator), t.float()), batch, batch["lengths"])
                errors, chars = errors + e, chars + c
            out[f"cer_t{step}"] = errors / max(1, chars)
        return out

    return Recipe(model, config, loss_fn, Windows(samples, data.window, train.seed),
                  summarize(data, samples.clips), collate, validate if val is not None else None)


# ---------------------------------------------------------------- identity


@dataclass
class IdentityOptions:
    scale: float = param(16.0, "logit scale of the cosine classifier over the training identities")
    flip: bool = param(True, "mirror faces at random (augmentation)")
    brightness: float = param(0.3, "scale brightness by a random factor in 1 ± this (augmentation)")


class CosineHead(nn.Module):
    """Logits = scale · cos(embedding, class centre): trains unit embeddings to separate identities."""

    def __init__(self, dim: int, classes: int, scale: float, seed: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.centres = nn.Parameter(torch.randn(classes, dim, generator=generator) / dim ** 0.5)
        self.scale = scale

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(embedding, dim=1) @ F.normalize(self.centres, dim=1).T


class Faces(Dataset):
    """(face crop, identity label) per clip, augmented from (seed, epoch, index)."""

    def __init__(self, samples: Any, labels: dict[str, int], options: IdentityOptions | None,
                 seed: int) -> None:
        self.samples, self.labels, self.options = samples, labels, options
        self.keep = [i for i, c in enumerate(samples.clips) if (c.identity or c.speaker) in labels]
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.keep)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = self.samples[self.keep[index]]
        face = torch.from_numpy(sample.face_crop.astype(np.float32) / 255.0).permute(2, 0, 1)
        if self.options is not None:
            rng = np.random.default_rng(derive_seed(self.seed, self.epoch, index))
            if self.options.flip and rng.random() < 0.5:
                face = face.flip(2)
            face = (face * (1 + self.options.brightness * (2 * rng.random() - 1))).clamp(0, 1)
        ref = sample.ref
        return {"face": face, "label": torch.tensor(self.labels[ref.identity or ref.speaker])}


def identity(model: nn.Module, config: Any, options: IdentityOptions, data: DataOptions, train: Any,
             ctx: Context) -> Recipe:
    samples = load_samples(data, data.split, data.limit, ctx)
    names = sorted({c.identity or c.speaker for c in samples.clips})
    if len(names) < 2:
        raise RecipeError(f"the identity encoder needs clips of 2 or more identities, found {names}")
    labels = {n: i for i, n in enumerate(names)}
    head = CosineHead(config.embed_dim, len(names), options.scale, train.seed)
    val = (Faces(load_samples(data, data.val_split, data.val_limit, ctx), labels, None, 0)
           if data.val_split else None)

    def loss_fn(batch: dict[str, Any], model: nn.Module) -> tuple[torch.Tensor, dict[str, Any]]:
        logits = head(model(batch["face"]))
        accuracy = (logits.argmax(1) == batch["label"]).float().mean()
        return F.cross_entropy(logits, batch["label"]), {"acc": accuracy}

    def validate(model: nn.Module) -> dict[str, float]:
        right = total = 0
        for batch in batches(val, train.batch_size, ctx.device, torch.utils.data.default_collate):
            right += int((head(model(batch["face"])).argmax(1) == batch["label"]).sum())
            total += len(batch["label"])
        return {"acc": right / max(1, total)}

    summary = {**summarize(data, samples.clips), "classes": len(names)}
    return Recipe(model, config, loss_fn, Faces(samples, labels, options, train.seed),
                  summary, None, validate if val is not None and len(val) else None, aux=head)


# ---------------------------------------------------------------- MelGen


@dataclass
class MelGenOptions:
    lipreader: str = param("lipreader", "trained lip reader whose features MelGen hears "
                                        "(checkpoint path or shipped name)")
    identity: str = param("identity", "trained identity encoder (checkpoint path or shipped name)")
    features: str = param("reader", "lip-reader features: 'visual' (front end) or 'reader' (front end and "
                                    "GRU states)", choices=("visual", "reader"))
    cond_drop_prob: float = param(0.2, "probability of training a sample on the null condition (CFG)")
    loss: str = param("l1", "diffusion loss on the predicted ε or x0 (LipVoicer: l1 on ε)",
                      choices=("l1", "l2"))
    condition_variants: int = param(1, "conditions per training clip: the plain one and N − 1 from lip "
                                       "inputs changed as `augment` says; each training window hears one "
                                       "at random, so MelGen learns to bear how a new face shifts the lip "
                                       "reader's features")
    augment: LipAugment = param(LipAugment(), "augmentations of the extra condition variants")  # noqa: RUF009
    phonetic_loss: float = param(0.0, "weight of the phonetic loss: KL from the frozen ASR's character "
                                      "posteriors on the reference mel to those on MelGen's clean estimate, "
                                      "weighted by ᾱ_t (the L1 loss alone renders short words such as GRID's "
                                      "letters unintelligibly, NOTES.md)")
    asr: str = param("asr", "the frozen ASR of the phonetic loss (checkpoint path or shipped name)")


def phonetic_loss(asr: nn.Module, weight: float) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor],
                                                                torch.Tensor]:
    """`diffusion_loss`'s x0_loss: weight · mean over samples of ᾱ_t · KL(ASR(x0) ‖ ASR(x̂0)) per ASR
    frame, both heard as clean (t = 0). The ASR stays frozen; the gradient reaches MelGen through x̂0."""
    def loss(x0_hat: torch.Tensor, x0: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = asr(x0, 0)
        kl = (target.exp() * (target - asr(x0_hat, 0))).sum(dim=2).mean(dim=1)
        return weight * (alpha_bar * kl).mean()
    return loss


class ConditionCache:
    """MelGen's condition (T, C) of every clip, computed once over the whole clip by the frozen lip reader
    and identity encoder, so a training window hears the GRU states of the whole utterance (as a stream
    does, carrying them from window to window) and the frozen networks never run twice. With `variants`
    > 1 each clip also keeps conditions of augmented lip inputs (variant 0 is the plain one), drawn from
    (seed, variant, clip index). Without an identity encoder, the lip reader's features alone (the phone
    aligner's input). With `moves` (the phone aligner, whose labels can follow), the augmentations may also
    move a clip's start and end (onset_trim, onset_hold, end_hold; not tempo): `moved[clip][variant]` is
    then (lead, tail), the frames held before (dropped, if negative) and after the clip (augment.move_onset),
    and each variant has its own length.

    Each clip's conditions are also kept on disk beside the features (`conditions/` under the samples'
    cache), keyed by the networks' weights, these options, the clip's index and its content: a resumed
    or repeated training with the same reader skips the frozen networks (they take most of a short
    fine-tune's time: ~20–45 minutes on 2 cores for the four corpora)."""

    def __init__(self, samples: Any, lipreader: nn.Module, identity_encoder: nn.Module | None, kind: str,
                 progress: bool = True, variants: int = 1, augment: LipAugment | None = None,
                 seed: int = 0, moves: bool = False) -> None:
        from tqdm import tqdm

        from engines.data.cache import FeatureCache
        from engines.data.loaders import TorchSamples

        if variants < 1 or (variants > 1 and (augment is None or not augment.active)):
            raise RecipeError(f"condition_variants {variants} needs >= 1, and augmentations when above 1")
        moving = augment is not None and augment.moves_onset
        if augment is not None and (augment.tempo or (moving and not moves)):
            raise RecipeError("onset_trim, onset_hold, end_hold and tempo change a clip's length: MelGen's "
                              "conditions must stay aligned with its mel (they are for the lip reader; the "
                              "phone aligner takes all but tempo)")
        # the move is drawn first, then the rest as augment_lips draws it without one
        steady = dataclasses.replace(augment, onset_trim=0, onset_hold=0, end_hold=0) if moving else augment
        items = TorchSamples(samples, window=0)
        networks = [checkpoint.weights_digest(net, exact=True)
                    for net in (lipreader, identity_encoder) if net is not None]
        self.stored = FeatureCache(samples.cache.root / "conditions", "|".join(map(str, (
            "conditions-1", *networks, kind, variants, augment, seed, moves))))
        self.conds: dict[str, list[torch.Tensor]] = {}  # clip → per variant (T_v, C)
        self.moved: dict[str, list[tuple[int, int]]] = {}
        self._writable = True
        with torch.no_grad():
            for i in (bar := tqdm(range(len(items)), unit="clip", desc="conditions", disable=not progress)):
                ref = samples.clips[i]
                key = self.stored.key(ref.files, str(i))  # augmentations are drawn from the clip's index
                arrays = self.stored.load(key)
                if arrays is None:
                    arrays = self._compute(items[i], i, lipreader, identity_encoder, kind, variants, augment,
                                           steady, seed)
                    self._keep(key, arrays)
                else:
                    self.stored.hits += 1
                    bar.set_postfix_str(f"{self.stored.hits} from disk", refresh=False)
                self.conds[ref.id] = [torch.from_numpy(arrays[f"v{v}"]) for v in range(variants)]
                self.moved[ref.id] = [(int(lead), int(tail)) for lead, tail in arrays["moved"]]

    def _keep(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        """Store a computed clip; a full or read-only disk only costs the saving (the run keeps them in
        memory), said once."""
        self.stored.misses += 1
        if not self._writable:
            return
        try:
            self.stored.store(key, arrays)
        except OSError as e:
            self._writable = False
            log.warning("conditions are not kept on disk (%s); this run holds them in memory", e)

    @staticmethod
    def _compute(it: dict[str, Any], index: int, lipreader: nn.Module, identity_encoder: nn.Module | None,
                 kind: str, variants: int, augment: LipAugment | None, steady: LipAugment | None,
                 seed: int) -> dict[str, np.ndarray]:
        """One clip's arrays as stored: v0 … v{variants−1} (T_v, C) float16 and moved (variants, 2)."""
        from engines.models.lipreader import condition_features
        from engines.models.melgen import join_condition

        identity = identity_encoder(it["face"][None]) if identity_encoder is not None else None
        arrays, moved = {}, []
        for v in range(variants):
            seen, lead, tail = it, 0, 0
            if v:
                rng = np.random.default_rng(derive_seed(seed, v, index))
                if augment is not None and augment.moves_onset:
                    lead, tail = draw_move(augment, rng, it["lips"].shape[0])
                    seen = move_onset(it, lead, tail)
                seen = augment_lips(seen, steady, rng)
            visual = condition_features(lipreader(seen["video"], seen["lips"][None]), kind)
            cond = join_condition(visual, identity) if identity is not None else visual
            arrays[f"v{v}"] = cond[0].half().numpy()
            moved.append((lead, tail))
        arrays["moved"] = np.array(moved, dtype=np.int64).reshape(variants, 2)
        return arrays

    def window(self, ids: Sequence[str], starts: Sequence[int], frames: int,
               variants: Sequence[int] | None = None) -> torch.Tensor:
        """(B, frames, C): each clip's condition (of its variant; default the plain one) from its window
        start, zero past the clip's end."""
        out = torch.zeros((len(ids), frames, self.conds[ids[0]][0].shape[1]))
        for row, clip, start, variant in zip(out, ids, starts, variants or [0] * len(ids), strict=True):
            part = self.conds[clip][int(variant)][int(start):int(start) + frames]
            row[:len(part)] = part.float()
        return out


def melgen(model: nn.Module, config: Any, options: MelGenOptions, data: DataOptions, train: Any,
           ctx: Context) -> Recipe:
    from engines.diffusion.sampling import diffusion_loss
    from engines.diffusion.schedule import DiffusionSchedule

    reader = load_frozen(options.lipreader, "lipreader")
    identity_encoder = load_frozen(options.identity, "identity")
    cond_dim = reader.condition_dim(options.features) + identity_encoder.config.embed_dim
    if cond_dim != config.cond_dim:
        raise RecipeError(f"the lip reader's {options.features!r} features and the identity embedding make "
                          f"{cond_dim} values per frame; set model.cond_dim: {cond_dim}")
    schedule = DiffusionSchedule()
    samples = load_samples(data, data.split, data.limit, ctx)
    conds = ConditionCache(samples, reader, identity_encoder, options.features, ctx.main,
                           options.condition_variants, options.augment, train.seed)
    val = val_conds = None
    if data.val_split:
        val_samples = load_samples(data, data.val_split, data.val_limit, ctx)
        val = Windows(val_samples, data.window, 0)
        val_conds = ConditionCache(val_samples, reader, identity_encoder, options.features, ctx.main)

    def condition(batch: dict[str, Any], cache: ConditionCache) -> torch.Tensor:
        return cache.window(batch["id"], batch["start"].tolist(), batch["lips"].shape[1],
                            batch["variant"].tolist()).to(ctx.device)

    x0_loss = phonetic_loss(load_frozen(options.asr, "asr"), options.phonetic_loss) \
        if options.phonetic_loss > 0 else None

    def loss_fn(batch: dict[str, Any], model: nn.Module) -> tuple[torch.Tensor, dict[str, Any]]:
        return diffusion_loss(model, batch["mel"], condition(batch, conds), schedule, options.cond_drop_prob,
                              model.null_cond, options.loss, target=config.prediction, x0_loss=x0_loss), {}

    def validate(model: nn.Module) -> dict[str, float]:
        generator = torch.Generator(ctx.device).manual_seed(0)
        losses = [diffusion_loss(model, batch["mel"], condition(batch, val_conds), schedule, 0.0, None,
                                 options.loss, generator=generator, target=config.prediction).item()
                  for batch in batches(val, train.batch_size, ctx.device)]
        return {"loss": float(np.mean(losses))}

    summary = {**summarize(data, samples.clips), "lipreader": options.lipreader, "identity": options.identity,
               "features": options.features, "lipreader_digest": checkpoint.weights_digest(reader),
               "identity_digest": checkpoint.weights_digest(identity_encoder)}
    return Recipe(model, config, loss_fn, Windows(samples, data.window, train.seed,
                                                  variants=options.condition_variants), summary,
                  collate, validate if val is not None else None)


# ---------------------------------------------------------------- phone aligner


@dataclass
class AlignerOptions:
    lipreader: str = param("lipreader", "trained lip reader whose features the aligner reads (checkpoint "
                                        "path or shipped name)")
    features: str = param("reader", "lip-reader features: 'visual' (front end) or 'reader' (front end and "
                                    "GRU states)", choices=("visual", "reader"))
    condition_variants: int = param(1, "features per training clip: the plain ones and N − 1 of lip inputs "
                                       "changed as `augment` says (as MelGen's condition_variants)")
    augment: LipAugment = param(LipAugment(), "augmentations of the extra feature variants; onset_trim, "  # noqa: RUF009
                                              "onset_hold and end_hold move the phone labels with the frames "
                                              "(tempo is refused)")
    stream_cuts: float = param(0.0, "share of training clips cut at a random frame, the steps before the cut "
                                    "scored: a stream's window ends at its look-ahead, mid-speech, where "
                                    "whole clips only ever end in silence (cuts drawn from train.seed)")

    def __post_init__(self) -> None:
        if not 0.0 <= self.stream_cuts <= 1.0:
            raise RecipeError(f"stream_cuts must be in [0, 1], got {self.stream_cuts}")


def clip_meta(clip: Any) -> dict[str, Any]:
    """What our corpus writes beside each clip (engines.data.corpus): its phone timeline, viseme track and
    render settings among them."""
    meta = clip.video.with_suffix(".json")
    if not meta.is_file():
        raise RecipeError(f"{clip.id}: no {meta.name} with the phone timeline beside its video (the phone "
                          "aligner trains on our synthetic corpora, whose clips record what was said when)")
    return json.loads(meta.read_text())


def phone_timeline(clip: Any) -> list[Any]:
    """The true phone timeline [(symbol, start_s, dur_s), ...] our corpus writes beside each clip."""
    return clip_meta(clip)["phones"]


def true_labels(clip: Any, n_steps: int, steps_per_frame: int) -> torch.Tensor:
    """Per-step phone classes (n_steps,) of what the clip's audio says when (its corpus timeline)."""
    from engines.audio.mel import VIDEO_FPS
    from engines.text.phones import timeline_labels

    return torch.from_numpy(timeline_labels(phone_timeline(clip), n_steps, steps_per_frame * VIDEO_FPS))


def moved_labels(labels: torch.Tensor, lead: int, tail: int) -> torch.Tensor:
    """Per-step labels of a clip whose start moved by `lead` steps (held: silence before; negative: that
    many dropped) and whose end moved by `tail` (silence after): augment.move_onset's move, in steps."""
    from engines.text.phones import SILENCE

    return torch.cat([torch.full((max(0, lead),), SILENCE, dtype=labels.dtype), labels[max(0, -lead):],
                      torch.full((tail,), SILENCE, dtype=labels.dtype)])


def aligner(model: nn.Module, config: Any, options: AlignerOptions, data: DataOptions, train: Any,
            ctx: Context) -> Recipe:
    reader = load_frozen(options.lipreader, "lipreader")
    if reader.condition_dim(options.features) != config.feature_dim:
        raise RecipeError(f"the lip reader's {options.features!r} features have "
                          f"{reader.condition_dim(options.features)} values per frame; set model.feature_dim")
    steps = config.steps_per_frame

    def prepared(split: str, limit: int, variants: int) -> tuple[Any, ConditionCache, dict[str, Any]]:
        """Samples, their features and per clip and variant the phone labels (moved with the frames)."""
        samples = load_samples(data, split, limit, ctx)
        feats = ConditionCache(samples, reader, None, options.features, ctx.main, variants, options.augment,
                               train.seed, moves=True)
        labels = {}
        for clip in samples.clips:
            truth = true_labels(clip, steps * feats.conds[clip.id][0].shape[0], steps)
            labels[clip.id] = [moved_labels(truth, steps * lead, steps * tail)
                               for lead, tail in feats.moved[clip.id]]
        return samples, feats, labels

    samples, feats, labels = prepared(data.split, data.limit, options.condition_variants)
    cuts = torch.Generator().manual_seed(train.seed)

    def nll(batch: dict[str, Any], model: nn.Module, cache: ConditionCache, truth: dict[str, torch.Tensor],
            cut_share: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, correct steps, steps) of one batch; steps past a clip's end (or its cut) do not count."""
        frames = batch["lips"].shape[1]
        x = cache.window(batch["id"], batch["start"].tolist(), frames, batch["variant"].tolist())
        x = x.to(ctx.device)
        target = torch.full((len(batch["id"]), steps * frames), -100, dtype=torch.long)
        lengths = torch.zeros(len(batch["id"]), dtype=torch.long)
        for k, (clip, start, variant) in enumerate(zip(batch["id"], batch["start"].tolist(),
                                                       batch["variant"].tolist(), strict=True)):
            part = truth[clip][variant][steps * start:steps * (start + frames)]
            length = min(frames, cache.conds[clip][variant].shape[0] - start)
            if cut_share and length > 1 and torch.rand((), generator=cuts) < cut_share:
                length = int(torch.randint(1, length, (), generator=cuts))
            lengths[k] = length
            part = part[:steps * length]
            target[k, :len(part)] = part
        target = target.to(ctx.device)
        log_probs = model(x, lengths)
        loss = F.nll_loss(log_probs.reshape(-1, config.classes), target.reshape(-1), ignore_index=-100)
        counted = target >= 0
        return loss, (log_probs.argmax(dim=2) == target)[counted].sum(), counted.sum()

    def loss_fn(batch: dict[str, Any], model: nn.Module) -> tuple[torch.Tensor, dict[str, Any]]:
        return nll(batch, model, feats, labels, options.stream_cuts)[0], {}

    validate = None
    if data.val_split:
        val_samples, val_feats, val_labels = prepared(data.val_split, data.val_limit, 1)
        val = Windows(val_samples, 0, 0)

        def validate(model: nn.Module) -> dict[str, float]:
            losses, right, total = [], 0, 0
            with torch.no_grad():
                for batch in batches(val, train.batch_size, ctx.device):
                    loss, correct, counted = nll(batch, model, val_feats, val_labels)
                    losses.append(loss.item())
                    right, total = right + int(correct), total + int(counted)
            return {"loss": float(np.mean(losses)), "step_accuracy": right / max(total, 1)}

    summary = {**summarize(data, samples.clips), "lipreader": options.lipreader, "features": options.features,
               "lipreader_digest": checkpoint.weights_digest(reader)}
    return Recipe(model, config, loss_fn, Windows(samples, data.window, train.seed,
                                                  variants=options.condition_variants), summary,
                  collate, validate)


# ---------------------------------------------------------------- mel prior


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


def prior(model: nn.Module, config: Any, options: PriorOptions, data: DataOptions, train: Any,
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


# ---------------------------------------------------------------- vocoder


@dataclass
class VocoderOptions:
    segment_frames: int = param(32, "mel frames per training segment (32 = 5120 samples, as HiFi-GAN's)")
    stft_weight: float = param(1.0, "weight of the multi-resolution STFT loss")
    mel_weight: float = param(1.0, "weight of the log-mel L1 loss")
    prior: str = param("", "a trained mel prior (checkpoint path or shipped name): voice its mel of each "
                           "clip, spoken on the clip's true phone timeline with the clip's identity "
                           "embedding, instead of the audio's own mel (fine-tune a trained vocoder with "
                           "init_from): the prior's mel is smoother than speech's, and a vocoder that has "
                           "only heard real mel voices it blurred")
    identity: str = param("identity", "the identity encoder the prior was trained with (with `prior`)")
    prior_fraction: float = param(1.0, "with `prior`: the share of training segments whose input is the "
                                       "prior's mel; the others keep their audio's own mel, so one vocoder "
                                       "voices both the prior's mel and MelGen's speech-like mel")


class AudioSegments(Dataset):
    """Peak-normalised random segments of the clips' reference audio, drawn from (seed, epoch, index)
    (fixed segments from the start when `seed` is None); shorter clips are zero-padded."""

    def __init__(self, clips: Sequence[Any], samples: int, seed: int | None) -> None:
        self.clips, self.samples, self.seed, self.epoch = list(clips), samples, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        from engines.audio.mel import peak_normalise
        from engines.clipsets import read_audio

        audio = peak_normalise(read_audio(self.clips[index].audio))
        spare = len(audio) - self.samples
        start = 0
        if spare > 0 and self.seed is not None:
            rng = np.random.default_rng(derive_seed(self.seed, self.epoch, index))
            start = int(rng.integers(0, spare + 1))
        out = np.zeros(self.samples, np.float32)
        part = audio[start:start + self.samples]
        out[:len(part)] = part
        return {"wav": torch.from_numpy(out)}


class PriorSegments(AudioSegments):
    """AudioSegments that start on a mel frame, each with the mel prior's mel over the same frames (`mels`:
    clip id → (80, F), the audio's own mel frames) and whether the vocoder is to hear it (`prior`, drawn
    with probability `fraction`; else the audio's own mel)."""

    def __init__(self, clips: Sequence[Any], mels: dict[str, torch.Tensor], frames: int,
                 seed: int | None, fraction: float = 1.0) -> None:
        from engines.audio.torch_mel import HOP

        super().__init__(clips, frames * HOP, seed)
        self.mels, self.frames, self.fraction = mels, frames, fraction

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        from engines.audio.mel import MELS_PER_FRAME, fit_to_frames, peak_normalise
        from engines.audio.torch_mel import HOP
        from engines.clipsets import read_audio

        clip = self.clips[index]
        prior_mel = self.mels[clip.id].float()
        # the audio as the feature cache cut it for the clip's mel (engines.data.loaders.audio_features)
        audio = fit_to_frames(peak_normalise(read_audio(clip.audio)), prior_mel.shape[1] // MELS_PER_FRAME)
        spare = prior_mel.shape[1] - self.frames
        start, use_prior = 0, True
        if self.seed is not None:
            rng = np.random.default_rng(derive_seed(self.seed, self.epoch, index))
            start = int(rng.integers(0, spare + 1)) if spare > 0 else 0
            use_prior = bool(rng.uniform() < self.fraction)
        wav = np.zeros(self.samples, np.float32)
        part = audio[start * HOP:start * HOP + self.samples]
        wav[:len(part)] = part
        mel = torch.full((prior_mel.shape[0], self.frames), -1.0)
        seg = prior_mel[:, start:start + self.frames]
        mel[:, :seg.shape[1]] = seg
        return {"wav": torch.from_numpy(wav), "mel": mel, "prior": torch.tensor(use_prior)}


def prior_mels(samples: Any, mel_prior: nn.Module, identity_encoder: nn.Module) -> dict[str, torch.Tensor]:
    """The mel prior's mel (80, F) of every clip of `samples`, spoken on its true phone timeline with its
    own identity embedding."""
    from engines.audio.mel import MELS_PER_FRAME

    known = clip_identities(samples, identity_encoder)
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for clip in samples.clips:
            identity, frames = known[clip.id]
            labels = true_labels(clip, frames, MELS_PER_FRAME)
            out[clip.id] = mel_prior(labels[None], identity[None])[0].half()
    return out


def vocoder(model: nn.Module, config: Any, options: VocoderOptions, data: DataOptions, train: Any,
            ctx: Context) -> Recipe:
    from engines.audio.torch_mel import HOP, LogMel, normalize
    from engines.data.loaders import list_clips
    from engines.models.vocoder import vocoder_losses

    if not data.source:
        raise RecipeError("no training data: give --data DIR (or data.source in the config)")
    if not 0 < options.prior_fraction <= 1:
        raise RecipeError(f"prior_fraction must be in (0, 1], got {options.prior_fraction}")
    logmel = LogMel()
    n = options.segment_frames * HOP

    def losses(batch: dict[str, Any], model: nn.Module) -> dict[str, torch.Tensor]:
        wav = batch["wav"]
        logmel.to(wav.device)
        mel = normalize(logmel(wav)[..., :options.segment_frames])
        if "prior" in batch:
            mel = torch.where(batch["prior"][:, None, None], batch["mel"].to(mel.device), mel)
        return vocoder_losses(model(mel), wav, logmel, stft_weight=options.stft_weight,
                              mel_weight=options.mel_weight)

    def loss_fn(batch: dict[str, Any], model: nn.Module) -> tuple[torch.Tensor, dict[str, Any]]:
        parts = losses(batch, model)
        return parts.pop("total"), parts

    def validate(model: nn.Module) -> dict[str, float]:
        parts = [losses(batch, model) for batch in batches(val, train.batch_size, ctx.device,
                                                           torch.utils.data.default_collate)]
        return {k: float(np.mean([p[k].item() for p in parts])) for k in parts[0]}

    if options.prior:  # loaded once for both splits and the digest
        mel_prior = load_frozen(options.prior, "prior")
        identity_encoder = load_frozen(options.identity, "identity")

    def segments(split: str, limit: int, seed: int | None) -> tuple[Sequence[Any], Dataset]:
        if not options.prior:
            clips = list_clips(source_of(data), data.layout, split_name(split), limit or None)
            return clips, AudioSegments(clips, n, seed)
        samples = load_samples(data, split, limit, ctx)
        mels = prior_mels(samples, mel_prior, identity_encoder)
        fraction = options.prior_fraction if seed is not None else 1.0  # validation: the prior's mel
        return samples.clips, PriorSegments(samples.clips, mels, options.segment_frames, seed, fraction)

    clips, dataset = segments(data.split, data.limit, train.seed)
    val = segments(data.val_split, data.val_limit, None)[1] if data.val_split else None
    summary = summarize(data, clips)
    if options.prior:
        summary.update(prior=options.prior, identity=options.identity, prior_fraction=options.prior_fraction,
                       prior_digest=checkpoint.weights_digest(mel_prior))
    return Recipe(model, config, loss_fn, dataset, summary, None, validate if val is not None else None)


RECIPES: dict[str, Spec] = {
    "lipreader": Spec(lipreader, "engines.models.lipreader", "LipReader", "LipReaderConfig",
                      LipReaderOptions),
    "asr": Spec(asr, "engines.models.asr", "ASR", "ASRConfig", ASROptions),
    "identity": Spec(identity, "engines.models.identity", "IdentityEncoder", "IdentityConfig",
                     IdentityOptions),
    "melgen": Spec(melgen, "engines.models.melgen", "MelGen", "MelGenConfig", MelGenOptions),
    "aligner": Spec(aligner, "engines.models.aligner", "PhoneAligner", "PhoneAlignerConfig", AlignerOptions),
    "prior": Spec(prior, "engines.models.mel_prior", "MelPrior", "MelPriorConfig", PriorOptions),
    "vocoder": Spec(vocoder, "engines.models.vocoder", "Vocoder", "VocoderConfig", VocoderOptions),
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

