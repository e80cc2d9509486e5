"""The passthrough graph end to end: launch/passthrough.yaml (session 1's demo), with the topic tools
watching it live."""

from __future__ import annotations

import json
import subprocess
import sys
import wave

import numpy as np
import pytest

from tests.helpers import REPO, stop, voxsight, wait_heartbeat

CLIP_S = 10.0  # launch/media/pattern.mp4: 250 frames at 25 fps


def _tool(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "node", *args], cwd=REPO, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    return json.loads(out)


@pytest.mark.timeout(180)
def test_passthrough_graph(bus_url: str, tmp_path) -> None:
    wav_path = tmp_path / "passthrough.wav"
    graph = voxsight("launch", "launch/passthrough.yaml", "--bus", bus_url, f"audio_out.path:={wav_path}")
    try:
        wait_heartbeat(bus_url, "camera", predicate=lambda d: d.state == "active")
        hz = _tool("topic", "hz", "camera/image", "--bus", bus_url, "--duration", "5", "--json")
        delay = _tool("topic", "delay", "audio/speech", "--bus", bus_url, "--duration", "2", "--json")
        out, _ = graph.communicate(timeout=60)
    finally:
        stop(graph)
    assert graph.returncode == 0, out
    assert hz["rate_hz"] == pytest.approx(25.0, rel=0.05)
    # stamps are the frames' acquisition times, so the delay is real end-to-end latency: positive
    assert delay["min_ms"] >= 0 and delay["count"] > 0
    with wave.open(str(wav_path)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        samples = np.frombuffer(w.readframes(w.getnframes()), np.int16)
    # the clip's 10 s come out as audio, nothing lost to slow starts or the shutdown
    assert samples.size / 16000 == pytest.approx(CLIP_S, abs=0.5)
    assert np.abs(samples).max() > 1000
    for name in ("audio_out", "tone", "camera"):
        assert f"[{name}]" in out
