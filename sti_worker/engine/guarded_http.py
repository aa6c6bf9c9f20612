"""HTTP for source downloads that judges the address it actually connects to.

Checking a URL's host before fetching it is not enough: a redirect leads elsewhere, DNS can
answer differently the second time, and two URL parsers can disagree on the host
(`http://A\\@B/`). Here every connection, redirects included, is checked once its socket is
connected, by the peer address, before a byte is sent. Proxies and .netrc from the worker's
environment are not used (a proxy hides the address; .netrc would send the worker's
credentials to whatever host a source names).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection

from sti.errors import InvalidInput

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_REDIRECTS = 5


class RefusedAddress(InvalidInput):
    pass


def guarded_session(allowed: Callable[[IPAddress], bool] | None) -> requests.Session:
    """A session whose connections must reach an address allowed() accepts (None: any)."""
    session = requests.Session()
    session.trust_env = False
    session.max_redirects = MAX_REDIRECTS
    if allowed is not None:
        adapter = _CheckingAdapter(allowed)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
    return session


class _CheckingAdapter(HTTPAdapter):
    def __init__(self, allowed: Callable[[IPAddress], bool]) -> None:
        self._allowed = allowed
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _checking_pools(self._allowed)


def _checking_pools(allowed: Callable[[IPAddress], bool]) -> dict[str, type]:
    def checking(connection_class: type[HTTPConnection]) -> type[HTTPConnection]:
        class Checking(connection_class):  # type: ignore[valid-type,misc]
            def _new_conn(self) -> socket.socket:
                sock = super()._new_conn()
                peer = ipaddress.ip_address(str(sock.getpeername()[0]).split("%")[0])
                if not allowed(peer):
                    sock.close()
                    raise RefusedAddress(
                        f"{self.host} connected to {peer}, an internal address "
                        "(STI_ALLOWED_NETWORKS lists networks a worker may fetch from)"
                    )
                return sock

        return Checking

    class CheckingHTTPPool(urllib3.HTTPConnectionPool):
        ConnectionCls = checking(HTTPConnection)

    class CheckingHTTPSPool(urllib3.HTTPSConnectionPool):
        ConnectionCls = checking(HTTPSConnection)

    return {"http": CheckingHTTPPool, "https": CheckingHTTPSPool}
