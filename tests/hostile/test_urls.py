"""Source and scripts URLs, tried as an attacker would: a git or ssh URL that git reads with
another host than the address check, the judged address swapped at connect time, credentials
left in the checkout, secrets in a URL's query shown in logs and labels, a line forged into the
log, malformed URLs, ports and headers, and commit dates out of Python's range.

Real git (and git daemon, git http-backend) against 127.0.0.1 (allowed here) and 127.0.0.2 (an
internal address the policy refuses); policies are passed to the engine directly, as the
worker fixture allows every address."""

from __future__ import annotations

import contextlib
import io
import ipaddress
import random
import socket
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import git
import pytest
from celery import Celery
from click.testing import CliRunner
from gitdb import IStream

from sti.celery_protocol import keywords_repr
from sti.errors import InvalidInput, SourceFetchFailed
from sti.model import BuildRequest, UsageRequest, from_task_arguments
from sti.source_urls import describe, parse_git_url, parse_url
from sti_submit import cli
from sti_worker.engine.git_sources import reach
from sti_worker.engine.provenance import source_labels
from sti_worker.engine.sources import SourcePolicy, Sources, check_git_url, check_url_host
from sti_worker.engine.url_scripts import fetch_scripts
from tests.hostile.git_servers import GitDaemon, SmartHttp, bare_repo, recording_ssh
from tests.services import Worker

POLICY = SourcePolicy(
    allow_file_urls=True,
    allow_internal_urls=False,
    allowed_networks=(ipaddress.ip_network("127.0.0.1/32"),),
)
FAKE_HOST = "repo.sti-test"  # resolves (in this process only) to 127.0.0.1


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """FAKE_HOST resolves to 127.0.0.1 for the address check; git cannot resolve it at all, so
    a fetch of it that works connected to the address judged."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if host == FAKE_HOST else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def _fetch(url: str, workdir: Path, ref: str | None = None, lines: list[str] | None = None) -> Path:
    workdir.mkdir()
    sink = lines.append if lines is not None else (lambda line: None)
    return Path(Sources(POLICY).fetch(url, workdir, sink, ref=ref).path)


# 1. one host for every reader

AMBIGUOUS = [
    "git://127.0.0.2:9418%2f@127.0.0.1/x",  # git decodes %2f: host 127.0.0.2
    "git://127.0.0.2%3a9418@127.0.0.1/x",
    "ssh://a@127.0.0.1#@127.0.0.2/x",  # ssh takes the host after the last @
    "ssh://a@127.0.0.1?@127.0.0.2/x",
    "ssh://127.0.0.1/a@[127.0.0.2]/x",  # git unwraps "@[...]" anywhere
    "ssh://127.0.0.1/a%40%5B127.0.0.2%5D/x",  # ... also once decoded
    "ssh://127.0.0.1/a%2540%255B127.0.0.2%255D/x",  # a double encoding
    "ssh://u%40127.0.0.2@127.0.0.1/x",
    "ssh://127.0.0.2%2f@127.0.0.1/x",
    "git+ssh://a@b@127.0.0.1/x",
    "ssh+git://[127.0.0.2:22]/x",
    "ssh://[u@127.0.0.2:99]/x",
    "https://a@b@127.0.0.1/x.git",
    "https://127.0.0.2\\@127.0.0.1/x.git",
    "https://user:pass@127.0.0.1:80@127.0.0.2/x.git",
    "user@[::1]:path",  # scp-like: git unwraps the brackets
    "user@[fe80::1%25eth0]:path",
    "[127.0.0.2:22]:org/repo",
    "a@b@127.0.0.1:x",
    "h:-upload-pack",
    "s@sh://git@127.0.0.2/x",  # git finds "://" anywhere: not scp-like to git
    "git:://u@127.0.0.2/x",
    "ssh://-oProxyCommand=touch%20x/r",
    "ssh://u@-oProxyCommand=x/r",
    "ssh://127.0.0.1:22%2f/x",
    "ssh://[fe80::1%25eth0]/x",
    "ssh://[::1/x",
    "ssh://127.0.0.1/x%00y",
    "ssh://127.0.0.1/x%0ay",
    "SSH://127.0.0.1/x",
    "Git://127.0.0.1/x",
    "git://u@127.0.0.1/x",
    "ssh://u:pw@127.0.0.1/x",
    "ssh://127.0.0.1",
    "ssh://127.0.0.1/",
    "https://h:99999/x.git",
    "https://h:abc/x.git",
    "https://h:-1/x.git",
    "https://h:0/x.git",
    "https://h:/x.git",
    "http://[x",
    "http://[::1]x/r.git",
    "https://h/x.git#frag",
    "https://bücher.example/x.git",
    "https://h/x y.git",
]


@pytest.mark.parametrize("url", AMBIGUOUS)
def test_a_git_url_any_reader_could_split_differently_is_refused(url: str) -> None:
    with pytest.raises(InvalidInput):
        check_git_url(url, POLICY)


# IANA's special-purpose addresses that are not globally reachable, which the running Python's
# ipaddress tables (3.11 before 3.11.10) take for global
NOT_GLOBAL = [
    "192.0.0.192",  # 192.0.0.0/24, IETF protocol assignments
    "192.0.0.8",
    "[64:ff9b:1::a9fe:a9fe]",  # local-use NAT64 (RFC 8215): 169.254.169.254 behind it
    "[5f00::1]",  # SRv6 segment ids
    "[3fff::1]",  # documentation (RFC 9637)
    "[2001:30::1]",  # 2001::/23, IETF protocol assignments
    "[::127.0.0.1]",  # IPv4-compatible (deprecated)
    "[::ffff:0:a9fe:a9fe]",  # IPv4-translated (SIIT)
    "[fec0::1]",  # site-local (deprecated)
    "[100::1]",  # discard-only
]


@pytest.mark.parametrize("host", NOT_GLOBAL)
def test_an_address_iana_lists_as_not_globally_reachable_is_internal(host: str) -> None:
    for url in (f"https://{host}/app.git", f"https://{host}/app.tar.gz", f"git://{host}/x"):
        with pytest.raises(InvalidInput, match="internal address"):
            check_url_host(url, POLICY)


@pytest.mark.parametrize("host", ["8.8.8.8", "[2606:4700::1111]", "[64:ff9b::808:808]"])
def test_a_global_address_is_reachable(host: str) -> None:
    assert check_url_host(f"https://{host}/app.git", POLICY)


def test_escapes_in_http_credentials_stay_credentials() -> None:
    """curl and git decode an http(s) userinfo after splitting it off: the host is 127.0.0.2."""
    with pytest.raises(InvalidInput, match=r"internal address \(127\.0\.0\.2\)"):
        check_url_host("https://127.0.0.1%2f%40x@127.0.0.2/x.git", POLICY)


def _git_reads(url: str, cwd: Path) -> dict[str, str]:
    """How git itself splits url (git fetch-pack --diag-url)."""
    shown = subprocess.run(
        ["git", "fetch-pack", "--diag-url", url], cwd=cwd, capture_output=True, text=True
    ).stdout
    return dict(line.removeprefix("Diag: ").split("=", 1) for line in shown.splitlines())


def _corpus() -> list[str]:
    urls = []
    for scheme in ("ssh", "git+ssh", "ssh+git", "git"):
        for user in ("", "git@", "a.b-c_d~@"):
            for host in ("github.com", "GitHub.COM.", "10.0.0.5", "[2001:db8::1]", "0x7f.1"):
                for port in ("", ":22", ":2222"):
                    for path in ("/o/r.git", "/~u/r", "/a%20b", "/x@y", "/%7Euser/r"):
                        if not (scheme == "git" and user):
                            urls.append(f"{scheme}://{user}{host}{port}{path}")
    urls += ["git@github.com:org/repo.git", "github.com:r", "a.b@h-1.example:~/x", "h.:/abs"]
    return urls + AMBIGUOUS + _noisy(600)


def _noisy(count: int) -> list[str]:
    """Well-formed URLs with one delimiter or escape slipped in somewhere (seeded)."""
    chance = random.Random(25)
    noise = ["%2f", "%40", "%5b", "%5d", "@", "#", "?", "[", "]", ":", "%3a", "/", "%2540", "~"]
    found = []
    for _ in range(count):
        parts = [
            chance.choice(["ssh://", "git://", "git+ssh://", ""]),
            chance.choice(["", "git@", "u.v@"]),
            chance.choice(["h.example", "127.0.0.1", "[::1]", "H.Example.", "0x7f.1"]),
            chance.choice(["", ":22", ":2222"]),
            chance.choice(["/o/r.git", "/~u/r", "o/r", ":o/r"]),
        ]
        at = chance.randrange(len(parts))
        cut = chance.randint(0, len(parts[at]))
        parts[at] = parts[at][:cut] + chance.choice(noise) + parts[at][cut:]
        found.append("".join(parts))
    return found


def test_git_reads_every_git_url_sti_takes_as_sti_reads_it(tmp_path: Path) -> None:
    """A differential test against git's own parser: for the URL as given and as sti hands it
    to git, git's user, host, port and path are sti's."""
    git.Repo.init(tmp_path)
    taken = 0
    for url in _corpus():
        try:
            remote = parse_git_url(url)
        except InvalidInput:
            continue
        taken += 1
        path = remote.rest if remote.scp_like else unquote(remote.rest)
        path = path[1:] if path.startswith("/~") else path
        for given in (url, remote.spelled()):
            read = _git_reads(given, tmp_path)
            if remote.transport == "git":
                user, (host, port) = "", _host_and_port(read["hostandport"])
            else:
                user, _, host = read["userandhost"].rpartition("@")
                port = None if read["port"] == "NONE" else read["port"]
            assert (user or None) == remote.userinfo, (given, read)
            assert _same_host(host, remote.host), (given, read)
            assert port == (str(remote.port) if remote.port else None), (given, read)
            assert read["path"] == path, (given, read)
    assert taken > 400


def _host_and_port(text: str) -> tuple[str, str | None]:
    """git's get_host_and_port: [v6]:port, or host:port at the first colon."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, rest[1:] or None
    host, _, port = text.partition(":")
    return host, port or None


def _same_host(git_host: str, sti_host: str) -> bool:
    name = git_host.lower().removesuffix(".")
    try:
        return socket.inet_ntoa(socket.inet_aton(name)) == sti_host
    except OSError:
        pass
    try:
        return str(ipaddress.ip_address(name)) == sti_host
    except ValueError:
        return name == sti_host


@pytest.fixture
def internal_daemon(tmp_path: Path) -> Iterator[GitDaemon]:
    base = tmp_path / "internal"
    base.mkdir()
    bare_repo(base / "127.0.0.2" / "x", {"secret.txt": "internal\n"})
    daemon = GitDaemon("127.0.0.2", base)
    yield daemon
    daemon.close()


@pytest.mark.parametrize(
    "spelling",
    [
        "git://127.0.0.2:{port}%2f@127.0.0.1/x",
        "git://127.0.0.2:{port}%2F@127.0.0.1/x",
        "git://127.0.0.2:{port}%2f@localhost/x",
        "git://127.0.0.2:{port}/@127.0.0.1/x",
    ],
)
def test_a_git_url_built_to_be_judged_by_one_host_never_reaches_another(
    internal_daemon: GitDaemon, tmp_path: Path, spelling: str
) -> None:
    """The issue's probe: the address check saw 127.0.0.1 (allowed), git decoded the URL and
    read the internal daemon's repository."""
    url = spelling.format(port=internal_daemon.port)
    with pytest.raises((InvalidInput, SourceFetchFailed)):
        _fetch(url, tmp_path / "w")
    assert internal_daemon.connections() == 0


def test_a_gitmodules_url_built_the_same_way_is_refused_before_anything_is_fetched(
    internal_daemon: GitDaemon, tmp_path: Path
) -> None:
    evil = f"git://127.0.0.2:{internal_daemon.port}%2f@127.0.0.1/x"
    app = bare_repo(tmp_path / "app", {"a.txt": "a\n"}, lib=f"{evil} {'b' * 40}")
    with pytest.raises(InvalidInput, match="git URL"):
        _fetch(f"file://{app.git_dir}", tmp_path / "w")
    assert internal_daemon.connections() == 0


# 1. the address judged is the address git connects to


@pytest.fixture
def named_daemon(tmp_path: Path) -> Iterator[GitDaemon]:
    """A daemon on 127.0.0.1 that serves app.git only to clients asking for FAKE_HOST."""
    base = tmp_path / "named"
    base.mkdir()
    bare_repo(base / FAKE_HOST / "app", {"index.html": "named\n"})
    daemon = GitDaemon("127.0.0.1", base)
    yield daemon
    daemon.close()


def test_git_protocol_connects_to_the_address_judged_and_still_names_the_host(
    fake_dns: None, named_daemon: GitDaemon, tmp_path: Path
) -> None:
    """git cannot resolve FAKE_HOST itself: the fetch works only if git connected to the
    address the check resolved, and the daemon found the repository only under the name."""
    fetched = _fetch(f"git://{FAKE_HOST}:{named_daemon.port}/app", tmp_path / "w")
    assert (fetched / "index.html").read_text() == "named\n"


@pytest.mark.parametrize(
    ("url", "alias", "port"),
    [
        (f"ssh://git@{FAKE_HOST}:2222/app.git", f"[{FAKE_HOST}]:2222", "2222"),
        (f"git+ssh://{FAKE_HOST}/app.git", FAKE_HOST, None),
        (f"git@{FAKE_HOST}:org/app.git", FAKE_HOST, None),
    ],
)
def test_ssh_connects_to_the_address_judged_and_checks_the_host_key_of_the_name(
    fake_dns: None,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    url: str,
    alias: str,
    port: str | None,
) -> None:
    recorded = recording_ssh(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{Path('/usr/bin')}:{Path('/bin')}")
    with pytest.raises(SourceFetchFailed):
        _fetch(url, tmp_path / "w")
    arguments = recorded.read_text().splitlines()
    assert "HostName=127.0.0.1" in arguments
    assert f"HostKeyAlias={alias}" in arguments
    assert ("-p" in arguments) is (port is not None)


@pytest.mark.parametrize(
    ("url", "pin"),
    [
        ("https://git.example/app.git", "http.curloptResolve=git.example:443:127.0.0.1"),
        ("https://127.0.0.1:8443/app.git", None),
        ("http://[::1]:8080/app.git", None),
    ],
)
def test_http_is_pinned_to_the_address_judged_unless_its_host_is_one(
    monkeypatch: pytest.MonkeyPatch, url: str, pin: str | None
) -> None:
    """curl refuses a resolve entry for an [IPv6] host, and an address needs none."""
    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: real("127.0.0.1", *a, **k))
    reached = reach(url, replace(POLICY, allowed_networks=(ipaddress.ip_network("0.0.0.0/0"),)))
    assert [o for o in reached.config if "curloptResolve" in o] == ([pin] if pin else [])
    assert reached.env["NO_PROXY"] == "*"


def test_ssh_to_an_internal_address_never_starts_ssh(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    recorded = recording_ssh(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    urls = ["ssh://a@127.0.0.1#@127.0.0.2/x", "ssh://127.0.0.2/x", "git@127.0.0.2:x"]
    for number, url in enumerate(urls):
        with pytest.raises(InvalidInput):
            _fetch(url, tmp_path / f"w{number}")
    assert not recorded.exists()


# 5 (the worker's half). credentials go to the fetch alone

TOKEN = "s3cret-t0ken-9f2c"


@pytest.fixture(params=[True, False], ids=["v2", "v0"])
def private_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SmartHttp]:
    """app.git (two commits) with a submodule ../lib.git, both behind Basic auth."""
    root = tmp_path / "private"
    root.mkdir()
    lib = bare_repo(root / "lib.git", {"lib.txt": "lib\n"})
    app = bare_repo(
        root / "app.git", {"a.txt": "one\n"}, lib=f"../lib.git {lib.head.commit.hexsha}"
    )
    work = git.Repo(root / "app.work")
    (root / "app.work" / "a.txt").write_text("two\n")
    work.index.add(["a.txt"])
    work.index.commit("second")
    work.git.push(str(app.git_dir), "main")
    server = SmartHttp("127.0.0.1", root, "sti", TOKEN, v2=request.param)
    yield server
    server.close()


@pytest.mark.parametrize("older", [False, True], ids=["head", "older-commit"])
def test_credentials_in_a_git_url_are_used_and_written_nowhere_in_the_checkout(
    private_server: SmartHttp, tmp_path: Path, older: bool
) -> None:
    """Submodule included (a relative URL inherits the credentials, as in git); a commit that
    is no branch tip takes the full-fetch path on a v0 server."""
    first = git.Repo(tmp_path / "private" / "app.work").head.commit.parents[0].hexsha
    url = f"http://sti:{TOKEN}@127.0.0.1:{private_server.port}/app.git"
    fetched = _fetch(url, tmp_path / "w", ref=first if older else None)
    assert (fetched / "a.txt").read_text() == ("one\n" if older else "two\n")
    assert (fetched / "lib" / "lib.txt").read_text() == "lib\n"
    assert any(path.startswith("/lib.git") for path in private_server.authorized)
    leaks = [
        path
        for path in (tmp_path / "w").rglob("*")
        if path.is_file() and not path.is_symlink() and TOKEN.encode() in path.read_bytes()
    ]
    assert leaks == []


# 9. secrets in a URL's query, and lines forged into the log


@pytest.mark.parametrize(
    ("source", "shown"),
    [
        (
            "https://git.example/app.tar.gz?private_token=abc123",
            "https://git.example/app.tar.gz?private_token=***",
        ),
        (
            "https://b.s3.example/app.zip?X-Amz-Credential=AK%2F1&X-Amz-Signature=f00d&x=1",
            "https://b.s3.example/app.zip?X-Amz-Credential=***&X-Amz-Signature=***&x=***",
        ),
        ("https://h/app.tgz?sig=s1#token=t2", "https://h/app.tgz?sig=***#***"),
        ("https://h/app.tgz?opaque-token", "https://h/app.tgz?***"),
        ("https://u:p@h/app.tgz?token=t&token=u", "https://***@h/app.tgz?token=***&token=***"),
        ("https://h/a.tgz;jsessionid=1?t=2", "https://h/a.tgz;jsessionid=1?t=***"),
    ],
)
def test_query_values_are_masked_in_labels_and_log_lines(source: str, shown: str) -> None:
    labels = source_labels(BuildRequest(source, "img", "acme/app"), None, None)
    assert set(labels.values()) - {""} == {shown}
    assert describe(source) == shown


NOT_A_NUMBER = b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\nConnection: close\r\n\r\nxx"


def _archive_server(reply: bytes = NOT_A_NUMBER) -> tuple[socket.socket, int]:
    """A server answering every request with reply."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection:
                connection.recv(65536)
                connection.sendall(reply)

    threading.Thread(target=serve, daemon=True).start()
    return listener, int(listener.getsockname()[1])


NOT_A_NUMBER_MESSAGE = r"Content-Length .*, not a number"


@pytest.mark.parametrize(
    ("declared", "refusal", "message"),
    [
        ("abc", SourceFetchFailed, NOT_A_NUMBER_MESSAGE),
        ("1,1", SourceFetchFailed, NOT_A_NUMBER_MESSAGE),
        ("-1", SourceFetchFailed, NOT_A_NUMBER_MESSAGE),
        ("+5", SourceFetchFailed, NOT_A_NUMBER_MESSAGE),
        ("0x10", SourceFetchFailed, NOT_A_NUMBER_MESSAGE),
        (" 12 x", SourceFetchFailed, NOT_A_NUMBER_MESSAGE),
        ("9" * 5000, InvalidInput, "is larger than"),  # more digits than int() reads
    ],
)
def test_a_content_length_that_is_no_number_is_a_fetch_failure_naming_it(
    tmp_path: Path, declared: str, refusal: type[Exception], message: str
) -> None:
    reply = f"HTTP/1.1 200 OK\r\nContent-Length: {declared}\r\nConnection: close\r\n\r\nxx"
    listener, port = _archive_server(reply.encode())
    try:
        with pytest.raises(refusal, match=message):
            _fetch(f"http://127.0.0.1:{port}/app.tar.gz", tmp_path / "w")
    finally:
        listener.close()


@pytest.mark.parametrize("forged", ["%0a", "%0D%0A", "%0a%1b%5B31m", "%E2%80%A8"])
def test_an_encoded_line_break_in_a_url_forges_no_log_line(tmp_path: Path, forged: str) -> None:
    listener, port = _archive_server()
    lines: list[str] = []
    try:
        with pytest.raises(SourceFetchFailed):
            _fetch(
                f"http://127.0.0.1:{port}/a{forged}Build%20succeeded.tar.gz?t=1",
                tmp_path / "w",
                lines=lines,
            )
    finally:
        listener.close()
    assert lines and all(line.isprintable() for line in lines)
    assert forged in lines[0]


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("token", ["Zq%7EZq", "Zq~Zq%7bZq%7D", "Zq%41Zq", "Zq^Zq", 'Zq"Zq'])
def test_a_query_a_library_spells_its_own_way_is_masked_in_its_error(
    tmp_path: Path, token: str
) -> None:
    """requests re-quotes a query (%7E as ~, { as %7B) before urllib3 names it in an error."""
    url = f"http://127.0.0.1:{_closed_port()}/app.tar.gz?private_token={token}"
    with pytest.raises(SourceFetchFailed) as failed:
        _fetch(url, tmp_path / "w")
    assert "private_token=***" in failed.value.message
    assert "Zq" not in failed.value.message


def test_a_query_of_a_url_redirected_to_is_masked_in_the_error(tmp_path: Path) -> None:
    """An archive server sends the worker to object storage with a presigned URL."""
    target = f"http://127.0.0.1:{_closed_port()}/obj?X-Amz-Signature=S3CR3T&X-Amz-Expires=60"
    reply = f"HTTP/1.1 302 Found\r\nLocation: {target}\r\nContent-Length: 0\r\n\r\n"
    listener, port = _archive_server(reply.encode())
    try:
        with pytest.raises(SourceFetchFailed) as failed:
            _fetch(f"http://127.0.0.1:{port}/app.tar.gz", tmp_path / "w")
    finally:
        listener.close()
    assert "S3CR3T" not in failed.value.message and "X-Amz-Signature=***" in failed.value.message


def test_a_scripts_url_redirected_to_a_presigned_url_keeps_its_query_out_of_the_error(
    tmp_path: Path,
) -> None:
    target = f"http://127.0.0.1:{_closed_port()}/assemble?sig=S3CR3T"
    reply = f"HTTP/1.1 302 Found\r\nLocation: {target}\r\nContent-Length: 0\r\n\r\n"
    listener, port = _archive_server(reply.encode())
    try:
        with pytest.raises(SourceFetchFailed) as failed:
            fetch_scripts(f"http://127.0.0.1:{port}/s2i", tmp_path, Sources(POLICY), print)
    finally:
        listener.close()
    assert "S3CR3T" not in failed.value.message and "sig=***" in failed.value.message


@pytest.mark.parametrize(
    "source",
    ["https://u:t0k3n@h.example/app.tar.gz?sig=S3CR3T", "https://u:t0k3n@h.example/a.zip#S3CR3T"],
)
def test_a_source_named_in_a_refusal_is_shown_masked(tmp_path: Path, source: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        Sources(POLICY).fetch(source, tmp_path, print, ref="main")
    assert "t0k3n" not in refused.value.message and "S3CR3T" not in refused.value.message


def test_a_control_character_in_a_source_is_shown_escaped() -> None:
    assert describe("/src/app\nBuild succeeded") == "/src/app\\nBuild succeeded"
    assert describe("git@h:x\u2028y") == "git@h:x\\u2028y"
    with pytest.raises(InvalidInput, match=r"\\n"):
        BuildRequest("https://h/x\nBuild succeeded", "img", "acme/app")


# 12 and the weak ports: bad input everywhere, one line naming the value


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("source", "http://[x", "IPv6"),
        ("source", "http://[x/app.tar.gz", "IPv6"),
        ("source", "https://h:99999/x.git", "port '99999'"),
        ("source", "https://h:abc/app.tar.gz", "port 'abc'"),
        ("source", "git://h:-1/x", "port '-1'"),
        ("source", "ssh://h:65536/x", "port '65536'"),
        ("scripts_url", "http://[x", "IPv6"),
        ("scripts_url", "http://h:99999/s2i", "port '99999'"),
        ("scripts_url", "file://[x/dir", "file:///an/absolute/directory"),
    ],
)
def test_a_malformed_url_in_a_task_message_is_invalid_input(
    field: str, value: str, named: str
) -> None:
    kwargs = {"source": "https://h/x.git", "build_image": "img", "tag": "acme/app", field: value}
    with pytest.raises(InvalidInput, match=named):
        from_task_arguments(BuildRequest, [], kwargs, "0" * 32)
    if field == "scripts_url":
        with pytest.raises(InvalidInput, match=named):
            from_task_arguments(UsageRequest, [], {"build_image": "img", field: value}, "0" * 32)


@pytest.mark.parametrize(
    "arguments",
    [
        ["build", "http://[x", "img", "acme/app"],
        ["build", "-s", "http://[x", ".", "img", "acme/app"],
        ["build", "https://h:99999/x.git", "img", "acme/app"],
        ["usage", "-s", "http://[x", "img"],
    ],
)
def test_a_malformed_url_on_the_command_line_is_a_usage_error(arguments: list[str]) -> None:
    result = CliRunner().invoke(cli.main, arguments)
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "Invalid value" in result.output


@pytest.mark.parametrize(
    "url", ["https://h:99999/app.tar.gz", "http://h:abc/x.git", "https://[::1/x.git"]
)
def test_the_address_check_refuses_a_bad_port_or_bracket_as_bad_input(url: str) -> None:
    with pytest.raises(InvalidInput, match=r"port|IPv6"):
        check_url_host(url, POLICY)


def test_archive_and_scripts_urls_keep_one_host_for_every_reader() -> None:
    for url in ("https://a@b@127.0.0.1/x.tgz", "http://h\\@127.0.0.2/x.tgz", "http://[::1%25lo]/x"):
        with pytest.raises(InvalidInput):
            parse_url(url, "SOURCE")


# 14. commits git dates out of Python's range


@pytest.mark.parametrize(
    "stamp",
    ["99999999999999999999 +0000", "253402300800 +0000", "1700000000 +9999", "-1 +0000"],
)
def test_a_commit_with_a_date_python_cannot_hold_still_builds(tmp_path: Path, stamp: str) -> None:
    repo = git.Repo.init(tmp_path / "repo", initial_branch="main")
    data = f"tree {repo.git.write_tree()}\nauthor A <a@b> {stamp}\ncommitter C <c@d> 1 +0000\n\nm\n"
    commit = repo.odb.store(
        IStream(b"commit", len(data), io.BytesIO(data.encode()))
    ).hexsha.decode()
    repo.git.update_ref("refs/heads/main", commit)
    workdir = tmp_path / "w"
    workdir.mkdir()
    fetched = Sources(POLICY).fetch(f"file://{tmp_path / 'repo'}", workdir, lambda line: None)
    assert fetched.revision == commit
    assert fetched.commit is not None
    assert fetched.commit.get("date", "") == repo.git.log("-1", "--format=%ad", commit)
    assert fetched.commit["author"] == "A <a@b>"


# 12 through the queue: a result object, never a bare FAILURE


@pytest.mark.parametrize(
    ("task", "kwargs"),
    [
        ("sti.build", {"source": "http://[x", "build_image": "img", "tag": "sti-test/urls"}),
        (
            "sti.build",
            {"source": "https://h/x.git", "build_image": "img", "tag": "sti-test/urls"}
            | {"scripts_url": "http://[x"},
        ),
        ("sti.usage", {"build_image": "img", "scripts_url": "http://[x"}),
    ],
)
def test_a_malformed_url_sent_to_the_queue_gets_an_invalid_input_result(
    broker_url: str, worker: Worker, task: str, kwargs: dict[str, Any]
) -> None:
    sender = Celery("sender", broker=broker_url, backend=broker_url)
    sender.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"])
    try:
        result = sender.send_task(task, kwargs=kwargs, queue="sti.builds").get(timeout=60)
    finally:
        sender.close()
    assert result["schema"] == "sti.result/1"
    assert result["error"]["code"] == "InvalidInput"
    assert "IPv6" in result["error"]["message"]


# the tar of scripts a file:// --scripts-url was uploaded as: anyone can upload one of their own


def _scripts_tar(pax_headers: dict[str, str]) -> bytes:
    packed = io.BytesIO()
    with tarfile.open(fileobj=packed, mode="w", format=tarfile.PAX_FORMAT) as tar:
        member = tarfile.TarInfo("assemble")
        member.size, member.pax_headers = 1, pax_headers
        tar.addfile(member, io.BytesIO(b"x"))
    return packed.getvalue()


def _mutated(seed: int) -> bytes:
    """A tar of scripts with a few bytes of its headers changed (seeded)."""
    chance = random.Random(seed)
    data = bytearray(_scripts_tar({"comment": "c"}))
    for _ in range(chance.randint(1, 8)):
        data[chance.randrange(1536)] = chance.randrange(256)
    return bytes(data)


@pytest.mark.parametrize(
    "packed",
    [
        _scripts_tar({"GNU.sparse.map": "x"}),
        _scripts_tar({"GNU.sparse.size": "x", "GNU.sparse.major": "0", "GNU.sparse.minor": "1"}),
    ],
)
def test_a_crafted_tar_of_uploaded_scripts_is_bad_input(tmp_path: Path, packed: bytes) -> None:
    sources = Sources(POLICY, uploaded_scripts=lambda digest: iter([packed]))
    with pytest.raises(InvalidInput, match="not a tar of scripts"):
        fetch_scripts("sti+scripts://sha256:" + "0" * 64, tmp_path, sources, print)


def test_a_tar_of_uploaded_scripts_with_bytes_changed_is_taken_or_bad_input(
    tmp_path: Path,
) -> None:
    for seed in range(300):
        packed = _mutated(seed)
        sources = Sources(POLICY, uploaded_scripts=lambda digest, packed=packed: iter([packed]))
        workdir = tmp_path / str(seed)
        workdir.mkdir()
        with contextlib.suppress(InvalidInput):
            fetch_scripts("sti+scripts://sha256:" + "0" * 64, workdir, sources, print)


def test_query_values_of_a_source_are_masked_in_a_task_messages_kwargsrepr() -> None:
    """The kwargsrepr Flower, `celery events` and the worker's log show."""
    source = "https://u:t0k3n@h.example/app.tar.gz?private_token=S3CR3T#sig=S1G"
    shown = keywords_repr({"source": source, "build_image": "img", "tag": "acme/app"})
    assert "t0k3n" not in shown and "S3CR3T" not in shown and "S1G" not in shown
    assert describe(source) in shown
