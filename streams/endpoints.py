"""Endpoints and transport security.

Defaults stay on the host (`ipc://` in a private folder, or `tcp://127.0.0.1`). Binding anywhere else
requires CURVE keys: a robot's audio bus must not be readable or injectable by whoever shares its
network.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import zmq
import zmq.auth


class EndpointError(ValueError):
    """An endpoint that is malformed or may not be used as asked."""


def runtime_dir() -> Path:
    """A per-user folder for ipc sockets, readable by this user only."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    path = Path(base) / f"voxsight-{os.getuid()}"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def default_bus() -> str:
    """The bus base endpoint: $VOXSIGHT_BUS, else an ipc socket in `runtime_dir()`."""
    return os.environ.get("VOXSIGHT_BUS") or f"ipc://{runtime_dir() / 'bus'}"


def bus_endpoints(base: str) -> tuple[str, str]:
    """(publishers connect here, subscribers connect here) for a bus base endpoint.

    `ipc:///x/bus` gives `ipc:///x/bus.in` and `ipc:///x/bus.out`; `tcp://h:P` gives ports P and P+1.
    """
    scheme, rest = _split(base)
    if scheme == "tcp":
        host, port = _host_port(base)
        return f"tcp://{host}:{port}", f"tcp://{host}:{port + 1}"
    if scheme in ("ipc", "inproc"):
        return f"{scheme}://{rest}.in", f"{scheme}://{rest}.out"
    raise EndpointError(f"unsupported bus transport {scheme!r} in {base!r} (use ipc:// or tcp://)")


def _split(endpoint: str) -> tuple[str, str]:
    if "://" not in endpoint:
        raise EndpointError(f"endpoint {endpoint!r} has no transport (ipc://, tcp://, inproc://)")
    scheme, rest = endpoint.split("://", 1)
    if not rest:
        raise EndpointError(f"endpoint {endpoint!r} has no address")
    return scheme, rest


def _host_port(endpoint: str) -> tuple[str, int]:
    parts = urlsplit(endpoint)
    try:
        port = parts.port
    except ValueError as exc:
        raise EndpointError(f"bad port in {endpoint!r}") from exc
    if not parts.hostname or port is None:
        raise EndpointError(f"tcp endpoint {endpoint!r} needs host:port")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return host, port


def is_loopback(endpoint: str) -> bool:
    scheme, _ = _split(endpoint)
    if scheme in ("ipc", "inproc"):
        return True
    if scheme != "tcp":
        return False
    host = urlsplit(endpoint).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # an interface name or '*': not provably local


@dataclass(frozen=True)
class CurveKeys:
    """CURVE key material: our own pair, and the server's public key when we connect."""

    public: bytes
    secret: bytes
    server_public: bytes | None = None

    @classmethod
    def load(cls, directory: str | os.PathLike, *, server: bool) -> CurveKeys:
        """Load keys written by `voxsight keys generate DIR`: server.key_secret to bind, or
        client.key_secret plus server.key to connect."""
        d = Path(directory)
        try:
            if server:
                public, secret = zmq.auth.load_certificate(d / "server.key_secret")
                return cls(public, secret)
            public, secret = zmq.auth.load_certificate(d / "client.key_secret")
            server_public, _ = zmq.auth.load_certificate(d / "server.key")
        except (OSError, ValueError) as exc:
            raise EndpointError(f"cannot load CURVE keys from {d}: {exc}") from exc
        if secret is None:
            raise EndpointError(f"{d}: secret key missing")
        return cls(public, secret, server_public)

    def apply(self, sock: zmq.Socket, *, server: bool) -> None:
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret
        if server:
            sock.curve_server = True
        else:
            if self.server_public is None:
                raise EndpointError("connecting with CURVE needs the server's public key")
            sock.curve_serverkey = self.server_public


def ipc_in_use(endpoint: str) -> bool:
    """Whether a live process listens on this ipc endpoint. ZeroMQ would silently take the path over
    (and strand that process's peers); a stale file left by a killed process is not "in use"."""
    scheme, path = _split(endpoint)
    if scheme != "ipc" or not Path(path).exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            return False
    return True


def generate_keys(directory: str | os.PathLike) -> Path:
    d = Path(directory)
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    zmq.auth.create_certificates(d, "server")
    zmq.auth.create_certificates(d, "client")
    return d


def prepare(sock: zmq.Socket, endpoint: str, *, bind: bool, curve: CurveKeys | None) -> None:
    """Attach `sock` to `endpoint`, enforcing the loopback rule; socket options must be set before."""
    scheme, rest = _split(endpoint)
    if bind and not is_loopback(endpoint) and curve is None:
        raise EndpointError(
            f"refusing to bind {endpoint} without CURVE keys: it is reachable beyond this host "
            "(bind 127.0.0.1 or ipc://, or pass keys from `voxsight keys generate DIR`)")
    if curve is not None:
        curve.apply(sock, server=bind)
    if scheme == "ipc":
        Path(rest).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        sock.bind(endpoint) if bind else sock.connect(endpoint)
    except zmq.ZMQError as exc:
        raise EndpointError(f"cannot {'bind' if bind else 'connect'} {endpoint}: {exc}") from exc
