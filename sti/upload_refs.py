"""How an uploaded source is named in a build request (light: the client imports it).

A reference is sti+upload://sha256:<hex>/<kind>[/<file name>], kind being dir (a tar the
client packed, as zstd frames; a tar.gz from an older client), archive (a user's archive, named
for its kind) or file (delivered as is).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote

from .blobstore import check_digest
from .errors import InvalidInput

SCHEME = "sti+upload://"
KINDS = ("dir", "archive", "file")
PACKED_DIR_PREFIX = "src"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # how a zstd frame begins


@dataclass(frozen=True)
class UploadRef:
    digest: str
    kind: str
    name: str = ""

    def __str__(self) -> str:
        suffix = f"/{quote(self.name, safe='')}" if self.name else ""
        return f"{SCHEME}{self.digest}/{self.kind}{suffix}"

    @classmethod
    def parse(cls, source: str) -> UploadRef:
        if not source.startswith(SCHEME):
            raise InvalidInput(f"{source!r} is not an uploaded source")
        digest, _, rest = source[len(SCHEME) :].partition("/")
        kind, _, name = rest.partition("/")
        if kind not in KINDS or (kind != "dir") != bool(name):
            raise InvalidInput(f"uploaded source reference {source!r} is malformed")
        return cls(check_digest(digest), kind, unquote(name))
