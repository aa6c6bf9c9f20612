"""sti+upload:// references: what the client writes, the worker reads back exactly; anything
else is refused before a digest or name is used."""

from __future__ import annotations

import pytest

from sti.errors import InvalidInput
from sti.upload_refs import SCHEME, UploadRef
from sti_worker.engine.sources import check_file_name

DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("ref", "text"),
    [
        (UploadRef(DIGEST, "dir"), f"{SCHEME}{DIGEST}/dir"),
        (UploadRef(DIGEST, "archive", "app.tar.gz"), f"{SCHEME}{DIGEST}/archive/app.tar.gz"),
        (UploadRef(DIGEST, "file", "my app.war"), f"{SCHEME}{DIGEST}/file/my%20app.war"),
        (UploadRef(DIGEST, "file", "100%.jar"), f"{SCHEME}{DIGEST}/file/100%25.jar"),
        (UploadRef(DIGEST, "file", "naïve.bin"), f"{SCHEME}{DIGEST}/file/na%C3%AFve.bin"),
    ],
)
def test_a_reference_is_written_and_parsed_back_exactly(ref: UploadRef, text: str) -> None:
    assert str(ref) == text
    assert UploadRef.parse(text) == ref


def test_a_slash_in_a_name_is_written_escaped_so_it_adds_no_part() -> None:
    ref = UploadRef(DIGEST, "file", "../../etc/passwd")
    assert str(ref) == f"{SCHEME}{DIGEST}/file/..%2F..%2Fetc%2Fpasswd"
    assert UploadRef.parse(str(ref)) == ref


@pytest.mark.parametrize(
    "text",
    [
        "",
        f"https://example.com/{DIGEST}/dir",
        f"sti+upload:/{DIGEST}/dir",
        f"STI+UPLOAD://{DIGEST}/dir",
        f"{SCHEME}/dir",
        f"{SCHEME}sha256:abc/dir",
        f"{SCHEME}{DIGEST.upper()}/dir",
        f"{SCHEME}../../dir",
        f"{SCHEME}../{DIGEST}/dir",
        f"{SCHEME}{DIGEST}",
        f"{SCHEME}{DIGEST}/",
        f"{SCHEME}{DIGEST}/..",
        f"{SCHEME}{DIGEST}/../dir",
        f"{SCHEME}{DIGEST}/zip/app.zip",
        f"{SCHEME}{DIGEST}/dir/extra",
        f"{SCHEME}{DIGEST}/dir/../../etc",
        f"{SCHEME}{DIGEST}/file",
        f"{SCHEME}{DIGEST}/file/",
        f"{SCHEME}{DIGEST}/archive",
    ],
)
def test_malformed_and_hostile_references_are_refused(text: str) -> None:
    with pytest.raises(InvalidInput):
        UploadRef.parse(text)


@pytest.mark.parametrize(
    "text",
    [
        f"{SCHEME}{DIGEST}/file/../etc/passwd",
        f"{SCHEME}{DIGEST}/file/..%2F..%2Fetc%2Fpasswd",
        f"{SCHEME}{DIGEST}/file/a/b",
        f"{SCHEME}{DIGEST}/file/..",
        f"{SCHEME}{DIGEST}/file/x%00y",
    ],
)
def test_a_file_name_with_path_parts_never_reaches_the_disk(text: str) -> None:
    """The name of a single-file upload becomes /tmp/src/<name>: refused when parsed or, at the
    latest, by the worker's file-name check before it is used."""
    with pytest.raises(InvalidInput):
        check_file_name(UploadRef.parse(text).name)
