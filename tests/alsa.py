"""ALSA devices for tests on a machine without a sound card.

`alsa_env(folder, "null")` makes the default device a null PCM (accepts audio, plays nothing);
`alsa_env(folder, "file", record=path)` makes it a file PCM that appends every frame played (raw,
in the stream's own format) to `record`. Both return the environment for a child process:
PortAudio reads ALSA's configuration once per process, so the device under test runs as its own
process rather than in pytest. Neither device paces in real time: PortAudio's callback runs as fast
as it can, so the stream plays silence whenever the jitter buffer is empty.
"""

from __future__ import annotations

import os
from pathlib import Path

ALSA_CONF = Path("/usr/share/alsa/alsa.conf")

_NULL = """pcm.!default { type plug slave.pcm "nullpcm" }
ctl.!default { type hw card 0 }
pcm.nullpcm { type null }
"""

_FILE = """pcm.!default {{ type plug slave.pcm "tee" }}
ctl.!default {{ type hw card 0 }}
pcm.tee {{ type file slave.pcm "null" file "{record}" format "raw" }}
"""


def alsa_env(folder: Path, kind: str = "null", record: Path | None = None) -> dict[str, str]:
    """Write an asoundrc into `folder` and return {"ALSA_CONFIG_PATH": ...} for a subprocess."""
    if kind == "null":
        text = _NULL
    elif kind == "file":
        if record is None:
            raise ValueError("a file device needs `record`, the path it writes to")
        if '"' in str(record):
            raise ValueError(f"unusable path for an asoundrc: {record}")
        text = _FILE.format(record=record)
    else:
        raise ValueError(f"unknown ALSA test device {kind!r} (null | file)")
    rc = Path(folder) / f"asoundrc-{kind}"
    rc.write_text(text)
    return {"ALSA_CONFIG_PATH": f"{ALSA_CONF}{os.pathsep}{rc}"}
