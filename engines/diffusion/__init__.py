"""Diffusion over mel: LipVoicer's schedule, guided denoising (CFG + ASR), samplers, training loss."""

from engines.diffusion.guidance import GuidanceStats, GuidedDenoiser
from engines.diffusion.sampling import diffusion_loss, sample_ddim, sample_ddpm, sample_dpmpp_2m
from engines.diffusion.schedule import DiffusionSchedule

__all__ = [
    "DiffusionSchedule",
    "GuidanceStats",
    "GuidedDenoiser",
    "diffusion_loss",
    "sample_ddim",
    "sample_ddpm",
    "sample_dpmpp_2m",
]
