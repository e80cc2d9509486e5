"""The launch supervisor: its decisions (pure), then real graphs of real processes on a real bus."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from node.launch_file import NodeSpec
from node.params import build, parse_assignment
from node.registry import load_kind
from node.run import parse_qos
from node.supervisor import (
    MAX_RESPAWN_DELAY_S,
    after_exit,
    backoff_s,
    command_line,
    exit_status,
    exit_text,
    stop_order,
)
from streams.messages import Diagnostic
from tests.helpers import REPO, stop, voxsight, wait_for, wait_heartbeat

TWO_CAMERAS = REPO / "tests" / "fixtures" / "launch" / "two_cameras.yaml"


# ---------------------------------------------------------------- decisions


def test_backoff_doubles_from_the_first_delay_up_to_the_cap() -> None:
    assert [backoff_s(0.5, n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, MAX_RESPAWN_DELAY_S]
    assert backoff_s(0.0, 1) == 0.0
    assert 0 < backoff_s(0.0, 2) < backoff_s(0.0, 3)  # a crash loop backs off even from 0


def test_when_to_respawn() -> None:
    node = NodeSpec("cam", "camera", respawn=True, respawn_delay=0.5)
    first = after_exit(node, -signal.SIGKILL, uptime_s=1.0, failures=0)
    assert (first.restart_in, first.failures) == (0.5, 1)
    second = after_exit(node, 1, uptime_s=1.0, failures=first.failures)
    assert (second.restart_in, second.failures) == (1.0, 2)
    healthy_again = after_exit(node, 1, uptime_s=60.0, failures=5)  # it stayed up: start over
    assert (healthy_again.restart_in, healthy_again.failures) == (0.5, 1)
    assert after_exit(node, 0, uptime_s=1.0, failures=3).restart_in is None  # a clean exit is final
    no_respawn = NodeSpec("cam", "camera")
    assert after_exit(no_respawn, -signal.SIGKILL, uptime_s=1.0, failures=0).restart_in is None


def test_exit_reports() -> None:
    assert exit_text(-signal.SIGKILL) == "SIGKILL"
    assert exit_text(3) == "exit code 3"
    assert exit_status(-signal.SIGKILL) == 137
    assert exit_status(3) == 3


def test_command_line_round_trips_params_remaps_and_qos() -> None:
    params = {"depth": 7, "server_keys": "true"}  # a string that reads as a bool unless quoted
    node = NodeSpec("relay", "bus", "robot/front", params=params, remap={"a/b": "/c"},
                    qos={"a/b.v2": {"depth": 3, "latest": True}})
    cmd = command_line(node, "ipc:///tmp/x/bus", "DEBUG")
    assert cmd[1:5] == ["-m", "node", "run", "bus"]
    assigned = dict(parse_assignment(a) for a in cmd[5:7])
    assert build(load_kind("bus").Params, assigned) == build(load_kind("bus").Params, params)
    pairs = list(zip(cmd[7::2], cmd[8::2], strict=True))
    assert pairs == [("--name", "relay"), ("--ns", "robot/front"), ("--bus", "ipc:///tmp/x/bus"),
                     ("--log-level", "DEBUG"), ("--remap", "a/b:=/c"), ("--qos", "a/b.v2.depth:=3"),
                     ("--qos", "a/b.v2.latest:=true")]
    assert [parse_qos(a) for a in cmd[-3::2]] == [("a/b.v2", "depth", 3), ("a/b.v2", "latest", True)]


def test_nodes_stop_in_reverse_order_and_the_bus_last() -> None:
    nodes = [NodeSpec("bus", "bus"), NodeSpec("a", "camera"), NodeSpec("b", "camera")]
    assert stop_order(nodes) == ([2, 1], [0])


# ---------------------------------------------------------------- real graphs


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # dead, waiting for init to reap it
    except psutil.NoSuchProcess:
        return True


def started_pids(log: Path) -> dict[str, list[int]]:
    """The pids the supervisor reported starting, per node name."""
    pids: dict[str, list[int]] = {}
    for name, pid in re.findall(r"^\[launch\] started (\S+) \(pid (\d+)\)$", log.read_text(), re.M):
        pids.setdefault(name, []).append(int(pid))
    return pids


def all_started(log: Path) -> list[int]:
    return [pid for pids in started_pids(log).values() for pid in pids]


def active(diag: Diagnostic) -> bool:
    return diag.state == "active" and diag.level != "ERROR"


@pytest.fixture
def launch(tmp_path: Path, bus_url: str) -> Iterator[Callable[..., subprocess.Popen]]:
    """Start `voxsight launch FILE --bus bus_url ARGS`, its output in tmp_path/launch.log."""
    procs: list[subprocess.Popen] = []
    log = tmp_path / "launch.log"

    def start(file: Path, *args: str) -> subprocess.Popen:
        with log.open("wb") as out:
            procs.append(voxsight("launch", str(file), "--bus", bus_url, *args, stdout=out,
                                  stderr=subprocess.STDOUT))
        return procs[-1]

    yield start
    for proc in procs:
        stop(proc)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "graph.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_killed_node_comes_back_and_others_are_undisturbed(launch, bus_url: str, tmp_path: Path) -> None:
    sup = launch(TWO_CAMERAS)
    a = wait_heartbeat(bus_url, "cam_a", predicate=active)
    b = wait_heartbeat(bus_url, "cam_b", predicate=active)
    assert {a.pid, b.pid} <= {p.pid for p in psutil.Process(sup.pid).children()}
    os.kill(a.pid, signal.SIGKILL)
    back = wait_heartbeat(bus_url, "cam_a", predicate=lambda d: d.pid != a.pid and active(d))
    assert back.pid in {p.pid for p in psutil.Process(sup.pid).children()}
    assert wait_heartbeat(bus_url, "cam_b", predicate=active).pid == b.pid
    assert "[launch] cam_a exited (SIGKILL); restarting in 0.2 s" in (tmp_path / "launch.log").read_text()
    assert sup.poll() is None


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 0)])
def test_signal_stops_every_child(launch, bus_url: str, tmp_path: Path, signum: int, status: int) -> None:
    sup = launch(TWO_CAMERAS)
    for name in ("bus", "cam_a", "cam_b"):
        wait_heartbeat(bus_url, name, predicate=active)
    children = [p.pid for p in psutil.Process(sup.pid).children(recursive=True)]
    assert len(children) == 3
    sup.send_signal(signum)
    assert sup.wait(timeout=30) == status
    assert [pid for pid in children if not gone(pid)] == []
    log = (tmp_path / "launch.log").read_text()
    assert sorted(all_started(tmp_path / "launch.log")) == sorted(children)
    # Every line came out whole and labelled with who said it.
    assert all(re.match(r"\[(launch|bus|cam_a|cam_b)\] ", line) for line in log.splitlines()), log


def test_children_die_with_a_killed_supervisor(launch, bus_url: str) -> None:
    sup = launch(TWO_CAMERAS)
    for name in ("bus", "cam_a", "cam_b"):
        wait_heartbeat(bus_url, name, predicate=active)
    children = [p.pid for p in psutil.Process(sup.pid).children(recursive=True)]
    assert len(children) == 3
    sup.kill()
    sup.wait(timeout=30)
    wait_for(lambda: all(gone(pid) for pid in children), timeout_s=30, what="the orphans to die")


BROKEN = "{source: /nonexistent/clip.mp4}"


def test_required_node_ends_the_graph_with_its_exit_code(launch, bus_url: str, tmp_path: Path) -> None:
    alone = voxsight("run", "camera", "source:=/nonexistent/clip.mp4", "--bus", bus_url)
    alone.communicate(timeout=60)
    assert alone.returncode not in (0, None)
    sup = launch(write(tmp_path, f"""\
        nodes:
          - {{name: cam_a, kind: camera, params: {{source: pattern, fps: 10}}, respawn: true}}
          - {{name: broken, kind: camera, params: {BROKEN}, required: true}}
        """))
    assert sup.wait(timeout=60) == alone.returncode
    log = tmp_path / "launch.log"
    assert f"broken exited (exit code {alone.returncode}); it is required" in log.read_text()
    assert {"bus", "cam_a", "broken"} <= set(started_pids(log))
    assert [pid for pid in all_started(log) if not gone(pid)] == []


def test_graph_ends_when_every_node_has_ended(launch, tmp_path: Path) -> None:
    sup = launch(write(tmp_path, f"""\
        nodes:
          - {{name: broken, kind: camera, params: {BROKEN}}}
        """))
    assert sup.wait(timeout=60) == 0
    log = tmp_path / "launch.log"
    assert "[launch] broken exited (exit code" in log.read_text()
    assert [pid for pid in all_started(log) if not gone(pid)] == []


def test_a_gated_node_starts_only_once_its_gate_is_active(launch, bus_url: str, tmp_path: Path) -> None:
    clip = tmp_path / "later.mp4"  # absent at first: cam_a fails to configure, restarts till it is there
    sup = launch(write(tmp_path, f"""\
        nodes:
          - {{name: cam_a, kind: camera, params: {{source: {clip}, loop: true}}, respawn: true,
              respawn_delay: 0.1}}
          - {{name: cam_b, kind: camera, params: {{source: pattern, fps: 10}}, start_after: [cam_a]}}
        """))
    log = tmp_path / "launch.log"
    wait_for(lambda: len(started_pids(log).get("cam_a", [])) >= 3, timeout_s=60,
             what="cam_a to fail and be restarted twice")
    assert "cam_b" not in started_pids(log)
    assert "[launch] cam_b starts once cam_a is active" in log.read_text()
    shutil.copy(REPO / "launch" / "media" / "pattern.mp4", clip)
    b = wait_heartbeat(bus_url, "cam_b", timeout_s=60, predicate=active)
    a = wait_heartbeat(bus_url, "cam_a", predicate=active)
    started = [line for line in log.read_text().splitlines() if line.startswith("[launch] started cam_")]
    assert started[-1] == f"[launch] started cam_b (pid {b.pid})"  # after the cam_a that came up
    assert f"[launch] started cam_a (pid {a.pid})" in started
    assert sup.poll() is None


def test_a_gate_that_ends_before_it_was_active_retires_the_waiting_node(launch, tmp_path: Path) -> None:
    sup = launch(write(tmp_path, f"""\
        nodes:
          - {{name: broken, kind: camera, params: {BROKEN}}}
          - {{name: cam_b, kind: camera, params: {{source: pattern}}, start_after: [broken]}}
        """))
    assert sup.wait(timeout=60) == 0  # every node has ended: nothing waits forever
    log = tmp_path / "launch.log"
    assert "[launch] cam_b not started: broken ended before it was active" in log.read_text()
    assert "cam_b" not in started_pids(log)
    assert [pid for pid in all_started(log) if not gone(pid)] == []
