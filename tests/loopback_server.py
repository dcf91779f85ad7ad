"""A loopback HTTP server for download tests (127.0.0.1, a thread of the test process): no internet.

``server.files`` maps a file name to its bytes; the first path segment picks the behaviour:

- ``/good/<name>``: the file;
- ``/bad/<name>``: other bytes of the same length (a wrong hash);
- ``/html/<name>``: an HTML page with status 200 (what Google Drive sends for quota errors);
- ``/trunc/<name>``: announces the full length, sends half and closes the connection;
- ``/missing/<name>``: 404;
- ``/redirect/<name>``: 302 to ``/good/<name>``;
- ``/stall/<name>``: headers and a few bytes, then silence until the server stops;
- ``/slow/<name>``: the file in 16 pieces with pauses (so that two clients overlap).

``server.hits[path]`` counts the requests of each path.
"""
from __future__ import annotations

import collections
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict


class LoopbackServer:
    def __init__(self) -> None:
        self.files: Dict[str, bytes] = {}
        self.hits: Dict[str, int] = collections.Counter()
        self.release = threading.Event()  # ends stalled responses at shutdown
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep the test output clean
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server.hits[self.path] += 1
                parts = self.path.strip("/").split("/", 1)
                mode, name = (parts + [""])[:2] if len(parts) == 2 else ("good", parts[0])
                data = server.files.get(name)
                if mode == "missing" or data is None:
                    self.send_error(404)
                    return
                if mode == "redirect":
                    self.send_response(302)
                    self.send_header("Location", f"/good/{name}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if mode == "bad":
                    data = bytes(255 - b for b in data)
                if mode == "html":
                    data = b"<!DOCTYPE html><html><body>Google Drive - Quota exceeded</body></html>"
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if mode == "trunc":
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if mode == "stall":
                    self.wfile.write(data[:100])
                    self.wfile.flush()
                    server.release.wait(30)
                    return
                if mode == "slow":
                    step = max(1, len(data) // 16)
                    for start in range(0, len(data), step):
                        self.wfile.write(data[start:start + step])
                        self.wfile.flush()
                        time.sleep(0.02)
                    return
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, mode: str, name: str) -> str:
        return f"{self.base}/{mode}/{name}"

    def __enter__(self) -> "LoopbackServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
