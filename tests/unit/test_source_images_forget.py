"""The source images beyond the limit are the oldest by the engine's nanoseconds: RFC 3339
fractions of any length and any zone, not the text's order nor the list's whole seconds."""

from __future__ import annotations

from sti.model import SOURCE_REPOSITORY
from sti_worker.engine.source_images import forget_older
from tests.unit.fake_docker import FakeDocker


class _Stamped(FakeDocker):
    def __init__(self, stamps: dict[str, str], keep: int) -> None:
        super().__init__(source_images_keep=keep)
        self.stamps = stamps
        for name in stamps:
            self.add_image(f"sha256:{name}", None, f"{SOURCE_REPOSITORY}:{name}")

    def created(self, ref: str) -> str | None:
        return self.stamps.get(ref.rpartition(":")[2])


def _left(engine: FakeDocker) -> set[str]:
    return {ref.rpartition(":")[2] for ref in engine.references}


def test_the_oldest_by_nanoseconds_go_first() -> None:
    engine = _Stamped(
        {
            # as text, "12.1234Z" sorts after "12.12345Z": in time it is before
            "a": "2026-12-07T10:00:12.1234Z",
            "b": "2026-12-07T10:00:12.12345Z",
            "c": "2026-12-07T10:00:12Z",
            "d": "2026-12-07T11:00:12.5+01:00",  # 10:00:12.5 UTC: the newest
            "e": "not a time",  # oldest of all
        },
        keep=2,
    )
    forget_older(engine.as_host())
    assert _left(engine) == {"b", "d"}


def test_nothing_is_asked_or_removed_within_the_limit() -> None:
    engine = _Stamped({"a": "2026-12-07T10:00:00Z", "b": "2026-12-07T10:00:01Z"}, keep=2)
    forget_older(engine.as_host())
    assert _left(engine) == {"a", "b"}
    assert [name for name, _ in engine.calls] == ["references_in"]


def test_one_removed_meanwhile_is_passed_over() -> None:
    engine = _Stamped({"a": "2026-12-07T10:00:00Z", "b": "2026-12-07T10:00:01Z"}, keep=1)
    engine.references[f"{SOURCE_REPOSITORY}:gone"] = "sha256:gone"  # listed, no longer there
    forget_older(engine.as_host())
    assert _left(engine) == {"b", "gone"}


def test_the_base_a_kept_copy_laid_changes_over_is_kept_too() -> None:
    """A delta's changes laid over its base's copy make an image whose parent is that copy; the
    next delta of the directory is laid over the same base (deltas are against the last whole
    upload): it stays while such a copy is kept, however old."""
    engine = _Stamped(
        {
            "base": "2026-12-07T10:00:00Z",
            "other": "2026-12-07T10:00:01Z",
            "layered": "2026-12-07T10:00:02Z",
            "newest": "2026-12-07T10:00:03Z",
        },
        keep=2,
    )
    engine.parents["sha256:layered"] = "sha256:base"
    forget_older(engine.as_host())
    assert _left(engine) == {"base", "layered", "newest"}
    engine.references.pop(f"{SOURCE_REPOSITORY}:layered")  # once no kept copy is laid over it
    engine.stamps["newer"] = "2026-12-07T10:00:04Z"
    engine.add_image("sha256:newer", None, f"{SOURCE_REPOSITORY}:newer")
    forget_older(engine.as_host())
    assert _left(engine) == {"newest", "newer"}
