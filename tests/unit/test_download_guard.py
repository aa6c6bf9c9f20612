"""Archive downloads judge the address they connect to, every hop: a redirect to an internal
address, a URL two parsers read differently, a redirect loop and a server that trickles are all
refused, and the internal server never receives a request. Real HTTP servers on 127.0.0.1
(allowed) and 127.0.0.2 (not), no Docker."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sti.errors import InvalidInput, SourceFetchFailed
from sti_worker.engine.sources import SourcePolicy, Sources
from tests.unit.http_servers import Server

ALLOWED = SourcePolicy(
    allow_internal_urls=False,
    allowed_networks=(ipaddress.ip_network("127.0.0.1/32"),),
    download_timeout_s=1,
)


@pytest.fixture
def servers() -> Iterator[tuple[Server, Server]]:
    allowed, internal = Server("127.0.0.1"), Server("127.0.0.2")
    yield allowed, internal
    allowed.close()
    internal.close()


def _fetch(url: str, workdir: Path) -> Path:
    workdir.mkdir()
    return Path(Sources(ALLOWED).fetch(url, workdir, lambda line: None).path)


def test_an_allowed_address_is_downloaded(servers: tuple[Server, Server], tmp_path: Path) -> None:
    allowed, _ = servers
    assert (_fetch(f"{allowed.url}/app.tar.gz", tmp_path / "w") / "index.html").exists()


def test_a_redirect_to_an_internal_address_is_refused_before_it_is_asked_anything(
    servers: tuple[Server, Server], tmp_path: Path
) -> None:
    allowed, internal = servers
    with pytest.raises(InvalidInput, match=r"connected to 127\.0\.0\.2, an internal address"):
        _fetch(f"{allowed.url}/to.tar.gz?{internal.url}/app.tar.gz", tmp_path / "w")
    assert internal.requests == []


def test_a_url_whose_host_two_parsers_disagree_on_reaches_no_internal_server(
    servers: tuple[Server, Server], tmp_path: Path
) -> None:
    allowed, internal = servers
    port = internal.url.rsplit(":", 1)[1]
    tricky = f"{allowed.url}\\@127.0.0.2:{port}/app.tar.gz"
    with pytest.raises((InvalidInput, SourceFetchFailed)):
        _fetch(tricky, tmp_path / "w")
    assert internal.requests == []


def test_a_redirect_loop_ends_after_a_few_hops(
    servers: tuple[Server, Server], tmp_path: Path
) -> None:
    allowed, _ = servers
    with pytest.raises(SourceFetchFailed, match="redirects"):
        _fetch(f"{allowed.url}/loop.tar.gz", tmp_path / "w")
    assert len(allowed.requests) <= 6


def test_a_server_that_trickles_is_cut_at_the_download_timeout(
    servers: tuple[Server, Server], tmp_path: Path
) -> None:
    allowed, _ = servers
    started = time.monotonic()
    with pytest.raises(SourceFetchFailed, match="took too long"):
        _fetch(f"{allowed.url}/slow.tar.gz", tmp_path / "w")
    assert time.monotonic() - started < ALLOWED.download_timeout_s + 3
