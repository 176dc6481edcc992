"""Whisper in plain PyTorch: weights loading, the model, and its GPU-friendly decoding loop.

The `whisperwire.server.engines.torch` adapter is the only user; nothing here knows about
the pipeline, the scheduler or gRPC.
"""
