"""gitignore patterns (the syntax of .gitignore, .stiignore and --exclude) matched without
regular expressions.

A glob turned into a regular expression backtracks: `*a*a*a*a*a*b` against a long name of a's
takes exponential time, and a submitter chooses both the patterns and the names. Here a
segment is matched by the two-pointer wildcard algorithm (at most pattern x name steps) and
`**` by a table over (pattern segment, path segment), so a match costs polynomial time with
small exponents whatever the input. Semantics as git's documentation states them (and as
pathspec's GitIgnoreSpec implements them, which a test compares against).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_STAR = object()  # "*": any run of characters but "/"
_ANY = object()  # "?": one character but "/"
_INSIDE = "inside"  # a trailing "/**": one or more whole names
MAX_PATTERN_CHARS = 4096
MAX_PATTERNS = 10_000


class PatternError(ValueError):
    pass


@dataclass(frozen=True)
class _CharClass:
    negated: bool
    ranges: tuple[tuple[str, str], ...]

    def matches(self, char: str) -> bool:
        inside = any(low <= char <= high for low, high in self.ranges)
        return inside != self.negated and char != "/"


Token = object  # a literal str of one character, _STAR, _ANY or a _CharClass
Segment = tuple[Token, ...] | str | None  # None is "**": any number of whole names


@dataclass(frozen=True)
class Pattern:
    segments: tuple[Segment, ...]
    negated: bool
    directories_only: bool
    anchored: bool


def parse(line: str) -> Pattern | None:
    """One line of a gitignore file; None for a blank line or a comment."""
    if len(line) > MAX_PATTERN_CHARS:
        raise PatternError(f"a pattern longer than {MAX_PATTERN_CHARS} characters: {line[:40]}...")
    line = _strip_trailing_spaces(line.rstrip("\r\n"))
    if not line or line.startswith("#"):
        return None
    negated = line.startswith("!")
    if negated:
        line = line[1:]
    directories_only = line.endswith("/") and not line.endswith("\\/")
    line = line.rstrip("/") if directories_only else line
    if not line:
        return None
    anchored = "/" in line
    parts = [part for part in line.split("/") if part]
    if not parts:
        return None
    segments: list[Segment] = []
    for part in parts:
        segment = None if part == "**" else _tokens(part)
        if segment is None and segments and segments[-1] is None:
            continue  # "**/**" is "**"
        segments.append(segment)
    if len(segments) > 1 and segments[-1] is None:
        segments[-1] = _INSIDE  # "dir/**" is what is inside dir, not dir itself
    if not anchored:
        segments.insert(0, None)  # a name without "/" matches at any depth
    return Pattern(tuple(segments), negated, directories_only, anchored)


def compile_patterns(lines: Iterable[str]) -> list[Pattern]:
    patterns = []
    for count, line in enumerate(lines, start=1):
        if count > MAX_PATTERNS:
            raise PatternError(f"more than {MAX_PATTERNS} patterns")
        pattern = parse(line)
        if pattern is not None:
            patterns.append(pattern)
    return patterns


def is_ignored(patterns: Sequence[Pattern], path: str) -> bool:
    """Whether path (relative, POSIX, a directory ending in "/") is left out: the last pattern
    that matches it decides. Callers walk top-down and skip what is inside an ignored
    directory, as git does (a file in it cannot be included again)."""
    is_directory = path.endswith("/")
    names = tuple(name for name in path.split("/") if name)
    ignored = False
    for pattern in patterns:
        if pattern.directories_only and not is_directory:
            continue
        if _matches(pattern.segments, names):
            ignored = not pattern.negated
    return ignored


def _matches(segments: tuple[Segment, ...], names: tuple[str, ...]) -> bool:
    """A table, from the last segment back: rest[j] is whether segments[i:] match names[j:]."""
    rest = [False] * len(names) + [True]
    for segment in reversed(segments):
        if segment is None or segment == _INSIDE:  # zero (or one) or more whole names
            row, later = [False] * (len(names) + 1), False
            for index in range(len(names), -1, -1):
                row[index] = later or (segment is None and rest[index])
                later = later or rest[index]
        else:
            assert isinstance(segment, tuple)
            row = [
                rest[index + 1] and _segment_matches(segment, names[index])
                for index in range(len(names))
            ] + [False]
        rest = row
    return rest[0]


def _segment_matches(tokens: tuple[Token, ...], name: str) -> bool:
    """The classic wildcard algorithm: on a mismatch, go back to just after the last "*" and
    let it take one more character; at most len(tokens) x len(name) steps."""
    token_index = name_index = 0
    star, resume = -1, 0
    while name_index < len(name):
        if token_index < len(tokens) and tokens[token_index] is _STAR:
            star, resume = token_index, name_index
            token_index += 1
        elif token_index < len(tokens) and _token_matches(tokens[token_index], name[name_index]):
            token_index += 1
            name_index += 1
        elif star >= 0:
            token_index, resume = star + 1, resume + 1
            name_index = resume
        else:
            return False
    while token_index < len(tokens) and tokens[token_index] is _STAR:
        token_index += 1
    return token_index == len(tokens)


def _token_matches(token: Token, char: str) -> bool:
    if token is _ANY:
        return char != "/"
    if isinstance(token, _CharClass):
        return token.matches(char)
    return token == char


def _tokens(part: str) -> tuple[Token, ...]:
    tokens: list[Token] = []
    index = 0
    while index < len(part):
        char = part[index]
        if char == "\\" and index + 1 < len(part):
            tokens.append(part[index + 1])
            index += 2
            continue
        if char == "*":
            if not tokens or tokens[-1] is not _STAR:  # "**" inside a name is "*"
                tokens.append(_STAR)
        elif char == "?":
            tokens.append(_ANY)
        elif char == "[" and (parsed := _char_class(part, index)) is not None:
            char_class, index = parsed
            tokens.append(char_class)
            continue
        else:
            tokens.append(char)
        index += 1
    return tuple(tokens)


def _char_class(part: str, start: int) -> tuple[_CharClass, int] | None:
    """The class starting at part[start] == "[" and the index after it; None if unclosed (the
    "[" is then a literal)."""
    index = start + 1
    negated = index < len(part) and part[index] in "!^"
    index += negated
    ranges: list[tuple[str, str]] = []
    first = True
    while index < len(part):
        char = part[index]
        if char == "]" and not first:
            return _CharClass(negated, tuple(ranges)), index + 1
        if char == "\\" and index + 1 < len(part):
            index += 1
            char = part[index]
        if index + 2 < len(part) and part[index + 1] == "-" and part[index + 2] != "]":
            high = part[index + 2]
            if high == "\\" and index + 3 < len(part):
                high = part[index + 3]
                index += 1
            ranges.append((char, high))
            index += 3
        else:
            ranges.append((char, char))
            index += 1
        first = False
    return None


def _strip_trailing_spaces(line: str) -> str:
    while line.endswith(" ") and not line.endswith("\\ "):
        line = line[:-1]
    if line.endswith("\\ "):
        line = line[:-2] + " "
    return line
