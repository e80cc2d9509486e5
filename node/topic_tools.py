"""`voxsight topic list | echo | hz | delay | bw` and `voxsight node list`: look at a live bus.

Each tool subscribes to the bus's subscriber side with a deep ordered queue, so it sees every message
(not the newest only), and stops after `--duration` seconds, after `-n` messages, or on Ctrl-C, then
prints its final figures (`--json`: one JSON object on stdout, progress lines on stderr). Rates and
intervals come from ARRIVAL times at the tool; delay is wall clock now minus the message's acquisition
stamp. Malformed messages are counted by the subscription and reported, never fatal.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import datetime
from typing import Any, TextIO

import numpy as np
import yaml
import zmq

from node.run import setup_logging
from node.runtime import DIAGNOSTICS_TOPIC
from streams.endpoints import CurveKeys, EndpointError, bus_endpoints, default_bus
from streams.messages import Diagnostic, Message
from streams.pubsub import QoS, Subscriber
from streams.stats import RateMeter, TopicStats

TOOL_QOS = QoS(depth=1000)  # deep enough to ride out a print stall without losing messages
LIST_DURATION_S = 2.5  # a little over two heartbeats
FULL_LIMIT = 4096  # --full prints arrays up to this many elements; larger ones stay summarised
_MAX_WAIT_S = 0.25  # bounds how long Ctrl-C and the 1 s reports wait on a quiet bus

OnMessage = Callable[[str, Message, int, int, int], None]  # topic, msg, arrival mono/wall ns, bytes


# ---------------------------------------------------------------- listening

def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM ends a tool as cleanly as Ctrl-C: final figures included


def listen(args: argparse.Namespace, topics: Iterable[str] | None, on_message: OnMessage, *,
           msg_type: type[Message] | None = None, limit: int | None = None,
           every_second: Callable[[TopicStats], None] | None = None) -> TopicStats:
    """Feed `on_message(topic, msg, arrival_mono_ns, arrival_wall_ns)` until the duration, `limit`
    messages or Ctrl-C; returns the subscription's counters (received, malformed, dropped)."""
    ctx = zmq.Context()
    sub = Subscriber(ctx, bus_endpoints(args.bus)[1], topics, qos=TOOL_QOS, msg_type=msg_type,
                     curve=args.curve)
    start = time.monotonic()
    deadline = math.inf if args.duration is None else start + args.duration
    next_report = start + 1.0
    try:
        while (now := time.monotonic()) < deadline and (limit is None or sub.stats.received < limit):
            before = sub.stats.bytes
            got = sub.recv(max(0.0, min(deadline, next_report, now + _MAX_WAIT_S) - now))
            if got is not None:  # recv returns at the first accepted message: the bytes are its own
                on_message(got[0], got[1], time.monotonic_ns(), time.time_ns(), sub.stats.bytes - before)
            if every_second is not None and time.monotonic() >= next_report:
                every_second(sub.stats)
                next_report = max(next_report + 1.0, time.monotonic())  # no burst after a stall
    except KeyboardInterrupt:
        pass
    finally:
        sub.close()
        ctx.term()
    return sub.stats


def _counts(stats: TopicStats) -> dict[str, int]:
    return {"count": stats.received, "malformed": stats.malformed, "dropped": stats.dropped}


def _counts_line(stats: TopicStats) -> str:
    return f"{stats.received} messages, {stats.malformed} malformed, {stats.dropped} dropped (seq gaps)"


def _progress(args: argparse.Namespace) -> TextIO:
    """Where running reports go: stdout, except in --json mode where stdout holds only the JSON."""
    return sys.stderr if args.json else sys.stdout


def _print_json(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, allow_nan=False))


def _no_messages(what: str) -> int:
    print(f"no messages on {what}", file=sys.stderr)
    return 1


# ---------------------------------------------------------------- echo

def _iso(stamp_ns: int) -> str:
    if not stamp_ns:
        return "unset"
    return datetime.fromtimestamp(stamp_ns / 1e9).astimezone().isoformat(timespec="microseconds")


def _number(x: Any) -> Any:
    value = x.item() if isinstance(x, np.generic) else x
    return float(f"{value:.6g}") if isinstance(value, float) else value


def _array(arr: np.ndarray, full: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"dtype": str(arr.dtype), "shape": list(arr.shape)}
    if arr.size:
        out.update(min=_number(arr.min()), max=_number(arr.max()),
                   mean=_number(float(arr.mean(dtype=np.float64))))
    if full and arr.size <= FULL_LIMIT:
        out["values"] = plain(arr.tolist())  # floats to 6 digits, as the figures
    return out


def plain(value: Any, full: bool = False) -> Any:
    """A message value as plain data for YAML/JSON: arrays summarised (values too with `full` when
    small), records (FaceTrack) as maps."""
    if isinstance(value, np.ndarray):
        return _array(value, full)
    if is_dataclass(value):
        return {f.name: plain(getattr(value, f.name), full) for f in fields(value)}
    if isinstance(value, list):
        return [plain(v, full) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v, full) for k, v in value.items()}
    return _number(value)


def message_doc(msg: Message, full: bool = False) -> dict[str, Any]:
    """The readable form `topic echo` prints: type, header (with an ISO acquisition time), fields."""
    header: dict[str, Any] = {"seq": msg.seq, "stamp_ns": msg.stamp_ns, "stamp": _iso(msg.stamp_ns),
                              "mono_ns": msg.mono_ns, "source": msg.source, "frame_id": msg.frame_id}
    body = {f.name: plain(getattr(msg, f.name), full) for f in fields(msg) if f.name not in header}
    return {"type": msg.TYPE, "header": header, **body}


class _Dumper(yaml.SafeDumper):
    """Maps in block style, lists of scalars on one line: shapes, boxes and array rows stay readable."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flat = not any(isinstance(v, (list, dict)) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flat)


_Dumper.add_representer(list, _represent_list)


def render(msg: Message, full: bool = False) -> str:
    """`message_doc` as YAML, one message."""
    return yaml.dump(message_doc(msg, full), Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                     width=110, allow_unicode=True)


def _echo(args: argparse.Namespace) -> int:
    docs: list[dict[str, Any]] = []

    def on_message(topic: str, msg: Message, mono_ns: int, wall_ns: int, nbytes: int) -> None:
        if args.json:
            docs.append(message_doc(msg, args.full))
        else:
            print(render(msg, args.full) + "---", flush=True)

    stats = listen(args, [args.topic], on_message, limit=args.n)
    if args.json:
        _print_json({"topic": args.topic, **_counts(stats), "messages": docs})
    elif stats.malformed:
        print(_counts_line(stats), file=sys.stderr)
    return 0 if stats.received else _no_messages(args.topic)


# ---------------------------------------------------------------- hz, delay, bw

def _spread(values: np.ndarray) -> tuple[float, float, float, float]:
    return float(values.mean()), float(values.min()), float(values.max()), float(values.std())


class Meter:
    """The last `window` arrivals of a topic and one measured value per arrival."""

    def __init__(self, window: int) -> None:
        self.arrivals: deque[int] = deque(maxlen=window)
        self.values: deque[float] = deque(maxlen=window)

    def add(self, topic: str, msg: Message, mono_ns: int, wall_ns: int, nbytes: int) -> None:
        self.arrivals.append(mono_ns)
        self.values.append(self.measure(msg, wall_ns, nbytes))

    def measure(self, msg: Message, wall_ns: int, nbytes: int) -> float:
        return 0.0

    def figures(self) -> dict[str, float] | None:
        """The window's figures, or None while there are too few messages."""
        raise NotImplementedError

    def line(self, f: dict[str, float]) -> str:
        raise NotImplementedError


class RateFigures(Meter):
    """`topic hz`: the arrival rate and the spread of the intervals between arrivals."""

    def figures(self) -> dict[str, float] | None:
        intervals = np.diff(np.asarray(self.arrivals, dtype=np.int64)) / 1e9
        if intervals.size == 0 or intervals.mean() <= 0:
            return None
        mean, low, high, std = _spread(intervals)
        return {"rate_hz": 1.0 / mean, "min_s": low, "max_s": high, "std_s": std,
                "window": len(self.arrivals)}

    def line(self, f: dict[str, float]) -> str:
        return (f"average rate: {f['rate_hz']:.3f}  min: {f['min_s']:.3f}s max: {f['max_s']:.3f}s "
                f"std dev: {f['std_s']:.5f}s window: {f['window']}")


class DelayFigures(Meter):
    """`topic delay`: wall clock at arrival minus the acquisition stamp carried by the message."""

    def __init__(self, window: int) -> None:
        super().__init__(window)
        self.unstamped = 0

    def add(self, topic: str, msg: Message, mono_ns: int, wall_ns: int, nbytes: int) -> None:
        if msg.stamp_ns:
            super().add(topic, msg, mono_ns, wall_ns, nbytes)
        else:
            self.unstamped += 1  # no acquisition time, nothing to measure

    def measure(self, msg: Message, wall_ns: int, nbytes: int) -> float:
        return (wall_ns - msg.stamp_ns) / 1e6

    def figures(self) -> dict[str, float] | None:
        if not self.values:
            return None
        mean, low, high, std = _spread(np.asarray(self.values))
        return {"mean_ms": mean, "min_ms": low, "max_ms": high, "std_ms": std, "window": len(self.values),
                "unstamped": self.unstamped}

    def line(self, f: dict[str, float]) -> str:
        return (f"average delay: {f['mean_ms']:.3f} ms  min: {f['min_ms']:.3f} ms max: {f['max_ms']:.3f} ms "
                f"std dev: {f['std_ms']:.3f} ms window: {f['window']}")


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB"):
        if abs(n) < 1000:
            return f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} GB"


class BandwidthFigures(Meter):
    """`topic bw`: bytes per second over the window, and the spread of message sizes."""

    def measure(self, msg: Message, wall_ns: int, nbytes: int) -> float:
        return float(nbytes)

    def figures(self) -> dict[str, float] | None:
        if len(self.arrivals) < 2 or self.arrivals[-1] <= self.arrivals[0]:
            return None
        span_s = (self.arrivals[-1] - self.arrivals[0]) / 1e9
        sizes = np.asarray(self.values)
        mean, low, high, _ = _spread(sizes)
        # The first message of the window arrived at the span's start: only the rest arrived within it.
        return {"bytes_per_s": float(sizes[1:].sum()) / span_s, "mean_bytes": mean, "min_bytes": low,
                "max_bytes": high, "window": len(sizes)}

    def line(self, f: dict[str, float]) -> str:
        return (f"{_bytes(f['bytes_per_s'])}/s from {f['window']} messages  message size mean: "
                f"{_bytes(f['mean_bytes'])} min: {_bytes(f['min_bytes'])} max: {_bytes(f['max_bytes'])}")


def _measure(args: argparse.Namespace, meter: Meter) -> int:
    out = _progress(args)
    last_seen = -1  # nothing reported yet

    def report(stats: TopicStats) -> None:
        nonlocal last_seen
        figs = meter.figures()
        if stats.received == 0:
            if last_seen == 0:
                return  # said so once already
            text = f"waiting for messages on {args.topic}"
        elif stats.received == last_seen:
            text = "no new messages"
        elif figs is None:
            text = f"{stats.received} messages: too few for figures"
        else:
            text = meter.line(figs)
        if stats.malformed:
            text += f"  malformed: {stats.malformed}"
        last_seen = stats.received
        print(text, file=out, flush=True)

    stats = listen(args, [args.topic], meter.add, limit=args.n, every_second=report)
    figs = meter.figures()
    if args.json:
        _print_json({"topic": args.topic, **(figs or {}), **_counts(stats)})
    else:
        if figs is not None:
            print(meter.line(figs))
        print(_counts_line(stats))
    return 0 if stats.received else _no_messages(args.topic)


# ---------------------------------------------------------------- list

@dataclass
class _TopicSeen:
    types: set[str] = field(default_factory=set)
    sources: set[str] = field(default_factory=set)
    count: int = 0
    rate: RateMeter = field(default_factory=RateMeter)


def _list_topics(args: argparse.Namespace) -> int:
    # The meters keep the whole listen window, so the rate spans everything seen.
    window_s = (args.duration or LIST_DURATION_S) + 1.0
    seen: dict[str, _TopicSeen] = {}

    def on_message(topic: str, msg: Message, mono_ns: int, wall_ns: int, nbytes: int) -> None:
        entry = seen.setdefault(topic, _TopicSeen(rate=RateMeter(window_s=window_s)))
        entry.types.add(msg.TYPE)
        entry.sources.add(msg.source)
        entry.count += 1
        entry.rate.tick(mono_ns)

    stats = listen(args, None, on_message)
    now = time.monotonic_ns()
    rows = [{"topic": topic, "type": "|".join(sorted(e.types)), "sources": sorted(e.sources),
             "rate_hz": round(e.rate.rate(now), 3), "count": e.count} for topic, e in sorted(seen.items())]
    if args.json:
        _print_json({"bus": args.bus, "topics": rows, "malformed": stats.malformed})
    else:
        width = max((len(r["topic"]) for r in rows), default=0)
        for r in rows:
            rate = f"{r['rate_hz']:7.2f} Hz" if r["rate_hz"] else "      - Hz"
            count = f"  {r['count']:6d} msgs" if args.verbose else ""
            print(f"{r['topic']:<{width}}  {r['type']:<12} {rate}{count}  from {', '.join(r['sources'])}")
        if stats.malformed:
            print(f"{stats.malformed} malformed messages", file=sys.stderr)
    return 0 if rows else _no_messages(f"{args.bus} (is the bus running?)")


def _list_nodes(args: argparse.Namespace) -> int:
    latest: dict[str, Diagnostic] = {}

    def on_message(topic: str, msg: Message, mono_ns: int, wall_ns: int, nbytes: int) -> None:
        assert isinstance(msg, Diagnostic)  # the subscription admits nothing else
        latest[msg.node] = msg

    stats = listen(args, [DIAGNOSTICS_TOPIC], on_message, msg_type=Diagnostic)
    rows = [{"node": d.node, "state": d.state, "level": d.level, "pid": d.pid, "host": d.host,
             "message": d.message, "values": plain(d.values)} for _, d in sorted(latest.items())]
    if args.json:
        _print_json({"bus": args.bus, "nodes": rows, "malformed": stats.malformed})
    else:
        width = max((len(r["node"]) for r in rows), default=0)
        for r in rows:
            note = f"  {r['message']}" if r["message"] else ""
            where = f"pid {r['pid']} on {r['host']}"
            print(f"{r['node']:<{width}}  {r['state']:<11} {r['level']:<5}  {where}{note}")
            if args.verbose:
                for key, value in sorted(r["values"].items()):
                    print(f"    {key}: {value}")
        if stats.malformed:
            print(f"{stats.malformed} malformed heartbeats", file=sys.stderr)
    return 0 if rows else _no_messages(f"{DIAGNOSTICS_TOPIC} (is anything running on {args.bus}?)")


# ---------------------------------------------------------------- command line

def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive count, got {text!r}")
    return value


def _common(ap: argparse.ArgumentParser, duration: float | None) -> None:
    ap.add_argument("--bus", default=None, help="bus base endpoint (default $VOXSIGHT_BUS or ipc)")
    ap.add_argument("--curve-dir", default=os.environ.get("VOXSIGHT_CURVE_DIR"),
                    help="client CURVE keys for a bus beyond loopback")
    ap.add_argument("--duration", type=_seconds, default=duration, metavar="S",
                    help=f"stop after S seconds (default: {duration or 'until Ctrl-C'})")
    ap.add_argument("--json", action="store_true", help="print one final JSON object (progress on stderr)")


def _topic_arg(ap: argparse.ArgumentParser, window: bool = True) -> None:
    ap.add_argument("topic", type=lambda t: t.lstrip("/"), help="topic name (a leading / is ignored)")
    ap.add_argument("-n", type=_positive, default=None, metavar="N", help="stop after N messages")
    if window:
        ap.add_argument("--window", type=_positive, default=100, metavar="N",
                        help="figures over the last N messages (default 100)")


def _parser(prog: str, verbs: dict[str, str]) -> tuple[argparse.ArgumentParser, dict[str, Any]]:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="verb", required=True, metavar="VERB")
    return ap, {verb: sub.add_parser(verb, help=help_, description=help_) for verb, help_ in verbs.items()}


def _run(ap: argparse.ArgumentParser, argv: list[str], tools: dict[str, Callable[[argparse.Namespace], int]]
         ) -> int:
    args = ap.parse_args(argv)
    args.bus = args.bus or default_bus()
    setup_logging("WARNING")
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        args.curve = CurveKeys.load(args.curve_dir, server=False) if args.curve_dir else None
        return tools[args.verb](args)
    except EndpointError as exc:
        print(f"{ap.prog}: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def main_topic(argv: list[str]) -> int:
    """`voxsight topic VERB ...`"""
    ap, verbs = _parser("voxsight topic", {
        "list": "topics seen on the bus, with type, publishers and rate",
        "echo": "print each message of a topic (arrays summarised)",
        "hz": "arrival rate of a topic and the spread of its intervals",
        "delay": "age of a topic's messages: now minus their acquisition stamp",
        "bw": "bytes per second of a topic and its message sizes",
    })
    _common(verbs["list"], LIST_DURATION_S)
    verbs["list"].add_argument("-v", "--verbose", action="store_true", help="add message counts")
    for verb in ("echo", "hz", "delay", "bw"):
        _common(verbs[verb], None)
        _topic_arg(verbs[verb], window=verb != "echo")
    verbs["echo"].add_argument("--full", action="store_true",
                               help=f"print the values of arrays up to {FULL_LIMIT} elements")
    return _run(ap, argv, {
        "list": _list_topics,
        "echo": _echo,
        "hz": lambda a: _measure(a, RateFigures(a.window)),
        "delay": lambda a: _measure(a, DelayFigures(a.window)),
        "bw": lambda a: _measure(a, BandwidthFigures(a.window)),
    })


def main_node(argv: list[str]) -> int:
    """`voxsight node list`"""
    ap, verbs = _parser("voxsight node", {"list": "nodes alive on the bus, from their heartbeats"})
    _common(verbs["list"], LIST_DURATION_S)
    verbs["list"].add_argument("-v", "--verbose", action="store_true", help="print each node's figures")
    return _run(ap, argv, {"list": _list_nodes})
