"""Decoding BuildKit's progress messages (protobuf StatusResponse), with messages encoded here
field by field as the engine sends them."""

from __future__ import annotations

import base64

import pytest

from sti_worker.engine.buildkit_trace import TraceDecodeError, decode_trace


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, value: bytes | int) -> bytes:
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def _timestamp() -> bytes:
    return _field(1, 1_700_000_000) + _field(2, 123)


def _message(*fields: bytes) -> str:
    return base64.b64encode(b"".join(fields)).decode()


def test_vertexes_logs_and_errors_are_decoded() -> None:
    vertex = (
        _field(1, b"sha256:abc")
        + _field(2, b"sha256:parent")
        + _field(3, b'[2/3] RUN ["/usr/bin/prepare"]')
        + _field(5, _timestamp())
        + _field(7, b"exit code: 3")
    )
    log = _field(1, b"sha256:abc") + _field(2, _timestamp()) + _field(3, 2) + _field(4, b"oops\n")
    status = decode_trace(_message(_field(1, vertex), _field(2, b"\x0a\x01x"), _field(3, log)))
    assert len(status.vertexes) == 1
    assert status.vertexes[0].digest == "sha256:abc"
    assert status.vertexes[0].name == '[2/3] RUN ["/usr/bin/prepare"]'
    assert status.vertexes[0].error == "exit code: 3"
    assert [(log.vertex, log.stream, log.data) for log in status.logs] == [
        ("sha256:abc", 2, b"oops\n")
    ]


def test_a_cached_step_is_told_apart() -> None:
    cached = _field(1, b"sha256:copy") + _field(3, b"[2/3] COPY src /tmp/src") + _field(4, 1)
    ran = _field(1, b"sha256:run") + _field(3, b"[3/3] RUN") + _field(4, 0)
    status = decode_trace(_message(_field(1, cached), _field(1, ran), _field(1, b"\x0a\x01x")))
    assert [vertex.cached for vertex in status.vertexes] == [True, False, False]


def test_fields_a_newer_engine_adds_are_skipped() -> None:
    fixed64 = _varint(9 << 3 | 1) + b"\x00" * 8
    fixed32 = _varint(10 << 3 | 5) + b"\x00" * 4
    vertex = _field(1, b"d") + fixed64 + _field(3, b"name") + fixed32 + _field(99, 7)
    status = decode_trace(_message(_field(1, vertex), _field(4, b"warning"), _field(12, 1)))
    assert status.vertexes[0].name == "name"
    assert status.vertexes[0].cached is False  # field 99 is not "cached", though it is 7
    assert status.logs == []


@pytest.mark.parametrize(
    "encoded",
    [
        "not base64!",
        base64.b64encode(_varint(1 << 3 | 2) + _varint(50) + b"short").decode(),
        base64.b64encode(b"\xff\xff\xff").decode(),
        base64.b64encode(_varint(1 << 3 | 3)).decode(),
    ],
    ids=["not-base64", "truncated", "broken-varint", "group-wire-type"],
)
def test_broken_messages_are_a_clear_error(encoded: str) -> None:
    with pytest.raises(TraceDecodeError):
        decode_trace(encoded)
