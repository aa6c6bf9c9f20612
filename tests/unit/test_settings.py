"""Settings from the environment: sizes with binary units, and every setting's default and
override. Each test starts from an environment without any sti variable."""

from __future__ import annotations

import os
import socket

import pytest

from sti.environment import DEFAULT_BROKER_URL, byte_size
from sti.settings import Settings

NAME = "STI_UNIT_TEST_SIZE"
MiB, GiB = 1024**2, 1024**3


@pytest.fixture(autouse=True)
def no_sti_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("STI_") or name == "DOCKER_HOST":
            monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("512M", 512 * MiB),
        ("2G", 2 * GiB),
        ("2GiB", 2 * GiB),
        ("2gib", 2 * GiB),
        ("2GB", 2 * GiB),
        ("64k", 64 * 1024),
        ("1T", 1024**4),
        ("1048576", MiB),
        ("100B", 100),
        (" 3G ", 3 * GiB),
        ("0", 0),
    ],
)
def test_sizes_are_read_with_binary_units(
    monkeypatch: pytest.MonkeyPatch, value: str, size: int
) -> None:
    monkeypatch.setenv(NAME, value)
    assert byte_size(NAME, 7) == size


@pytest.mark.parametrize("value", [None, "", "   "])
def test_an_unset_or_empty_size_is_the_default(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is not None:
        monkeypatch.setenv(NAME, value)
    assert byte_size(NAME, 7) == 7


@pytest.mark.parametrize(
    "value", ["lots", "2X", "1.5G", "-1G", "G", "2 G", "KiB", "0x10", "2GG", "2Gi B"]
)
def test_a_size_that_is_not_one_is_an_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(NAME, value)
    with pytest.raises(ValueError, match=f"{NAME}=.* is not a size such as 512M or 2G"):
        byte_size(NAME, 7)


@pytest.mark.parametrize("value", ["B", "iB"])
def test_a_unit_without_a_number_is_an_error(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(NAME, value)
    with pytest.raises(ValueError):
        byte_size(NAME, 7)


def test_the_defaults() -> None:
    settings = Settings.from_env()
    assert settings.broker_url == settings.result_backend == DEFAULT_BROKER_URL
    assert settings.host_id == socket.gethostname()
    assert settings.host_queue == f"sti.host.{socket.gethostname()}"
    assert settings.docker_url is None
    assert settings.step_time_limit_s == 3600
    assert settings.lease_s == 60
    assert settings.max_deliveries == 3
    assert not (settings.allow_file_urls or settings.allow_local_sources)
    assert not settings.allow_internal_urls
    assert settings.upload_max_bytes == GiB
    assert settings.upload_expires_s == 24 * 3600
    assert settings.registry_auth is None
    assert settings.builder == "auto"
    assert settings.build_cache_keep_bytes == 2 * GiB


def test_the_environment_overrides_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "STI_BROKER_URL": "redis://broker:6379/1",
        "STI_HOST_ID": "host-x",
        "DOCKER_HOST": "unix:///run/other.sock",
        "STI_STEP_TIME_LIMIT": "120",
        "STI_LEASE_SECONDS": "15",
        "STI_ALLOW_FILE_URLS": "yes",
        "STI_ALLOW_LOCAL_SOURCES": " TRUE ",
        "STI_ALLOW_INTERNAL_URLS": "0",
        "STI_UPLOAD_MAX_BYTES": "1000",
        "STI_REGISTRY_USERNAME": "robot",
        "STI_REGISTRY_PASSWORD": "s3cret",
        "STI_BUILDER": "legacy",
        "STI_BUILD_CACHE_KEEP": "512M",
    }.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    assert settings.broker_url == settings.result_backend == "redis://broker:6379/1"
    assert settings.host_queue == "sti.host.host-x"
    assert settings.docker_url == "unix:///run/other.sock"
    assert (settings.step_time_limit_s, settings.lease_s) == (120, 15)
    assert settings.allow_file_urls and settings.allow_local_sources
    assert not settings.allow_internal_urls
    assert settings.upload_max_bytes == 1000
    assert settings.registry_auth == {"username": "robot", "password": "s3cret"}
    assert settings.builder == "legacy"
    assert settings.build_cache_keep_bytes == 512 * MiB


def test_a_result_backend_of_its_own_and_a_password_without_a_user(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STI_RESULT_BACKEND", "redis://results:6379/2")
    monkeypatch.setenv("STI_REGISTRY_PASSWORD", "ignored without a username")
    settings = Settings.from_env()
    assert settings.broker_url == DEFAULT_BROKER_URL
    assert settings.result_backend == "redis://results:6379/2"
    assert settings.registry_auth is None


def test_a_bad_size_in_the_environment_stops_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STI_BUILD_CACHE_KEEP", "lots")
    with pytest.raises(ValueError, match="STI_BUILD_CACHE_KEEP"):
        Settings.from_env()
