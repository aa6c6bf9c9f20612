"""Sealed build states: a host's workers read back exactly the states they sealed, and refuse
any other (forged, altered, re-wrapped) before using a field of it. The key lives in TMPDIR;
these tests point TMPDIR at a directory of their own and forget the cached key around each."""

from __future__ import annotations

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
    assert set(sealed) == {"state", "seal"}
    assert unseal(json.loads(json.dumps(sealed))) == STATE


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
    sealed = seal(STATE)
    use_tmpdir(monkeypatch, tmp_path_factory.mktemp("other-host"))
    with pytest.raises(ForgedState, match="did not write"):
        unseal(sealed)


@pytest.mark.parametrize(
    "change",
    [
        lambda body: body.replace("acme/app", "acme/evil"),
        lambda body: body.replace('"host-a"', '"host-b"'),
        lambda body: body + " ",
        lambda body: json.dumps(json.loads(body), sort_keys=False, indent=1),
    ],
    ids=["changed-tag", "changed-host", "trailing-space", "same-json-other-text"],
)
def test_an_altered_state_is_refused(own_tmpdir: Path, change: Any) -> None:
    sealed = seal(STATE)
    altered = {"state": change(sealed["state"]), "seal": sealed["seal"]}
    with pytest.raises(ForgedState):
        unseal(altered)


def test_an_altered_seal_is_refused(own_tmpdir: Path) -> None:
    sealed = seal(STATE)
    flipped = ("0" if sealed["seal"][0] != "0" else "1") + sealed["seal"][1:]
    for forged in (flipped, sealed["seal"].upper(), sealed["seal"][:-1], "", "0" * 64):
        with pytest.raises(ForgedState):
            unseal({"state": sealed["state"], "seal": forged})


def test_a_sealed_message_with_an_extra_field_is_refused(own_tmpdir: Path) -> None:
    sealed = seal(STATE)
    with pytest.raises(ForgedState, match="not a sealed build state"):
        unseal({**sealed, "extra": 1})


@pytest.mark.parametrize(
    "message",
    [STATE, None, "a string", [], {}, {"state": "{}"}, {"seal": "0" * 64}],
    ids=["bare-state", "none", "string", "list", "empty", "no-seal", "no-state"],
)
def test_anything_but_a_sealed_message_is_refused(own_tmpdir: Path, message: object) -> None:
    with pytest.raises(ForgedState, match="not a sealed build state"):
        unseal(message)


def test_fields_of_the_wrong_type_are_refused(own_tmpdir: Path) -> None:
    sealed = seal(STATE)
    with pytest.raises(ForgedState, match="not a sealed build state"):
        unseal({"state": STATE, "seal": sealed["seal"]})
    with pytest.raises(ForgedState, match="not a sealed build state"):
        unseal({"state": sealed["state"], "seal": None})


def test_a_sealed_body_that_is_not_an_object_is_refused(own_tmpdir: Path) -> None:
    sealed_list = seal([1, 2])  # type: ignore[arg-type]
    with pytest.raises(ForgedState, match="not a sealed build state"):
        unseal(sealed_list)


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
