"""How an uploaded source is named in a build request (light: the client imports it).

A reference is sti+upload://<blob>/<kind>[/<file name>], blob being the content's digest
(sha256:<hex>) or, for a directory the client sends while the build starts, the upload's name
(upload:<hex>); kind being dir (a tar the client packed, as zstd frames; a tar.gz from an older
client), archive (a user's archive, named for its kind), file (delivered as is) or delta (a
packed directory's changes since the whole upload named after it by its digest: see sti.deltas).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote

from .blobstore import check_blob, check_digest
from .errors import InvalidInput

SCHEME = "sti+upload://"
KINDS = ("dir", "archive", "file", "delta")
NAMELESS_KINDS = ("dir",)
PACKED_DIR_PREFIX = "src"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # how a zstd frame begins


@dataclass(frozen=True)
class UploadRef:
    blob: str  # a digest, or an upload's name (see blobstore)
    kind: str
    name: str = ""

    @property
    def blobs(self) -> tuple[str, ...]:
        """What the source is read from: the blob, and a delta's base."""
        return (self.blob, self.name) if self.kind == "delta" else (self.blob,)

    def __str__(self) -> str:
        suffix = f"/{quote(self.name, safe='')}" if self.name else ""
        return f"{SCHEME}{self.blob}/{self.kind}{suffix}"

    @classmethod
    def parse(cls, source: str) -> UploadRef:
        if not source.startswith(SCHEME):
            raise InvalidInput(f"{source!r} is not an uploaded source")
        blob, _, rest = source[len(SCHEME) :].partition("/")
        kind, _, name = rest.partition("/")
        if kind not in KINDS or (kind not in NAMELESS_KINDS) != bool(name):
            raise InvalidInput(f"uploaded source reference {source!r} is malformed")
        if kind == "delta":  # its base is a whole upload, stored by its content
            return cls(check_digest(blob), kind, check_digest(unquote(name)))
        return cls(check_blob(blob), kind, unquote(name))
