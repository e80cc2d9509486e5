"""`voxsight audio mute | unmute | volume GAIN`: an operator's command to the audio_out nodes on a bus;
`voxsight audio devices`: the output devices this machine's PortAudio sees, by the index and name that
`audio_out.device` takes.

Publishes one AudioControl and waits until the audio_out nodes' heartbeats report it (`control_id`), so
the command's exit status says whether it took effect: 0 once at least one node (or the `--node` named)
confirmed, 1 when none did within `--timeout`. A fresh publisher's sends are lost until the nodes'
subscriptions reach it, so the first waits for them; the command is sent again until confirmed (the nodes
act once per id).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

import zmq

from node.runtime import DIAGNOSTICS_TOPIC, HEARTBEAT_S
from streams.endpoints import CurveKeys, EndpointError, bus_endpoints, default_bus
from streams.messages import AUDIO_COMMANDS, MAX_VOLUME, AudioControl, Diagnostic, InvalidMessage
from streams.pubsub import Publisher, Subscriber
from streams.sinks import SinkError, describe_devices, list_output_devices

_RESEND_S = 0.25


def _volume(text: str) -> float:
    value = float(text)
    try:  # the message's own rule, refused here with a clear message rather than at publishing
        AudioControl(command="volume", volume=value).check()
    except InvalidMessage as exc:
        raise argparse.ArgumentTypeError(f"{exc}, got {text!r}") from exc
    return value


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="voxsight audio", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=(*AUDIO_COMMANDS, "devices"),
                    help="mute (silence, timing kept), unmute, volume, or devices (this machine's outputs)")
    ap.add_argument("gain", nargs="?", type=_volume, default=None,
                    help=f"with volume: the gain on the samples, 0 to {MAX_VOLUME:g} (1 = as received)")
    ap.add_argument("--node", default="", help="the audio_out node's full name; '' = every one")
    ap.add_argument("--topic", default="audio/control",
                    help="the nodes' control topic (default audio/control)")
    ap.add_argument("--timeout", type=float, default=5.0, metavar="S",
                    help="give up when no node confirms within S seconds (default 5)")
    ap.add_argument("--bus", default=None, help="bus base endpoint (default $VOXSIGHT_BUS or ipc)")
    ap.add_argument("--curve-dir", default=os.environ.get("VOXSIGHT_CURVE_DIR"),
                    help="client CURVE keys for a bus beyond loopback")
    return ap


def send(control: AudioControl, bus: str, node: str = "", timeout_s: float = 5.0,
         topic: str = "audio/control", curve: CurveKeys | None = None) -> dict[str, Diagnostic]:
    """Publish `control` until audio_out heartbeats report its id; the confirming heartbeats by node name:
    `node`'s alone, or, for every node, those that came within a heartbeat period of the first."""
    pub_endpoint, sub_endpoint = bus_endpoints(bus)
    ctx = zmq.Context()
    beats = Subscriber(ctx, sub_endpoint, [DIAGNOSTICS_TOPIC], msg_type=Diagnostic, curve=curve)
    out = Publisher(ctx, pub_endpoint, topic, source="voxsight-audio", curve=curve)
    confirmed: dict[str, Diagnostic] = {}
    try:
        deadline, resend = time.monotonic() + timeout_s, 0.0
        out.wait_subscribed(timeout_s)  # with no subscriber at all, the loop below runs out the time left
        while (now := time.monotonic()) < deadline:
            if now >= resend:
                out.publish(control)
                resend = now + _RESEND_S
            got = beats.recv(max(0.0, min(deadline, resend) - now))
            if got is None:
                continue
            beat = got[1]
            if beat.values.get("control_id") == control.id and (not node or beat.node == node):
                if not confirmed:
                    deadline = now if node else min(deadline, now + 1.5 * HEARTBEAT_S)
                confirmed[beat.node] = beat
    finally:
        out.close()
        beats.close()
        ctx.term()
    return confirmed


def devices() -> int:
    """Print this machine's output devices, one `INDEX: NAME` a line; 1 when there is none."""
    try:
        found = list_output_devices()
    except SinkError as exc:
        print(f"voxsight audio: {exc}", file=sys.stderr)
        return 1
    if not found:
        print(f"voxsight audio: {describe_devices(found)}", file=sys.stderr)
        return 1
    for index, name in found:
        print(f"{index}: {name}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = parser()
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "devices":
        if args.gain is not None:
            ap.error("devices takes no gain")
        return devices()
    if (args.command == "volume") != (args.gain is not None):
        ap.error("volume takes a gain; mute and unmute take none")
    control = AudioControl(command=args.command, volume=1.0 if args.gain is None else args.gain,
                           target=args.node, id=random.randrange(1, 2**31))
    bus = args.bus or default_bus()
    try:
        curve = CurveKeys.load(args.curve_dir, server=False) if args.curve_dir else None
        confirmed = send(control, bus, args.node, args.timeout, args.topic.lstrip("/"), curve)
    except EndpointError as exc:
        print(f"voxsight audio: {exc}", file=sys.stderr)
        return 2
    if not confirmed:
        who = f"audio_out node {args.node!r}" if args.node else "no audio_out node"
        print(f"voxsight audio: {who} confirmed {args.command} within {args.timeout:g} s "
              f"(is one running on {bus}, listening to {args.topic}?)", file=sys.stderr)
        return 1
    for name, beat in sorted(confirmed.items()):
        state = "muted" if beat.values.get("muted") else "playing"
        print(f"{name}: {state}, volume {beat.values.get('volume', 1.0):g}")
    return 0
