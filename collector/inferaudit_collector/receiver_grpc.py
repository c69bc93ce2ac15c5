"""OTLP/gRPC receiver: ``TraceService/Export`` and ``MetricsService/Export`` on grpcio.

The methods answer under the service names of the generated ``trace_service_pb2_grpc`` /
``metrics_service_pb2_grpc`` modules, but take the request as raw bytes: parsing then goes
through the same :func:`Collector.ingest` as OTLP/HTTP, a malformed message gets
``INVALID_ARGUMENT`` with our message (not grpcio's generic one), and the bytes can be forwarded
upstream untouched.

Admission happens in :meth:`_Admission.service`, which grpcio calls on its serving thread with
the call's metadata, before any worker thread reads the message: a missing or wrong token is
refused there, and so is an RPC over the in-flight limit. Both are answered by a handler that
never reads the request. Overload answers ``UNAVAILABLE`` with ``RetryInfo`` (never grpcio's bare
``RESOURCE_EXHAUSTED``, which the OTLP spec makes non-retryable without ``RetryInfo``, so Go and
Java exporters would drop the data). ``RetryInfo`` goes in two trailers: inside the
``google.rpc.Status`` of ``grpc-status-details-bin`` (what the Go, Java and .NET exporters read)
and alone in ``google.rpc.retryinfo-bin`` (what the Python exporter reads); its delay is
randomised (:func:`retry_delay`), so senders refused together do not all come back together.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.duration_pb2 import Duration
from google.rpc import code_pb2, status_pb2
from google.rpc.error_details_pb2 import RetryInfo
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

if TYPE_CHECKING:
    from .service import Collector

__all__ = ["GrpcReceiver", "retry_delay", "retry_trailers"]

_METHODS = {
    "/opentelemetry.proto.collector.trace.v1.TraceService/Export": "traces",
    "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export": "metrics",
}
# RPCs admitted at once per worker thread: enough to keep the workers busy while the next
# messages arrive; each waiting one holds at most its HTTP/2 flow-control window.
_IN_FLIGHT_PER_WORKER = 4


def retry_delay(delay_s: int) -> Duration:
    """``delay_s`` times a random factor in [1, 2], to the nanosecond.

    The stock exporters replace their own jittered backoff by the delay they are given, so an
    exact one would bring every sender refused in the same burst back at the same instant, to
    be refused together again until their tries run out."""
    nanos = round(delay_s * random.uniform(1.0, 2.0) * 1e9)
    return Duration(seconds=nanos // 1_000_000_000, nanos=nanos % 1_000_000_000)


def retry_trailers(message: str, delay_s: int) -> tuple[tuple[str, bytes], ...]:
    """Trailing metadata telling every OTLP exporter to retry after between ``delay_s`` and
    ``2 * delay_s`` seconds (:func:`retry_delay`)."""
    info = RetryInfo(retry_delay=retry_delay(delay_s))
    detail = AnyProto()
    detail.Pack(info)
    status = status_pb2.Status(code=code_pb2.UNAVAILABLE, message=message, details=[detail])
    return (
        ("grpc-status-details-bin", status.SerializeToString()),
        ("google.rpc.retryinfo-bin", info.SerializeToString()),
    )


def _refusal(code: grpc.StatusCode, message: str,
             trailers: tuple[tuple[str, bytes], ...], pool: futures.ThreadPoolExecutor,
             ) -> grpc.RpcMethodHandler:
    """A handler that answers ``code`` without reading the request (request-streaming, so
    grpcio does not wait for the message first), on its own small pool so refusals are not
    queued behind the exports that fill the workers."""

    def refuse(_requests: Iterator[bytes], context: grpc.ServicerContext) -> Any:
        if trailers:
            context.set_trailing_metadata(trailers)
        context.abort(code, message)

    refuse.experimental_thread_pool = pool  # type: ignore[attr-defined]
    return grpc.stream_unary_rpc_method_handler(refuse, response_serializer=_serialize)


class _Admission(grpc.GenericRpcHandler):
    """Routes each call: refused (bad token, over the in-flight limit) or admitted."""

    def __init__(self, receiver: GrpcReceiver, limit: int) -> None:
        self._rx = receiver
        self._limit = limit
        self._lock = threading.Lock()
        self.in_flight = 0
        self._refusals = futures.ThreadPoolExecutor(max_workers=2,
                                                    thread_name_prefix="inferaudit-grpc-refuse")

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        signal = _METHODS.get(details.method)  # type: ignore[attr-defined]
        if signal is None:
            return None  # grpcio answers UNIMPLEMENTED
        col = self._rx._collector
        if col.auth.enabled:
            md = {k: v for k, v in details.invocation_metadata or ()}  # type: ignore[attr-defined]
            if not col.auth.allows(md.get("authorization")):
                return _refusal(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token",
                                (), self._refusals)
        with self._lock:
            if self.in_flight >= self._limit:
                admitted = False
            else:
                self.in_flight += 1
                admitted = True
        if not admitted:
            msg = f"more than {self._limit} exports in flight; retry later"
            return _refusal(grpc.StatusCode.UNAVAILABLE, msg,
                            retry_trailers(msg, col.config.retry_after_s), self._refusals)
        return grpc.stream_unary_rpc_method_handler(self._admitted(signal),
                                                    response_serializer=_serialize)

    def _admitted(self, signal: str) -> Callable[[Iterator[bytes], grpc.ServicerContext], Any]:
        def export(requests: Iterator[bytes], context: grpc.ServicerContext) -> Any:
            # grpcio calls this even when the client went away meanwhile, so the slot taken
            # in service() is always given back here.
            try:
                body = next(requests, None)
                if body is None:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no request message")
                return self._rx._export(signal, body, context)
            finally:
                with self._lock:
                    self.in_flight -= 1

        return export

    def close(self) -> None:
        self._refusals.shutdown(wait=False)


class GrpcReceiver:
    """The OTLP/gRPC listener (grpcio thread pool of ``workers`` threads)."""

    def __init__(self, collector: Collector, *, max_body_bytes: int, workers: int = 4) -> None:
        self._collector = collector
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="inferaudit-grpc"),
            options=[
                ("grpc.max_receive_message_length", max_body_bytes),
                ("grpc.so_reuseport", 0),
            ],
            # No maximum_concurrent_rpcs: grpcio would answer a bare RESOURCE_EXHAUSTED.
        )
        self.admission = _Admission(self, workers * _IN_FLIGHT_PER_WORKER)
        self._server.add_generic_rpc_handlers((self.admission,))

    def start(self, host: str, port: int) -> int:
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        bound = self._server.add_insecure_port(target)
        if bound == 0:
            raise OSError(f"could not bind the OTLP/gRPC receiver to {target}")
        self._server.start()
        return bound

    def stop(self, grace_s: float = 5.0) -> None:
        """Refuse new RPCs, let in-flight ones finish (their acks are then on the buffer)."""
        self._server.stop(grace_s).wait(grace_s + 1.0)
        self.admission.close()

    def _export(self, signal: str, body: bytes, context: grpc.ServicerContext) -> Any:
        from .service import Outcome

        col = self._collector
        result = col.ingest(signal, body, json_body=False)
        out = result.outcome
        if out is Outcome.INVALID:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, result.message)
        if out is Outcome.FULL or out is Outcome.UNAVAILABLE:
            context.set_trailing_metadata(retry_trailers(result.message, col.config.retry_after_s))
            context.abort(grpc.StatusCode.UNAVAILABLE, result.message)
        if signal == "traces":
            resp = ExportTraceServiceResponse()
            if result.rejected:
                resp.partial_success.rejected_spans = result.rejected
                resp.partial_success.error_message = result.message
            return resp
        mresp = ExportMetricsServiceResponse()
        if result.rejected:
            mresp.partial_success.rejected_data_points = result.rejected
            mresp.partial_success.error_message = result.message
        return mresp


def _serialize(msg: Any) -> bytes:
    return msg.SerializeToString()
