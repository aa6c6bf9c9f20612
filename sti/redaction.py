"""Credentials out of everything sti prints or stores: `scheme://user:token@host` becomes
`scheme://***@host` in log lines, result messages and worker logs."""

from __future__ import annotations

import re

# the userinfo of a URL: after "scheme://", up to the "@" that ends it (no "/", "?", "#" or space)
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^\s/?#@]*@")
MASK = "***"


def redact(text: str) -> str:
    """text with the userinfo of every URL in it masked."""
    if "@" not in text:
        return text
    return _USERINFO.sub(rf"\g<scheme>{MASK}@", text)
