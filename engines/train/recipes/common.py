"""What every recipe shares: its errors, data options and result, clips and windows, batches, CTC loss and
error rate, frozen networks."""

from __future__ import annotations

import json
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

from engines.params import param
from engines.train import checkpoint, distributed
from engines.train.augment import LipAugment, augment_lips
from engines.train.distributed import Context, derive_seed


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
