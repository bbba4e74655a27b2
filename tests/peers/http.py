"""An HTTP(S) server in a thread of the test process, the base of the HTTP peers: it records each
request and answers what the subclass says, or the refusal it was told to give."""

from __future__ import annotations

import json
import socket
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

Answer = tuple[int, dict[str, str], bytes]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens: connecting is refused at once."""
    return free_port()


@dataclass
class Received:
    method: str
    path: str  # with the query
    headers: dict[str, str]  # names lower-cased
    body: bytes
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def route(self) -> str:
        return urlsplit(self.path).path

    def json(self) -> Any:
        return json.loads(self.body)


def json_answer(status: int, value: object, headers: dict[str, str] | None = None) -> Answer:
    return (
        status,
        {"Content-Type": "application/json", **(headers or {})},
        json.dumps(value).encode(),
    )


class HttpPeer:
    """Subclasses implement ``answer(request)``. ``refuse(status, body)`` makes every request
    get that answer until ``accept()``; ``received`` holds what was taken (refused requests
    are in ``refused``)."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        self.received: list[Received] = []
        self.refused: list[Received] = []
        self._refusal: Answer | None = None
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- what subclasses say ------------------------------------------------------------------

    def answer(self, request: Received) -> Answer:
        return json_answer(200, {})

    # -- control ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "start the peer first"
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    def refuse(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
        self._refusal = json_answer(status, body, headers)

    def accept(self) -> None:
        self._refusal = None

    def reset(self) -> None:
        with self._lock:
            self.received.clear()
            self.refused.clear()
        self._refusal = None

    def start(self) -> HttpPeer:
        peer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: without this, Nagle's algorithm and the
            # client's delayed ACK hold the body back ~40 ms on a kept-alive connection.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = Received(
                    self.command,
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                )
                status, headers, content = peer._handle(request)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_PUT = do_DELETE = _any

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # dozens of concurrent senders connect at once

        server = Server(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        if self.tls is not None:
            server.socket = self.tls.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> HttpPeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handle(self, request: Received) -> Answer:
        refusal = self._refusal
        if refusal is not None:
            with self._lock:
                self.refused.append(request)
            return refusal
        answer = self.answer(request)
        if 200 <= answer[0] < 300:
            with self._lock:
                self.received.append(request)
        else:
            with self._lock:
                self.refused.append(request)
        return answer
