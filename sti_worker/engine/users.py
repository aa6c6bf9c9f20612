"""Who runs assemble (s2i): --assemble-user, else the image's io.openshift.s2i.assemble-user
label, else its USER; as numbers, names looked up in the image's /etc/passwd and /etc/group;
and --allowed-uids, which refuses an image that would run assemble, or one of its ONBUILD
triggers, as a uid outside it, and has assemble run as the uid it judged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sti.errors import InvalidImage
from sti.model import BuildRequest
from sti.uid_ranges import (
    UidRange,
    check_user,
    is_plain_user,
    numeric_uid,
    parse_id,
    parse_uid_ranges,
    uid_allowed,
)

from .docker_host import DockerHost, FileTooLarge

ASSEMBLE_USER_LABEL = "io.openshift.s2i.assemble-user"
_MAX_ACCOUNTS_BYTES = 1024 * 1024
# trigger instructions that run nothing and leave the user as it is (any other, RUN or one
# the engine may read otherwise, is taken for a command)
_INERT_TRIGGERS = frozenset(
    {"add", "arg", "cmd", "copy", "entrypoint", "env", "expose", "healthcheck", "label"}
    | {"maintainer", "shell", "stopsignal", "volume", "workdir"}
)


@dataclass(frozen=True)
class AssembleUser:
    written: str  # as given, labelled or the image's USER ("" for the image's root)
    ids: tuple[int, int] | None  # uid and gid, when known
    own: bool  # the image's USER itself, run as written (never under --allowed-uids)


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
    image_user = image_user_of(config, name)
    if given:
        written = given
    elif label:
        written = check_user(str(label), f"the {ASSEMBLE_USER_LABEL} label of {name}")
    else:
        written = image_user
    # a uid judged is the uid that runs: a name would be looked up again when assemble starts,
    # by the engine's reader of /etc/passwd (which parses it its own way), and after the
    # image's ONBUILD triggers (which may replace it)
    own = written == image_user and not allowed_uids
    if own:
        return AssembleUser(written, None, own)
    ids = host.image_fact(
        image_id, ("user", written), lambda: _ids(host, image_id, written, build_id)
    )
    if allowed_uids:
        _check_allowed(name, written, ids, allowed_uids)
        if config.get("OnBuild"):
            check_onbuild_triggers(name, config, image_user, allowed_uids)
    return AssembleUser(written, ids, own)


def judged_ids(
    host: DockerHost,
    image_id: str,
    config: Mapping[str, Any],
    name: str,
    request: BuildRequest,
    build_id: str,
) -> tuple[int, int]:
    """The uid and gid that run a script of image name under the request's --allowed-uids (its
    assemble user, judged as a builder's is), or InvalidImage; build_id names what it runs."""
    assert request.allowed_uids, "only --allowed-uids judges"
    who = assemble_user(
        host,
        image_id,
        config,
        name=name,
        given=request.assemble_user,
        allowed_uids=request.allowed_uids,
        build_id=build_id,
    )
    assert who.ids is not None, "judged: _check_allowed refuses a user without ids"
    return who.ids


def image_user_of(config: Mapping[str, Any], name: str) -> str:
    """The image's USER as written ("" for root); one that is no plain user is refused here, as
    sti writes it into Dockerfiles and commits (and no engine would find such a user)."""
    user = config.get("User") or ""
    if user and not is_plain_user(user):
        raise InvalidImage(
            f"{name} has the USER {str(user)[:200]!r}, which is not a user "
            "(a name or uid, optionally :group or :gid)"
        )
    return str(user)


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


def check_onbuild_triggers(
    name: str, config: Mapping[str, Any], image_user: str, allowed: str
) -> None:
    """An image's ONBUILD triggers, which a docker build FROM it runs before anything else
    (sti's -m build on an engine builder does; a container of it does not), held to
    allowed as s2i holds them: every RUN runs as an allowed uid written by number, the last
    USER trigger's, else the image's USER (a name means what the image's /etc/passwd says by
    then, as the engine reads it: an earlier trigger may have replaced the file, and the
    engine's reader parses it its own way). A trigger of more than one line is refused: the
    legacy builder runs each of its lines."""
    ranges = parse_uid_ranges(allowed)
    runs_as = image_user or "root (no USER)"
    uid = numeric_uid(image_user) if image_user else 0
    for trigger in config.get("OnBuild") or []:
        keyword, argument = _trigger_instruction(name, trigger)
        if keyword == "user":
            uid, runs_as = numeric_uid(argument), argument
            if uid is None or not uid_allowed(ranges, uid):
                raise InvalidImage(
                    f"{name} has the trigger ONBUILD {trigger!r}, which a docker build FROM it "
                    f"runs: {_not_allowed(argument, uid, allowed)}"
                )
        elif keyword not in _INERT_TRIGGERS and not _allows(ranges, uid):
            raise InvalidImage(
                f"{name} has the trigger ONBUILD {trigger!r}, which a docker build FROM it runs "
                f"as {_not_allowed(runs_as, uid, allowed)}"
            )


def _trigger_instruction(name: str, trigger: object) -> tuple[str, str]:
    """A trigger's instruction keyword (lower case) and argument, split as the engine's
    parser splits them: leading white space (and a byte order mark) dropped, the keyword up to
    the first white space."""
    if not isinstance(trigger, str) or "\n" in trigger or "\r" in trigger:
        raise InvalidImage(
            f"{name} has an ONBUILD trigger of more than one line ({str(trigger)[:200]!r}), "
            "which --allowed-uids cannot check"
        )
    parts = trigger.lstrip("\ufeff").strip().split(None, 1)
    return (parts[0].lower() if parts else "", parts[1].strip() if len(parts) > 1 else "")


def _allows(ranges: tuple[UidRange, ...], uid: int | None) -> bool:
    return uid is not None and uid_allowed(ranges, uid)


def _not_allowed(user: str, uid: int | None, allowed: str) -> str:
    if uid is None:
        return f"{user!r}, not a uid that --allowed-uids {allowed} can check"
    return f"{user} (uid {uid}), outside --allowed-uids {allowed}"


def _ids(host: DockerHost, image_id: str, user: str, build_id: str) -> tuple[int, int] | None:
    """user's uid and gid in the image (a uid without a group: its primary group, else 0);
    None if it names a user or group the image does not know, or a number the engine does not
    take for an id (BuildKit looks such a number up as a name)."""
    if not user:
        return 0, 0
    name, _, group = user.partition(":")
    uid, gid = parse_id(name), parse_id(group) if group else None
    if (uid is None and _is_number(name)) or (gid is None and _is_number(group)):
        return None
    if uid is not None and gid is not None:
        return uid, gid
    accounts = _accounts(host, image_id, "/etc/passwd", build_id)
    if uid is None:
        account = next((a for a in accounts if a.name == name), None)
        if account is None:
            return None
        uid = account.id
    else:
        account = next((a for a in accounts if a.id == uid), None)
    if gid is not None:
        return uid, gid
    if not group:
        return uid, account.group if account and account.group is not None else 0
    groups = _accounts(host, image_id, "/etc/group", build_id)
    found = next((a.id for a in groups if a.name == group), None)
    return (uid, found) if found is not None else None


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit()


@dataclass(frozen=True)
class _Account:
    """A line of /etc/passwd or /etc/group: the name, its id, and (passwd) its primary group."""

    name: str
    id: int
    group: int | None


def _accounts(host: DockerHost, image_id: str, path: str, build_id: str) -> list[_Account]:
    """The accounts of an account file of the image whose id the engine takes (none if the
    image has no such file)."""
    try:
        data = host.image_file(
            image_id, path, max_bytes=_MAX_ACCOUNTS_BYTES, build_id=build_id, role="user-check"
        )
    except FileTooLarge:
        return []  # no real account file is this large
    found = []
    for line in (data or b"").decode(errors="replace").splitlines():
        fields = line.split(":")
        known = parse_id(fields[2]) if len(fields) > 2 and not line.startswith("#") else None
        if known is not None:
            group = parse_id(fields[3]) if len(fields) > 3 else None
            found.append(_Account(fields[0], known, group))
    return found
