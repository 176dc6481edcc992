"""Engine adapters behind the seam in `whisperwire.server.engine`."""
