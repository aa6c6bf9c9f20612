"""A rediss:// broker URL, tried as an operator would: a real TLS-only redis-server with a
private CA, a password and a client certificate (mutual TLS). sti-submit reads the URL as the
workers' clients do (redis-py, kombu's transport, Celery's result backend): what they accept, it
accepts and connects with; what they cannot use or read in different ways, it refuses in one line
naming the argument (exit 2); a broker it does not trust, or one that wants a client certificate,
is one line too (exit 3), never a traceback. Through the queue, one URL serves the worker and the
laptop, and a streamed upload crosses TLS byte for byte."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import docker
import kombu
import kombu.utils.url
import pytest
import redis
import redis.connection
from celery import Celery

from sti.errors import InvalidInput
from sti.redis_tls import for_redis_py
from sti.redis_wire import ConnectionLost, LiteRedis, RedisAddress, TlsRefused
from tests.dockertools import image_files
from tests.queue_helpers import json_result, make_source, sti_submit
from tests.services import BIN, Certificates, TlsRedisServer, Worker

PASSWORD = "s3cret-broker"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    made = Certificates(tmp_path_factory.mktemp("pki"))
    hashed = made.directory / "capath"  # an OpenSSL CA directory, for ssl_ca_path
    hashed.mkdir()
    shutil.copy(made.ca, hashed / "ca.pem")
    subprocess.run(["openssl", "rehash", str(hashed)], check=True, capture_output=True)
    encrypted = made.directory / "client-encrypted.key"
    subprocess.run(
        ["openssl", "rsa", "-in", str(made.client_key), "-out", str(encrypted),
         "-aes256", "-passout", "pass:k3y+pass"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return made


@pytest.fixture(scope="module")
def tls(certs: Certificates, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedisServer]:
    server = TlsRedisServer(tmp_path_factory.mktemp("tls"), certs, password=PASSWORD, mutual=False)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mtls(certs: Certificates, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedisServer]:
    server = TlsRedisServer(tmp_path_factory.mktemp("mtls"), certs, password=PASSWORD, mutual=True)
    yield server
    server.stop()


def lite_ping(url: str) -> bool:
    client = LiteRedis(url)
    try:
        return client.ping()
    finally:
        client.close()


# the workers' three clients of one URL: sti's own (redis-py), Celery's broker (kombu's
# transport) and Celery's result backend


def redis_py_ping(url: str) -> bool:
    client = redis.Redis.from_url(for_redis_py(url))
    try:
        return bool(client.ping())
    finally:
        client.close()


def kombu_ping(url: str) -> bool:
    with kombu.Connection(url, connect_timeout=5) as connection:
        return bool(connection.default_channel.client.ping())


def backend_ping(url: str) -> bool:
    app = Celery("tls-probe", broker="memory://", backend=url)
    return bool(app.backend.client.ping())


WORKER_CLIENTS: list[Callable[[str], bool]] = [redis_py_ping, kombu_ping, backend_ping]


# ways of writing the TLS arguments that every client of the workers reads alike
ACCEPTED: dict[str, Callable[[Certificates], dict[str, Any]]] = {
    "lower-case required": lambda c: {},
    "Celery's CERT_REQUIRED": lambda c: {"ssl_cert_reqs": "CERT_REQUIRED"},
    "optional": lambda c: {"ssl_cert_reqs": "optional"},
    "CERT_OPTIONAL": lambda c: {"ssl_cert_reqs": "CERT_OPTIONAL"},
    "a CA directory": lambda c: {"ssl_ca_certs": None, "ssl_ca_path": c.directory / "capath"},
    "the CA as text": lambda c: {"ssl_ca_certs": None, "ssl_ca_data": quote(c.ca.read_text())},
    "hostname checked, said so": lambda c: {"ssl_check_hostname": "true"},
    "hostname checked, said 1": lambda c: {"ssl_check_hostname": "1"},
    "hostname not checked": lambda c: {"ssl_check_hostname": "False"},
    "ciphers": lambda c: {"ssl_ciphers": quote("ECDHE+AESGCM")},
    "an encoded argument name": lambda c: {"ssl_cert_reqs": None, "ssl%5Fcert%5Freqs": "required"},
    "no verification at all": lambda c: {"ssl_cert_reqs": "none", "ssl_ca_certs": None},
    "CERT_NONE": lambda c: {"ssl_cert_reqs": "CERT_NONE", "ssl_ca_certs": None},
    "an encrypted client key": lambda c: {
        "ssl_certfile": c.client,
        "ssl_keyfile": c.directory / "client-encrypted.key",
        "ssl_password": quote("k3y+pass"),
    },
}


@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mutual-tls"])
@pytest.mark.parametrize("spelling", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_a_url_the_workers_connect_with_connects_the_laptop_too(
    request: pytest.FixtureRequest,
    certs: Certificates,
    mutual: bool,
    spelling: Callable[[Certificates], dict[str, Any]],
) -> None:
    server: TlsRedisServer = request.getfixturevalue("mtls" if mutual else "tls")
    url = server.url(3, **spelling(certs))
    for worker_client in WORKER_CLIENTS:
        assert worker_client(url), worker_client.__name__
    assert lite_ping(url)


def test_the_laptop_stores_and_reads_through_tls_as_the_workers_do(mtls: TlsRedisServer) -> None:
    """Values of an upload's size cross TLS whole (one sendall each, where plain TCP gathers
    them with sendmsg), and the workers' client reads them byte for byte."""
    url = mtls.url(4)
    lite = LiteRedis(url)
    reference = redis.Redis.from_url(url)
    values = [os.urandom(3 * 1024 * 1024 + 17), os.urandom(64 * 1024), b"", b"small"]
    try:
        pipe = lite.pipeline(transaction=False)
        for number, value in enumerate(values):
            pipe.set(f"tls-test/value-{number}", value, ex=60)
        assert pipe.execute() == [True] * len(values)
        assert lite.set("tls-test/single", values[0], ex=60)
        stored = [reference.get(f"tls-test/value-{n}") for n in range(len(values))]
        assert stored == values
        assert reference.get("tls-test/single") == values[0]
        assert lite.get("tls-test/value-0") == values[0]
    finally:
        lite.close()
        reference.close()


# (arguments, what the one-line refusal must name): other spellings of each, tried as a user
# who half-remembers the names would
REFUSED: dict[str, tuple[dict[str, str | None], str]] = {
    "capitalised cert_reqs": ({"ssl_cert_reqs": "Required"}, "ssl_cert_reqs='Required'"),
    "upper-case cert_reqs": ({"ssl_cert_reqs": "REQUIRED"}, "ssl_cert_reqs='REQUIRED'"),
    "lower-case CERT_": ({"ssl_cert_reqs": "cert_none"}, "ssl_cert_reqs='cert_none'"),
    "cert_reqs as a flag": ({"ssl_cert_reqs": "false"}, "ssl_cert_reqs='false'"),
    "cert_reqs with a space": ({"ssl_cert_reqs": "none%20"}, "ssl_cert_reqs='none '"),
    "empty cert_reqs": ({"ssl_cert_reqs": ""}, "ssl_cert_reqs"),
    "hostname no": ({"ssl_check_hostname": "no"}, "ssl_check_hostname='no'"),
    "hostname 0": ({"ssl_check_hostname": "0"}, "ssl_check_hostname='0'"),
    "hostname off": ({"ssl_check_hostname": "off"}, "ssl_check_hostname='off'"),
    "hostname garbage": ({"ssl_check_hostname": "maybe"}, "ssl_check_hostname='maybe'"),
    "upper-case name": ({"SSL_CA_CERTS": "/etc/ca.pem"}, "'SSL_CA_CERTS'"),
    "dashed name": ({"ssl-ca-certs": "/etc/ca.pem"}, "'ssl-ca-certs'"),
    "another library's name": ({"ssl_cafile": "/etc/ca.pem"}, "'ssl_cafile'"),
    "a tls_ name": ({"tls_ca_certs": "/etc/ca.pem"}, "'tls_ca_certs'"),
    "postgres' name": ({"sslmode": "require"}, "'sslmode'"),
    "min version": ({"ssl_min_version": "771"}, "ssl_min_version"),
    "verify flags": ({"ssl_include_verify_flags": "VERIFY_X509_STRICT"}, "ssl_include"),
    "ocsp": ({"ssl_validate_ocsp": "true"}, "ssl_validate_ocsp"),
    "a key without its certificate": ({"ssl_certfile": None, "ssl_keyfile": "/k"}, "ssl_keyfile"),
    "a % the backend decodes again": ({"ssl_ca_certs": "/etc/ca%2541.pem"}, "ssl_ca_certs"),
    "an empty CA": ({"ssl_ca_certs": ""}, "ssl_ca_certs"),
}


@pytest.mark.parametrize(("arguments", "named"), REFUSED.values(), ids=REFUSED.keys())
def test_an_argument_the_workers_cannot_read_alike_is_refused_naming_it(
    mtls: TlsRedisServer, arguments: dict[str, str | None], named: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        LiteRedis(mtls.url(0, **arguments))
    assert named in caught.value.message
    assert "\n" not in caught.value.message
    assert PASSWORD not in caught.value.message


@pytest.mark.parametrize(
    "url",
    [
        "rediss://h/0?ssl_cert_reqs=required&ssl_cert_reqs=none",  # redis-py: first, kombu: last
        "rediss://h/0?ssl_ca_certs=/a.pem&ssl_ca_certs=/b.pem",
        "rediss://h/0?ssl_cert_reqs=none&ssl%5Fcert_reqs=required",
        "redis://h/0?ssl_ca_certs=/a.pem",  # kombu would use TLS, the result backend refuses
        "redis://h/0?ssl_cert_reqs=none",
        "unix:///run/redis.sock?ssl_cert_reqs=required",
    ],
)
def test_an_ambiguous_or_misplaced_tls_argument_is_refused(url: str) -> None:
    with pytest.raises(InvalidInput, match="ssl_c"):
        LiteRedis(url)


@pytest.mark.parametrize(
    "url",
    [
        "rediss://exa%6Dple.com:6380/0",  # the workers' clients decode a host's escapes
        "rediss://[fe80::1%25lo]:6380/0",  # a zone, percent-encoded as URLs write it
        "rediss://Example.COM./0",
        "rediss://u:p%40ss@[::1]/0",
    ],
)
def test_the_laptop_reaches_the_host_and_tls_name_the_workers_reach(url: str) -> None:
    """The host connected to is the name TLS checks the certificate for (server_hostname)."""
    address = RedisAddress.from_url(url)
    assert address.host == redis.connection.parse_url(url)["host"]
    assert address.host == kombu.utils.url.url_to_parts(url).hostname


FILES: dict[str, tuple[Callable[[Certificates], dict[str, Any]], str]] = {
    "a CA file that is not there": (
        lambda c: {"ssl_ca_certs": c.directory / "absent.pem"},
        "ssl_ca_certs='.*absent.pem': cannot load CA certificates: No such file",
    ),
    "a CA file that is not PEM": (
        lambda c: {"ssl_ca_certs": c.directory / "client.ext"},
        "ssl_ca_certs=.*cannot load CA certificates",
    ),
    "a directory as the CA file": (
        lambda c: {"ssl_ca_certs": c.directory / "capath"},
        "ssl_ca_certs=.*Is a directory",
    ),
    "a CA directory that is not there": (
        lambda c: {"ssl_ca_path": c.directory / "absent"},
        "ssl_ca_path=.* is not a directory",
    ),
    "CA text that is not PEM": (
        lambda c: {"ssl_ca_data": "hello"},
        "ssl_ca_data: cannot load CA certificates",
    ),
    "an encrypted key without its passphrase": (
        lambda c: {"ssl_keyfile": c.directory / "client-encrypted.key"},
        "is encrypted: give its passphrase as ssl_password",
    ),
    "a wrong passphrase": (
        lambda c: {"ssl_keyfile": c.directory / "client-encrypted.key", "ssl_password": "no"},
        "ssl_certfile=.*cannot load the client certificate and key",
    ),
    "a key of another certificate": (
        lambda c: {"ssl_keyfile": c.stranger_key},
        "ssl_certfile=.*key values mismatch",
    ),
    "ciphers OpenSSL does not know": (
        lambda c: {"ssl_ciphers": "NO-SUCH-CIPHER"},
        "ssl_ciphers='NO-SUCH-CIPHER'",
    ),
}


@pytest.mark.parametrize(("spelling", "message"), FILES.values(), ids=FILES.keys())
def test_a_setting_that_cannot_be_loaded_is_bad_input_naming_it(
    mtls: TlsRedisServer,
    certs: Certificates,
    spelling: Callable[[Certificates], dict[str, Any]],
    message: str,
) -> None:
    with pytest.raises(InvalidInput, match=message):
        lite_ping(mtls.url(0, **spelling(certs)))


def _cli(url: str) -> subprocess.CompletedProcess[str]:
    return _cli_with(url)


def _cli_with(url: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SSL_CERT")}
    return sti_submit("workers", "--broker", url, timeout=60, env={**environment, **env})


def _one_line_error(completed: subprocess.CompletedProcess[str], code: int) -> str:
    assert completed.returncode == code, completed.stderr
    assert "Traceback" not in completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    assert PASSWORD not in lines[0]
    return lines[0]


def test_sti_submit_connects_with_the_workers_url(mtls: TlsRedisServer) -> None:
    completed = _cli(mtls.url(0))
    assert completed.returncode == 0, completed.stderr
    assert "No live build hosts" in completed.stdout


@pytest.mark.parametrize(
    "ca", ["other", "system"], ids=["a CA that signed neither", "only the system's CAs"]
)
def test_a_broker_certificate_the_url_does_not_trust_is_one_line_exit_3(
    tls: TlsRedisServer, certs: Certificates, ca: str
) -> None:
    url = tls.url(0, ssl_ca_certs=certs.other_ca if ca == "other" else None)
    line = _one_line_error(_cli(url), 3)
    assert "the broker's TLS certificate is not trusted" in line
    assert "ssl_ca_certs" in line


def test_a_certificate_for_another_name_is_refused_unless_the_url_says_so(
    tls: TlsRedisServer,
) -> None:
    elsewhere = tls.url(0, host="127.0.0.2")  # the server's certificate names 127.0.0.1
    line = _one_line_error(_cli(elsewhere), 3)
    assert "not valid for this address" in line
    with pytest.raises(redis.ConnectionError, match="mismatch"):
        redis_py_ping(elsewhere)  # the workers' client refuses it too
    unchecked = tls.url(0, host="127.0.0.2", ssl_check_hostname="false")
    assert _cli(unchecked).returncode == 0
    assert redis_py_ping(unchecked)


def test_mutual_tls_without_a_client_certificate_is_one_line_exit_3(
    mtls: TlsRedisServer,
) -> None:
    url = mtls.url(0, ssl_certfile=None, ssl_keyfile=None)
    line = _one_line_error(_cli(url), 3)
    assert "client certificate" in line
    assert "ssl_certfile" in line
    with pytest.raises((TlsRefused, ConnectionLost), match="client certificate"):
        lite_ping(url)


def test_a_client_certificate_of_another_ca_is_refused_by_the_broker(
    mtls: TlsRedisServer, certs: Certificates
) -> None:
    url = mtls.url(0, ssl_certfile=certs.stranger, ssl_keyfile=certs.stranger_key)
    line = _one_line_error(_cli(url), 3)
    assert "the broker refused the client certificate" in line
    with pytest.raises(TlsRefused):
        lite_ping(url)


def test_a_malformed_tls_argument_is_one_line_exit_2_without_secrets(
    mtls: TlsRedisServer, certs: Certificates
) -> None:
    url = mtls.url(0, ssl_password="k3y-pass", ssl_cert_reqs="Required")
    line = _one_line_error(_cli(url), 2)
    assert "ssl_cert_reqs='Required'" in line
    assert "k3y-pass" not in line
    wrong_ca = mtls.url(0, ssl_password="k3y-pass", ssl_ca_certs=certs.other_ca)
    assert "k3y-pass" not in _one_line_error(_cli(wrong_ca), 3)


_WORKER_APP_PROBE = """
import logging
logging.disable(logging.CRITICAL)
from sti_worker.app import app

def broker():
    connection = app.connection_for_write()
    connection.connect()
    return connection.default_channel.client.ping()

for name, ping in [("broker", broker), ("backend", lambda: app.backend.client.ping())]:
    try:
        print(name, ping())
    except Exception as error:
        print(name, type(error).__name__, str(error).strip().splitlines()[0])
"""


@pytest.mark.parametrize("trusted", [False, True], ids=["untrusted", "in the system's CAs"])
def test_the_worker_app_checks_a_url_that_names_no_ca_as_the_laptop_does(
    tls: TlsRedisServer, certs: Certificates, trusted: bool
) -> None:
    """A rediss:// URL with no ssl_* argument: kombu's transport took it for "do not check the
    certificate" and Celery's result backend refused it, where redis-py and sti-submit check the
    certificate against the system's CAs."""
    url = tls.url(0, ssl_cert_reqs=None, ssl_ca_certs=None)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SSL_CERT")}
    environment["STI_BROKER_URL"] = url
    if trusted:
        environment["SSL_CERT_FILE"] = str(certs.ca)
    probed = subprocess.run(
        [str(BIN / "python"), "-c", _WORKER_APP_PROBE],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert probed.returncode == 0, probed.stderr
    if trusted:
        assert probed.stdout.splitlines() == ["broker True", "backend True"]
        assert _cli_with(url, SSL_CERT_FILE=str(certs.ca)).returncode == 0
    else:
        for line in probed.stdout.splitlines():
            assert "CERTIFICATE_VERIFY_FAILED" in line, probed.stdout
        assert _cli(url).returncode == 3


class CelerySpelledWorker(Worker):
    """A worker given ssl_cert_reqs=CERT_REQUIRED, as Celery's documentation spells it; the
    helper watching it start uses redis-py, which takes the lower-case spelling only."""

    def _wait_registered(self) -> None:
        given, self.broker_url = self.broker_url, for_redis_py(self.broker_url)
        try:
            super()._wait_registered()
        finally:
            self.broker_url = given


@pytest.mark.slow
def test_one_url_serves_the_worker_and_the_laptop_through_the_queue(
    api: docker.APIClient,
    images: dict[str, str],
    mtls: TlsRedisServer,
    app_tag: str,
    tmp_path: Path,
) -> None:
    """A worker and sti-submit share a rediss:// URL with a private CA, a password and a client
    certificate, spelled as Celery's documentation spells it; a directory of a few MB streams to
    the worker in upload chunks over TLS."""
    url = mtls.url(5, ssl_cert_reqs="CERT_REQUIRED")
    source = make_source(tmp_path)
    payload = os.urandom(3 * 1024 * 1024 + 5)  # incompressible: several chunks of the upload
    (source / "static" / "blob.bin").write_bytes(payload)
    worker = CelerySpelledWorker(url, "tls-host", tmp_path, concurrency=1)
    try:
        completed = sti_submit(
            "build", str(source), images["sti-fake"], app_tag, "--broker", url, "--json",
            env={k: v for k, v in os.environ.items() if not k.startswith("SSL_CERT")},
        )  # fmt: skip
        assert completed.returncode == 0, completed.stderr + worker.log()[-3000:]
        result = json_result(completed)
        assert result["success"], result
        files = image_files(api, app_tag, "/sti-fake/src")
        assert files["static/blob.bin"] == payload
        assert files["index.html"] == b"<h1>hello</h1>\n"
        assert worker.process.poll() is None
    finally:
        worker.stop()
