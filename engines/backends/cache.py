"""The cache of compiled graphs: ONNX files and TensorRT engines, each with a JSON record beside it.

    ROOT/KIND/NAME-KEY16.SUFFIX   the artifact (KIND: onnx, tensorrt)
    ROOT/KIND/NAME-KEY16.json     {"name", "key", "slot", "sha256", "created", ...what went into the key}

The key is the digest of everything the artifact depends on (`digest`), so a changed ingredient misses
and rebuilds instead of loading a stale file. A lookup trusts an entry only when its record names the
same key and the artifact's SHA-256 matches the record (a half-written or damaged file is deleted and
rebuilt). Artifacts and records are written to a temporary file and renamed, so a reader never sees
half of one. Storing an entry evicts the older entries of its `slot` (the same graph on the same GPU at
the same precision, built from other weights or another TensorRT), which no key can reach any more.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

KINDS = {"onnx": ".onnx", "tensorrt": ".engine"}


def digest(ingredients: Mapping[str, Any]) -> str:
    """SHA-256 of plain values (dicts, lists, str, numbers), independent of dict order."""
    text = json.dumps(ingredients, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class CacheEntry:
    path: Path
    kind: str
    record: dict[str, Any]

    @property
    def name(self) -> str:
        return self.record["name"]

    @property
    def key(self) -> str:
        return self.record["key"]

    @property
    def sha256(self) -> str:
        return self.record["sha256"]

    @property
    def size_mb(self) -> float:
        return self.path.stat().st_size / 1e6


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class ArtifactCache:
    """One kind of artifact under ROOT/KIND (module docstring)."""

    def __init__(self, root: Path | str, kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"cache kind must be one of {', '.join(KINDS)}, got {kind!r}")
        self.kind, self.suffix = kind, KINDS[kind]
        self.folder = Path(root) / kind

    def path(self, name: str, key: str) -> Path:
        return self.folder / f"{name}-{key[:16]}{self.suffix}"

    @staticmethod
    def _record_path(path: Path) -> Path:
        return path.with_suffix(".json")

    def _remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        self._record_path(path).unlink(missing_ok=True)

    def _read(self, path: Path) -> CacheEntry | None:
        try:
            record = json.loads(self._record_path(path).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or not {"name", "key", "slot", "sha256"} <= set(record):
            return None
        return CacheEntry(path, self.kind, record)

    def lookup(self, name: str, key: str) -> CacheEntry | None:
        """The entry for (name, key) if it is whole; a damaged or mismatched one is deleted."""
        path = self.path(name, key)
        if not path.exists():
            return None
        entry = self._read(path)
        if entry is None or entry.key != key or entry.name != name or file_sha256(path) != entry.sha256:
            log.warning("discarding the damaged or mismatched cache entry %s", path)
            self._remove(path)
            return None
        return entry

    def store(self, name: str, key: str, slot: str, write: Callable[[Path], None],
              record: Mapping[str, Any]) -> CacheEntry:
        """Write the artifact with `write(path)` and its record; evict the slot's older entries."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path(name, key)
        _write_atomic(path, write)
        full = {**record, "name": name, "key": key, "slot": slot, "sha256": file_sha256(path),
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        _write_atomic(self._record_path(path), lambda p: p.write_text(json.dumps(full, indent=1)))
        for old in self.entries():
            if old.record["slot"] == slot and old.path != path:
                log.info("evicting %s: superseded by %s", old.path, path.name)
                self._remove(old.path)
        return CacheEntry(path, self.kind, full)

    def entries(self) -> list[CacheEntry]:
        """Every readable entry, by file name (artifacts without a record are not entries)."""
        found = (self._read(p) for p in sorted(self.folder.glob(f"*{self.suffix}")))
        return [e for e in found if e is not None]


def cache_entries(root: Path | str) -> list[CacheEntry]:
    """Every entry of every kind under `root`."""
    return [entry for kind in KINDS for entry in ArtifactCache(root, kind).entries()]
