"""The endpoints: multipart form → domain → the shared pipeline → OpenAI's response shapes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from whisperwire.server.audio import decode_audio
from whisperwire.server.domain import DecodeOptions, Task, Transcript
from whisperwire.server.errors import WhisperwireError
from whisperwire.server.http import forms, render
from whisperwire.server.http.errors import MalformedRequestError, ModelNotFoundError, error_body
from whisperwire.server.metrics import Metrics
from whisperwire.server.pipeline import Audio, SpeechPipeline
from whisperwire.server.runner import Priority
from whisperwire.server.state import ServerState

PROTOCOL = "http"
# More form fields than OpenAI defines is not a client speaking its API.
MAX_FORM_FIELDS = 64


class AudioApi:
    def __init__(self, pipeline: SpeechPipeline, state: ServerState, metrics: Metrics) -> None:
        self.pipeline = pipeline
        self.state = state
        self.metrics = metrics
        self.created = int(time.time())

    # ---- /v1/audio ------------------------------------------------------------------------
    async def transcriptions(self, request: Request) -> Response:
        return await self._audio(request, Task.TRANSCRIBE)

    async def translations(self, request: Request) -> Response:
        return await self._audio(request, Task.TRANSLATE)

    async def _audio(self, request: Request, task: Task) -> Response:
        started = time.perf_counter()
        self.state.check_serving()
        self.pipeline.admit(Priority.BULK)  # a file, as gRPC Transcribe: streams go first
        async with _form(request) as form:
            audio = forms.audio_request(form, task, self.pipeline.engine)
            options = self.pipeline.validate(audio.options)
            data = await audio.upload.read()
        # Decoded before answering, so undecodable audio is a 400 even when streaming.
        samples = await asyncio.to_thread(
            decode_audio, data, max_seconds=self.pipeline.max_audio_seconds
        )
        if audio.stream:
            events = self._events(request.url.path, samples, options, started)
            return StreamingResponse(
                events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
            )
        transcript = await self._transcribe(request.url.path, samples, options, started)
        return Response(
            render.body(transcript, audio.response_format, task, self.pipeline.tokenizer),
            media_type=render.MEDIA_TYPES[audio.response_format],
        )

    async def _events(
        self, method: str, samples: Audio, options: DecodeOptions, started: float
    ) -> AsyncIterator[str]:
        try:
            transcript = await self._transcribe(method, samples, options, started)
        except WhisperwireError as error:
            # The 200 and its headers are out: the failure travels as an error event, which
            # OpenAI's SDKs raise as an APIError.
            yield render.sse(error_body(error))
            return
        for event in render.text_events(transcript):
            yield event

    async def _transcribe(
        self, method: str, samples: Audio, options: DecodeOptions, started: float
    ) -> Transcript:
        transcript = await self.pipeline.transcribe(samples, options, priority=Priority.BULK)
        elapsed = time.perf_counter() - started
        self.metrics.observe_transcript(PROTOCOL, method, elapsed, transcript)
        return transcript

    # ---- /v1/models -----------------------------------------------------------------------
    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [self._model_card()]})

    async def model(self, request: Request) -> Response:
        name = request.path_params["model"]
        if name not in (self.pipeline.engine.model, forms.OPENAI_MODEL_ALIAS):
            raise ModelNotFoundError(f"model {name!r} is not served here", field="model")
        return JSONResponse(self._model_card())

    def _model_card(self) -> dict[str, object]:
        return {
            "id": self.pipeline.engine.model,
            "object": "model",
            "created": self.created,
            "owned_by": "whisperwire",
        }

    # ---- probes (no token needed) ---------------------------------------------------------
    async def healthz(self, request: Request) -> Response:
        """Live: the process answers."""
        return JSONResponse({"status": "SERVING"})

    async def readyz(self, request: Request) -> Response:
        """Ready, as gRPC health reports it: not until the warm-up decode, nor while draining."""
        if self.state.ready and not self.state.draining:
            return JSONResponse({"status": "SERVING"})
        return JSONResponse({"status": "NOT_SERVING"}, status_code=503)


@contextlib.asynccontextmanager
async def _form(request: Request) -> AsyncIterator[FormData]:
    """The multipart form; its parse errors are this API's 400; its uploads closed after."""
    try:
        form = await request.form(max_files=1, max_fields=MAX_FORM_FIELDS)
    except HTTPException as error:  # Starlette's answer to a malformed multipart body
        raise MalformedRequestError(
            f"cannot read the multipart form: {error.detail}", field="file"
        ) from error
    try:
        yield form
    finally:
        await form.close()
