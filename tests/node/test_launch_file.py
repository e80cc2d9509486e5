"""Launch files: what they describe, and every kind of mistake reported as FILE:LINE: message."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from node.launch_file import BUS_NAME, LaunchError, apply_overrides, dump, load, parse
from tests.helpers import voxsight

# The `bus` kind doubles as a node whose params (depth: int, server_keys: str) exist in every checkout.
GOOD = """\
namespace: robot
bus: ipc:///tmp/vx-launch-test/bus
bus_params: {depth: 50}
nodes:
  - name: relay
    kind: bus
    namespace: front
    params: {depth: 7, server_keys: "3"}
    remap: {camera/image: /cam0/image}
    qos: {camera/image: {depth: 4, latest: false}, audio/speech: {depth: 1000}}
    respawn: true
    respawn_delay: 2
    required: true
  - kind: bus
    name: spare
    start_after: [relay, bus, relay]
"""


def test_good_file_describes_the_graph() -> None:
    spec = parse(GOOD, "good.yaml")
    assert [n.name for n in spec.nodes] == [BUS_NAME, "relay", "spare"]
    bus, relay, spare = spec.nodes
    assert (bus.kind, bus.namespace, bus.params, bus.respawn, bus.required) == ("bus", "robot", {"depth": 50},
                                                                              True, True)
    assert relay.namespace == "robot/front"
    assert relay.params == {"depth": 7, "server_keys": "3"}  # typed by the kind's Params
    assert relay.remap == {"camera/image": "/cam0/image"}
    assert relay.qos == {"camera/image": {"depth": 4, "latest": False}, "audio/speech": {"depth": 1000}}
    assert (relay.respawn, relay.respawn_delay, relay.required, relay.line) == (True, 2.0, True, 5)
    assert (spare.kind, spare.namespace, spare.params, spare.respawn, spare.required) == ("bus", "robot", {},
                                                                                       False, False)
    assert spec.bus == "ipc:///tmp/vx-launch-test/bus" and not spec.bus_external
    assert (relay.start_after, spare.start_after) == ([], ["relay", "bus"])


EXTERNAL = GOOD.replace("bus_params: {depth: 50}", "bus_external: true").replace("[relay, bus, relay]",
                                                                                 "[relay]")


@pytest.mark.parametrize("text", [GOOD, EXTERNAL])
def test_a_dumped_graph_reads_back_the_same(text: str) -> None:
    spec = parse(text, "good.yaml")
    again = parse(dump(spec), "dumped.yaml")
    assert [dataclasses.replace(n, line=0) for n in again.nodes] == \
        [dataclasses.replace(n, line=0) for n in spec.nodes]
    assert (again.bus, again.bus_external) == (spec.bus, spec.bus_external)


def test_name_defaults_to_kind_and_external_bus_starts_none() -> None:
    spec = parse("bus_external: true\nnodes:\n  - kind: bus\n")
    assert [(n.name, n.kind) for n in spec.nodes] == [("bus", "bus")]
    assert spec.bus_external


ERRORS = [
    ("yaml syntax", "nodes:\n  - kind: bus\n\tname: x\n", 3, "YAML syntax error"),
    ("yaml unclosed", "nodes:\n  - kind: bus\n    params: {depth: 3\n  - kind: bus\n", 4,
     "YAML syntax error"),
    ("not a mapping", "- kind: bus\n", 1, "must be a mapping"),
    ("unknown top key", "nodes:\n  - kind: bus\nnodez: []\n", 3, "unknown key 'nodez'"),
    ("unknown node key", "nodes:\n  - kind: bus\n    respwan: true\n", 3, "unknown key 'respwan'"),
    ("wrong type", "nodes:\n  - kind: bus\n    name: relay\n    respawn: 3\n", 4,
     "'respawn' must be true or false"),
    ("wrong type list", "nodes: {kind: bus}\n", 1, "'nodes' must be a list"),
    ("delay range", "nodes:\n  - kind: bus\n    respawn_delay: -1\n", 3, "respawn_delay must be"),
    ("unknown kind", "nodes:\n  - name: x\n    kind: camra\n", 3, "unknown node kind 'camra'"),
    ("missing kind", "nodes:\n  - name: x\n", 2, "`kind:` is required"),
    ("bad name", "nodes:\n  - kind: bus\n    name: a.b\n", 3, "bad node name 'a.b'"),
    ("duplicate name", "nodes:\n  - {kind: bus, name: a}\n\n  - {kind: bus, name: a}\n", 4,
     "duplicate node name 'a' (also line 2)"),
    ("clash with our bus", "nodes:\n  - kind: bus\n", 2,
     "node name 'bus' is taken by the supervisor's bus"),
    ("unknown param", "nodes:\n  - name: r\n    kind: bus\n    params:\n      depth: 3\n      deepth: 4\n", 6,
     "unknown parameter(s) deepth"),
    ("bad param type", "nodes:\n  - name: r\n    kind: bus\n    params:\n      depth:\n        many\n", 6,
     "parameter 'depth' expects int"),
    ("bus param", "bus_params:\n  colour: red\nnodes:\n  - {kind: bus, name: r}\n", 2,
     "unknown parameter(s) colour"),
    ("bad remap", "nodes:\n  - name: r\n    kind: bus\n    remap:\n      a: 'b c'\n", 5,
     "bad remap 'a': 'b c'"),
    ("remap not mapping", "nodes:\n  - name: r\n    kind: bus\n    remap: [a, b]\n", 4,
     "'remap' must be a mapping"),
    ("qos depth", "nodes:\n  - name: r\n    kind: bus\n    qos:\n      a/b: {depth: 0}\n", 5,
     "a/b: qos depth must be a whole number of messages from 1 to 100000, got 0"),
    ("qos field", "nodes:\n  - name: r\n    kind: bus\n    qos:\n      a/b: {lastest: true}\n", 5,
     "unknown qos field 'lastest'; known: depth, latest"),
    ("qos topic", "nodes:\n  - name: r\n    kind: bus\n    qos:\n      'a b': {depth: 3}\n", 5,
     "bad qos topic 'a b'"),
    ("qos not mapping", "nodes:\n  - name: r\n    kind: bus\n    qos:\n      a/b: 3\n", 5,
     "qos of 'a/b' must be a mapping"),
    ("duplicate key", "nodes:\n  - name: r\n    kind: bus\n    name: s\n", 4, "duplicate key 'name'"),
    ("bad bus", "bus: udp://x\nnodes:\n  - {kind: bus, name: r}\n", 1, "bad bus endpoint"),
    ("bad namespace", "nodes:\n  - {kind: bus, name: r}\n  - {kind: bus, name: s, namespace: 'a b'}\n", 3,
     "bad namespace"),
    ("no nodes", "bus: ipc:///tmp/x\nnodes: []\n", 2, "at least one node"),
    ("gate below", "nodes:\n  - {kind: bus, name: r, start_after: [s]}\n  - {kind: bus, name: s}\n", 2,
     "start_after 's' is not a node listed above it (nodes above: bus)"),
    ("gate on itself",
     "nodes:\n  - {kind: bus, name: r}\n  - kind: bus\n    name: s\n    start_after:\n      - s\n", 6,
     "start_after 's' is not a node listed above it (nodes above: bus, r)"),
    ("gate not a name", "nodes:\n  - {kind: bus, name: r, start_after: [{a: 1}]}\n", 2,
     "start_after lists node names"),
    ("gates not a list", "nodes:\n  - {kind: bus, name: r, start_after: bus}\n", 2,
     "'start_after' must be a list"),
    ("external bus params", "bus_external: true\nbus_params: {depth: 3}\nnodes:\n  - kind: bus\n", 2,
     "bus_params given"),
]


@pytest.mark.parametrize(("text", "line", "message"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_errors_name_file_and_line(text: str, line: int, message: str) -> None:
    with pytest.raises(LaunchError) as info:
        parse(text, "graph.yaml")
    assert info.value.line == line, str(info.value)
    assert str(info.value).startswith(f"graph.yaml:{line}: ")
    assert message in str(info.value)


def test_missing_file_is_a_launch_error(tmp_path: Path) -> None:
    with pytest.raises(LaunchError, match="cannot read launch file"):
        load(tmp_path / "nope.yaml")


def test_overrides_apply_on_top() -> None:
    spec = parse(GOOD, "good.yaml")
    over = apply_overrides(spec, ["relay.depth:=9", "spare.server_keys:=0.5", "bus.depth:=3"],
                           bus="tcp://127.0.0.1:7000")
    assert over.node("relay").params == {"depth": 9, "server_keys": "3"}
    assert over.node("spare").params == {"server_keys": "0.5"}
    assert over.node("bus").params == {"depth": 3}
    assert over.bus == "tcp://127.0.0.1:7000"
    assert spec.node("relay").params["depth"] == 7  # the parsed spec itself is left alone


@pytest.mark.parametrize(("override", "message"), [
    ("nobody.depth:=3", "no node 'nobody'; nodes: bus, relay, spare"),
    ("relay.deepth:=3", "unknown parameter(s) deepth"),
    ("relay.depth:=lots", "parameter 'depth' expects int"),
    ("relay:=3", "expected NODE.PARAM:=VALUE"),
    ("relay.depth=3", "expected NODE.PARAM:=VALUE"),
])
def test_bad_overrides_are_rejected(override: str, message: str) -> None:
    with pytest.raises(LaunchError) as info:
        apply_overrides(parse(GOOD, "good.yaml"), [override])
    assert str(info.value).startswith("command line: ")
    assert message in str(info.value)


def test_bad_bus_override_is_rejected() -> None:
    with pytest.raises(LaunchError, match="bad --bus"):
        apply_overrides(parse(GOOD, "good.yaml"), [], bus="pgm://x")


def test_launch_with_bad_file_exits_2_and_starts_nothing(tmp_path: Path) -> None:
    bus = tmp_path / "bus" / "b"  # binding it would create the folder
    bad = tmp_path / "bad.yaml"
    bad.write_text(textwrap.dedent(f"""\
        bus: ipc://{bus}
        nodes:
          - kind: bus
            name: relay
            params: {{depth: 10, colour: red}}
        """))
    proc = voxsight("launch", str(bad))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert f"{bad}:5: node 'relay': unknown parameter(s) colour" in out
    assert "[launch]" not in out
    assert not bus.parent.exists(), "the bus must not have been started"


def test_launch_with_unknown_override_exits_2(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(f"bus: ipc://{tmp_path}/b\nnodes:\n  - {{kind: bus, name: relay}}\n")
    proc = voxsight("launch", str(good), "relay.colour:=red")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "override 'relay.colour:=red'" in out and "[launch]" not in out
