"""Real services for queue tests: a redis-server on a free loopback port, and sti-worker
processes started the way users start them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# worker settings that lift the build limits, so the build method runs on the engine's BuildKit
UNCONFINED = {"STI_BUILD_MEMORY": "0", "STI_BUILD_PIDS": "0", "STI_BUILD_PRIVILEGES": "engine"}


class RedisServer:
    """A redis-server on a free port of 127.0.0.1; with appendonly, it keeps its data across
    restart() (the same port, the same directory), as a production broker does."""

    def __init__(self, workdir: Path, *, appendonly: bool = False) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.appendonly = appendonly
        self._start()

    def _start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes" if self.appendonly else "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()

    def restart(self, down_s: float) -> None:
        """Stop the server, stay down down_s seconds, start it again on the same port."""
        self.stop()
        time.sleep(down_s)
        self._start()

    def start(self) -> None:
        """Start a stopped server again on the same port (and directory)."""
        self._start()

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


class Worker:
    """An sti-worker process for one host id; its log (JSON lines) goes to a file."""

    def __init__(
        self, broker_url: str, host_id: str, log_dir: Path, *, concurrency: int = 2, **env: str
    ) -> None:
        self.host_id = host_id
        self.broker_url = broker_url
        self.log_path = log_dir / f"worker-{host_id}-{free_port()}.log"
        environment = dict(os.environ, STI_LOG_FORMAT="json", **env)
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                str(BIN / "sti-worker"),
                "--host-id",
                host_id,
                "--broker",
                broker_url,
                "--concurrency",
                str(concurrency),
                "--grace",
                "20",
            ],
            env=environment,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_registered()

    def _wait_registered(self) -> None:
        from sti import keys

        client = redis.Redis.from_url(self.broker_url)
        node = f"sti-{self.host_id}-{self.process.pid}@{socket.gethostname()}"  # sti-worker's
        deadline = time.monotonic() + 30
        try:
            while client.zscore(keys.host_nodes(self.host_id), node) is None:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"worker {self.host_id} did not start:\n{self.log()}")
                time.sleep(0.1)
        finally:
            client.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 40) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait()
        finally:
            self._log.close()


class DockerDaemon:
    """A separate Docker engine on this machine: own data-root, exec-root, socket and bridge.

    Its bridge is its own, with no NAT, so its containers reach nothing beyond this machine.
    dockerd deletes docker0 when started with another bridge; the main engine's docker0 is put
    back as it was.
    """

    _bridges = iter(range(1, 250))

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bridge = f"stibr{os.getpid() % 1000}x{next(self._bridges)}"
        address = f"10.254.{int(self.bridge.rsplit('x', 1)[1])}.1/24"
        for command in (
            ["ip", "link", "add", "name", self.bridge, "type", "bridge"],
            ["ip", "addr", "add", address, "dev", self.bridge],
            ["ip", "link", "set", self.bridge, "up"],
        ):
            subprocess.run(command, check=True, capture_output=True)
        main_bridge = _addresses("docker0")
        self.socket = root / "docker.sock"
        self.url = f"unix://{self.socket}"
        self._log = (root / "dockerd.log").open("wb")
        self.process = subprocess.Popen(
            [
                "dockerd",
                "--data-root",
                str(root / "data"),
                "--exec-root",
                str(root / "x"),
                "--pidfile",
                str(root / "docker.pid"),
                "--host",
                self.url,
                "--bridge",
                "none",
                "--iptables=false",
                "--ip-masq=false",
                "--log-level",
                "warn",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_ready()
        if main_bridge and not _addresses("docker0"):
            _restore_bridge("docker0", main_bridge)

    def _wait_ready(self) -> None:
        import docker

        deadline = time.monotonic() + 60
        while True:
            try:
                client = docker.APIClient(base_url=self.url, version="auto", timeout=5)
                client.ping()
                client.close()
                return
            except Exception:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"dockerd at {self.url} did not start:\n"
                        + (self.root / "dockerd.log").read_text(errors="replace")[-3000:]
                    ) from None
                time.sleep(0.3)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._log.close()
        subprocess.run(["ip", "link", "delete", self.bridge], check=False, capture_output=True)


def _addresses(link: str) -> list[str]:
    shown = subprocess.run(
        ["ip", "-o", "-4", "addr", "show", "dev", link], capture_output=True, text=True
    )
    return [line.split()[3] for line in shown.stdout.splitlines()]


def _restore_bridge(link: str, addresses: list[str]) -> None:
    subprocess.run(["ip", "link", "add", "name", link, "type", "bridge"], check=True)
    for address in addresses:
        subprocess.run(["ip", "addr", "add", address, "dev", link], check=True)
    subprocess.run(["ip", "link", "set", link, "up"], check=True)


class Registry:
    """Debian's docker-registry on a free loopback port, storing in root."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        config = root / "registry.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n"
            f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
            f"http:\n  addr: {self.address}\n"
        )
        self._log = (root / "registry.log").open("wb")
        self.process = subprocess.Popen(
            ["docker-registry", "serve", str(config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("docker-registry did not start")
            time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self._log.close()


class Certificates:
    """A private CA with a server certificate for 127.0.0.1 and localhost and a client
    certificate, made with the openssl command line in directory; also a CA of its own
    (other_ca) that signed neither, and a client certificate it signed (stranger)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ca = self._authority("ca", "sti test CA")
        self.other_ca = self._authority("other-ca", "another CA")
        self.server, self.server_key = self._signed(
            "server", "localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost\n", self.ca
        )
        self.client, self.client_key = self._signed(
            "client", "sti client", "extendedKeyUsage=clientAuth\n", self.ca
        )
        self.stranger, self.stranger_key = self._signed(
            "stranger", "stranger", "extendedKeyUsage=clientAuth\n", self.other_ca
        )

    def _openssl(self, *args: str) -> None:
        subprocess.run(["openssl", *args], cwd=self.directory, check=True, capture_output=True)

    def _authority(self, name: str, subject: str) -> Path:
        self._openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", "-subj", f"/CN={subject}",
        )  # fmt: skip
        return self.directory / f"{name}.pem"

    def _signed(self, name: str, subject: str, extensions: str, ca: Path) -> tuple[Path, Path]:
        (self.directory / f"{name}.ext").write_text(extensions)
        self._openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", "-subj", f"/CN={subject}",
        )  # fmt: skip
        self._openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", ca.name, "-CAkey", f"{ca.stem}.key",
            "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext",
        )  # fmt: skip
        return self.directory / f"{name}.pem", self.directory / f"{name}.key"


class TlsRedisServer:
    """A redis-server on a free port that speaks only TLS (--port 0), with a password; with
    mutual, every client must show a certificate of the same CA. It listens on 127.0.0.1, which
    its certificate names, and on 127.0.0.2, which it does not."""

    def __init__(self, workdir: Path, certs: Certificates, *, password: str, mutual: bool) -> None:
        self.port = free_port()
        self.certs = certs
        self.password = password
        self.mutual = mutual
        self.process = subprocess.Popen(
            [
                "redis-server", "--port", "0", "--tls-port", str(self.port),
                "--bind", "127.0.0.1", "127.0.0.2", "--dir", str(workdir),
                "--save", "", "--appendonly", "no",
                "--tls-cert-file", str(certs.server), "--tls-key-file", str(certs.server_key),
                "--tls-ca-cert-file", str(certs.ca),
                "--tls-auth-clients", "yes" if mutual else "no", "--requirepass", password,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self._wait_ready()

    def url(self, db: int = 0, *, host: str = "127.0.0.1", **query: str | Path | None) -> str:
        """The rediss:// URL the workers and sti-submit share: the CA, and with mutual the
        client certificate; query adds to these arguments or replaces them (None: leaves one
        out), its values as they go into the URL."""
        arguments: dict[str, str | Path | None] = {
            "ssl_cert_reqs": "required",
            "ssl_ca_certs": self.certs.ca,
        }
        if self.mutual:
            arguments.update(ssl_certfile=self.certs.client, ssl_keyfile=self.certs.client_key)
        arguments.update(query)
        listed = "&".join(f"{k}={v}" for k, v in arguments.items() if v is not None)
        return f"rediss://:{self.password}@{host}:{self.port}/{db}?{listed}"

    def _wait_ready(self) -> None:
        client = redis.Redis.from_url(self.url())
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
