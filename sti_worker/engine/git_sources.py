"""git sources: fetched by URL into a fresh repository, submodules level by level the same way.

Every remote (the source's, each submodule's as git would resolve it) is read once, strictly
(sti.source_urls), judged by the source policy, and reached at the address judged: http(s)
through curl's resolve pin, git:// by that address in the URL (the name still sent as the
virtual host), ssh by HostName (host keys still checked against the name). No remote is
configured and no credential helper runs for a URL with a password, so credentials go to the
fetch alone and are written nowhere in the checkout.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sti.errors import InvalidInput, SourceFetchFailed
from sti.source_urls import Remote, describe, is_scp_like, parse_git_url, scheme_of, scrubbed

from .archives import ExtractLimits
from .sources import (
    FetchedSource,
    LogSink,
    SourcePolicy,
    check_git_url,
    judged_addresses,
)
from .trees import measure_tree

if TYPE_CHECKING:
    import git

_SAFE_REF = re.compile(r"^[A-Za-z0-9._/@{}^~+][A-Za-z0-9._/@{}^~+-]*$")
_COMMIT = re.compile(r"^[0-9a-f]{7,40}$")
_FULL_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_GIT_TIMEOUT_S = 600
_MAX_SUBMODULES = 100
_SSH = "ssh -o BatchMode=yes"
_ENV = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_SSH_COMMAND": _SSH,
    "GIT_SSH_VARIANT": "ssh",
    "GIT_LITERAL_PATHSPECS": "1",  # a path from .gitmodules is a path, not a pattern
}
_CONFIG = (
    "-c",
    "http.followRedirects=false",  # a redirect would lead past the address check
    "-c",
    "core.logAllRefUpdates=false",  # a reflog would keep the fetch's command line (its URL)
)
# what git writes for a commit, as s2i reads it (git show -s --format=%an/%ae/%ad/%s)
_FACTS_FORMAT = "--format=%H%x00%an <%ae>%x00%ad%x00%s"
_MODULES_DIR = "sti-modules"  # submodules' git dirs, in the top-level .git as git's modules/


@dataclass(frozen=True)
class GitRemote:
    """How git reaches one remote: the URL it is given (credentials and all: never stored),
    and the config options and environment that hold it to the addresses judged."""

    url: str
    config: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)


def check_git_ref(ref: str) -> None:
    if not _SAFE_REF.fullmatch(ref) or ".." in ref:
        raise InvalidInput(f"--ref {ref!r} is not a valid git branch, tag or commit")


def reach(url: str, policy: SourcePolicy) -> GitRemote:
    """url checked (check_git_url), its host judged, and how git fetches from that address."""
    check_git_url(url, policy)
    if scheme_of(url) == "file" or not (scheme_of(url) or is_scp_like(url)):
        return GitRemote(url)  # a local repository: only where the policy allows file URLs
    remote = parse_git_url(url)
    helpers = ("-c", "credential.helper=") if remote.has_password else ()  # none stores it
    addresses = judged_addresses(remote, url, policy)
    if not addresses:
        return GitRemote(remote.spelled(), helpers)
    return _pinned(remote, addresses, helpers)


def _pinned(remote: Remote, addresses: list[str], helpers: tuple[str, ...]) -> GitRemote:
    first = addresses[0]
    if remote.transport in ("http", "https"):
        # a proxy would resolve the name itself: none, for a host whose address is judged
        if remote.host_is_address:  # nothing to resolve (and curl takes no entry for [v6])
            return GitRemote(remote.spelled(), helpers, _NO_PROXY)
        spelled = ",".join(f"[{a}]" if ":" in a else a for a in addresses)
        resolve = f"http.curloptResolve={remote.host}:{remote.effective_port}:{spelled}"
        return GitRemote(remote.spelled(), (*helpers, "-c", resolve), _NO_PROXY)
    if remote.transport == "git":
        env = {"GIT_OVERRIDE_VIRTUAL_HOST": remote.host_and_port, "GIT_PROXY_COMMAND": ""}
        return GitRemote(remote.spelled(first), helpers, env)
    alias = remote.host if remote.effective_port == 22 else f"[{remote.host}]:{remote.port}"
    ssh = f"{_SSH} -o CheckHostIP=no -o HostName={first} -o HostKeyAlias={shlex.quote(alias)}"
    return GitRemote(remote.spelled(), helpers, {"GIT_SSH_COMMAND": ssh})


_NO_PROXY = {"NO_PROXY": "*", "no_proxy": "*"}


def clone(
    url: str,
    destination: Path,
    sink: LogSink,
    ref: str | None,
    ignore_submodules: bool,
    policy: SourcePolicy,
) -> FetchedSource:
    remote = reach(url, policy)
    if ref:
        check_git_ref(ref)
    sink(f"Fetching {describe(url)}" + (f" at {ref}" if ref else ""))
    destination.mkdir()
    import git  # a tenth of a second to import: only builds of git sources pay it

    repo = git.Repo.init(destination)
    fetcher = _Fetcher(repo, destination, policy)
    try:
        fetcher.fetch(destination, remote, ref or "HEAD")
        if not ignore_submodules and _is_regular_file(destination / ".gitmodules"):
            sink("Fetching submodules")
            fetcher.fetch_submodules(url, sink)
        revision, commit = fetcher.commit_facts()
        _check_checkout_size(destination, policy.limits)
    except git.GitCommandError as error:
        said = (error.stderr or "").strip().replace("\n", " ") or str(error)
        raise SourceFetchFailed(
            f"fetching {describe(url)} failed: {scrubbed(said, url)}"
        ) from error
    finally:
        repo.close()
    sink(f"Source at commit {revision}")
    return FetchedSource(str(destination), revision, commit=commit)


@dataclass
class _Fetcher:
    """Runs the git commands of one source's fetch (through GitPython), in the repository at
    root or in a submodule's directory below it."""

    repo: git.Repo
    root: Path
    policy: SourcePolicy
    submodules: int = 0

    def git(self, directory: Path, remote: GitRemote | None, *args: str) -> str:
        env = {**_ENV, "GIT_ALLOW_PROTOCOL": _allowed_protocols(self.policy)}
        config = [*_CONFIG]
        if remote:
            env |= remote.env
            config += remote.config
        command = ["git", *config, "-C", str(directory), *args]
        return str(self.repo.git.execute(command, env=env, kill_after_timeout=_GIT_TIMEOUT_S))

    def fetch(self, directory: Path, remote: GitRemote, what: str) -> None:
        """what (a ref or commit) of remote, checked out detached in directory."""
        import git

        target = "FETCH_HEAD"
        try:
            self.git(directory, remote, "fetch", "--depth", "1", "--", remote.url, what)
        except git.GitCommandError:
            if not _COMMIT.fullmatch(what):
                raise
            # a server that refuses fetching a commit by id: fetch everything, then find it
            everything = ("+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*")
            self.git(directory, remote, "fetch", "--", remote.url, *everything)
            target = what
        self.git(directory, None, "checkout", "--quiet", "--detach", target, "--")

    def fetch_submodules(self, url: str, sink: LogSink) -> None:
        """Level by level: each submodule that .gitmodules names and HEAD has a commit for, its
        URL resolved as git resolves it (relative ones against the URL of the repository that
        names it) and judged as the source's is, before anything is fetched from it."""
        pending = [(self.root, url)]
        while pending:
            directory, parent = pending.pop()
            for path, submodule_url, commit in self._submodules_of(directory):
                self.submodules += 1
                if self.submodules > _MAX_SUBMODULES:
                    raise InvalidInput(f"the source has more than {_MAX_SUBMODULES} git submodules")
                resolved = resolve_submodule_url(submodule_url, parent)
                remote = reach(resolved, self.policy)
                target = self._submodule_dir(directory, path)
                sink(f"Fetching submodule {describe(path)} from {describe(resolved)}")
                modules = self.root / ".git" / _MODULES_DIR
                modules.mkdir(exist_ok=True)
                modules /= str(self.submodules)
                self.git(target, None, "init", "--quiet", f"--separate-git-dir={modules}", ".")
                self.fetch(target, remote, commit)
                if _is_regular_file(target / ".gitmodules"):
                    pending.append((target, resolved))

    def _submodules_of(self, directory: Path) -> list[tuple[str, str, str]]:
        """(path, url, commit) of each submodule .gitmodules names with a url, not marked
        update = none, for which HEAD has a commit (a gitlink) at its path."""
        if not _is_regular_file(directory / ".gitmodules"):
            return []
        declared = self._gitmodules(directory)
        if len(declared) > _MAX_SUBMODULES:
            raise InvalidInput(f"the source has more than {_MAX_SUBMODULES} git submodules")
        wanted = {
            values["path"]: values["url"]
            for values in declared.values()
            if values.get("path") and values.get("url") and values.get("update") != "none"
        }
        if not wanted:
            return []
        listed = self.git(directory, None, "ls-tree", "-z", "HEAD", "--", *wanted)
        found = []
        for entry in listed.split("\0"):
            meta, _, path = entry.partition("\t")
            mode, _, rest = meta.partition(" ")
            commit = rest.rpartition(" ")[2]
            if mode == "160000" and path in wanted and _FULL_COMMIT.fullmatch(commit):
                found.append((path, wanted[path], commit))
        return found

    def _gitmodules(self, directory: Path) -> dict[str, dict[str, str]]:
        import git

        try:
            listed = self.git(
                directory,
                None,
                "config",
                "-z",
                "-f",
                ".gitmodules",
                "--get-regexp",
                r"^submodule\.",
            )
        except git.GitCommandError:  # none found (exit 1), or not a config file
            return {}
        declared: dict[str, dict[str, str]] = {}
        for record in filter(None, listed.split("\0")):
            key, _, value = record.partition("\n")
            name, _, variable = key.removeprefix("submodule.").rpartition(".")
            declared.setdefault(name, {})[variable] = value
        return declared

    def _submodule_dir(self, directory: Path, path: str) -> Path:
        """The directory the checkout made for a submodule's commit, refused if it is reached
        through a link or leads outside the source."""
        target = directory / path
        real = Path(os.path.realpath(target))
        if (
            real != Path(os.path.realpath(directory)) / path
            or not real.is_relative_to(os.path.realpath(self.root))
            or not real.is_dir()
        ):
            raise InvalidInput(
                f"submodule path {describe(path)!r} is not a directory in the source"
            )
        return target

    def commit_facts(self) -> tuple[str, dict[str, str]]:
        """The commit checked out, and its author, date and subject as git shows them (a date
        git cannot place shows as git shows it)."""
        shown = self.repo.git.execute(
            [
                "git",
                "-C",
                str(self.root),
                "log",
                "-1",
                "--no-show-signature",
                "--date=default",
                "--encoding=UTF-8",
                _FACTS_FORMAT,
                "HEAD",
                "--",
            ],
            stdout_as_string=False,
        )
        assert isinstance(shown, bytes)
        revision, author, date, subject = shown.decode("utf-8", "replace").split("\0", 3)
        facts = {"author": author, "date": date, "message": subject}
        return revision, {name: value for name, value in facts.items() if value}


def resolve_submodule_url(url: str, parent: str) -> str:
    """A submodule URL as git resolves it (remote.c relative_url): one starting with ./ or ../
    against the URL of the repository that names it, each ../ taking off the last part;
    any other as written."""
    if not url.startswith(("./", "../")):
        return url
    base, colon_separated = parent.removesuffix("/"), False
    while url.startswith(("./", "../")):
        if url.startswith("./"):
            url = url[2:]
            continue
        url = url[3:]
        slash, colon = base.rfind("/"), base.rfind(":")
        if slash >= 0:
            base = base[:slash]
        elif colon >= 0:
            base, colon_separated = base[:colon], True
        else:
            raise InvalidInput(f"submodule URL {describe(url)!r} climbs above {describe(parent)}")
    joined = f"{base}{':' if colon_separated else '/'}{url}"
    return joined.removesuffix("/") if url.endswith("/") else joined


def _allowed_protocols(policy: SourcePolicy) -> str:
    """git's transports sti uses (GIT_ALLOW_PROTOCOL overrides every protocol.allow setting):
    ext:: and fd:: never, a local path or file:// only where the policy allows."""
    return "http:https:git:ssh" + (":file" if policy.allow_file_urls else "")


def _is_regular_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def _check_checkout_size(root: Path, limits: ExtractLimits) -> None:
    """A repository is held to the limits an archive is (its history is not counted)."""
    entries, size = measure_tree(root, stop_after_files=limits.max_files)
    if entries > limits.max_files:
        raise InvalidInput(
            f"the repository holds more than {limits.max_files} files, directories and links "
            "(STI_SOURCE_MAX_FILES)"
        )
    if size > limits.max_total_bytes:
        raise InvalidInput(
            f"the repository holds more than {limits.max_total_bytes} bytes (STI_SOURCE_MAX_BYTES)"
        )
