"""--allowed-uids ranges and --assemble-user values as s2i writes them."""

from __future__ import annotations

import pytest

from sti.errors import InvalidInput
from sti.model import BuildRequest
from sti.uid_ranges import parse_uid_ranges, uid_allowed


@pytest.mark.parametrize(
    ("text", "allowed", "refused"),
    [
        ("1-", [1, 1001, 2**31], [0]),
        ("1000-2000", [1000, 1500, 2000], [0, 999, 2001]),
        ("-999", [0, 999], [1000]),
        ("0,1000-", [0, 1000], [1, 999]),
        ("1001", [1001], [1000, 1002]),
    ],
)
def test_ranges(text: str, allowed: list[int], refused: list[int]) -> None:
    ranges = parse_uid_ranges(text)
    assert all(uid_allowed(ranges, uid) for uid in allowed)
    assert not any(uid_allowed(ranges, uid) for uid in refused)


@pytest.mark.parametrize("text", ["", "-", "a-b", "1--2", "2000-1000", "1,,2", "1-2-3", " "])
def test_what_is_not_a_range_is_refused(text: str) -> None:
    with pytest.raises(InvalidInput, match="--allowed-uids"):
        parse_uid_ranges(text)


@pytest.mark.parametrize("user", ["", "a b", "app;rm", "-u", "app:", ":0", "x" * 65, "a\nb"])
def test_what_is_not_a_user_is_refused(user: str) -> None:
    with pytest.raises(InvalidInput, match="--assemble-user"):
        BuildRequest("src", "img", "tag", assemble_user=user)


def test_requests_carry_them() -> None:
    request = BuildRequest("src", "img", "tag", assemble_user="1001:0", allowed_uids="1-")
    again = BuildRequest.from_json(request.to_json())
    assert (again.assemble_user, again.allowed_uids) == ("1001:0", "1-")
