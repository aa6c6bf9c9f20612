"""s2i's --allowed-uids: the user ids an image may run assemble as, and user names as written.

A range list is comma-separated ranges: `1000` (one uid), `1000-2000`, `1-` (1 and above; the
usual way to forbid root), `-999` (up to 999).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidInput

_RANGE = re.compile(r"^(\d{1,10})?(-)?(\d{1,10})?$")
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,63})?$")


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


def check_user(user: str, origin: str) -> str:
    """A USER as an image or --assemble-user writes it: name or uid, optionally :group."""
    if not isinstance(user, str) or not _USER.fullmatch(user):
        raise InvalidInput(
            f"{origin} {user!r} is not a user (a name or uid, optionally :group or :gid)"
        )
    return user
