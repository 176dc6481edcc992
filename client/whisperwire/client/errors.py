"""Client errors: each failed call becomes a ServiceError carrying the server's
google.rpc.Status details (ErrorInfo reason, BadRequest fields, RetryInfo delay)."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


class WhisperwireClientError(Exception):
    """Base class of everything the SDK raises."""


class ServiceError(WhisperwireClientError):
    """A call ended with a non-OK gRPC status."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str = "",
        fields: tuple[str, ...] = (),
        retry_delay: float | None = None,
    ) -> None:
        super().__init__(f"{code.name}: {message}" + (f" ({reason})" if reason else ""))
        self.code = code
        self.message = message
        self.reason = reason
        self.fields = fields
        self.retry_delay = retry_delay

    @property
    def retryable(self) -> bool:
        """The proto's rule: UNAVAILABLE, or RESOURCE_EXHAUSTED that says when to come back."""
        if self.code == grpc.StatusCode.UNAVAILABLE:
            return True
        return self.code == grpc.StatusCode.RESOURCE_EXHAUSTED and self.retry_delay is not None


class ServerUnavailableError(ServiceError):
    """UNAVAILABLE: unreachable, warming up (ENGINE_NOT_READY) or draining (SERVER_DRAINING)."""


class ServerBusyError(ServiceError):
    """RESOURCE_EXHAUSTED: too many streams, a full queue, or a message over the size limit."""


class AuthenticationError(ServiceError):
    """UNAUTHENTICATED or PERMISSION_DENIED: a missing or wrong bearer token."""


class InvalidRequestError(ServiceError):
    """INVALID_ARGUMENT, OUT_OF_RANGE or FAILED_PRECONDITION: the request cannot succeed as is."""


class DeadlineExceededError(ServiceError):
    """The call's deadline passed before the server answered."""


class CallCancelledError(ServiceError):
    """The call was cancelled (by this client or the connection)."""


class StreamClosedError(WhisperwireClientError):
    """A message was written to a stream that was already closed or finished."""


_CLASSES: dict[grpc.StatusCode, type[ServiceError]] = {
    grpc.StatusCode.UNAVAILABLE: ServerUnavailableError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ServerBusyError,
    grpc.StatusCode.UNAUTHENTICATED: AuthenticationError,
    grpc.StatusCode.PERMISSION_DENIED: AuthenticationError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequestError,
    grpc.StatusCode.OUT_OF_RANGE: InvalidRequestError,
    grpc.StatusCode.FAILED_PRECONDITION: InvalidRequestError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.CANCELLED: CallCancelledError,
}


def from_rpc_error(error: grpc.aio.AioRpcError) -> ServiceError:
    """The typed error for a failed call, with the details the server attached."""
    reason, fields, retry_delay = "", (), None
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields = tuple(v.field for v in bad.field_violations)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_delay = retry.retry_delay.ToNanoseconds() / 1e9
    cls = _CLASSES.get(error.code(), ServiceError)
    message = error.details() or error.code().name
    return cls(error.code(), message, reason=reason, fields=fields, retry_delay=retry_delay)
