"""The `voxsight` command: each sub-command lives in its own module, imported only when used."""

from __future__ import annotations

import importlib
import signal
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "launch": ("node.supervisor", "start a node graph from a launch file"),
    "run": ("node.run", "start one node"),
    "bus": ("node.run", "start the bus (same as `run bus`)"),
    "topic": ("node.topic_tools", "list | echo | hz | delay | bw: inspect topics on the bus"),
    "node": ("node.topic_tools", "list: the nodes alive on the bus, from their heartbeats"),
    "audio": ("node.audio_control", "mute | unmute | volume GAIN: the audio_out nodes' playback; devices"),
    "keys": ("node.keys", "generate DIR: CURVE keys for a bus beyond loopback"),
    "media": ("node.media", "make the bundled sample media (a test-pattern clip)"),
    "track": ("node.track", "track faces and lips in a video file: overlay video, per-frame JSON, summary"),
    "eval": ("engines.eval.cli", "score generated speech against references with independent judges"),
    "data": ("engines.data.cli", "synth, morph, features: the synthetic audio-visual corpus"),
    "train": ("engines.train.cli", "train a model from a YAML config (resumable; torchrun: many processes)"),
    "models": ("engines.train.cli", "list the shipped model weights"),
    "lip2speech": ("engines.synth.cli", "speech for the face in a silent video (offline, whole video)"),
    "export": ("node.export", "write the models' ONNX graphs and check them against PyTorch"),
    "engines": ("node.export", "build | list: TensorRT engines of the models' graphs, in the engine cache"),
}


def usage() -> str:
    lines = ["usage: voxsight COMMAND [args...]", "", "commands:"]
    lines += [f"  {name:<8} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`voxsight COMMAND --help` describes each."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # a program start, not a call from Python
        # Python keeps SIGINT ignored when it starts ignored (a background job of a script), and then only
        # SIGKILL stops a command, without its final figures; every command ends cleanly on SIGINT.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"voxsight: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    if command == "bus":
        rest = ["bus", *rest]
    entry = getattr(module, f"main_{command}", None) or module.main
    return int(entry(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
