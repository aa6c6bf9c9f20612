"""--scripts-url forms, and the scripts fetched for one (http, an upload, file:// in-process),
tried as a hostile submitter would: names out of the set, links, sizes, internal addresses."""

from __future__ import annotations

import functools
import http.server
import io
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sti.errors import InvalidInput, SourceFetchFailed
from sti.scripts_urls import MAX_SCRIPT_BYTES, check_scripts_url, local_directory, pack_scripts
from sti_worker.engine.guarded_http import RefusedAddress
from sti_worker.engine.sources import SourcePolicy, Sources
from sti_worker.engine.url_scripts import FETCHED_DIR, fetch_scripts


@pytest.mark.parametrize(
    "url",
    [
        "image:///usr/libexec/s2i",
        "http://scripts.example/s2i",
        "https://scripts.example:8443/a/b/",
        "file:///home/me/s2i",
        "file://localhost/home/me/s2i",
        "sti+scripts://sha256:" + "a" * 64,
    ],
)
def test_the_forms_sti_takes(url: str) -> None:
    assert check_scripts_url(url) == url


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("image://relative", "image:///a/plain/directory"),
        ("image:///a/../etc", "image:///a/plain/directory"),
        ("ftp://scripts.example/s2i", "not image:///dir"),
        ("/usr/libexec/s2i", "not image:///dir"),
        ("http://user:secret@scripts.example/s2i", "credentials"),
        ("http://scripts.example/s2i?x=1", "no query"),
        ("http:///s2i", "needs a host"),
        ("http://scripts.example/s 2i", "space or a control"),
        ("http://scripts.example/s2i\n", "space or a control"),
        ("file://otherhost/s2i", "file:///an/absolute/directory"),
        ("file:///a/%2e%2e/etc", "file:///an/absolute/directory"),
        ("sti+scripts://sha256:beef", "digest"),
        ("x" * 3000, "at most 2048"),
    ],
)
def test_what_it_refuses(url: str, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason):
        check_scripts_url(url)


def test_local_directory_decodes_the_path() -> None:
    assert local_directory("file:///home/me/my%20scripts/") == Path("/home/me/my scripts/")


def _scripts_dir(root: Path, **scripts: str) -> Path:
    root.mkdir(exist_ok=True)
    for name, text in scripts.items():
        (root / name.replace("_", "-")).write_text(text)
    return root


def test_pack_scripts_takes_the_known_names_as_0755(tmp_path: Path) -> None:
    root = _scripts_dir(tmp_path / "s", assemble="a", run="r", save_artifacts="s", other="o")
    packed, names = pack_scripts(root)
    assert names == ("assemble", "run", "save-artifacts")
    with tarfile.open(fileobj=io.BytesIO(packed)) as tar:
        assert [(m.name, m.mode, m.isreg()) for m in tar] == [(name, 0o755, True) for name in names]


def test_pack_scripts_refuses_an_empty_or_odd_directory(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="has none of"):
        pack_scripts(_scripts_dir(tmp_path / "empty"))
    odd = _scripts_dir(tmp_path / "odd")
    (odd / "assemble").mkdir()
    with pytest.raises(InvalidInput, match="not a regular file"):
        pack_scripts(odd)
    with pytest.raises(InvalidInput, match="not a directory"):
        pack_scripts(tmp_path / "missing")


def _tar(*members: tarfile.TarInfo, data: bytes = b"#!/bin/sh\n") -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for member in members:
            if member.isreg():
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
            else:
                tar.addfile(member)
    return out.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def _uploads(blob: bytes) -> Sources:
    return Sources(uploaded_scripts=lambda digest: iter([blob]))


UPLOADED = "sti+scripts://sha256:" + "0" * 64


def test_an_uploaded_tar_of_scripts_lands_in_the_work_dir(tmp_path: Path) -> None:
    blob = _tar(_member("assemble"), _member("run"))
    assert fetch_scripts(UPLOADED, tmp_path, _uploads(blob), print) == ("assemble", "run")
    written = tmp_path / FETCHED_DIR / "assemble"
    assert written.read_bytes() == b"#!/bin/sh\n"
    assert written.stat().st_mode & 0o777 == 0o755


@pytest.mark.parametrize(
    "member",
    [
        _member("../assemble"),
        _member("/assemble"),
        _member("bin/assemble"),
        _member("Dockerfile"),
        _member("assemble", tarfile.SYMTYPE, "/etc/shadow"),
        _member("assemble", tarfile.LNKTYPE, "run"),
        _member("assemble", tarfile.DIRTYPE),
        _member("run", tarfile.FIFOTYPE),
    ],
    ids=lambda m: f"{m.name}-{m.type!r}",
)
def test_a_hostile_upload_is_refused_and_writes_nothing_outside(
    tmp_path: Path, member: tarfile.TarInfo
) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    with pytest.raises(InvalidInput):
        fetch_scripts(UPLOADED, workdir, _uploads(_tar(member)), print)
    assert sorted(p.name for p in tmp_path.rglob("*")) == [FETCHED_DIR, "work"]


def test_an_upload_naming_a_script_twice_or_too_large_is_refused(tmp_path: Path) -> None:
    twice = _tar(_member("run"), _member("run"))
    with pytest.raises(InvalidInput, match="twice"):
        fetch_scripts(UPLOADED, tmp_path / "a", _mkdir_and(_uploads(twice), tmp_path / "a"), print)
    large = _tar(_member("run"), data=b"x" * (MAX_SCRIPT_BYTES + 1))
    with pytest.raises(InvalidInput, match="4 MiB"):
        fetch_scripts(UPLOADED, tmp_path / "b", _mkdir_and(_uploads(large), tmp_path / "b"), print)
    endless = Sources(uploaded_scripts=lambda digest: iter([b"\0" * 65536] * 1000))
    with pytest.raises(InvalidInput, match="larger than"):
        fetch_scripts(UPLOADED, tmp_path / "c", _mkdir_and(endless, tmp_path / "c"), print)


def _mkdir_and(sources: Sources, path: Path) -> Sources:
    path.mkdir()
    return sources


def test_file_urls_are_read_in_process_only(tmp_path: Path) -> None:
    root = _scripts_dir(tmp_path / "s", assemble="a")
    url = f"file://{root}"
    with pytest.raises(InvalidInput, match="a worker does not read its own disk"):
        fetch_scripts(url, tmp_path, Sources(), print)
    in_process = Sources(SourcePolicy(allow_file_urls=True))
    assert fetch_scripts(url, tmp_path, in_process, print) == ("assemble",)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    root = tmp_path / "www"
    root.mkdir()
    asked: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            super().do_GET()

        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(Handler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root, asked
    server.shutdown()
    server.server_close()


def test_http_scripts_one_request_each_a_404_is_no_script(
    tmp_path: Path, served: tuple[str, Path, list[str]]
) -> None:
    base, root, asked = served
    _scripts_dir(root / "s2i", assemble="#!/bin/sh\necho a\n", usage="u")
    workdir = tmp_path / "work"
    workdir.mkdir()
    assert fetch_scripts(f"{base}/s2i/", workdir, Sources(), print) == ("assemble", "usage")
    assert asked == [
        "/s2i/assemble",
        "/s2i/run",
        "/s2i/save-artifacts",
        "/s2i/usage",
        "/s2i/assemble-runtime",
    ]
    assert (workdir / FETCHED_DIR / "assemble").read_text() == "#!/bin/sh\necho a\n"


def test_http_scripts_none_there_or_no_server(
    tmp_path: Path, served: tuple[str, Path, list[str]]
) -> None:
    base, _, _ = served
    (tmp_path / "a").mkdir()
    with pytest.raises(InvalidInput, match="has none of"):
        fetch_scripts(f"{base}/nothing", tmp_path / "a", Sources(), print)
    (tmp_path / "c").mkdir()
    with pytest.raises(SourceFetchFailed, match="downloading"):
        fetch_scripts("http://127.0.0.1:9/s2i", tmp_path / "c", Sources(), print)


def test_http_scripts_on_an_internal_address_are_refused_by_a_shared_worker(
    tmp_path: Path, served: tuple[str, Path, list[str]]
) -> None:
    base, root, asked = served
    _scripts_dir(root / "s2i", assemble="a")
    shared = Sources(SourcePolicy(allow_internal_urls=False))
    with pytest.raises((RefusedAddress, InvalidInput)):
        fetch_scripts(f"{base}/s2i", tmp_path, shared, print)
    assert asked == []


def test_http_scripts_trickled_past_the_download_timeout_fail(tmp_path: Path) -> None:
    class Trickle(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            for _ in range(20):
                self.wfile.write(b"#")
                self.wfile.flush()
                time.sleep(0.2)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    server.block_on_close = False  # the trickle goes on after the client gave up
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        patient = Sources(SourcePolicy(download_timeout_s=0.5))
        url = f"http://127.0.0.1:{server.server_address[1]}/s2i"
        with pytest.raises(SourceFetchFailed, match="took too long"):
            fetch_scripts(url, tmp_path, patient, print)
    finally:
        server.shutdown()
        server.server_close()
