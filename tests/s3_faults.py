"""A fault-injecting HTTP proxy between a client and the test S3 server.

It forwards each request to the S3 endpoint (path-style addressing, bodies streamed through) unless
a `Rule` picks it for a fault: a 503 `SlowDown`, a 500 `InternalError`, a connection reset (RST,
so the client sees ECONNRESET) or a delay. A fault hits either before the request reaches S3 or
after S3 applied it, when only the reply is lost. The proxy counts requests, faults and retries
(botocore marks each attempt with an `amz-sdk-request: attempt=N` header).
"""

from __future__ import annotations

import http.client
import re
import socket
import struct
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import BinaryIO, Iterator, Literal
from urllib.parse import unquote, urlsplit

Fault = Literal["slowdown", "internal", "reset", "delay"]
FAULTS: tuple[Fault, ...] = ("slowdown", "internal", "reset", "delay")
_ERRORS = {
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    "internal": (500, "InternalError", "We encountered an internal error. Please try again."),
}
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}
_BLOCK = 64 * 1024


@dataclass(frozen=True)
class Rule:
    """Which requests get `fault`, counted among the requests that match `method` and `key`.

    `key` is a substring of the request's path (bucket included). Matching requests are numbered from 1;
    the fault hits number `nth`, then every `every`-th one after it, `times` times in all (None: no end).
    `when="after"` lets S3 apply the request first and then loses the reply. `spare_retries` leaves
    retried attempts alone (they neither match nor count), so a request fails at most once.
    """

    fault: Fault
    method: str | None = None
    key: str | None = None
    nth: int = 1
    every: int = 1
    times: int | None = 1
    when: Literal["before", "after"] = "before"
    seconds: float = 0.0
    spare_retries: bool = False


@dataclass(frozen=True)
class Seen:
    """One request as the proxy saw it: `status` is what S3 answered (None: S3 never saw it)."""

    method: str
    path: str
    attempt: int
    fault: Fault | None
    status: int | None


def every_nth(n: int, faults: list[tuple[Fault, Literal["before", "after"]]], *, delay_s: float = 0.05) -> list[Rule]:
    """Rules that give every `n`-th first attempt the next of `faults` (fault, when), in turn; delays last `delay_s`."""
    period = n * len(faults)
    return [Rule(fault, nth=n * (i + 1), every=period, times=None, when=when, seconds=delay_s, spare_retries=True)
            for i, (fault, when) in enumerate(faults)]


class FaultProxy:
    """A threaded HTTP proxy on a free local port in front of `upstream`; use it as a context manager."""

    def __init__(self, upstream: str, rules: list[Rule] | None = None):
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._lock = threading.Lock()
        self.set_rules(rules or [])
        self.seen: list[Seen] = []
        self.faults: Counter[str] = Counter()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.proxy = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="s3-fault-proxy",
                                        daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    @property
    def requests(self) -> int:
        return len(self.seen)

    @property
    def retries(self) -> int:
        return sum(s.attempt > 1 for s in self.seen)

    def set_rules(self, rules: list[Rule]) -> None:
        """Replace the fault schedule; its counts start again from zero."""
        with self._lock:
            self._rules = [(rule, [0, 0]) for rule in rules]  # [requests matched, faults injected]

    def retried(self, method: str, key: str) -> list[Seen]:
        """The retried attempts of requests whose path contains `key`."""
        return [s for s in self.seen if s.method == method and key in s.path and s.attempt > 1]

    def _choose(self, method: str, path: str, attempt: int) -> Rule | None:
        with self._lock:
            chosen = None
            for rule, count in self._rules:
                if ((rule.method and rule.method != method) or (rule.key and rule.key not in path)
                        or (rule.spare_retries and attempt > 1)):
                    continue
                count[0] += 1
                due = count[0] >= rule.nth and (count[0] - rule.nth) % rule.every == 0
                if chosen is None and due and (rule.times is None or count[1] < rule.times):
                    count[1] += 1
                    chosen = rule
            if chosen:
                self.faults[chosen.fault] += 1
            return chosen

    def _record(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)

    def __enter__(self) -> "FaultProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


class _Body:
    """The next `size` bytes of a request stream, as a file for http.client to read from."""

    def __init__(self, stream: BinaryIO, size: int):
        self.stream, self.left = stream, size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.stream.read(n) if n else b""
        self.left -= len(data)
        return data

    def __iter__(self) -> Iterator[bytes]:
        while block := self.read(_BLOCK):
            yield block


def _chunked(stream: BinaryIO) -> Iterator[bytes]:
    """Decode an HTTP/1.1 chunked request body, chunk by chunk."""
    while size := int(stream.readline().split(b";")[0].strip() or b"0", 16):
        yield stream.read(size)
        stream.readline()
    while stream.readline().strip():  # trailers
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def relay(self) -> None:
        proxy: FaultProxy = self.server.proxy  # type: ignore[attr-defined]
        path = unquote(urlsplit(self.path).path)
        found = re.search(r"attempt=(\d+)", self.headers.get("amz-sdk-request", ""))
        attempt = int(found.group(1)) if found else 1
        rule = proxy._choose(self.command, path, attempt)
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        size = int(self.headers.get("Content-Length") or 0)
        body = _chunked(self.rfile) if chunked else _Body(self.rfile, size) if size else None
        status, recorded = None, False

        def record() -> None:  # before the client hears back, so its next step sees the counts
            nonlocal recorded
            if not recorded:
                recorded = True
                proxy._record(Seen(self.command, path, attempt, rule.fault if rule else None, status))

        try:
            if rule and rule.when == "before":
                if rule.fault == "delay":
                    time.sleep(rule.seconds)
                else:
                    for _ in body or ():  # read the whole request: what is left would pass for the next one
                        pass
                    record()
                    self._inject(rule, path)
                    return
            upstream = http.client.HTTPConnection(*proxy.upstream, timeout=60)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                upstream.request(self.command, self.path, body=body, headers={**headers, "Connection": "close"})
                response = upstream.getresponse()
                status = response.status
                record()
                if rule and rule.when == "after" and rule.fault != "delay":
                    response.read()
                    self._inject(rule, path)
                    return
                if rule and rule.when == "after":
                    time.sleep(rule.seconds)
                self._pass_on(response)
            finally:
                upstream.close()
        except OSError:  # the client gave up (a read timeout) while the proxy held its request
            self.close_connection = True
        finally:
            record()

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = relay

    def _pass_on(self, response: http.client.HTTPResponse) -> None:
        length = response.getheader("Content-Length")
        data = b"" if length is not None or self.command == "HEAD" else response.read()
        self.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in _HOP_BY_HOP and not (length is None and name.lower() == "content-length"):
                self.send_header(name, value)
        if length is None and self.command != "HEAD":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        while block := response.read(_BLOCK):
            self.wfile.write(block)

    def _inject(self, rule: Rule, path: str) -> None:
        if rule.fault == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return
        status, code, message = _ERRORS[rule.fault]
        request_id = uuid.uuid4().hex[:16].upper()
        xml = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
               f"<Resource>{path}</Resource><RequestId>{request_id}</RequestId></Error>").encode()
        self.send_response_only(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("x-amz-request-id", request_id)
        self.send_header("Content-Length", "0" if self.command == "HEAD" else str(len(xml)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(xml)
