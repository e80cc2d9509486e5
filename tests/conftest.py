from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import stop, voxsight, wait_heartbeat

_counter = itertools.count()


@pytest.fixture
def bus_url() -> Iterator[str]:
    """A fresh ipc bus address for one test (short path: ipc paths are limited to ~100 bytes)."""
    d = Path(tempfile.mkdtemp(prefix="vx", dir="/tmp"))
    yield f"ipc://{d}/b{os.getpid()}-{next(_counter)}"
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def bus(bus_url: str) -> Iterator[str]:
    """A real bus process on a fresh address; yields the base endpoint once it is up."""
    proc = voxsight("bus", "--bus", bus_url)
    try:
        wait_heartbeat(bus_url, "bus")
        yield bus_url
    finally:
        stop(proc)
