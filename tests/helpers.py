"""Test helpers: real processes on a real bus, waiting on conditions (never on fixed sleeps), and tiny
checkpoints of the models tests build around."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import zmq

from streams.endpoints import bus_endpoints
from streams.messages import Diagnostic, Message
from streams.pubsub import Subscriber

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def wait_for(predicate: Callable[[], T], timeout_s: float = 10.0, what: str = "condition",
             poll_s: float = 0.02) -> T:
    """Poll `predicate` until it returns something truthy; fail with `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(poll_s)  # polling interval, not synchronisation: the predicate decides


def voxsight(*args: str, **kwargs) -> subprocess.Popen:
    """Start `voxsight ARGS` as its own process (stdout/stderr captured unless overridden)."""
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.STDOUT)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **kwargs.pop("env", {})}
    return subprocess.Popen([sys.executable, "-m", "node", *args], cwd=REPO, env=env, text=True, **kwargs)


def stop(proc: subprocess.Popen, timeout_s: float = 10.0) -> int:
    """SIGINT, then SIGKILL if it ignores us; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def next_message(sub: Subscriber, predicate: Callable[[Message], bool] = lambda m: True,
                 timeout_s: float = 15.0, what: str = "a matching message") -> Message:
    """The next message on an open subscription that satisfies `predicate`."""
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        got = sub.recv(left)
        if got and predicate(got[1]):
            return got[1]
    raise AssertionError(f"no {what} within {timeout_s} s")


def wait_heartbeat(bus: str, node: str, timeout_s: float = 15.0,
                   predicate: Callable[[Diagnostic], bool] = lambda d: True) -> Diagnostic:
    """The first heartbeat from `node` on `bus` that satisfies `predicate` (a fresh subscription)."""
    ctx = zmq.Context.instance()
    sub = Subscriber(ctx, bus_endpoints(bus)[1], ["diagnostics"], msg_type=Diagnostic)
    try:
        return next_message(sub, lambda d: d.node == node and predicate(d), timeout_s,
                            f"heartbeat from {node!r} on {bus}")
    finally:
        sub.close()


def save_phone_models(folder: Path, lipreader: Any, identity: Any, aligner: Any = None,
                      features: str = "reader") -> dict[str, str]:
    """Checkpoints of a tiny phone aligner on `lipreader`'s `features` (those its MelGen hears; or
    `aligner`, built on them) and an untrained mel prior on it in `identity`'s voice: SynthModels.load's
    aligner and prior."""
    from engines.models.aligner import PhoneAligner, PhoneAlignerConfig
    from engines.models.mel_prior import MelPrior, MelPriorConfig
    from engines.train import checkpoint

    if aligner is None:
        aligner = PhoneAligner(PhoneAlignerConfig(feature_dim=lipreader.condition_dim(features), hidden=8,
                                                  layers=1))
    prior = MelPrior(MelPriorConfig(identity_dim=identity.config.embed_dim, channels=8, dilations=(1,)))
    trained_on = {"aligner": {"features": features, "lipreader_digest": checkpoint.weights_digest(lipreader)},
                  "prior": {"aligner_digest": checkpoint.weights_digest(aligner),
                            "identity_digest": checkpoint.weights_digest(identity)}}
    return {kind: str(checkpoint.save(Path(folder) / f"{kind}.pt", model, model.config, kind=kind, metrics={},
                                      data_summary=trained_on[kind], command="pytest", data_seed=0, step=0))
            for kind, model in (("aligner", aligner), ("prior", prior))}
