"""Reading BuildKit's progress: the `moby.buildkit.trace` messages of a `POST /build?version=2`.

Each message is a base64 protobuf `StatusResponse` (moby/buildkit, api/services/control/
control.proto). sti needs a few fields of it, so it reads the protobuf wire format itself (about
forty lines) instead of depending on protoc-generated classes of BuildKit's API:

    StatusResponse { repeated Vertex vertexes = 1; repeated VertexLog logs = 3; }
    Vertex         { string digest = 1; string name = 3; bool cached = 4; string error = 7; }
    VertexLog      { string vertex = 1; int64 stream = 3; bytes msg = 4; }

Unknown fields (statuses, warnings, timestamps, newer additions) are skipped, as protobuf
readers do, so newer engines decode the same.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass, field

_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


@dataclass(frozen=True)
class Vertex:
    digest: str
    name: str = ""
    error: str = ""
    cached: bool = False


@dataclass(frozen=True)
class VertexLog:
    vertex: str
    stream: int  # 1 stdout, 2 stderr
    data: bytes


@dataclass(frozen=True)
class Status:
    vertexes: list[Vertex] = field(default_factory=list)
    logs: list[VertexLog] = field(default_factory=list)


class TraceDecodeError(ValueError):
    pass


def decode_trace(encoded: str) -> Status:
    """One trace message (the event's `aux`, base64) as the vertexes and logs it carries."""
    try:
        raw = base64.b64decode(encoded)
    except ValueError as error:
        raise TraceDecodeError(f"trace message is not base64: {error}") from error
    status = Status()
    for number, value in _fields(raw):
        if number == 1 and isinstance(value, bytes):
            status.vertexes.append(_vertex(value))
        elif number == 3 and isinstance(value, bytes):
            status.logs.append(_log(value))
    return status


def _vertex(raw: bytes) -> Vertex:
    values = _strings(raw, {1, 3, 7})
    cached = any(number == 4 and value == 1 for number, value in _fields(raw))
    return Vertex(values.get(1, ""), values.get(3, ""), values.get(7, ""), cached)


def _log(raw: bytes) -> VertexLog:
    vertex, stream, data = "", 0, b""
    for number, value in _fields(raw):
        if number == 1 and isinstance(value, bytes):
            vertex = value.decode("utf-8", errors="replace")
        elif number == 3 and isinstance(value, int):
            stream = value
        elif number == 4 and isinstance(value, bytes):
            data = value
    return VertexLog(vertex, stream, data)


def _strings(raw: bytes, wanted: set[int]) -> dict[int, str]:
    return {
        number: value.decode("utf-8", errors="replace")
        for number, value in _fields(raw)
        if number in wanted and isinstance(value, bytes)
    }


def _fields(raw: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of each field: ints for varints, bytes for length-delimited."""
    position = 0
    while position < len(raw):
        key, position = _varint(raw, position)
        number, wire_type = key >> 3, key & 7
        if wire_type == _VARINT:
            value, position = _varint(raw, position)
            yield number, value
        elif wire_type == _LENGTH:
            size, position = _varint(raw, position)
            if position + size > len(raw):
                raise TraceDecodeError("trace message is truncated")
            yield number, raw[position : position + size]
            position += size
        elif wire_type in (_FIXED64, _FIXED32):
            position += 8 if wire_type == _FIXED64 else 4
        else:
            raise TraceDecodeError(f"unsupported protobuf wire type {wire_type}")


def _varint(raw: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if position >= len(raw) or shift > 63:
            raise TraceDecodeError("trace message has a broken varint")
        byte = raw[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7
