"""Launch files: the YAML description of a node graph, parsed and checked before anything starts.

```yaml
# launch/passthrough.yaml
namespace: ""                # optional, prefixed to every node's namespace
bus: ipc:///tmp/x/bus        # optional bus base endpoint; default: streams.endpoints.default_bus()
bus_params: {depth: 100}     # optional params of the bus node
bus_external: false          # optional; true: a bus already runs at `bus`, the supervisor starts none
nodes:
  - name: camera             # unique; default = kind
    kind: camera             # a node kind from node/registry.py
    namespace: ""            # optional; joined under the file's namespace
    params: {source: launch/media/pattern.mp4, realtime: true}
    remap: {camera/image: cam0/image}      # from: to
    qos: {camera/image: {depth: 4, latest: true}}  # optional: a topic's queue (messages) and whether
                             # only the newest is kept; the topic is named as for remap
    respawn: true            # restart when it dies (non-zero exit or killed by a signal);
                             # a clean exit 0 is not respawned
    respawn_delay: 0.5       # seconds before the first restart; doubles per consecutive failure up
                             # to 30 s; resets after the node stayed up 10 s
    required: false          # when this node ends for good, the whole graph stops with its exit code
    start_after: [tracker]   # optional: start only once these nodes (listed above it) report `active`
                             # on `diagnostics`, e.g. a camera after the nodes that read its frames
```

Unless `bus_external` is true, the graph starts with a bus node named `bus` (so no other node may take
that name), with `bus_params`; it is respawned when it dies, and required: stopping it stops the graph.
Relative paths in params are not rewritten: nodes run in the supervisor's working directory.

Command-line overrides `NODE.PARAM:=VALUE` (the value typed like `voxsight run`'s `PARAM:=VALUE`)
apply on top; `bus.PARAM:=VALUE` sets a bus parameter. Every problem is a `LaunchError` that names its
place, `FILE:LINE: message`, so an operator can fix the file before anything runs.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from node.params import ParamError, build, parse_assignment
from node.registry import NODE_KINDS, load_kind
from streams.endpoints import EndpointError, bus_endpoints
from streams.pubsub import check_qos_field

BUS_NAME = "bus"
MAX_RESPAWN_DELAY_S = 30.0
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")  # no '.' (overrides split on it) and no '/'
_NAMESPACE = re.compile(r"/?([A-Za-z_][A-Za-z0-9_-]*(/[A-Za-z_][A-Za-z0-9_-]*)*)?/?")
_TOPIC = re.compile(r"/?[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*")
_NULL = "tag:yaml.org,2002:null"


class LaunchError(ValueError):
    """A launch file or override that cannot be used; `str()` is `FILE:LINE: message`."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        self.path, self.line, self.message = path, line, message
        super().__init__(f"{path}:{line}: {message}" if line else f"{path}: {message}")


@dataclass
class NodeSpec:
    """One node of the graph, as the supervisor starts it."""

    name: str
    kind: str
    namespace: str = ""  # the full namespace: the file's, then the node's own
    params: dict[str, Any] = field(default_factory=dict)  # only those set, typed by the kind's Params
    remap: dict[str, str] = field(default_factory=dict)
    qos: dict[str, dict[str, Any]] = field(default_factory=dict)  # topic → {depth, latest}
    respawn: bool = False
    respawn_delay: float = 0.5
    required: bool = False
    start_after: list[str] = field(default_factory=list)  # names of earlier nodes that must be active first
    line: int = 0

    @property
    def full_name(self) -> str:
        """The name the node reports in its heartbeats (node.runtime.Node.full_name)."""
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


@dataclass
class LaunchSpec:
    """A checked launch file: `nodes` in start order, the supervisor's bus first unless external."""

    path: str
    nodes: list[NodeSpec]
    bus: str | None = None
    bus_external: bool = False

    def node(self, name: str) -> NodeSpec | None:
        return next((n for n in self.nodes if n.name == name), None)


_TOP_KEYS = {"namespace": str, "bus": str, "bus_params": dict, "bus_external": bool, "nodes": list}
_NODE_KEYS = {"name": str, "kind": str, "namespace": str, "params": dict, "remap": dict, "qos": dict,
              "respawn": bool, "respawn_delay": float, "required": bool, "start_after": list}
_TYPE_NAMES = {str: "a string", dict: "a mapping", list: "a list", bool: "true or false", float: "a number"}
# start order is file order, so a gate may only name nodes above it: no node can wait on itself or a cycle


class _Doc:
    """A composed YAML document: nodes keep their marks, so every complaint can name its line."""

    def __init__(self, text: str, path: str) -> None:
        self.path = path
        self._loader = yaml.SafeLoader(text)
        try:
            self.root = self._loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            problem = exc.problem or exc.context or "not valid YAML"
            raise LaunchError(path, mark.line + 1 if mark else None, f"YAML syntax error: {problem}") from exc
        except yaml.YAMLError as exc:
            raise LaunchError(path, None, f"YAML syntax error: {exc}") from exc

    def error(self, node: yaml.Node, message: str) -> LaunchError:
        return LaunchError(self.path, node.start_mark.line + 1, message)

    def value(self, node: yaml.Node) -> Any:
        try:
            return self._loader.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            raise self.error(node, f"cannot read value: {getattr(exc, 'problem', None) or exc}") from exc

    def entries(self, node: yaml.Node, what: str) -> Iterator[tuple[str, yaml.Node, yaml.Node]]:
        """(key, key node, value node) of a mapping with string keys, each key once."""
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, f"{what} must be a mapping")
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = self.value(key_node)
            if not isinstance(key, str):
                raise self.error(key_node, f"{what}: keys must be strings, got {key!r}")
            if key in seen:
                raise self.error(key_node, f"{what}: duplicate key {key!r}")
            seen.add(key)
            yield key, key_node, value_node

    def fields(self, node: yaml.Node, allowed: dict[str, type],
               what: str) -> dict[str, tuple[yaml.Node, Any]]:
        """The known keys of a mapping, each checked against its type; a null value counts as absent."""
        found: dict[str, tuple[yaml.Node, Any]] = {}
        for key, key_node, value_node in self.entries(node, what):
            if key not in allowed:
                raise self.error(key_node, f"{what}: unknown key {key!r}; allowed: {', '.join(allowed)}")
            if value_node.tag == _NULL:
                continue
            expected = allowed[key]
            if expected in (dict, list):
                value: Any = value_node  # walked by the caller, entry by entry
                ok = isinstance(value_node, yaml.MappingNode if expected is dict else yaml.SequenceNode)
            else:
                value = self.value(value_node)
                ok = isinstance(value, expected) and not (expected is not bool and isinstance(value, bool))
                if expected is float and isinstance(value, int) and not isinstance(value, bool):
                    value, ok = float(value), True
            if not ok:
                raise self.error(value_node, f"{what}: {key!r} must be {_TYPE_NAMES[expected]}")
            found[key] = (value_node, value)
        return found


def load(path: str | Path) -> LaunchSpec:
    """Read and check the launch file at `path`."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise LaunchError(str(path), None, f"cannot read launch file: {exc}") from exc
    return parse(text, str(path))


def dump(spec: LaunchSpec) -> str:
    """`spec` as launch-file text that `parse` reads back to the same graph (what a tool writes when it
    launches a graph it changed)."""
    bus = None if spec.bus_external else spec.node(BUS_NAME)
    outer = bus.namespace if bus is not None else ""  # the file's namespace, which every node's starts with

    def node(n: NodeSpec) -> dict[str, Any]:
        fields = {f.name: getattr(n, f.name) for f in dataclasses.fields(n) if f.name != "line"}
        fields["namespace"] = n.namespace.removeprefix(outer).lstrip("/")
        return fields

    text: dict[str, Any] = {"namespace": outer, "nodes": [node(n) for n in spec.nodes if n is not bus],
                            "bus_external": spec.bus_external}
    if spec.bus is not None:
        text["bus"] = spec.bus
    if bus is not None and bus.params:
        text["bus_params"] = bus.params
    return yaml.safe_dump(text, sort_keys=False)


def parse(text: str, path: str = "<launch>") -> LaunchSpec:
    """Check launch-file `text` (`path` names it in errors) and return the graph it describes."""
    doc = _Doc(text, path)
    if doc.root is None:
        raise LaunchError(path, 1, "empty launch file: it needs at least `nodes:`")
    top = doc.fields(doc.root, _TOP_KEYS, "launch file")
    namespace = _namespace(doc, top.get("namespace"), "")
    bus = top["bus"][1] if "bus" in top else None
    if bus is not None:
        try:
            bus_endpoints(bus)
        except EndpointError as exc:
            raise doc.error(top["bus"][0], f"bad bus endpoint: {exc}") from exc
    external = top["bus_external"][1] if "bus_external" in top else False
    if "nodes" not in top or not top["nodes"][0].value:
        where = top["nodes"][0] if "nodes" in top else doc.root
        raise doc.error(where, "`nodes:` must list at least one node")
    nodes: list[NodeSpec] = []
    if not external:
        bus_line = top["bus_params"][0].start_mark.line + 1 if "bus_params" in top else 0
        bus_node = NodeSpec(BUS_NAME, "bus", namespace, respawn=True, required=True, line=bus_line)
        if "bus_params" in top:
            bus_node.params = _params(doc, BUS_NAME, "bus", top["bus_params"][0])
        nodes.append(bus_node)
    elif "bus_params" in top:
        raise doc.error(top["bus_params"][0], "bus_params given, but bus_external: true starts no bus")
    names = {n.name: n for n in nodes}
    for item in top["nodes"][0].value:
        spec = _node(doc, item, namespace, names)
        if spec.name == BUS_NAME and not external:
            raise doc.error(item, f"node name {BUS_NAME!r} is taken by the supervisor's bus: name this node "
                                  "otherwise, or set `bus_external: true`")
        if spec.name in names:
            raise doc.error(item, f"duplicate node name {spec.name!r} (also line {names[spec.name].line}): "
                                  "names must be unique")
        names[spec.name] = spec
        nodes.append(spec)
    return LaunchSpec(path, nodes, bus, external)


def _node(doc: _Doc, item: yaml.Node, outer_ns: str, earlier: dict[str, NodeSpec]) -> NodeSpec:
    f = doc.fields(item, _NODE_KEYS, "node")
    if "kind" not in f:
        raise doc.error(item, "node: `kind:` is required")
    kind_node, kind = f["kind"]
    if kind not in NODE_KINDS:
        raise doc.error(kind_node, f"unknown node kind {kind!r}; known: {', '.join(sorted(NODE_KINDS))}")
    name_node, name = f.get("name", (kind_node, kind))
    if not _NAME.fullmatch(name):
        raise doc.error(name_node, f"bad node name {name!r}: letters, digits, '_' and '-', not starting "
                                   "with a digit or '-'")
    spec = NodeSpec(name, kind, _namespace(doc, f.get("namespace"), outer_ns), line=item.start_mark.line + 1)
    if "params" in f:
        spec.params = _params(doc, name, kind, f["params"][0])
    if "remap" in f:
        spec.remap = _remap(doc, name, f["remap"][0])
    if "qos" in f:
        spec.qos = _qos(doc, name, f["qos"][0])
    spec.respawn = f.get("respawn", (None, False))[1]
    spec.required = f.get("required", (None, False))[1]
    if "respawn_delay" in f:
        delay_node, spec.respawn_delay = f["respawn_delay"]
        if not 0 <= spec.respawn_delay <= MAX_RESPAWN_DELAY_S:
            raise doc.error(delay_node, f"node {name!r}: respawn_delay must be 0..{MAX_RESPAWN_DELAY_S:g} s")
    if "start_after" in f:
        spec.start_after = _start_after(doc, name, f["start_after"][0], earlier)
    return spec


def _start_after(doc: _Doc, name: str, node: yaml.Node, earlier: dict[str, NodeSpec]) -> list[str]:
    gates: list[str] = []
    for item in node.value:
        gate = doc.value(item)
        if not isinstance(gate, str):
            raise doc.error(item, f"node {name!r}: start_after lists node names, got {gate!r}")
        if gate not in earlier:
            listed = ", ".join(earlier) or "none"
            raise doc.error(item, f"node {name!r}: start_after {gate!r} is not a node listed above it "
                                  f"(nodes above: {listed})")
        if gate not in gates:
            gates.append(gate)
    return gates


def _namespace(doc: _Doc, found: tuple[yaml.Node, str] | None, outer: str) -> str:
    if found is None:
        return outer
    node, ns = found
    if not _NAMESPACE.fullmatch(ns):
        raise doc.error(node, f"bad namespace {ns!r}: names separated by '/'")
    return "/".join(p for p in (outer, ns.strip("/")) if p)


def _params(doc: _Doc, name: str, kind: str, node: yaml.Node) -> dict[str, Any]:
    params_cls = _params_class(kind, lambda msg: doc.error(node, f"node {name!r}: {msg}"))
    known = {f.name for f in dataclasses.fields(params_cls)}
    params: dict[str, Any] = {}
    for key, key_node, value_node in doc.entries(node, f"node {name!r} params"):
        try:
            params[key] = getattr(build(params_cls, {key: doc.value(value_node)}), key)
        except ParamError as exc:
            raise doc.error(key_node if key not in known else value_node, f"node {name!r}: {exc}") from exc
    return params


def _params_class(kind: str, error: Callable[[str], LaunchError]) -> type:
    try:
        return load_kind(kind).Params
    except (ImportError, AttributeError) as exc:
        raise error(f"node kind {kind!r} cannot be loaded to check its params: {exc}") from exc


def _remap(doc: _Doc, name: str, node: yaml.Node) -> dict[str, str]:
    remap: dict[str, str] = {}
    for src, key_node, value_node in doc.entries(node, f"node {name!r} remap"):
        dst = doc.value(value_node)
        for topic, where in ((src, key_node), (dst, value_node)):
            if not isinstance(topic, str) or not _TOPIC.fullmatch(topic):
                raise doc.error(where, f"node {name!r}: bad remap {src!r}: {dst!r}: topics are names "
                                       "(letters, digits, '_', '.', '-') separated by '/'")
        remap[src] = dst
    return remap


def _qos(doc: _Doc, name: str, node: yaml.Node) -> dict[str, dict[str, Any]]:
    qos: dict[str, dict[str, Any]] = {}
    for topic, key_node, value_node in doc.entries(node, f"node {name!r} qos"):
        if not _TOPIC.fullmatch(topic):
            raise doc.error(key_node, f"node {name!r}: bad qos topic {topic!r}: names (letters, digits, "
                                      "'_', '.', '-') separated by '/'")
        qos[topic] = {}
        for field_name, field_node, v_node in doc.entries(value_node, f"node {name!r} qos of {topic!r}"):
            value = doc.value(v_node)
            try:
                check_qos_field(field_name, value)
            except ValueError as exc:
                raise doc.error(field_node, f"node {name!r}: {topic}: {exc}") from exc
            qos[topic][field_name] = value
    return qos


def apply_overrides(spec: LaunchSpec, overrides: Sequence[str], bus: str | None = None) -> LaunchSpec:
    """`spec` with `NODE.PARAM:=VALUE` overrides (and a bus endpoint, when given) applied and checked."""
    nodes = [dataclasses.replace(n, params=dict(n.params)) for n in spec.nodes]
    spec = dataclasses.replace(spec, nodes=nodes)
    where = "command line"
    if bus is not None:
        try:
            bus_endpoints(bus)
        except EndpointError as exc:
            raise LaunchError(where, None, f"bad --bus: {exc}") from exc
        spec.bus = bus
    for text in overrides:
        try:
            target, value = parse_assignment(text)
        except ParamError as exc:
            raise LaunchError(where, None, f"override {text!r}: expected NODE.PARAM:=VALUE") from exc
        node_name, dot, key = target.partition(".")
        if not dot or not key:
            raise LaunchError(where, None, f"override {text!r}: expected NODE.PARAM:=VALUE")
        node = spec.node(node_name)
        if node is None:
            known = ", ".join(n.name for n in spec.nodes)
            raise LaunchError(where, None, f"override {text!r}: no node {node_name!r}; nodes: {known}")

        def error(msg: str, text: str = text) -> LaunchError:
            return LaunchError(where, None, f"override {text!r}: {msg}")

        params_cls = _params_class(node.kind, error)
        try:
            node.params[key] = getattr(build(params_cls, {key: value}), key)
        except ParamError as exc:
            raise error(f"node {node.name!r}: {exc}") from exc
    return spec
