"""Readiness, draining and the open streams, shared by the servicer, the stream calls and the
app."""

from __future__ import annotations

from typing import TYPE_CHECKING

from whisperwire.server.config import ServerSettings
from whisperwire.server.errors import UnavailableError
from whisperwire.server.session import EndReason

if TYPE_CHECKING:
    from whisperwire.server.stream_call import StreamCall


class ServerState:
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.ready = False
        self.draining = False
        self.streams: set[StreamCall] = set()

    def check_serving(self) -> None:
        if self.draining:
            raise UnavailableError("server is shutting down", reason="SERVER_DRAINING")
        if not self.ready:
            raise UnavailableError("engine is warming up", reason="ENGINE_NOT_READY")

    def drain(self) -> None:
        self.draining = True
        for call in list(self.streams):
            call.finish(
                UnavailableError("server is shutting down", reason="SERVER_DRAINING"),
                EndReason.SERVER_SHUTDOWN,
            )
