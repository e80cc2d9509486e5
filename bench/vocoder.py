"""Vocoder speed on the CPU: the default Vocos-style vocoder, HiFi-GAN (small V3-style variant and the full
LipVoicer layout, weight norm folded) and Griffin-Lim (the zero-weight fallback).

For each: milliseconds of compute per second of audio and the real-time factor (compute / audio
duration) on one utterance of --seconds, batch 1, torch eager, median of --runs after a warm-up, on
--threads threads (1 by default: the node shares the CPU with the tracker and the generator). Weights are
random: the speed does not depend on their values. Prints a markdown table.

    .venv/bin/python bench/vocoder.py [--seconds 4] [--runs 5] [--threads 1] [--gl-iter 32]
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines.audio.torch_mel import GriffinLim
from engines.models.hifigan import HiFiGAN, HiFiGANConfig
from engines.models.vocoder import Vocoder


def cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.machine()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
                platform.machine())


def seconds_per_call(fn: Callable[[], object], runs: int) -> float:
    fn()  # warm-up: allocator and kernel selection
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="audio per call")
    parser.add_argument("--runs", type=int, default=5, help="timed calls per vocoder (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--gl-iter", type=int, default=32, help="Griffin-Lim iterations")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    frames = round(args.seconds * 100)
    mel = (torch.randn(1, 80, frames) * 0.3 - 0.4).clamp(-1, 1)  # the normalised mel's usual range
    vocoders = {
        "Vocoder (Vocos-style, default)": Vocoder(),
        "HiFi-GAN small (V3-style)": HiFiGAN(HiFiGANConfig.small()).remove_weight_norm(),
        "HiFi-GAN LipVoicer layout (V1)": HiFiGAN().remove_weight_norm(),
        f"Griffin-Lim ({args.gl_iter} iterations)": GriffinLim(args.gl_iter),
    }
    print(f"`{shlex.join(['.venv/bin/python', 'bench/vocoder.py', *sys.argv[1:]])}`\n")
    print(f"{cpu_name()}, torch {torch.__version__}, {args.threads} thread(s), {args.seconds:g} s of audio "
          f"per call, batch 1, median of {args.runs}; load average {os.getloadavg()[0]:.1f}\n")
    print("| vocoder | parameters | size MB (fp32) | ms per s of audio | RTF | × real time |")
    print("|---|---|---|---|---|---|")
    for name, model in vocoders.items():
        model.eval()
        with torch.inference_mode():
            if (samples := model(mel).shape[-1]) != 160 * frames:
                raise RuntimeError(f"{name}: {samples} samples for {frames} mel frames, not 160 per frame")
            seconds = seconds_per_call(lambda m=model: m(mel), args.runs)
        params = sum(p.numel() for p in model.parameters())
        rtf = seconds / args.seconds
        print(f"| {name} | {params / 1e6:.2f} M | {params * 4 / 1e6:.1f} | {1000 * rtf:.1f} | {rtf:.4f} | "
              f"{1 / rtf:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
