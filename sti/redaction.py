"""Credentials out of everything sti prints or stores: `scheme://user:token@host` becomes
`scheme://***@host` in log lines, result messages and worker logs.

Masking finds each "://" and the end of the authority after it with plain searches, each part of
the text read a bounded number of times: no input costs more than a few passes over it (a
backtracking pattern took minutes over a megabyte of "a.a.a.").
"""

from __future__ import annotations

import re

MASK = "***"
_SEPARATOR = "://"
# what ends the authority: whitespace and the path, nothing else. A userinfo may hold quotes
# and brackets as they are (RFC 3986 allows ' ( ) and more; git takes any character before the
# first "/"), so a quote or a bracket after a URL in a message is masked with it when an "@"
# follows before the next space: masking too much is safe, too little is not. One character
# class, so a search cannot backtrack.
_AUTHORITY_END = re.compile(r"[\s/]")


def redact(text: str, *, cut: bool = False) -> str:
    """text with the userinfo of every URL in it masked: everything between "://" and the last
    "@" before the authority ends (git, ssh and curl take the host after the last "@", "?" and
    "#" included). cut: text was cut at its end, so an authority reaching it is masked whole
    (its "@" may have been cut off)."""
    if _SEPARATOR not in text or ("@" not in text and not cut):
        return text
    kept: list[str] = []
    done = 0  # text[:done] is in kept
    start = text.find(_SEPARATOR)
    while start != -1:
        userinfo = start + len(_SEPARATOR)
        ended = _AUTHORITY_END.search(text, userinfo)
        end = ended.start() if ended else len(text)
        at = end if cut and ended is None else text.rfind("@", userinfo, end)
        if at != -1:
            kept += (text[done:userinfo], MASK)
            done = at
        # the authority holds no "/": a separator starts at its last character at the earliest
        start = text.find(_SEPARATOR, end - 1)
    kept.append(text[done:])
    return "".join(kept)
