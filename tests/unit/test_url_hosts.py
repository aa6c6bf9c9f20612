"""Which addresses a worker fetches sources from: global ones, and networks an operator allows
(STI_ALLOWED_NETWORKS); every other range is refused, in whatever form the address is written."""

from __future__ import annotations

import ipaddress

import pytest

from sti.errors import InvalidInput
from sti.settings import networks
from sti_worker.engine.sources import SourcePolicy, check_url_host

WORKER = SourcePolicy(allow_internal_urls=False)
FARM = SourcePolicy(
    allow_internal_urls=False, allowed_networks=(ipaddress.ip_network("10.20.0.0/16"),)
)


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",  # shared address space (carrier NAT, some clouds' metadata)
        "169.254.169.254",  # link-local: cloud metadata
        "0.0.0.0",
        "192.0.2.1",  # documentation
        "224.0.0.1",  # multicast
        "[::1]",
        "[fe80::1]",
        "[fd00::1]",
        "[::ffff:127.0.0.1]",  # IPv4-mapped
        "[::ffff:a9fe:a9fe]",
        "[64:ff9b::a9fe:a9fe]",  # NAT64 of 169.254.169.254
        "[64:ff9b::7f00:1]",  # NAT64 of 127.0.0.1
        "[2002:7f00:1::]",  # 6to4 of 127.0.0.1
        "2130706433",  # 127.0.0.1 as one decimal number
        "0x7f.1",  # 127.0.0.1 in the inet_aton short hex form
    ],
)
def test_internal_addresses_are_refused_in_every_form(host: str) -> None:
    with pytest.raises(InvalidInput, match="internal address"):
        check_url_host(f"http://{host}/app.tar.gz", WORKER)


@pytest.mark.parametrize("host", ["8.8.8.8", "[2606:4700:4700::1111]", "[64:ff9b::808:808]"])
def test_global_addresses_are_fetched(host: str) -> None:
    check_url_host(f"https://{host}/app.git", WORKER)


def test_an_allowed_network_and_nothing_else_of_the_internal_ranges() -> None:
    check_url_host("https://10.20.3.4/farm/app.git", FARM)
    check_url_host("https://[::ffff:10.20.3.4]/farm/app.git", FARM)
    for refused in ("10.21.0.1", "169.254.169.254", "127.0.0.1", "100.64.0.1"):
        with pytest.raises(InvalidInput, match="STI_ALLOWED_NETWORKS"):
            check_url_host(f"https://{refused}/x.git", FARM)


def test_the_allowed_networks_setting_is_read_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STI_ALLOWED_NETWORKS", "10.20.0.0/16, fd00:1::/64,192.168.5.7")
    assert [str(net) for net in networks("STI_ALLOWED_NETWORKS")] == [
        "10.20.0.0/16",
        "fd00:1::/64",
        "192.168.5.7/32",
    ]
    monkeypatch.setenv("STI_ALLOWED_NETWORKS", "10.20.0.0/16,intranet")
    with pytest.raises(ValueError, match="STI_ALLOWED_NETWORKS: 'intranet' is not a network"):
        networks("STI_ALLOWED_NETWORKS")
