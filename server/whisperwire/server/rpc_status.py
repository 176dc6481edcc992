"""Domain errors → canonical gRPC codes with google.rpc.Status details (AIP-193)."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.protobuf.duration_pb2 import Duration
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from whisperwire.server import errors

DOMAIN = "whisperwire.dev"

# Most specific class first: the first match wins.
CODES: list[tuple[type[errors.WhisperwireError], grpc.StatusCode]] = [
    (errors.AudioTooLongError, grpc.StatusCode.OUT_OF_RANGE),
    (errors.StreamLimitError, grpc.StatusCode.OUT_OF_RANGE),
    (errors.InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.BusyError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.UnavailableError, grpc.StatusCode.UNAVAILABLE),
    (errors.EngineError, grpc.StatusCode.INTERNAL),
    (errors.InternalError, grpc.StatusCode.INTERNAL),
]


def code_for(error: errors.WhisperwireError) -> grpc.StatusCode:
    return next((code for cls, code in CODES if isinstance(error, cls)), grpc.StatusCode.INTERNAL)


def to_status(error: errors.WhisperwireError) -> grpc.Status:
    code = code_for(error)
    details = [error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN)]
    if error.field and code == grpc.StatusCode.INVALID_ARGUMENT:
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=error.field, description=error.message
        )
        details.append(error_details_pb2.BadRequest(field_violations=[violation]))
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        delay = Duration()
        delay.FromNanoseconds(round(retry_after * 1e9))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    return status(code, error.message, details)


def status(code: grpc.StatusCode, message: str, details: list[object] = ()) -> grpc.Status:  # type: ignore[assignment]
    packed = []
    for detail in details:
        item = any_pb2.Any()
        item.Pack(detail)  # type: ignore[arg-type]
        packed.append(item)
    proto = status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=packed)
    return rpc_status.to_status(proto)
