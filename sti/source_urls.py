"""Source URLs read one way only: the way git, ssh and curl read them, or refused (light: the
client imports it).

Two readers of one URL must not find two hosts in it. git percent-decodes a git:// or ssh://
URL before it looks for the host, takes everything up to the first "/" as the authority (a "#"
or "?" included) and unwraps "[...]" wherever it follows an "@"; ssh takes the host after the
last "@". So an authority is held to what every reader splits alike: at most one "@", a host
name, a dotted address or an [IPv6] literal, a port from 1 to 65535, no percent-escape in the
host, and (for the transports git decodes) nothing in the decoded path that git would take for
part of the host. Whatever a reader could split differently is refused with the value named.

describe() is how a URL is shown and recorded: credentials and query values masked, and no
character that could start a line of its own.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import unquote

from .errors import InvalidInput

MAX_URL_CHARS = 4096
MASK = "***"

# scheme as written -> the transport git uses for it (git+ssh and ssh+git are git's old names)
GIT_TRANSPORTS = {
    "http": "http",
    "https": "https",
    "git": "git",
    "ssh": "ssh",
    "git+ssh": "ssh",
    "ssh+git": "ssh",
}
DEFAULT_PORTS = {"http": 80, "https": 443, "git": 9418, "ssh": 22}

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_PRINTABLE_ASCII = re.compile(r"[!-~]*")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# RFC 3986 userinfo (credentials may be percent-encoded)
_USERINFO = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:%-]+")
# an ssh login name: ssh hands it to ProxyCommand and friends as %r, so nothing a shell reads
_SSH_USER = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._~-]*")
_HOST_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*")
_PORT = re.compile(r"[0-9]{1,5}")
# a path git has decoded: no escape left to mean something else, no "[" for git to unwrap
_DECODED_PATH = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@/-]+")


@dataclass(frozen=True)
class Remote:
    """Where a URL leads: the transport, the host (a lower-case name, or an address as
    ipaddress writes it, brackets off), the port if given, the userinfo as written, and the rest
    (the path, and over http(s) a query and fragment) as written."""

    transport: str
    host: str
    port: int | None
    userinfo: str | None
    rest: str
    scp_like: bool = False

    @property
    def effective_port(self) -> int:
        return self.port or DEFAULT_PORTS[self.transport]

    @property
    def host_is_address(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    @property
    def has_password(self) -> bool:
        return self.userinfo is not None and ":" in self.userinfo

    def spelled(self, host: str | None = None) -> str:
        """This remote as a URL its reader takes exactly so: with host (an address judged for
        it) in place of its own host, if given."""
        name = host or self.host
        user = f"{self.userinfo}@" if self.userinfo else ""
        if self.scp_like:
            return f"{user}{name}:{self.rest}"
        shown = f"[{name}]" if ":" in name else name
        port = f":{self.port}" if self.port else ""
        return f"{self.transport}://{user}{shown}{port}{self.rest}"

    @property
    def host_and_port(self) -> str:
        """The host as the URL names it, with its port if it names one (git's virtual host)."""
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"{shown}:{self.port}" if self.port else shown


def scheme_of(url: str) -> str | None:
    """The scheme of a scheme://... URL as written, else None."""
    found = _SCHEME.match(url)
    return found.group(1) if found else None


def remote_is_web(url: str) -> bool:
    return url.startswith(("http://", "https://"))


def is_scp_like(url: str) -> bool:
    """Whether git takes url for scp-like ssh ([user@]host:path): a ":" with no "/" before it,
    and no scheme."""
    colon = url.find(":")
    slash = url.find("/")
    return colon > 0 and (slash < 0 or slash > colon) and scheme_of(url) is None


def check_source_url(source: str) -> None:
    """Refuse a SOURCE written as an http(s), git or ssh URL that is not one URL to every reader
    (the worker's git checks hold it to more). Other sources (paths, scp-like, other schemes)
    are left to the side that fetches them."""
    scheme = scheme_of(source)
    if scheme is None or scheme.lower() not in GIT_TRANSPORTS:
        return
    parse_url(source, "SOURCE", query=remote_is_web(source))


def parse_url(url: str, what: str, *, query: bool = True) -> Remote:
    """url as scheme://[userinfo@]host[:port][/path][?query][#fragment] of an http(s), git or
    ssh scheme (query: whether a query and a fragment may follow), or an InvalidInput naming
    what and the value."""
    _check_characters(url, what)
    scheme = scheme_of(url)
    if scheme is None or scheme not in GIT_TRANSPORTS:
        raise _unknown_scheme(url, what, scheme)
    rest = url[len(scheme) + 3 :]
    end = _authority_end(rest)
    userinfo, host, port = _authority(rest[:end], url, what)
    tail = rest[end:]  # past the authority, no reader splits differently: only escapes matter
    if _BAD_ESCAPE.search(tail):
        raise InvalidInput(f"{what} {_shown(url)} holds a '%' that starts no escape (%25 is '%')")
    if not query and ("?" in tail or "#" in tail):
        raise InvalidInput(f"{what} {_shown(url)} takes no query or fragment")
    return Remote(GIT_TRANSPORTS[scheme], host, port, userinfo, tail)


def parse_git_url(url: str) -> Remote:
    """A git remote URL (http, https, git, ssh, git+ssh, ssh+git, or scp-like [user@]host:path)
    as git itself reads it, or an InvalidInput. A file:// URL or a local path is not a remote."""
    what = "git URL"
    _check_characters(url, what)
    if scheme_of(url) is None:
        if is_scp_like(url) and "://" not in url:  # git takes any "://" for a scheme's end
            return _parse_scp_like(url)
        raise InvalidInput(f"{what} {_shown(url)} is not a URL or [user@]host:path")
    # over http(s) a query is the server's business (curl reads it alike); git and ssh would
    # take one for part of the host or path
    remote = parse_url(url, what, query=remote_is_web(url))
    if "#" in remote.rest:
        raise InvalidInput(f"{what} {_shown(url)} takes no fragment")
    if remote.rest.partition("?")[0] in ("", "/"):
        raise InvalidInput(f"{what} {_shown(url)} names no repository path")
    if remote.transport in ("git", "ssh"):
        _check_decoded(remote, url, what)
    return remote


def _check_decoded(remote: Remote, url: str, what: str) -> None:
    """git decodes git:// and ssh:// URLs whole before it finds the host: the userinfo must
    not change in decoding, and the decoded path must hold nothing git reads as a host."""
    if remote.transport == "git" and remote.userinfo is not None:
        raise InvalidInput(f"{what} {_shown(url)}: git:// takes no user name")
    if remote.userinfo is not None and not _SSH_USER.fullmatch(remote.userinfo):
        raise InvalidInput(
            f"{what} {_shown(url)}: an ssh user name is letters, digits and ._~- only "
            "(no password, no percent-escape)"
        )
    if not _DECODED_PATH.fullmatch(unquote(remote.rest)):
        raise InvalidInput(
            f"{what} {_shown(url)}: its path, decoded as git decodes it, holds '%', '[', ']' "
            "or a character a path cannot"
        )


def _parse_scp_like(url: str) -> Remote:
    what = "git URL"
    head, _, path = url.partition(":")
    if head.count("@") > 1:
        raise InvalidInput(f"{what} {_shown(url)} has more than one '@' before its path")
    user, _, host = head.rpartition("@") if "@" in head else (None, "", head)
    if user is not None and not _SSH_USER.fullmatch(user):
        raise InvalidInput(
            f"{what} {_shown(url)}: an ssh user name is letters, digits and ._~- only"
        )
    if not _HOST_NAME.fullmatch(host.removesuffix(".")):
        raise InvalidInput(
            f"{what} {_shown(url)}: the host of a [user@]host:path URL must be a plain host name "
            "or IPv4 address (write ssh://[address]/path for IPv6)"
        )
    if path.startswith("-") or not _DECODED_PATH.fullmatch(path):
        raise InvalidInput(
            f"{what} {_shown(url)}: the path of a [user@]host:path URL must be a plain path"
        )
    return Remote("ssh", _host_name(host, url, what), None, user, path, scp_like=True)


def _check_characters(url: str, what: str) -> None:
    if len(url) > MAX_URL_CHARS:
        raise InvalidInput(f"{what} {_shown(url[:100])}... is longer than {MAX_URL_CHARS} chars")
    if not _PRINTABLE_ASCII.fullmatch(url):
        raise InvalidInput(
            f"{what} {_shown(url)} holds a space, a control or a non-ASCII character "
            "(percent-encode it)"
        )
    if "\\" in url:
        raise InvalidInput(f"{what} {_shown(url)} holds a backslash, which readers split apart")


def _unknown_scheme(url: str, what: str, scheme: str | None) -> InvalidInput:
    if scheme and scheme.lower() in GIT_TRANSPORTS:
        return InvalidInput(f"{what} {_shown(url)}: write its scheme in lower case")
    return InvalidInput(f"{what} {_shown(url)}: sti fetches only {', '.join(GIT_TRANSPORTS)} URLs")


def _authority_end(rest: str) -> int:
    """Where the authority ends: at the first "/", "?" or "#" (git's end, the first "/", is the
    same once "?" and "#" in a git URL are refused)."""
    ends = [index for index in (rest.find(c) for c in "/?#") if index >= 0]
    return min(ends, default=len(rest))


def _authority(text: str, url: str, what: str) -> tuple[str | None, str, int | None]:
    if text.count("@") > 1:
        raise InvalidInput(f"{what} {_shown(url)} has more than one '@' before its path")
    userinfo, _, host_port = text.rpartition("@") if "@" in text else (None, "", text)
    if userinfo is not None and (not _USERINFO.fullmatch(userinfo) or _BAD_ESCAPE.search(userinfo)):
        raise InvalidInput(f"{what} {_shown(url)}: its user name or password is not URL text")
    if host_port.startswith("["):
        literal, bracket, port_text = host_port[1:].partition("]")
        if not bracket or (port_text and not port_text.startswith(":")):
            raise InvalidInput(f"{what} {_shown(url)}: '[' opens an IPv6 address it never closes")
        host = _ipv6(literal, url, what)
        port = _port(port_text[1:], url, what) if port_text else None
        return userinfo, host, port
    if "[" in host_port or "]" in host_port:
        raise InvalidInput(f"{what} {_shown(url)}: '[' or ']' outside an [IPv6] address")
    name, colon, port_text = host_port.partition(":")
    port = _port(port_text, url, what) if colon else None
    return userinfo, _host_name(name, url, what), port


def _ipv6(literal: str, url: str, what: str) -> str:
    try:
        if "%" in literal:
            raise ValueError("a zone")
        return str(ipaddress.IPv6Address(literal))
    except ValueError:
        raise InvalidInput(
            f"{what} {_shown(url)}: [{literal}] is not an IPv6 address (without a zone)"
        ) from None


def _host_name(name: str, url: str, what: str) -> str:
    """A host name, lower case, without the trailing dot of an absolute name; an IPv4 address in
    any form inet_aton reads (2130706433, 0x7f.1) written as the dotted address it is."""
    bare = name.removesuffix(".")
    if not bare:
        raise InvalidInput(f"{what} {_shown(url)} needs a host")
    if not _HOST_NAME.fullmatch(bare) or len(bare) > 253:
        raise InvalidInput(
            f"{what} {_shown(url)}: host {name!r} is not a host name (letters, digits, '-', "
            "'_' and dots; percent-escapes and other characters are refused)"
        )
    try:
        return socket.inet_ntoa(socket.inet_aton(bare))
    except OSError:
        return bare.lower()


def _port(text: str, url: str, what: str) -> int:
    if not _PORT.fullmatch(text) or not 1 <= int(text) <= 65535:
        raise InvalidInput(f"{what} {_shown(url)}: port {text!r} is not a number from 1 to 65535")
    return int(text)


# showing


def describe(text: str) -> str:
    """text (a URL, a path, a source) as shown in logs, messages and labels: a URL's userinfo
    and the values of its query (presigned URLs carry their signature there) masked, its
    fragment too, and every unprintable character escaped, so it stays on one line."""
    return _escaped(_masked(text) if "://" in text else text)


def scrubbed(text: str, url: str) -> str:
    """text (what a library that fetched url said) on one line, with every URL in it shown as
    describe() shows one, every query in it masked, and url's own userinfo however it stands:
    a library names a URL its own way (requests re-quotes a query, urllib3 names only the path
    and query, a redirect names a URL of the server's)."""
    if "://" in url:
        head = url.partition("://")[2]
        userinfo = head[: head.rfind("@", 0, _authority_end(head)) + 1]
        if len(userinfo) > 1:
            text = text.replace(userinfo, f"{MASK}@")
    text = _URL_IN_TEXT.sub(lambda found: _masked(found[0]), text)
    text = _QUERY_IN_TEXT.sub(lambda found: _masked_query(found[0]), text)
    return _escaped(text)


# a URL, or a query, as running text holds one: up to a space, a quote or a bracket
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()]*")
_QUERY_IN_TEXT = re.compile(r"\?[^\s'\"<>()]+")


def _escaped(text: str) -> str:
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def _masked(url: str) -> str:
    head, _, rest = url.partition("://")
    # the widest authority any reader takes (git's: up to the first "/"), to its last "@"
    authority_end = rest.find("/") if "/" in rest else len(rest)
    at = rest.rfind("@", 0, authority_end)
    if at >= 0:
        rest = MASK + rest[at:]
    cut = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=-1)
    if cut < 0:
        return f"{head}://{rest}"
    before, tail = rest[:cut], rest[cut:]
    query, hash_mark, fragment = tail.partition("#")
    masked_query = _masked_query(query) if query else ""
    return f"{head}://{before}{masked_query}{hash_mark}{MASK if fragment else ''}"


def _masked_query(query: str) -> str:
    """?name=value&... with each value masked (a value alone, too)."""
    return "?" + "&".join(_masked_pair(pair) for pair in query[1:].split("&"))


def _masked_pair(pair: str) -> str:
    name, equals, value = pair.partition("=")
    if equals:
        return f"{name}={MASK if value else ''}"
    return MASK if pair else ""


def _shown(url: str) -> str:
    return repr(describe(url[:300]))
