"""Errors in OpenAI's JSON shape: `{"error": {"message", "type", "param", "code"}}`.

Every domain error maps to one HTTP status here, as rpc_status.py maps them to gRPC codes.
`code` is the gRPC ErrorInfo reason in lower case, so both APIs name a failure the same way;
`param` is the form field at fault. Busy and unavailable answers carry Retry-After.
"""

from __future__ import annotations

import logging
import math

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from whisperwire.server import errors

log = logging.getLogger(__name__)


class MissingFieldError(errors.InvalidInput):
    reason = "MISSING_FIELD"


class MalformedRequestError(errors.InvalidInput):
    """A body that is not the multipart form the endpoint takes."""

    reason = "MALFORMED_REQUEST"


class ModelNotFoundError(errors.InvalidInput):
    reason = "MODEL_NOT_FOUND"


class UnsupportedFormatError(errors.InvalidInput):
    reason = "UNSUPPORTED_RESPONSE_FORMAT"


class UnauthenticatedError(errors.WhisperwireError):
    reason = "INVALID_API_KEY"


class RequestTooLargeError(errors.WhisperwireError):
    reason = "REQUEST_TOO_LARGE"


# Most specific class first: the first match wins. (status, OpenAI error type)
STATUSES: list[tuple[type[errors.WhisperwireError], int, str]] = [
    (UnauthenticatedError, 401, "authentication_error"),
    (RequestTooLargeError, 413, "invalid_request_error"),
    (errors.InvalidInput, 400, "invalid_request_error"),
    # Over the audio length limit: OpenAI answers 400 for audio longer than a model takes.
    (errors.AudioTooLongError, 400, "invalid_request_error"),
    (errors.BusyError, 429, "rate_limit_error"),
    (errors.UnavailableError, 503, "server_error"),
]

# Domain field names (shared with the gRPC API) -> the form field a caller sent.
PARAMS = {
    "audio": "file",
    "audio_content": "file",
    "initial_prompt": "prompt",
    "enable_segment_timestamps": "timestamp_granularities[]",
    "enable_word_timestamps": "timestamp_granularities[]",
    "task": "model",  # e.g. translating with an English-only model
}


def status_for(error: errors.WhisperwireError) -> tuple[int, str]:
    return next(
        ((status, kind) for cls, status, kind in STATUSES if isinstance(error, cls)),
        (500, "server_error"),
    )


def error_body(error: errors.WhisperwireError) -> dict[str, dict[str, str | None]]:
    _, kind = status_for(error)
    param = PARAMS.get(error.field, error.field) if error.field else None
    return {
        "error": {
            "message": error.message,
            "type": kind,
            "param": param,
            "code": error.reason.lower(),
        }
    }


def error_response(error: errors.WhisperwireError) -> JSONResponse:
    status, _ = status_for(error)
    headers = {}
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))  # whole seconds
    return JSONResponse(error_body(error), status_code=status, headers=headers)


async def handle_domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.WhisperwireError)
    status, _ = status_for(exc)
    log.warning(
        "%s %s failed: %d %s: %s", request.method, request.url.path, status, exc.reason, exc.message
    )
    return error_response(exc)


async def handle_http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (unknown path, wrong method) in the same JSON shape."""
    assert isinstance(exc, HTTPException)
    body = {
        "error": {
            "message": exc.detail,
            "type": "invalid_request_error",
            "param": None,
            "code": _snake(exc.detail),
        }
    }
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def handle_unexpected_error(request: Request, exc: Exception) -> Response:
    """A bug: 500 in OpenAI's shape; the server keeps serving. (Starlette re-raises the
    exception after this response, so uvicorn logs its traceback.)"""
    return error_response(errors.InternalError(f"internal error: {exc}"))


def _snake(text: str) -> str:
    return "_".join(text.lower().split())
