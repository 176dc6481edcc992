"""Python SDK for whisperwire: blocking and asyncio clients over the generated gRPC stubs.

from whisperwire.client import Client, RecognitionOptions

with Client("127.0.0.1:50051", token="...") as client:
    transcript = client.transcribe("talk.flac", RecognitionOptions(language="en"))
    print(transcript.text)
"""

from whisperwire.client.aio import AsyncAudioStream, AsyncClient
from whisperwire.client.channel import DEFAULT_TARGET, Connection
from whisperwire.client.errors import (
    AuthenticationError,
    CallCancelledError,
    DeadlineExceededError,
    InvalidRequestError,
    ServerBusyError,
    ServerUnavailableError,
    ServiceError,
    StreamClosedError,
    WhisperwireClientError,
)
from whisperwire.client.options import AudioFormat, RecognitionOptions, StreamOptions
from whisperwire.client.results import (
    EndReason,
    FinalResult,
    PartialResult,
    Segment,
    SegmentResult,
    ServiceInfo,
    ServiceLimits,
    SessionInfo,
    SpeechEvent,
    StreamEvent,
    Timings,
    Transcript,
    Word,
)
from whisperwire.client.retry import NO_RETRY, RetryPolicy
from whisperwire.client.sync import AudioStream, Client

__all__ = [
    "DEFAULT_TARGET",
    "NO_RETRY",
    "AsyncAudioStream",
    "AsyncClient",
    "AudioFormat",
    "AudioStream",
    "AuthenticationError",
    "CallCancelledError",
    "Client",
    "Connection",
    "DeadlineExceededError",
    "EndReason",
    "FinalResult",
    "InvalidRequestError",
    "PartialResult",
    "RecognitionOptions",
    "RetryPolicy",
    "Segment",
    "SegmentResult",
    "ServerBusyError",
    "ServerUnavailableError",
    "ServiceError",
    "ServiceInfo",
    "ServiceLimits",
    "SessionInfo",
    "SpeechEvent",
    "StreamClosedError",
    "StreamEvent",
    "StreamOptions",
    "Timings",
    "Transcript",
    "WhisperwireClientError",
    "Word",
]
