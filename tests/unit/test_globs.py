"""gitignore patterns without regular expressions: what a walk keeps is what pathspec's
GitIgnoreSpec keeps, and a hostile pattern or name costs milliseconds, not hours."""

from __future__ import annotations

import time
from collections.abc import Callable

import pathspec
import pytest

from sti.globs import MAX_PATTERN_CHARS, PatternError, compile_patterns, is_ignored

TREE = [
    "README.md",
    "app.py",
    "app.pyc",
    "debug.log",
    ".env",
    ".git/",
    ".git/config",
    "build/",
    "build/out.o",
    "build/keep.txt",
    "docs/",
    "docs/build/",
    "docs/build/index.html",
    "docs/guide.md",
    "docs/guide.log",
    "src/",
    "src/main.py",
    "src/main.pyc",
    "src/a/",
    "src/a/b/",
    "src/a/b/deep.txt",
    "src/a/b/c.log",
    "src/a/b/c.log.1",
    "src/node_modules/",
    "src/node_modules/x.js",
    "node_modules/",
    "node_modules/y.js",
    "foo",
    "foo/",
    "foo/bar.txt",
    "logs/",
    "logs/today.log",
    "logs/keep/",
    "logs/keep/x.log",
    "a b.txt",
    "weird[1].txt",
    "#notes",
    "!important",
    "x.min.js",
    "vendor/",
    "vendor/lib/",
    "vendor/lib/v.py",
]

PATTERN_SETS = [
    ["*.pyc"],
    ["*.log", "!logs/keep/*.log"],
    ["build/"],
    ["/build"],
    ["build"],
    ["**/build/"],
    ["docs/**/*.html"],
    ["src/**/b"],
    ["**/node_modules"],
    ["/node_modules/"],
    ["src/*/b/*.log"],
    ["*.log*", "!*.log.1"],
    ["?pp.py"],
    ["[abc]pp.*"],
    ["[!a]*.md"],
    ["*.[ch]", "*.[a-z]og"],
    ["a\\ b.txt"],
    ["weird\\[1\\].txt"],
    ["\\#notes", "\\!important"],
    ["# a comment", "", "   ", "app.py   "],
    ["**"],
    ["foo/"],
    ["*.min.*"],
    ["src/a/**/*.txt"],
    ["/*.py"],
    ["logs/*", "!logs/keep/"],
]


def _kept(tree: list[str], ignored: Callable[[str], bool]) -> list[str]:
    """A top-down walk that does not enter an ignored directory."""
    kept = []
    for path in tree:
        parents = [path[: index + 1] for index, char in enumerate(path[:-1]) if char == "/"]
        if any(ignored(parent) for parent in parents) or ignored(path):
            continue
        kept.append(path)
    return kept


@pytest.mark.parametrize("lines", PATTERN_SETS, ids=[" | ".join(p) for p in PATTERN_SETS])
def test_a_walk_keeps_what_pathspec_keeps(lines: list[str]) -> None:
    ours = compile_patterns(lines)
    theirs = pathspec.GitIgnoreSpec.from_lines(lines)
    assert _kept(TREE, lambda path: is_ignored(ours, path)) == _kept(TREE, theirs.match_file)


def _kept_by(lines: list[str]) -> list[str]:
    patterns = compile_patterns(lines)
    return _kept(TREE, lambda path: is_ignored(patterns, path))


def test_dir_slash_double_star_is_what_is_inside_as_git_says() -> None:
    """pathspec also leaves out the directory itself (an empty directory entry in a tar)."""
    kept = _kept_by(["docs/**"])
    assert "docs/" in kept
    assert [path for path in kept if path.startswith("docs/") and path != "docs/"] == []
    assert "vendor/lib/v.py" in _kept_by(["vendor/**/", "!vendor/lib/"])


def test_only_python_files_with_the_usual_idiom() -> None:
    """git's own example; pathspec leaves out every directory, so src/main.py too."""
    kept = _kept_by(["*", "!*.py", "!*/"])
    assert [path for path in kept if not path.endswith("/")] == [
        "app.py",
        "src/main.py",
        "vendor/lib/v.py",
    ]


HOSTILE = [
    "*a" * 200 + "*b",
    "**/" * 500 + "x",
    "a/" + "**/*/" * 200 + "b",
    "[" * 2000,
    "?" * 3000 + "*" * 1000,
    "*[a-z]*[a-z]*[a-z]*[a-z]*[a-z]*[a-z]*[a-z]*[a-z]*z",
]


@pytest.mark.parametrize("line", HOSTILE, ids=range(len(HOSTILE)))
def test_a_hostile_pattern_against_hostile_names_is_decided_in_milliseconds(line: str) -> None:
    patterns = compile_patterns([line])
    paths = ["a" * 255, "a/" * 1000 + "c", ("a" * 200 + "/") * 20 + "x/", "x" * 4000]
    started = time.monotonic()
    for path in paths:
        is_ignored(patterns, path)
    assert time.monotonic() - started < 2


def test_an_overlong_pattern_is_refused() -> None:
    with pytest.raises(PatternError, match=str(MAX_PATTERN_CHARS)):
        compile_patterns(["x" * (MAX_PATTERN_CHARS + 1)])
