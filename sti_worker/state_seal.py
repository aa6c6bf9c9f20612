"""Build states travel between a host's workers inside task messages, which anyone who can reach
Redis can read and write, and which the task events (Flower, `celery events`) show. Each state
is encrypted and authenticated (AES-GCM) with a key that only this host's workers can read (a
file in the work area, where they already share the builds' work dirs, made on first use): a
state carries --build-env values and, before its source is fetched, the source URL's
credentials, and a state this host's workers did not write is refused before anything in it is
used.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import os
import secrets
import stat
import tempfile
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sti.errors import InternalError, InvalidInput

KEY_FILE = ".sti-state-key"
_KEY_BYTES = 32
_NONCE_BYTES = 12  # random per state: far fewer than 2**32 states are sealed under one key
_SEALED = "sealed"
_PURPOSE = b"sti build state, AES-GCM"
_NOT_SEALED = "a build step was sent a state that is not a sealed build state"
_NOT_OURS = "a build step was sent a state this host's workers did not write"


class ForgedState(InvalidInput):
    """A task message carried a build state this host's workers did not write."""


def seal(state: dict[str, Any]) -> dict[str, str]:
    body = json.dumps(state, sort_keys=True, separators=(",", ":")).encode()
    nonce = secrets.token_bytes(_NONCE_BYTES)
    box = _cipher(host_key()).encrypt(nonce, body, _PURPOSE)
    return {_SEALED: base64.b64encode(nonce + box).decode()}


def unseal(message: object) -> dict[str, Any]:
    """The state a sealed message carries; ForgedState unless this host's workers sealed it."""
    if isinstance(message, dict) and set(message) == {"state", "seal"}:
        body = _signed_body(message["state"], message["seal"])
    elif isinstance(message, dict) and set(message) == {_SEALED}:
        body = _opened_body(message[_SEALED])
    else:
        raise ForgedState(_NOT_SEALED)
    state = json.loads(body)
    if not isinstance(state, dict):
        raise ForgedState(_NOT_SEALED)
    return state


def _opened_body(sealed: object) -> bytes:
    if not isinstance(sealed, str):
        raise ForgedState(_NOT_SEALED)
    try:
        raw = base64.b64decode(sealed, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ForgedState(_NOT_SEALED) from error
    nonce, box = raw[:_NONCE_BYTES], raw[_NONCE_BYTES:]
    try:
        return _cipher(host_key()).decrypt(nonce, box, _PURPOSE)
    except (InvalidTag, ValueError) as error:
        raise ForgedState(_NOT_OURS) from error


def _signed_body(body: object, given: object) -> str:
    """A state signed in clear (HMAC-SHA256 with the host key itself), as workers before the
    encryption sealed them: for steps queued across an upgrade."""
    if not isinstance(body, str) or not isinstance(given, str):
        raise ForgedState(_NOT_SEALED)
    expected = hmac.new(host_key(), body.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, given):
        raise ForgedState(_NOT_OURS)
    return body


@functools.cache
def _cipher(key: bytes) -> AESGCM:
    # a key of its own, derived from the host key, which signed states in clear before
    return AESGCM(hmac.new(key, _PURPOSE, hashlib.sha256).digest())


@functools.cache
def host_key() -> bytes:
    """The key in TMPDIR, made once by whichever worker comes first (written aside, then linked
    into place, so no worker reads half a key); refused unless only this user can read it."""
    path = Path(tempfile.gettempdir()) / KEY_FILE
    if not path.exists():
        draft = path.with_name(f"{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(secrets.token_bytes(_KEY_BYTES))
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(descriptor, "rb") as file:
        info = os.fstat(file.fileno())
        key = file.read()
    private = stat.S_ISREG(info.st_mode) and not info.st_mode & 0o077
    if info.st_uid != os.getuid() or not private or len(key) != _KEY_BYTES:
        raise InternalError(f"{path} is not this user's private {_KEY_BYTES}-byte state key")
    return key
