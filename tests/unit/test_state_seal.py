"""Sealed build states: a host's workers read back exactly the states they sealed, and refuse
any other (forged, altered, re-wrapped) before using a field of it; a sealed state shows none
of its values. The key lives in TMPDIR;
these tests point TMPDIR at a directory of their own and forget the cached key around each."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sti.errors import InternalError
from sti_worker.state_seal import KEY_FILE, ForgedState, host_key, seal, unseal

STATE: dict[str, Any] = {
    "request": {"source": "/src", "build_image": "acme/builder", "tag": "acme/app"},
    "host": "host-a",
    "replaced_images": ["sha256:" + "0" * 64],
    "messages": ["ünïcödé", 'quote " and newline \n'],
}


def use_tmpdir(monkeypatch: pytest.MonkeyPatch, directory: Path) -> None:
    """Make directory the TMPDIR the key is looked up in, and forget the cached key."""
    monkeypatch.setenv("TMPDIR", str(directory))
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    host_key.cache_clear()


@pytest.fixture(autouse=True)
def own_tmpdir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    use_tmpdir(monkeypatch, tmp_path)
    yield tmp_path
    host_key.cache_clear()  # the next user reads the real key again


def test_a_sealed_state_unseals_to_itself(own_tmpdir: Path) -> None:
    sealed = seal(STATE)
    assert set(sealed) == {"sealed"}
    assert unseal(json.loads(json.dumps(sealed))) == STATE


def test_a_sealed_state_shows_none_of_its_values(own_tmpdir: Path) -> None:
    """What task events, Flower and every reader of Redis see of a state: nothing readable."""
    secret = "build-only-" + os.urandom(8).hex()
    state = {**STATE, "request": {**STATE["request"], "build_env": {"TOKEN": secret}}}
    sealed = [json.dumps(seal(state)) for _ in range(2)]
    for text in sealed:
        assert not {secret, "TOKEN", "acme/app", "host-a", "build_env"} & set(_words(text))
        assert secret not in text
    assert sealed[0] != sealed[1]  # a nonce of its own: equal states do not look equal


def _words(text: str) -> list[str]:
    return [word.strip('"{}:,') for word in text.split()]


def test_the_key_is_made_once_private_and_reused(own_tmpdir: Path) -> None:
    sealed = seal(STATE)
    key_file = own_tmpdir / KEY_FILE
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert len(key_file.read_bytes()) == 32
    host_key.cache_clear()  # another worker process on the same host
    assert unseal(sealed) == STATE
    assert [p.name for p in own_tmpdir.iterdir()] == [KEY_FILE]  # no draft left


def test_a_state_sealed_on_another_host_is_refused(
    monkeypatch: pytest.MonkeyPatch, own_tmpdir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    sealed, signed = seal(STATE), _signed_in_clear(STATE)
    use_tmpdir(monkeypatch, tmp_path_factory.mktemp("other-host"))
    for message in (sealed, signed):
        with pytest.raises(ForgedState, match="did not write"):
            unseal(message)


def _altered(sealed: dict[str, str], change: Any) -> dict[str, str]:
    raw = bytearray(base64.b64decode(sealed["sealed"]))
    return {"sealed": base64.b64encode(bytes(change(raw))).decode()}


def _flip(index: int) -> Any:
    def flip(raw: bytearray) -> bytearray:
        raw[index] ^= 1
        return raw

    return flip


@pytest.mark.parametrize(
    "change",
    [
        _flip(0),
        _flip(12),
        _flip(-1),
        lambda raw: raw[:-1],
        lambda raw: raw + b"\0",
        lambda raw: b"",
    ],
    ids=["nonce", "body", "tag", "cut", "longer", "empty"],
)
def test_an_altered_state_is_refused(own_tmpdir: Path, change: Any) -> None:
    with pytest.raises(ForgedState, match=r"did not write|not a sealed"):
        unseal(_altered(seal(STATE), change))


def test_a_sealed_message_with_an_extra_field_is_refused(own_tmpdir: Path) -> None:
    sealed = seal(STATE)
    with pytest.raises(ForgedState, match="not a sealed build state"):
        unseal({**sealed, "extra": 1})


@pytest.mark.parametrize(
    "message",
    [
        STATE,
        None,
        "a string",
        [],
        {},
        {"state": "{}"},
        {"seal": "0" * 64},
        {"sealed": None},
        {"sealed": 5},
        {"sealed": "not base64!"},
        {"sealed": {"state": "{}"}},
    ],
    ids=[
        "bare-state",
        "none",
        "string",
        "list",
        "empty",
        "no-seal",
        "no-state",
        "sealed-null",
        "sealed-number",
        "sealed-not-base64",
        "sealed-object",
    ],
)
def test_anything_but_a_sealed_message_is_refused(own_tmpdir: Path, message: object) -> None:
    with pytest.raises(ForgedState, match="not a sealed build state"):
        unseal(message)


def test_a_sealed_body_that_is_not_an_object_is_refused(own_tmpdir: Path) -> None:
    sealed_list = seal([1, 2])  # type: ignore[arg-type]
    with pytest.raises(ForgedState, match="not a sealed build state"):
        unseal(sealed_list)


def _signed_in_clear(state: dict[str, Any]) -> dict[str, str]:
    """A state as workers before the encryption sealed it: in clear, with an HMAC."""
    body = json.dumps(state, sort_keys=True, separators=(",", ":"))
    return {"state": body, "seal": hmac.new(host_key(), body.encode(), hashlib.sha256).hexdigest()}


def test_a_state_signed_in_clear_by_this_host_is_still_read(own_tmpdir: Path) -> None:
    """Steps queued before the workers were upgraded carry such states."""
    assert unseal(_signed_in_clear(STATE)) == STATE


@pytest.mark.parametrize(
    "change",
    [
        lambda body: body.replace("acme/app", "acme/evil"),
        lambda body: body + " ",
        lambda body: json.dumps(json.loads(body), sort_keys=False, indent=1),
    ],
    ids=["changed-tag", "trailing-space", "same-json-other-text"],
)
def test_a_state_signed_in_clear_and_altered_is_refused(own_tmpdir: Path, change: Any) -> None:
    signed = _signed_in_clear(STATE)
    with pytest.raises(ForgedState, match="did not write"):
        unseal({"state": change(signed["state"]), "seal": signed["seal"]})
    for forged in (signed["seal"].upper(), signed["seal"][:-1], "", "0" * 64):
        with pytest.raises(ForgedState, match="did not write"):
            unseal({"state": signed["state"], "seal": forged})
    with pytest.raises(ForgedState, match="not a sealed build state"):
        unseal({"state": STATE, "seal": signed["seal"]})


def test_a_key_others_can_read_is_refused(own_tmpdir: Path) -> None:
    key_file = own_tmpdir / KEY_FILE
    key_file.write_bytes(os.urandom(32))
    key_file.chmod(0o644)
    with pytest.raises(InternalError, match="private 32-byte state key"):
        seal(STATE)


def test_a_key_of_the_wrong_size_is_refused(own_tmpdir: Path) -> None:
    key_file = own_tmpdir / KEY_FILE
    key_file.write_bytes(os.urandom(16))
    key_file.chmod(0o600)
    with pytest.raises(InternalError, match="private 32-byte state key"):
        seal(STATE)


def test_a_key_that_is_a_link_is_refused(
    own_tmpdir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "key"
    elsewhere.write_bytes(os.urandom(32))
    elsewhere.chmod(0o600)
    (own_tmpdir / KEY_FILE).symlink_to(elsewhere)
    with pytest.raises(OSError):
        seal(STATE)
