"""A feature cache: one compressed .npz per clip, so training never decodes (or tracks) a video twice.

The key is a hash of the clip's content (the bytes of its video and of its audio file when that is a
separate file) and of a features version string, so an edited clip, or a change in how features are
made (bump the version), misses the cache instead of serving stale features. Files live at
ROOT/KEY[:2]/KEY.npz; they are written under a temporary name and renamed, so a reader never sees half a
file, and a file that cannot be read (truncated by a crash, a full disk) counts as a miss and is
rewritten.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np

_CHUNK = 1 << 20


def content_hash(files: Iterable[Path], salt: str = "") -> str:
    """Hex digest of `salt` and the bytes of each file (names play no part: a moved clip still hits)."""
    digest = hashlib.blake2b(salt.encode(), digest_size=20)
    for path in files:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
        digest.update(b"\0")  # file boundary: (ab, c) and (a, bc) differ
    return digest.hexdigest()


class FeatureCache:
    """Arrays by content key under `root` (module docstring). `hits`, `misses` and `rewrites` (unreadable
    files replaced) count what happened."""

    def __init__(self, root: Path | str, version: str) -> None:
        self.root = Path(root)
        self.version = version
        self.hits = self.misses = self.rewrites = 0

    def key(self, files: Iterable[Path], extra: str = "") -> str:
        """The key of the arrays made from `files`; `extra` names anything else they depend on."""
        return content_hash(files, salt=f"{self.version}|{extra}" if extra else self.version)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npz"

    def load(self, key: str) -> dict[str, np.ndarray] | None:
        """The arrays stored under `key`, or None (absent or unreadable)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                return {name: data[name] for name in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):
            self.rewrites += 1
            return None

    def store(self, key: str, arrays: Mapping[str, np.ndarray]) -> Path:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.part.npz")
        try:
            np.savez_compressed(tmp, **arrays)
            os.replace(tmp, path)
        except OSError:
            tmp.unlink(missing_ok=True)  # a full disk leaves no half file behind
            raise
        return path

    def get(self, files: Iterable[Path],
            make: Callable[[], Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """The cached arrays of the clip made of `files`; on a miss `make` computes them (then kept)."""
        key = self.key(files)
        arrays = self.load(key)
        if arrays is not None:
            self.hits += 1
            return arrays
        self.misses += 1
        arrays = dict(make())
        self.store(key, arrays)
        return arrays
