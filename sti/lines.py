"""Output lines held to a size in bytes: each line a build prints, and the lines gathered into
one result (a usage script's output), cut with a note saying where."""

from __future__ import annotations

from .redaction import redact

LINE_MAX_BYTES = 16 * 1024  # STI_LOG_LINE_MAX_BYTES
LOG_MAX_BYTES = 16 * 1024**2  # STI_LOG_MAX_BYTES
USAGE_MAX_BYTES = 64 * 1024  # STI_USAGE_MAX_BYTES
# one text of an error, a result or a worker log line: they can quote a build's output
TEXT_MAX_BYTES = 64 * 1024
_UTF8_MAX = 4  # bytes of one character


def utf8_size(text: str) -> int:
    """text's size in UTF-8 (a lone surrogate counted as the 3 bytes it would take)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def cut_line(line: str, max_bytes: int, *, cut: bool = False) -> str:
    """line, or its start and a note saying it was cut, max_bytes in all (also when cut says
    that its reader already left some of it out). A URL's userinfo whose "@" the cut took is
    masked whole; a cut line is cut no more."""
    if not cut and len(line) * _UTF8_MAX <= max_bytes:
        return line  # the common case: far below the cap, whatever its characters
    encoded = line.encode("utf-8", "surrogatepass")
    if not cut and len(encoded) <= max_bytes:
        return line
    note = f"… [line cut at {max_bytes} bytes]"
    room = max(max_bytes - utf8_size(note), 0)
    kept = encoded[:room].decode("utf-8", "ignore")  # a character split by the cut goes
    masked = redact(kept, cut=True)
    if len(masked) > len(kept):
        # a mask can be longer than what it hides; cutting masked text shows nothing it hid
        masked = masked.encode("utf-8")[:room].decode("utf-8", "ignore")
    return masked + note


def shown_line(line: str, max_bytes: int) -> str:
    """line as it may be shown or stored: credentials masked, max_bytes at most (masks
    included), cut with a note past it."""
    if len(line) * _UTF8_MAX <= max_bytes and "://" not in line:
        return line  # the common case: nothing to cut or mask
    masked = redact(cut_line(line, max_bytes))
    return masked if len(masked) == len(line) else cut_line(masked, max_bytes)


def storable(text: str) -> str:
    """text as UTF-8 can carry it: a lone surrogate (a name read with surrogateescape, a
    message's "\\udcff") written as its escape."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class BoundedLines:
    """Lines gathered up to max_bytes in all; past it one last line says they were cut, naming
    the setting that sets the cap."""

    def __init__(self, max_bytes: int, setting: str) -> None:
        self.lines: list[str] = []
        self._max_bytes = max_bytes
        self._setting = setting
        self._bytes = 0
        self._cut = False

    @property
    def full(self) -> bool:
        """Whether the lines were cut: nothing appended now is kept."""
        return self._cut

    def append(self, line: str) -> None:
        if self._cut:
            return
        self._bytes += utf8_size(line) + 1  # and its newline
        if self._bytes > self._max_bytes:
            self._cut = True
            self.lines.append(
                f"[output cut at {self._max_bytes} bytes ({self._setting}); the rest is left out]"
            )
            return
        self.lines.append(line)
