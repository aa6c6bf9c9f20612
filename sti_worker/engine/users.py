"""Who runs assemble (s2i): --assemble-user, else the image's io.openshift.s2i.assemble-user
label, else its USER; as numbers, names looked up in the image's /etc/passwd and /etc/group;
and --allowed-uids, which refuses an image that would run assemble as a uid outside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sti.errors import InvalidImage
from sti.uid_ranges import check_user, parse_uid_ranges, uid_allowed

from .docker_host import DockerHost, FileTooLarge

ASSEMBLE_USER_LABEL = "io.openshift.s2i.assemble-user"
_MAX_ACCOUNTS_BYTES = 1024 * 1024


@dataclass(frozen=True)
class AssembleUser:
    written: str  # as given, labelled or the image's USER ("" for the image's root)
    ids: tuple[int, int] | None  # uid and gid, when known
    own: bool  # the image's USER itself (nothing to switch)


def assemble_user(
    host: DockerHost,
    image_id: str,
    config: Mapping[str, Any],
    *,
    name: str,
    given: str | None,
    allowed_uids: str | None,
    build_id: str,
) -> AssembleUser:
    """Who runs assemble in image name, checked against allowed_uids when given."""
    label = (config.get("Labels") or {}).get(ASSEMBLE_USER_LABEL)
    image_user = str(config.get("User") or "")
    if given:
        written = given
    elif label:
        written = check_user(str(label), f"the {ASSEMBLE_USER_LABEL} label of {name}")
    else:
        written = image_user
    own = written == image_user
    if own and not allowed_uids:
        return AssembleUser(written, None, own)
    ids = host.image_fact(
        image_id, ("user", written), lambda: _ids(host, image_id, written, build_id)
    )
    if allowed_uids:
        _check_allowed(name, written, ids, allowed_uids)
    return AssembleUser(written, ids, own)


def _check_allowed(name: str, user: str, ids: tuple[int, int] | None, allowed: str) -> None:
    shown = user or "root (no USER)"
    if ids is None:
        raise InvalidImage(
            f"{name} would run assemble as {shown}, which is neither a number nor a user of "
            f"its /etc/passwd; --allowed-uids {allowed} needs a uid"
        )
    if not uid_allowed(parse_uid_ranges(allowed), ids[0]):
        raise InvalidImage(
            f"{name} would run assemble as {shown} (uid {ids[0]}), outside --allowed-uids {allowed}"
        )


def _ids(host: DockerHost, image_id: str, user: str, build_id: str) -> tuple[int, int] | None:
    """user's uid and gid in the image (a uid without a group: its primary group, else 0);
    None if it names a user or group the image does not know."""
    if not user:
        return 0, 0
    name, _, group = user.partition(":")
    known = name.isdigit() and group.isdigit()
    passwd = [] if known else _accounts(host, image_id, "/etc/passwd", build_id)
    account = next(
        (f for f in passwd if len(f) > 3 and name in (f[0], f[2]) and f[2].isdigit()), None
    )
    if name.isdigit():
        uid = int(name)
    elif account:
        uid = int(account[2])
    else:
        return None
    if not group:
        return uid, int(account[3]) if account and account[3].isdigit() else 0
    if group.isdigit():
        return uid, int(group)
    groups = _accounts(host, image_id, "/etc/group", build_id)
    found = next((f for f in groups if len(f) > 2 and f[0] == group and f[2].isdigit()), None)
    return (uid, int(found[2])) if found else None


def _accounts(host: DockerHost, image_id: str, path: str, build_id: str) -> list[list[str]]:
    """The colon-separated lines of an account file of the image (none if it has none)."""
    try:
        data = host.image_file(
            image_id, path, max_bytes=_MAX_ACCOUNTS_BYTES, build_id=build_id, role="user-check"
        )
    except FileTooLarge:
        return []  # no real account file is this large
    text = (data or b"").decode(errors="replace")
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]
