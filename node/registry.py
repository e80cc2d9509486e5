"""Node kinds by name, imported only when started (so the CLI stays light)."""

from __future__ import annotations

import importlib

from node.runtime import Node

NODE_KINDS: dict[str, str] = {
    "bus": "node.bus:BusNode",
    "camera": "node.camera:CameraNode",
    "tone": "node.tone:ToneNode",
    "audio_out": "node.audio_out:AudioOutNode",
    "tracker": "node.tracker:TrackerNode",
    "lip2speech": "node.lip2speech:Lip2SpeechNode",
}


class UnknownNodeKind(KeyError):
    pass


def load_kind(kind: str) -> type[Node]:
    target = NODE_KINDS.get(kind)
    if target is None:
        raise UnknownNodeKind(f"unknown node kind {kind!r}; known: {', '.join(sorted(NODE_KINDS))}")
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)
