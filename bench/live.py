"""Live lip-to-speech on this machine: the whole multi-process graph of a launch file (by default
launch/lip2speech_file.yaml: video file → tracker → lip2speech → audio_out), watched from outside through
the bus.

    .venv/bin/python bench/live.py demo [NODE.PARAM:=VALUE ...]          (what `make demo` runs)
        one pass of the bundled clip: the speech goes to out/lip2speech.wav; prints the lip-read text with
        the reader's confidence in it, the partial texts published while the face talked, whisper's
        transcript of the speech (engines.eval.judges) and the latency table of lip2speech's own
        diagnostics (p50/p95 over the clip's windows)
    .venv/bin/python bench/live.py bench [--minutes 10] [NODE.PARAM:=VALUE ...]
        the clip looped for --minutes: synthesizer RTF, end-to-end latency p50/p95, queue depth over time,
        RSS of every process at the start and the end, restarts; prints tables and writes a latency
        histogram (out/live_latency.png)

The camera starts last, once every other node reports `active` (its `start_after` in the launch file; added
here when a file has none): the tracker and the synthesizer take seconds to load, and a short clip played
before they listen would be lost. The whole graph runs under `voxsight launch` as the launch file says.
Latency is measured on the audio chunks as they arrive here:
arrival time − acquisition stamp of the chunk's first frame ("first") and of its last frame ("last"),
so every frame a chunk voices waited between the two; the bus hop to this process adds well under a ms.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

import numpy as np
import psutil
import zmq

from node.launch_file import BUS_NAME, LaunchError, LaunchSpec, apply_overrides
from node.launch_file import dump as dump_launch
from node.launch_file import load as load_launch
from streams.endpoints import bus_endpoints
from streams.messages import AudioChunk, Diagnostic, Transcript
from streams.pubsub import ORDERED, Subscriber

REPO = Path(__file__).resolve().parents[1]

LAUNCH = REPO / "launch" / "lip2speech_file.yaml"
SYNTH = "lip2speech"
FRAME_NS = 40_000_000
START_TIMEOUT_S = 300.0  # model loading and warm-up on a busy CPU


@dataclasses.dataclass
class Heard:
    """One audio chunk as it arrived here."""
    arrival_ns: int
    first_ns: int  # acquisition stamp of its first frame
    last_ns: int  # and of its last
    speech: bool


class Watch:
    """Everything the graph says on the bus that the figures need."""

    def __init__(self, bus: str) -> None:
        self.ctx = zmq.Context()
        endpoint = bus_endpoints(bus)[1]
        self.subs = [Subscriber(self.ctx, endpoint, [topic], qos=ORDERED, msg_type=kind)
                     for topic, kind in (("diagnostics", Diagnostic), ("audio/speech", AudioChunk),
                                         ("text/lipread", Transcript))]
        self.poller = zmq.Poller()
        for sub in self.subs:
            self.poller.register(sub.socket, zmq.POLLIN)
        self.last: dict[str, Diagnostic] = {}
        self.pids: dict[str, set[int]] = {}
        self.synth: list[tuple[float, dict[str, float]]] = []  # (monotonic s, lip2speech's heartbeat)
        self.heard: list[Heard] = []
        self.texts: list[Transcript] = []

    def pump(self, timeout_s: float) -> None:
        """Take in what arrives within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            ready = dict(self.poller.poll(left * 1000))
            now = time.time_ns()
            for sub in self.subs:
                if sub.socket in ready:
                    for _topic, msg in sub.poll_ready():
                        self._take(msg, now)

    def _take(self, msg: object, now_ns: int) -> None:
        if isinstance(msg, Diagnostic):
            self.last[msg.node] = msg
            self.pids.setdefault(msg.node, set()).add(msg.pid)
            if msg.node == SYNTH:
                self.synth.append((time.monotonic(), msg.values))
        elif isinstance(msg, AudioChunk):
            frames = max(1, len(msg.samples) // 640)
            self.heard.append(Heard(now_ns, msg.stamp_ns, msg.stamp_ns + (frames - 1) * FRAME_NS,
                                    bool(msg.samples.any())))
        elif isinstance(msg, Transcript):
            self.texts.append(msg)

    def active(self, names: list[str]) -> bool:
        return all(n in self.last and self.last[n].state == "active" for n in names)

    def close(self) -> None:
        for sub in self.subs:
            sub.close()
        self.ctx.destroy(linger=0)


class Graph:
    """The launch file's graph under `voxsight launch` on a private bus, its camera gated (`start_after`)
    on every other node of the file when the file does not gate it already."""

    def __init__(self, spec: LaunchSpec, log: IO[bytes]) -> None:
        self.log = log
        self._folder = None if spec.bus else tempfile.mkdtemp(prefix="vxlive", dir="/tmp")  # the bus's socket
        self.bus = spec.bus or f"ipc://{self._folder}/bus"
        self.camera = next(n for n in spec.nodes if n.kind == "camera")
        if not self.camera.start_after:
            self.camera.start_after = [n.name for n in spec.nodes[:spec.nodes.index(self.camera)]
                                       if n.name != BUS_NAME or spec.bus_external]
        self.spec = spec
        self.names = [n.full_name for n in spec.nodes if n.name != BUS_NAME or spec.bus_external]
        self.supervisor: subprocess.Popen | None = None

    def start(self, watch: Watch) -> None:
        graph = Path(self.log.name).with_suffix(".graph.yaml")
        graph.write_text(dump_launch(self.spec))
        self.supervisor = subprocess.Popen(
            [sys.executable, "-m", "node", "launch", str(graph), "--bus", self.bus], cwd=REPO,
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        gates = ", ".join(self.camera.start_after)
        print(f"starting {', '.join(self.names)}; {self.camera.name} once {gates} are active (log: "
              f"{self.log.name}) ...", flush=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not watch.active(self.names):
            if self.supervisor.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the graph did not come up")
            watch.pump(0.5)
        print(f"all active; camera playing {self.camera.params.get('source')}", flush=True)

    def running(self) -> bool:
        return self.supervisor is not None and self.supervisor.poll() is None

    def stop(self) -> None:
        if self.supervisor is None:
            return
        if self.supervisor.poll() is None:
            self.supervisor.send_signal(signal.SIGINT)
        try:
            self.supervisor.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.supervisor.pid, signal.SIGKILL)
            self.supervisor.wait()
        if self._folder:
            shutil.rmtree(self._folder, ignore_errors=True)


def _tail(path: Path, lines: int = 25) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _pct(values: list[float] | np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


# ---------------------------------------------------------------- demo


def demo(spec: LaunchSpec, log_path: Path) -> int:
    audio_out = next((n for n in spec.nodes if n.kind == "audio_out"), None)
    wav = REPO / audio_out.params.get("path", "out/speech.wav") if audio_out else None
    with open(log_path, "wb") as log:
        graph = Graph(spec, log)
        watch = Watch(graph.bus)
        try:
            graph.start(watch)
            deadline = time.monotonic() + START_TIMEOUT_S
            while graph.running() and time.monotonic() < deadline:
                watch.pump(0.5)
            watch.pump(0.5)  # the last heartbeats
        except RuntimeError as exc:
            print(f"{exc}; the log ends:\n{_tail(log_path)}", file=sys.stderr)
            return 1
        finally:
            graph.stop()
            watch.close()
    if SYNTH not in watch.last:
        print(f"{SYNTH} never reported; the log ends:\n{_tail(log_path)}", file=sys.stderr)
        return 1
    read = [t for t in watch.texts if t.final] or watch.texts[-1:]
    shown = " / ".join(f"{t.text} (confidence {t.confidence:.2f})" for t in read)
    print(f"\nlip-read text:  {shown or '(none)'}")
    # what an operator's display showed while the face talked: each partial text, at the utterance time its
    # audio had reached when it came
    partials = ", ".join(f"{(t.end_stamp_ns - t.stamp_ns) / 1e9:.1f} s {t.text.strip()!r}"
                         for t in watch.texts if not t.final)
    print(f"partial texts:  {partials or '(none)'}")
    source = REPO / str(graph.camera.params.get("source", ""))
    if source.with_suffix(".txt").is_file():
        print(f"said in the clip: {source.with_suffix('.txt').read_text().strip()}")
    if wav is not None and wav.is_file():
        import soundfile

        from engines.eval.judges.asr import Whisper

        speech, rate = soundfile.read(wav, dtype="float32")
        print(f"whisper heard:  {Whisper().transcribe(speech) or '(nothing)'}   ({wav}, "
              f"{len(speech) / rate:.2f} s)")
    print()
    print(_latency_table(watch.last[SYNTH].values))
    return 0


def _latency_table(v: dict[str, float]) -> str:
    rows = [("end-to-end latency, window's first frame (ms)", "latency_first_ms"),
            ("end-to-end latency, window's last frame (ms)", "latency_last_ms"),
            ("time to first audio: an utterance's first speech window (ms)", "first_audio_ms"),
            ("compute per speech window (ms)", "speech.compute_ms"), ("RTF of speech windows", "speech.rtf"),
            ("a text reading, partial or final, in the text thread (ms)", "text.compute_ms")]
    lines = ["| lip2speech diagnostics | p50 | p95 |", "|---|---|---|"]
    nan = float("nan")
    lines += [f"| {label} | {v.get(key + '.p50', nan):.2f} | {v.get(key + '.p95', nan):.2f} |"
              for label, key in rows]
    backends = ", ".join(k.removeprefix("backend.") for k in v if k.startswith("backend."))
    lines.append(f"\nwindows {v.get('windows', 0):.0f} (speech {v.get('speech_windows', 0):.0f}), hop "
                 f"{v.get('hop_frames', 0):.0f} frames, algorithmic latency "
                 f"{v.get('algorithmic_latency_ms', 0):.0f} ms, dropped frames "
                 f"{v.get('dropped_frames', 0):.0f}, restarts {v.get('restarts', 0):.0f}, bad frames "
                 f"{v.get('bad_frames', 0):.0f}, frames voiced from before the face was the target "
                 f"{v.get('prerolled_frames', 0):.0f}; backends: {backends}")
    return "\n".join(lines)


# ---------------------------------------------------------------- bench


def _rss(pids: dict[str, int]) -> dict[str, float]:
    out = {}
    for name, pid in pids.items():
        with contextlib.suppress(psutil.Error):
            out[name] = psutil.Process(pid).memory_info().rss / 2**20
    return out


def bench(spec: LaunchSpec, minutes: float, settle_s: float, png: Path, log_path: Path) -> int:
    with open(log_path, "wb") as log:
        graph = Graph(spec, log)
        watch = Watch(graph.bus)
        try:
            graph.start(watch)
            started = time.monotonic()
            watch.pump(settle_s)
            pids = {n: d.pid for n, d in watch.last.items()}
            pids["supervisor"] = graph.supervisor.pid
            rss_start, heard_from = _rss(pids), len(watch.heard)
            end = started + minutes * 60

            def up() -> bool:  # the camera too: without it the graph idles, it does not end
                return graph.running() and psutil.pid_exists(pids[graph.camera.full_name])

            while time.monotonic() < end and up():
                watch.pump(min(5.0, end - time.monotonic()))
            alive = up()
            rss_end = _rss(pids)
            ran_s = time.monotonic() - started
        except RuntimeError as exc:
            print(f"{exc}; the log ends:\n{_tail(log_path)}", file=sys.stderr)
            return 1
        finally:
            graph.stop()
            watch.close()
    heard = watch.heard[heard_from:]
    print(f"\n`{' '.join([Path(sys.executable).name, *sys.argv])}`: {ran_s / 60:.1f} min of "
          f"{graph.camera.params.get('source')} looped, {psutil.cpu_count()} CPUs (load average "
          f"{os.getloadavg()[0]:.1f}); figures after the first {settle_s:.0f} s\n")
    print(_latency_summary(heard))
    print(_synth_summary(watch.synth))
    print(_queue_table(watch.synth, slices=10))
    print(_rss_table(rss_start, rss_end))
    restarted = {n: len(p) - 1 for n, p in watch.pids.items() if len(p) > 1}
    print(f"\nno crash: {alive and not restarted} (graph {'running' if alive else 'ended early'} at the end; "
          f"restarted nodes: {restarted or 'none'})")
    _histogram(heard, png)
    print(f"latency histogram: {png}")
    return 0 if alive and not restarted else 1


def _latency_summary(heard: list[Heard]) -> str:
    lines = ["| end-to-end latency (ms), arrival − acquisition stamp | chunks | p50 | p95 | max |",
             "|---|---|---|---|---|"]
    for label, chunks in (("all chunks", heard), ("speech chunks", [h for h in heard if h.speech])):
        for which in ("first", "last"):
            ms = [(h.arrival_ns - getattr(h, f"{which}_ns")) / 1e6 for h in chunks]
            lines.append(f"| {label}, {which} frame | {len(ms)} | {_pct(ms, 50):.0f} | {_pct(ms, 95):.0f} | "
                         f"{max(ms, default=float('nan')):.0f} |")
    return "\n".join(lines)


def _synth_summary(beats: list[tuple[float, dict[str, float]]]) -> str:
    if not beats:
        return "\n(no lip2speech heartbeat)"
    v = beats[-1][1]
    nan = float("nan")
    speech_s, all_s = v.get("speech_s_total", 0.0), v.get("windows", 0) * v.get("hop_frames", 5) / 25
    speech = v.get("speech_compute_s_total", 0.0) / speech_s if speech_s else nan
    every = v.get("compute_s_total", 0.0) / all_s if all_s else nan
    # each heartbeat carries its last window's figures: a sample of the windows, enough to see where time goes
    sampled = [b for _, b in beats if not b.get("window.silent", 1.0)]
    stages = sorted({k for b in sampled for k in b if k.startswith("window.stage.")})
    per_stage = ", ".join(f"{k.split('.')[-1][:-3]} {np.mean([b.get(k, 0.0) for b in sampled]):.1f}"
                          for k in ["window.compute_ms", *stages])
    return (f"\nsynthesizer RTF (compute / audio): speech windows {speech:.2f} over "
            f"{v.get('speech_windows', 0):.0f} (the last 150: p50 {v.get('speech.rtf.p50', nan):.2f}, p95 "
            f"{v.get('speech.rtf.p95', nan):.2f}); all windows {every:.2f} over {v.get('windows', 0):.0f}\n"
            f"ms per speech window, mean of {len(sampled)} sampled by the heartbeats: {per_stage}\n"
            f"texts (their own thread): {v.get('text_readings', 0):.0f} readings, "
            f"{v.get('text_compute_s_total', 0.0) / speech_s * 1e3 if speech_s else nan:.0f} ms per s of "
            f"speech, {v.get('stale_text_readings', 0):.0f} partial ones skipped as stale")


def _queue_table(beats: list[tuple[float, dict[str, float]]], slices: int) -> str:
    if len(beats) < 2:
        return ""
    t0, t1 = beats[0][0], beats[-1][0]
    edges = np.linspace(t0, t1, slices + 1)
    lines = ["\n| minutes | queue depth max | windows | RTF (all windows) | dropped frames | restarts |",
             "|---|---|---|---|---|---|"]
    for a, b in itertools.pairwise(edges):
        part = [v for t, v in beats if a <= t <= b]
        if len(part) < 2:
            continue
        first, last = part[0], part[-1]
        windows = last["windows"] - first["windows"]
        compute = last["compute_s_total"] - first["compute_s_total"]
        rtf = compute / (windows * last["hop_frames"] / 25) if windows else float("nan")
        peak = max(v["queue_peak"] for v in part)
        lines.append(f"| {(a - t0) / 60:.1f}–{(b - t0) / 60:.1f} | {peak:.0f} | {windows:.0f} | {rtf:.2f} | "
                     f"{last['dropped_frames'] - first['dropped_frames']:.0f} | "
                     f"{last['restarts'] - first['restarts']:.0f} |")
    return "\n".join(lines)


def _rss_table(start: dict[str, float], end: dict[str, float]) -> str:
    lines = ["\n| process | RSS start MiB | RSS end MiB | growth |", "|---|---|---|---|"]
    for name, mib in start.items():
        after = end.get(name, float("nan"))
        lines.append(f"| {name} | {mib:.0f} | {after:.0f} | {100 * (after / mib - 1):+.1f} % |")
    return "\n".join(lines)


def _histogram(heard: list[Heard], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for which in ("first", "last"):
        ms = [(h.arrival_ns - getattr(h, f"{which}_ns")) / 1e6 for h in heard]
        ax.hist(ms, bins=60, alpha=0.6, label=f"{which} frame of a chunk (p95 {_pct(ms, 95):.0f} ms)")
    ax.set_xlabel("end-to-end latency: audio published − frame acquired (ms)")
    ax.set_ylabel("chunks")
    ax.legend()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=("demo", "bench"))
    ap.add_argument("overrides", nargs="*", metavar="NODE.PARAM:=VALUE", help="launch-file overrides")
    ap.add_argument("--launch", type=Path, default=LAUNCH, help="the graph (default: %(default)s)")
    ap.add_argument("--minutes", type=float, default=10.0, help="bench: how long to loop the clip")
    ap.add_argument("--settle-s", type=float, default=30.0, help="bench: seconds left out at the start")
    ap.add_argument("--png", type=Path, default=REPO / "out" / "live_latency.png", help="bench: histogram")
    args = ap.parse_intermixed_args(argv)
    overrides = list(args.overrides)
    if args.mode == "bench":  # loop the clip; nothing to keep, and no idle exit ends the soak
        overrides = ["camera.loop:=true", "audio_out.sink:=null", "audio_out.idle_exit_s:=0", *overrides]
    try:
        spec = apply_overrides(load_launch(args.launch), overrides)
        if not any(n.kind == "camera" for n in spec.nodes):
            raise LaunchError(str(args.launch), None, "no camera node to play the video")
    except LaunchError as exc:
        print(exc, file=sys.stderr)
        return 2
    log_path = REPO / "out" / f"live-{args.mode}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if args.mode == "demo":
        return demo(spec, log_path)
    return bench(spec, args.minutes, args.settle_s, args.png, log_path)


if __name__ == "__main__":
    sys.exit(main())
