"""The one table mapping pipeline errors to OTLP answers (HTTP status / gRPC code).

As in the Collector's otlpreceiver: bad data is permanent (400 / INVALID_ARGUMENT,
never retried by clients); "full" is back-pressure (429 + Retry-After /
RESOURCE_EXHAUSTED with RetryInfo, retried); anything else is transient
(503 / UNAVAILABLE, retried). Never 500: Collectors drop data on 500.
"""
from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from otelproc.component import BackPressureError, PermanentError
from otelproc.httpserver import BodyError


class RequestError(Exception):
    """A receiver-level refusal with its own HTTP status (413 too large, 415 wrong type...)."""

    def __init__(self, http_status: int, grpc_code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.http_status = http_status
        self.grpc_code = grpc_code


@dataclass(frozen=True)
class Answer:
    http_status: int
    grpc_code: grpc.StatusCode
    reason: str              # metric label: invalid / too_large / unsupported / back_pressure / unavailable
    message: str
    retry_after: float | None = None


def answer_for(exc: BaseException) -> Answer:
    if isinstance(exc, BodyError):
        if exc.reason == "too_large":
            return Answer(413, grpc.StatusCode.RESOURCE_EXHAUSTED, "too_large", str(exc))
        if exc.reason == "unsupported":
            return Answer(415, grpc.StatusCode.UNIMPLEMENTED, "unsupported_media_type", str(exc))
        return Answer(400, grpc.StatusCode.INVALID_ARGUMENT, "invalid", str(exc))
    if isinstance(exc, RequestError):
        reason = {413: "too_large", 415: "unsupported_media_type"}.get(exc.http_status, "invalid")
        return Answer(exc.http_status, exc.grpc_code, reason, str(exc))
    if isinstance(exc, PermanentError):
        return Answer(400, grpc.StatusCode.INVALID_ARGUMENT, "invalid", str(exc))
    if isinstance(exc, BackPressureError):
        return Answer(429, grpc.StatusCode.RESOURCE_EXHAUSTED, "back_pressure", str(exc), exc.retry_after)
    return Answer(503, grpc.StatusCode.UNAVAILABLE, "unavailable", f"temporarily unavailable: {exc}", 1.0)


def rpc_status(answer: Answer) -> status_pb2.Status:
    """google.rpc.Status for an answer (body of HTTP errors, details of gRPC errors)."""
    st = status_pb2.Status(code=answer.grpc_code.value[0], message=answer.message)
    if answer.retry_after is not None:
        secs = int(answer.retry_after)
        info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(
            seconds=secs, nanos=int((answer.retry_after - secs) * 1e9)))
        packed = any_pb2.Any()
        packed.Pack(info)
        st.details.append(packed)
    return st


assert code_pb2.INVALID_ARGUMENT == grpc.StatusCode.INVALID_ARGUMENT.value[0]
