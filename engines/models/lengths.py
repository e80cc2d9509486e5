"""Batches of clips of different lengths: which frames of each padded row are real."""

from __future__ import annotations

from torch import Tensor, arange


def frame_mask(lengths: Tensor, frames: int, like: Tensor) -> Tensor:
    """(B, frames): 1 on each row's first `lengths` (B,) frames, 0 on its padding, in `like`'s dtype and
    device."""
    return (arange(frames, device=like.device)[None] < lengths.to(like.device)[:, None]).to(like.dtype)
