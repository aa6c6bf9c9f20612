"""Environment files as s2i reads them (-E FILE, .s2i/environment): the format, the order in
which values win, and the files a source must not make sti read."""

from __future__ import annotations

import base64
import io
import json
import os
import tarfile
import zipfile
from pathlib import Path

import pytest
import redis

from sti.env_files import (
    MAX_FILE_BYTES,
    archive_environment,
    parse_environment,
    read_environment_file,
    source_environment,
)
from sti.errors import InvalidInput
from sti.model import BuildRequest
from sti.wire import SHARED_QUEUE
from sti_submit.client import StiClient
from tests.services import RedisServer
from tests.unit.cli_requests import local_request


def test_the_s2i_format() -> None:
    text = (
        "# a comment\n\n  NAME=value with spaces  \nURL=http://x/?a=b=c\nEMPTY=\n"
        'QUOTED="kept"\nDOLLAR=$HOME\n\t# indented comment\nNAME=later wins\n'
    )
    assert parse_environment(text, "f") == {
        "NAME": "later wins",
        "URL": "http://x/?a=b=c",
        "EMPTY": "",
        "QUOTED": '"kept"',
        "DOLLAR": "$HOME",
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("JUSTANAME\n", "f line 1: 'JUSTANAME' is not NAME=VALUE"),
        ("A=1\n=value\n", "f line 2: '=value' is not NAME=VALUE"),
        ("1BAD=x\n", "f: environment variable name '1BAD' is invalid"),
        ("MY-VAR=x\n", "f: environment variable name 'MY-VAR' is invalid"),
        ("A=nul\x00byte\n", "f: environment variable A contains a NUL byte"),
    ],
)
def test_a_line_that_is_not_a_variable_is_refused_naming_it(text: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_environment(text, "f")


def test_an_environment_file_must_be_small_regular_utf8(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_text("A=" + "x" * MAX_FILE_BYTES)
    with pytest.raises(InvalidInput, match="is larger than 131072 bytes"):
        read_environment_file(big)
    binary = tmp_path / "binary"
    binary.write_bytes(b"A=\xff\xfe\n")
    with pytest.raises(InvalidInput, match="is not UTF-8 text"):
        read_environment_file(binary)
    with pytest.raises(InvalidInput, match="is not a regular file"):
        read_environment_file(tmp_path)
    with pytest.raises(InvalidInput, match="cannot be read: No such file or directory"):
        read_environment_file(tmp_path / "missing")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(InvalidInput, match="is not a regular file"):  # and no hang
        read_environment_file(fifo)


def test_an_env_file_given_with_e_may_be_a_link(tmp_path: Path) -> None:
    (tmp_path / "real").write_text("A=1\n")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert read_environment_file(tmp_path / "link") == {"A": "1"}


def _source(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    (root / ".s2i").mkdir(parents=True)
    return root


def test_a_sources_environment_is_read_when_present(tmp_path: Path) -> None:
    root = _source(tmp_path)
    assert source_environment(root) == {}
    assert source_environment(tmp_path / "nothing-here") == {}
    (root / ".s2i" / "environment").write_text("FROM_SOURCE=1\n")
    assert source_environment(root) == {"FROM_SOURCE": "1"}


@pytest.mark.parametrize("target", ["/etc/passwd", "../outside"])
def test_a_sources_environment_that_is_a_link_is_refused(tmp_path: Path, target: str) -> None:
    root = _source(tmp_path)
    (tmp_path / "outside").write_text("SECRET=from outside\n")
    (root / ".s2i" / "environment").symlink_to(target)
    with pytest.raises(InvalidInput, match=r"\.s2i/environment in the source is a symbolic link"):
        source_environment(root)


def test_a_sources_s2i_directory_that_is_a_link_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "src"
    root.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "environment").write_text("SECRET=x\n")
    (root / ".s2i").symlink_to(elsewhere)
    with pytest.raises(InvalidInput, match=r"\.s2i in the source is a symbolic link"):
        source_environment(root)


def test_a_sources_environment_that_is_a_fifo_or_a_directory_is_refused(tmp_path: Path) -> None:
    root = _source(tmp_path)
    os.mkfifo(root / ".s2i" / "environment")
    with pytest.raises(InvalidInput, match="is not a regular file"):
        source_environment(root)
    (root / ".s2i" / "environment").unlink()
    (root / ".s2i" / "environment").mkdir()
    with pytest.raises(InvalidInput, match="is not a regular file"):
        source_environment(root)


def test_e_files_apply_in_order_and_e_options_win(tmp_path: Path) -> None:
    (tmp_path / "one").write_text("A=one\nB=one\nC=one\n")
    (tmp_path / "two").write_text("B=two\nC=two\n")
    options = ["-E", str(tmp_path / "one"), "--environment-file", str(tmp_path / "two")]
    submitted = local_request(tmp_path, *options, "-e", "C=option")
    assert submitted.request is not None, submitted.output
    assert submitted.request.env == {"A": "one", "B": "two", "C": "option"}


def test_a_bad_e_file_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / "bad").write_text("not a variable\n")
    submitted = local_request(tmp_path, "-E", str(tmp_path / "bad"))
    assert submitted.exit_code == 2
    assert "line 1: 'not a variable' is not NAME=VALUE" in submitted.output
    submitted = local_request(tmp_path, "-E", str(tmp_path / "missing"))
    assert submitted.exit_code == 2
    assert "cannot be read" in submitted.output


def test_labels_a_display_name_and_a_description_reach_the_request(tmp_path: Path) -> None:
    options = ["--label", "team=web", "--label", "url=http://x/?a=b", "-n", "Shop"]
    request = local_request(tmp_path, *options, "--description", "The shop").request
    assert request is not None
    assert request.labels == {"team": "web", "url": "http://x/?a=b"}
    assert (request.display_name, request.description) == ("Shop", "The shop")


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("nolabel", "label option 'nolabel' is not NAME=VALUE"),
        ("=x", "label name '' is invalid"),
        ("io.sti.build-id=forged", "label io.sti.build-id is sti's own"),
    ],
)
def test_a_bad_label_is_bad_input(tmp_path: Path, option: str, message: str) -> None:
    submitted = local_request(tmp_path, "--label", option)
    assert submitted.exit_code == 2
    assert message in submitted.output


def _tar(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            archive.addfile(info)
    return path


def test_an_archives_environment_is_read_below_its_context_dir(tmp_path: Path) -> None:
    archive = _tar(
        tmp_path / "app.tar.gz",
        {
            "./.s2i/environment": b"WHERE=root\n",
            "web/.s2i/environment": b"WHERE=first\n",
            "web/main.py": b"print()\n",
            "./web/.s2i/environment": b"WHERE=web\n",  # the last one wins, as extracted
        },
    )
    assert archive_environment(archive) == {"WHERE": "root"}
    assert archive_environment(archive, "web") == {"WHERE": "web"}
    assert archive_environment(archive, "other") == {}
    with zipfile.ZipFile(tmp_path / "app.zip", "w") as zipped:
        zipped.writestr(".s2i/environment", "MODE=zip\n")
    assert archive_environment(tmp_path / "app.zip") == {"MODE": "zip"}
    (tmp_path / "notes.txt").write_text("A=B\n")
    assert archive_environment(tmp_path / "notes.txt") == {}


def test_an_archives_environment_that_is_a_link_or_too_large_is_refused(tmp_path: Path) -> None:
    linked = _tar(tmp_path / "l.tgz", {}, links={".s2i/environment": "/etc/passwd"})
    with pytest.raises(InvalidInput, match="not a regular file"):
        archive_environment(linked)
    large = _tar(tmp_path / "big.tar.gz", {".s2i/environment": b"A=" + b"x" * MAX_FILE_BYTES})
    with pytest.raises(InvalidInput, match="larger than"):
        archive_environment(large)
    (tmp_path / "broken.tar.gz").write_bytes(b"not gzip at all")
    with pytest.raises(InvalidInput, match="not a readable archive"):
        archive_environment(tmp_path / "broken.tar.gz")


def test_an_uploaded_archives_environment_reaches_the_build_under_e(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """The message sti-submit queues (on a database no worker serves) carries it."""
    archive = _tar(tmp_path / "app.tar.gz", {".s2i/environment": b"A=archive\nB=archive\n"})
    url = redis_server.url(11)
    redis_client = redis.Redis.from_url(url)
    client = StiClient(url)
    try:
        request = BuildRequest(str(archive), "img", "acme/app", env={"B": "option"})
        client.submit_build(request)
    finally:
        client.close()
    queued = [json.loads(m) for m in redis_client.lrange(SHARED_QUEUE, 0, -1)]
    (message,) = [m for m in queued if m["headers"]["id"] == request.build_id]
    _, sent, _ = json.loads(base64.b64decode(message["body"]))
    assert sent["env"] == {"A": "archive", "B": "option"}
    redis_client.flushdb()
    redis_client.close()
