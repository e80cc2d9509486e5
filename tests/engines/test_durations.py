"""Phone durations and the paced (explicit-duration) timing of a text (engines.text.durations)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from engines.text import durations
from engines.text.durations import PhoneDurations, load, measure, paced_align
from engines.text.phones import N_CLASSES, PHONES, SILENCE, align_text, short_phone_share
from tests.engines.test_phones import cls, posteriors


def runs(path: np.ndarray) -> list[tuple[int, int]]:
    """(class, length) of each run of one class."""
    starts = np.r_[0, np.flatnonzero(np.diff(path)) + 1]
    return list(zip(path[starts].tolist(), np.diff(np.r_[starts, len(path)]).tolist(), strict=True))


def flat(n: int) -> np.ndarray:
    return np.full((n, N_CLASSES), -math.log(N_CLASSES))


def test_the_shipped_durations_cover_every_phone_and_record_how_they_were_measured() -> None:
    shipped = json.loads(durations.DURATIONS_FILE.read_text())
    assert shipped["command"].startswith("python -m engines.text.durations") and shipped["clips"] > 1000
    assert set(shipped["phones"]) == set(PHONES)
    table = load()
    typical = np.exp(table.log_mean[1:])
    assert typical.min() > 2 and typical.max() < 20  # 20 to 200 ms
    assert table.log_mean[cls("tS")] > table.log_mean[cls("@")]  # an affricate outlasts a schwa


def test_the_path_follows_clear_posteriors_whatever_the_weight() -> None:
    b, i, n = cls("b"), cls("I"), cls("n")
    truth = np.array([0] * 5 + [b] * 7 + [i] * 4 + [n] * 9 + [0] * 5)
    for weight in (0.0, 3.0):
        assert paced_align(posteriors(truth.tolist()), "bin", weight).tolist() == truth.tolist()


def test_where_the_lips_say_little_each_phone_takes_its_typical_length() -> None:
    table = load()
    path = paced_align(flat(200), "bin blue", 100.0)
    spoken = [(c, length) for c, length in runs(path) if c != SILENCE]
    assert [c for c, _ in spoken] == [cls(p) for p in ("b", "I", "n", "b", "l", "u")]
    for c, length in spoken:  # the log-normal's mode, within a step
        assert abs(length - math.exp(table.log_mean[c] - table.log_sd[c] ** 2)) <= 1.0


def test_pacing_lengthens_the_phones_an_aligner_crams_into_single_steps() -> None:
    b, i, n = cls("b"), cls("I"), cls("n")
    crammed = [0] * 10 + [b, i, n] + [0] * 10  # the aligner hears one step of each phone
    lp = posteriors(crammed, sure=0.6)
    assert short_phone_share(align_text(lp, "bin")) == 1.0
    paced = paced_align(lp, "bin", 3.0)
    assert short_phone_share(paced) == 0.0 and [c for c, _ in runs(paced) if c] == [b, i, n]


def test_too_few_steps_or_no_phones_give_no_path() -> None:
    assert paced_align(flat(2), "bin blue", 3.0) is None
    assert paced_align(flat(20), "", 3.0) is None
    assert paced_align(flat(0), "bin", 3.0) is None


def test_measure_fits_each_phones_lengths_and_load_fills_the_rest_from_all(tmp_path: Path) -> None:
    clip = tmp_path / "corpus" / "train" / "spk000" / "u1.json"
    clip.parent.mkdir(parents=True)
    # six b of 0.05 s and six I of 0.1 s (en1's "I@" maps onto I); pauses and unknown symbols are skipped
    timeline = [["_", 0.0, 0.2]] + [["b", 0.2, 0.05], ["I@", 0.25, 0.1]] * 6 + [["?", 1.0, 0.1]]
    clip.write_text(json.dumps({"phones": timeline}))
    (clip.parent / "notes.json").write_text("{}")  # no timeline: not a clip
    measured = measure([tmp_path / "corpus"])
    assert measured["clips"] == 1 and set(measured["phones"]) == {"b", "I"}
    assert measured["phones"]["b"] == pytest.approx([math.log(5), durations.MIN_LOG_SD, 6])
    assert measured["phones"]["I"][0] == pytest.approx(math.log(10))
    path = tmp_path / "durations.json"
    path.write_text(json.dumps(measured))
    table = load.__wrapped__(path)
    assert isinstance(table, PhoneDurations)
    assert table.log_mean[cls("b")] == pytest.approx(math.log(5))
    assert table.log_mean[cls("n")] == pytest.approx(measured["all"][0])  # unseen: all phones' fit
    with pytest.raises(ValueError, match="no true phone timeline"):
        measure([tmp_path / "nothing"])
