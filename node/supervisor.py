"""`voxsight launch FILE [NODE.PARAM:=VALUE ...]`: start a node graph, keep it alive, stop it cleanly.

The supervisor starts the bus, then every node of the launch file (node/launch_file.py) in file order,
each as its own process (`python -m node run KIND ...`) in its own session, so a terminal's Ctrl-C
reaches only the supervisor, which then stops the children itself, in order. Children follow the
supervisor even when it is killed with -9 (`VOXSIGHT_SUPERVISOR_PID` makes `voxsight run` ask Linux
for a parent-death signal). Every line a child prints (stdout and stderr, merged) is echoed whole on
the supervisor's stdout, prefixed `[name] `; the supervisor's own lines are prefixed `[launch] `.

A node with `start_after` is held back until each node it names reports `active` on `diagnostics` (the
supervisor listens there only when some node has a gate; the other nodes start meanwhile); a gate that ends
for good before it was active retires the waiting node, with a message, so nothing waits forever. A gate
holds only the first start: a respawn does not wait again.

A node that dies (non-zero exit, or killed by a signal) with `respawn: true` is restarted after
`respawn_delay`, doubling per consecutive failure up to 30 s; the count resets once it stayed up 10 s.
A clean exit 0 is final. The graph stops when a `required` node ends for good (the supervisor exits
with that node's status, 128+N for a node killed by signal N), or when every node but the bus has
ended for good (exit 0).

Exit status: 2 for a bad launch file or override (nothing is started); 130 when stopped by SIGINT;
0 when stopped by SIGTERM (a service manager's normal stop). On either signal the children get SIGINT
(nodes in reverse start order, then the bus), and whatever still runs after 1.5 s is killed; a second
signal kills at once. Nothing is left running.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import yaml
import zmq

from node.launch_file import BUS_NAME, MAX_RESPAWN_DELAY_S, LaunchError, LaunchSpec, NodeSpec, apply_overrides
from node.launch_file import load as load_launch_file
from node.runtime import DIAGNOSTICS_TOPIC
from streams.endpoints import CurveKeys, bus_endpoints, default_bus
from streams.messages import Diagnostic
from streams.pubsub import Subscriber

MIN_BACKOFF_S = 0.1  # a crash loop with respawn_delay 0 still backs off from its second restart
STABLE_AFTER_S = 10.0  # a node up this long is healthy again: its next failure restarts it quickly
STOP_GRACE_S = 1.5
_BUS_GRACE_S = 0.5  # of STOP_GRACE_S, kept for the bus, which the nodes' last heartbeats still use
_KILL_WAIT_S = 5.0  # after SIGKILL; only a process stuck in the kernel takes longer, and we don't hang
_MAX_LINE = 1 << 16  # longer output lines are echoed in pieces of this size
_IDLE_WAKE_S = 0.5  # also look around this often, whatever the wake-up pipe says
GATE_REMIND_S = 30.0  # a node held back by start_after is reported this often
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


# ---------------------------------------------------------------- pure logic


def backoff_s(first_delay: float, failures: int) -> float:
    """Seconds before restarting a node after its `failures`-th consecutive failure (1 = the first)."""
    if failures <= 1:
        return min(MAX_RESPAWN_DELAY_S, first_delay)
    return min(MAX_RESPAWN_DELAY_S, max(first_delay, MIN_BACKOFF_S) * 2 ** (failures - 1))


def exit_text(returncode: int) -> str:
    """`SIGKILL` for a process killed by a signal, else `exit code N`."""
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


def exit_status(returncode: int) -> int:
    """A child's end as a shell would report it: 128+N when killed by signal N."""
    return 128 - returncode if returncode < 0 else returncode


@dataclass(frozen=True)
class Outcome:
    """What to do after a node ended: restart it in `restart_in` s, or (None) leave it ended for good."""

    restart_in: float | None
    failures: int  # consecutive failures so far


def after_exit(spec: NodeSpec, returncode: int, uptime_s: float, failures: int) -> Outcome:
    """Decide on a node that ended with `returncode` after `uptime_s` and `failures` earlier failures."""
    if returncode == 0:
        return Outcome(None, 0)
    failures = 1 if uptime_s >= STABLE_AFTER_S else failures + 1
    if not spec.respawn:
        return Outcome(None, failures)
    return Outcome(backoff_s(spec.respawn_delay, failures), failures)


def format_value(value: Any) -> str:
    """A param value as `voxsight run` reads it back (YAML flow style: '3' stays a string)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 30)
    return text.removesuffix("\n...\n").rstrip("\n")


def command_line(spec: NodeSpec, bus: str, log_level: str = "INFO") -> list[str]:
    """The command that runs `spec` on `bus`."""
    # Params go right after the kind: `voxsight run` reads them as the positionals that follow it.
    cmd = [sys.executable, "-m", "node", "run", spec.kind,
           *(f"{k}:={format_value(v)}" for k, v in spec.params.items()),
           "--name", spec.name, "--ns", spec.namespace, "--bus", bus, "--log-level", log_level]
    for src, dst in spec.remap.items():
        cmd += ["--remap", f"{src}:={dst}"]
    for topic, changes in spec.qos.items():
        cmd += [a for f, v in changes.items() for a in ("--qos", f"{topic}.{f}:={format_value(v)}")]
    return cmd


def stop_order(nodes: Sequence[NodeSpec]) -> tuple[list[int], list[int]]:
    """Indices of `nodes` to stop first (reverse start order), then those of the buses, which the
    others still talk through while they stop."""
    last_first = list(reversed(range(len(nodes))))
    buses = [i for i in last_first if nodes[i].kind == "bus"]
    return [i for i in last_first if i not in buses], buses


# ---------------------------------------------------------------- processes


class Console:
    """One output stream shared by the reader threads: every line is written whole."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._lock = threading.Lock()

    def write(self, prefix: bytes, line: bytes) -> None:
        if not line.endswith(b"\n"):
            line += b"\n"
        with self._lock:
            try:
                self._out.write(prefix + line)
                self._out.flush()
            except (OSError, ValueError):
                pass  # our stdout is gone: the graph must still run and stop normally

    def pump(self, name: str, stream: BinaryIO) -> None:
        """Echo `stream` line by line, prefixed `[name] `, until the child closes it."""
        prefix = f"[{name}] ".encode()
        with stream:
            for line in iter(lambda: stream.readline(_MAX_LINE), b""):
                self.write(prefix, line)


@dataclass
class _Child:
    spec: NodeSpec
    proc: subprocess.Popen | None = None
    started: float = 0.0
    failures: int = 0
    restart_at: float | None = None
    ended: bool = False
    reader: threading.Thread | None = None
    waiting: bool = False  # held back by its start_after gates
    reminded: float = 0.0


class States:
    """The lifecycle state every node last reported on `diagnostics` (what start gates wait on)."""

    def __init__(self, bus: str) -> None:
        self.ctx = zmq.Context()
        curve_dir = os.environ.get("VOXSIGHT_CURVE_DIR")  # the nodes' own keys, as `voxsight run` reads them
        curve = CurveKeys.load(curve_dir, server=False) if curve_dir else None
        self.sub = Subscriber(self.ctx, bus_endpoints(bus)[1], [DIAGNOSTICS_TOPIC], msg_type=Diagnostic,
                              curve=curve)
        self.state: dict[str, str] = {}

    def take(self) -> None:
        for _topic, msg in self.sub.poll_ready():
            assert isinstance(msg, Diagnostic)
            self.state[msg.node] = msg.state

    def close(self) -> None:
        self.sub.close()
        self.ctx.term()


class Supervisor:
    """Runs a checked `LaunchSpec` until it ends or a signal stops it; `run()` gives the exit status."""

    def __init__(self, spec: LaunchSpec, log_level: str = "INFO", out: BinaryIO | None = None) -> None:
        self.spec = spec
        self.bus = spec.bus or default_bus()
        self.log_level = log_level
        self.verbose = logging.getLevelName(log_level) <= logging.INFO
        self.console = Console(out or sys.stdout.buffer)
        self.children = [_Child(n) for n in spec.nodes]
        self.by_name = {c.spec.name: c for c in self.children}
        self.states: States | None = None
        self.env = {**os.environ, "VOXSIGHT_SUPERVISOR_PID": str(os.getpid()), "PYTHONUNBUFFERED": "1"}
        self.signals: list[int] = []
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)

    def say(self, message: str, *, info: bool = False) -> None:
        if self.verbose or not info:
            self.console.write(b"[launch] ", message.encode())

    def run(self) -> int:
        """Must run in the main thread: it owns the signal handlers, and children spawned from a thread
        that ends would get their parent-death signal with it."""
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD)}
        old_wakeup = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)  # SIGCHLD: a child ended
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        try:
            return self._supervise()
        finally:
            self._stop_all()
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            flush_until = time.monotonic() + 2.0
            for c in self.children:
                if c.reader is not None:
                    # flush what the children said last, but never hang on a pipe a grandchild holds
                    c.reader.join(max(0.0, flush_until - time.monotonic()))
            if self.states is not None:
                self.states.close()
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.signals.append(signum)

    def _supervise(self) -> int:
        self.say(f"bus {self.bus}" + (" (external)" if self.spec.bus_external else ""), info=True)
        if any(c.spec.start_after for c in self.children):
            self.states = States(self.bus)
        for child in self.children:
            if self.signals:
                break
            if child.spec.start_after:
                child.waiting, child.reminded = True, time.monotonic()
                self.say(f"{child.spec.name} starts once {', '.join(child.spec.start_after)} "
                         f"{'is' if len(child.spec.start_after) == 1 else 'are'} active", info=True)
            else:
                self._spawn(child)
        workers = [c for c in self.children if c.spec.name != BUS_NAME or self.spec.bus_external]
        while not self.signals:
            now = time.monotonic()
            if self.states is not None:
                self.states.take()
                if not any(c.waiting for c in self.children):  # every gate has opened: stop listening
                    self.states.close()
                    self.states = None
            for child in self.children:
                if child.waiting:
                    self._open_gate(child, now)
                    continue
                code = self._look_after(child, now)
                if code is not None:
                    return code
            if all(c.ended for c in workers):
                self.say("every node has ended", info=True)
                return 0
            due = [c.restart_at - now for c in self.children if c.restart_at is not None]
            self._sleep(min([_IDLE_WAKE_S, *due]))
        signum = self.signals[0]
        self.say(f"stopping ({signal.Signals(signum).name})", info=True)
        return 128 + signum if signum == signal.SIGINT else 0

    def _look_after(self, child: _Child, now: float) -> int | None:
        """Reap, respawn or retire one child; the graph's exit status when it must stop."""
        if child.proc is not None and (rc := child.proc.poll()) is not None:
            child.proc = None
            outcome = after_exit(child.spec, rc, now - child.started, child.failures)
            child.failures = outcome.failures
            name = child.spec.name
            if outcome.restart_in is not None:
                self.say(f"{name} exited ({exit_text(rc)}); restarting in {outcome.restart_in:g} s")
                child.restart_at = now + outcome.restart_in
                return None
            child.ended = True
            if child.spec.required:
                self.say(f"{name} exited ({exit_text(rc)}); it is required: stopping the graph")
                return exit_status(rc)
            self.say(f"{name} exited ({exit_text(rc)})", info=rc == 0)
        elif child.restart_at is not None and now >= child.restart_at:
            child.restart_at = None
            self._spawn(child)
        return None

    def _open_gate(self, child: _Child, now: float) -> None:
        """Start a held-back node once its gates are active; retire it when one has ended for good."""
        assert self.states is not None
        gates = [self.by_name[g] for g in child.spec.start_after]
        if all(self.states.state.get(g.spec.full_name) == "active" for g in gates):
            child.waiting = False
            self._spawn(child)
            return
        dead = [g.spec.name for g in gates if g.ended]
        if dead:
            child.waiting, child.ended = False, True
            self.say(f"{child.spec.name} not started: {', '.join(dead)} ended before it was active")
        elif now - child.reminded >= GATE_REMIND_S:
            child.reminded = now
            states = ", ".join(f"{g.spec.name} {self.states.state.get(g.spec.full_name, 'silent')}"
                               for g in gates)
            self.say(f"{child.spec.name} still waits ({states})")

    def _spawn(self, child: _Child) -> None:
        proc = subprocess.Popen(command_line(child.spec, self.bus, self.log_level), env=self.env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
        child.proc, child.started = proc, time.monotonic()
        assert proc.stdout is not None
        child.reader = threading.Thread(target=self.console.pump, args=(child.spec.name, proc.stdout),
                                        daemon=True, name=f"out-{child.spec.name}")
        child.reader.start()
        self.say(f"started {child.spec.name} (pid {proc.pid})", info=True)

    def _sleep(self, timeout_s: float) -> None:
        """Until a signal (SIGCHLD included) or, while a node waits on its gates, a heartbeat arrives, or
        `timeout_s` passes."""
        if self.states is not None:  # listening only while a node waits on its gates
            poller = zmq.Poller()
            poller.register(self.states.sub.socket, zmq.POLLIN)
            poller.register(self._wake_r, zmq.POLLIN)
            poller.poll(max(0.0, timeout_s) * 1000)
        else:
            select.select([self._wake_r], [], [], max(0.0, timeout_s))
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass

    def _stop_all(self) -> None:
        """SIGINT to every child (nodes, then the bus), SIGKILL after the grace time, reap all."""
        first, last = stop_order([c.spec for c in self.children])
        nodes, buses = [self.children[i] for i in first], [self.children[i] for i in last]
        start = time.monotonic()
        signals_seen = len(self.signals)
        for group, deadline in ((nodes, start + STOP_GRACE_S - _BUS_GRACE_S), (buses, start + STOP_GRACE_S)):
            for c in group:
                self._signal(c, signal.SIGINT)
            while any(self._running(c) for c in group) and time.monotonic() < deadline:
                if len(self.signals) > signals_seen:
                    break  # asked again: no more waiting
                self._sleep(min(_IDLE_WAKE_S, deadline - time.monotonic()))
        for c in nodes + buses:
            if self._running(c):
                self.say(f"{c.spec.name} (pid {c.proc.pid}) did not stop within {STOP_GRACE_S:g} s: killing")
                self._signal(c, signal.SIGKILL)
        for c in nodes + buses:
            if c.proc is not None:
                try:
                    c.proc.wait(_KILL_WAIT_S)
                except subprocess.TimeoutExpired:
                    self.say(f"{c.spec.name} (pid {c.proc.pid}) survives SIGKILL; giving up on it")

    @staticmethod
    def _running(c: _Child) -> bool:
        return c.proc is not None and c.proc.poll() is None

    @staticmethod
    def _signal(c: _Child, sig: int) -> None:
        """Signal the child's process group: it leads its own session, so helpers it started go too."""
        if Supervisor._running(c):
            assert c.proc is not None
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(c.proc.pid, sig)


def main_launch(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="voxsight launch", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file", help="launch file (YAML)")
    ap.add_argument("overrides", nargs="*", metavar="NODE.PARAM:=VALUE", help="parameter overrides")
    ap.add_argument("--bus", help="bus base endpoint, instead of the launch file's")
    ap.add_argument("--log-level", default="INFO", type=str.upper, choices=LOG_LEVELS,
                    help="of the supervisor and every node")
    args = ap.parse_intermixed_args(argv)
    try:
        spec = apply_overrides(load_launch_file(args.file), args.overrides, bus=args.bus)
    except LaunchError as exc:
        print(exc, file=sys.stderr)
        return 2
    return Supervisor(spec, args.log_level).run()
