"""Run an app image with its port published on loopback, print what it serves, remove it."""

from __future__ import annotations

import sys
import time
import urllib.error
import urllib.request
import uuid

import docker

CONTAINER_PORT = 8080


def serve_once(image: str, host_port: int) -> str:
    api = docker.APIClient(version="auto")
    container = api.create_container(
        image,
        name=f"example-run-{uuid.uuid4().hex[:8]}",
        ports=[CONTAINER_PORT],
        host_config=api.create_host_config(
            port_bindings={CONTAINER_PORT: ("127.0.0.1", host_port)}
        ),
    )
    try:
        api.start(container)
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{host_port}/", timeout=2) as page:
                    return page.read().decode()
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        api.remove_container(container, force=True)
        api.close()


if __name__ == "__main__":
    image, port = sys.argv[1], int(sys.argv[2])
    print(serve_once(image, port))
