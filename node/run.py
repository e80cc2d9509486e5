"""`voxsight run KIND [options] [param:=value ...]`: start one node in this process."""

from __future__ import annotations

import argparse
import logging
import os
import sys

import yaml

from node.params import ParamError, build, describe, parse_assignment
from node.registry import UnknownNodeKind, load_kind
from node.runtime import die_with_parent, install_signal_handlers
from streams.endpoints import EndpointError
from streams.pubsub import check_qos_field


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def parse_remap(text: str) -> tuple[str, str]:
    src, sep, dst = text.partition(":=")
    if not sep or not src or not dst:
        raise argparse.ArgumentTypeError(f"expected from:=to, got {text!r}")
    return src, dst


def parse_qos(text: str) -> tuple[str, str, object]:
    """`camera/image.depth:=5` → ("camera/image", "depth", 5), the value checked."""
    name, sep, raw = text.partition(":=")
    topic, dot, field = name.rpartition(".")  # topics may hold dots; fields do not
    if not sep or not dot or not topic or not raw:
        raise argparse.ArgumentTypeError(f"expected TOPIC.FIELD:=VALUE (e.g. camera/image.depth:=5), "
                                         f"got {text!r}")
    try:
        value = yaml.safe_load(raw)
        check_qos_field(field, value)
    except (yaml.YAMLError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from exc
    return topic, field, value


def main(argv: list[str]) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # stopped while still starting up (importing, configuring)
        return 130


def _main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="voxsight run", description=__doc__)
    ap.add_argument("kind", help="node kind (bus, camera, tone, audio_out, ...)")
    ap.add_argument("params", nargs="*", metavar="param:=value", help="parameter overrides")
    ap.add_argument("--name", help="node name (default: the kind)")
    ap.add_argument("--ns", default="", help="namespace prefixed to relative topics")
    ap.add_argument("--remap", action="append", type=parse_remap, default=[], metavar="FROM:=TO")
    ap.add_argument("--qos", action="append", type=parse_qos, default=[], metavar="TOPIC.FIELD:=VALUE",
                    help="override a topic's queue: depth:=N (messages queued) or latest:=true|false "
                         "(keep only the newest); repeatable")
    ap.add_argument("--bus", default=None, help="bus base endpoint (default $VOXSIGHT_BUS or ipc)")
    ap.add_argument("--curve-dir", default=os.environ.get("VOXSIGHT_CURVE_DIR"),
                    help="client CURVE keys for a bus beyond loopback")
    ap.add_argument("--log-level", default="INFO")
    ap.add_argument("--help-params", action="store_true", help="list the node's parameters and exit")
    args = ap.parse_intermixed_args(argv)  # params may follow options
    setup_logging(args.log_level)
    try:
        cls = load_kind(args.kind)
    except UnknownNodeKind as exc:
        print(f"voxsight run: {exc.args[0]}", file=sys.stderr)
        return 2
    if args.help_params:
        print(f"{args.kind} parameters:\n{describe(cls.Params)}")
        return 0
    try:
        params = build(cls.Params, dict(parse_assignment(p) for p in args.params))
    except ParamError as exc:
        print(f"voxsight run {args.kind}: {exc}", file=sys.stderr)
        return 2
    if os.environ.get("VOXSIGHT_SUPERVISOR_PID"):
        die_with_parent()
        if str(os.getppid()) != os.environ["VOXSIGHT_SUPERVISOR_PID"]:
            return 1  # the supervisor died before we could ask to follow it
    try:
        qos: dict[str, dict[str, object]] = {}
        for topic, field, value in args.qos:
            qos.setdefault(topic, {})[field] = value
        node = cls(args.name or args.kind, params, namespace=args.ns, remaps=dict(args.remap),
                   bus=args.bus, curve_dir=args.curve_dir, qos=qos)
    except EndpointError as exc:
        print(f"voxsight run {args.kind}: {exc}", file=sys.stderr)
        return 2
    install_signal_handlers(node)
    return node.run()
