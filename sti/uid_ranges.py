"""s2i's --allowed-uids: the user ids an image may run assemble as, and user names as written.

A range list is comma-separated ranges: `1000` (one uid), `1000-2000`, `1-` (1 and above; the
usual way to forbid root), `-999` (up to 999).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidInput

_RANGE = re.compile(r"^(\d{1,10})?(-)?(\d{1,10})?$")
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,63})?")
_NUMERIC_USER = re.compile(r"([0-9]{1,10})(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,63})?")
# the largest uid or gid the engine runs as (runc refuses more; BuildKit looks a number past
# 2**32 - 1 up as a user name)
MAX_ID = 2**31 - 1


@dataclass(frozen=True)
class UidRange:
    low: int
    high: int | None  # None: no upper end

    def __contains__(self, uid: int) -> bool:
        return uid >= self.low and (self.high is None or uid <= self.high)


def parse_uid_ranges(text: str) -> tuple[UidRange, ...]:
    """The ranges of an --allowed-uids value; InvalidInput naming the part that is not one."""
    ranges = []
    for part in str(text).split(","):
        found = _RANGE.fullmatch(part.strip())
        if not part.strip() or not found or not (found.group(1) or found.group(3)):
            raise InvalidInput(
                f"--allowed-uids {text!r}: {part.strip()!r} is not a uid range "
                "(1000, 1000-2000, 1- or -999)"
            )
        low, dash, high = found.groups()
        if not dash:
            ranges.append(UidRange(int(low), int(low)))
            continue
        ranges.append(UidRange(int(low or 0), int(high) if high else None))
        if high and int(high) < int(low or 0):
            raise InvalidInput(f"--allowed-uids {text!r}: {part.strip()!r} ends before it starts")
    return tuple(ranges)


def uid_allowed(ranges: tuple[UidRange, ...], uid: int) -> bool:
    return any(uid in allowed for allowed in ranges)


def is_plain_user(user: object) -> bool:
    """A USER as images write it: a name or uid, optionally :group or :gid (no space, quote, $
    or line break: it is written into Dockerfiles)."""
    return isinstance(user, str) and _USER.fullmatch(user) is not None


def numeric_uid(user: str) -> int | None:
    """The uid of a USER that names it by number (uid or uid:group), else None: a name means
    whatever the image's /etc/passwd says when the user is looked up."""
    found = _NUMERIC_USER.fullmatch(user)
    return parse_id(found.group(1)) if found else None


def parse_id(text: str) -> int | None:
    """A uid or gid written in decimal digits that the engine takes for one, else None."""
    if not (0 < len(text) <= 10 and text.isascii() and text.isdigit()):
        return None
    number = int(text)
    return number if number <= MAX_ID else None


def check_user(user: str, origin: str) -> str:
    """A USER as an image or --assemble-user writes it: name or uid, optionally :group."""
    if not is_plain_user(user):
        raise InvalidInput(
            f"{origin} {user!r} is not a user (a name or uid, optionally :group or :gid)"
        )
    return user
