"""The OpenAI-compatible HTTP API (`/v1/audio/transcriptions`, `/v1/audio/translations`,
`/v1/models`, `/healthz`, `/readyz`): a thin Starlette front over the same pipeline and
scheduler as the gRPC servicer, served by uvicorn on the server's own event loop."""
