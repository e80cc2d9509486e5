"""Wire codec: a message is the multipart `[topic, msgpack header, *raw array frames]`.

The header holds `v` (schema version), `type`, every field of the message type, and `payload`: one
`[dtype, shape]` per array frame. Array fields hold their index into `payload`. The schema comes from
the dataclass annotations, so a type is declared once. Decoding is strict: unknown or missing keys,
wrong types, non-finite floats, sizes that do not add up, or a failing `check()` raise
`InvalidMessage`. Arrays are never copied: encode hands their buffers to ZeroMQ, decode wraps the
received frames (read-only) with `np.frombuffer`.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Sequence
from functools import cache
from typing import Any

import msgpack
import numpy as np

from streams.messages import MESSAGE_TYPES, SCHEMA_VERSION, FaceTrack, InvalidMessage, Message

# Little-endian and byte dtypes only: the wire has one byte order.
ALLOWED_DTYPES = frozenset({"|u1", "|i1", "|b1", "<u2", "<i2", "<u4", "<i4", "<i8", "<f2", "<f4", "<f8"})
MAX_HEADER_BYTES = 1 << 20
MAX_TOPIC_BYTES = 256
MAX_NDIM = 6
MAX_FRAMES = 1024
_RESERVED = ("v", "type", "payload")

Frame = Any  # bytes, memoryview or zmq.Frame


@cache
def _schema(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


@cache
def _required(cls: type) -> frozenset[str]:
    return frozenset(
        f.name for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )


# ---------------------------------------------------------------- encode

def _pack_array(arr: np.ndarray, payload: list[list], buffers: list[np.ndarray]) -> int:
    if not isinstance(arr, np.ndarray):
        raise InvalidMessage(f"expected ndarray, got {type(arr).__name__}")
    dt = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
    if dt.str not in ALLOWED_DTYPES:
        raise InvalidMessage(f"dtype {arr.dtype} cannot go on the wire")
    arr = np.ascontiguousarray(arr, dtype=dt)  # no copy when already contiguous and little-endian
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise InvalidMessage("non-finite values in a float array")
    payload.append([dt.str, list(arr.shape)])
    buffers.append(arr)
    return len(payload) - 1


def _pack_value(value: Any, hint: Any, payload: list, buffers: list) -> Any:
    if hint is np.ndarray:
        return _pack_array(value, payload, buffers)
    if dataclasses.is_dataclass(hint):
        return _pack_record(value, hint, payload, buffers)
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        return [_pack_value(v, item, payload, buffers) for v in value]
    if origin is dict:
        return {str(k): _pack_value(v, typing.get_args(hint)[1], payload, buffers) for k, v in value.items()}
    if hint is float:
        value = float(value)
        if not math.isfinite(value):
            raise InvalidMessage("non-finite float field")
    return value


def _pack_record(obj: Any, cls: type, payload: list, buffers: list) -> dict:
    schema = _schema(cls)
    return {name: _pack_value(getattr(obj, name), hint, payload, buffers) for name, hint in schema.items()}


def encode(topic: str, msg: Message) -> list[Frame]:
    """Frames for `send_multipart(..., copy=False)`. Raises InvalidMessage for an invalid message."""
    msg.check()
    payload: list[list] = []
    buffers: list[np.ndarray] = []
    header = _pack_record(msg, type(msg), payload, buffers)
    header.update(v=SCHEMA_VERSION, type=msg.TYPE, payload=payload)
    return [topic.encode(), msgpack.packb(header, use_bin_type=True), *buffers]


# ---------------------------------------------------------------- decode

def _reject_ext(code: int, data: bytes) -> Any:
    raise InvalidMessage("msgpack extension types are not allowed")


def _buffer(frame: Frame) -> memoryview:
    buf = getattr(frame, "buffer", None)  # zmq.Frame received with copy=False
    return buf if buf is not None else memoryview(frame)


def _unpack_array(index: Any, arrays: list[np.ndarray | None]) -> np.ndarray:
    if type(index) is not int or not 0 <= index < len(arrays):
        raise InvalidMessage("array field does not index the payload")
    arr = arrays[index]
    if arr is None:
        raise InvalidMessage("payload frame used twice")
    arrays[index] = None
    return arr


def _unpack_value(value: Any, hint: Any, arrays: list, where: str) -> Any:
    if hint is np.ndarray:
        return _unpack_array(value, arrays)
    if dataclasses.is_dataclass(hint):
        return _unpack_record(value, hint, arrays, where)
    origin = typing.get_origin(hint)
    if origin is list:
        if type(value) is not list:
            raise InvalidMessage(f"{where}: expected a list")
        (item,) = typing.get_args(hint)
        return [_unpack_value(v, item, arrays, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if type(value) is not dict:
            raise InvalidMessage(f"{where}: expected a map")
        vhint = typing.get_args(hint)[1]
        return {k: _unpack_value(v, vhint, arrays, f"{where}.{k}") for k, v in value.items()}
    if hint is float:
        if type(value) not in (float, int) or not math.isfinite(value):
            raise InvalidMessage(f"{where}: expected a finite number")
        return float(value)
    if type(value) is not hint:  # exact: bool is not int here
        raise InvalidMessage(f"{where}: expected {hint.__name__}, got {type(value).__name__}")
    return value


def _unpack_record(raw: Any, cls: type, arrays: list, where: str) -> Any:
    if type(raw) is not dict:
        raise InvalidMessage(f"{where}: expected a map")
    schema = _schema(cls)
    unknown = raw.keys() - schema.keys()
    missing = _required(cls) - raw.keys()
    if unknown or missing:
        raise InvalidMessage(f"{where}: unknown fields {sorted(unknown)}, missing {sorted(missing)}")
    kwargs = {k: _unpack_value(v, schema[k], arrays, f"{where}.{k}") for k, v in raw.items()}
    return cls(**kwargs)


def _arrays(specs: Any, frames: Sequence[Frame]) -> list[np.ndarray | None]:
    if type(specs) is not list or len(specs) != len(frames):
        raise InvalidMessage("payload specs do not match the frame count")
    out: list[np.ndarray | None] = []
    for spec, frame in zip(specs, frames, strict=True):
        if type(spec) is not list or len(spec) != 2:
            raise InvalidMessage("payload spec must be [dtype, shape]")
        dtype, shape = spec
        if dtype not in ALLOWED_DTYPES:
            raise InvalidMessage(f"dtype {dtype!r} not allowed")
        if (type(shape) is not list or len(shape) > MAX_NDIM
                or not all(type(d) is int and 0 <= d < 1 << 31 for d in shape)):
            raise InvalidMessage("bad array shape")
        buf = _buffer(frame)
        dt = np.dtype(dtype)
        if math.prod(shape) * dt.itemsize != buf.nbytes:
            raise InvalidMessage("array size does not match its frame")
        arr = np.frombuffer(buf, dtype=dt).reshape(shape)
        arr.flags.writeable = False  # the buffer belongs to the received frame
        if dt.kind == "f" and not np.isfinite(arr).all():
            raise InvalidMessage("non-finite values in a float array")
        out.append(arr)
    return out


def decode(frames: Sequence[Frame]) -> tuple[str, Message]:
    """Parse a received multipart into (topic, message). Raises InvalidMessage, never anything else."""
    try:
        return _decode(frames)
    except InvalidMessage:
        raise
    except Exception as exc:  # anything a hostile frame can provoke in msgpack/numpy/dataclasses
        raise InvalidMessage(f"{type(exc).__name__}: {exc}") from None


def _decode(frames: Sequence[Frame]) -> tuple[str, Message]:
    if not 2 <= len(frames) <= MAX_FRAMES:
        raise InvalidMessage(f"{len(frames)} frames; need a topic, a header and the payload")
    topic_buf, header_buf = _buffer(frames[0]), _buffer(frames[1])
    if topic_buf.nbytes > MAX_TOPIC_BYTES or header_buf.nbytes > MAX_HEADER_BYTES:
        raise InvalidMessage("topic or header too large")
    topic = bytes(topic_buf).decode("utf-8")
    header = msgpack.unpackb(header_buf, raw=False, strict_map_key=True, ext_hook=_reject_ext)
    if type(header) is not dict:
        raise InvalidMessage("header is not a map")
    if header.get("v") != SCHEMA_VERSION:
        raise InvalidMessage(f"schema version {header.get('v')!r}, expected {SCHEMA_VERSION}")
    cls = MESSAGE_TYPES.get(header.get("type"))  # type: ignore[arg-type]
    if cls is None:
        raise InvalidMessage(f"unknown message type {header.get('type')!r}")
    arrays = _arrays(header.get("payload"), frames[2:])
    fields = {k: v for k, v in header.items() if k not in _RESERVED}
    msg = _unpack_record(fields, cls, arrays, cls.TYPE)
    if any(a is not None for a in arrays):
        raise InvalidMessage("payload frame not referenced by any field")
    msg.check()
    return topic, msg


__all__ = ["ALLOWED_DTYPES", "FaceTrack", "InvalidMessage", "decode", "encode"]
