"""Model benchmark: parameters and CPU milliseconds per forward pass of the lip-to-speech networks
for a 1 s window (25 video frames, 100 mel frames), on one core by default.

Rows: the visual front end and the lip reader (25 frames), the identity encoder (one face crop), the
guidance ASR (100 mel frames; forward, and forward + backward to the mel as ASR guidance needs),
MelGen at its default size and at LipVoicer's size (batch 2 = conditional + null for CFG; whole
forward, and with the condition path prepared once per window as a few-step sampler runs it).
Weights are random: the cost does not depend on them.

Run: `.venv/bin/python bench/models.py [--threads 1] [--repeats 20]`. Prints a markdown table; the
figure is the median over repeats after warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from engines.models.asr import ASR
from engines.models.frontend import VisualFrontend
from engines.models.identity import IdentityEncoder
from engines.models.lipreader import LipReader
from engines.models.melgen import MelGen, MelGenConfig
from engines.text.charset import encode

FRAMES, MELS = 25, 100  # one second


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


Row = tuple[str, int, str, float]


def visual_rows(repeats: int) -> list[Row]:
    roi, geometry = torch.randn(1, FRAMES, 88, 88), torch.randn(1, FRAMES, 82)
    frontend, reader, identity = VisualFrontend().eval(), LipReader().eval(), IdentityEncoder().eval()
    face = torch.rand(1, 3, 112, 112)
    with torch.inference_mode():
        return [
            ("VisualFrontend", params(frontend), "1 × 25 frames",
             median_ms(lambda: frontend(roi, geometry), repeats)),
            ("LipReader", params(reader), "1 × 25 frames", median_ms(lambda: reader(roi, geometry), repeats)),
            ("IdentityEncoder", params(identity), "1 face crop", median_ms(lambda: identity(face), repeats)),
        ]


def asr_rows(repeats: int) -> list[Row]:
    asr = ASR().eval()
    mel, t = torch.randn(1, 80, MELS), torch.tensor([100])
    target = torch.tensor([encode("bin blue at f two now")])
    lengths = torch.tensor([FRAMES]), torch.tensor([target.shape[1]])

    def guidance_gradient() -> torch.Tensor:
        x = mel.clone().requires_grad_(True)
        loss = F.ctc_loss(asr(x, t).transpose(0, 1), target, *lengths)
        return torch.autograd.grad(loss, x)[0]

    with torch.inference_mode():
        forward = median_ms(lambda: asr(mel, t), repeats)
    return [("ASR", params(asr), "1 × 100 mel", forward),
            ("ASR forward + ∇mel", params(asr), "1 × 100 mel", median_ms(guidance_gradient, repeats))]


def melgen_rows(name: str, config: MelGenConfig, repeats: int) -> list[Row]:
    model = MelGen(config).eval()
    with torch.no_grad():  # random output weights: the cost is the same, the output is not all zeros
        model.final_conv.weight.normal_(std=0.01)
    x, t = torch.randn(2, 80, MELS), torch.tensor([100, 100])
    cond = torch.randn(2, FRAMES, config.cond_dim)
    n, pair = params(model), "2 × 100 mel (CFG pair)"
    with torch.inference_mode():
        prepared = model.prepare(cond)
        return [(name, n, pair, median_ms(lambda: model(x, t, cond), repeats)),
                (f"{name}, condition prepared", n, pair, median_ms(lambda: model(x, t, prepared), repeats)),
                (f"{name}, prepare only", n, "2 × 25 frames",
                 median_ms(lambda: model.prepare(cond), repeats))]


def rows(repeats: int) -> list[Row]:
    return [*visual_rows(repeats), *asr_rows(repeats),
            *melgen_rows("MelGen (default)", MelGenConfig(), repeats),
            *melgen_rows("MelGen (LipVoicer size)", MelGenConfig.lipvoicer(), max(3, repeats // 5))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"## Models: 1 s window, {args.threads} CPU thread(s), torch {torch.__version__}, median of "
          f"{args.repeats} (LipVoicer size: fewer)\n")
    print("| model | params | input | ms / forward |")
    print("|---|---:|---|---:|")
    for name, n, what, ms in rows(args.repeats):
        print(f"| {name} | {n / 1e6:.2f} M | {what} | {ms:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
