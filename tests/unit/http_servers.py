"""Small HTTP servers for the download and git address tests: an archive, a redirect to any
URL, a redirect loop, a server that trickles; each remembers the paths it was asked for."""

from __future__ import annotations

import http.server
import io
import tarfile
import threading
import time


def _archive() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        info = tarfile.TarInfo("index.html")
        info.size = 6
        tar.addfile(info, io.BytesIO(b"hello\n"))
    return out.getvalue()


class Server:
    """Serves /app.tar.gz, /to...?url (a redirect to url), /loop (redirects to itself) and
    /slow.tar.gz (a byte every half second)."""

    def __init__(self, address: str) -> None:
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append(self.path)
                if self.path.startswith("/to") and "?" in self.path:
                    self._redirect(self.path.split("?", 1)[1])
                elif self.path.startswith("/loop"):
                    self._redirect(f"{outer.url}/loop{len(outer.requests)}.tar.gz")
                elif self.path == "/slow.tar.gz":
                    self.send_response(200)
                    self.end_headers()
                    for byte in _archive():
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(0.5)
                else:
                    body = _archive()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            def _redirect(self, target: str) -> None:
                self.send_response(302)
                self.send_header("Location", target)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = serve(address, Handler)
        self.url = f"http://{address}:{self.server.server_address[1]}"

    def close(self) -> None:
        stop(self.server)


def serve(
    address: str, handler: type[http.server.BaseHTTPRequestHandler]
) -> http.server.ThreadingHTTPServer:
    """handler's server on address (a free port), answering on a thread of its own."""
    server = http.server.ThreadingHTTPServer((address, 0), handler)
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()
    return server


def stop(server: http.server.ThreadingHTTPServer) -> None:
    server.shutdown()
    server.server_close()
