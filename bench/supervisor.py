"""Supervisor benchmark: how fast a killed node is back publishing, and how fast Ctrl-C empties a graph.

Run: `make bench` or `.venv/bin/python bench/supervisor.py [--runs N]`. Uses the two-camera test
graph (tests/fixtures/launch/two_cameras.yaml): kill -9 of `cam_a` → the first camera/image frame from
its new process; SIGINT to the supervisor → every child process gone.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import zmq

from streams.endpoints import bus_endpoints
from streams.messages import Diagnostic, Image
from streams.pubsub import Subscriber

REPO = Path(__file__).resolve().parents[1]
GRAPH = REPO / "tests" / "fixtures" / "launch" / "two_cameras.yaml"


def _heartbeat(sub: Subscriber, node: str, timeout_s: float, pred=lambda d: True) -> Diagnostic:
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        got = sub.recv(left)
        if got and isinstance(got[1], Diagnostic) and got[1].node == node and pred(got[1]):
            return got[1]
    raise RuntimeError(f"no heartbeat from {node}")


def one_run() -> tuple[float, float]:
    bus = f"ipc://{tempfile.mkdtemp(prefix='vxs', dir='/tmp')}/b"
    sup = subprocess.Popen([sys.executable, "-m", "node", "launch", str(GRAPH), "--bus", bus,
                            "--log-level", "WARNING"], cwd=REPO, stdout=subprocess.DEVNULL)
    ctx = zmq.Context()
    se = bus_endpoints(bus)[1]
    diag = Subscriber(ctx, se, ["diagnostics"], msg_type=Diagnostic)
    frames = Subscriber(ctx, se, ["camera/image"], msg_type=Image)
    try:
        old = _heartbeat(diag, "cam_a", 30, lambda d: d.state == "active").pid
        t_kill = time.monotonic()
        os.kill(old, signal.SIGKILL)
        while True:  # the first frame from the new process (its source name is the same; pid is not)
            got = frames.recv(30)
            if got is None:
                raise RuntimeError("cam_a did not come back")
            if got[1].source == "cam_a" and got[1].seq == 0:
                respawn_s = time.monotonic() - t_kill
                break
        children = psutil.Process(sup.pid).children(recursive=True)
        t_int = time.monotonic()
        sup.send_signal(signal.SIGINT)
        sup.wait(30)
        psutil.wait_procs(children, timeout=30)
        shutdown_s = time.monotonic() - t_int
    finally:
        if sup.poll() is None:
            sup.kill()
        diag.close()
        frames.close()
        ctx.term()
    return respawn_s, shutdown_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    print(f"command: {' '.join(sys.argv)}  ({psutil.cpu_count()} cores, respawn_delay 0.2 s)\n")
    runs = np.array([one_run() for _ in range(args.runs)])
    print("| figure | median s | max s | runs |\n|---|---|---|---|")
    for i, name in enumerate(("kill -9 → back publishing", "Ctrl-C → all children gone")):
        print(f"| {name} | {np.median(runs[:, i]):.2f} | {runs[:, i].max():.2f} | {args.runs} |")


if __name__ == "__main__":
    main()
