"""whisperwire server: speech pipeline, engines, batching scheduler and the gRPC service."""
