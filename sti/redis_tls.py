"""The TLS settings of a rediss:// URL: its ssl_* arguments read as the workers' Redis clients
read them (redis-py, kombu's Redis transport, Celery's Redis result backend), into an SSLContext.

One URL means the same on the laptop and on the workers: an argument the workers cannot use, or a
spelling their clients read in different ways, is refused with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .errors import InvalidInput

if TYPE_CHECKING:
    import ssl

# kombu's and Celery's spellings; redis-py itself takes only the lower-case ones
CERT_REQS = {
    "required": "required",
    "optional": "optional",
    "none": "none",
    "CERT_REQUIRED": "required",
    "CERT_OPTIONAL": "optional",
    "CERT_NONE": "none",
}
KNOWN = (
    "ssl_cert_reqs",
    "ssl_check_hostname",
    "ssl_ca_certs",
    "ssl_ca_path",
    "ssl_ca_data",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_password",
    "ssl_ciphers",
)
# redis-py's other TLS arguments: the workers' broker connection (kombu) passes a URL's
# arguments on as text, so there these fail (a version or a flag as text) or do nothing (OCSP)
UNUSABLE = (
    "ssl_min_version",
    "ssl_include_verify_flags",
    "ssl_exclude_verify_flags",
    "ssl_validate_ocsp",
    "ssl_validate_ocsp_stapled",
    "ssl_ocsp_context",
    "ssl_ocsp_expected_cert",
)
# kombu reads every word but "false" as true, redis-py "0", "no", "off", "f" and "n" as false:
# only the words both read alike are taken
_TRUE_WORDS = ("true", "1", "yes", "on")
_FALSE_WORDS = ("false",)
# Celery's result backend decodes these a second time
_DECODED_TWICE = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
_SECRET = "ssl_password"  # never shown: redis_wire._masked masks it in a URL


@dataclass(frozen=True)
class TlsSettings:
    """How the client side of a TLS connection to Redis verifies the server and shows itself;
    the defaults (the server's certificate and name checked against the system's CAs) are
    redis-py's."""

    cert_reqs: str = "required"
    check_hostname: bool = True
    ca_certs: str | None = None
    ca_path: str | None = None
    ca_data: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    password: str | None = field(default=None, repr=False)
    ciphers: str | None = None

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> TlsSettings:
        """The settings of a rediss:// URL's TLS arguments (names and values decoded once)."""
        for name, value in query.items():
            _check_argument(name, value)
        if "ssl_keyfile" in query and "ssl_certfile" not in query:
            raise InvalidInput("ssl_keyfile needs ssl_certfile (the client certificate) too")
        return cls(
            cert_reqs=CERT_REQS[query.get("ssl_cert_reqs", "required")],
            check_hostname=query.get("ssl_check_hostname", "true").lower() in _TRUE_WORDS,
            ca_certs=query.get("ssl_ca_certs"),
            ca_path=query.get("ssl_ca_path"),
            ca_data=query.get("ssl_ca_data"),
            certfile=query.get("ssl_certfile"),
            keyfile=query.get("ssl_keyfile"),
            password=query.get(_SECRET),
            ciphers=query.get("ssl_ciphers"),
        )

    @property
    def verifies(self) -> bool:
        return self.cert_reqs != "none"

    def context(self) -> ssl.SSLContext:
        """An SSLContext made as redis-py's SSLConnection makes one; a file that cannot be read
        or a value OpenSSL refuses is InvalidInput naming its argument."""
        import ssl

        context = ssl.create_default_context()
        context.check_hostname = self.check_hostname and self.verifies
        context.verify_mode = {
            "required": ssl.CERT_REQUIRED,
            "optional": ssl.CERT_OPTIONAL,
            "none": ssl.CERT_NONE,
        }[self.cert_reqs]
        if self.certfile:
            with _loading(f"ssl_certfile={self.certfile!r}", "the client certificate and key"):
                context.load_cert_chain(self.certfile, self.keyfile, self._password)
        if self.ca_certs:
            with _loading(f"ssl_ca_certs={self.ca_certs!r}", "CA certificates"):
                context.load_verify_locations(cafile=self.ca_certs)
        if self.ca_path:
            if not os.path.isdir(self.ca_path):
                raise InvalidInput(f"ssl_ca_path={self.ca_path!r} is not a directory")
            context.load_verify_locations(capath=self.ca_path)
        if self.ca_data:
            with _loading("ssl_ca_data", "CA certificates"):
                context.load_verify_locations(cadata=self.ca_data)
        if self.ciphers:
            with _loading(f"ssl_ciphers={self.ciphers!r}", "ciphers"):
                context.set_ciphers(self.ciphers)
        return context

    def _password(self) -> str:
        """The key's passphrase, asked for only if the key is encrypted; never OpenSSL's prompt
        on the terminal, which would hang a script."""
        if self.password is None:
            raise InvalidInput(
                f"the key in ssl_keyfile={self.keyfile or self.certfile!r} is encrypted: give "
                "its passphrase as ssl_password"
            )
        return self.password


def _check_argument(name: str, value: str) -> None:
    if name in UNUSABLE:
        raise InvalidInput(
            f"{name} is not supported in a Redis URL: the workers' broker connection (kombu) "
            "cannot use it"
        )
    if name not in KNOWN:
        raise InvalidInput(f"{name!r} is not a TLS argument of a Redis URL ({', '.join(KNOWN)})")
    shown = "***" if name == _SECRET else repr(value)
    if not value:
        raise InvalidInput(f"{name} is empty")
    if name == "ssl_cert_reqs" and value not in CERT_REQS:
        raise InvalidInput(
            f"ssl_cert_reqs={shown} is not one of required, optional, none (or CERT_REQUIRED, "
            "CERT_OPTIONAL, CERT_NONE)"
        )
    if name == "ssl_check_hostname" and value.lower() not in _TRUE_WORDS + _FALSE_WORDS:
        raise InvalidInput(
            f"ssl_check_hostname={shown} is not true or false (the workers' clients read other "
            "words in different ways)"
        )
    if name in _DECODED_TWICE and "%" in value:
        raise InvalidInput(
            f"{name}={shown}: the workers' result backend decodes a '%' in it a second time; "
            "use a path without one"
        )


@contextmanager
def _loading(setting: str, what: str) -> Iterator[None]:
    """What OpenSSL or the file system says while loading one setting, as InvalidInput naming
    that setting."""
    try:
        yield
    except OSError as error:
        reason = error.strerror or " ".join(map(str, error.args)) or type(error).__name__
        if "PEM lib" in reason:
            reason += " (is it PEM? is ssl_password right?)"
        raise InvalidInput(f"{setting}: cannot load {what}: {reason}") from error


def handshake_refusal(error: OSError, settings: TlsSettings) -> str | None:
    """What a TLS error means to the user, when it is the handshake's verdict on a certificate
    (which trying again does not change); None for any other error."""
    import ssl

    if isinstance(error, ssl.SSLCertVerificationError):
        told = error.verify_message or error.reason or str(error)
        if "mismatch" in told:
            return f"the broker's TLS certificate is not valid for this address: {told}"
        return (
            f"the broker's TLS certificate is not trusted ({told}): give the CA that signed it "
            "as ssl_ca_certs=PATH in the URL"
        )
    reason = getattr(error, "reason", None) or ""
    if not isinstance(error, ssl.SSLError) or "ALERT" not in reason:
        return None
    if "CERTIFICATE" not in reason and "UNKNOWN_CA" not in reason:
        return None
    if not settings.certfile:
        return (
            f"the broker asks for a client certificate ({reason}): give ssl_certfile and "
            "ssl_keyfile in the URL"
        )
    return (
        f"the broker refused the client certificate ssl_certfile={settings.certfile!r} ({reason})"
    )


def for_redis_py(url: str) -> str:
    """url as redis-py's from_url reads it the way kombu and Celery read it: redis-py takes
    ssl_cert_reqs only in lower case (CERT_REQUIRED, Celery's own spelling, fails there)."""
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    spelled = [
        (name, CERT_REQS.get(value, value) if name == "ssl_cert_reqs" else value)
        for name, value in pairs
    ]
    if spelled == pairs:
        return url
    return urlunsplit(parts._replace(query=urlencode(spelled)))


def celery_tls_settings(broker_url: str, backend_url: str) -> dict[str, dict[str, object]]:
    """Celery settings under which a rediss:// URL that names no ssl_cert_reqs checks the
    server's certificate, as redis-py and sti-submit do: kombu's transport would not check it
    at all (it only warns), and Celery's result backend refuses such a URL. The URL's own ssl_*
    arguments still decide."""
    import ssl

    verify: dict[str, object] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    found: dict[str, dict[str, object]] = {}
    if urlsplit(broker_url).scheme.lower() == "rediss":
        found["broker_use_ssl"] = verify
    if urlsplit(backend_url).scheme.lower() == "rediss":
        found["redis_backend_use_ssl"] = verify
    return found
