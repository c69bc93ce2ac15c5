"""OTLP/HTTP receiver: a small asyncio HTTP/1.1 server for ``POST /v1/traces`` and ``/v1/metrics``.

Hand-rolled on ``asyncio.Protocol`` because the OTLP exporters keep one connection alive and
post back to back; a per-request thread or a general framework costs more than the decode.
Speaks exactly what OTLP/HTTP needs: Content-Length and chunked bodies, ``Expect:
100-continue``, gzip/deflate ``Content-Encoding``, protobuf and JSON bodies answered in the same
encoding, keep-alive. Responses follow the OTLP spec: 200 (with ``partialSuccess`` when spans
were rejected), 400 + ``google.rpc.Status`` for malformed payloads, 413 over the body limit,
415 for other media types, 401 without the token, 429/503 + ``Retry-After`` under backpressure
(randomised between ``retry_after_s`` and twice that, see :func:`_retry_after`).

A request is judged on its head (framing, path, method, token, media type, encoding) before any
of its body is held: a refused one takes no share of the body budget, and its sized body is
skipped as it arrives. Each request has one deadline from its first byte (408 after it), which
bytes trickled one at a time cannot push back; empty lines between requests (RFC 9112 2.2) are
no request and start none.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import socket
import zlib
from typing import TYPE_CHECKING

from google.rpc import status_pb2
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

if TYPE_CHECKING:
    from .service import Collector, IngestResult

__all__ = ["HttpReceiver"]

_MAX_HEAD_BYTES = 64 * 1024
_HEX_DIGITS = re.compile(rb"[0-9A-Fa-f]+")
_PATHS = {b"/v1/traces": "traces", b"/v1/metrics": "metrics"}
_REASONS = {
    100: "Continue", 200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 411: "Length Required",
    413: "Content Too Large", 415: "Unsupported Media Type", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 500: "Internal Server Error",
    501: "Not Implemented", 503: "Service Unavailable",
}
_PROTO_CT = "application/x-protobuf"
_JSON_CT = "application/json"
# google.rpc.Code values used in error bodies.
_RPC_INVALID_ARGUMENT = 3
_RPC_RESOURCE_EXHAUSTED = 8
_RPC_UNAUTHENTICATED = 16
_RPC_UNAVAILABLE = 14


def _retry_after(delay_s: int) -> bytes:
    """A ``Retry-After`` header of a whole number of seconds drawn from ``[delay_s, 2 * delay_s]``.

    The stock exporters wait exactly what it says instead of their own jittered backoff, so
    one value for all would bring every sender refused in the same burst back at once."""
    return f"Retry-After: {random.randint(delay_s, 2 * delay_s)}\r\n".encode()


class _BodyTooLarge(Exception):
    pass


class _BadRequest(Exception):
    pass


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """gzip/deflate with a cap on the inflated size (a small body may inflate to gigabytes).

    A gzip body may hold several members (RFC 1952 2.2, what ``cat a.gz b.gz`` makes): all are
    inflated, together under ``limit``; bytes after the last member that are not gzip -> 400.
    """
    wbits = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
    out = bytearray()
    rest = body
    while True:
        d = zlib.decompressobj(wbits[encoding])
        try:
            out += d.decompress(rest, limit + 1 - len(out))
        except zlib.error as exc:
            what = "data after the last" if out else "invalid"
            raise _BadRequest(f"{what} {encoding} body: {exc}") from None
        if len(out) > limit or d.unconsumed_tail:
            raise _BodyTooLarge(f"decompressed body exceeds the {limit}-byte limit")
        if not d.eof:
            raise _BadRequest(f"truncated {encoding} body")
        rest = d.unused_data
        if not rest:
            return bytes(out)
        if wbits[encoding] == zlib.MAX_WBITS:  # deflate has no members: trailing bytes are junk
            raise _BadRequest(f"{len(rest)} bytes after the end of the {encoding} body")


class _Conn(asyncio.Protocol):
    """One client connection: parse requests as bytes arrive, answer in order."""

    def __init__(self, server: HttpReceiver) -> None:
        self._srv = server
        self._buf = bytearray()
        self._t: asyncio.Transport | None = None
        # The admitted head whose body is being read: signal, JSON?, content-encoding, keep-alive
        self._head: tuple[str, bool, str, bool] | None = None
        self._need = 0  # body bytes expected for a Content-Length request
        self._chunked = False
        self._closing = False
        self._idle: asyncio.TimerHandle | None = None
        self._reserved = 0  # bytes of the shared body budget this connection holds
        # One deadline per request, from its first byte to its last: trickled bytes re-arm
        # the idle timer but never this one.
        self._deadline: asyncio.TimerHandle | None = None
        self._discard = 0  # body bytes of a refused request still to drop (never buffered)
        self._ct = _PROTO_CT  # content type of the request being read (for error bodies)
        self._refused = False  # the head just read was answered without closing

    # -- asyncio callbacks ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._t = transport  # type: ignore[assignment]
        self._srv._conns.add(self)
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self._srv._conns.discard(self)
        self._release()
        if self._idle is not None:
            self._idle.cancel()
        self._end_request()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._buf += data
        self._arm_idle()
        try:
            self._process()
        except Exception as exc:  # a bug here must not take the server down, only this request
            self._respond(500, b"", self._ct, close=True, message=f"internal error: {exc!r}")

    # -- parsing -------------------------------------------------------------------------
    def _process(self) -> None:
        while not self._closing:
            if self._discard:
                n = min(self._discard, len(self._buf))
                del self._buf[:n]
                self._discard -= n
                if self._discard:
                    return
                self._end_request()
            if self._head is None and self._deadline is None:
                self._drop_empty_lines()
            if not self._buf and self._head is None:
                return
            if self._deadline is None:
                self._start_request()
            if self._head is None and not self._read_head():
                if self._refused:  # answered on its head; its body (if any) is skipped
                    self._refused = False
                    continue
                return
            body = self._read_chunked() if self._chunked else self._read_fixed()
            if body is None:
                return
            signal, json_body, encoding, keep_alive = self._head  # type: ignore[misc]
            self._head = None
            self._end_request()
            try:
                self._handle(signal, json_body, encoding, body, keep_alive)
            finally:
                self._release()

    def _start_request(self) -> None:
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self._srv.request_timeout_s, self._on_deadline)

    def _end_request(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _drop_empty_lines(self) -> None:
        """RFC 9112 2.2: CR/LF before a request-line are ignored (some clients send a CRLF after
        a body); they neither start a request's deadline nor make a malformed request line."""
        buf = self._buf
        n = 0
        while n < len(buf) and buf[n] in b"\r\n":
            n += 1
        if n:
            del buf[:n]

    def _on_deadline(self) -> None:
        self._deadline = None
        if self._discard:
            # The refused request was already answered: a second, unsolicited response would
            # be read as the answer to the sender's next request. Stop skipping its body.
            self._close()
            return
        self._respond(408, b"", self._ct, close=True,
                      message=f"request not received within {self._srv.request_timeout_s:g} s")

    def _read_head(self) -> bool:
        buf = self._buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > _MAX_HEAD_BYTES:
                self._respond(431, b"", _PROTO_CT, close=True, message="request head too large")
            return False
        lines = bytes(buf[:end]).split(b"\r\n")
        del buf[: end + 4]
        self._ct = _PROTO_CT
        try:
            method, target, version = lines[0].split(b" ", 2)
        except ValueError:
            self._respond(400, b"", _PROTO_CT, close=True, message="malformed request line")
            return False
        headers: dict[bytes, bytes] = {}
        for raw in lines[1:]:
            name, sep, value = raw.partition(b":")
            if not sep:
                self._respond(400, b"", _PROTO_CT, close=True, message="malformed header line")
                return False
            headers[name.strip().lower()] = value.strip()
        ct = self._ct = _ct_of(headers)
        conn_hdr = headers.get(b"connection", b"").lower()
        keep_alive = conn_hdr != b"close" if version == b"HTTP/1.1" else conn_hdr == b"keep-alive"
        limit = self._srv.max_body_bytes
        # Framing first: without it the body can be neither read nor skipped.
        te = headers.get(b"transfer-encoding", b"").lower()
        self._chunked = te == b"chunked"
        if te and not self._chunked:
            self._respond(501, b"", ct, close=True, message="unsupported transfer-encoding")
            return False
        if not self._chunked:
            cl = headers.get(b"content-length", b"0")
            if not cl.isdigit():  # RFC 9110 8.6: 1*DIGIT (no sign, no "_", no spaces)
                self._respond(400, b"", ct, close=True,
                              message=f"bad content-length {cl.decode('latin-1')!r}")
                return False
            self._need = int(cl)
        expect = headers.get(b"expect", b"").lower() == b"100-continue"
        # Then who and what, before any byte of the body is held in memory: a sender without
        # the token (or to a wrong path, or of a wrong type) takes no share of the body budget.
        # A refused request's body is skipped as it arrives, keeping the connection, unless it
        # cannot be (chunked, waiting for 100-continue, over the limit) or need not be.
        skip = not (self._chunked or expect or not keep_alive or self._need > limit)
        admitted = self._admit(method, target, headers, ct, close=not skip)
        if admitted is None:
            if not self._closing:
                self._discard = self._need
                self._refused = True
                if not self._discard:
                    self._end_request()
            return False
        if not self._chunked:
            if self._need > limit:
                # Answer before reading the body, then close: we will not read it.
                self._respond(413, b"", ct, close=True,
                              message=f"body of {self._need} bytes exceeds the {limit}-byte limit")
                return False
            if not self._reserve(self._need, ct):
                return False
        if expect and self._t is not None:
            self._t.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self._head = (*admitted, keep_alive)
        return True

    def _admit(self, method: bytes, target: bytes, headers: dict[bytes, bytes], ct: str, *,
               close: bool) -> tuple[str, bool, str] | None:
        """(signal, JSON body?, content-encoding) of an acceptable request head; else answer
        it (closing the connection when ``close``) and return None."""
        srv = self._srv
        path = target.split(b"?", 1)[0]
        signal = _PATHS.get(path)
        if signal is None:
            self._respond(404, b"", ct, close=close, message=f"no such path {path!r}")
            return None
        if method != b"POST":
            self._respond(405, b"", ct, close=close, extra=b"Allow: POST\r\n",
                          message="only POST is accepted")
            return None
        if not srv.collector.auth.allows(headers.get(b"authorization")):
            self._respond(401, b"", ct, close=close,
                          extra=b'WWW-Authenticate: Bearer realm="inferaudit"\r\n',
                          message="missing or wrong bearer token", rpc=_RPC_UNAUTHENTICATED)
            return None
        media = _media_of(headers)
        if media == b"application/x-protobuf" or media == b"application/protobuf":
            json_body = False
        elif media == b"application/json":
            json_body = True
        else:
            self._respond(415, b"", ct, close=close,
                          message=f"content-type {media.decode('latin-1')!r} is not "
                          "application/x-protobuf or application/json")
            return None
        # latin-1 decodes any byte: a non-UTF-8 value is a 415 naming it, not a 500.
        encoding = headers.get(b"content-encoding", b"identity").strip().lower().decode("latin-1")
        if encoding not in ("identity", "", "gzip", "x-gzip", "deflate"):
            self._respond(415, b"", ct, close=close,
                          message=f"content-encoding {encoding!r} is not supported")
            return None
        return signal, json_body, encoding

    def _read_fixed(self) -> bytes | None:
        if len(self._buf) < self._need:
            return None
        body = bytes(self._buf[: self._need])
        del self._buf[: self._need]
        return body

    def _read_chunked(self) -> bytes | None:
        """A complete chunked body, or None until it has all arrived. Rare for OTLP senders."""
        buf = self._buf
        pos = 0
        parts: list[bytes] = []
        total = 0
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return None
            size_field = bytes(buf[pos:eol]).split(b";", 1)[0].strip()
            if not _HEX_DIGITS.fullmatch(size_field):  # RFC 9112 7.1: 1*HEXDIG, no sign
                self._respond(400, b"", self._ct, close=True,
                              message=f"malformed chunk size {size_field.decode('latin-1')!r}")
                return None
            size = int(size_field, 16)
            total += size
            if total > self._srv.max_body_bytes:
                self._respond(413, b"", self._ct, close=True, message="chunked body too large")
                return None
            if total > self._reserved and not self._reserve(total - self._reserved, self._ct):
                return None
            start = eol + 2
            if size == 0:
                end = buf.find(b"\r\n\r\n", eol)  # trailers end with an empty line
                if end < 0:
                    return None
                del buf[: end + 4]
                return b"".join(parts)
            if len(buf) < start + size + 2:
                return None
            parts.append(bytes(buf[start : start + size]))
            pos = start + size + 2

    # -- the shared body budget ----------------------------------------------------------
    def _reserve(self, nbytes: int, ct: str) -> bool:
        """Take ``nbytes`` of the receiver-wide budget for request bodies being read.

        Bodies are held in memory until complete, so without this N slow connections could
        hold N x max_body_bytes. Over budget: 429 + Retry-After, and the connection is closed
        (its body is not read).
        """
        srv = self._srv
        if srv.reserved_bytes + nbytes > srv.body_budget_bytes and srv.reserved_bytes > 0:
            retry = _retry_after(srv.collector.config.retry_after_s)
            self._respond(429, b"", ct, close=True, extra=retry,
                          message="too many request bodies in flight; retry later",
                          rpc=_RPC_RESOURCE_EXHAUSTED)
            return False
        srv.reserved_bytes += nbytes
        self._reserved += nbytes
        return True

    def _release(self) -> None:
        self._srv.reserved_bytes -= self._reserved
        self._reserved = 0

    # -- handling ------------------------------------------------------------------------
    def _handle(self, signal: str, json_body: bool, encoding: str, body: bytes,
                keep_alive: bool) -> None:
        """A complete, admitted request (path, method, token and types were checked on its
        head, in :meth:`_admit`)."""
        srv = self._srv
        ct = _JSON_CT if json_body else _PROTO_CT
        if encoding not in ("identity", ""):
            try:
                body = _decompress(body, encoding, srv.max_body_bytes)
            except _BodyTooLarge as exc:
                self._respond(413, b"", ct, close=True, message=str(exc))
                return
            except _BadRequest as exc:
                self._respond(400, b"", ct, close=not keep_alive, message=str(exc))
                return
        result = srv.collector.ingest(signal, body, json_body=json_body)
        self._answer(signal, result, ct, keep_alive)

    def _answer(self, signal: str, result: IngestResult, ct: str, keep_alive: bool) -> None:
        from .service import Outcome

        out = result.outcome
        close = not keep_alive
        if out is Outcome.OK or out is Outcome.PARTIAL:
            self._respond(200, _success_body(signal, result, ct), ct, close=close)
        elif out is Outcome.INVALID:
            self._respond(400, b"", ct, close=close, message=result.message)
        else:
            retry = _retry_after(self._srv.collector.config.retry_after_s)
            code, rpc = (429, _RPC_RESOURCE_EXHAUSTED) if out is Outcome.FULL else (
                503, _RPC_UNAVAILABLE)
            self._respond(code, b"", ct, close=close, extra=retry, message=result.message, rpc=rpc)

    def _respond(self, code: int, body: bytes, ct: str, *, close: bool, extra: bytes = b"",
                 message: str = "", rpc: int = _RPC_INVALID_ARGUMENT) -> None:
        t = self._t
        if t is None or t.is_closing():
            return
        if message and not body:
            body = _status_body(rpc, message, ct)
        head = (
            f"HTTP/1.1 {code} {_REASONS.get(code, 'Error')}\r\nContent-Type: {ct}\r\n"
            f"Content-Length: {len(body)}\r\n"
        ).encode()
        if close:
            head += b"Connection: close\r\n"
        t.write(head + extra + b"\r\n" + body)
        if close:
            self._close()

    def _close(self) -> None:
        self._closing = True
        self._buf.clear()
        self._release()  # at once: connection_lost comes only after the answer is flushed
        if self._t is not None:
            self._t.close()

    def _arm_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        loop = asyncio.get_running_loop()
        self._idle = loop.call_later(self._srv.idle_timeout_s, self._on_idle)

    def _on_idle(self) -> None:
        if self._t is not None and not self._t.is_closing():
            self._t.close()


def _media_of(headers: dict[bytes, bytes]) -> bytes:
    """The request's media type, without parameters, lower case."""
    return headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()


def _ct_of(headers: dict[bytes, bytes]) -> str:
    return _JSON_CT if _media_of(headers) == b"application/json" else _PROTO_CT


def _status_body(code: int, message: str, ct: str) -> bytes:
    if ct == _JSON_CT:
        return json.dumps({"code": code, "message": message}).encode()
    return status_pb2.Status(code=code, message=message).SerializeToString()


_EMPTY_OK = {
    ("traces", _PROTO_CT): b"",
    ("metrics", _PROTO_CT): b"",
    ("traces", _JSON_CT): b"{}",
    ("metrics", _JSON_CT): b"{}",
}


def _success_body(signal: str, result: IngestResult, ct: str) -> bytes:
    if not result.rejected:
        return _EMPTY_OK[(signal, ct)]
    if signal == "traces":
        resp = ExportTraceServiceResponse()
        resp.partial_success.rejected_spans = result.rejected
        resp.partial_success.error_message = result.message
        field = "rejectedSpans"
    else:
        resp = ExportMetricsServiceResponse()  # type: ignore[assignment]
        resp.partial_success.rejected_data_points = result.rejected  # type: ignore[attr-defined]
        resp.partial_success.error_message = result.message
        field = "rejectedDataPoints"
    if ct == _JSON_CT:
        return json.dumps(
            {"partialSuccess": {field: str(result.rejected), "errorMessage": result.message}}
        ).encode()
    return resp.SerializeToString()


class HttpReceiver:
    """The OTLP/HTTP listener; runs on the event loop of the collector's HTTP thread."""

    def __init__(self, collector: Collector, *, max_body_bytes: int,
                 idle_timeout_s: float = 120.0, body_budget_bytes: int | None = None,
                 request_timeout_s: float = 60.0) -> None:
        self.collector = collector
        self.max_body_bytes = max_body_bytes
        # All request bodies being received at once, across connections (one always fits).
        self.body_budget_bytes = body_budget_bytes or max(4 * max_body_bytes, 64 * 1024 * 1024)
        self.reserved_bytes = 0
        self.idle_timeout_s = idle_timeout_s
        # A whole request, head and body, from its first byte (however slowly it trickles).
        self.request_timeout_s = request_timeout_s
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[_Conn] = set()

    async def start(self, host: str, port: int, *, sock: socket.socket | None = None) -> int:
        """Bind (or adopt ``sock``) and listen; returns the bound port."""
        loop = asyncio.get_running_loop()
        if sock is not None:
            self._server = await loop.create_server(lambda: _Conn(self), sock=sock, backlog=512)
        else:
            self._server = await loop.create_server(lambda: _Conn(self), host, port, backlog=512)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            if conn._t is not None:
                conn._t.close()
        if self._server is not None:
            await self._server.wait_closed()
