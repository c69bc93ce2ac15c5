"""OTLP/HTTP: a request is judged on its head, bodies have a total deadline (never a second
answer to a request, never started by empty lines), framing is strict, and every error answer
(500 included) speaks the request's content type."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from collector_helpers import make_spans
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

from inferaudit_collector.service import Collector, CollectorConfig

_PB = b"Content-Type: application/x-protobuf\r\n"


def _body(n: int = 2) -> bytes:
    return encode_spans(make_spans(n)).SerializeToString()


def _head(sock: socket.socket, timeout: float = 3.0) -> bytes:
    """The response bytes that arrive within ``timeout`` (at least its status line)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def _post_ok(port: int, token: str | None = None) -> int:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    headers = {"Content-Type": "application/x-protobuf"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    c.request("POST", "/v1/traces", _body(), headers)
    r = c.getresponse()
    r.read()
    c.close()
    return r.status


@pytest.fixture
def col(tmp_path: Path) -> Iterator[Collector]:
    c = Collector(CollectorConfig(directory=tmp_path, http_port=0, grpc_port=None,
                                  token="t")).start()
    try:
        yield c
    finally:
        c.stop()


def test_unauthenticated_slow_bodies_cannot_lock_out_senders(col: Collector) -> None:
    """Four connections declaring 16 MiB bodies used to reserve the whole body budget before
    their token was looked at; an authenticated sender then got 429 for two minutes."""
    socks = []
    try:
        for _ in range(4):
            s = socket.create_connection(("127.0.0.1", col.http_port))
            s.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n" + _PB
                      + b"Content-Length: 16777216\r\n\r\n\0")
            socks.append(s)
        time.sleep(0.3)
        assert col._http.reserved_bytes == 0
        assert _post_ok(col.http_port, "t") == 200
    finally:
        for s in socks:
            s.close()


def test_a_refused_head_is_answered_before_its_body_and_the_body_is_skipped(
    col: Collector,
) -> None:
    body = _body()
    with socket.create_connection(("127.0.0.1", col.http_port)) as s:
        for head, want in (
            (b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n" + _PB, b"401"),  # no token
            (b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n" + _PB, b"404"),
            (b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n"
             b"Content-Type: text/plain\r\n", b"415"),
        ):
            s.sendall(head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:5])
            resp = _head(s)  # answered with most of the body still to come
            assert resp.startswith(b"HTTP/1.1 " + want), resp
            s.sendall(body[5:])  # skipped, not parsed as the next request
        s.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n" + _PB
                  + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        resp = _head(s)
        assert resp.startswith(b"HTTP/1.1 200"), resp
    assert col.stats.requests == 1


def test_a_trickled_request_has_a_total_deadline(tmp_path: Path) -> None:
    cfg = CollectorConfig(directory=tmp_path, http_port=0, grpc_port=None,
                          http_request_timeout_s=1.0)
    with Collector(cfg) as c, socket.create_connection(("127.0.0.1", c.http_port)) as s:
        s.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n" + _PB + b"Content-Length: 100\r\n\r\n")
        t0 = time.monotonic()
        s.settimeout(0.2)
        got = b""
        while time.monotonic() - t0 < 5 and not got:
            try:
                s.sendall(b"A")  # one byte every 0.2 s re-arms the idle timer, not this one
                got = s.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
        assert got.startswith(b"HTTP/1.1 408"), got
        assert time.monotonic() - t0 < 3
        assert c._http.reserved_bytes == 0


@pytest.mark.parametrize("length", [b"1_0", b"+2", b"-0", b"0x10", b"1 0"])
def test_content_length_must_be_digits(tmp_path: Path, length: bytes) -> None:
    with Collector(CollectorConfig(directory=tmp_path, http_port=0, grpc_port=None)) as c:
        with socket.create_connection(("127.0.0.1", c.http_port)) as s:
            s.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n" + _PB
                      + b"Content-Length: " + length + b"\r\n\r\n" + b"\n\x00" * 8)
            assert _head(s).startswith(b"HTTP/1.1 400")
        assert c.stats.requests == 0


@pytest.mark.parametrize("size", [b"-10", b"+a", b"0x10", b"1_0", b""])
def test_chunk_size_must_be_hex_digits(tmp_path: Path, size: bytes) -> None:
    with Collector(CollectorConfig(directory=tmp_path, http_port=0, grpc_port=None)) as c:
        with socket.create_connection(("127.0.0.1", c.http_port)) as s:
            s.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                      + _PB + b"\r\n" + size + b"\r\n" + b"A" * 40 + b"\r\n0\r\n\r\n")
            resp = _head(s)
            assert resp.startswith(b"HTTP/1.1 400") and b"chunk size" in resp
        assert c.stats.requests == 0


def test_non_utf8_content_encoding_is_415_in_the_requests_content_type(tmp_path: Path) -> None:
    with Collector(CollectorConfig(directory=tmp_path, http_port=0, grpc_port=None)) as c:
        with socket.create_connection(("127.0.0.1", c.http_port)) as s:
            s.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                      b"\r\nContent-Length: 2\r\nContent-Encoding: \xff\r\n\r\n{}")
            resp = _head(s)
        head, _, body = resp.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 415") and b"Content-Type: application/json" in head
        assert "content-encoding" in json.loads(body)["message"]


def test_an_internal_error_is_answered_in_the_requests_content_type(tmp_path: Path) -> None:
    with Collector(CollectorConfig(directory=tmp_path, http_port=0, grpc_port=None)) as c:
        def broken(*_a: object, **_k: object) -> None:
            raise RuntimeError("boom")

        c.ingest = broken  # type: ignore[method-assign]
        for ct, parse in (("application/json", lambda b: json.loads(b)["message"]),
                          ("application/x-protobuf",
                           lambda b: status_pb2.Status.FromString(b).message)):
            conn = http.client.HTTPConnection("127.0.0.1", c.http_port, timeout=5)
            conn.request("POST", "/v1/traces", b"{}" if "json" in ct else b"", {"Content-Type": ct})
            r = conn.getresponse()
            assert r.status == 500 and r.getheader("Content-Type") == ct
            assert "boom" in parse(r.read())
            conn.close()


def _read_answers(sock: socket.socket, wait_s: float) -> list[bytes]:
    """The status lines of every response that arrives within ``wait_s`` (or until closed)."""
    sock.settimeout(0.1)
    data = b""
    end = time.monotonic() + wait_s
    while time.monotonic() < end:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            break
        data += chunk
    lines = []
    while b"\r\n\r\n" in data:
        head, _, data = data.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
        lines.append(head.split(b"\r\n", 1)[0])
        data = data[length:]
    return lines


def _sized(body: bytes, *, token: bytes | None = b"t") -> bytes:
    auth = b"Authorization: Bearer " + token + b"\r\n" if token else b""
    return (b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n" + auth + _PB
            + b"Content-Length: %d\r\n\r\n" % len(body) + body)


@pytest.fixture
def quick(tmp_path: Path) -> Iterator[Collector]:
    """A collector whose requests must arrive within 1 s."""
    c = Collector(CollectorConfig(directory=tmp_path, http_port=0, grpc_port=None, token="t",
                                  http_request_timeout_s=1.0)).start()
    try:
        yield c
    finally:
        c.stop()


def test_a_refused_request_whose_body_outlives_the_deadline_gets_no_second_answer(
    quick: Collector,
) -> None:
    """Its 401 was sent; an unsolicited 408 after it would be read as the answer to the
    sender's next request. The connection is just closed."""
    with socket.create_connection(("127.0.0.1", quick.http_port)) as s:
        s.sendall(_sized(b"x" * 100, token=None)[:-95])  # 5 of the 100 body bytes
        assert _read_answers(s, 2.5) == [b"HTTP/1.1 401 Unauthorized"]
        assert s.recv(10) == b""  # closed after the deadline, silently


# RFC 9112 2.2: empty lines before a request-line are ignored (some clients send a CRLF
# after a body).
def test_a_stray_crlf_after_a_body_starts_no_deadline(quick: Collector) -> None:
    """It used to start a request deadline: 408 on an idle keep-alive connection."""
    with socket.create_connection(("127.0.0.1", quick.http_port)) as s:
        s.sendall(_sized(_body()) + b"\r\n")
        assert _read_answers(s, 2.0) == [b"HTTP/1.1 200 OK"]  # past the 1 s deadline
        s.sendall(_sized(_body()))  # the connection is still open and usable
        assert _read_answers(s, 0.5) == [b"HTTP/1.1 200 OK"]


def test_a_request_pipelined_behind_empty_lines_is_read(quick: Collector) -> None:
    """It used to be answered '400 malformed request line' (the empty line taken for it)."""
    body = _body()
    with socket.create_connection(("127.0.0.1", quick.http_port)) as s:
        s.sendall(_sized(body) + b"\r\n" + _sized(body) + b"\r\n\n\r\n" + _sized(body))
        assert _read_answers(s, 0.5) == [b"HTTP/1.1 200 OK"] * 3
    assert quick.stats.requests == 3
