"""OTLP/gRPC receiver: ``TraceService/Export`` and ``MetricsService/Export`` on grpcio.

The methods are registered under the service names of the generated
``trace_service_pb2_grpc`` / ``metrics_service_pb2_grpc`` modules, but with raw-bytes request
deserialisation: parsing then goes through the same :func:`Collector.ingest` as OTLP/HTTP, a
malformed message gets ``INVALID_ARGUMENT`` with our message (not grpcio's generic one), and the
bytes can be forwarded upstream untouched. Backpressure answers ``UNAVAILABLE`` with a
``google.rpc.RetryInfo`` trailer, which the OTLP exporters honour as the retry delay.
"""

from __future__ import annotations

from concurrent import futures
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.duration_pb2 import Duration
from google.rpc.error_details_pb2 import RetryInfo
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

if TYPE_CHECKING:
    from .service import Collector

__all__ = ["GrpcReceiver"]

_TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
_METRICS_SERVICE = "opentelemetry.proto.collector.metrics.v1.MetricsService"


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
            maximum_concurrent_rpcs=workers * 4,
        )
        ser = _serialize
        handlers = [
            grpc.method_handlers_generic_handler(
                _TRACE_SERVICE,
                {"Export": grpc.unary_unary_rpc_method_handler(
                    self._export_traces, request_deserializer=None, response_serializer=ser)},
            ),
            grpc.method_handlers_generic_handler(
                _METRICS_SERVICE,
                {"Export": grpc.unary_unary_rpc_method_handler(
                    self._export_metrics, request_deserializer=None, response_serializer=ser)},
            ),
        ]
        self._server.add_generic_rpc_handlers(handlers)

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

    def _export_traces(self, body: bytes, context: grpc.ServicerContext) -> Any:
        return self._export("traces", body, context)

    def _export_metrics(self, body: bytes, context: grpc.ServicerContext) -> Any:
        return self._export("metrics", body, context)

    def _export(self, signal: str, body: bytes, context: grpc.ServicerContext) -> Any:
        from .service import Outcome

        col = self._collector
        if col.auth.enabled:
            md = {k: v for k, v in context.invocation_metadata()}
            if not col.auth.allows(md.get("authorization")):
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
        result = col.ingest(signal, body, json_body=False)
        out = result.outcome
        if out is Outcome.INVALID:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, result.message)
        if out is Outcome.FULL or out is Outcome.UNAVAILABLE:
            delay = RetryInfo(retry_delay=Duration(seconds=col.config.retry_after_s))
            context.set_trailing_metadata(
                (("google.rpc.retryinfo-bin", delay.SerializeToString()),)
            )
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
