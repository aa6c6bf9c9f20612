"""Real git servers for the URL tests, each on an address of the test's choosing: git daemon
(one directory per virtual host, so the name a client sends shows), smart HTTP through
git http-backend behind Basic auth, and an `ssh` that only writes down how it was called."""

from __future__ import annotations

import base64
import http.server
import os
import socket
import subprocess
import time
from pathlib import Path

import git

from tests.unit.http_servers import serve, stop


def bare_repo(root: Path, files: dict[str, str], **submodules: str) -> git.Repo:
    """A bare repository at root with one commit of files (and of each submodule: path ->
    "url commit", a .gitmodules entry and its gitlink)."""
    work = git.Repo.init(root.with_suffix(".work"), initial_branch="main")
    tree = Path(str(work.working_tree_dir))
    for name, text in files.items():
        (tree / name).write_text(text)
    work.index.add(list(files))
    if submodules:
        entries = "".join(
            f'[submodule "{path}"]\n\tpath = {path}\n\turl = {spec.split()[0]}\n'
            for path, spec in submodules.items()
        )
        (tree / ".gitmodules").write_text(entries)
        work.index.add([".gitmodules"])
        for path, spec in submodules.items():
            work.git.update_index("--add", "--cacheinfo", f"160000,{spec.split()[1]},{path}")
    work.index.commit("first", author=_AUTHOR, committer=_AUTHOR)
    return work.clone(str(root), bare=True)


_AUTHOR = git.Actor("Ada", "ada@example.test")


def _free_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((address, 0))
        return int(probe.getsockname()[1])


class GitDaemon:
    """git daemon on address, serving base/<virtual host>/<path>; log says who connected."""

    def __init__(self, address: str, base: Path) -> None:
        self.port = _free_port(address)
        self.log = base.parent / f"daemon-{address}.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    "git",
                    "daemon",
                    f"--listen={address}",
                    f"--port={self.port}",
                    "--export-all",
                    "--reuseaddr",
                    "--verbose",
                    f"--interpolated-path={base}/%H%D",
                    str(base),
                ],
                stderr=log,
            )
        deadline = time.monotonic() + 10
        while "Ready to rumble" not in self.log.read_text():
            if time.monotonic() > deadline:
                raise RuntimeError(f"git daemon did not start: {self.log.read_text()}")
            time.sleep(0.05)

    def connections(self) -> int:
        return self.log.read_text().count("Connection from")

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


class SmartHttp:
    """git http-backend for the bare repositories in root, asking for Basic auth user:password
    (protocol v2 unless v2 is False: then a commit that is no branch tip cannot be fetched by
    id); authorized lists the paths asked for with the right credentials."""

    def __init__(self, address: str, root: Path, user: str, password: str, v2: bool = True) -> None:
        self.authorized: list[str] = []
        expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._backend()

            def do_POST(self) -> None:
                self._backend()

            def _backend(self) -> None:
                if self.headers.get("Authorization") != expected:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="git"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                outer.authorized.append(self.path)
                path, _, query = self.path.partition("?")
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                env = {
                    "PATH": os.environ["PATH"],
                    "GIT_PROJECT_ROOT": str(root),
                    "GIT_HTTP_EXPORT_ALL": "1",
                    "REQUEST_METHOD": self.command,
                    "PATH_INFO": path,
                    "QUERY_STRING": query,
                    "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                    "CONTENT_LENGTH": str(len(body)),
                    "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
                    "REMOTE_USER": user,
                    "REMOTE_ADDR": self.client_address[0],
                }
                if v2 and self.headers.get("Git-Protocol"):
                    env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
                ran = subprocess.run(
                    ["git", "http-backend"], input=body, env=env, capture_output=True, check=True
                )
                head, _, payload = ran.stdout.partition(b"\r\n\r\n")
                status = 200
                headers = []
                for line in head.decode().split("\r\n"):
                    name, _, value = line.partition(": ")
                    if name.lower() == "status":
                        status = int(value.split()[0])
                    else:
                        headers.append((name, value))
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = serve(address, Handler)
        self.port = int(self.server.server_address[1])

    def close(self) -> None:
        stop(self.server)


def recording_ssh(directory: Path) -> Path:
    """An `ssh` in directory that writes its arguments, one a line, to directory/ssh.args and
    fails: put directory first on PATH to see how git called ssh."""
    directory.mkdir(exist_ok=True)
    script = directory / "ssh"
    script.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {directory / 'ssh.args'}\nexit 1\n")
    script.chmod(0o755)
    return directory / "ssh.args"
