"""Build states travel between a host's workers inside task messages, which anyone who can reach
Redis can write. Each state is sealed with an HMAC key that only this host's workers can read (a
file in the work area, where they already share the builds' work dirs, made on first use), and a
state whose seal does not match is refused before anything in it is used.
"""

from __future__ import annotations

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

from sti.errors import InternalError, InvalidInput

KEY_FILE = ".sti-state-key"
_KEY_BYTES = 32


class ForgedState(InvalidInput):
    """A task message carried a build state this host's workers did not write."""


def seal(state: dict[str, Any]) -> dict[str, str]:
    body = json.dumps(state, sort_keys=True, separators=(",", ":"))
    return {"state": body, "seal": _mac(body)}


def unseal(message: object) -> dict[str, Any]:
    """The state a sealed message carries; ForgedState unless this host's workers sealed it."""
    if not isinstance(message, dict) or set(message) != {"state", "seal"}:
        raise ForgedState("a build step was sent a state that is not a sealed build state")
    body, given = message["state"], message["seal"]
    if not isinstance(body, str) or not isinstance(given, str):
        raise ForgedState("a build step was sent a state that is not a sealed build state")
    if not hmac.compare_digest(_mac(body), given):
        raise ForgedState("a build step was sent a state this host's workers did not write")
    state = json.loads(body)
    if not isinstance(state, dict):
        raise ForgedState("a build step was sent a state that is not a sealed build state")
    return state


def _mac(body: str) -> str:
    return hmac.new(host_key(), body.encode(), hashlib.sha256).hexdigest()


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
