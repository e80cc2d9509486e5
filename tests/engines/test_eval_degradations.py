"""Planted degradations of real GRID speech move every judge the right way.

One evaluation (all judges, the three ../shared/real/grid-dev clips) is shared by the module: whisper,
DNSMOS and the face mesh cost seconds to load and to run.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from engines.eval.clips import Clip, load_clips
from engines.eval.evaluate import Results, evaluate
from engines.eval.judges import make_judges
from engines.eval.systems import Reference
from tests.helpers import SHARED

GRID_DEV = SHARED / "real" / "grid-dev"
pytestmark = pytest.mark.skipif(not any(GRID_DEV.glob("*.mpg")), reason=f"no GRID clips in {GRID_DEV}")
SHIFT_MS = 200


class Degraded:
    def __init__(self, name: str, change: Callable[[Clip], np.ndarray]) -> None:
        self.name = name
        self.change = change

    def generate(self, clip: Clip) -> np.ndarray:
        return self.change(clip)


def white_noise_0db(clip: Clip) -> np.ndarray:
    speech = clip.reference()
    noise = np.random.default_rng(0).normal(size=len(speech)) * np.sqrt(np.mean(speech**2))
    return (speech + noise).astype(np.float32)  # the harness clips what goes beyond ±1 (and says so)


def delayed(clip: Clip) -> np.ndarray:
    speech = clip.reference()
    lead = SHIFT_MS * 16
    return np.concatenate([np.zeros(lead, np.float32), speech[:-lead]])


@pytest.fixture(scope="module")
def results() -> Results:
    clips = load_clips(GRID_DEV)
    others = {c.id: clips[(i + 1) % len(clips)] for i, c in enumerate(clips)}
    systems = [Reference(), Degraded("noise 0 dB", white_noise_0db), Degraded("shift 200 ms", delayed),
               Degraded("other speaker", lambda c: others[c.id].reference()),
               Degraded("silence", lambda c: np.zeros_like(c.reference()))]
    return evaluate(clips, systems, make_judges(), progress=False)


def values(results: Results, system: str, key: str) -> np.ndarray:
    return np.array([results.rows[system][c.id][key] for c in results.clips], dtype=float)


def test_reference_scores_itself_perfectly(results: Results) -> None:
    assert (values(results, "reference", "stoi") > 0.99).all()
    assert (values(results, "reference", "vad_agreement") == 1.0).all()
    assert (values(results, "reference", "energy_mae") == 0.0).all()
    assert (values(results, "reference", "spk_id") == 1.0).all()
    assert (values(results, "reference", "wer_sphinx") == 0.0).all()
    assert np.isfinite(values(results, "reference", "av_offset_ms")).all()


def test_white_noise_at_0db(results: Results) -> None:
    for key in ("stoi", "estoi", "dnsmos_ovrl", "dnsmos_bak", "dnsmos_sig"):
        assert (values(results, "noise 0 dB", key) < values(results, "reference", key) - 0.1).all(), key
    assert (values(results, "noise 0 dB", "energy_mae") > 0.5).all()
    for key in ("wer_whisper", "wer_sphinx"):
        assert values(results, "noise 0 dB", key).sum() >= values(results, "reference", key).sum()


def test_200ms_shift(results: Results) -> None:
    moved = values(results, "shift 200 ms", "av_offset_ms") - values(results, "reference", "av_offset_ms")
    assert np.allclose(moved, SHIFT_MS, atol=30), moved
    assert np.allclose(values(results, "shift 200 ms", "av_dev_ms"), SHIFT_MS, atol=30)
    assert (values(results, "reference", "av_dev_ms") == 0.0).all()
    assert (values(results, "shift 200 ms", "stoi") < 0.8).all()
    assert (values(results, "shift 200 ms", "energy_mae") > 0.5).all()


def test_another_speakers_voice(results: Results) -> None:
    assert (values(results, "other speaker", "spk_id") == 0.0).all()
    assert (values(results, "other speaker", "spk_margin") < 0).all()
    assert np.median(values(results, "other speaker", "f0_err_st")) > 3.0  # two of the three cross genders
    assert (values(results, "other speaker", "wer_sphinx") > 0.3).all()  # another sentence, too


def test_silence(results: Results) -> None:
    for key in ("wer_whisper", "wer_sphinx"):
        assert (values(results, "silence", key) == 1.0).all(), key
    assert (values(results, "silence", "vad_agreement") < 0.7).all()
    assert (values(results, "silence", "vad_speech") == 0.0).all()
    reference_ovrl = values(results, "reference", "dnsmos_ovrl")
    assert (values(results, "silence", "dnsmos_ovrl") < reference_ovrl - 0.5).all()
    assert (values(results, "silence", "spk_id") == 0.0).all()
    assert np.isnan(values(results, "silence", "av_offset_ms")).all()
    assert np.isnan(values(results, "silence", "f0_err_st")).all()


def test_summary_orders_the_rows(results: Results) -> None:
    summary = results.summary()
    wer = {s: summary[s]["wer_sphinx"].value for s in results.systems}
    assert wer["reference"] < wer["noise 0 dB"] <= wer["silence"] == 1.0
    assert summary["reference"]["stoi"].value > summary["shift 200 ms"]["stoi"].value
    assert summary["silence"]["spk_id"].value == 0.0
